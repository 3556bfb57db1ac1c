"""Scores and standings as pure Polars functions (docs/contracts.md#ranking-rules).

Everything here takes and returns frames; the Dagster assets only move files around them.
A "scores" frame has one row per (board_id, user_id) with `score`, `event_count` and
`reached_at`, and what the entry shows beside them: the latest display name with the time it
was given (`named_at`), and the latest value of each metadata attribute with its time
(`metadata_values`). It is what `daily_scores` stores and what weekly, monthly and all-time roll
up. On a group board (`group_by`) `user_id` holds the group id.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import polars as pl
import pyarrow.parquet as pq

from leaderboard.boards import Board
from leaderboard.landing.contract import STAGED_SCHEMA

UTC_US = pl.Datetime("us", "UTC")
METADATA_ITEM = pl.Struct({"key": pl.String, "value": pl.String, "at": UTC_US})  # value: JSON text
SCORES_SCHEMA = {
    "board_id": pl.String,
    "user_id": pl.String,
    "score": pl.Float64,
    "event_count": pl.Int64,
    "reached_at": UTC_US,
    "display_name": pl.String,
    "named_at": UTC_US,
    "metadata_values": pl.List(METADATA_ITEM),
}
STANDINGS_SCHEMA = {
    **{c: SCORES_SCHEMA[c] for c in ("board_id", "user_id", "score", "event_count", "reached_at")},
    "rank": pl.Int64,
    "previous_rank": pl.Int64,
    "rank_change": pl.Int64,
    "display_name": pl.String,
    "metadata": pl.String,  # JSON object text, at most MAX_METADATA_BYTES
}
MAX_GROUP_CHARS = 64  # a group id is a string of 1-64 characters, like a user id
MAX_NAME_CHARS = 64
MAX_METADATA_BYTES = 1024
# Of two events, the later is the one last in this order: event time, then Kafka order of the
# files (`file_idx`), then event id. Not the line: it is known for some rows of a file only.
ORDER = ["occurred_at", "file_idx", "event_id"]
ATTRIBUTE = pl.Struct({"json": pl.String, "text": pl.String})
SCORING_MEMORY = "300MB"  # DuckDB's for a board's aggregation; past it, it spills (see score_events)


def attribute(path: str) -> pl.Expr:
    """`attributes.<path>` of each event: `json`, the value's JSON text (null when absent or
    JSON null), and `text`, the string when the value is a JSON string."""
    parts = tuple(path.split("."))
    return pl.col("attributes").map_batches(
        lambda s: _attribute_values(s, parts), return_dtype=ATTRIBUTE, is_elementwise=True
    )


def _attribute_values(attributes: pl.Series, parts: tuple[str, ...]) -> pl.Series:
    """Most `attributes` are flat objects without escapes, where the value is read from the text
    itself (a JSON path costs several times more); the others go through Polars' JSON path.

    Flat (one `{`, no `[`, no `\\`): no string holds a quote, so a key is the one quoted name
    followed by `:`, and a string value runs to the next quote.
    """
    key = f'"{parts[-1]}"'  # names are plain characters (boards.PATH_PART): no escapes in the text
    a = pl.col("a")
    flat = ~a.str.contains("\\", literal=True) & (a.str.count_matches("{", literal=True) == 1)
    flat = flat & ~a.str.contains("[", literal=True)
    once = (a.str.count_matches(key, literal=True) == 1) & a.str.contains(key + ":", literal=True)
    frame = pl.DataFrame({"a": attributes.cast(pl.String)}).with_columns(
        # a key may be spelled with escapes: such rows take the JSON path
        has=(a.str.contains(key, literal=True) | a.str.contains("\\", literal=True)).fill_null(False)
    )
    frame = frame.with_columns(fast=pl.col("has") & flat & once if len(parts) == 1 else pl.lit(False))
    raw = a.str.extract(re.escape(key) + r':\s*("[^"]*"|[^,}\s]+)', 1)
    frame = frame.with_columns(json=pl.when(pl.col("fast") & (raw != "null")).then(raw))
    frame = frame.with_columns(
        text=pl.when(pl.col("json").str.starts_with('"')).then(
            pl.col("json").str.strip_prefix('"').str.strip_suffix('"')
        )
    )
    slow = frame.get_column("has") & ~frame.get_column("fast")
    if not slow.any():
        return frame.select("json", "text").to_struct()
    plain_path = "$" + "".join(f"['{p}']" for p in parts)
    typed_path = "$" + "".join(f"['{p}']" for p in parts[:-1]) + f"[?(@['{parts[-1]}'] > '')]['{parts[-1]}']"
    plain, typed = a.str.json_path_match(plain_path), a.str.json_path_match(typed_path)
    # A non-empty string matches the typed path too; no other value is written as "" by the plain one.
    text = pl.when(plain.is_not_null()).then(
        pl.when(typed.is_not_null()).then(typed).when(plain == "").then(pl.lit(""))
    )
    encoded = pl.struct(text.alias("v")).struct.json_encode().str.strip_prefix('{"v":').str.strip_suffix("}")
    found = frame.filter(slow).select(json=pl.when(text.is_not_null()).then(encoded).otherwise(plain), text=text)
    idx = slow.arg_true()
    json_col, text_col = frame.get_column("json").clone(), frame.get_column("text").clone()
    json_col.scatter(idx, found.get_column("json"))
    text_col.scatter(idx, found.get_column("text"))
    return pl.DataFrame({"json": json_col, "text": text_col}).to_struct()


_duckdb = threading.local()  # a connection per thread: a connection serves one query at a time
FEW_ROWS = 10_000  # below it `_strings_at` reads the text in Polars


def _twice(column: str, name: str) -> str:
    """Whether the quoted name occurs twice in the text: a LIKE, which DuckDB runs as substring
    searches, where counting by `replace` or searching a slice copies every row's text. An `_`
    in the name matches any character: a rare "twice" too many, which only costs a closer read."""
    return f"""{column} LIKE '%"{name}"%"{name}"%'"""


def _string_sql(column: str, parts: tuple[str, ...], source: str = "rows") -> str:
    """A query of `source` with the JSON string at the path in a column of attributes objects,
    else null, as `_t`, and whether the key's name occurs more than once in the row, as `_r`.

    A flat object (one `{`) without escapes gives a non-empty string value written
    `"key":"..."` by a regular expression: no string there holds a quote, so that text is the
    key and its value. Other rows that name the key (or have escapes, as a key may be spelled
    with them) take one parse by DuckDB's JSON reader, not the many passes over the text of
    `_attribute_values`. `json_extract_string` gives a number or literal as its text too, so a
    value that reads like one (`3`, `true`, `[`...) is looked up again with its type. Both keep
    a repeated key's first value and the rules (like parsers that build maps) the last: `_r`
    tells the caller to read those rows otherwise."""
    # names are plain characters (boards.PATH_PART), quoted as one may hold '-'
    path = "'$." + ".".join(f'"{p}"' for p in parts) + "'"
    key = f"""'"{parts[-1]}"'"""
    typed = f"try(json_extract({column}, {path}))"
    flat = f"""NOT contains({column}, '\\') AND NOT ({column} LIKE '{{%{{%')"""
    quick = f"""regexp_extract({column}, '"{parts[-1]}":"([^"]*)"', 1)"""
    quick = f"CASE WHEN {flat} THEN {quick} END" if len(parts) == 1 else "NULL::VARCHAR"
    slow = f"""CASE WHEN NOT (regexp_matches(_s, '^[-0-9\\[{{]') OR _s IN ('true', 'false')) THEN _s
                    WHEN json_type({typed}) = 'VARCHAR' THEN {typed} ->> '$' END"""
    return f"""
        SELECT * EXCLUDE (_q, _s), CASE WHEN _q <> '' THEN _q ELSE {slow} END AS _t
        FROM (SELECT *, CASE WHEN coalesce(_q, '') = '' AND (contains({column}, {key}) OR contains({column}, '\\'))
                             THEN try(json_extract_string({column}, {path})) END AS _s
              FROM (SELECT *, {quick} AS _q, {_twice(column, parts[-1])} AS _r FROM {source}))"""


def _strings_at(attributes: pl.Series, parts: tuple[str, ...]) -> pl.Series:
    """The JSON string at the path in each attributes object, else null (`_string_sql`); rows
    where the key's name is repeated go through `_attribute_values`, as do few rows, where a
    thread's first DuckDB connection would cost more than the text (a live refresh's batch)."""
    if attributes.len() < FEW_ROWS:
        return _attribute_values(attributes, parts).struct.field("text")
    con = getattr(_duckdb, "con", None)
    if con is None:
        con = _duckdb.con = duckdb.connect(config={"threads": 1})  # Polars runs the batches side by side
    frame = pl.DataFrame({"a": attributes.cast(pl.String)})
    # as Arrow string views, which DuckDB reads without the copy a Polars frame costs
    con.register("rows", frame.to_arrow(compat_level=pl.CompatLevel.newest()))
    try:
        found = con.sql(_string_sql("a", parts)).pl()
    finally:
        con.unregister("rows")
    text, repeated = found["_t"], found["_r"].fill_null(False)
    if repeated.any():
        idx = repeated.arg_true()
        text = text.scatter(idx, _attribute_values(attributes.gather(idx), parts).struct.field("text"))
    return text


def attribute_string(path: str, longest: int) -> pl.Expr:
    """`attributes.<path>` when it is a string of 1 to `longest` characters, else null.

    One call of the reader: an expression naming `attribute(...)` twice reads the text twice
    (Polars does not share the work of a Python function between its uses)."""
    parts = tuple(path.split("."))

    def strings(attributes: pl.Series) -> pl.Series:
        text = _strings_at(attributes, parts)
        return (
            text.to_frame("t").select(pl.when(pl.col("t").str.len_chars().is_between(1, longest)).then("t")).to_series()
        )

    return pl.col("attributes").map_batches(strings, return_dtype=pl.String, is_elementwise=True)


def group_of(board: Board) -> pl.Expr:
    """The group an event counts for on a group board: a string of 1-64 characters, else null
    (the event is ungrouped: absent, null, a number, an object, empty or too long)."""
    assert board.group_by is not None
    return attribute_string(board.group_by, MAX_GROUP_CHARS)


def _combine(board: Board) -> list[pl.Expr]:
    """Aggregations that turn many daily score rows of one user into one, by the rules events
    are aggregated by (`_aggregate_sql`): sums add up and the last day's time is when the total
    was reached; an extreme keeps the earliest time it was hit; `last` the latest day's (days
    never share a time).
    """
    score, at = pl.col("score"), pl.col("reached_at")
    if board.aggregate in ("sum", "count"):
        return [score.sum(), pl.col("event_count").sum(), at.max()]
    if board.aggregate == "last":
        return [score.sort_by(["reached_at", "score"]).last(), pl.col("event_count").sum(), at.max()]
    best = score.max() if board.aggregate == "max" else score.min()
    # the time of the best score, earliest first: a sort the streaming engine runs per group
    earliest_best = at.sort_by([score, at], descending=[board.aggregate == "min", True]).last()
    return [best, pl.col("event_count").sum(), earliest_best]


@dataclass(frozen=True)
class _Latest:
    """An attribute whose latest value an entry carries: the display name, or a metadata key."""

    path: str
    column: str  # of the candidates, then of the value
    is_name: bool  # a name counts only as a string of 1-64 characters; metadata any non-null value

    @property
    def key(self) -> str:
        """The attribute's name as its object's key is written: quoted."""
        return f'"{self.path.split(".")[-1]}"'

    @property
    def unset(self) -> tuple[str, ...]:
        """How the key is written with no value: null, or for a name also empty."""
        return (f"{self.key}:null", f'{self.key}:""') if self.is_name else (f"{self.key}:null",)

    def value(self) -> pl.Expr:
        if self.is_name:
            return attribute_string(self.path, MAX_NAME_CHARS)
        return attribute(self.path).struct.field("json")


def _latest_of(board: Board) -> list[_Latest]:
    names = [] if board.group_by else [_Latest("display_name", "_name", True)]
    return names + [_Latest(key, f"_meta{i}", False) for i, key in enumerate(board.metadata)]


def _counted(events: pl.LazyFrame, board: Board) -> pl.LazyFrame:
    """The events a board counts, one row each, `user_id` the group id on a group board."""
    rows = events.filter(pl.col("event_type").is_in(list(board.event_types)))
    if board.group_by:
        rows = rows.with_columns(group_of(board).alias("user_id")).filter(pl.col("user_id").is_not_null())
    return rows.select(
        "user_id",
        (pl.lit(1.0) if board.aggregate == "count" else pl.col("value")).alias("score"),
        pl.lit(1, pl.Int64).alias("event_count"),
        pl.col("occurred_at").alias("reached_at"),
        "attributes",
        *ORDER,
    )


def _latest_valid(rows: pl.LazyFrame, latest: _Latest) -> pl.DataFrame:
    """Per user, the latest value of the attribute among `rows` (user_id, attributes, ORDER),
    streamed: a row per user is held, not the events."""
    value = pl.col("_value")
    return (
        rows.with_columns(latest.value().alias("_value"))
        .filter(value.is_not_null())
        .group_by("user_id")
        .agg(
            value.sort_by(ORDER).last().alias(latest.column),
            pl.col("occurred_at").sort_by(ORDER).last().alias(f"{latest.column}_at"),
        )
        .collect(engine="streaming")
    )


def _mentions(latest: _Latest) -> pl.Expr:
    """Whether an event's attributes may hold a value of the attribute (`_mentions_sql`)."""
    a, key = pl.col("attributes"), latest.key
    unset = pl.any_horizontal(a.str.contains(u, literal=True) for u in latest.unset)
    named = a.str.contains(key, literal=True) & (~unset | (a.str.count_matches(key, literal=True) > 1))
    return (a.str.contains("\\", literal=True) | named).fill_null(False)


