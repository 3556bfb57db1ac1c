-- Settlement (docs/contracts.md#settlement): a period that ended is `closing` for
-- SETTLE_GRACE_MINUTES, then settled: its standings are frozen under a revision and a content
-- hash. Only an operator reopens it; it then settles again under the next revision.

-- The settlement state of each board's daily, weekly or monthly period (all-time never settles).
CREATE TABLE leaderboard_settlements (
    board_id      text NOT NULL,
    period_type   text NOT NULL CHECK (period_type IN ('daily', 'weekly', 'monthly')),
    period_key    text NOT NULL,
    state         text        NOT NULL CHECK (state IN ('settled', 'reopened')),
    revision      integer     NOT NULL CHECK (revision >= 1),  -- of the last settlement
    content_hash  text        NOT NULL,  -- the registry's content_hash the last settlement froze
    entries       integer     NOT NULL,
    -- sum of event_count over the settled rows: a refused publish counting more is late events
    events        bigint      NOT NULL,
    settled_at    timestamptz NOT NULL,
    published_at  timestamptz NOT NULL,  -- of the snapshot settled
    reopened_at   timestamptz,           -- while reopened
    late_after_settlement bigint NOT NULL DEFAULT 0 CHECK (late_after_settlement >= 0),
    last_late_at  timestamptz,
    PRIMARY KEY (board_id, period_type, period_key)
);
CREATE INDEX leaderboard_settlements_reopened ON leaderboard_settlements (reopened_at) WHERE state = 'reopened';

-- Every settlement and reopening, never updated or deleted (retention keeps it too).
CREATE TABLE leaderboard_settlement_history (
    id            bigserial   PRIMARY KEY,
    board_id      text NOT NULL,
    period_type   text NOT NULL,
    period_key    text NOT NULL,
    action        text        NOT NULL CHECK (action IN ('settled', 'reopened')),
    revision      integer     NOT NULL,  -- settled: the new revision; reopened: the one reopened
    content_hash  text        NOT NULL,
    entries       integer     NOT NULL,
    at            timestamptz NOT NULL,
    actor         text        NOT NULL,  -- `pipeline`, or the admin's token `sub` / the CLI's --by
    reason        text        NOT NULL
);
CREATE INDEX leaderboard_settlement_history_period
    ON leaderboard_settlement_history (board_id, period_type, period_key, id);
CREATE INDEX leaderboard_settlement_history_at ON leaderboard_settlement_history (at DESC);

-- Admin changes, who made them and why (a reopening is one).
CREATE TABLE leaderboard_admin_audit (
    id            bigserial   PRIMARY KEY,
    at            timestamptz NOT NULL,
    actor         text        NOT NULL,
    action        text        NOT NULL,  -- e.g. `period.reopen`
    target        text        NOT NULL,  -- e.g. `points/daily/2026-04-21`
    reason        text        NOT NULL,
    details       jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX leaderboard_admin_audit_at ON leaderboard_admin_audit (at DESC);

-- Webhook deliveries, written in the settlement's transaction and sent by the
-- settlement_webhooks sensor until the receiver answers 2xx (at least once).
CREATE TABLE leaderboard_webhook_outbox (
    id              uuid        PRIMARY KEY,  -- the idempotency id, the same on every attempt
    event_type      text        NOT NULL,
    board_id        text NOT NULL,
    period_type     text NOT NULL,
    period_key      text NOT NULL,
    revision        integer     NOT NULL,
    body            text        NOT NULL,  -- the exact JSON sent and signed
    created_at      timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_status     integer,   -- the receiver's HTTP status; null when no answer
    last_error      text,
    delivered_at    timestamptz,
    UNIQUE (event_type, board_id, period_type, period_key, revision)
);
CREATE INDEX leaderboard_webhook_outbox_due ON leaderboard_webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL;
