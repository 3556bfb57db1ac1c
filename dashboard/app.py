"""The dashboard's entry script: `leaderboard dashboard` (or `streamlit run dashboard/app.py`)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "app_pages"

st.set_page_config(page_title="Leaderboard engine", page_icon=":material/leaderboard:", layout="wide")
page = st.navigation(
    [
        st.Page(PAGES / "leaderboards.py", title="Leaderboards", icon=":material/leaderboard:", default=True),
        st.Page(PAGES / "health.py", title="Pipeline health", icon=":material/monitor_heart:"),
        st.Page(PAGES / "settlement.py", title="Settlement", icon=":material/gavel:"),
        st.Page(PAGES / "moderation.py", title="Moderation", icon=":material/shield_person:"),
    ]
)
page.run()