def _mentions_sql(latest: _Latest) -> str:
    """Whether an event's attributes may hold a value of the attribute: substring tests, far
    cheaper than reading the value, true for every event that has one (and for a few that do
    not). Producers that write every key, null where unset, make `"key":null` the common case;
    a row naming the key more than once, or with escapes (a key may be spelled with them),
    may hold a value all the same."""
    key = _sql_text(latest.key)
    unset = " OR ".join(f"contains(attributes, {_sql_text(u)})" for u in latest.unset)
    again = _twice("attributes", latest.path.split(".")[-1])
    # CASE, as DuckDB evaluates each branch on its rows only, where OR and AND evaluate all
    return f"""CASE WHEN contains(attributes, '\\') THEN true WHEN NOT contains(attributes, {key}) THEN false
                    WHEN NOT ({unset}) THEN true ELSE {again} END"""


def _at_candidates(
    at_rows: pl.DataFrame, found: pl.DataFrame, column: str, among: pl.Expr | None = None
) -> pl.DataFrame:
    """Per user of `found`, the event of `at_rows` (as `_counted` gives them, numbered in
    `_row`) at its candidate's time and file (`<column>_at`, `<column>`), of those where
    `among` holds the one with the greatest id."""
    at = f"{column}_at"
    wanted = found.filter(pl.col(at).is_not_null()).select("user_id", at, pl.col(column).alias("file_idx"))
    rows = at_rows.lazy() if among is None else at_rows.lazy().filter(among)
    picked = (
        rows.join(wanted.lazy(), left_on=["user_id", "occurred_at", "file_idx"], right_on=["user_id", at, "file_idx"])
        .group_by("user_id")
        # the row of the greatest id: an arg_max, not a sort in each group
        .agg(pl.col("_row").get(pl.col("event_id").arg_max()))
        .collect()
    )
    # Gathered in the rows' own order: the text of rows gathered by group reads 2-3x slower.
    return at_rows.gather(picked.get_column("_row").sort())


