"""The landing reader: validation, quarantine, formats, skipped files, dedupe, conservation."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import random
import sys
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leaderboard import objstore
from leaderboard.boards import ValueRange
from leaderboard.landing import (
    CLEAN_SCHEMA,
    LandedFile,
    LandingError,
    contract,
    dedupe,
    hour_folder,
    hour_rel,
    lines,
    list_files,
    read,
    read_day,
    sources,
)
from leaderboard.objstore import S3Location
from leaderboard.periods import period_of
from leaderboard.stores.lake import Lake
from pipelines.steps import ingest_day
from tests.conftest import event, land

UTC = dt.UTC
H10 = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
DAY = dt.date(2026, 11, 26)


@pytest.fixture(autouse=True, params=["ordered", "unordered"])
def ordered(request, monkeypatch) -> bool:
    """Each test runs with DuckDB's JSON rows staged in scan order (a refused row's line placed
    by its order) and out of it (a file with a problem read whole); read_day chooses by file
    size, and the day must come out the same."""
    monkeypatch.setattr(read, "ORDERED_MIN_FILE_BYTES", 0 if request.param == "ordered" else 2**62)
    return request.param == "ordered"


_BUCKET: list[str] = []  # the test's bucket when it reads from object storage


@pytest.fixture(autouse=True, params=["files", "s3"])
def where(request, monkeypatch) -> str:
    """Each test also reads its landed files from a bucket (uploaded as the sink would put
    them): the same files, quarantine rows, skipped names and events as from local files."""
    if request.param == "s3":
        monkeypatch.setattr(f"{__name__}._BUCKET", [request.getfixturevalue("s3_bucket")])
    return request.param


def _upload(landing: Path, bucket: str) -> S3Location:
    """The landing folder's topics/ as objects under s3://bucket/landing (the sink's keys)."""
    location = S3Location(bucket, "landing")
    store = objstore.store_of(location)
    for path in sorted((landing / "topics").rglob("*")) if (landing / "topics").is_dir() else []:
        if path.is_file():
            objstore.put_bytes(store, location.key(path.relative_to(landing).as_posix()), path.read_bytes())
    if not (landing / "topics").is_dir():
        objstore.put_bytes(store, location.key("elsewhere/x"), b"")  # a bucket with no topics/ prefix
    return location


def _read(landing: Path, day: dt.date = DAY, tz: str = "UTC") -> SimpleNamespace:
    start, end = period_of("daily", day).bounds(ZoneInfo(tz))
    if not _BUCKET:
        r = read_day(landing, start, end, landing / ".work")
        return SimpleNamespace(files=r.files, skipped=r.skipped, events=r.events.collect(), quarantine=r.quarantine)
    location = _upload(landing, _BUCKET[0])
    try:
        r = read_day(location, start, end, landing / ".work-s3")
    except LandingError as exc:
        raise LandingError(str(exc).replace(location.url(), str(landing))) from exc
    # Named by their objects' URLs: mapped back to the local paths the assertions expect.
    assert all(f.startswith(location.url("topics/")) for f in r.quarantine["file"])
    assert all(s.startswith(location.url("topics/")) for s in r.skipped)
    back = pl.col("file").str.replace(location.url(), str(landing), literal=True)
    return SimpleNamespace(
        files=r.files,
        skipped=[s.replace(location.url(), str(landing)) for s in r.skipped],
        events=r.events.collect(),
        quarantine=r.quarantine.with_columns(back),
    )


BAD = [
    ('{"event_id": "j1", "user_id": "u"', "bad JSON"),
    ('["not", "an", "object"]', "not a JSON object"),
    ('{"event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z"}', "missing event_id"),
    (
        '{"event_id": "", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z"}',
        "event_id must be 1-128",
    ),
    ('{"event_id": "m2", "event_type": "score.earned", "occurred_at": "2026-11-26T10:00:00Z"}', "missing user_id"),
    (
        '{"event_id": "n1", "event_type": "score.earned", "user_id": 17, "occurred_at": "2026-11-26T10:00:00Z"}',
        "user_id is not a string",
    ),
    (
        '{"event_id": "l1", "event_type": "score.earned", "user_id": "'
        + "u" * 65
        + '", "occurred_at": "2026-11-26T10:00:00Z"}',
        "user_id must be 1-64",
    ),
    (
        '{"event_id": "t1", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00"}',
        "no UTC offset",
    ),
    (
        '{"event_id": "t2", "event_type": "score.earned", "user_id": "u", "occurred_at": "next tuesday"}',
        "not an RFC 3339",
    ),
    (
        '{"event_id": "t3", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-02-30T10:00:00Z"}',
        "not an RFC 3339",
    ),
    (
        '{"event_id": "t4", "event_type": "score.earned", "user_id": "u", "occurred_at": 1.5e12}',
        "integer epoch milliseconds",
    ),
    (
        '{"event_id": "v1", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z", "value": "5"}',
        "value is not a number",
    ),
    (
        '{"event_id": "v2", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z", "value": true}',
        "value is not a number",
    ),
    (
        '{"event_id": "v3", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z", "value": NaN}',
        "value is not finite",
    ),
    (
        '{"event_id": "v4", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z", "value": 1e999}',
        "value is not finite",
    ),
    (
        '{"event_id": "a1", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z", "attributes": [1]}',
        "attributes is not an object",
    ),
    (
        '{"event_id": "h1", "event_type": "score.earned", "user_id": "u", "occurred_at": "2026-11-26T13:00:00Z"}',
        "outside its hour folder",
    ),
]


def test_each_kind_of_bad_record_is_quarantined_with_file_line_and_reason(tmp_path):
    good = event("ok1", "alice", "2026-11-26T10:05:00Z", 5)
    path = land(tmp_path, "game", H10, "game+0+0.json", [good, "", *[line for line, _ in BAD]])
    result = _read(tmp_path)
    assert result.events["event_id"].to_list() == ["ok1"]
    q = result.quarantine.sort("line")
    assert q.height == len(BAD)
    assert set(q["file"]) == {str(path)}
    # line 1 is the good record, line 2 is blank (not a record), the bad ones follow from line 3
    assert q["line"].to_list() == list(range(3, 3 + len(BAD)))
    for (raw, why), row in zip(BAD, q.iter_rows(named=True), strict=True):
        assert why in row["reason"], (raw, row["reason"])
        assert row["raw"] == raw


def test_accepted_forms_of_time_and_value(tmp_path):
    records = [
        event("z", "u1", "2026-11-26T10:00:00Z"),  # value defaults to 1
        event("o", "u2", "2026-11-26T15:30:00.123456+05:30", 2.5),  # offset, microseconds
        event("l", "u3", "2026-11-26t10:00:00.1234567z", -3),  # lower case, nanoseconds
        event("m", "u4", 1795687200000, 0),  # epoch ms: 2026-11-26T10:00:00Z
        event("n", "u5", "2026-11-26T10:59:59Z", None, extra_field={"kept": "out"}, attributes={"referrer_id": "u1"}),
        event("x", "u6", "2026-11-26T10:00:00Z", value=None),
    ]
    records[-1]["value"] = None  # an explicit null counts as absent
    land(tmp_path, "game", H10, "game+0+0.json", records)
    r = _read(tmp_path)
    assert r.quarantine.is_empty(), r.quarantine
    e = r.events.sort("event_id")
    assert dict(zip(e["event_id"], e["value"], strict=True)) == {
        "z": 1.0,
        "o": 2.5,
        "l": -3.0,
        "m": 0.0,
        "n": 1.0,
        "x": 1.0,
    }
    at = dict(zip(e["event_id"], e["occurred_at"], strict=True))
    assert at["o"] == dt.datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
    assert at["m"] == dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    assert e.filter(pl.col("event_id") == "n")["attributes"][0] == '{"referrer_id":"u1"}'


def test_gzip_and_parquet_are_read_and_temp_and_hidden_files_ignored(tmp_path):
    land(tmp_path, "game", H10, "game+0+0.json.gz", [event("g1", "u1", "2026-11-26T10:01:00Z", 1)])
    folder = hour_folder(tmp_path, "game", H10)
    pl.DataFrame(
        {
            "event_id": ["p1", "p2"],
            "event_type": ["score.earned"] * 2,
            "user_id": ["u2", "u3"],
            "occurred_at": [dt.datetime(2026, 11, 26, 10, 2, tzinfo=UTC), dt.datetime(2026, 11, 26, 10, 3, tzinfo=UTC)],
            "value": [2.0, 3.0],
        }
    ).write_parquet(folder / "game+1+0.parquet")
    land(tmp_path, "game", H10, ".game+2+0.json", [event("hidden", "u9", "2026-11-26T10:01:00Z")])
    land(tmp_path, "game", H10, "game+2+0.json.tmp", [event("temp", "u9", "2026-11-26T10:01:00Z")])
    land(tmp_path, "game", H10, "notes.txt", ["hello"])
    r = _read(tmp_path)
    assert sorted(r.events["event_id"]) == ["g1", "p1", "p2"]
    assert len(r.files) == 2 and len(r.skipped) == 1 and "notes.txt" in r.skipped[0]


def test_parquet_timestamp_without_zone_and_string_times(tmp_path):
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    pl.DataFrame(
        {"event_id": ["n1"], "event_type": ["s"], "user_id": ["u"], "occurred_at": [dt.datetime(2026, 11, 26, 10, 5)]}
    ).write_parquet(folder / "game+0+0.parquet")
    pl.DataFrame(
        {
            "event_id": ["s1", "s2"],
            "event_type": ["s", "s"],
            "user_id": ["u", "v"],
            "occurred_at": ["2026-11-26T10:05:00Z", "2026-11-26T10:05:00"],
            "value": [1.0, float("nan")],
        }
    ).write_parquet(folder / "game+0+1.parquet")
    r = _read(tmp_path)
    assert r.events["event_id"].to_list() == ["s1"]
    names = r.quarantine["file"].str.split("/").list.last()
    reasons = dict(zip(r.quarantine["line"].cast(str) + "@" + names, r.quarantine["reason"], strict=True))
    assert "no UTC offset" in reasons["1@game+0+0.parquet"]
    assert "no UTC offset" in reasons["2@game+0+1.parquet"]  # the first rule broken is reported


def test_duplicates_first_in_kafka_order_wins_and_conflicts_are_counted(tmp_path):
    # Kafka order is (topic, partition, offset, line), not file-name order: offset 10 < 9 as text.
    land(tmp_path, "game", H10, "game+0+10.json", [event("e1", "late", "2026-11-26T10:01:00Z", 9)])
    land(
        tmp_path,
        "game",
        H10,
        "game+0+9.json",
        [event("e1", "first", "2026-11-26T10:01:00Z", 1), event("e2", "bob", "2026-11-26T10:02:00Z", 1)],
    )
    land(tmp_path, "game", H10, "game+1+0.json", [event("e2", "bob", "2026-11-26T10:02:00Z", 1)])  # same content
    land(tmp_path, "alpha", H10, "alpha+0+0.json", [event("e3", "ann", "2026-11-26T10:03:00Z", 1)])
    land(
        tmp_path,
        "game",
        H10,
        "game+2+0.json",
        [event("e3", "ann", "2026-11-26T10:03:00Z", 1), event("e3", "ann", "2026-11-26T10:03:00Z", 2)],
    )
    r = _read(tmp_path)
    d = dedupe(r.events.lazy())
    kept = d.events.collect()
    winners = dict(zip(kept["event_id"], kept["user_id"], strict=True))
    assert winners == {"e1": "first", "e2": "bob", "e3": "ann"}
    assert kept.filter(pl.col("event_id") == "e3")["value"][0] == 1.0  # topic "alpha" < "game"
    assert (d.duplicates, d.conflicts) == (4, 2)  # e1 (conflict), e2, e3 x2 (one conflict)


def test_dedupe_orders_a_file_by_line_or_by_its_place_in_the_scan():
    """Within a file the first delivery is the earliest line, or for JSON rows of the fast pass
    (no line number) the earliest place in the scan (`seq`), whatever order the rows come in."""
    at = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    rows = [  # (event_id, user_id, file_idx, line, seq)
        ("j", "third", 0, None, 9), ("j", "first", 0, None, 2), ("j", "second", 0, None, 5),
        ("p", "later", 1, 7, 40), ("p", "earlier", 1, 3, 41), ("x", "file 2", 2, None, 0), ("x", "file 1", 1, 9, 99),
    ]  # fmt: skip
    events = pl.DataFrame(
        [(e, "s", u, at, 1.0, None, f, line, i, seq) for i, (e, u, f, line, seq) in enumerate(rows)],
        schema=CLEAN_SCHEMA,
        orient="row",
    )
    for order in (events, events.reverse(), events.sample(fraction=1.0, shuffle=True, seed=3)):
        d = dedupe(order.lazy())
        firsts = d.events.collect()
        assert dict(zip(firsts["event_id"], firsts["user_id"], strict=True)) == {
            "j": "first",
            "p": "earlier",
            "x": "file 1",
        }
        assert (d.duplicates, d.conflicts) == (4, 4)


def test_dedupe_counting_ids_a_share_at_a_time_gives_the_same_firsts(tmp_path, monkeypatch):
    """A day past HASHES_PER_PASS ids is deduplicated in passes (bounded memory), alike."""
    at = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    rng = random.Random(5)
    rows = [(f"e{rng.randint(0, 300)}", "s", f"u{i}", at, float(rng.randint(1, 3)), None, i % 7, i, 0, None)
            for i in range(1000)]  # fmt: skip
    events = pl.DataFrame(rows, schema=CLEAN_SCHEMA, orient="row").with_columns(
        pl.col("value").hash().alias("content_hash")
    )
    whole = dedupe(events.lazy())
    monkeypatch.setattr(
        sys.modules["leaderboard.landing.dedupe"], "HASHES_PER_PASS", 100
    )  # the module, not the function
    shared = dedupe(events.lazy(), events.height, tmp_path)
    assert (tmp_path / "id-hashes.parquet").is_file()  # it did go a share at a time
    assert shared.events.collect().sort("event_id").equals(whole.events.collect().sort("event_id"))
    assert (shared.duplicates, shared.conflicts) == (whole.duplicates, whole.conflicts) != (0, 0)


def test_a_record_belongs_to_exactly_one_day_when_hours_straddle_days(tmp_path):
    # In Asia/Kolkata (UTC+5:30) the UTC hour 18:00-19:00 is split by local midnight at 18:30.
    hour = dt.datetime(2026, 11, 26, 18, tzinfo=UTC)
    land(
        tmp_path,
        "game",
        hour,
        "game+0+0.json",
        [
            event("before", "u", "2026-11-26T18:10:00Z"),
            # a vertical tab around it, which DuckDB's reader allows: once counted on both days
            "\v" + json.dumps(event("after", "u", "2026-11-26T18:40:00Z")),
            '{"broken": ',
        ],
    )
    first = _read(tmp_path, dt.date(2026, 11, 26), "Asia/Kolkata")
    second = _read(tmp_path, dt.date(2026, 11, 27), "Asia/Kolkata")
    assert first.events["event_id"].to_list() == ["before"]
    assert second.events["event_id"].to_list() == ["after"]
    assert first.quarantine.height == 1 and second.quarantine.height == 0  # the hour starts on the 26th


def test_dst_day_in_new_york_reads_its_23_hours(tmp_path):
    # 2026-03-08 in New York runs from 05:00Z to 04:00Z the next day.
    land(
        tmp_path,
        "game",
        dt.datetime(2026, 3, 8, 4, tzinfo=UTC),
        "game+0+0.json",
        [event("prev", "u", "2026-03-08T04:59:00Z")],
    )
    land(
        tmp_path,
        "game",
        dt.datetime(2026, 3, 8, 5, tzinfo=UTC),
        "game+0+1.json",
        [event("first", "u", "2026-03-08T05:00:00Z")],
    )
    land(
        tmp_path,
        "game",
        dt.datetime(2026, 3, 9, 3, tzinfo=UTC),
        "game+0+2.json",
        [event("last", "u", "2026-03-09T03:59:59Z")],
    )
    land(
        tmp_path,
        "game",
        dt.datetime(2026, 3, 9, 4, tzinfo=UTC),
        "game+0+3.json",
        [event("next", "u", "2026-03-09T04:00:00Z")],
    )
    r = _read(tmp_path, dt.date(2026, 3, 8), "America/New_York")
    assert sorted(r.events["event_id"]) == ["first", "last"]


def test_ingest_day_keeps_the_conservation_law_and_writes_the_lake(tmp_path, boards):
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    land(
        landing,
        "game",
        H10,
        "game+0+0.json",
        [
            event("a", "u1", "2026-11-26T10:00:00Z", 5),
            event("a", "u1", "2026-11-26T10:00:00Z", 5),
            event("a", "u1", "2026-11-26T10:00:00Z", 6),
            "garbage",
            event("b", "u2", "2026-11-26T10:30:00Z", 1),
        ],
    )
    stats = ingest_day(_upload(landing, _BUCKET[0]) if _BUCKET else landing, lake, boards, DAY, "run-1")
    assert (stats.read, stats.counted, stats.duplicates, stats.conflicts, stats.quarantined) == (5, 2, 2, 1, 1)
    assert stats.read == stats.counted + stats.duplicates + stats.quarantined
    assert pl.read_parquet(lake.day_file("clean_events", DAY)).height == 2
    q = pl.read_parquet(lake.day_file("quarantine", DAY))
    assert q.select("line", "reason").rows() == [(4, "bad JSON")]
    where = f"s3://{_BUCKET[0]}/landing" if _BUCKET else str(landing)
    assert q["file"].to_list() == [f"{where}/{hour_rel('game', H10)}/game+0+0.json"]
    assert pl.read_parquet(lake.day_file("ingest_stats", DAY))["run_id"].to_list() == ["run-1"]


def test_a_day_whose_records_all_pass_keeps_the_file_the_reader_wrote(tmp_path, boards):
    """When every record of a day passes and none is delivered twice, the file DuckDB wrote while
    checking them is the day's clean events, not written a second time; with a repeat or a
    broken record they are written again from the checked rows. Either way the lake's file has
    the contract's columns, types and events."""
    records = [
        event("a", "u1", "2026-11-26T10:00:00Z", 5, attributes={"display_name": "Amy"}),
        event("b", "u2", "2026-11-26T10:30:00.25Z", 1),
    ]
    start, end = period_of("daily", DAY).bounds(ZoneInfo("UTC"))
    for case, rows in {"clean": records, "repeat": [*records, records[0]], "broken": [*records, "garbage"]}.items():
        landing, lake = tmp_path / case / "landing", Lake(tmp_path / case / "lake")
        land(landing, "game", H10, "game+0+0.json", rows)
        where = _upload(landing, _BUCKET[0]) if _BUCKET else landing
        kept = read_day(where, start, end, tmp_path / case / "work").clean_file
        # a repeat is found after the read: its file kept or not, the lake must hold it once
        assert case == "repeat" or (kept is not None) == (case == "clean")
        ingest_day(where, lake, boards, DAY)
        clean = pl.read_parquet(lake.day_file("clean_events", DAY))
        assert clean.schema == pl.Schema(contract.STAGED_SCHEMA), case
        assert clean.sort("event_id").select("event_id", "user_id", "occurred_at", "value", "attributes").rows() == [
            ("a", "u1", H10, 5.0, '{"display_name":"Amy"}'),
            ("b", "u2", H10 + dt.timedelta(minutes=30, milliseconds=250), 1.0, None),
        ], case


