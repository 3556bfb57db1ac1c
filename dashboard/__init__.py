"""Streamlit dashboard: leaderboards (through the API) and pipeline health (Dagster, Postgres, lake).

Data access lives in `api_client`, `pipeline` and `stores` (plain functions, no Streamlit),
`queries` caches them with a short TTL, `views` shapes them for display, and the pages in
`app_pages/` only lay them out. Nothing here writes data.
"""
