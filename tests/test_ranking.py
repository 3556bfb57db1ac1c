"""Ranking rules (docs/contracts.md#ranking-rules), on the pure Polars functions and on rolled-up periods."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest

from leaderboard import ranking
from leaderboard.boards import Board, BoardSet
from leaderboard.landing.contract import CLEAN_SCHEMA
from leaderboard.periods import period_of
from leaderboard.ranking import MAX_METADATA_BYTES, score_events, standings, ungrouped_counts
from leaderboard.stores.lake import Lake, write_atomic
from pipelines.steps import rank_period

UTC = dt.UTC
SUM = Board(id="pts", event_types=("s",), aggregate="sum")
COUNT = Board(id="cnt", event_types=("s",), aggregate="count")
MAX = Board(id="best", event_types=("s",), aggregate="max")
MIN = Board(id="lap", event_types=("s",), aggregate="min", order="asc")
TEAM = Board(id="teams", event_types=("s",), aggregate="sum", group_by="attributes.team_id")
CLEAN = {c: t for c, t in CLEAN_SCHEMA.items() if c not in ("content_hash", "seq")}  # as clean_events stores them


@pytest.fixture(params=[0, ranking.FEW_ROWS], ids=["duckdb", "polars"])
def both_readers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Attribute strings are read by DuckDB, or in Polars for few rows: a test using this runs both ways."""
    monkeypatch.setattr(ranking, "FEW_ROWS", request.param)


