"""Pipeline health: services, daily partitions, recent runs, ingest counts, quarantine, freshness."""

from __future__ import annotations

import datetime as dt

import altair as alt
import streamlit as st

from dashboard import context, queries, views

s = context.settings()
boards = context.boards()
st.title("Pipeline health")
days = int(st.number_input("Days shown", 1, 366, s.DASHBOARD_DAYS, key="days"))

_STATE_BOX = {"ok": st.success, "degraded": st.warning, "not configured": st.info, "not running": st.warning}


@st.fragment(run_every=context.refresh_every(s))
def health(days: int) -> None:
    """Re-read on its own every DASHBOARD_REFRESH_SECONDS."""
    last = dt.datetime.now(boards.tz).date()
    first = last - dt.timedelta(days=days - 1)

    st.subheader("Services")
    for column, probe in zip(st.columns(4), queries.reachability(s.DATABASE_URL, s.redis_url, s.API_URL,
                                                                 s.DAGSTER_URL), strict=True):  # fmt: skip
        with column:
            _STATE_BOX.get(probe.state, st.error)(f"**{probe.name}**: {probe.state}  \n{probe.detail}")

    st.subheader(f"Daily partitions, {first} to {last}")
    home = s.DAGSTER_HOME
    cells = queries.partition_grid(home, first, last, s.LEADERBOARD_LANDING_DIR, boards.timezone)
    if not cells:
        st.info(f"No Dagster instance under DAGSTER_HOME={home} yet: no run has been recorded there.")
    else:
        st.dataframe(views.styled_grid(views.partition_frame(cells)))
        st.caption(views.LEGEND + " (stale: its input changed after it was materialized)")
        failed = sorted({f"{c.asset} {c.day}" for c in cells if c.status == "failed"})
        if failed:
            st.error(f"{len(failed)} failed partition(s): {', '.join(failed)}")

    st.subheader("Recent runs")
    runs = queries.recent_runs(home, 20)
    if not runs:
        st.info("No runs yet.")
    else:
        st.dataframe(
            views.runs_frame(runs, s.DAGSTER_URL),
            hide_index=True,
            column_config={
                "run": st.column_config.LinkColumn("run", display_text=r".*/runs/([0-9a-f]{8}).*"),
                "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
            },
        )
        if runs[0].status == "failed":
            st.error(f"The latest run ({runs[0].job} {runs[0].partitions}) failed: {runs[0].error or 'see Dagster'}")

    st.subheader("Ingest per day")
    answer = queries.ingest_stats(s.DATABASE_URL, s.LEADERBOARD_LAKE_DIR, first, last)
    if answer.warning:
        st.warning(answer.warning)
    stats = answer.frame
    if stats.is_empty():
        st.info(f"No ingest statistics for {first}..{last} in the {answer.source}.")
    else:
        read, problems = st.columns(2)
        read.altair_chart(
            alt.Chart(views.ingest_long(stats), title="records read")
            .mark_bar()
            .encode(
                x=alt.X("yearmonthdate(day):O", title="day"),
                y=alt.Y("records:Q", stack=True),
                color=alt.Color("kind:N", sort=["counted", "duplicates", "quarantined"]),
                tooltip=["day:T", "kind", "records"],
            )
        )
        problems.altair_chart(
            alt.Chart(views.ingest_problems(stats), title="duplicates, conflicts, quarantined")
            .mark_bar()
            .encode(
                x=alt.X("yearmonthdate(day):O", title="day"),
                xOffset="kind:N",
                y=alt.Y("records:Q"),
                color=alt.Color("kind:N", sort=["duplicates", "conflicts", "quarantined"]),
                tooltip=["day:T", "kind", "records"],
            )
        )
        st.dataframe(
            stats.select("day", "read", "counted", "duplicates", "conflicts", "quarantined", "files", "seconds"),
            hide_index=True,
            column_config={"day": st.column_config.DateColumn("day", format="YYYY-MM-DD")},
        )
        st.caption(f"From the {answer.source}. read = counted + duplicates + quarantined; conflicts are "
                   "duplicates whose content differed.")  # fmt: skip

    st.subheader("Quarantined records")
    sample, total = queries.quarantine_sample(s.LEADERBOARD_LAKE_DIR, first, last)
    if not total:
        st.success(f"No quarantined records in {first}..{last}.")
    else:
        st.caption(f"{total:,} quarantined in {first}..{last}; the newest {sample.height} (files under "
                   f"{s.LEADERBOARD_LANDING_DIR}):")  # fmt: skip
        st.dataframe(
            views.under(sample, "file", s.LEADERBOARD_LANDING_DIR),
            hide_index=True,
            column_config={"day": st.column_config.DateColumn("day", format="YYYY-MM-DD")},
        )

    st.subheader("Freshness of current periods")
    fresh = queries.freshness(s.DATABASE_URL, s.LEADERBOARD_LAKE_DIR, (str(boards.source), boards.timezone), boards,
                              s.DASHBOARD_STALE_MINUTES)  # fmt: skip
    if fresh.warning:
        st.warning(fresh.warning)
    late = fresh.frame.filter(~fresh.frame["fresh"])
    if late.height:
        names = ", ".join(f"{r['board']} {r['period']} {r['period_key']}" for r in late.iter_rows(named=True))
        st.error(f"{late.height} current period(s) unpublished or older than {s.DASHBOARD_STALE_MINUTES} min: {names}")
    st.dataframe(
        views.freshness_styled(fresh.frame),
        hide_index=True,
        column_config={"published_at": st.column_config.DatetimeColumn("published at", format="YYYY-MM-DD HH:mm:ss")},
    )


health(days)