def _values(rows: pl.DataFrame, latest: _Latest) -> pl.DataFrame:
    """The attribute's value in each of `rows` (a user's event each) that holds one, with its time."""
    value = latest.value().alias(latest.column)
    best = rows.lazy().with_columns(value).filter(pl.col(latest.column).is_not_null())
    return best.select("user_id", latest.column, pl.col("occurred_at").alias(f"{latest.column}_at")).collect()


def _resolve(rows: pl.LazyFrame, found: pl.DataFrame, at_candidates: pl.DataFrame, latest: _Latest) -> pl.DataFrame:
    """The latest value per user of `found`: usually the candidate's, the event among
    `at_candidates` at its time and file that mentions it (`_at_candidates`). Users whose
    candidate is no value (empty, null, another type, the name found in a nested object) are
    read again over all their events of `rows` (`_counted`) that mention it."""
    if found.get_column(f"{latest.column}_at").is_null().all():  # none of their events names it
        return pl.DataFrame(schema={"user_id": pl.String, latest.column: pl.String, f"{latest.column}_at": UTC_US})
    best = _values(_at_candidates(at_candidates, found, latest.column, _mentions(latest)), latest)
    unresolved = found.filter(pl.col(f"{latest.column}_at").is_not_null()).select("user_id")
    unresolved = unresolved.join(best, on="user_id", how="anti")
    if unresolved.is_empty():
        return best
    again = rows.filter(_mentions(latest)).join(unresolved.lazy(), on="user_id", how="semi")
    return pl.concat([best, _latest_valid(again, latest)])


