"""Live refreshes of the current day: read only the files landed since the last refresh and
merge them into what the day already has, so a refresh costs what is new, not the whole day.

The state lives in the lake's work area (`Lake.live_dir`): the day's clean events as one part
per read (each holding the first delivery of its ids, `file_idx` numbering files in the order
they were read), every delivery of the ids delivered more than once, the quarantine, the
day's scores and its counts, all named by `manifest.json`. A refresh writes new files under
new names and then replaces the manifest in one rename: killed before it, the previous state
is intact (its files are never changed); the files no manifest names are removed afterwards.

Anything a merge cannot take (a file read before changed or went away, another boards file or
Polars release) starts the state again from a full read of the day. Nothing here knows Dagster.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import polars as pl

from leaderboard.boards import BoardSet
from leaderboard.landing import CLEAN_SCHEMA, QUARANTINE_SCHEMA, DayRead, LandedFile
from leaderboard.landing.dedupe import DELIVERY_SCHEMA, dedupe, merge_deliveries
from leaderboard.ranking import SCORES_SCHEMA, merge_scores, score_events, ungrouped_of
from leaderboard.stores.lake import Lake, write_json_atomic

STATE_VERSION = 2  # 2: content hashes by Polars (`contract.content_hash`), not DuckDB
MANIFEST = "manifest.json"
LOCK = ".lock"  # held by the refresh of the day under way
KEY = ["event_id", "file_idx", "line", "seq"]  # one delivery
PART_SCHEMA = {**CLEAN_SCHEMA, "_h": pl.UInt64}  # _h: hash of event_id, to find repeats cheaply


def fingerprint(boards: BoardSet, start: dt.datetime, end: dt.datetime) -> str:
    """What the state was computed with: another value makes it unusable (scores of other
    boards, another day's bounds, hashes of another Polars release)."""
    return json.dumps([STATE_VERSION, pl.__version__, boards.timezone, repr(boards.boards), str(start), str(end)])


@dataclass(frozen=True)
class Totals:
    read: int = 0
    counted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    quarantined: int = 0
    ungrouped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class State:
    """One committed state of a day (or an empty one to start from); file names are relative."""

    folder: Path
    fingerprint: str
    files: list[dict] = field(default_factory=list)  # path, size, mtime_ns, topic, partition, offset: read order
    parts: list[str] = field(default_factory=list)
    repeats: str | None = None
    quarantine: str | None = None
    scores: str | None = None
    totals: Totals = field(default_factory=Totals)

    def path(self, name: str) -> Path:
        return self.folder / name

    def part_paths(self) -> list[Path]:
        return [self.path(p) for p in self.parts]

    def unchanged(self, landed: dict[str, tuple[int, int]]) -> bool:
        """Whether every file read before is still there as it was (size, mtime)."""
        return all(landed.get(f["path"]) == (f["size"], f["mtime_ns"]) for f in self.files)

    def commit(self) -> None:
        """Make this the day's state (one rename), then remove the files it does not name."""
        body = {
            "fingerprint": self.fingerprint,
            "files": self.files,
            "parts": self.parts,
            "repeats": self.repeats,
            "quarantine": self.quarantine,
            "scores": self.scores,
            "totals": asdict(self.totals),
        }
        write_json_atomic(self.path(MANIFEST), body)
        named = {MANIFEST, LOCK, *self.parts, self.repeats, self.quarantine, self.scores}
        for p in self.folder.iterdir():
            if p.name not in named:
                p.unlink(missing_ok=True)


def load(folder: Path, expected: str | None = None) -> State | None:
    """The committed state in `folder`; None if there is none, or (given `expected`) it was
    computed with another fingerprint."""
    try:
        body = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if expected is not None and body.get("fingerprint") != expected:
        return None
    named = [*body["parts"], body["repeats"], body["quarantine"], body["scores"]]
    if not all((folder / name).is_file() for name in named if name):
        return None  # another run's cleanup took a file (two refreshes of a day at once): read again
    return State(
        folder=folder,
        fingerprint=body["fingerprint"],
        files=body["files"],
        parts=body["parts"],
        repeats=body["repeats"],
        quarantine=body["quarantine"],
        scores=body["scores"],
        totals=Totals(**body["totals"]),
    )


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the day's lock: two refreshes at once would each remove the files the other writes."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / LOCK).open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def drop(lake: Lake, day: dt.date) -> None:
    """Forget a day's live state (a full recompute replaces it)."""
    manifest = lake.live_dir(day) / MANIFEST
    manifest.unlink(missing_ok=True)  # first: a half-removed folder is no state
    shutil.rmtree(lake.live_dir(day), ignore_errors=True)


def day_events(lake: Lake, day: dt.date) -> pl.LazyFrame | None:
    """The live day's clean events (as `clean_events` holds a closed day's), or None."""
    state = load(lake.live_dir(day))
    if state is None:
        return None
    if not state.parts:
        return pl.LazyFrame(schema=CLEAN_SCHEMA).drop("content_hash", "seq")
    return pl.scan_parquet(state.part_paths()).drop("content_hash", "seq", "_h")


def scores_file(lake: Lake, day: dt.date) -> Path | None:
    """The live day's scores (a file no refresh changes: the next writes another), or None."""
    state = load(lake.live_dir(day))
    if state is None or state.scores is None:
        return None
    return state.path(state.scores)


def landed(files: list[LandedFile]) -> dict[str, tuple[int, int]]:
    """Size and modification time of each listed file, by path."""
    out = {}
    for f in files:
        st = f.path.stat()
        out[str(f.path)] = (st.st_size, st.st_mtime_ns)
    return out


def _entry(f: LandedFile, time: tuple[int, int]) -> dict:
    size, mtime_ns = time
    return {"path": str(f.path), "size": size, "mtime_ns": mtime_ns, "topic": f.topic, "partition": f.partition,
            "offset": f.offset}  # fmt: skip


def _by_type(events: pl.LazyFrame) -> dict[str, int]:
    return dict(events.group_by("event_type").len().collect().iter_rows())


def _name(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex}.parquet"


def _kafka_rank(files: list[dict]) -> pl.DataFrame:
    """file_idx (read order) to the file's place in Kafka order, as `list_files` sorts."""
    order = sorted(range(len(files)), key=lambda i: (files[i]["topic"], files[i]["partition"], files[i]["offset"],
                                                      Path(files[i]["path"]).name))  # fmt: skip
    ranks = [0] * len(files)
    for rank, i in enumerate(order):
        ranks[i] = rank
    schema = {"file_idx": pl.Int32, "rank": pl.Int64}
    return pl.DataFrame({"file_idx": list(range(len(files))), "rank": ranks}, schema=schema)


def _merged_scores(old: pl.DataFrame, new: pl.DataFrame, boards: BoardSet) -> pl.DataFrame | None:
    """The day's scores with the new events': only the entries they touch are combined."""
    # a filter, not a join: a join gathers the untouched rows' metadata lists, many times slower
    key = pl.struct("board_id", "user_id")
    touched = key.is_in(new.select(key).to_series().implode())
    merged = merge_scores(old.filter(touched), new, boards.boards)
    if merged is None:
        return None
    return pl.concat([old.filter(~touched), merged])


@dataclass(frozen=True)
class Merged:
    state: State  # written, not committed
    quarantine: pl.DataFrame


def merge(state: State, batch: DayRead, times: dict[str, tuple[int, int]], boards: BoardSet, workdir: Path) -> Merged:
    """The state after `batch` (a read of the files not in the state, numbered from 0), its
    files written into the state's folder but not committed (`workdir`: scratch space)."""
    folder = state.folder
    folder.mkdir(parents=True, exist_ok=True)
    base = len(state.files)
    files = state.files + [_entry(f, times[str(f.path)]) for f in batch.files]
    rank = _kafka_rank(files)
    events = batch.events.with_columns((pl.col("file_idx") + base).cast(pl.Int32))
    events_read = batch.event_count()
    read = events_read + batch.quarantine.height
    kept = dedupe(events, events_read, workdir)
    part = _name("part")
    kept.events.with_columns(pl.col("event_id").hash().alias("_h")).sink_parquet(folder / part)

    # Ids the batch shares with the day so far: usually none, found by hash over one column.
    old_parts = state.part_paths()
    shared = pl.DataFrame(schema={"_h": pl.UInt64})
    if old_parts:
        new_hashes = pl.read_parquet(folder / part, columns=["_h"])["_h"]
        shared = (
            pl.scan_parquet(old_parts).select("_h").filter(pl.col("_h").is_in(new_hashes.implode())).unique().collect()
        )
    old_repeats = pl.read_parquet(state.path(state.repeats)) if state.repeats else pl.DataFrame(schema=DELIVERY_SCHEMA)
    parts = list(state.parts)
    superseded = 0
    duplicates, conflicts, repeats = kept.duplicates, kept.conflicts, kept.repeats
    if shared.height or old_repeats.height or kept.repeats.height:
        old_rows = (
            pl.scan_parquet(old_parts, include_file_paths="_part")
            .filter(pl.col("_h").is_in(shared["_h"].implode()))  # a filter the reader applies first
            .collect()
            if shared.height
            else pl.DataFrame(schema={**PART_SCHEMA, "_part": pl.String})
        )
        new_rows = pl.scan_parquet(folder / part).filter(pl.col("_h").is_in(shared["_h"].implode())).collect()
        merged = merge_deliveries([old_repeats, kept.repeats, old_rows, new_rows], rank)
        duplicates, conflicts, repeats = merged.duplicates, merged.conflicts, merged.repeats
        later = merged.later.with_columns(pl.col("line").fill_null(-1), pl.col("seq").fill_null(-1))

        def losing(rows: pl.DataFrame) -> pl.DataFrame:
            keyed = rows.with_columns(pl.col("line").fill_null(-1).alias("_l"), pl.col("seq").fill_null(-1).alias("_s"))
            return keyed.join(later, left_on=["event_id", "file_idx", "_l", "_s"], right_on=KEY, how="semi")

        beaten_old = losing(old_rows)
        for name, rows in beaten_old.group_by("_part"):
            # An earlier delivery read later: the one kept before leaves its part (a new file).
            old = Path(str(name[0]))
            fresh = _name("part")
            pl.scan_parquet(old).join(rows.select(KEY).lazy(), on=KEY, how="anti", nulls_equal=True).sink_parquet(
                folder / fresh
            )
            parts[parts.index(old.name)] = fresh
            superseded += rows.height
        beaten_new = losing(new_rows)
        if beaten_new.height:
            fresh = _name("part")
            pl.scan_parquet(folder / part).join(
                beaten_new.select(KEY).lazy(), on=KEY, how="anti", nulls_equal=True
            ).sink_parquet(folder / fresh)
            part = fresh

    new_count = pl.scan_parquet(folder / part).select(pl.len()).collect().item()
    if new_count:
        parts.append(part)
    all_parts = [folder / p for p in parts]

    old_scores = pl.read_parquet(state.path(state.scores)) if state.scores else None
    new_events = pl.scan_parquet(folder / part)
    scores = None
    ungrouped = None
    if not superseded:
        new_scores = score_events(folder / part, boards.boards, workdir).collect()
        scores = new_scores if old_scores is None else _merged_scores(old_scores, new_scores, boards)
        added = ungrouped_of(new_scores, _by_type(new_events), boards.boards)
        ungrouped = {b: state.totals.ungrouped.get(b, 0) + n for b, n in added.items()}
    if scores is None or ungrouped is None:
        # A tie only the events' order breaks, or a delivery that lost its place: score the day
        # from its events, files numbered in Kafka order as a full read numbers them.
        day = (
            pl.scan_parquet(all_parts)
            .join(rank.lazy(), on="file_idx")
            .with_columns(pl.col("rank").cast(pl.Int32).alias("file_idx"))
            .drop("rank")
            if all_parts
            else pl.LazyFrame(schema=PART_SCHEMA)
        )
        scores = score_events(day, boards.boards, workdir).collect()
        ungrouped = ungrouped_of(scores, _by_type(day), boards.boards)

    quarantine = pl.concat([
        pl.read_parquet(state.path(state.quarantine)) if state.quarantine else pl.DataFrame(schema=QUARANTINE_SCHEMA),
        batch.quarantine,
    ]).sort("file", "line")  # fmt: skip
    names = {"repeats": _name("repeats"), "quarantine": _name("quarantine"), "scores": _name("scores")}
    repeats.write_parquet(folder / names["repeats"])
    quarantine.write_parquet(folder / names["quarantine"])
    # lz4: read and written whole at every refresh, where zstd took twice as long each way
    scores.cast(SCORES_SCHEMA).write_parquet(folder / names["scores"], compression="lz4")  # type: ignore[arg-type]
    totals = Totals(
        read=state.totals.read + read,
        counted=state.totals.counted + new_count - superseded,
        duplicates=duplicates,
        conflicts=conflicts,
        quarantined=quarantine.height,
        ungrouped=ungrouped,
    )
    return Merged(replace(state, files=files, parts=parts, totals=totals, **names), quarantine)
