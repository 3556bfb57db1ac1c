"""Leaderboards: one board's standings for a period, as the API serves them, and one user's history."""

from __future__ import annotations

import datetime as dt

import altair as alt
import streamlit as st

from dashboard import context, queries, views
from dashboard.api_client import ApiError

s = context.settings()
st.title("Leaderboards")

try:
    boards = queries.boards(s.API_URL)
except ApiError as exc:
    st.error(str(exc))
    st.stop()
if not boards:
    st.info(f"The API at {s.API_URL} lists no enabled boards.")
    st.stop()

by_id = {b["id"]: b for b in boards}
pick_board, pick_period, pick_date = st.columns(3)
board_id = pick_board.selectbox("Board", list(by_id), format_func=lambda i: by_id[i]["title"] or i, key="board")
period = pick_period.selectbox("Period", by_id[board_id]["periods"], key="period")
try:
    keys = queries.period_keys(s.API_URL, board_id, period)
except ApiError as exc:
    st.error(str(exc))
    st.stop()
if not keys:
    st.info(
        f"Nothing is published yet for {board_id} {period}: the pipeline has not ranked it (`leaderboard materialize`)."
    )
    st.stop()

at: dt.date | None = None
key: str | None = None
if period == "all_time":
    pick_date.text_input("Date", "all time (one period)", disabled=True, key="at-all")
elif period == "season":
    seasons = {x["id"]: x for x in by_id[board_id].get("seasons", [])}
    key = pick_date.selectbox(
        "Season",
        keys,
        format_func=lambda i: views.season_label(seasons.get(i), i),
        key=f"season-{board_id}",
        help="The board's published seasons, newest first (the boards file lists them under `seasons`).",
    )
else:
    at = pick_date.date_input(
        "Date",
        value=views.key_date(period, keys[0]),
        key=f"at-{board_id}-{period}",
        help=f"Any local date inside the period; newest published: {keys[0]}",
    )


@st.fragment(run_every=context.refresh_every(s))
def standings(board_id: str, period: str, at: dt.date | None, key: str | None) -> None:
    """Re-read on its own every DASHBOARD_REFRESH_SECONDS: a publish shows without a click."""
    try:
        body = queries.standings(s.API_URL, board_id, period, at, key)
    except ApiError as exc:
        (st.error if exc.unreachable else st.warning)(str(exc))
        return
    head = st.columns(4)
    head[0].metric("Period", body["period_key"])
    head[1].metric("Status", body["status"])
    head[2].metric("Ranked (users or groups)", f"{body['total']:,}")
    head[3].metric("Published", views.ago(dt.datetime.fromisoformat(body["published_at"])))
    st.caption(f"{views.bounds(body)} · published {views.when(body['published_at'])} · from {s.API_URL}")
    table = views.standings_table(body)
    if table.is_empty():
        st.info("Nothing has a score in this period yet.")
        return
    left, right = st.columns([3, 2])
    with left:
        st.table(views.styled_standings(table))
    with right:
        st.subheader("Top scores")
        st.bar_chart(table.head(15), x="user", y="score", sort=False, horizontal=True)


standings(board_id, period, at, key)

st.divider()
st.subheader("A user's rank over the last periods")
user = st.text_input("User id", key="user", placeholder="e.g. user-000042").strip()
if user:
    answer = queries.rank_history(s.DATABASE_URL, s.LEADERBOARD_LAKE_DIR, board_id, period, user, 12)
    if answer.warning:
        st.warning(answer.warning)
    history = answer.frame
    if history.is_empty() or history["rank"].is_null().all():
        st.info(f"{user} is not ranked in the last {len(history)} published {period} periods of {board_id}.")
    else:
        chart = (
            alt.Chart(history.drop_nulls("rank"))
            .mark_line(point=True)
            .encode(
                x=alt.X("period_key:O", title=period, scale=alt.Scale(domain=history["period_key"].to_list())),
                y=alt.Y("rank:Q", title="rank", scale=alt.Scale(reverse=True, zero=False)),
                tooltip=["period_key", "rank", "score", "total"],
            )
        )
        st.altair_chart(chart)
        st.dataframe(history, hide_index=True)
        st.caption(f"From the {answer.source}; an empty rank means not ranked in that period.")
