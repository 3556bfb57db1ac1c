"""Live refreshes of the current day: any sequence of them gives what one full read gives."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leaderboard.landing import hour_folder, read
from leaderboard.periods import period_of
from leaderboard.stores.lake import Lake
from pipelines import live
from pipelines.steps import day_events, ingest_day, rank_period, refresh_day, score_day
from tests.conftest import event, land

UTC = dt.UTC
DAY = dt.date(2026, 11, 26)
TYPES = ["score.earned", "referral.bound", "game.finished", "lap.completed", "user.registered"]
SEEDS = range(8)


@pytest.fixture(params=["ordered", "unordered"])
def ordered(request, monkeypatch) -> bool:
    """DuckDB's JSON rows staged in scan order or not (read_day chooses by file size)."""
    monkeypatch.setattr(read, "ORDERED_MIN_FILE_BYTES", 0 if request.param == "ordered" else 2**62)
    return request.param == "ordered"


def _record(rng: random.Random, ids: list[str], made: dict[str, dict]) -> object:
    """A record: mostly new events, some redeliveries (as they were, or changed: a conflict),
    some broken ones; few users and seconds, so names and metadata often share a time."""
    roll = rng.random()
    if roll < 0.05:
        return rng.choice(['{"event_id": "x"', '{"event_id": "b", "user_id": "u1"}', "[1]"])
    if roll < 0.3 and ids:
        old = dict(made[rng.choice(ids)])
        if rng.random() < 0.3:
            old["value"] = rng.randint(1, 9)  # same id, other content
        return old
    hour = rng.choice([10, 11])
    attributes: dict = {}
    for key, choices in (("display_name", ["Ann", "Bob", ""]), ("team_id", ["red", "blue"]),
                         ("level", [1, 2]), ("country", ["FR", "DE"]), ("referrer_id", ["r1", "r2"])):  # fmt: skip
        if rng.random() < 0.5:
            attributes[key] = rng.choice(choices)
    rec = event(
        f"e{len(made)}",
        f"u{rng.randint(1, 4)}",
        f"2026-11-26T{hour}:00:0{rng.randint(0, 1)}Z",
        rng.randint(1, 50),
        rng.choice(TYPES),
        attributes=attributes,
    )
    made[rec["event_id"]] = rec
    ids.append(rec["event_id"])
    return rec


def _files(rng: random.Random, n: int) -> list[tuple[str, dt.datetime, str, list[object]]]:
    """(topic, hour, name, records) of n files; a JSON record of hour 11 in an hour 10 folder
    is refused (outside its hour), which is fine: it is refused either way."""
    ids: list[str] = []
    made: dict[str, dict] = {}
    out = []
    for i in range(n):
        topic = rng.choice(["game", "social"])
        partition = rng.randint(0, 1)
        hour = dt.datetime(2026, 11, 26, rng.choice([10, 11]), tzinfo=UTC)
        ext = "parquet" if rng.random() < 0.2 else "json"
        records = [_record(rng, ids, made) for _ in range(rng.randint(1, 12))]
        out.append((topic, hour, f"{topic}+{partition}+{100 * i}.{ext}", records))
    return out


def _land(landing: Path, topic: str, hour: dt.datetime, name: str, records: list[object]) -> None:
    if not name.endswith(".parquet"):
        land(landing, topic, hour, name, records)
        return
    rows = [r for r in records if isinstance(r, dict)]
    table = pa.table({
        "event_id": [r["event_id"] for r in rows],
        "event_type": [r["event_type"] for r in rows],
        "user_id": [r["user_id"] for r in rows],
        "occurred_at": pa.array([dt.datetime.fromisoformat(r["occurred_at"]) for r in rows], pa.timestamp("us", "UTC")),
        "value": [float(r["value"]) for r in rows],
        "attributes": [json.dumps(r["attributes"]) for r in rows],
    })  # fmt: skip
    folder = hour_folder(landing, topic, hour)
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name)


def _day(lake: Lake, boards, stats) -> dict:
    """Everything a day's ingest and scoring give, in a comparable form."""
    score_day(lake, boards, DAY)
    clean = day_events(lake, DAY).drop("file_idx").collect().sort("event_id")
    scores = pl.read_parquet(lake.day_file("daily_scores", DAY)).sort("board_id", "user_id")
    standings = rank_period(lake, boards, period_of("daily", DAY)).sort("board_id", "rank")
    quarantine = pl.read_parquet(lake.day_file("quarantine", DAY))
    numbers = {k: v for k, v in stats.__dict__.items() if k != "seconds"}
    return {"stats": numbers, "clean": clean, "scores": scores, "standings": standings, "quarantine": quarantine}


def _same(a: dict, b: dict) -> None:
    assert a["stats"] == b["stats"]
    for key in ("clean", "scores", "standings", "quarantine"):
        assert a[key].equals(b[key]), key


