"""The event contract: which landed record is an event, and why another is quarantined.

It is SQL (DuckDB) over the fields of any source in one shape (each field as JSON text, or
typed where a Parquet file holds it in the contract's own type), so JSON lines, cut lines
and Parquet files are held to the same rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import polars as pl

from leaderboard.boards import ValueRange

RAW_KEEP_CHARS = 2000

# Record fields in the order they are extracted.
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
    "value": ("n_value", "DOUBLE", "coalesce(to_json(n_int), to_json(n_value))"),
}
# An integer `value` comes as itself too, so that its text (in `raw`, in a reason) is the file's:
# 7, not 7.0, and exact past 2**53.
INT_VALUE = "n_int"
NO_NATIVE = ", ".join(f"NULL::{sql_type} AS {col}" for col, sql_type, _ in NATIVE.values())
NO_NATIVE += f", NULL::BIGINT AS {INT_VALUE}"
VALUE_TEXT = f"coalesce(j_value, {NATIVE['value'][2]}::VARCHAR)"  # the value as JSON text, from any source
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
    "seq": pl.Int64,  # place in DuckDB's scan: Kafka order within a file that has no line numbers
}
# The rows `checked_sql` gives: the clean events' columns (a clean events file as it stands)
STAGED_SCHEMA = {c: t for c, t in CLEAN_SCHEMA.items() if c not in ("content_hash", "seq")}
QUARANTINE_SCHEMA = {"file": pl.String, "line": pl.Int64, "reason": pl.String, "raw": pl.String}


def _kind(j: str) -> str:
    """JSON type from the first character of a minified JSON value (no parse). DuckDB's parser
    takes NaN and infinity in any case (`nan`, `-Inf`) and keeps their text: numbers too."""
    return f"""CASE WHEN {j} IS NULL THEN 'NULL' ELSE CASE left({j}, 1)
        WHEN '"' THEN 'VARCHAR' WHEN '{{' THEN 'OBJECT' WHEN '[' THEN 'ARRAY'
        WHEN 't' THEN 'BOOLEAN' WHEN 'f' THEN 'BOOLEAN'
        WHEN 'n' THEN CASE WHEN {j} = 'null' THEN 'NULL' ELSE 'DOUBLE' END
        ELSE CASE WHEN contains({j}, '.') OR contains(lower({j}), 'e') OR contains(lower({j}), 'n')
                  THEN 'DOUBLE' ELSE 'BIGINT' END END END"""


def _text(j: str) -> str:
    """The value of a JSON string, NULL for other types; only escapes need the JSON parser."""
    # substr by length (both count code points): much cheaper than slicing j[2:-2]
    unescaped = f"CASE WHEN contains({j}, '\\') THEN {j}::JSON ->> '$' ELSE substr({j}, 2, length({j}) - 2) END"
    return f"CASE WHEN starts_with({j}, '\"') THEN {unescaped} END"


def _is_number(j: str) -> str:
    return f"(left({j}, 1) BETWEEN '0' AND '9' OR left({j}, 1) IN ('-', 'N', 'I', 'n', 'i'))"


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
            WHEN num IS NOT NULL AND NOT isfinite(num) THEN 'value is not finite: ' || left({value_text}, 40)
            WHEN {t_attr} NOT IN ('NULL', 'OBJECT') THEN 'attributes is not an object'
            WHEN ts < hour OR ts >= hour + INTERVAL 1 HOUR
                THEN 'occurred_at ' || strftime(ts, {utc_text})
                     || ' is outside its hour folder ' || strftime(hour, '%Y-%m-%dT%HZ')
            {out_of_range}
            ELSE 'refused'
        END"""


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _out_of_range(ranges: Mapping[str, ValueRange]) -> str:
    """Whether a valid record's value (1 when absent) is outside its type's range: false for
    types without one."""
    if not ranges:
        return "false"
    whens = " ".join(
        f"WHEN {_sql_str(t)} THEN NOT (coalesce(num, 1.0) BETWEEN {r.low!r}::DOUBLE AND {r.high!r}::DOUBLE)"
        for t, r in sorted(ranges.items())
    )
    return f"coalesce(CASE event_type {whens} END, false)"