def score_events(events: pl.LazyFrame | Path, boards: Iterable[Board], workdir: Path | None = None) -> pl.LazyFrame:
    """One day's clean events (a frame, or the Parquet file holding them) to that day's scores
    per board and user (`daily_scores`).

    A board at a time (side by side over a file of one row group: `_side_by_side`), by
    DuckDB's hash aggregation over the file (a frame is written to one first, in `workdir`,
    else the system's temporary folder): it reads only the columns it needs, holds a row per
    user, and spills to that folder past SCORING_MEMORY.

    A user's latest name and metadata values are most often those of its latest event, which
    the aggregate finds as one more max (`_from_latest_events`); only the users whose latest
    event lacks one are aggregated again, over their events that mention it (`_resolve`):
    testing every event for mentions cost about as much as the aggregate itself."""
    boards = list(boards)
    if not boards:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    with tempfile.TemporaryDirectory(prefix="scores-", dir=workdir) as tmp:
        if not isinstance(events, Path):
            events.sink_parquet(Path(tmp) / "events.parquet")
            events = Path(tmp) / "events.parquet"
        path, con = events, duckdb.connect(config={"memory_limit": SCORING_MEMORY, "temp_directory": tmp})

        def aggregated(board: Board, keys: list[_Key], users: pl.DataFrame | None = None) -> pl.DataFrame:
            with con.cursor() as cursor:  # a cursor per thread; the memory cap is the database's
                cursor.execute("SET TimeZone = 'UTC'")
                return _aggregated(path, board, keys, cursor, Path(tmp), users)

        def second_look(board: Board, pending: list[_Latest], unresolved: dict[str, pl.DataFrame]) -> pl.DataFrame:
            users = pl.concat([unresolved[x.column] for x in pending]).unique()
            return aggregated(board, [_Key(x.column, _mentions_sql(x)) for x in pending], users)

        try:
            latest = [_latest_of(b) for b in boards]
            with _side_by_side(path, con) as each:
                found = list(each(lambda b, x: aggregated(b, [_LAST] if x else []), boards, latest))
                at_last = _events_at(path, [(f, [_LAST.column]) for f, x in zip(found, latest, strict=True) if x])
                firsts = list(each(lambda b, f, x: _from_latest_events(b, f, x, at_last), boards, found, latest))
                pending = [
                    [x for x in xs if not u[x.column].is_empty()] for xs, (_, u) in zip(latest, firsts, strict=True)
                ]
                seconds = list(each(lambda b, p, f: second_look(b, p, f[1]) if p else None, boards, pending, firsts))
                at_second = _events_at(
                    path, [(f, [x.column for x in p]) for f, p in zip(seconds, pending, strict=True) if f is not None]
                )
                scored = list(each(lambda b, *a: _score_board(path, b, *a, at_second), boards, found, latest, firsts,
                                   seconds))  # fmt: skip
        finally:
            con.close()
    return pl.concat(scored).cast(SCORES_SCHEMA).lazy()  # type: ignore[arg-type]


