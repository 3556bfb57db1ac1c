-- The month partitions of the daily, weekly and monthly rankings with their UTC bounds, read
-- from the catalog and the name leaderboard_ensure_partition gives them, so retention needs no
-- copy of that naming scheme of its own.
CREATE FUNCTION leaderboard_month_partitions() RETURNS TABLE (name text, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.relname::text, m.lo, m.lo + interval '1 month'
    FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid
    CROSS JOIN LATERAL (SELECT to_date(right(c.relname, 7), 'YYYY_MM')::timestamp AT TIME ZONE 'UTC' AS lo) m
    WHERE i.inhparent IN ('leaderboard_rankings_daily'::regclass, 'leaderboard_rankings_weekly'::regclass,
                          'leaderboard_rankings_monthly'::regclass)
    ORDER BY c.relname
$$;
