"""The landed records as SQL sources in the one shape the contract checks.

Three readers give the same columns (file_idx, line, raw, doc_problem, the fields as JSON
text, the typed NATIVE ones): DuckDB's NDJSON reader over a day's JSON-lines files (fast, no
line numbers), lines cut from files in Python (numbered, bad JSON kept as text), and DuckDB's
Parquet reader, one per schema. `with_file_and_hour` adds each row's file and hour folder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from leaderboard.landing.contract import COLUMNS, FIELDS, INT_VALUE, NATIVE, NO_NATIVE, UTC_TEXT
from leaderboard.landing.layout import LandedFile, LandingError
from leaderboard.landing.lines import BLANK

MAX_RECORD_BYTES = 64 * 1024 * 1024  # a longer JSON line stops the day with the file named
# DuckDB's NDJSON reader holds a buffer of twice its `maximum_object_size` per thread: sized for
# MAX_RECORD_BYTES, a few threads passed DUCKDB_MEMORY, so a day is read with DuckDB's own size
# first, and again for MAX_RECORD_BYTES only where a line is longer (`record_too_long`).
FIRST_RECORD_BYTES = 16 * 1024 * 1024
DUCKDB_MEMORY = "1GB"
# Columns DuckDB's Parquet reader adds to a file's own; it matches column names case-insensitively.
READER_COLUMNS = ("file_index", "file_row_number")
# Integer types that BIGINT holds exactly: such a `value` comes typed (NATIVE)
INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT", "UINTEGER")
CUT_LINES = "cut_lines"  # the name under which cut lines (LINES_SCHEMA) are registered


def connect(workdir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """A connection for reading landed files. Its memory is capped (DUCKDB_MEMORY), since
    keeping NDJSON rows in scan order takes what it is given, but not much lower: an ordered
    write past its share of the cap lets only the earliest batch go on while the other
    threads wait (README, Benchmark). Past the cap DuckDB spills to `workdir`."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    if workdir is not None:
        con.execute(f"SET temp_directory = {sql_str(str(workdir / 'duckdb-spill'))}")
    return con


def sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def register_files(con: duckdb.DuckDBPyConnection, files: list[LandedFile]) -> None:
    """The day's files as the table `files` (file_idx, file, hour) that sources join to."""
    catalog = pl.DataFrame(
        {
            "file_idx": list(range(len(files))),
            "file": [str(f.path) for f in files],
            "hour": [f.hour.replace(tzinfo=None) for f in files],
        },
        schema={"file_idx": pl.Int32, "file": pl.String, "hour": pl.Datetime("us")},
    )
    con.register("files", catalog.to_arrow())


def with_file_and_hour(sources: str, files: list[LandedFile], ordered: bool = False) -> str:
    """`sources` with each row's file and hour folder: from the registered `files`, or if
    `ordered` from SQL lists, since a join may reorder rows (DuckDB's order preservation
    rules) but the lists cost more per file."""
    if not ordered:
        return f"SELECT src.*, files.file, files.hour FROM ({sources}) src JOIN files USING (file_idx)"
    paths = "[" + ", ".join(sql_str(str(f.path)) for f in files) + "]"
    hours = "[" + ", ".join(f"TIMESTAMP '{f.hour:%Y-%m-%d %H:%M:%S}'" for f in files) + "]"
    return f"SELECT *, {paths}[file_idx + 1] AS file, {hours}[file_idx + 1] AS hour FROM ({sources})"


def _file_list(files: list[tuple[int, LandedFile]]) -> tuple[str, str]:
    """The files as a SQL list for one reader, and the expression giving a row's file_idx
    (DuckDB's `file_index` is the file's place in that list; one file needs none)."""
    paths = "[" + ", ".join(sql_str(str(f.path)) for _, f in files) + "]"
    if len(files) == 1:
        return paths, str(files[0][0])
    return paths, "[" + ", ".join(str(idx) for idx, _ in files) + "][file_index::BIGINT + 1]"


def json_sql(files: list[tuple[int, LandedFile]], record_bytes: int = MAX_RECORD_BYTES) -> str:
    """JSON-lines files through DuckDB's NDJSON reader, one reader over the list (cheaper than
    one per file): fast, no line numbers, one row per non-blank line, a broken one empty. A
    line of up to `record_bytes` is always read (`maximum_object_size`)."""
    columns = "{" + ", ".join(f"{name}: 'JSON'" for name in FIELDS) + "}"
    paths, file_idx = _file_list(files)
    return f"""
        SELECT {file_idx} AS file_idx, NULL::BIGINT AS line, NULL::VARCHAR AS raw,
               NULL::VARCHAR AS doc_problem,
               {", ".join(f"{name}::VARCHAR AS {col}" for name, col in zip(FIELDS, COLUMNS, strict=True))},
               {NO_NATIVE}
        FROM read_json({paths}, format='newline_delimited', ignore_errors=true, compression='auto',
                       columns={columns}, maximum_object_size={record_bytes}, hive_partitioning=false)"""


def record_too_long(exc: BaseException | None) -> bool:
    """Whether DuckDB's NDJSON reader stopped at a line longer than its buffers."""
    return isinstance(exc, duckdb.InvalidInputException) and '"maximum_object_size"' in str(exc)