@contextmanager
def _side_by_side(path: Path, con: duckdb.DuckDBPyConnection) -> Iterator[Callable[..., Iterator[Any]]]:
    """A `map` over the boards: one at a time, or as many at once as DuckDB has threads over a
    file of one row group (a live refresh's new events). DuckDB reads a Parquet file a row
    group per thread, so each query over such a file runs on one core; over a larger one they
    take every core, and side by side would only share them and DuckDB's memory cap."""
    if pq.read_metadata(path).num_row_groups > 1:
        yield map
        return
    threads = int(con.execute("SELECT current_setting('threads')").fetchall()[0][0])
    with ThreadPoolExecutor(threads) as pool:
        yield pool.map


# A candidate's (occurred_at, file_idx), the first two keys of ORDER, as one number whose max is
# the latest: microseconds since the epoch, offset to be positive, then the file's index (never
# null in clean events: every row comes from a file).
_BIAS, _FILE_BITS = 2**62, 32
_TIME_AND_FILE = f"((epoch_us(occurred_at) + {_BIAS})::HUGEINT << {_FILE_BITS}) + file_idx"


class _Key(NamedTuple):
    """A max of `_TIME_AND_FILE` per user, in `column`: the time and file of its latest event,
    among its events where the SQL test `mentions` holds (all of them when None)."""

    column: str
    mentions: str | None


_LAST = _Key("_last", None)


