"""Settlement: settled and reopened periods, their history, webhook deliveries, the admin audit."""

from __future__ import annotations

import streamlit as st

from dashboard import context, queries

s = context.settings()
st.title("Settlement")
_TIME = "YYYY-MM-DD HH:mm:ss"


@st.fragment(run_every=context.refresh_every(s))
def settlement() -> None:
    """Re-read on its own every DASHBOARD_REFRESH_SECONDS."""
    view = queries.settlement_view(s.DATABASE_URL, s.LEADERBOARD_LAKE_DIR)
    if context.postgres_problem(view.problem, s):
        return
    states = view.states
    settled, reopened, pending, failing = st.columns(4)
    settled.metric("settled periods", f"{(states['state'] == 'settled').sum():,}")
    reopened.metric("reopened", f"{(states['state'] == 'reopened').sum():,}")
    pending.metric("webhooks pending", f"{view.undelivered.pending:,}")
    failing.metric("webhooks failing", f"{view.undelivered.failing:,}")
    failed = view.outbox.filter(view.outbox["delivered_at"].is_null() & (view.outbox["attempts"] > 0))
    if failed.height:
        first = failed.row(0, named=True)
        st.error(
            f"{failed.height} webhook deliveries failing; e.g. {first['board_id']} {first['period_type']} "
            f"{first['period_key']} revision {first['revision']} after {first['attempts']} attempts: "
            f"{first['last_error']}"
        )
    late = states.filter(states["late_after_settlement"] > 0)
    if late.height:
        st.warning(
            f"{late.height} settled period(s) received late events that their standings do not count "
            "(late_after_settlement); reopen one to let them in (`leaderboard settlement reopen`)."
        )
    times = {c: st.column_config.DatetimeColumn(c.replace("_", " "), format=_TIME)
             for c in ("settled_at", "published_at", "reopened_at", "last_late_at", "at", "created_at",
                       "next_attempt_at", "last_attempt_at", "delivered_at")}  # fmt: skip

    st.subheader("Periods")
    st.dataframe(states.drop("events"), hide_index=True, column_config=times)
    st.subheader("History: every settlement and reopening")
    st.dataframe(view.history.drop("id"), hide_index=True, column_config=times)
    st.subheader("Webhook deliveries")
    if s.SETTLEMENT_WEBHOOK_URL is None:
        st.caption("SETTLEMENT_WEBHOOK_URL is not set: settlements queue no webhook.")
    st.dataframe(view.outbox, hide_index=True, column_config=times)
    st.subheader("Admin audit")
    st.dataframe(view.audit.drop("id"), hide_index=True, column_config=times)
    st.caption(f"From {view.source}.")


settlement()
