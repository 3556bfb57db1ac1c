"""Reading the landing zone that the Kafka Connect sink writes (DESIGN §3, §4).

Every record of one local day is checked against the event contract in SQL (DuckDB) and
either kept (typed) or sent to quarantine with its file, line and reason.

Two ways in, one set of rules (`_checked_sql`):
- fast: DuckDB's own readers (one NDJSON reader over the day's JSON-lines files, one Parquet
  reader per schema), in parallel, staged to Parquet files. The NDJSON reader gives no line
  numbers and turns a broken line into an empty row, but it gives one row per non-blank line:
  staged in scan order, a row's place in its file is its line's place among them.
- exact: lines cut from a JSON-lines file outside DuckDB, so bad JSON (or bad UTF-8) stays a
  row with a line number. In scan order, the lines behind the rows the fast pass refused are
  checked again this way, for their number, text and reason. Out of it (many small files,
  where order costs more than it saves), or where rows do not line up with lines (see
  `_refused_lines`), a file with a problem is read this way whole, a chunk of files at a time.
"""

from __future__ import annotations

import codecs
import datetime as dt
import gzip
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from leaderboard.periods import utc_hours
from pipelines.dedupe import repeated_hashes

# <topic>+<partition>+<offset>.<ext>; the S3 sink may put the codec before .parquet (.snappy.parquet)
FILE_NAME = re.compile(
    r"^(?P<topic>[^+/]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.(?P<ext>json|json\.gz|(?:[a-z0-9]+\.)?parquet)$"
)
MAX_RECORD_BYTES = 64 * 1024 * 1024  # a longer JSON line stops the day with the file named
RAW_KEEP_CHARS = 2000

# Record fields in the order they are extracted; the event contract of DESIGN §4.
FIELDS = ("event_id", "event_type", "user_id", "occurred_at", "value", "attributes")
COLUMNS = ("j_id", "j_type", "j_user", "j_at", "j_value", "j_attr")  # each field as minified JSON text
UTC_TEXT = "'%Y-%m-%dT%H:%M:%S.%fZ'"  # strftime format of a UTC time as RFC 3339 text
# Fields a Parquet file may hold in the contract's own type: such a value comes typed (its JSON
# column NULL), so it is not turned into JSON text only to be parsed back. Column, type (also
# its kind in the rules), and its JSON text for `raw`.
NATIVE = {
    "event_id": ("n_id", "VARCHAR", "to_json(n_id)"),
    "event_type": ("n_type", "VARCHAR", "to_json(n_type)"),
    "user_id": ("n_user", "VARCHAR", "to_json(n_user)"),
    "occurred_at": ("n_at", "TIMESTAMP", f"to_json(strftime(n_at, {UTC_TEXT}))"),  # naive UTC
}
NO_NATIVE = ", ".join(f"NULL::{sql_type} AS {col}" for col, sql_type, _ in NATIVE.values())
RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)"
NAIVE_TS = r"\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?"
MIN_EPOCH_MS, MAX_EPOCH_MS = -62_135_596_800_000, 253_402_300_799_999  # years 1 to 9999

CLEAN_SCHEMA = {
    "event_id": pl.String,
    "event_type": pl.String,
    "user_id": pl.String,
    "occurred_at": pl.Datetime("us", "UTC"),
    "value": pl.Float64,
    "attributes": pl.String,
    "file_idx": pl.Int32,
    "line": pl.Int64,
    "content_hash": pl.UInt64,
    "seq": pl.Int64,  # place in the fast pass's scan: Kafka order within a file that has no line numbers
}
QUARANTINE_SCHEMA = {"file": pl.String, "line": pl.Int64, "reason": pl.String, "raw": pl.String}