def _aggregate_sql(board: Board, keys: list[_Key], path: Path, read_group: bool, users: str | None) -> str:
    """Per user of the board's events in the Parquet file `path`, the board's aggregate (the
    rules of `_combine`) and, for each key, the time (`<column>_at`) and file (`<column>`) of
    its latest event (the one among those there with the greatest id is the candidate:
    `_at_candidates`). A max over one number is one cheap pass, where arg_max over a sort key
    of ORDER took three times as long and a sort per group in Polars several times that.

    `read_group`: `user_id` is the group id, read here from `attributes` (`_string_sql`); a row
    whose key is repeated is counted under '' (never a group), and `_aggregated` then reads
    the groups in Polars. `users`: a table of the only users (`user_id`) to aggregate, for
    their keys alone (the second look of `score_events`: their scores are known)."""
    if board.aggregate in ("sum", "count"):
        score, at = "sum(score)", "max(occurred_at)"
    elif board.aggregate == "last":
        key = ", ".join(f"{c}, 'ASC NULLS LAST'" for c in ORDER)
        score, at = f"arg_max(score, create_sort_key({key}))", "max(occurred_at)"
    else:  # the best score, and the earliest time it was hit
        best = "DESC" if board.aggregate == "max" else "ASC"
        first = f"create_sort_key(score, '{best} NULLS LAST', occurred_at, 'ASC NULLS LAST')"
        score, at = f"{board.aggregate}(score)", f"arg_min(occurred_at, {first})"
    candidates = "".join(
        f", max(_k){f' FILTER (WHERE {k.column}_mentioned)' if k.mentions else ''} AS {k.column}" for k in keys
    )
    decoded = "".join(
        f", make_timestamptz((({k.column} >> {_FILE_BITS}) - {_BIAS})::BIGINT) AS {k.column}_at"
        f", ({k.column} & {2**_FILE_BITS - 1})::INTEGER AS {k.column}"
        for k in keys
    )
    mentions = "".join(f", {k.mentions} AS {k.column}_mentioned" for k in keys if k.mentions)
    keyed = f", {_TIME_AND_FILE} AS _k" if keys else ""
    wanted = "event_type IN (" + ", ".join(_sql_text(t) for t in board.event_types) + ")"
    only = f"user_id IN (SELECT user_id FROM {users})" if users else ""
    if only and not read_group:  # before the mentions, which are tested on the rows that pass only
        wanted, only = f"{wanted} AND {only}", ""
    source = f"""(SELECT *, {"1" if board.aggregate == "count" else "value"}::DOUBLE AS score{mentions}{keyed}
                  FROM read_parquet({_sql_text(str(path))}) WHERE {wanted})"""
    if read_group:
        assert board.group_by is not None
        groups = _string_sql("attributes", tuple(board.group_by.split(".")), source)
        source = f"""(SELECT * REPLACE (CASE WHEN _r THEN '' ELSE _t END AS user_id) FROM ({groups})
                      WHERE _r OR length(_t) BETWEEN 1 AND {MAX_GROUP_CHARS})"""
    measures = "" if users else f", {score} AS score, count(*) AS event_count, {at} AS reached_at"
    aggregated = f"""SELECT user_id{measures}{candidates}
                     FROM {source}{f" WHERE {only}" if only else ""} GROUP BY user_id"""
    if not keys:
        return aggregated
    return f"SELECT user_id{', score, event_count, reached_at' if measures else ''}{decoded} FROM ({aggregated})"


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _aggregated(
    path: Path,
    board: Board,
    keys: list[_Key],
    con: duckdb.DuckDBPyConnection,
    tmp: Path,
    users: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """The board's aggregate and keys per user (`_aggregate_sql`), of `users` only if given.
    Where a group board's key is repeated in some row, the groups are read in Polars
    (`group_of`) into a file of their own, then aggregated like users (and from it again)."""
    if users is not None:
        con.register("_users", users.select("user_id").to_arrow())
    only = "_users" if users is not None else None
    grouped = tmp / f"groups-{board.id}.parquet"
    if grouped.exists():
        return con.sql(_aggregate_sql(board, keys, grouped, False, only)).pl()
    found = con.sql(_aggregate_sql(board, keys, path, board.group_by is not None, only)).pl()
    if not board.group_by or not (found["user_id"] == "").any():
        return found
    pl.scan_parquet(path).filter(pl.col("event_type").is_in(list(board.event_types))).with_columns(
        group_of(board).alias("user_id")
    ).filter(pl.col("user_id").is_not_null()).sink_parquet(grouped)
    return con.sql(_aggregate_sql(board, keys, grouped, False, only)).pl()


# The columns of clean events that `_counted` reads
_EVENT_COLUMNS = {c: t for c, t in STAGED_SCHEMA.items() if c != "line"}


def _events_at(path: Path, found: list[tuple[pl.DataFrame, list[str]]]) -> pl.LazyFrame:
    """The events at the time and in the file of any candidate (the columns named beside each
    frame of `_aggregate_sql`), in one read of the file: a few more than the candidates, where
    two share a time and file.

    The (time, file) pairs are tested as one integer each, a test on two columns that the
    Parquet reader makes before it decodes the others, for the rows that pass only: a join
    decodes every row's text. Times years apart may wrap that integer, which can only let in
    rows of other pairs, and `_at_candidates` joins on the pair itself."""
    wanted = (
        pl.concat(
            [pl.DataFrame(schema={"occurred_at": UTC_US, "file_idx": pl.Int32})]
            + [
                f.select(pl.col(f"{c}_at").alias("occurred_at"), pl.col(c).alias("file_idx"))
                for f, columns in found
                for c in columns
            ]
        )
        .unique()
        .drop_nulls()
    )
    if wanted.is_empty():  # no board keeps a name or metadata: nothing to read
        return pl.LazyFrame(schema=_EVENT_COLUMNS)
    at, file = pl.col("occurred_at").dt.epoch("us"), pl.col("file_idx").cast(pl.Int64)
    first, last_file = wanted.select(at.min(), file.max()).row(0)
    pair = (at - first) * (last_file + 1) + file
    wanted_pairs = wanted.select(pair).to_series()
    found_rows = pl.scan_parquet(path).select(list(_EVENT_COLUMNS)).filter(pair.is_in(wanted_pairs.implode()))
    return found_rows.collect().lazy()


def _from_latest_events(
    board: Board, found: pl.DataFrame, latest: list[_Latest], at_last: pl.LazyFrame
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """Per attribute (by column), the value of each user's latest event where it holds one
    (`user_id`, the value, its time: `_values`), and the users (`user_id`) whose latest event
    holds none; `found` has the key `_LAST`, `at_last` the events at its times (`_events_at`)."""
    if not latest:
        return {}, {}
    single = _at_candidates(_counted(at_last, board).collect().with_row_index("_row"), found, _LAST.column)
    # Only events that may hold a value are read: a board's events often name a key unset, or have no attributes.
    values = {x.column: _values(single.filter(_mentions(x)), x) for x in latest}
    return values, {c: found.select("user_id").join(v, on="user_id", how="anti") for c, v in values.items()}


def _score_board(
    path: Path,
    b: Board,
    found: pl.DataFrame,
    latest: list[_Latest],
    first: tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]],
    second: pl.DataFrame | None,
    at_second: pl.LazyFrame,
) -> pl.DataFrame:
    """A board's scores from its aggregate (`found`), the latest values its users' latest events
    hold (`first`), and for the attributes some lack, their candidates (`second`, of
    `_aggregated` over those users) and the events at their times (`at_second`)."""
    values, unresolved = dict(first[0]), first[1]
    pending = [x for x in latest if not unresolved[x.column].is_empty()]
    if pending:
        assert second is not None
        rows = _counted(pl.scan_parquet(path), b)
        at_rows = _counted(at_second, b).collect().with_row_index("_row")
        for x in pending:
            theirs = second.join(unresolved[x.column], on="user_id", how="semi")
            values[x.column] = pl.concat([values[x.column], _resolve(rows, theirs, at_rows, x)])
    frame = found.select("user_id", "score", "event_count", "reached_at").with_columns(
        pl.lit(b.id).alias("board_id"),
        pl.lit(None, pl.String).alias("display_name"),
        pl.lit(None, UTC_US).alias("named_at"),
    )
    items = []
    for x in latest:
        best = values[x.column]
        if x.is_name:
            best = best.rename({x.column: "display_name", f"{x.column}_at": "named_at"})
            frame = frame.drop("display_name", "named_at").join(best, on="user_id", how="left")
        else:
            frame = frame.join(best, on="user_id", how="left")
            items.append((x.path, x.column, f"{x.column}_at"))
    return _with_metadata_values(frame, items).select(list(SCORES_SCHEMA))


