"""Shared core of the leaderboard engine: settings, boards, periods and store access.

The pipeline (`pipelines`), the API and the dashboard import from here, so each concern has
exactly one home.
"""