def _number(v: float) -> str:
    return str(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


def _outside(r: ValueRange) -> str:
    return f" outside [{_number(r.low)}, {_number(r.high)}] of board " + ", ".join(map(repr, r.boards))


def _range_reason(ranges: Mapping[str, ValueRange]) -> str:
    """`value out of range: <v> outside [min, max] of board 'x'` (the boards whose ranges meet)."""
    if not ranges:
        return ""
    texts = " ".join(f"WHEN {_sql_str(t)} THEN {_sql_str(_outside(r))}" for t, r in sorted(ranges.items()))
    value = f"coalesce(left({VALUE_TEXT}, 40), '1 (absent)')"
    return f"WHEN {_out_of_range(ranges)} THEN 'value out of range: ' || {value} || CASE event_type {texts} END"


def _reason(ranges: Mapping[str, ValueRange]) -> str:
    """The CASE naming the broken rule. Evaluated for refused rows only, so the kinds are
    expressions inside it, not columns computed for every row."""
    kinds = {f"t_{col[2:]}": f"({_kind(col)})" for col in COLUMNS}  # t_id for j_id, ...
    for col, sql_type, _ in NATIVE.values():  # a typed value's kind is its type
        key = f"t_{col[2:]}"
        kinds[key] = f"(CASE WHEN {col} IS NOT NULL THEN '{sql_type}' ELSE {kinds[key]} END)"
    return _REASONS.format(
        **kinds, naive_ts=NAIVE_TS, utc_text=UTC_TEXT, value_text=VALUE_TEXT, out_of_range=_range_reason(ranges)
    )


def checked_sql(
    sources: str, start: dt.datetime, end: dt.datetime, ranges: Mapping[str, ValueRange] | None = None
) -> str:
    """The event contract as SQL over `sources`: rows of file_idx, file, hour, line, raw,
    doc_problem, COLUMNS and the NATIVE columns (see `sources.py`), checked into the
    clean events' columns (STAGED_SCHEMA), so that a day whose records all pass is written once.

    Each row is one of: an event of the local day [start, end) (UTC instants); a refused
    record of the day (`refused`: no event_id, the broken rule in event_type, the record's
    text in attributes); or a row of another day (neither: a valid record by its time, a broken
    one by its hour folder). `ok` is one cheap conjunction that almost every record passes;
    the long CASE naming the broken rule, and the type names it needs, run only for the
    records that fail it. `ranges` are the boards' value ranges per event type
    (`boards.value_ranges`): a value outside its type's range is the last rule.
    """
    ranges = ranges or {}
    lo, hi = (f"TIMESTAMP '{t:%Y-%m-%d %H:%M:%S}'" for t in (start, end))
    struct = ", ".join(
        f'"{n}" := ' + (f"coalesce({c}::JSON, {NATIVE[n][2]})" if n in NATIVE else f"{c}::JSON")
        for n, c in zip(FIELDS, COLUMNS, strict=True)
    )
    no_value = "(n_value IS NULL AND (j_value IS NULL OR j_value = 'null'))"
    return f"""
    WITH src AS ({sources}),
    y AS (
        SELECT src.*,
            coalesce(n_id, {_text("j_id")}) AS event_id,
            coalesce(n_type, {_text("j_type")}) AS event_type,
            coalesce(n_user, {_text("j_user")}) AS user_id,
            {_text("j_at")} AS at_text,
            -- not lower(): it copies every row's text
            CASE WHEN {_is_number("j_at")} AND NOT contains(j_at, '.')
                      AND NOT contains(j_at, 'e') AND NOT contains(j_at, 'E')
                 THEN try_cast(j_at AS BIGINT) END AS at_ms,
            -- a number literal DOUBLE cannot hold (1e999) is out of range: not finite
            coalesce(n_value, CASE WHEN {_is_number("j_value")}
                                   THEN coalesce(try_cast(j_value AS DOUBLE), 'Infinity'::DOUBLE) END) AS num,
            CASE WHEN starts_with(j_attr, '{{') THEN j_attr END AS attributes
        FROM src
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
            AND (j_attr IS NULL OR j_attr = 'null' OR attributes IS NOT NULL)
            AND NOT {_out_of_range(ranges)}, false) AS ok
        FROM z
    )
    SELECT CASE WHEN keep THEN event_id END AS event_id,
           CASE WHEN keep THEN event_type WHEN in_day THEN {_reason(ranges)} END AS event_type,
           CASE WHEN keep THEN user_id END AS user_id,
           -- ts is naive UTC, so its microseconds are the instant: a cast would consult the time zone per row
           CASE WHEN keep THEN make_timestamptz(epoch_us(ts)) END AS occurred_at,
           CASE WHEN keep THEN coalesce(num, 1.0) END AS value,
           CASE WHEN keep THEN attributes
                WHEN in_day THEN left(coalesce(raw, to_json(struct_pack({struct}))::VARCHAR), {RAW_KEEP_CHARS})
           END AS attributes,
           file_idx::INTEGER AS file_idx, line::BIGINT AS line
    FROM (SELECT *, ok AND in_day AS keep
          FROM (SELECT *, CASE WHEN ok THEN ts >= {lo} AND ts < {hi} ELSE hour >= {lo} AND hour < {hi} END AS in_day
                FROM c))
    """


def valid() -> pl.Expr:
    """Whether a checked row (`checked_sql`) is an event of the day."""
    return pl.col("event_id").is_not_null()


def refused() -> pl.Expr:
    """Whether a checked row (`checked_sql`) is a refused record of the day."""
    return pl.col("event_id").is_null() & pl.col("event_type").is_not_null()


def content_hash() -> pl.Expr:
    """What a delivery holds, to tell a redelivery from a conflicting one (same id, other content)."""
    return pl.struct("event_type", "user_id", "occurred_at", "value", "attributes").hash()


def typed(frame: pl.LazyFrame) -> pl.LazyFrame:
    """The events among checked rows as CLEAN_SCHEMA: `content_hash` is worked out only where
    it is read (`dedupe` reads it for repeated ids alone)."""
    frame = frame.filter(valid()).with_columns(content_hash().alias("content_hash"))
    return frame.select(list(CLEAN_SCHEMA)).cast(CLEAN_SCHEMA)  # type: ignore[arg-type]