def _with_metadata_values(frame: pl.DataFrame, items: list[tuple[str, str, str]]) -> pl.DataFrame:
    """`metadata_values` of each user (one row each) from a value and a time column per key,
    `items` (key, value column, time column) in the board's order; keys without a value are
    left out. Built long and grouped: a list of structs made across columns (`concat_list`)
    took ten times as long."""
    dtype = SCORES_SCHEMA["metadata_values"]
    if not items:
        return frame.with_columns(pl.lit(None, dtype).alias("metadata_values"))
    long = pl.concat(
        frame.select("user_id", pl.lit(key).alias("key"), pl.col(value).alias("value"), pl.col(at).alias("at"))
        for key, value, at in items
    )
    lists = (
        long.filter(pl.col("value").is_not_null())
        .group_by("user_id", maintain_order=True)
        .agg(pl.struct("key", "value", "at").alias("metadata_values"))
    )
    return frame.join(lists, on="user_id", how="left", maintain_order="left").with_columns(
        pl.col("metadata_values").fill_null(pl.lit([], dtype))
    )


def merge_scores(old: pl.DataFrame, new: pl.DataFrame, boards: Iterable[Board]) -> pl.DataFrame | None:
    """One day's scores of two disjoint sets of its events combined: what `score_events` gives
    over both. None where that needs the events: a display name or metadata value given at the
    same time on both sides but differently (the events' order breaks such a tie)."""
    parts = []
    for b in boards:
        rows = pl.concat([old.filter(pl.col("board_id") == b.id), new.filter(pl.col("board_id") == b.id)])
        named = pl.col("named_at")
        latest_name = pl.col("display_name").filter(named == named.max())
        frame = rows.group_by("user_id").agg(
            *_combine(b), latest_name.first().alias("display_name"), named.max(), latest_name.n_unique().alias("_n")
        )
        if (frame["_n"].max() or 0) > 1:
            return None
        items = []
        if b.metadata:
            at = pl.col("at")
            latest = pl.col("value").filter(at == at.max())
            meta = (
                rows.select("user_id", "metadata_values")
                .explode("metadata_values")
                .unnest("metadata_values")
                .filter(pl.col("key").is_not_null() & pl.col("value").is_not_null())
                .group_by("user_id", "key")
                .agg(latest.first().alias("value"), at.max(), latest.n_unique().alias("_n"))
            )
            if (meta["_n"].max() or 0) > 1:
                return None
            for i, key in enumerate(b.metadata):
                found = meta.filter(pl.col("key") == key).select("user_id", pl.col("value").alias(f"_v{i}"),
                                                                 pl.col("at").alias(f"_a{i}"))  # fmt: skip
                frame = frame.join(found, on="user_id", how="left")
                items.append((key, f"_v{i}", f"_a{i}"))
        frame = _with_metadata_values(frame, items).with_columns(pl.lit(b.id).alias("board_id"))
        parts.append(frame.select(list(SCORES_SCHEMA)).cast(SCORES_SCHEMA))  # type: ignore[arg-type]
    return pl.concat(parts) if parts else pl.DataFrame(schema=SCORES_SCHEMA)


def _rolled_metadata(rows: pl.LazyFrame, board: Board) -> pl.LazyFrame:
    """Per user, the latest value of each of the board's metadata keys over the daily rows."""
    at = pl.col("at")
    return (
        rows.select("user_id", "metadata_values")
        .explode("metadata_values")
        .unnest("metadata_values")
        .filter(pl.col("key").is_in(list(board.metadata)) & pl.col("value").is_not_null())
        .group_by("user_id", "key")
        .agg(pl.col("value").filter(at == at.max()).max(), at.max())
        .group_by("user_id")
        .agg(pl.struct("key", "value", "at").alias("metadata_values"))
    )


def rollup_scores(scores: pl.LazyFrame, boards: Iterable[Board]) -> pl.LazyFrame:
    """Combine daily score rows per board and user: the scores by the board's aggregate, the
    display name and each metadata value by its latest time (days never share a time: each
    holds the events of its own local day; the greater value breaks a tie all the same)."""
    parts = []
    for b in boards:
        rows = scores.filter(pl.col("board_id") == b.id)
        named = pl.col("named_at")
        rolled = rows.group_by("board_id", "user_id").agg(
            *_combine(b), pl.col("display_name").filter(named == named.max()).max(), named.max()
        )
        if b.metadata:
            rolled = rolled.join(_rolled_metadata(rows, b), on="user_id", how="left")
        else:
            rolled = rolled.with_columns(pl.lit(None, SCORES_SCHEMA["metadata_values"]).alias("metadata_values"))
        parts.append(rolled.select(list(SCORES_SCHEMA)).cast(SCORES_SCHEMA))  # type: ignore[arg-type]
    if not parts:
        return pl.LazyFrame(schema=SCORES_SCHEMA)
    return pl.concat(parts)