def t(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


def events(rows: list[tuple], event_type: str = "s") -> pl.LazyFrame:
    """Clean events from (user, value, occurred_at[, attributes[, file_idx]]) rows; event ids
    follow the rows' order. Attributes are written as the landing writes them (compact JSON)."""
    attrs = [_text(r[3]) if len(r) > 3 else None for r in rows]
    return pl.LazyFrame(
        {
            "event_id": [f"{event_type}-{i:04d}" for i in range(len(rows))],
            "event_type": [event_type] * len(rows),
            "user_id": [r[0] for r in rows],
            "occurred_at": [r[2] for r in rows],
            "value": [float(r[1]) for r in rows],
            "attributes": attrs,
            "file_idx": [r[4] if len(r) > 4 else 0 for r in rows],
            "line": [None] * len(rows),
        },
        schema=CLEAN,
    )


def _text(attributes: dict | str | None) -> str | None:
    """Attributes as JSON text: a dict compact, as the landing writes it; a string as it is."""
    return json.dumps(attributes, separators=(",", ":")) if isinstance(attributes, dict) else attributes


def ranked(rows, board: Board) -> list[tuple]:
    table = standings(score_events(events(rows), [board]), None, [board]).collect()
    return table.select("rank", "user_id", "score", "reached_at").rows()


def test_ties_break_on_reached_at_then_user_id_bytewise():
    rows = [("bob", 5, t(1)), ("amy", 5, t(2)), ("Zed", 5, t(1)), ("cat", 7, t(3))]
    assert [r[1] for r in ranked(rows, SUM)] == ["cat", "Zed", "bob", "amy"]  # "Z" < "b" bytewise


def test_sum_and_count_reached_at_is_the_last_counted_event():
    rows = [("amy", 3, t(1)), ("amy", -1, t(5)), ("bob", 2, t(2))]
    assert ranked(rows, SUM) == [(1, "bob", 2.0, t(2)), (2, "amy", 2.0, t(5))]
    assert ranked(rows, COUNT) == [(1, "amy", 2.0, t(5)), (2, "bob", 1.0, t(2))]


def test_max_and_min_reached_at_is_the_earliest_event_with_the_extreme():
    rows = [("amy", 9, t(4)), ("amy", 9, t(2)), ("amy", 1, t(1)), ("bob", 9, t(3)), ("bob", 0, t(0))]
    assert ranked(rows, MAX) == [(1, "amy", 9.0, t(2)), (2, "bob", 9.0, t(3))]
    assert ranked(rows, MIN) == [(1, "bob", 0.0, t(0)), (2, "amy", 1.0, t(1))]  # asc: lowest first


def test_asc_order_ranks_lowest_first_and_desc_highest():
    rows = [("a", 30, t(1)), ("b", 10, t(1)), ("c", 20, t(1))]
    assert [r[1] for r in ranked(rows, MIN)] == ["b", "c", "a"]
    assert [r[1] for r in ranked(rows, MAX)] == ["a", "c", "b"]


def test_min_score_drops_users_below_it_and_ranks_stay_gapless():
    board = Board(id="pts", event_types=("s",), aggregate="sum", min_score=10)
    rows = [("a", 9.5, t(1)), ("b", 10, t(1)), ("c", 50, t(1))]
    assert ranked(rows, board) == [(1, "c", 50.0, t(1)), (2, "b", 10.0, t(1))]


def test_only_the_boards_event_types_count_and_large_integers_stay_exact():
    big = 2**52 + 1
    lf = pl.concat([events([("a", big, t(1)), ("a", 1, t(2))]), events([("a", 100, t(3))], "other")])
    table = standings(score_events(lf, [SUM]), None, [SUM]).collect()
    assert table["score"].to_list() == [float(big + 1)] and int(table["score"][0]) == big + 1


def test_previous_rank_and_rank_change():
    now = score_events(events([("a", 10, t(1)), ("b", 20, t(1)), ("c", 5, t(1))]), [SUM])
    before = score_events(events([("a", 30, t(1)), ("b", 20, t(1))]), [SUM])
    table = standings(now, before, [SUM]).collect()
    assert table.select("user_id", "rank", "previous_rank", "rank_change").rows() == [
        ("b", 1, 2, 1),
        ("a", 2, 1, -1),
        ("c", 3, None, None),
    ]


def _lake_with_days(
    tmp_path: Path, days: dict[dt.date, list[tuple[str, float]]], tz: str = "UTC"
) -> tuple[Lake, BoardSet]:
    lake = Lake(tmp_path)
    boards = BoardSet((SUM,), tz, dt.date(2024, 1, 1), tmp_path / "boards.yaml")
    for day, rows in days.items():
        at = dt.datetime.combine(day, dt.time(12), tzinfo=UTC)
        write_atomic(
            score_events(events([(u, v, at) for u, v in rows]), [SUM]).collect(), lake.day_file("daily_scores", day)
        )
    return lake, boards


@pytest.mark.parametrize(
    ("period_type", "before", "after"),
    [
        ("daily", dt.date(2026, 12, 31), dt.date(2027, 1, 1)),  # day and year boundary
        ("weekly", dt.date(2026, 12, 31), dt.date(2027, 1, 4)),  # 2026-W53 -> 2027-W01
        ("monthly", dt.date(2026, 12, 15), dt.date(2027, 1, 2)),  # month and year boundary
    ],
)
def test_previous_rank_across_boundaries(tmp_path, period_type, before, after):
    lake, boards = _lake_with_days(tmp_path, {before: [("a", 1), ("b", 5)], after: [("a", 9), ("b", 2), ("c", 1)]})
    table = rank_period(lake, boards, period_of(period_type, after))
    assert table.select("user_id", "rank", "previous_rank", "rank_change").rows() == [
        ("a", 1, 2, 1),
        ("b", 2, 1, -1),
        ("c", 3, None, None),
    ]


def test_weekly_rolls_up_the_days_of_iso_week_53(tmp_path):
    days = {
        dt.date(2026, 12, 27): [("x", 100)],
        dt.date(2026, 12, 28): [("a", 1)],
        dt.date(2027, 1, 3): [("a", 2), ("b", 2)],
        dt.date(2027, 1, 4): [("b", 100)],
    }
    lake, boards = _lake_with_days(tmp_path, days)
    table = rank_period(lake, boards, period_of("weekly", dt.date(2026, 12, 31)))
    assert table.select("user_id", "score").rows() == [("a", 3.0), ("b", 2.0)]


def test_all_time_previous_is_one_day_earlier(tmp_path):
    lake, boards = _lake_with_days(
        tmp_path,
        {dt.date(2026, 1, 1): [("a", 5)], dt.date(2026, 6, 1): [("b", 3), ("a", 1)], dt.date(2026, 6, 2): [("b", 4)]},
    )
    table = rank_period(lake, boards, period_of("all_time", dt.date(2026, 6, 2), boards.start_date))
    assert table.select("user_id", "score", "rank", "previous_rank").rows() == [("b", 7.0, 1, 2), ("a", 6.0, 2, 1)]


# Group boards, names and metadata (docs/contracts.md#groups-names-and-metadata)


def test_a_group_board_ranks_groups_with_ties_broken_by_group_id_bytewise():
    rows = [
        ("amy", 5, t(1), {"team_id": "red"}),
        ("bob", 5, t(1), {"team_id": "Zulu"}),  # "Z" < "r" bytewise
        ("cat", 3, t(1), {"team_id": "blue"}),
        ("dan", 2, t(1), {"team_id": "blue"}),
        ("eve", 4, t(2), {"team_id": "green"}),
        ("fay", 1, t(0), {"team_id": "green"}),
    ]
    table = standings(score_events(events(rows), [TEAM]), None, [TEAM]).collect()
    assert table.select("rank", "user_id", "score", "event_count", "reached_at").rows() == [
        (1, "Zulu", 5.0, 1, t(1)),
        (2, "blue", 5.0, 2, t(1)),
        (3, "red", 5.0, 1, t(1)),
        (4, "green", 5.0, 2, t(2)),  # reached last
    ]
    assert table["display_name"].to_list() == [None] * 4 and table["metadata"].to_list() == [None] * 4


def test_events_without_a_group_are_not_counted_and_are_reported_as_ungrouped(both_readers):
    grouped = {"team_id": "red"}
    ungrouped = [
        None,  # no attributes
        {},  # no such attribute
        {"team_id": None},
        {"team_id": 7},  # a number is no group id ("7" is)
        {"team_id": ""},
        {"team_id": "x" * 65},  # longer than a user id may be
        {"team_id": ["red"]},
        {"team_id": {"id": "red"}},
        {"other": {"team_id": "red"}},  # nested elsewhere: not attributes.team_id
    ]
    rows = [("amy", 1, t(1), grouped), ("amy", 1, t(1), {"team_id": "7"}), ("amy", 1, t(1), {"team_id": "x" * 64})]
    rows += [("amy", 100, t(2), a) for a in ungrouped]
    lf = pl.concat([events(rows), events([("amy", 1000, t(3), grouped)], "other")])
    table = standings(score_events(lf, [TEAM, SUM]), None, [TEAM, SUM]).collect()
    teams = table.filter(pl.col("board_id") == "teams").sort("user_id")
    assert teams.select("user_id", "score", "event_count").rows() == [
        ("7", 1.0, 1),
        ("red", 1.0, 1),
        ("x" * 64, 1.0, 1),
    ]
    assert table.filter(pl.col("board_id") == "pts")["score"].to_list() == [903.0]  # a user board counts them all
    assert ungrouped_counts(lf, [TEAM, SUM]) == {"teams": len(ungrouped)}


def test_a_group_read_from_attributes_text_as_a_json_parser_reads_it(both_readers):
    texts = {
        "amy": '{"team_id":"red","team_id":"blue"}',  # a repeated key: its last value, as parsers that build maps
        "bob": '{"team_id":7,"team_id":"blue"}',
        "cat": '{"team_id":"blue","team_id":null}',  # the last is no group
        "dan": '{"team_id" :  "true"}',  # a string that reads like a literal is a string
        "eve": '{"team_id":true}',
        "fay": '{"team_id":"[1]"}',
        "gus": '{"team_id":[1]}',
        "hal": '{"team_id":"-5"}',
        "ivy": '{"team_id":-5}',
        "jim": '{"k":"team_id","team_id":"green"}',  # the name as a value too
        "kim": '{"m":"{","team_id":"pink"}',  # a brace in a string
        "lee": '{ "team_id":"grey" }',
    }
    lf = events([(user, 1, t(1)) for user in texts]).with_columns(
        pl.col("user_id").replace_strict(texts).alias("attributes")
    )
    table = standings(score_events(lf, [TEAM]), None, [TEAM]).collect()
    groups = {"true": 1, "[1]": 1, "-5": 1, "pink": 1, "grey": 1}
    assert dict(table.select("user_id", "event_count").iter_rows()) == {"blue": 2, "green": 1, **groups}
    assert ungrouped_counts(lf, [TEAM]) == {"teams": 4}
    unrepeated = lf.filter(~pl.col("user_id").is_in(["amy", "bob", "cat", "jim"]))  # the groups read in one pass
    table = standings(score_events(unrepeated, [TEAM]), None, [TEAM]).collect()
    assert dict(table.select("user_id", "event_count").iter_rows()) == groups


def test_a_group_may_sit_in_a_nested_object_and_be_written_with_escapes():
    board = Board(id="squads", event_types=("s",), aggregate="count", group_by="attributes.squad.id")
    rows = [
        ("amy", 1, t(1), {"squad": {"id": 'a"b'}}),
        ("bob", 1, t(1), {"squad": {"id": 'a"b', "id2": "x"}, "tag": "[{"}),
        ("cat", 1, t(1), {"squad": {"id": "é"}}),
        ("dan", 1, t(1), {"squad": [{"id": "array"}]}),  # a path goes through objects only
        ("eve", 1, t(1), {"squad": {"id": 3}}),
        ("fay", 1, t(1), {"id": "top"}),
    ]
    table = standings(score_events(events(rows), [board]), None, [board]).collect()
    assert table.select("user_id", "score").rows() == [('a"b', 2.0), ("é", 1.0)]
    assert ungrouped_counts(events(rows), [board]) == {"squads": 3}


def test_the_name_is_the_latest_non_empty_display_name_with_ties_in_file_then_event_id_order(both_readers):
    rows = [
        ("amy", 1, t(1), {"display_name": "Amy"}),
        ("amy", 1, t(3), {"display_name": ""}),  # later, but empty
        ("amy", 1, t(4), {"display_name": None}),
        ("amy", 1, t(5), {"display_name": 42}),  # not a string
        ("amy", 1, t(6), {"display_name": "y" * 65}),  # too long
        ("amy", 1, t(7), {"level": 3}),
        ("amy", 1, t(8), {"profile": {"display_name": "nested"}}),
        ("amy", 1, t(9)),
        ("amy", 1, t(2), {"display_name": "Amelia"}),
        ("bob", 1, t(5), {"display_name": "Bob in file 1"}, 1),
        ("bob", 1, t(5), {"display_name": "Bob in file 0"}, 0),
        ("cat", 1, t(5), {"display_name": "Cat, s-0011"}, 3),
        ("cat", 1, t(5), {"display_name": "Cat, s-0012"}, 3),  # same time and file: the greater event id
        ("dan", 1, t(5), {"nick": "no name"}),
    ]
    table = standings(score_events(events(rows), [SUM]), None, [SUM]).collect()
    names = dict(table.select("user_id", "display_name").iter_rows())
    assert names == {"amy": "Amelia", "bob": "Bob in file 1", "cat": "Cat, s-0012", "dan": None}


def test_names_are_found_with_times_years_apart_in_many_files():
    """The candidates' events are looked up by one number per (time, file), which wraps when
    times are centuries apart: the names found are still each user's own latest."""
    old, new = dt.datetime(1, 1, 1, tzinfo=UTC), dt.datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    rows = [(f"u{i}", 1, old, {"display_name": f"Old {i}"}, 40 - i) for i in range(41)]
    rows += [(f"u{i}", 1, new, {"display_name": f"New {i}"}, i) for i in range(41)]
    rows += [("zed", 1, new, {"display_name": "Zed"}, 41)]  # another user in the latest pair's place
    names = dict(score_events(events(rows), [SUM]).collect().select("user_id", "display_name").iter_rows())
    assert names == {**{f"u{i}": f"New {i}" for i in range(41)}, "zed": "Zed"}


def test_the_latest_name_and_metadata_values_carry_across_days_and_rollups(tmp_path):
    board = Board(id="pts", event_types=("s",), aggregate="sum", metadata=("level", "country"))
    lake = Lake(tmp_path)
    boards = BoardSet((board,), "UTC", dt.date(2024, 1, 1), tmp_path / "boards.yaml")

    def day(date: dt.date, rows: list[tuple]) -> None:
        at = dt.datetime.combine(date, dt.time(12), tzinfo=UTC)
        found = score_events(
            events([(u, v, at + dt.timedelta(minutes=i), a) for i, (u, v, a) in enumerate(rows)]), [board]
        )
        write_atomic(found.collect(), lake.day_file("daily_scores", date))

    day(
        dt.date(2026, 3, 2),
        [("amy", 1, {"display_name": "Amy", "level": 1, "country": "FR"}), ("bob", 1, {"level": 9})],
    )
    day(dt.date(2026, 3, 3), [("amy", 1, {"display_name": "Amy 2", "level": 2}), ("bob", 1, {"display_name": "Bob"})])
    day(dt.date(2026, 3, 4), [("amy", 5, {"level": 3}), ("bob", 1, None)])
    day(dt.date(2026, 3, 10), [("amy", 1, {"country": "DE"})])  # the next week

    def entries(period_type: str, at: dt.date) -> dict[str, tuple]:
        table = rank_period(lake, boards, period_of(period_type, at, boards.start_date))
        return {r["user_id"]: (r["display_name"], json.loads(r["metadata"])) for r in table.iter_rows(named=True)}

    assert entries("daily", dt.date(2026, 3, 4)) == {"amy": (None, {"level": 3}), "bob": (None, {})}
    assert entries("weekly", dt.date(2026, 3, 2)) == {
        "amy": ("Amy 2", {"level": 3, "country": "FR"}),  # each key its own latest value, in the board's order
        "bob": ("Bob", {"level": 9}),
    }
    assert entries("all_time", dt.date(2026, 3, 10)) == {
        "amy": ("Amy 2", {"level": 3, "country": "DE"}),
        "bob": ("Bob", {"level": 9}),
    }


def test_daily_scores_written_before_names_still_roll_up_with_nulls(tmp_path):
    board = Board(id="pts", event_types=("s",), aggregate="sum", metadata=("level",))
    lake = Lake(tmp_path)
    boards = BoardSet((board,), "UTC", dt.date(2024, 1, 1), tmp_path / "boards.yaml")
    old = pl.DataFrame(
        {"board_id": ["pts"], "user_id": ["amy"], "score": [4.0], "event_count": [2], "reached_at": [t(1)]},
        schema={"board_id": pl.String, "user_id": pl.String, "score": pl.Float64, "event_count": pl.Int64,
                "reached_at": pl.Datetime("us", "UTC")},
    )  # fmt: skip
    write_atomic(old, lake.day_file("daily_scores", dt.date(2026, 11, 25)))
    new = score_events(events([("amy", 1, t(9), {"display_name": "Amy", "level": 4})]), [board]).collect()
    write_atomic(new, lake.day_file("daily_scores", dt.date(2026, 11, 26)))

    old_only = rank_period(lake, boards, period_of("daily", dt.date(2026, 11, 25)))
    assert old_only.select("user_id", "score", "display_name", "metadata").rows() == [("amy", 4.0, None, "{}")]
    week = rank_period(lake, boards, period_of("weekly", dt.date(2026, 11, 26)))
    assert week.select("user_id", "score", "display_name", "metadata").rows() == [("amy", 5.0, "Amy", '{"level":4}')]


@pytest.mark.parametrize(("d_chars", "kept"), [(102, ["a", "c", "d"]), (103, ["a", "c", "e"])])
def test_metadata_leaves_out_a_key_that_would_pass_the_size_cap_and_keeps_trying_the_next(d_chars, kept):
    board = Board(id="pts", event_types=("s",), aggregate="sum", metadata=("a", "big", "c", "d", "e"))
    attrs = {"a": "é" * 100, "big": "x" * 2000, "c": "y" * 700, "d": "z" * d_chars, "e": 5}
    table = standings(score_events(events([("amy", 1, t(1), attrs)]), [board]), None, [board]).collect()
    text = table["metadata"][0]
    # {"a":"é..."} is 208 bytes (é is two), "big" never fits, ,"c":"y..." adds 707: 915; ,"d":"z..." adds
    # 7 + d_chars: 1024 with 102 (kept, the cap is inclusive; then ,"e":5 no longer fits), 1025 with 103
    # (left out, and ,"e":5 adds 6)
    assert list(json.loads(text)) == kept
    assert json.loads(text) == {k: attrs[k] for k in kept}
    assert len(text.encode()) == (1024 if "d" in kept else 921) <= MAX_METADATA_BYTES


def test_metadata_values_keep_their_json_type_and_boards_without_metadata_have_none():
    board = Board(id="meta", event_types=("s",), aggregate="sum", metadata=("level", "country", "vip", "tags", "p.tz"))
    attrs = {"level": 7, "country": "FR", "vip": False, "tags": ["a", "b"], "p": {"tz": "Europe/Paris"}, "x": 1}
    table = standings(score_events(events([("amy", 1, t(1), attrs)]), [board, SUM]), None, [board, SUM]).collect()
    meta = dict(table.select("board_id", "metadata").iter_rows())
    assert json.loads(meta["meta"]) == {
        "level": 7,
        "country": "FR",
        "vip": False,
        "tags": ["a", "b"],
        "p.tz": "Europe/Paris",
    }
    assert meta["pts"] is None


def _by_the_rules(rows: list[tuple], board: Board) -> dict[str, tuple]:
    """Per user (or group): (score, event_count, reached_at, display_name, named_at, metadata
    values as (key, JSON text, time)), the contract's rules read plainly, one event at a time in
    ORDER (time, file, event id)."""
    out: dict[str, dict] = {}
    ordered = sorted(enumerate(rows), key=lambda e: (e[1][2], e[1][4], f"s-{e[0]:04d}"))
    for _, (user, value, at, text, _) in ordered:
        attrs = json.loads(_text(text))
        if board.group_by:
            user = attrs.get("team_id")
            if not isinstance(user, str) or not 1 <= len(user) <= 64:
                continue
        entry = out.setdefault(user, {"n": 0, "score": None, "at": None, "name": None, "named_at": None, "meta": {}})
        entry["n"] += 1
        if board.aggregate == "sum":
            entry["score"], entry["at"] = (entry["score"] or 0.0) + value, at
        elif board.aggregate == "last":
            entry["score"], entry["at"] = value, at
        else:  # an extreme: the earliest event carrying it (events come in time order)
            best = entry["score"]
            if best is None or (value > best if board.aggregate == "max" else value < best):
                entry["score"], entry["at"] = value, at
        name = attrs.get("display_name")
        if not board.group_by and isinstance(name, str) and 1 <= len(name) <= 64:
            entry["name"], entry["named_at"] = name, at
        for key in board.metadata:
            if attrs.get(key) is not None:
                entry["meta"][key] = (json.dumps(attrs[key], separators=(",", ":")), at)
    return {
        u: (e["score"], e["n"], e["at"], e["name"], e["named_at"], [(k, *e["meta"][k]) for k in e["meta"]])
        for u, e in out.items()
    }


def test_scores_follow_the_rules_from_a_frame_and_from_files_of_one_or_many_row_groups(tmp_path, both_readers):
    rng = random.Random(7)
    names, teams = ["Amy", "Bob", "", None, 42, "x" * 65], ["red", "blue", None, 7, ""]
    levels = [1, 2, None, None, None, "x", [3]]  # mostly unset: a user's latest event often lacks one
    # as text: a name beside the same key unset in a nested object, one with an escape in its
    # key, one with spaces; none written unset beside a nested value; a repeated group key
    odd = ['{"m":{"display_name":null},"display_name":"Cy"}', '{"display\\u005fname":"Di"}',
           '{"display_name" : "Ed"}', '{"display_name":"","m":{"display_name":"Fay"}}',
           '{"team_id":"blue","level":6,"team_id":"red"}']  # fmt: skip
    rows = [
        (
            f"u{rng.randrange(40)}",
            rng.randrange(1, 50),
            t(rng.randrange(0, 3), rng.randrange(0, 3)),  # few distinct times: many ties
            rng.choice(odd)
            if rng.random() < 0.1
            else {"display_name": rng.choice(names), "team_id": rng.choice(teams), "level": rng.choice(levels)},
            rng.randrange(4),
        )
        for _ in range(600)
    ]
    last = Board(id="latest", event_types=("s",), aggregate="last")
    levels_of = Board(id="meta", event_types=("s",), aggregate="sum", metadata=("level",))
    team_levels = Board(id="tmeta", event_types=("s",), aggregate="sum", group_by="attributes.team_id",
                        metadata=("level",))  # fmt: skip
    boards = [SUM, MAX, MIN, TEAM, levels_of, team_levels, last]
    events(rows).sink_parquet(tmp_path / "clean.parquet")
    # a file of one row group has the boards scored side by side, one of many a board at a time
    events(rows).collect().write_parquet(tmp_path / "groups.parquet", row_group_size=100)
    assert pq.read_metadata(tmp_path / "clean.parquet").num_row_groups == 1
    assert pq.read_metadata(tmp_path / "groups.parquet").num_row_groups > 1
    for source in (events(rows), tmp_path / "clean.parquet", tmp_path / "groups.parquet"):
        scores = score_events(source, boards).collect()
        for b in boards:
            mine = scores.filter(pl.col("board_id") == b.id)
            found = {r[0]: (*r[1:-1], [(m["key"], m["value"], m["at"]) for m in r[-1] or []]) for r in mine.select(
                "user_id", "score", "event_count", "reached_at", "display_name", "named_at", "metadata_values"
            ).iter_rows()}  # fmt: skip
            assert found == _by_the_rules(rows, b), (source, b.id)
    assert len(found) == 40


def test_a_group_keeps_the_latest_metadata_of_its_own_events_with_ties_in_file_then_event_id_order():
    board = Board(id="teams", event_types=("s",), aggregate="sum", group_by="attributes.team_id", metadata=("level",))
    rows = [
        ("amy", 1, t(5), {"team_id": "red", "level": 1}, 2),
        ("bob", 1, t(5), {"team_id": "red", "level": 2}, 2),  # same time and file: the greater event id
        ("cat", 1, t(6), {"team_id": "blue", "level": 3}, 0),
        ("dan", 1, t(6), {"team_id": "blue", "level": 4}, 1),  # the later file
        ("eve", 1, t(6), {"team_id": "blue", "level": 5}, 0),
        ("fay", 1, t(7), {"team_id": "green", "level": None}, 0),  # latest, but unset
        ("gus", 1, t(6), {"team_id": "green", "level": 9}, 0),
        ("hal", 1, t(6, 30), '{"team_id":"blue","level":7,"team_id":"green"}', 0),  # the last key counts
        ("ivy", 1, t(5), {"level": 8}, 2),  # red's time and file, a greater id, but no team
    ]
    scores = score_events(events(rows), [board]).collect()
    levels = {r[0]: [(m["value"], m["at"]) for m in r[1]] for r in scores.select("user_id", "metadata_values").rows()}
    assert levels == {"red": [("2", t(5))], "blue": [("4", t(6))], "green": [("7", t(6, 30))]}


def test_a_value_counts_however_its_key_is_written_and_an_unset_one_never():
    """Most producers write every key, null or empty where unset; a value beside such a key,
    or behind an escaped key or spaces, is still the latest one."""
    board = Board(id="pts", event_types=("s",), aggregate="sum", metadata=("level",))
    later = {
        "nested unset": ('{"m":{"display_name":null,"level":null},"display_name":"Cy","level":2}', "Cy", "2"),
        "escaped key": ('{"display\\u005fname":"Di","lev\\u0065l":""}', "Di", '""'),
        "spaces": ('{"display_name" : "Ed", "level" : 3}', "Ed", "3"),
        "unset": ('{"display_name":"","level":null}', "Amy", "1"),
        "nested value": ('{"display_name":null,"m":{"display_name":"Fay","level":4}}', "Amy", "1"),
    }
    rows = [(user, 1, t(1), {"display_name": "Amy", "level": 1}) for user in later]
    rows += [(user, 1, t(2), text) for user, (text, _, _) in later.items()]
    scores = score_events(events(rows), [board]).collect()
    found = {r[0]: (r[1], r[2][0]["value"]) for r in scores.select("user_id", "display_name", "metadata_values").rows()}
    assert found == {user: (name, level) for user, (_, name, level) in later.items()}
