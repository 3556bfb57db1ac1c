"""Reading one local day of the landing zone: every record typed, or quarantined with its
file, line and reason.

Two passes over one set of rules (`contract.checked_sql`):
- DuckDB's readers check every record, fast, in parallel, staged to Parquet. The NDJSON
  reader gives no line numbers and turns a broken line into an empty row, but gives one row
  per non-blank line: staged in scan order, a row's place in its file is its line's place
  among them (`lines.line_spans`).
- Lines cut in Python are checked again for the records DuckDB refused, for their number,
  text and reason. In scan order only the refused lines are cut. Out of it (many small
  files, where order costs more than it saves), or where rows do not line up with lines, a
  file with a problem is cut and checked whole, a chunk of files at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from leaderboard.boards import ValueRange
from leaderboard.landing import contract, lines, sources
from leaderboard.landing.contract import CLEAN_SCHEMA, QUARANTINE_SCHEMA, STAGED_SCHEMA, checked_sql, typed
from leaderboard.landing.dedupe import repeated_hashes
from leaderboard.landing.layout import LandedFile, LandingError, fetch_hours, list_files
from leaderboard.objstore import Location, ObjectStoreError, S3Location

# Mean JSON file size from which DuckDB's rows are staged in scan order (see read_day)
ORDERED_MIN_FILE_BYTES = 64 * 1024
CUT_CHUNK_BYTES = 64 * 1024 * 1024  # of landed text (a gzip file counted at GZIP_RATIO times its size)
GZIP_RATIO = 8
PLACING_THREADS = 2  # files whose refused lines are cut at once (each held whole while it is)


@dataclass(frozen=True)
class DayRead:
    """One local day of landed records, split into typed events and quarantined records."""

    files: list[LandedFile]
    skipped: list[str]  # files in the day's folders that are not landing files, with why
    events: pl.LazyFrame  # CLEAN_SCHEMA, not yet deduplicated
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA
    # A file holding exactly `events` as a clean events file holds them, where DuckDB wrote one
    # (every record of the day passed, none read twice): no need to write them again.
    clean_file: Path | None = None

    def event_count(self) -> int:
        """How many events were read: from `clean_file`'s footer where there is one, else by
        counting `events` (which reads every row's `event_id`)."""
        if self.clean_file is not None:
            return pq.read_metadata(self.clean_file).num_rows
        return self.events.select(pl.len()).collect().item()


def read_day(
    landing: Location,
    start: dt.datetime,
    end: dt.datetime,
    workdir: Path,
    con: duckdb.DuckDBPyConnection | None = None,
    ranges: Mapping[str, ValueRange] | None = None,
) -> DayRead:
    """Read every landed record of the local day [start, end) (UTC instants).

    A valid record belongs to the day its `occurred_at` falls in; a broken one to the day its
    hour folder starts in, so each record is counted by exactly one day. `workdir` holds the
    staging files behind the returned lazy `events`; keep it until they are written. `ranges`:
    the boards' value ranges by event type (`boards.value_ranges`), a rule like the others.
    """
    if isinstance(landing, S3Location):
        return _read_bucket(landing, start, end, workdir, con, ranges)
    files, skipped = list_files(landing, start, end)
    return read_files(files, skipped, start, end, workdir, con, ranges)


def read_files(
    files: list[LandedFile],
    skipped: list[str],
    start: dt.datetime,
    end: dt.datetime,
    workdir: Path,
    con: duckdb.DuckDBPyConnection | None = None,
    ranges: Mapping[str, ValueRange] | None = None,
) -> DayRead:
    """`read_day` over given files of the day (in Kafka order): a live refresh reads only the
    files landed since the last one. `file_idx` numbers `files`.

    Read first with DuckDB's own NDJSON buffers (`sources.FIRST_RECORD_BYTES`) within its
    memory cap (`sources.DUCKDB_MEMORY`). A day with a longer line is read again with buffers
    for MAX_RECORD_BYTES; records near that need more memory than the cap allows, so a day
    DuckDB cannot read within it is read again without it: three reads at most."""
    if not files:
        return DayRead(files, skipped, pl.LazyFrame(schema=CLEAN_SCHEMA), pl.DataFrame(schema=QUARANTINE_SCHEMA))
    con = con or sources.connect(workdir)
    record_bytes, capped = sources.FIRST_RECORD_BYTES, True
    while True:
        try:
            return _read_files(files, skipped, start, end, workdir, con, ranges, record_bytes)
        except LandingError as exc:
            if record_bytes < sources.MAX_RECORD_BYTES and sources.record_too_long(exc.__cause__):
                record_bytes = sources.MAX_RECORD_BYTES
            elif capped and isinstance(exc.__cause__, duckdb.OutOfMemoryException):
                con.execute("RESET memory_limit")
                capped = False
            else:
                raise


def _read_files(
    files: list[LandedFile],
    skipped: list[str],
    start: dt.datetime,
    end: dt.datetime,
    workdir: Path,
    con: duckdb.DuckDBPyConnection,
    ranges: Mapping[str, ValueRange] | None,
    record_bytes: int,
) -> DayRead:
    lo, hi = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    workdir.mkdir(parents=True, exist_ok=True)
    json_files = [(i, f) for i, f in enumerate(files) if f.fmt == "json"]
    parquet_files = [(i, f) for i, f in enumerate(files) if f.fmt == "parquet"]
    stages: list[tuple[Path, pl.LazyFrame]] = []  # DuckDB's rows (`checked_sql`), each with `seq`
    placed, redo = pl.DataFrame(schema=lines.LINES_SCHEMA).to_arrow(), []
    sources.register_files(con, files)
    try:
        if json_files:
            # Kept in scan order, a refused row's place in its file gives its line, so only the
            # refused lines are checked again, not their files whole. Order costs per file, so
            # for small files, reading the few with a problem whole is cheaper; and it slows the
            # Parquet check, whose rows carry their line: hence JSON staged apart.
            ordered = sum(f.size for _, f in json_files) >= ORDERED_MIN_FILE_BYTES * len(json_files)
            reader = sources.json_sql(json_files, record_bytes)
            sql = checked_sql(sources.with_file_and_hour(reader, files, ordered), lo, hi, ranges)
            staged = workdir / "stage-json.parquet"
            json_rows = _copy(con, sql, staged, ordered=ordered)
            if ordered:
                json_rows = json_rows.with_row_index("seq")
                placed, redo = _placed_lines(files, _refused_rows(json_rows))
            else:
                json_rows = json_rows.with_columns(seq=pl.lit(None, pl.Int64))
                redo = _unplaced(json_rows)
            # its refused rows are all checked again, below
            stages.append((staged, json_rows.filter(~contract.refused())))
        if parquet_files:
            readers = [sources.parquet_sql(con, group) for group in sources.parquet_groups(parquet_files)]
            sql = checked_sql(sources.with_file_and_hour(" UNION ALL ".join(readers), files), lo, hi, ranges)
            staged = workdir / "stage-parquet.parquet"
            stages.append((staged, _copy(con, sql, staged).with_columns(seq=pl.lit(None, pl.Int64))))
        checked_lines = checked_sql(sources.with_file_and_hour(sources.lines_sql(), files), lo, hi, ranges)
        rechecked = _copy_lines(con, checked_lines, placed, workdir / "rechecked.parquet")
        # A line valid on its own (or of another day) is not what DuckDB refused: that file's
        # rows did not line up.
        misfits = rechecked.filter(~contract.refused()).select("file_idx").unique().collect()
        redo += misfits["file_idx"].to_list()
        parts = [
            _copy_lines(con, checked_lines, _whole_files(chunk), workdir / f"whole-{n}.parquet")
            # A chunk of files at a time: the lines of a whole day at once take gigabytes.
            for n, chunk in enumerate(_chunks([(i, files[i]) for i in sorted(set(redo))], CUT_CHUNK_BYTES))
        ]
    except (duckdb.Error, LandingError) as exc:  # LandingError: a file pyarrow cannot read as Parquet
        why = _naming_the_file(con, files, exc, record_bytes)
        raise LandingError(f"cannot read landing files for {lo:%Y-%m-%d %H:%M}Z..{hi:%Y-%m-%d %H:%M}Z: {why}") from exc
    finally:
        con.unregister("files")
    rows = [r.filter(~pl.col("file_idx").is_in(redo)) for _, r in stages]
    rows += [p.with_columns(seq=pl.lit(None, pl.Int64)) for p in parts]  # the files redone
    events = pl.concat([typed(r) for r in rows])
    quarantine = _quarantined([*rows, rechecked.filter(~pl.col("file_idx").is_in(redo))], files)
    whole = len(stages) == 1 and not redo and _all_events(stages[0][0])
    return DayRead(files, skipped, events, quarantine, stages[0][0] if whole else None)


def _all_events(path: Path) -> bool:
    """Whether every row of a file of checked rows is an event of the day: no row lacks an
    event_id, by the file's statistics."""
    meta = pq.read_metadata(path)
    column = meta.schema.names.index("event_id")
    stats = [meta.row_group(i).column(column).statistics for i in range(meta.num_row_groups)]
    return all(s is not None and s.has_null_count and s.null_count == 0 for s in stats)


def _quarantined(rows: list[pl.LazyFrame], files: list[LandedFile]) -> pl.DataFrame:
    """The refused records among checked rows, with their file's name (QUARANTINE_SCHEMA)."""
    names = pl.LazyFrame(
        {"file_idx": range(len(files)), "file": [str(f.path) for f in files]},
        schema={"file_idx": pl.Int32, "file": pl.String},
    )
    found = pl.concat(r.filter(contract.refused()).select("file_idx", "line", "event_type", "attributes") for r in rows)
    found = found.join(names, on="file_idx", how="left")
    quarantine = found.select("file", "line", reason="event_type", raw="attributes").collect()
    return quarantine.cast(QUARANTINE_SCHEMA).sort("file", "line")  # type: ignore[arg-type]


def _read_bucket(
    landing: S3Location,
    start: dt.datetime,
    end: dt.datetime,
    workdir: Path,
    con: duckdb.DuckDBPyConnection | None,
    ranges: Mapping[str, ValueRange] | None,
) -> DayRead:
    """The day's objects fetched into `workdir` in parallel, then read as local files: DuckDB
    has no S3 reader here (its httpfs extension is a download at run time), and the line
    numbering reads a refused file's bytes again. Quarantine and errors name the objects' URLs."""
    local = workdir / "landing"
    try:
        fetched, skipped = fetch_hours(landing, start, end, local)
    except ObjectStoreError as exc:  # the bucket out of reach, or denied, mid-run
        day = f"{start.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z..{end.astimezone(dt.UTC):%Y-%m-%d %H:%M}Z"
        why = str(exc).splitlines()[0]
        raise LandingError(f"cannot list or fetch {landing.url('topics')} for {day}: {why}") from exc
    urls = dict(fetched)

    def named(text: str) -> str:
        # every local path in a message or a row back to its object's URL
        return text.replace(str(local / "topics"), landing.url("topics")) if urls else text

    try:
        day = read_day(local, start, end, workdir, con, ranges)
    except LandingError as exc:
        raise LandingError(named(str(exc))) from exc
    quarantine = day.quarantine.with_columns(pl.col("file").replace(urls))
    return DayRead(day.files, skipped + [named(s) for s in day.skipped], day.events, quarantine, day.clean_file)


def _naming_the_file(con: duckdb.DuckDBPyConnection, files: list[LandedFile], exc: Exception, record_bytes: int) -> str:
    """The error's text with the file it is about: DuckDB leaves some out (a gzip file padded
    with zeros), so then each JSON file is read alone until one fails (only on this path)."""
    text = str(exc)
    if any(str(f.path) in text for f in files):
        return text
    for idx, f in enumerate(files):
        if f.fmt != "json":
            continue
        try:
            con.execute(f"SELECT count(*) FROM ({sources.json_sql([(idx, f)], record_bytes)})").fetchall()
        except duckdb.Error:
            return f"{f.path}: {text}"
    return text


def _refused_rows(json_rows: pl.LazyFrame) -> pl.DataFrame:
    """The JSON rows of the day DuckDB refused, each with its place among its file's rows (k,
    from 1), the file's count of rows (n, of any day), and whether they were staged together
    (lined_up)."""
    refused = json_rows.filter(contract.refused()).select("file_idx", "seq").collect()
    spans = (
        json_rows.filter(pl.col("file_idx").is_in(refused["file_idx"].unique().implode()))
        .group_by("file_idx")
        .agg(first=pl.col("seq").min(), last=pl.col("seq").max(), n=pl.len())
        .collect()
    )
    return refused.join(spans, on="file_idx").select(
        "file_idx",
        k=pl.col("seq").cast(pl.Int64) - pl.col("first") + 1,
        n="n",
        lined_up=pl.col("last") - pl.col("first") + 1 == pl.col("n"),
    )


def _placed_lines(files: list[LandedFile], refused: pl.DataFrame) -> tuple[pa.Table, list[int]]:
    """The lines behind the refused rows (see `_refused_rows`), cut to be checked again for their
    number, text and reason; and the files whose rows do not line up with their lines.

    The k-th row of a file is its k-th non-blank line. A file where the counts differ, or whose
    rows were not staged together, is returned to be read whole. PLACING_THREADS files at a time:
    reading, unzipping and numbering a file's lines let go of the GIL.
    """

    def place(idx: int, group: pl.DataFrame) -> pl.DataFrame | int:
        data = lines.landed_bytes(files[idx])
        spans = lines.line_spans(data)
        if len(spans.number) != group["n"][0] or not group["lined_up"][0]:
            return idx  # a misfit
        return lines.cut_lines(idx, data, spans.pick(group["k"].to_numpy() - 1))

    groups = refused.sort("file_idx", "k").partition_by("file_idx", maintain_order=True)
    with ThreadPoolExecutor(PLACING_THREADS) as pool:
        placed = list(pool.map(place, [g["file_idx"][0] for g in groups], groups))
    cut = [pl.DataFrame(schema=lines.LINES_SCHEMA)] + [p for p in placed if isinstance(p, pl.DataFrame)]
    return pl.concat(cut).to_arrow(), [p for p in placed if isinstance(p, int)]


def _unplaced(json_rows: pl.LazyFrame) -> list[int]:
    """Out of scan order, the JSON files to read whole: those with a refused row (its line is
    reported) and those holding one event_id twice (line order picks the first). Rows of the
    neighbouring day (at a boundary hour) do not count."""
    refused = json_rows.filter(contract.refused()).select("file_idx")
    valid = json_rows.filter(contract.valid()).select("file_idx", "event_id", _h=pl.col("event_id").hash())
    repeated = (
        valid.join(repeated_hashes(valid.select("_h")).lazy(), on="_h", how="semi")
        .group_by("file_idx", "event_id")
        .len()
        .filter(pl.col("len") > 1)
        .select("file_idx")
    )
    return pl.concat([refused, repeated]).unique().collect()["file_idx"].to_list()


def _whole_files(files: list[tuple[int, LandedFile]]) -> pa.Table:
    """Every non-blank line of JSON-lines files, numbered, as text (LINES_SCHEMA)."""
    cut = [pl.DataFrame(schema=lines.LINES_SCHEMA)]
    for idx, f in files:
        data = lines.landed_bytes(f)
        cut.append(lines.cut_lines(idx, data, lines.line_spans(data)))
    return pl.concat(cut).to_arrow()


def _chunks(files: list[tuple[int, LandedFile]], budget: int) -> list[list[tuple[int, LandedFile]]]:
    """Consecutive runs of files of about `budget` bytes of text each (a larger file alone)."""
    chunks: list[list[tuple[int, LandedFile]]] = []
    size = 0
    for idx, f in files:
        grows = f.size * (GZIP_RATIO if f.gzipped else 1)
        if not chunks or size + grows > budget:
            chunks.append([])
            size = 0
        chunks[-1].append((idx, f))
        size += grows
    return chunks


def _copy(con: duckdb.DuckDBPyConnection, sql: str, path: Path, ordered: bool = False) -> pl.LazyFrame:
    """A query's rows to a Parquet file; `ordered` keeps them in scan order (else DuckDB may not)."""
    con.execute(f"SET preserve_insertion_order = {str(ordered).lower()}")
    # Snappy (DuckDB's default) though the lake's other files are zstd: the file may become the
    # day's clean events as it is, and zstd here slowed every day more than it saved (README).
    con.execute(f"COPY ({sql}) TO {sources.sql_str(str(path))} (FORMAT parquet)")
    return pl.scan_parquet(path)


def _copy_lines(con: duckdb.DuckDBPyConnection, checked_lines: str, cut: pa.Table, path: Path) -> pl.LazyFrame:
    """Cut lines (LINES_SCHEMA) through the rules, to a Parquet file (none for no lines: most
    days have no refused line to check again)."""
    if not cut.num_rows:
        return pl.LazyFrame(schema=STAGED_SCHEMA)
    con.register(sources.CUT_LINES, cut)
    try:
        return _copy(con, checked_lines, path)
    finally:
        con.unregister(sources.CUT_LINES)