@pytest.mark.parametrize("seed", SEEDS)
def test_any_sequence_of_refreshes_gives_the_full_read_of_the_day(tmp_path, boards, ordered, seed):
    rng = random.Random(seed)
    files = _files(rng, rng.randint(6, 14))
    # Files land in any order: a later offset (a redelivery) may land before its original.
    rng.shuffle(files)
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    (landing / "topics").mkdir(parents=True)
    cut = sorted(rng.sample(range(1, len(files)), k=min(3, len(files) - 1)))
    for lo, hi in zip([0, *cut], [*cut, len(files)], strict=True):
        for f in files[lo:hi]:
            _land(landing, *f)
        refreshed = _day(lake, boards, refresh_day(landing, lake, boards, DAY))
        full_lake = Lake(tmp_path / f"full-{hi}")
        _same(refreshed, _day(full_lake, boards, ingest_day(landing, full_lake, boards, DAY)))
    state = live.load(lake.live_dir(DAY))
    assert state is not None and len(state.files) == len(files)


def test_a_redelivery_landing_before_its_original_gives_way_to_it(tmp_path, boards):
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    h10 = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    at = "2026-11-26T10:00:01Z"
    land(landing, "game", h10, "game+0+500.json", [event("a", "u1", at, 9, attributes={"display_name": "Late"})])
    first = refresh_day(landing, lake, boards, DAY)
    assert (first.counted, first.duplicates) == (1, 0)
    land(landing, "game", h10, "game+0+100.json", [event("a", "u1", at, 2, attributes={"display_name": "Early"})])
    second = refresh_day(landing, lake, boards, DAY)
    assert (second.read, second.counted, second.duplicates, second.conflicts) == (2, 1, 1, 1)
    score_day(lake, boards, DAY)
    points = pl.read_parquet(lake.day_file("daily_scores", DAY)).filter(pl.col("board_id") == "points")
    assert points.select("user_id", "score", "display_name").rows() == [("u1", 2.0, "Early")]


def test_a_refresh_reads_only_new_files_and_a_changed_file_reads_the_day_again(tmp_path, boards, monkeypatch):
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    h10 = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    land(landing, "game", h10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:01Z", 3)])
    refresh_day(landing, lake, boards, DAY)
    land(landing, "game", h10, "game+0+1.json", [event("b", "u1", "2026-11-26T10:00:02Z", 4)])
    seen: list[int] = []
    real = live.merge
    monkeypatch.setattr(live, "merge", lambda state, batch, *a: seen.append(len(batch.files)) or real(state, batch, *a))
    assert refresh_day(landing, lake, boards, DAY).counted == 2
    assert refresh_day(landing, lake, boards, DAY).counted == 2  # nothing new: nothing read
    changed = land(landing, "game", h10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:01Z", 5)])
    os.utime(changed, ns=(1, 1))  # another modification time: the sink rewrote it
    assert refresh_day(landing, lake, boards, DAY).counted == 2
    assert seen == [1, 2]  # the new file alone, then the day again


def test_a_refresh_killed_before_its_commit_leaves_the_previous_state(tmp_path, boards, monkeypatch):
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    h10 = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    land(landing, "game", h10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:01Z", 3)])
    refresh_day(landing, lake, boards, DAY)
    land(landing, "game", h10, "game+0+1.json", [event("a", "u1", "2026-11-26T10:00:01Z", 3)])

    def killed(self) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(live.State, "commit", killed)
        with pytest.raises(KeyboardInterrupt):
            refresh_day(landing, lake, boards, DAY)
    state = live.load(lake.live_dir(DAY))
    assert state is not None and len(state.files) == 1 and state.totals.counted == 1
    again = refresh_day(landing, lake, boards, DAY)
    assert (again.read, again.counted, again.duplicates) == (2, 1, 1)
    named = {p.name for p in lake.live_dir(DAY).iterdir()}
    state = live.load(lake.live_dir(DAY))
    assert state is not None
    assert named == {live.MANIFEST, live.LOCK, *state.parts, state.repeats, state.quarantine, state.scores}
    # A state naming a file that is gone (two refreshes of the day at once) is read again whole.
    (lake.live_dir(DAY) / state.parts[0]).unlink()
    assert live.load(lake.live_dir(DAY)) is None
    again = refresh_day(landing, lake, boards, DAY)
    assert (again.read, again.counted, again.duplicates) == (2, 1, 1)


def test_a_full_read_of_the_day_replaces_its_live_state(tmp_path, boards):
    landing, lake = tmp_path / "landing", Lake(tmp_path / "lake")
    h10 = dt.datetime(2026, 11, 26, 10, tzinfo=UTC)
    land(landing, "game", h10, "game+0+0.json", [event("a", "u1", "2026-11-26T10:00:01Z", 3)])
    refresh_day(landing, lake, boards, DAY)
    assert not lake.day_file("clean_events", DAY).exists()
    ingest_day(landing, lake, boards, DAY)  # the day closed
    assert not lake.live_dir(DAY).exists()
    assert day_events(lake, DAY).collect()["event_id"].to_list() == ["a"]
