-- Leaderboard schema (docs/contracts.md#postgres). Applied by `leaderboard migrate deploy` (yoyo-migrations).
--
-- leaderboard_rankings is partitioned three levels deep:
--   period type (LIST) -> month of period_end, UTC (RANGE; not for all-time) -> period key (LIST)
-- Each published period is one leaf table: a publish loads a fresh table without indexes,
-- indexes it, and swaps it for the old leaf in one transaction (pipelines publish path).
-- Retention drops whole month partitions; all-time rows never expire. Month partitions are
-- created as periods are published (leaderboard_ensure_partition).

-- Identifiers compare bytewise (COLLATE "C"), as the ranking's user_id tie-break does; it
-- also makes index builds several times faster than a linguistic collation.
CREATE TABLE leaderboard_rankings (
    board_id      text COLLATE "C" NOT NULL,
    period_type   text COLLATE "C" NOT NULL,
    period_key    text COLLATE "C" NOT NULL,
    period_start  timestamptz      NOT NULL,
    period_end    timestamptz      NOT NULL,
    user_id       text COLLATE "C" NOT NULL,
    rank          integer          NOT NULL,
    score         double precision NOT NULL,
    previous_rank integer,
    rank_change   integer,
    event_count   bigint           NOT NULL,
    reached_at    timestamptz      NOT NULL,
    published_at  timestamptz      NOT NULL,
    run_id        text             NOT NULL
) PARTITION BY LIST (period_type);

CREATE TABLE leaderboard_rankings_daily PARTITION OF leaderboard_rankings
    FOR VALUES IN ('daily') PARTITION BY RANGE (period_end);
CREATE TABLE leaderboard_rankings_weekly PARTITION OF leaderboard_rankings
    FOR VALUES IN ('weekly') PARTITION BY RANGE (period_end);
CREATE TABLE leaderboard_rankings_monthly PARTITION OF leaderboard_rankings
    FOR VALUES IN ('monthly') PARTITION BY RANGE (period_end);
CREATE TABLE leaderboard_rankings_all_time PARTITION OF leaderboard_rankings
    FOR VALUES IN ('all_time') PARTITION BY LIST (period_key);

-- "top N of a period" and "one user's row". A query names the period type and key, which
-- prune it to the period's leaf, so the leaf indexes need only the board and rank or user
-- (narrow keys build twice as fast at publish). A user appears once per board and period by
-- construction (the ranking emits one row per user), so no unique index is kept.
CREATE INDEX leaderboard_rankings_top ON leaderboard_rankings (board_id, rank);
CREATE INDEX leaderboard_rankings_user ON leaderboard_rankings (board_id, user_id);

-- The registry of published periods: one row per board and period, swapped with its rows.
CREATE TABLE leaderboard_periods (
    board_id      text        NOT NULL,
    period_type   text        NOT NULL CHECK (period_type IN ('daily', 'weekly', 'monthly', 'all_time')),
    period_key    text        NOT NULL,
    period_start  timestamptz NOT NULL,
    period_end    timestamptz NOT NULL,
    status        text        NOT NULL CHECK (status IN ('live', 'final')),
    entries       integer     NOT NULL,
    published_at  timestamptz NOT NULL,
    run_id        text        NOT NULL,
    content_hash  text        NOT NULL,
    PRIMARY KEY (board_id, period_type, period_key)
);
-- "list periods of a board", newest first
CREATE INDEX leaderboard_periods_list ON leaderboard_periods (board_id, period_type, period_start DESC);

-- Per-day ingest statistics of the pipeline (read = counted + duplicates + quarantined).
CREATE TABLE leaderboard_ingest_stats (
    day           date        PRIMARY KEY,
    files         integer     NOT NULL,
    skipped_files integer     NOT NULL,
    read          bigint      NOT NULL,
    counted       bigint      NOT NULL,
    duplicates    bigint      NOT NULL,
    conflicts     bigint      NOT NULL,
    quarantined   bigint      NOT NULL,
    seconds       double precision NOT NULL,
    run_id        text        NOT NULL,
    written_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (read = counted + duplicates + quarantined)
);

-- Board overrides set through the admin API (display limit, enabled), applied without restart.
CREATE TABLE leaderboard_board_config (
    board_id      text        PRIMARY KEY,
    display_limit integer     CHECK (display_limit BETWEEN 1 AND 10000),
    enabled       boolean     NOT NULL DEFAULT true,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    updated_by    text
);

-- Admin refresh requests, turned into pipeline runs by a sensor.
CREATE TABLE leaderboard_refresh_requests (
    id            bigserial   PRIMARY KEY,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    requested_by  text,
    status        text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    done_at       timestamptz,
    run_id        text
);
CREATE INDEX leaderboard_refresh_requests_pending ON leaderboard_refresh_requests (requested_at)
    WHERE status = 'pending';

-- The partition a period's leaf attaches to: the all-time partition, or the month (by
-- period_end, UTC) of a daily/weekly/monthly period, created on demand.
CREATE FUNCTION leaderboard_ensure_partition(ptype text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    name text := format('leaderboard_rankings_%s_%s', ptype, to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF ptype = 'all_time' THEN
        RETURN 'leaderboard_rankings_all_time';
    ELSIF ptype NOT IN ('daily', 'weekly', 'monthly') THEN
        RAISE EXCEPTION 'unknown period type %', ptype;
    END IF;
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L) PARTITION BY LIST (period_key)',
                       name, 'leaderboard_rankings_' || ptype, lo, hi);
    END IF;
    RETURN name;
END $$;
