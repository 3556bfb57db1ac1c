-- The leaf indexes lead with the column that varies (rank, user_id), not with board_id.
--
-- A leaf holds one period of a few boards, so board_id is nearly constant there: as a leading
-- key it defeats the sort's abbreviated keys and every comparison goes to the full tuple. Led
-- by rank or user_id, a large leaf indexes in much less time (README, Benchmarks: publish). Reads
-- still use them: "top N" is a range on rank with board_id checked in the index, and "one
-- user's row" gives both columns by equality.
DROP INDEX leaderboard_rankings_top;
DROP INDEX leaderboard_rankings_user;
CREATE INDEX leaderboard_rankings_top ON leaderboard_rankings (rank, board_id);
CREATE INDEX leaderboard_rankings_user ON leaderboard_rankings (user_id, board_id);
