-- Moderation (docs/contracts.md#moderation): users or groups excluded from a board, or from every
-- board, by an operator, with why and until when. Rows are never deleted: a lifting is written on
-- the row, so the table is its own history; every change is also in leaderboard_admin_audit
-- (0006.settlement.sql), with the board config changes and the reopenings.
CREATE TABLE leaderboard_exclusions (
    id          bigserial   PRIMARY KEY,
    board_id    text,                   -- NULL: every board
    subject_id  text        NOT NULL CHECK (length(subject_id) BETWEEN 1 AND 64),  -- a user or group id
    reason      text        NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    until       timestamptz,            -- NULL: until lifted
    lifted_at   timestamptz,
    lifted_by   text,
    lift_reason text,
    CHECK (until IS NULL OR until > created_at),
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL) AND (lifted_at IS NULL) = (lift_reason IS NULL))
);
-- The ranking reads the exclusions in force: not lifted (and not expired, checked on the few rows left).
CREATE INDEX leaderboard_exclusions_in_force ON leaderboard_exclusions (subject_id) WHERE lifted_at IS NULL;
CREATE INDEX leaderboard_exclusions_until ON leaderboard_exclusions (until) WHERE lifted_at IS NULL;
CREATE INDEX leaderboard_admin_audit_action ON leaderboard_admin_audit (action, id);
