-- Seasons (docs/contracts.md#seasons): the period type `season`, keyed by the season id the
-- boards file gives. Adding a season to the file needs nothing here: its rows go to a leaf of
-- leaderboard_rankings_season named by its key, created at its first publish.
--
-- Seasons carry prizes, so like all-time they are never removed by retention: their partition
-- is by key alone, not by month.
CREATE TABLE leaderboard_rankings_season PARTITION OF leaderboard_rankings
    FOR VALUES IN ('season') PARTITION BY LIST (period_key);

ALTER TABLE leaderboard_periods DROP CONSTRAINT leaderboard_periods_period_type_check;
ALTER TABLE leaderboard_periods ADD CONSTRAINT leaderboard_periods_period_type_check
    CHECK (period_type IN ('daily', 'weekly', 'monthly', 'all_time', 'season'));

ALTER TABLE leaderboard_settlements DROP CONSTRAINT leaderboard_settlements_period_type_check;
ALTER TABLE leaderboard_settlements ADD CONSTRAINT leaderboard_settlements_period_type_check
    CHECK (period_type IN ('daily', 'weekly', 'monthly', 'season'));

-- As before, and seasons share one partition (their leaves are by key).
CREATE OR REPLACE FUNCTION leaderboard_ensure_partition(ptype text, at timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    lo   timestamptz := date_trunc('month', at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi   timestamptz := (date_trunc('month', at AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    name text := format('leaderboard_rankings_%s_%s', ptype, to_char(lo AT TIME ZONE 'UTC', 'YYYY_MM'));
BEGIN
    IF ptype = 'all_time' THEN
        RETURN 'leaderboard_rankings_all_time';
    ELSIF ptype = 'season' THEN
        RETURN 'leaderboard_rankings_season';
    ELSIF ptype NOT IN ('daily', 'weekly', 'monthly') THEN
        RAISE EXCEPTION 'unknown period type %', ptype;
    END IF;
    IF to_regclass(name) IS NULL THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L) PARTITION BY LIST (period_key)',
                       name, 'leaderboard_rankings_' || ptype, lo, hi);
    END IF;
    RETURN name;
END $$;