def lines_sql() -> str:
    """The registered CUT_LINES, parsed here: bad JSON or bad UTF-8 stays a row with its line."""
    trim = " || ".join(f"chr({c})" for c in BLANK)
    return f"""
        SELECT file_idx, line, raw,
               CASE WHEN problem IS NOT NULL THEN problem WHEN doc IS NULL THEN 'bad JSON'
                    WHEN json_type(doc) <> 'OBJECT' THEN 'not a JSON object' END AS doc_problem,
               {", ".join(f"f[{i + 1}]::VARCHAR AS {col}" for i, col in enumerate(COLUMNS))}, {NO_NATIVE}
        FROM (SELECT *, json_extract(doc, {[f"$.{name}" for name in FIELDS]}) AS f
              -- blanks around the value, as DuckDB's NDJSON reader allows (vertical tab, form feed too)
              FROM (SELECT *, try_cast(trim(raw, {trim}) AS JSON) AS doc FROM {CUT_LINES}))"""


def parquet_groups(files: list[tuple[int, LandedFile]]) -> list[list[tuple[int, LandedFile]]]:
    """Parquet files grouped by schema, so each group is one reader (the schemas read from the
    footers by pyarrow, much cheaper than DuckDB's DESCRIBE of each).

    A file with a column of its own named like a column the reader adds (READER_COLUMNS) is
    read alone: that column would hide the reader's `file_index`, which tells the files of a
    group apart, or clash with its `file_row_number`.
    """
    groups: list[tuple[pa.Schema, list[tuple[int, LandedFile]]]] = []
    for idx, f in files:
        try:
            schema = pq.read_schema(f.path).remove_metadata()
        except (OSError, pa.ArrowException) as exc:
            raise LandingError(f"{f.path}: not a readable Parquet file: {exc}") from exc
        if _has_reader_column(schema.names):
            groups.append((schema, [(idx, f)]))
            continue
        for known, members in groups:
            if known.equals(schema) and not _has_reader_column(known.names):
                members.append((idx, f))
                break
        else:
            groups.append((schema, [(idx, f)]))
    return [members for _, members in groups]


def _has_reader_column(names: Iterable[str], *reader_columns: str) -> bool:
    """Whether a file's columns include one named like a column the reader adds (any of
    READER_COLUMNS unless some are given)."""
    return any(name.lower() in (reader_columns or READER_COLUMNS) for name in names)


def parquet_sql(con: duckdb.DuckDBPyConnection, files: list[tuple[int, LandedFile]]) -> str:
    """Parquet files of one schema in the shape of JSON lines, so one set of rules checks both.

    Text columns, a time with a time zone and a number that DOUBLE or BIGINT holds come typed
    (NATIVE): formatting them as JSON text only to parse it again was a large share of reading
    a Parquet day.
    """
    paths, file_idx = _file_list(files)
    plain = f"read_parquet({paths}, hive_partitioning=false)"
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {plain})").fetchall())
    src, line = f"read_parquet({paths}, file_row_number=true, hive_partitioning=false)", "file_row_number + 1"
    if _has_reader_column(types, "file_row_number"):
        # The reader refuses to add a column the file has (a file read alone): its rows are
        # numbered by their order instead, in a column named so as not to clash (the last one).
        src = f"{plain} WITH ORDINALITY"
        line = '"' + con.sql(f"DESCRIBE SELECT * FROM {src}").fetchall()[-1][0] + '"'
    # DuckDB's names are case-insensitive: beside `EVENT_ID` it renames a second `event_id` to
    # `event_id_1`. The file's own names (same order) say which column is the field.
    duck_names = list(types)
    refs = {real: f'"{duck}"' for real, duck in zip(pq.read_schema(files[0][1].path).names, duck_names, strict=False)}
    types = {real: types[duck.strip('"')] for real, duck in refs.items()}
    parts, native = [], {name: f"NULL::{sql_type}" for name, (_, sql_type, _) in NATIVE.items()}
    int_value = "NULL::BIGINT"
    for name in FIELDS:
        kind = types.get(name)
        col = refs.get(name, f'"{name}"')
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
        elif name == "value" and kind in INTEGERS:
            parts.append("NULL::JSON")
            native[name], int_value = f"{col}::DOUBLE", f"{col}::BIGINT"
        elif name == "value" and kind == "DOUBLE":
            parts.append("NULL::JSON")
            native[name] = col
        elif name == "occurred_at" and kind.startswith("TIMESTAMP"):
            parts.append(f"to_json(strftime({col}::TIMESTAMP, '%Y-%m-%dT%H:%M:%S.%f'))")  # no offset
        else:
            parts.append(f"to_json({col})")
    fields = ", ".join(f"{part}::VARCHAR AS {col}" for part, col in zip(parts, COLUMNS, strict=True))
    fields += ", " + ", ".join(f"{native[name]} AS {col}" for name, (col, _, _) in NATIVE.items())
    fields += f", {int_value} AS {INT_VALUE}"
    return f"""
        SELECT {file_idx} AS file_idx, {line} AS line, NULL::VARCHAR AS raw,
               NULL::VARCHAR AS doc_problem, {fields}
        FROM {src}"""
