"""Reading the landing zone that the Kafka Connect sink writes (DESIGN §3, §4).

Every record of one local day is read by DuckDB, checked against the event contract in SQL
and either kept (typed) or sent to quarantine with its file, line and reason. DuckDB reads
lines as raw text (not with its JSON reader) so that bad JSON stays a row with a line number
instead of an error or a silent skip.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl

from leaderboard.periods import utc_hours

_FILE_NAME = re.compile(r"^(?P<topic>[^+/]+)\+(?P<partition>\d+)\+(?P<offset>\d+)\.(?P<ext>json|json\.gz|parquet)$")
MAX_LINE_BYTES = 8 * 1024 * 1024
RAW_KEEP_CHARS = 2000

# Record fields in the order they are extracted; the event contract of DESIGN §4.
FIELDS = ("event_id", "event_type", "user_id", "occurred_at", "value", "attributes")
RFC3339 = r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
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

    @property
    def order(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)


@dataclass(frozen=True)
class DayRead:
    """One local day of landed records, split into typed events and quarantined records."""

    files: list[LandedFile]
    skipped: list[str]  # files in the day's folders that are not landing files, with why
    events: pl.DataFrame  # CLEAN_SCHEMA, not yet deduplicated
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
        return [], []
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
                m = _FILE_NAME.match(name)
                if not m:
                    skipped.append(f"{path}: not <topic>+<partition>+<offset>.json|json.gz|parquet")
                    continue
                fmt = "parquet" if m["ext"] == "parquet" else "json"
                files.append(LandedFile(path, topic_dir.name, int(m["partition"]), int(m["offset"]), fmt, hour))
    files.sort(key=lambda f: (f.order, f.path.name))
    return files, skipped


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_lines_sql(idx: int, f: LandedFile) -> str:
    """One JSON-lines file as (file_idx, line, raw, fields); blank lines keep their number."""
    compression = "gzip" if f.path.name.endswith(".gz") else "none"
    return f"""
        SELECT {idx} AS file_idx, line, raw,
               json_extract(doc, {list(f"$.{name}" for name in FIELDS)}) AS f,
               CASE WHEN doc IS NULL THEN 'bad JSON'
                    WHEN json_type(doc) <> 'OBJECT' THEN 'not a JSON object' END AS doc_problem
        FROM (SELECT line, raw, try_cast(raw AS JSON) AS doc FROM (
            SELECT row_number() OVER () AS line, raw
            FROM read_csv({_sql_str(str(f.path))}, columns={{'raw': 'VARCHAR'}}, delim='\x01', quote='',
                          escape='', header=false, auto_detect=false, strict_mode=false,
                          compression='{compression}', max_line_size={MAX_LINE_BYTES})
        ) WHERE raw IS NOT NULL AND trim(raw) <> '')"""


def _parquet_sql(con: duckdb.DuckDBPyConnection, idx: int, f: LandedFile) -> str:
    """One Parquet file in the same shape as JSON lines, so one set of rules checks both."""
    src = f"read_parquet({_sql_str(str(f.path))}, file_row_number=true)"
    types = dict(con.sql(f"SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM {src})").fetchall())
    parts = []
    for name in FIELDS:
        col = f'"{name}"'
        kind = types.get(name)
        if kind is None:
            parts.append("NULL::JSON")
        elif name == "occurred_at" and kind == "TIMESTAMP WITH TIME ZONE":
            parts.append(f"to_json(strftime({col}, '%Y-%m-%dT%H:%M:%S.%fZ'))")
        elif name == "occurred_at" and kind.startswith("TIMESTAMP"):
            parts.append(f"to_json(strftime({col}::TIMESTAMP, '%Y-%m-%dT%H:%M:%S.%f'))")  # no offset
        else:
            parts.append(f"to_json({col})")
    fields = ", ".join(parts)
    return f"""
        SELECT {idx} AS file_idx, file_row_number + 1 AS line,
               to_json(struct_pack({", ".join(f'"{n}" := f[{i + 1}]' for i, n in enumerate(FIELDS))}))::VARCHAR AS raw,
               f, NULL::VARCHAR AS doc_problem
        FROM (SELECT file_row_number, [{fields}] AS f FROM {src})"""


def _checked_sql(sources: str, start: dt.datetime, end: dt.datetime) -> str:
    """The event contract as SQL: one `reason` per broken record (the first rule it breaks)."""
    lo, hi = (f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S}'" for t in (start, end))
    return f"""
    WITH src AS ({sources}),
    x AS (
        SELECT src.file_idx, files.file, line, raw, doc_problem, files.hour,
               f[1] AS j_id, f[2] AS j_type, f[3] AS j_user, f[4] AS j_at, f[5] AS j_value, f[6] AS j_attr,
               coalesce(json_type(f[1]), 'NULL') AS t_id, coalesce(json_type(f[2]), 'NULL') AS t_type,
               coalesce(json_type(f[3]), 'NULL') AS t_user, coalesce(json_type(f[4]), 'NULL') AS t_at,
               coalesce(json_type(f[5]), 'NULL') AS t_value, coalesce(json_type(f[6]), 'NULL') AS t_attr
        FROM src JOIN files USING (file_idx)
    ),
    y AS (
        SELECT *,
            CASE WHEN t_id = 'VARCHAR' THEN j_id ->> '$' END AS event_id,
            CASE WHEN t_type = 'VARCHAR' THEN j_type ->> '$' END AS event_type,
            CASE WHEN t_user = 'VARCHAR' THEN j_user ->> '$' END AS user_id,
            CASE WHEN t_at = 'VARCHAR' THEN j_at ->> '$' END AS at_text,
            CASE WHEN t_at IN ('BIGINT', 'UBIGINT') THEN try_cast(j_at AS BIGINT) END AS at_ms,
            CASE WHEN t_value IN ('BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT') THEN try_cast(j_value AS DOUBLE) END AS num
        FROM x
    ),
    z AS (
        SELECT *,
            CASE
                WHEN at_ms BETWEEN {MIN_EPOCH_MS} AND {MAX_EPOCH_MS} THEN epoch_ms(at_ms)
                WHEN regexp_full_match(at_text, '{RFC3339}') THEN try_cast(
                    regexp_replace(upper(at_text), '(\\.\\d{{6}})\\d+', '\\1') AS TIMESTAMPTZ)::TIMESTAMP
            END AS ts
        FROM y
    ),
    checked AS (
        SELECT *, CASE
            WHEN doc_problem IS NOT NULL THEN doc_problem
            WHEN t_id = 'NULL' THEN 'missing event_id'
            WHEN t_id <> 'VARCHAR' THEN 'event_id is not a string: ' || left(j_id::VARCHAR, 80)
            WHEN length(event_id) NOT BETWEEN 1 AND 128 THEN 'event_id must be 1-128 characters'
            WHEN t_type = 'NULL' THEN 'missing event_type'
            WHEN t_type <> 'VARCHAR' THEN 'event_type is not a string: ' || left(j_type::VARCHAR, 80)
            WHEN length(event_type) = 0 THEN 'event_type is empty'
            WHEN t_user = 'NULL' THEN 'missing user_id'
            WHEN t_user <> 'VARCHAR' THEN 'user_id is not a string: ' || left(j_user::VARCHAR, 80)
            WHEN length(user_id) NOT BETWEEN 1 AND 64 THEN 'user_id must be 1-64 characters, got ' || length(user_id)
            WHEN t_at = 'NULL' THEN 'missing occurred_at'
            WHEN t_at IN ('BIGINT', 'UBIGINT') AND ts IS NULL
                THEN 'occurred_at epoch milliseconds out of range: ' || left(j_at::VARCHAR, 40)
            WHEN t_at NOT IN ('VARCHAR', 'BIGINT', 'UBIGINT')
                THEN 'occurred_at must be an RFC 3339 string or integer epoch milliseconds: ' || left(j_at::VARCHAR, 40)
            WHEN ts IS NULL AND regexp_full_match(at_text, '{NAIVE_TS}')
                THEN 'occurred_at has no UTC offset (ambiguous): ' || left(at_text, 40)
            WHEN ts IS NULL THEN 'occurred_at is not an RFC 3339 timestamp: ' || left(at_text, 40)
            WHEN t_value NOT IN ('NULL', 'BIGINT', 'UBIGINT', 'DOUBLE', 'HUGEINT')
                THEN 'value is not a number: ' || left(j_value::VARCHAR, 40)
            WHEN num IS NOT NULL AND NOT isfinite(num) THEN 'value is not finite: ' || left(j_value::VARCHAR, 40)
            WHEN t_attr NOT IN ('NULL', 'OBJECT') THEN 'attributes is not an object'
            WHEN ts < hour OR ts >= hour + INTERVAL 1 HOUR
                THEN 'occurred_at ' || strftime(ts, '%Y-%m-%dT%H:%M:%S.%fZ')
                     || ' is outside its hour folder ' || strftime(hour, '%Y-%m-%dT%HZ')
        END AS reason
        FROM z
    )
    SELECT file_idx::INTEGER AS file_idx, CASE WHEN reason IS NOT NULL THEN file END AS file,
           line::BIGINT AS line, reason,
           CASE WHEN reason IS NOT NULL THEN left(raw, {RAW_KEEP_CHARS}) END AS raw,
           event_id, event_type, user_id, ts AS occurred_at, value, attributes,
           hash(event_type, user_id, ts, value, attributes) AS content_hash
    FROM (SELECT *, coalesce(num, 1.0) AS value, CASE WHEN t_attr = 'OBJECT' THEN j_attr::VARCHAR END AS attributes
          FROM checked)
    WHERE CASE WHEN reason IS NULL THEN ts >= {lo} AND ts < {hi} ELSE hour >= {lo} AND hour < {hi} END
    """


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": threads} if threads else {})
    con.execute("SET TimeZone = 'UTC'")
    return con


def read_day(
    landing: Path, start: dt.datetime, end: dt.datetime, con: duckdb.DuckDBPyConnection | None = None
) -> DayRead:
    """Read every landed record of the local day [start, end) (UTC instants).

    A valid record belongs to the day its `occurred_at` falls in; a broken one to the day its
    hour folder starts in, so each record is counted by exactly one day.
    """
    files, skipped = list_files(landing, start, end)
    if not files:
        return DayRead(files, skipped, pl.DataFrame(schema=CLEAN_SCHEMA), pl.DataFrame(schema=QUARANTINE_SCHEMA))
    con = con or connect()
    catalog = pl.DataFrame(
        {
            "file_idx": list(range(len(files))),
            "file": [str(f.path) for f in files],
            "hour": [f.hour.replace(tzinfo=None) for f in files],
        },
        schema={"file_idx": pl.Int32, "file": pl.String, "hour": pl.Datetime("us")},
    )
    con.register("files", catalog.to_arrow())
    try:
        sources = " UNION ALL ".join(
            _parquet_sql(con, i, f) if f.fmt == "parquet" else _json_lines_sql(i, f) for i, f in enumerate(files)
        )
        table = con.sql(_checked_sql(sources, start.astimezone(dt.UTC), end.astimezone(dt.UTC))).to_arrow_table()
    except duckdb.Error as exc:
        raise LandingError(
            f"cannot read landing files for {start:%Y-%m-%d %H:%M}Z..{end:%Y-%m-%d %H:%M}Z: {exc}"
        ) from exc
    finally:
        con.unregister("files")
    rows = pl.from_arrow(table)
    assert isinstance(rows, pl.DataFrame)
    quarantine = rows.filter(pl.col("reason").is_not_null()).select(list(QUARANTINE_SCHEMA))
    events = (
        rows.filter(pl.col("reason").is_null())
        .select(list(CLEAN_SCHEMA))
        .with_columns(pl.col("occurred_at").dt.replace_time_zone("UTC"))
    )
    return DayRead(files, skipped, events.cast(CLEAN_SCHEMA), quarantine.cast(QUARANTINE_SCHEMA))  # type: ignore[arg-type]


class LandingError(RuntimeError):
    """The landing zone could not be read; the message names the day and DuckDB's reason."""
