-- The identity service's answers (docs/contracts.md#identity-service), so a publish asks it only
-- for users missing here or fetched longer than IDENTITY_CACHE_HOURS ago, and falls back to the
-- last known name when it does not answer. A row whose display_name is null records that the
-- service knew no name for the user (not a missing answer): it is re-asked after the TTL too.
CREATE TABLE leaderboard_identity_cache (
    user_id      text COLLATE "C" PRIMARY KEY,
    display_name text,
    avatar_url   text,
    fetched_at   timestamptz NOT NULL
);