@dataclass(frozen=True)
class LandedFile:
    path: Path
    topic: str
    partition: int
    offset: int
    fmt: str  # "json" (also gzip-compressed) or "parquet"
    hour: dt.datetime  # UTC start of the hour folder it sits in
    size: int  # bytes on disk when listed

    @property
    def order(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class DayRead:
    """One local day of landed records, split into typed events and quarantined records."""

    files: list[LandedFile]
    skipped: list[str]  # files in the day's folders that are not landing files, with why
    events: pl.LazyFrame  # CLEAN_SCHEMA, not yet deduplicated
    quarantine: pl.DataFrame  # QUARANTINE_SCHEMA


def hour_folder(landing: Path, topic: str, hour: dt.datetime) -> Path:
    return landing / "topics" / topic / f"year={hour:%Y}" / f"month={hour:%m}" / f"day={hour:%d}" / f"hour={hour:%H}"


def list_files(landing: Path, start: dt.datetime, end: dt.datetime) -> tuple[list[LandedFile], list[str]]:
    """Landing files in the UTC hour folders overlapping [start, end), in Kafka order.

    Files being written (a leading `.` or a `.tmp` suffix) are not listed; other names that
    are not `<topic>+<partition>+<offset>.<ext>` are returned as skipped, so an operator sees them.
    """
    topics_dir = landing / "topics"
    if not topics_dir.is_dir():
        # A wrong LEADERBOARD_LANDING_DIR must not publish empty days as if nothing happened.
        raise LandingError(f"LEADERBOARD_LANDING_DIR={landing}: no topics/ folder (is the sink writing there?)")
    files: list[LandedFile] = []
    skipped: list[str] = []
    for topic_dir in sorted(p for p in topics_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for hour in utc_hours(start, end):
            folder = hour_folder(landing, topic_dir.name, hour)
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                name = path.name
                if name.startswith(".") or name.endswith(".tmp") or not path.is_file():
                    continue
                m = FILE_NAME.match(name)
                if not m:
                    skipped.append(f"{path}: not <topic>+<partition>+<offset>.json|json.gz|parquet")
                    continue
                size = path.stat().st_size
                if size == 0:
                    continue  # an empty file holds no record (and is no valid gzip or Parquet file)
                fmt = "parquet" if m["ext"].endswith("parquet") else "json"
                files.append(LandedFile(path, topic_dir.name, int(m["partition"]), int(m["offset"]), fmt, hour, size))
    files.sort(key=lambda f: (f.order, f.path.name))
    return files, skipped


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_BLANK = " \t\r\n\v\f"  # what DuckDB's NDJSON reader skips as an empty line
EXACT_SCHEMA = {"file_idx": pl.Int32, "line": pl.Int64, "raw": pl.String, "problem": pl.String}
# Mean JSON file size from which the fast pass keeps scan order (see read_day)
ORDERED_MIN_FILE_BYTES = 64 * 1024
EXACT_CHUNK_BYTES = 64 * 1024 * 1024  # of landed text (a gzip file counted at GZIP_RATIO times its size)
GZIP_RATIO = 8


def _chunks(files: list[tuple[int, LandedFile]], budget: int) -> list[list[tuple[int, LandedFile]]]:
    """Consecutive runs of files of about `budget` bytes of text each (a larger file alone)."""
    chunks: list[list[tuple[int, LandedFile]]] = []
    size = 0
    for idx, f in files:
        grows = f.size * (GZIP_RATIO if f.path.name.endswith(".gz") else 1)
        if not chunks or size + grows > budget:
            chunks.append([])
            size = 0
        chunks[-1].append((idx, f))
        size += grows
    return chunks


def _landed_text(f: LandedFile) -> bytes:
    """A JSON-lines file's bytes, without the byte order mark that DuckDB's reader skips."""
    try:
        data = f.path.read_bytes()
        data = gzip.decompress(data) if f.path.name.endswith(".gz") else data
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise LandingError(f"{f.path}: cannot read: {exc}") from exc
    return data.removeprefix(codecs.BOM_UTF8)


def _exact_lines(files: list[tuple[int, LandedFile]]) -> pa.Table:
    """Every non-blank line of JSON-lines files with its number, as raw text.

    Read in Python, not by DuckDB, so nothing can stop a file part-way: a line that is not
    UTF-8 is kept (with replacement characters) and marked.
    """
    frames = [pl.DataFrame(schema=EXACT_SCHEMA)]
    frames += [_numbered_lines(idx, _landed_text(f)) for idx, f in files]
    return pl.concat(frames).to_arrow()


def _line_spans(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number, start and end offset (line end excluded) of each non-blank line."""
    buf = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buf)]))
    # Nearly every line starts with "{": only a line starting blank needs a closer look.
    keep = starts < ends
    keep[keep] = ~np.isin(buf[starts[keep]], np.frombuffer(_BLANK.encode(), dtype=np.uint8))
    for i in np.flatnonzero((starts < ends) & ~keep):
        keep[i] = bool(data[starts[i] : ends[i]].strip(_BLANK.encode()))
    return np.flatnonzero(keep) + 1, starts[keep], ends[keep]


def _refused_lines(files: list[LandedFile], refused: pl.DataFrame) -> tuple[pa.Table, list[int]]:
    """The lines behind the JSON rows the fast pass refused, numbered and as text, to be checked
    again for their line, text and reason; and the files whose rows do not line up with their lines.

    `refused`: file_idx, k (the row's place among its file's rows, from 1), n (the file's rows)
    and lined_up (its rows were staged together). DuckDB's NDJSON reader gives one row per
    non-blank line, broken or not (blank as `_BLANK`), so the k-th row is the k-th non-blank
    line. A file where the counts differ is returned to be read whole line by line.
    """
    rows: list[tuple[int, int, str, str | None]] = []
    misfits: list[int] = []
    for (idx,), group in refused.group_by("file_idx"):
        data = _landed_text(files[idx])  # type: ignore[index]
        numbers, starts, ends = _line_spans(data)
        if len(numbers) != group["n"][0] or not group["lined_up"][0]:
            misfits.append(idx)  # type: ignore[arg-type]
            continue
        k = group["k"].to_numpy() - 1
        for number, start, end in zip(numbers[k], starts[k], ends[k], strict=True):
            rows.append((idx, int(number), *_decoded(data[start:end])))  # type: ignore[arg-type]
    return pl.DataFrame(rows, schema=EXACT_SCHEMA, orient="row").to_arrow(), misfits


def _numbered_lines(idx: int, data: bytes) -> pl.DataFrame:
    """A file's lines, numbered as `data.split(b"\n")` numbers them, each without its line end
    and trailing carriage returns; blank lines dropped.

    Cut at the newlines' offsets without a Python loop (3 s for 1.4M lines with one). A file
    holding a line that is not UTF-8 is cut line by line instead, to mark that line.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    offsets = np.concatenate(([0], np.flatnonzero(buf == ord("\n")) + 1, [len(buf)])).astype(np.int64)
    pieces = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    try:
        lines = pl.Series("raw", pieces).cast(pl.String)
    except pl.exceptions.PolarsError:  # not UTF-8 somewhere
        return _numbered_lines_lossy(idx, data)
    return (
        pl.DataFrame({"raw": lines})
        .with_row_index("line", offset=1)
        .filter(pl.col("raw").str.strip_chars(_BLANK) != "")
        .select(
            file_idx=pl.lit(idx, pl.Int32),
            line=pl.col("line").cast(pl.Int64),
            raw=pl.col("raw").str.strip_chars_end("\r\n"),
            problem=pl.lit(None, pl.String),
        )
    )


def _numbered_lines_lossy(idx: int, data: bytes) -> pl.DataFrame:
    """The same, line by line in Python: a line that is not UTF-8 is kept with replacement
    characters and marked."""
    rows = [
        (idx, number, *_decoded(line))
        for number, line in enumerate(data.split(b"\n"), start=1)
        if line.strip(_BLANK.encode())
    ]
    return pl.DataFrame(rows, schema=EXACT_SCHEMA, orient="row")


def _decoded(line: bytes) -> tuple[str, str | None]:
    """A line's text without trailing carriage returns, and its problem: one that is not UTF-8
    is kept with replacement characters and marked."""
    line = line.rstrip(b"\r")
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), "invalid UTF-8"


def _exact_sql() -> str:
    """The registered `exact_lines` in the shape of the other sources."""
    return f"""
        SELECT file_idx, line, raw,
               CASE WHEN problem IS NOT NULL THEN problem WHEN doc IS NULL THEN 'bad JSON'
                    WHEN json_type(doc) <> 'OBJECT' THEN 'not a JSON object' END AS doc_problem,
               {", ".join(f"f[{i + 1}]::VARCHAR AS {col}" for i, col in enumerate(COLUMNS))}, {NO_NATIVE}
        FROM (SELECT *, json_extract(doc, {[f"$.{name}" for name in FIELDS]}) AS f
              -- blanks around the value, as DuckDB's NDJSON reader allows (vertical tab, form feed too)
              FROM (SELECT *, try_cast(trim(raw, {" || ".join(f"chr({ord(c)})" for c in _BLANK)}) AS JSON) AS doc
                    FROM exact_lines))"""


def _file_list(files: list[tuple[int, LandedFile]]) -> tuple[str, str]:
    """The files as a SQL list for one reader, and the expression giving a row's file_idx
    (DuckDB's `file_index` is the file's place in that list; one file needs none)."""
    paths = "[" + ", ".join(_sql_str(str(f.path)) for _, f in files) + "]"
    if len(files) == 1:
        return paths, str(files[0][0])
    return paths, "[" + ", ".join(str(idx) for idx, _ in files) + "][file_index::BIGINT + 1]"


def _native_json_sql(files: list[tuple[int, LandedFile]]) -> str:
    """The JSON-lines files through DuckDB's NDJSON reader, all in one scan: fast, no line numbers.

    One reader over the list, not one per file: checking a day of 216 files took 11% less time.
    """
    columns = "{" + ", ".join(f"{name}: 'JSON'" for name in FIELDS) + "}"
    paths, file_idx = _file_list(files)
    return f"""
        SELECT {file_idx} AS file_idx, NULL::BIGINT AS line, NULL::VARCHAR AS raw,
               NULL::VARCHAR AS doc_problem,
               {", ".join(f"{name}::VARCHAR AS {col}" for name, col in zip(FIELDS, COLUMNS, strict=True))},
               {NO_NATIVE}
        FROM read_json({paths}, format='newline_delimited', ignore_errors=true, compression='auto',
                       columns={columns}, maximum_object_size={MAX_RECORD_BYTES}, hive_partitioning=false)"""


def _parquet_groups(files: list[tuple[int, LandedFile]]) -> list[list[tuple[int, LandedFile]]]:
    """Parquet files grouped by schema, so each group is one reader (the schemas read from the
    footers by pyarrow: 0.02 s for 216 files, where DuckDB's DESCRIBE of each took 0.25 s).

    A file with a column of its own named `file_index` is read alone: that column would hide
    the reader's `file_index`, which tells the files of a group apart.
    """
    groups: list[tuple[pa.Schema, list[tuple[int, LandedFile]]]] = []
    for idx, f in files:
        try:
            schema = pq.read_schema(f.path).remove_metadata()
        except (OSError, pa.ArrowException) as exc:
            raise LandingError(f"{f.path}: not a readable Parquet file: {exc}") from exc
        if "file_index" in schema.names:
            groups.append((schema, [(idx, f)]))
            continue
        for known, members in groups:
            if known.equals(schema) and "file_index" not in known.names:
                members.append((idx, f))
                break
        else:
            groups.append((schema, [(idx, f)]))
    return [members for _, members in groups]


def _parquet_sql(con: duckdb.DuckDBPyConnection, files: list[tuple[int, LandedFile]]) -> str:
    """Parquet files of one schema in the same shape as JSON lines, so one set of rules checks both.

    Text columns and a time with a time zone come typed (NATIVE): formatting a time as JSON
    text only to parse it again was a fifth of reading a Parquet day (bench/ingest_rank.py).
    """
    paths, file_idx = _file_list(files)
    src = f"read_parquet({paths}, file_row_number=true, hive_partitioning=false)"
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall())
    parts, native = [], {name: f"NULL::{sql_type}" for name, (_, sql_type, _) in NATIVE.items()}
    for name in FIELDS:
        col = f'"{name}"'
        kind = types.get(name)
        if kind is None:
            parts.append("NULL::JSON")
        elif name in NATIVE and NATIVE[name][1] == kind == "VARCHAR":
            parts.append("NULL::JSON")
            native[name] = col
        elif name == "occurred_at" and (kind.startswith("TIMESTAMPTZ") or re.match("TIMESTAMP.* WITH TIME ZONE", kind)):
            # a finite time typed, as naive UTC; +-infinity as its text ('infinity'), which the rules refuse
            zoned = f"{col}::TIMESTAMPTZ"
            parts.append(f"CASE WHEN NOT isfinite({zoned}) THEN to_json(strftime({zoned}, {UTC_TEXT})) END")
            native[name] = f"CASE WHEN isfinite({zoned}) THEN make_timestamp(epoch_us({zoned})) END"
        elif name == "occurred_at" and kind.startswith("TIMESTAMP"):
            parts.append(f"to_json(strftime({col}::TIMESTAMP, '%Y-%m-%dT%H:%M:%S.%f'))")  # no offset
        else:
            parts.append(f"to_json({col})")
    fields = ", ".join(f"{part}::VARCHAR AS {col}" for part, col in zip(parts, COLUMNS, strict=True))
    fields += ", " + ", ".join(f"{native[name]} AS {col}" for name, (col, _, _) in NATIVE.items())
    return f"""
        SELECT {file_idx} AS file_idx, file_row_number + 1 AS line, NULL::VARCHAR AS raw,
               NULL::VARCHAR AS doc_problem, {fields}
        FROM {src}"""


def _kind(j: str) -> str:
    """JSON type from the first character of a minified JSON value (no parse)."""
    return f"""CASE WHEN {j} IS NULL THEN 'NULL' ELSE CASE left({j}, 1)
        WHEN '"' THEN 'VARCHAR' WHEN '{{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY'
        WHEN 't' THEN 'BOOLEAN' WHEN 'f' THEN 'BOOLEAN' WHEN 'n' THEN 'NULL'
        ELSE CASE WHEN contains({j}, '.') OR contains(lower({j}), 'e') OR contains({j}, 'N')
                  OR contains({j}, 'I') THEN 'DOUBLE' ELSE 'BIGINT' END END END"""


def _text(j: str) -> str:
    """The value of a JSON string, NULL for other types; only escapes need the JSON parser."""
    # substr by length (both count code points): a third of the cost of slicing j[2:-2] on 2M events
    unescaped = f"CASE WHEN contains({j}, '\\') THEN {j}::JSON ->> '$' ELSE substr({j}, 2, length({j}) - 2) END"
    return f"CASE WHEN starts_with({j}, '\"') THEN {unescaped} END"


def _is_number(j: str) -> str:
    return f"(left({j}, 1) BETWEEN '0' AND '9' OR left({j}, 1) IN ('-', 'N', 'I'))"


# Why a record is refused: the first rule it breaks. {t_id} ... {t_attr} are the fields' kinds
# (JSON type names, or the SQL type of a typed value), filled in by _reason.
_REASONS = """CASE
            WHEN doc_problem IS NOT NULL THEN doc_problem
            WHEN {t_id} = 'NULL' THEN 'missing event_id'
            WHEN {t_id} <> 'VARCHAR' THEN 'event_id is not a string: ' || left(j_id, 80)
            WHEN length(event_id) NOT BETWEEN 1 AND 128 THEN 'event_id must be 1-128 characters'
            WHEN {t_type} = 'NULL' THEN 'missing event_type'
            WHEN {t_type} <> 'VARCHAR' THEN 'event_type is not a string: ' || left(j_type, 80)
            WHEN length(event_type) = 0 THEN 'event_type is empty'
            WHEN {t_user} = 'NULL' THEN 'missing user_id'
            WHEN {t_user} <> 'VARCHAR' THEN 'user_id is not a string: ' || left(j_user, 80)
            WHEN length(user_id) NOT BETWEEN 1 AND 64 THEN 'user_id must be 1-64 characters, got ' || length(user_id)
            WHEN {t_at} = 'NULL' THEN 'missing occurred_at'
            WHEN {t_at} = 'BIGINT' AND ts IS NULL THEN 'occurred_at epoch milliseconds out of range: ' || left(j_at, 40)
            WHEN {t_at} NOT IN ('VARCHAR', 'BIGINT', 'TIMESTAMP')
                THEN 'occurred_at must be an RFC 3339 string or integer epoch milliseconds: ' || left(j_at, 40)
            WHEN ts IS NULL AND regexp_full_match(at_text, '{naive_ts}')
                THEN 'occurred_at has no UTC offset (ambiguous): ' || left(at_text, 40)
            WHEN ts IS NULL THEN 'occurred_at is not an RFC 3339 timestamp: ' || left(at_text, 40)
            WHEN {t_value} NOT IN ('NULL', 'BIGINT', 'DOUBLE') THEN 'value is not a number: ' || left(j_value, 40)
            WHEN num IS NOT NULL AND NOT isfinite(num) THEN 'value is not finite: ' || left(j_value, 40)
            WHEN {t_attr} NOT IN ('NULL', 'OBJECT') THEN 'attributes is not an object'
            WHEN ts < hour OR ts >= hour + INTERVAL 1 HOUR
                THEN 'occurred_at ' || strftime(ts, {utc_text})
                     || ' is outside its hour folder ' || strftime(hour, '%Y-%m-%dT%HZ')
            ELSE 'refused'
        END"""


def _reason() -> str:
    """The CASE naming the broken rule. Evaluated for refused rows only, so the kinds are
    expressions inside it, not columns computed for every row."""
    kinds = {f"t_{col[2:]}": f"({_kind(col)})" for col in COLUMNS}  # t_id for j_id, ...
    for col, sql_type, _ in NATIVE.values():  # a typed value's kind is its type
        key = f"t_{col[2:]}"
        kinds[key] = f"(CASE WHEN {col} IS NOT NULL THEN '{sql_type}' ELSE {kinds[key]} END)"
    return _REASONS.format(**kinds, naive_ts=NAIVE_TS, utc_text=UTC_TEXT)


def _checked_sql(
    sources: str, files: list[LandedFile], start: dt.datetime, end: dt.datetime, ordered: bool = False
) -> str:
    """The event contract as SQL over fields given as JSON text, or typed where a Parquet file
    holds them in the contract's type (NATIVE) (DESIGN §4).

    `ok` is one cheap conjunction that almost every record passes; the long CASE naming the
    broken rule, and the type names it needs, run only for the records that fail it. Every row
    is kept, `in_day` telling whether it belongs to the day. A row's file and hour come from
    the `files` table, or if `ordered` from lists: a join may reorder rows (DuckDB's order
    preservation rules), but the lists cost more per file (5,000 small files: 3.6 s, 1.6 s).
    """
    lo, hi = (f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S}'" for t in (start, end))
    file_and_hour, source = "files.file, files.hour", "src JOIN files USING (file_idx)"
    if ordered:
        paths = "[" + ", ".join(_sql_str(str(f.path)) for f in files) + "]"
        hours = "[" + ", ".join(f"TIMESTAMP '{f.hour:%Y-%m-%d %H:%M:%S}'" for f in files) + "]"
        file_and_hour, source = f"{paths}[file_idx + 1] AS file, {hours}[file_idx + 1] AS hour", "src"
    struct = ", ".join(
        f'"{n}" := ' + (f"coalesce({c}::JSON, {NATIVE[n][2]})" if n in NATIVE else f"{c}::JSON")
        for n, c in zip(FIELDS, COLUMNS, strict=True)
    )
    no_value = "(j_value IS NULL OR j_value = 'null')"
    return f"""
    WITH src AS ({sources}),
    y AS (
        SELECT src.*, {file_and_hour},
            coalesce(n_id, {_text("j_id")}) AS event_id,
            coalesce(n_type, {_text("j_type")}) AS event_type,
            coalesce(n_user, {_text("j_user")}) AS user_id,
            {_text("j_at")} AS at_text,
            CASE WHEN {_is_number("j_at")} AND NOT contains(j_at, '.') AND NOT contains(lower(j_at), 'e')
                 THEN try_cast(j_at AS BIGINT) END AS at_ms,
            -- a number literal DOUBLE cannot hold (1e999) is out of range: not finite
            CASE WHEN {_is_number("j_value")} THEN coalesce(try_cast(j_value AS DOUBLE), 'Infinity'::DOUBLE) END AS num,
            CASE WHEN starts_with(j_attr, '{{') THEN j_attr END AS attributes
        FROM {source}
    ),
    z AS (
        SELECT *,
            CASE
                WHEN n_at IS NOT NULL THEN n_at
                WHEN at_ms BETWEEN {MIN_EPOCH_MS} AND {MAX_EPOCH_MS} THEN epoch_ms(at_ms)
                -- to UTC wall time by its microseconds: cheaper than a time zone cast
                WHEN regexp_full_match(at_text, '{RFC3339}') THEN make_timestamp(epoch_us(coalesce(
                    try_cast(at_text AS TIMESTAMPTZ),
                    -- lower-case t/z or more than 6 fraction digits: normalize first (rare)
                    try_cast(regexp_replace(upper(at_text), '(\\.\\d{{6}})\\d+', '\\1') AS TIMESTAMPTZ))))
            END AS ts
        FROM y
    ),
    c AS (
        SELECT *, coalesce(
            doc_problem IS NULL
            AND length(event_id) BETWEEN 1 AND 128 AND length(event_type) >= 1 AND length(user_id) BETWEEN 1 AND 64
            AND ts >= hour AND ts < hour + INTERVAL 1 HOUR
            AND ({no_value} OR isfinite(num))
            AND (j_attr IS NULL OR j_attr = 'null' OR attributes IS NOT NULL), false) AS ok
        FROM z
    )
    SELECT file_idx::INTEGER AS file_idx, CASE WHEN NOT ok THEN file END AS file, line::BIGINT AS line,
           CASE WHEN NOT ok THEN {_reason()} END AS reason,
           CASE WHEN NOT ok THEN left(coalesce(raw, to_json(struct_pack({struct}))::VARCHAR), {RAW_KEEP_CHARS})
           END AS raw,
           event_id, event_type, user_id, ts AS occurred_at, coalesce(num, 1.0) AS value, attributes,
           CASE WHEN ok THEN hash(event_type, user_id, ts, coalesce(num, 1.0), attributes) END AS content_hash,
           CASE WHEN ok THEN ts >= {lo} AND ts < {hi} ELSE hour >= {lo} AND hour < {hi} END AS in_day
    FROM c
    """


def connect() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return con


def _catalog(con: duckdb.DuckDBPyConnection, files: list[LandedFile]) -> None:
    catalog = pl.DataFrame(
        {
            "file_idx": list(range(len(files))),
            "file": [str(f.path) for f in files],
            "hour": [f.hour.replace(tzinfo=None) for f in files],
        },
        schema={"file_idx": pl.Int32, "file": pl.String, "hour": pl.Datetime("us")},
    )
    con.register("files", catalog.to_arrow())


def _typed(frame: pl.LazyFrame) -> pl.LazyFrame:
    frame = frame.select(list(CLEAN_SCHEMA)).with_columns(pl.col("occurred_at").dt.replace_time_zone("UTC"))
    return frame.cast(CLEAN_SCHEMA)  # type: ignore[arg-type]


def read_day(
    landing: Path, start: dt.datetime, end: dt.datetime, workdir: Path, con: duckdb.DuckDBPyConnection | None = None
) -> DayRead:
    """Read every landed record of the local day [start, end) (UTC instants).

    A valid record belongs to the day its `occurred_at` falls in; a broken one to the day its
    hour folder starts in, so each record is counted by exactly one day. `workdir` holds the
    staging files behind the returned lazy `events`; keep it until they are written.
    """
    files, skipped = list_files(landing, start, end)
    if not files:
        return DayRead(files, skipped, pl.LazyFrame(schema=CLEAN_SCHEMA), pl.DataFrame(schema=QUARANTINE_SCHEMA))
    con = con or connect()
    lo, hi = start.astimezone(dt.UTC), end.astimezone(dt.UTC)
    workdir.mkdir(parents=True, exist_ok=True)
    json_files = [(i, f) for i, f in enumerate(files) if f.fmt == "json"]
    parquet_files = [(i, f) for i, f in enumerate(files) if f.fmt == "parquet"]
    stages: list[pl.LazyFrame] = []  # the fast pass's rows, each with `seq`
    lines, redo = pl.DataFrame(schema=EXACT_SCHEMA).to_arrow(), []
    _catalog(con, files)
    try:
        if json_files:
            # Kept in scan order, a refused row's place in its file gives its line, so only the
            # refused lines are checked again, not their files whole (a day at 0.1% broken
            # records: 75 s against 36 s). Order costs about 0.5 ms a file, so for small files,
            # reading the few with a problem whole is cheaper (bench/small_files.py); and a fifth
            # of checking a Parquet day, whose rows carry their line: hence JSON staged apart.
            ordered = sum(f.size for _, f in json_files) >= ORDERED_MIN_FILE_BYTES * len(json_files)
            sql = _checked_sql(_native_json_sql(json_files), files, lo, hi, ordered)
            json_rows = _copy(con, sql, workdir / "stage-json.parquet", ordered=ordered)
            if ordered:
                json_rows = json_rows.with_row_index("seq")
                lines, redo = _refused_lines(files, _refused_rows(json_rows))
            else:
                json_rows = json_rows.with_columns(seq=pl.lit(None, pl.Int64))
                redo = _unplaced(json_rows)
            # its refused rows are all checked again, below
            stages.append(json_rows.filter(pl.col("reason").is_null()))
        if parquet_files:
            sources = [_parquet_sql(con, group) for group in _parquet_groups(parquet_files)]
            sql = _checked_sql(" UNION ALL ".join(sources), files, lo, hi)
            stages.append(_copy(con, sql, workdir / "stage-parquet.parquet").with_columns(seq=pl.lit(None, pl.Int64)))
        checked_exact = _checked_sql(_exact_sql(), files, lo, hi)
        rechecked = _copy_exact(con, checked_exact, lines, workdir / "rechecked.parquet")
        # A line valid on its own is not what the fast pass refused: that file's rows did not line up.
        redo += rechecked.filter(pl.col("reason").is_null()).select("file_idx").unique().collect()["file_idx"].to_list()
        parts = [
            _copy_exact(con, checked_exact, _exact_lines(chunk), workdir / f"exact-{n}.parquet")
            # A chunk of files at a time: the lines of a whole day at once took 4.4 GB for 10M events.
            for n, chunk in enumerate(_chunks([(i, files[i]) for i in sorted(set(redo))], EXACT_CHUNK_BYTES))
        ]
    except (duckdb.Error, LandingError) as exc:  # LandingError: a file pyarrow cannot read as Parquet
        raise LandingError(f"cannot read landing files for {lo:%Y-%m-%d %H:%M}Z..{hi:%Y-%m-%d %H:%M}Z: {exc}") from exc
    finally:
        con.unregister("files")
    rows = [r.filter(pl.col("in_day") & ~pl.col("file_idx").is_in(redo)) for r in stages]
    rows += [p.with_columns(seq=pl.lit(None, pl.Int64)).filter(pl.col("in_day")) for p in parts]  # the files redone
    events = pl.concat([_typed(r.filter(pl.col("reason").is_null())) for r in rows])
    refused = [r.filter(pl.col("reason").is_not_null()) for r in rows]
    refused.append(rechecked.filter(pl.col("in_day") & ~pl.col("file_idx").is_in(redo)))
    quarantine = pl.concat([r.select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA) for r in refused]).collect()  # type: ignore[arg-type]
    return DayRead(files, skipped, events, quarantine.sort("file", "line"))


def _refused_rows(json_rows: pl.LazyFrame) -> pl.DataFrame:
    """The JSON rows the fast pass refused, each with its place among its file's rows (k, from
    1), the file's count of rows (n), and whether they were staged together (lined_up)."""
    refused = json_rows.filter(pl.col("reason").is_not_null()).select("file_idx", "seq").collect()
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


def _unplaced(json_rows: pl.LazyFrame) -> list[int]:
    """Out of scan order, the JSON files to read whole line by line: those with a refused row
    (its line is reported) and those holding one event_id twice (line order picks the first).
    Rows of the neighbouring day (at a boundary hour) do not count."""
    json_rows = json_rows.filter(pl.col("in_day"))
    refused = json_rows.filter(pl.col("reason").is_not_null()).select("file_idx")
    valid = json_rows.filter(pl.col("reason").is_null()).select("file_idx", "event_id", _h=pl.col("event_id").hash())
    repeated = (
        valid.join(repeated_hashes(valid.select("_h")).lazy(), on="_h", how="semi")
        .group_by("file_idx", "event_id")
        .len()
        .filter(pl.col("len") > 1)
        .select("file_idx")
    )
    return pl.concat([refused, repeated]).unique().collect()["file_idx"].to_list()


def _copy(con: duckdb.DuckDBPyConnection, sql: str, path: Path, ordered: bool = False) -> pl.LazyFrame:
    """A query's rows to a Parquet file; `ordered` keeps them in scan order (else DuckDB may not)."""
    con.execute(f"SET preserve_insertion_order = {str(ordered).lower()}")
    con.execute(f"COPY ({sql}) TO {_sql_str(str(path))} (FORMAT parquet)")
    return pl.scan_parquet(path)


def _copy_exact(con: duckdb.DuckDBPyConnection, checked_exact: str, lines: pa.Table, path: Path) -> pl.LazyFrame:
    """Numbered lines (EXACT_SCHEMA) through the rules, to a Parquet file."""
    con.register("exact_lines", lines)
    try:
        return _copy(con, checked_exact, path)
    finally:
        con.unregister("exact_lines")


class LandingError(RuntimeError):
    """The landing zone could not be read; the message names the day and DuckDB's reason."""
