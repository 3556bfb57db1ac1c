-- Per group board, the day's events of its types that named no group (docs/contracts.md#conservation):
-- a JSON object {board_id: count} as text, the form the lake's ingest stats hold. NULL on days
-- ingested before group boards existed. Text, not jsonb, so it reads back as the string it was.
ALTER TABLE leaderboard_ingest_stats
    ADD COLUMN ungrouped text CHECK (ungrouped IS NULL OR jsonb_typeof(ungrouped::jsonb) = 'object');
