"""Moderation: exclusions from boards (in force first) and every admin change (the audit)."""

from __future__ import annotations

import streamlit as st

from dashboard import context, queries

s = context.settings()
st.title("Moderation")
_TIME = "YYYY-MM-DD HH:mm:ss"


@st.fragment(run_every=context.refresh_every(s))
def moderation() -> None:
    """Re-read on its own every DASHBOARD_REFRESH_SECONDS."""
    view = queries.moderation_view(s.DATABASE_URL, s.LEADERBOARD_LAKE_DIR)
    if context.postgres_problem(view.problem, s):
        return
    exclusions, audit = view.exclusions, view.audit
    in_force, lifted, expired, changes = st.columns(4)
    in_force.metric("exclusions in force", f"{(exclusions['state'] == 'in force').sum():,}")
    lifted.metric("lifted", f"{(exclusions['state'] == 'lifted').sum():,}")
    expired.metric("expired", f"{(exclusions['state'] == 'expired').sum():,}")
    changes.metric("admin changes shown", f"{audit.height:,}")
    times = {c: st.column_config.DatetimeColumn(c.replace("_", " "), format=_TIME)
             for c in ("created_at", "until", "lifted_at", "at")}  # fmt: skip

    st.subheader("Exclusions")
    st.caption("A board of `None` is every board. The pipeline republishes the current periods at its next "
               "`moderation_changes` tick; settled periods change only through a reopening.")  # fmt: skip
    st.dataframe(exclusions, hide_index=True, column_config=times)
    st.subheader("Admin audit: board config, exclusions, reopenings")
    st.dataframe(audit.drop("id"), hide_index=True, column_config=times)
    st.caption(f"From {view.source}.")


moderation()
