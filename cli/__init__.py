"""The `leaderboard` command line: the top layer, the only one that imports all the others."""