def rank_scores(scores: pl.LazyFrame, boards: Iterable[Board]) -> pl.LazyFrame:
    """Rank 1..N per board: score in the board's order, then `reached_at`, then `user_id` bytewise."""
    parts = []
    for b in boards:
        board = scores.filter(pl.col("board_id") == b.id)
        if b.min_score is not None:
            board = board.filter(pl.col("score") >= b.min_score)
        parts.append(
            board.sort(["score", "reached_at", "user_id"], descending=[b.order == "desc", False, False]).with_row_index(
                "rank", offset=1
            )
        )
    if not parts:
        return pl.LazyFrame(schema={**SCORES_SCHEMA, "rank": pl.Int64})
    return pl.concat(parts).with_columns(pl.col("rank").cast(pl.Int64))


def with_metadata(ranked: pl.LazyFrame, board: Board) -> pl.LazyFrame:
    """`metadata`: a JSON object of the board's metadata keys that have a value, in the board's
    order, at most MAX_METADATA_BYTES (UTF-8): a key that would take it past the cap is left
    out and the next ones are tried. Null on a board without `metadata`."""
    if not board.metadata:
        return ranked.with_columns(pl.lit(None, pl.String).alias("metadata"))
    items = pl.col("metadata_values")
    frame = ranked.with_columns(pl.lit(2, pl.Int64).alias("_size"))  # "{}"
    for i, key in enumerate(board.metadata):
        value = items.list.eval(pl.element().filter(pl.element().struct.field("key") == key).struct.field("value"))
        fragment = pl.lit(json.dumps(key) + ":") + value.list.first()
        cost = fragment.str.len_bytes() + (pl.col("_size") > 2).cast(pl.Int64)  # and a comma after the first
        fits = fragment.is_not_null() & (pl.col("_size") + cost <= MAX_METADATA_BYTES)
        frame = frame.with_columns(pl.when(fits).then(fragment).alias(f"_f{i}")).with_columns(
            (pl.col("_size") + pl.when(pl.col(f"_f{i}").is_not_null()).then(cost).otherwise(0)).alias("_size")
        )
    fragments = pl.concat_str([pl.col(f"_f{i}") for i in range(len(board.metadata))], separator=",", ignore_nulls=True)
    return frame.with_columns(pl.format("{{{}}}", fragments).alias("metadata")).drop(
        "_size", *(f"_f{i}" for i in range(len(board.metadata)))
    )


def without_excluded(scores: pl.LazyFrame, excluded: pl.DataFrame | None) -> pl.LazyFrame:
    """Scores (or any frame with board_id and user_id) without the excluded subjects: `excluded`
    holds (board_id, user_id), board_id null for every board (docs/contracts.md#moderation)."""
    if excluded is None or excluded.is_empty():
        return scores
    every = excluded.filter(pl.col("board_id").is_null()).select("user_id").unique()
    some = excluded.filter(pl.col("board_id").is_not_null()).select("board_id", "user_id").unique()
    return scores.join(every.lazy(), on="user_id", how="anti").join(some.lazy(), on=["board_id", "user_id"], how="anti")


def standings(
    current: pl.LazyFrame,
    previous: pl.LazyFrame | None,
    boards: Iterable[Board],
    excluded: pl.DataFrame | None = None,
) -> pl.LazyFrame:
    """Ranked standings of a period with `previous_rank` from the period before and the change.

    `excluded` subjects (`without_excluded`) are dropped before ranking, from the period before
    too: the others' ranks close up, and their rank change compares like with like."""
    boards = list(boards)
    if not boards:
        return pl.LazyFrame(schema=STANDINGS_SCHEMA)
    current = without_excluded(current, excluded)
    previous = None if previous is None else without_excluded(previous, excluded)
    ranked = pl.concat([with_metadata(rank_scores(current, [b]), b) for b in boards])
    if previous is None:
        prev = pl.LazyFrame(schema={"board_id": pl.String, "user_id": pl.String, "previous_rank": pl.Int64})
    else:
        prev = rank_scores(previous, boards).select("board_id", "user_id", pl.col("rank").alias("previous_rank"))
    return (
        ranked.join(prev, on=["board_id", "user_id"], how="left", maintain_order="left")
        .with_columns((pl.col("previous_rank") - pl.col("rank")).alias("rank_change"))
        .select(list(STANDINGS_SCHEMA))
    )


def ungrouped_counts(events: pl.LazyFrame, boards: Iterable[Board]) -> dict[str, int]:
    """Per group board, the events of its types that name no group (not counted on it)."""
    grouped = [b for b in boards if b.group_by]
    plans = [
        events.filter(pl.col("event_type").is_in(list(b.event_types))).select(
            (pl.len() - group_of(b).is_not_null().sum()).alias("n")
        )
        for b in grouped
    ]
    return {b.id: int(found.item()) for b, found in zip(grouped, pl.collect_all(plans), strict=True)}


def ungrouped_of(scores: pl.DataFrame, by_type: dict[str, int], boards: Iterable[Board]) -> dict[str, int]:
    """`ungrouped_counts` from a day's scores and its count of events by type: a group board's
    scores count the events of its types that name a group, the others are ungrouped."""
    out = {}
    for b in boards:
        if b.group_by:
            grouped = scores.filter(pl.col("board_id") == b.id)["event_count"].sum()
            out[b.id] = sum(by_type.get(t, 0) for t in b.event_types) - int(grouped)
    return out