def test_an_empty_day_writes_empty_datasets(tmp_path, boards):
    lake = Lake(tmp_path / "lake")
    (tmp_path / "landing" / "topics").mkdir(parents=True)
    stats = ingest_day(tmp_path / "landing", lake, boards, DAY)
    assert (stats.read, stats.files) == (0, 0)
    assert pl.read_parquet(lake.day_file("clean_events", DAY)).is_empty()


@pytest.mark.parametrize("name", ["game+0+0.json", "game+0+0.json.gz"])
def test_windows_line_endings_and_missing_final_newline(tmp_path, name):
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    body = (
        b'{"event_id":"w1","event_type":"s","user_id":"u","occurred_at":"2026-11-26T10:00:00Z"}\r\n'
        b'{"event_id":"w2","event_type":"s","user_id":"u","occurred_at":"2026-11-26T10:00:01Z"}'
    )

    (folder / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
    r = _read(tmp_path)
    assert sorted(r.events["event_id"]) == ["w1", "w2"] and r.quarantine.is_empty()


def test_fast_and_exact_readers_agree_on_valid_records(tmp_path, ordered):
    """The fast NDJSON reader and the line-by-line reader feed the same rules: same rows out."""
    records = [
        event("e1", 'caf\u00e9 "quoted" \\ back', "2026-11-26T10:00:00Z", 1),
        event("e2", "plain", "2026-11-26T10:00:00.5+00:00", 2.75, attributes={"k": ["v", 1]}),
        event("e3", "u3", 1795687200000, -4),
        event("e4", "\u00fcml\u00e4ut", "2026-11-26T10:59:59.999Z", None, event_type="lap.completed"),
        # unescaped UTF-8 (combining marks, a ZWJ emoji sequence): the quotes are cut, not characters
        event("e5", "e\u0301mile-\U0001f468\u200d\U0001f469\u200d\U0001f467", "2026-11-26T15:45:00+05:30", 1),
        event("e6", "\u65e5\u672c", "2026-11-26T10:20:00Z", 1, event_type="\u0301\u0301x"),
    ]
    raw = {"e5", "e6"}
    land(tmp_path, "game", H10, "game+0+0.json",
         [json.dumps(r, ensure_ascii=False) if r["event_id"] in raw else r for r in records])  # fmt: skip
    files, _ = list_files(tmp_path, H10, H10 + dt.timedelta(hours=1))
    con = sources.connect()
    sources.register_files(con, files)
    lo, hi = H10, H10 + dt.timedelta(hours=1)
    cols = ["event_id", "event_type", "user_id", "occurred_at", "value", "attributes"]
    fast_sql = sources.with_file_and_hour(sources.json_sql([(0, files[0])]), files, ordered)
    fast = pl.from_arrow(con.sql(contract.checked_sql(fast_sql, lo, hi)).to_arrow_table())
    con.register(sources.CUT_LINES, read._whole_files([(0, files[0])]))
    exact_sql = sources.with_file_and_hour(sources.lines_sql(), files)
    exact = pl.from_arrow(con.sql(contract.checked_sql(exact_sql, lo, hi)).to_arrow_table())
    assert fast.height == exact.height == 6 and fast["event_id"].null_count() == exact["event_id"].null_count() == 0
    assert fast.select(cols).sort("event_id").equals(exact.select(cols).sort("event_id"))
    assert fast.sort("event_id")["user_id"].to_list() == [r["user_id"] for r in records]
    assert fast.sort("event_id")["event_type"].to_list() == [r["event_type"] for r in records]


def test_odd_lines_are_quarantined_or_skipped_the_same_way_by_both_readers(tmp_path):
    ok = json.dumps(event("ok", "u", "2026-11-26T10:00:00Z"))
    lines = [
        ok.encode(),
        b"\t",
        b"\xc2\xa0",
        b'{"event_id": "\xff", "event_type": "s", "user_id": "u", "occurred_at": "2026-11-26T10:00:00Z"}',
        json.dumps(event("h24", "u", "2026-11-26T24:00:00Z")).encode(),
        b"   ",
        json.dumps(event("ok2", "u", "2026-11-26T10:00:01Z")).encode(),
    ]
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    (folder / "game+0+0.json").write_bytes(b"\n".join(lines) + b"\n")
    (folder / "game+0+1.json").write_bytes(b"\t\n" + ok.replace('"ok"', '"ok3"').encode() + b"\n")  # fast path only
    (folder / "empty+0+0.json.gz").write_bytes(b"")  # an empty file is no record and no error
    r = _read(tmp_path)
    assert sorted(r.events["event_id"]) == ["ok", "ok2", "ok3"]
    reasons = dict(zip(r.quarantine["line"], r.quarantine["reason"], strict=True))
    assert set(reasons) == {3, 4, 5}  # the tab-only (2) and space-only (6) lines are no records
    assert reasons[3] == "bad JSON" and reasons[4] == "invalid UTF-8" and "not an RFC 3339" in reasons[5]


def test_parquet_nanosecond_utc_times_and_codec_in_the_file_name(tmp_path):
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    table = pa.table(
        {
            "event_id": ["n1"],
            "event_type": ["s"],
            "user_id": ["u"],
            "occurred_at": pa.array([1795687200123456789], pa.timestamp("ns", "UTC")),
        }
    )
    pq.write_table(table, folder / "game+0+0.snappy.parquet")
    r = _read(tmp_path)
    assert r.events["event_id"].to_list() == ["n1"] and r.quarantine.is_empty()


def test_parquet_typed_values_in_refused_records(tmp_path):
    """Parquet text and zoned times are checked as they are typed, not as JSON text: a missing
    one is named, a time outside its hour folder is refused, and a record refused for another
    field shows them in `raw` as JSON text (a time as RFC 3339)."""
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    at = dt.datetime(2026, 11, 26, 10, 5, 0, 250000, tzinfo=UTC)
    pl.DataFrame(
        {
            "event_id": ["ok", "none", "late", "nan"],
            "event_type": ["s"] * 4,
            "user_id": ["u1", "u2", "u3", "u4"],
            "occurred_at": [at, None, at + dt.timedelta(hours=1), at],
            "value": [1.0, 1.0, 1.0, float("nan")],
        }
    ).write_parquet(folder / "game+0+0.parquet")
    # files of one schema are read together: each row keeps its own file and line
    pl.DataFrame(
        {"event_id": ["ok2", "bad2", "dup", "nouser"], "event_type": ["s", "", "s", "s"],
         "user_id": ["u5", "u6", "u8", None], "occurred_at": [at] * 4, "value": [2.0, 2.0, 7.0, 1.0]}
    ).write_parquet(folder / "game+1+0.parquet")  # fmt: skip
    # JSON files between and after them in Kafka order: a file's place in its reader's list is
    # not its number, and the number decides which delivery of "dup" is first
    land(tmp_path, "game", H10, "game+0+5.json", [event("j1", "u7", "2026-11-26T10:06:00Z"), "{bad"])
    land(tmp_path, "game", H10, "game+2+0.json", [event("dup", "u8", "2026-11-26T10:05:00.25Z", 9.0)])
    r = _read(tmp_path)
    kept = dedupe(r.events.lazy())
    assert kept.duplicates == 1 and kept.conflicts == 1
    first = kept.events.collect().sort("event_id")
    assert first["event_id"].to_list() == ["dup", "j1", "ok", "ok2"] and first["value"][0] == 7.0
    found = {(Path(row["file"]).name, row["line"]): row for row in r.quarantine.iter_rows(named=True)}
    assert sorted(found) == [("game+0+0.parquet", 2), ("game+0+0.parquet", 3), ("game+0+0.parquet", 4),
                             ("game+0+5.json", 2), ("game+1+0.parquet", 2), ("game+1+0.parquet", 4)]  # fmt: skip
    assert found["game+0+0.parquet", 2]["reason"] == "missing occurred_at"
    assert "outside its hour folder" in found["game+0+0.parquet", 3]["reason"]
    assert found["game+0+0.parquet", 4]["reason"].startswith("value is not finite")
    assert '"occurred_at":"2026-11-26T10:05:00.250000Z"' in found["game+0+0.parquet", 4]["raw"]
    assert found["game+1+0.parquet", 2]["reason"] == "event_type is empty"
    assert found["game+1+0.parquet", 4]["reason"] == "missing user_id"
    assert '"event_id":"nouser","event_type":"s","user_id":null' in found["game+1+0.parquet", 4]["raw"]


@pytest.mark.parametrize("fmt", ["parquet", "json"])
def test_a_numeric_value_is_quoted_as_the_file_holds_it(tmp_path, fmt):
    """A Parquet `value` of an integer or double type comes typed from the schema; a record it
    gets refused shows it as the file holds it (1001, not 1001.0; exact past 2**53), as the
    same record on a JSON line shows it."""
    at = dt.datetime(2026, 11, 26, 10, 5, tzinfo=UTC)
    files = {"game+0+0": ("i", pl.Int64, [7, 1001, 2**60]), "game+1+0": ("s", pl.Int32, [3, -1, 1000]),
             "game+2+0": ("d", pl.Float64, [7.5, 1000.5, float("inf")])}  # fmt: skip
    for name, (prefix, dtype, values) in files.items():
        ids = [f"{prefix}{i}" for i in range(len(values))]
        if fmt == "json":
            land(tmp_path, "game", H10, f"{name}.json", [event(i, "u", "2026-11-26T10:05:00Z", v, "s") for i, v in
                                                         zip(ids, values, strict=True) if v != float("inf")])  # fmt: skip
            continue
        folder = hour_folder(tmp_path, "game", H10)
        folder.mkdir(parents=True, exist_ok=True)
        n = len(values)
        pl.DataFrame(
            {"event_id": ids, "event_type": ["s"] * n, "user_id": ["u"] * n, "occurred_at": [at] * n, "value": values},
            schema_overrides={"value": dtype},
        ).write_parquet(folder / f"{name}.parquet")
    start, end = period_of("daily", DAY).bounds(UTC)
    r = read_day(tmp_path, start, end, tmp_path / ".work", ranges={"s": ValueRange(0.0, 1000.0, ("b",))})
    assert dict(r.events.select("event_id", "value").collect().iter_rows()) == {
        "i0": 7.0, "s0": 3.0, "s2": 1000.0, "d0": 7.5
    }  # fmt: skip
    outside = " outside [0, 1000] of board 'b'"
    found = [(Path(f).stem, reason) for f, reason in r.quarantine.select("file", "reason").iter_rows()]
    assert found[:4] == [
        ("game+0+0", f"value out of range: 1001{outside}"),
        ("game+0+0", f"value out of range: {2**60}{outside}"),
        ("game+1+0", f"value out of range: -1{outside}"),
        ("game+2+0", f"value out of range: 1000.5{outside}"),
    ]
    if fmt == "parquet":  # JSON has no infinity
        assert len(found) == 5 and found[4][1].startswith("value is not finite: ")
        assert '"value":1001,' in r.quarantine["raw"][0] and '"value":1000.5,' in r.quarantine["raw"][3]


def test_a_file_named_parquet_that_is_not_parquet_stops_the_day_naming_it(tmp_path):
    land(tmp_path, "game", H10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:00Z")])
    land(tmp_path, "game", H10, "game+1+0.parquet", ["not parquet"])
    with pytest.raises(
        LandingError, match=r"cannot read landing files for 2026-11-26 .*game\+1\+0\.parquet: not a readable"
    ):
        _read(tmp_path)


def _split_lines(data: bytes) -> list[tuple[int, bytes]]:
    """The reference: non-blank lines as a line-by-line split numbers them, without the
    trailing carriage returns."""
    return [(n, line.rstrip(b"\r")) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip(lines.BLANK)]


def test_one_line_numbering_agrees_with_a_line_by_line_split_and_with_duckdb(tmp_path):
    """`line_spans`, which every reader of lines uses, numbers the non-blank lines as a
    line-by-line split does, and finds exactly as many as DuckDB's NDJSON reader gives rows
    (a byte order mark opening the file skipped), whatever the bytes: a row's place in its
    file is its line's place among them. `cut_lines` gives their text, a line that is not
    UTF-8 marked, for all lines or for some picked."""
    parts = [
        "\n",
        "\r",
        "\r\n",
        " ",
        "\t",
        "\v",
        "\f",
        "\x00",
        '{"a":1}',
        '{"a":',
        "[1]",
        "é",
        "👍🏽",
        "x",
        "\u2028",
        "\x85",
        "\ufeff",
    ]
    cases = [
        b"",
        b"\n",
        b"\n\n",
        b"a",
        b"a\n",
        b"a\r\r\n\r\n",
        b" \t\v\f\r\n",
        b"\r",
        "é\n".encode(),
        b'{"a":1}\n\xff\n',
    ]
    rng = random.Random(7)
    for _ in range(300):
        data = "".join(rng.choices(parts, k=rng.randint(1, 40))).encode()
        cases.append(data.replace("é".encode(), b"\xff") if rng.random() < 0.2 else data)  # some not UTF-8
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    landed = []
    for i, data in enumerate(cases):
        path = folder / f"game+0+{i}.json"
        path.write_bytes(b"\xef\xbb\xbf" + data if i % 3 == 0 else data)
        landed.append(LandedFile(path, "game", 0, i, "json", H10, path.stat().st_size))
        expected = _split_lines(data)
        spans = lines.line_spans(data)
        assert [(int(n), data[a:b]) for n, a, b in zip(*spans, strict=True)] == expected, data
        cut = lines.cut_lines(3, data, spans)
        assert cut["line"].to_list() == [n for n, _ in expected], data
        assert cut["raw"].to_list() == [line.decode("utf-8", "replace") for _, line in expected], data
        bad = [line.decode("utf-8", "replace") != line.decode("utf-8", "ignore") for _, line in expected]
        assert cut["problem"].to_list() == ["invalid UTF-8" if b else None for b in bad], data
        some = np.arange(0, len(expected), 2)
        assert lines.cut_lines(3, data, spans.pick(some)).equals(cut[some]), data
    paths = "[" + ", ".join(f"'{f.path}'" for f in landed) + "]"
    rows = dict(
        duckdb.sql(
            f"SELECT file_index, count(*) FROM read_json({paths}, format='newline_delimited', ignore_errors=true, "
            "columns={a: 'JSON'}) GROUP BY file_index"
        ).fetchall()
    )
    assert [rows.get(i, 0) for i in range(len(landed))] == [
        len(lines.line_spans(lines.landed_bytes(f)).number) for f in landed
    ]


def test_files_read_line_by_line_in_chunks_give_the_same_day(tmp_path, monkeypatch):
    """Files read whole are cut a chunk at a time (bounded memory); one file per chunk gives
    the same events and quarantine as all files in one."""

    for p in range(3):
        land(tmp_path, "game", H10, f"game+{p}+0.json",
             [event(f"e{p}", "u1", "2026-11-26T10:00:00Z", p), "{bad", event(f"e{p}", "u2", "2026-11-26T10:00:01Z")])  # fmt: skip
    monkeypatch.setattr(read, "ORDERED_MIN_FILE_BYTES", 2**62)  # each file with a problem read whole
    whole = _read(tmp_path)
    monkeypatch.setattr(read, "CUT_CHUNK_BYTES", 1)
    assert len(read._chunks([(i, f) for i, f in enumerate(whole.files)], 1)) == 3
    chunked = _read(tmp_path)
    assert chunked.events.sort("file_idx", "line").equals(whole.events.sort("file_idx", "line"))
    assert chunked.quarantine.equals(whole.quarantine) and whole.quarantine.height == 3
    assert whole.events.height == 6 and set(whole.events["line"]) == {1, 3}


def _spy_whole_files(monkeypatch) -> list[str]:
    """Names of the files read whole line by line, as they are read."""
    names: list[str] = []
    read_whole = read._whole_files

    def spy(files):
        names.extend(f.path.name for _, f in files)
        return read_whole(files)

    monkeypatch.setattr(read, "_whole_files", spy)
    return names


def test_refused_json_rows_are_placed_by_their_order_not_read_again_whole(tmp_path, monkeypatch, ordered):
    """The fast reader gives one row per non-blank line, so in scan order a refused row's place
    in its file gives its line: only the refused lines are checked again. Out of scan order,
    the files with a refused row or an event_id twice are read whole line by line. Either way
    the day comes out as when every file is read whole (the reference): same quarantine, same
    duplicates and first deliveries (line order within a file). A byte order mark opening a
    file, and a vertical tab or form feed around a record, are taken as DuckDB's reader takes
    them, so the two ways agree on them."""
    bad = [line for line, _ in BAD]
    at = "2026-11-26T10:00:0{}Z".format
    land(tmp_path, "game", H10, "game+0+0.json",
         ["\ufeff" + json.dumps(event("d", "u1", at(1), 1)), "", *bad[:8], "  \t", event("d", "u2", at(2), 2),
          "\v" + json.dumps(event("k", "u3", at(3))) + "\f"])  # fmt: skip
    crlf = [
        json.dumps(event("d", "u4", at(4), 4)),
        *bad[8:],
        '{"event_id": "\xff"}',
        json.dumps(event("e", "u5", at(5))),
    ]
    gz = ("\r\n".join(crlf) + "\r\n").encode().replace(b"\xc3\xbf", b"\xff")  # a line that is not UTF-8
    (hour_folder(tmp_path, "game", H10) / "game+0+1.json.gz").write_bytes(gzip.compress(gz))
    land(tmp_path, "game", H10, "game+1+0.json", [event("e", "u6", at(6), 6), event("f", "u7", at(7))])
    land(tmp_path, "game", H10, "game+1+1.json", [event("g", "u8", at(8), 8), event("g", "u9", at(9), 9)])
    whole = _spy_whole_files(monkeypatch)
    placed = _read(tmp_path)
    assert sorted(whole) == ([] if ordered else ["game+0+0.json", "game+0+1.json.gz", "game+1+1.json"])
    whole.clear()
    monkeypatch.setattr(read, "ORDERED_MIN_FILE_BYTES", 2**62)
    monkeypatch.setattr(
        read, "_unplaced", lambda rows: rows.select("file_idx").unique().collect()["file_idx"].to_list()
    )
    reference = _read(tmp_path)
    assert len(whole) == 4
    assert placed.quarantine.equals(reference.quarantine) and placed.quarantine.height == len(bad) + 1
    assert "invalid UTF-8" in placed.quarantine["reason"].to_list()
    kept, expected = dedupe(placed.events.lazy()), dedupe(reference.events.lazy())
    assert (kept.duplicates, kept.conflicts) == (expected.duplicates, expected.conflicts) == (4, 4)
    firsts = kept.events.drop("line", "seq").collect().sort("event_id")
    assert firsts.equals(expected.events.drop("line", "seq").collect().sort("event_id"))
    assert dict(zip(firsts["event_id"], firsts["user_id"], strict=True)) == {
        "d": "u1", "e": "u5", "f": "u7", "g": "u8", "k": "u3"
    }  # fmt: skip


def test_a_file_whose_rows_do_not_line_up_is_read_whole(tmp_path, monkeypatch):
    """If a refused row's line turns out valid when checked alone, the rows of its file did not
    line up with its lines (no input is known to do this: a safeguard), so the file is read
    whole line by line instead, and nothing of the misplaced check is kept."""
    monkeypatch.setattr(read, "ORDERED_MIN_FILE_BYTES", 0)
    land(tmp_path, "game", H10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:00Z"), "{bad"])
    land(tmp_path, "game", H10, "game+1+0.json", [event("b", "u2", "2026-11-26T10:00:00Z"), "{bad"])
    refused_rows = read._refused_rows
    # the first file's refused 2nd row taken for its 1st line, which is valid
    monkeypatch.setattr(
        read,
        "_refused_rows",
        lambda rows: refused_rows(rows).with_columns(k=pl.when(pl.col("file_idx") == 0).then(1).otherwise("k")),
    )
    whole = _spy_whole_files(monkeypatch)
    r = _read(tmp_path)
    assert whole == ["game+0+0.json"]
    assert r.events.sort("event_id").select("event_id", "line").rows() == [("a", 1), ("b", None)]
    assert r.quarantine.select(pl.col("file").str.extract(r"(game\+\d)"), "line", "reason").rows() == [
        ("game+0", 2, "bad JSON"),
        ("game+1", 2, "bad JSON"),
    ]


def test_reader_columns_of_the_files_own_do_not_misplace_rows(tmp_path, ordered):
    """A Parquet column of its own named `file_index` (an unknown field: allowed) and a landing
    path with a `key=value` folder leave every row with its own file and line (none for a
    valid JSON record read in scan order: the fast reader gives no line numbers)."""

    landing = tmp_path / "file_index=0" / "landing"
    folder = hour_folder(landing, "game", H10)
    folder.mkdir(parents=True)
    at = pa.array([dt.datetime(2026, 11, 26, 10, 1, tzinfo=UTC)] * 2, pa.timestamp("us", "UTC"))
    for p, ids in ((0, ["a", "b"]), (1, ["c", "d"])):
        pq.write_table(pa.table({"event_id": ids, "event_type": ["s", "s"], "user_id": ["u", "v"], "occurred_at": at,
                                 "file_index": [0, 7]}), folder / f"game+{p}+0.parquet")  # fmt: skip
    for p in (2, 3):
        land(landing, "game", H10, f"game+{p}+0.json", [event(f"j{p}", "u", "2026-11-26T10:02:00Z"), "{bad"])
    r = _read(landing)
    line = None if ordered else 1  # out of scan order, a JSON file with a refused row is read whole
    placed = {
        (row["event_id"], Path(r.files[row["file_idx"]].path).name, row["line"])
        for row in r.events.iter_rows(named=True)
    }
    assert placed == {("a", "game+0+0.parquet", 1), ("b", "game+0+0.parquet", 2), ("c", "game+1+0.parquet", 1),
                      ("d", "game+1+0.parquet", 2), ("j2", "game+2+0.json", line), ("j3", "game+3+0.json", line)}  # fmt: skip
    assert sorted(Path(f).name for f in r.quarantine["file"]) == ["game+2+0.json", "game+3+0.json"]


def test_an_infinite_parquet_time_is_refused_as_such(tmp_path):
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["x"], "event_type": ["s"], "user_id": ["u"],
                             "occurred_at": pa.array([2**63 - 1], pa.timestamp("us", "UTC"))}), folder / "game+0+0.parquet")  # fmt: skip
    r = _read(tmp_path)
    assert r.events.is_empty()
    assert r.quarantine["reason"].to_list() == ["occurred_at is not an RFC 3339 timestamp: infinity"]
    assert '"occurred_at":"infinity"' in r.quarantine["raw"][0]


def test_a_parquet_time_of_day_with_a_zone_is_refused_not_fatal(tmp_path):
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    duckdb.sql(
        "COPY (SELECT 'x' AS event_id, 's' AS event_type, 'u' AS user_id, '10:00:00+00'::TIMETZ AS occurred_at) "
        f"TO '{folder / 'game+0+0.parquet'}' (FORMAT parquet)"
    )
    r = _read(tmp_path)
    assert r.events.is_empty()
    assert r.quarantine["reason"][0].startswith("occurred_at is not an RFC 3339 timestamp")


def test_a_missing_landing_zone_is_an_error_not_an_empty_day(tmp_path):
    with pytest.raises(LandingError, match=r"LEADERBOARD_LANDING_DIR=.*no topics/ (folder|prefix)"):
        _read(tmp_path / "nowhere")


def test_a_quote_in_the_lake_path_is_fine(tmp_path, boards):
    land(tmp_path / "landing", "game", H10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:00Z", 5)])
    stats = ingest_day(tmp_path / "landing", Lake(tmp_path / "o'brien"), boards, DAY)
    assert stats.counted == 1
