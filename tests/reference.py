"""An independent computation of standings over the landing files.

It shares no code with the pipeline: its own reading (DuckDB's JSON and Parquet readers),
validity filter and dedupe in SQL; user boards ranked in SQL; group boards, display names and
metadata in plain Python over the deduplicated events (`entries`), so the end-to-end tests
compare two implementations.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import duckdb

from leaderboard.boards import Board

_EVENTS = """
CREATE OR REPLACE TABLE ref_events AS
WITH j AS (
    SELECT filename, event_id, event_type, user_id, occurred_at, value, attributes
    FROM read_json('{root}/topics/*/*/*/*/*/*.json*', format='newline_delimited', ignore_errors=true,
                   filename=true, columns={{event_id: 'JSON', event_type: 'JSON', user_id: 'JSON',
                   occurred_at: 'JSON', value: 'JSON', attributes: 'JSON'}})
), jv AS (
    SELECT filename, event_id ->> '$' AS event_id, event_type ->> '$' AS event_type, user_id ->> '$' AS user_id,
           CASE WHEN json_type(occurred_at) = 'VARCHAR'
                     AND regexp_matches(occurred_at ->> '$', '(Z|[+-]\\d\\d:\\d\\d)$')
                THEN try_cast(occurred_at ->> '$' AS TIMESTAMPTZ)
                WHEN json_type(occurred_at) IN ('BIGINT', 'UBIGINT')
                THEN epoch_ms(occurred_at::BIGINT)::TIMESTAMPTZ END AS ts,
           CASE WHEN value IS NULL OR json_type(value) = 'NULL' THEN 1.0
                WHEN json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN value::DOUBLE END AS value,
           CASE WHEN json_type(attributes) = 'OBJECT' THEN attributes::VARCHAR END AS attributes
    FROM j
    WHERE json_type(event_id) = 'VARCHAR' AND json_type(event_type) = 'VARCHAR' AND json_type(user_id) = 'VARCHAR'
      AND length(user_id ->> '$') <= 64 AND (attributes IS NULL OR json_type(attributes) IN ('NULL', 'OBJECT'))
), p AS (
    SELECT filename, event_id, event_type, user_id, occurred_at::TIMESTAMPTZ AS ts, value::DOUBLE AS value,
           {parquet_attributes} AS attributes
    FROM {parquet_source}
), allv AS (
    SELECT * FROM jv WHERE ts IS NOT NULL AND value IS NOT NULL AND isfinite(value)
    UNION ALL SELECT * FROM p
), ordered AS (
    SELECT *, timezone('{tz}', ts)::DATE AS day,
           regexp_extract(filename, '([^/+]+)\\+(\\d+)\\+(\\d+)\\.', ['topic', 'part', 'off']) AS k
    FROM allv
)
SELECT * EXCLUDE (k), k.topic AS topic, k.part::INT AS part, k.off::BIGINT AS off FROM ordered
QUALIFY row_number() OVER (PARTITION BY day, event_id ORDER BY k.topic, k.part::INT, k.off::BIGINT) = 1
"""
GROUP_CHARS = NAME_CHARS = 64
METADATA_BYTES = 1024


@dataclass(frozen=True)
class Entry:
    rank: int
    score: float
    event_count: int
    reached_at: dt.datetime
    display_name: str | None
    metadata: dict | None


def _lookup(attributes: dict | None, path: str) -> object:
    """attributes.<path>, through objects only; None when absent."""
    found: object = attributes
    for part in path.split("."):
        if not isinstance(found, dict):
            return None
        found = found.get(part)
    return found


def _text(value: object, longest: int) -> str | None:
    return value if isinstance(value, str) and 1 <= len(value) <= longest else None


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Reference:
    def __init__(self, landing: Path, tz: str) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        parquet = list((landing / "topics").glob("*/*/*/*/*/*.parquet"))
        columns = [r[0] for r in self.con.sql(
            f"DESCRIBE SELECT * FROM read_parquet('{landing}/topics/*/*/*/*/*/*.parquet', union_by_name=true)"
        ).fetchall()] if parquet else []  # fmt: skip
        attributes = "to_json(attributes)::VARCHAR" if "attributes" in columns else "NULL::VARCHAR"
        source = f"read_parquet('{landing}/topics/*/*/*/*/*/*.parquet', filename=true, union_by_name=true)"
        if not parquet:  # only JSON files landed: no Parquet rows
            source = (
                "(SELECT NULL::VARCHAR AS filename, NULL::VARCHAR AS event_id, NULL::VARCHAR AS event_type, "
                "NULL::VARCHAR AS user_id, NULL::TIMESTAMPTZ AS occurred_at, NULL::DOUBLE AS value WHERE false)"
            )
        self.con.execute(_EVENTS.format(root=landing, tz=tz, parquet_attributes=attributes, parquet_source=source))

    def count(self) -> int:
        return self.con.sql("SELECT count(*) FROM ref_events").fetchall()[0][0]

    def ranking(self, board: Board, first: dt.date, last: dt.date) -> dict[str, tuple[int, float]]:
        """user (or group) -> (rank, score) over local days [first, last]."""
        return self._ranking(board, f"day BETWEEN DATE '{first}' AND DATE '{last}'", first, last)

    def window_ranking(self, board: Board, start: dt.datetime, end: dt.datetime) -> dict[str, tuple[int, float]]:
        """user -> (rank, score) over the events with start <= occurred_at < end (a season)."""
        assert not board.group_by
        return self._ranking(board, f"ts >= TIMESTAMPTZ '{start.isoformat()}' AND ts < TIMESTAMPTZ '{end.isoformat()}'")

    def _ranking(
        self, board: Board, where: str, first: dt.date | None = None, last: dt.date | None = None
    ) -> dict[str, tuple[int, float]]:
        if board.group_by or board.aggregate == "last":
            assert first is not None and last is not None
            return {k: (e.rank, e.score) for k, e in self.entries(board, first, last).items()}
        value = "1.0" if board.aggregate == "count" else "value"
        if board.aggregate in ("sum", "count"):
            agg = f"sum({value}) AS score, max(ts) AS reached_at"
        else:
            fn = board.aggregate
            agg = f"{fn}({value}) AS score, min(ts) FILTER (WHERE {value} = best) AS reached_at"
        types = ", ".join(f"'{t}'" for t in board.event_types)
        direction = "ASC" if board.order == "asc" else "DESC"
        having = f"WHERE score >= {board.min_score}" if board.min_score is not None else ""
        best = (
            f"{board.aggregate}({value}) OVER (PARTITION BY user_id)" if board.aggregate in ("max", "min") else "NULL"
        )
        rows = self.con.sql(f"""
            WITH e AS (SELECT *, {best} AS best FROM ref_events
                       WHERE event_type IN ({types}) AND {where}),
                 s AS (SELECT user_id, {agg} FROM e GROUP BY user_id)
            SELECT user_id, row_number() OVER (ORDER BY score {direction}, reached_at, user_id) AS rank, score
            FROM s {having}
        """).fetchall()
        return {u: (r, s) for u, r, s in rows}

    def _events(self, board: Board, first: dt.date, last: dt.date) -> list[tuple]:
        """The board's events over local days [first, last]: (user, value, ts, attributes, order)."""
        types = ", ".join(f"'{t}'" for t in board.event_types)
        return self.con.sql(f"""
            SELECT user_id, value, ts, attributes, topic, part, off, regexp_extract(filename, '[^/]+$'), event_id
            FROM ref_events WHERE event_type IN ({types}) AND day BETWEEN DATE '{first}' AND DATE '{last}'
        """).fetchall()

    def ungrouped(self, board: Board, day: dt.date) -> int:
        """Events of a group board's types on a day that name no group."""
        assert board.group_by is not None
        rows = self._events(board, day, day)
        return sum(1 for r in rows if _text(_lookup(json.loads(r[3] or "null"), board.group_by), GROUP_CHARS) is None)

    def entries(self, board: Board, first: dt.date, last: dt.date) -> dict[str, Entry]:
        """user (or group) -> entry over local days [first, last], by the ranking rules, in Python."""
        per: dict[str, list[tuple]] = {}
        for user, value, ts, text, topic, part, off, name, event_id in self._events(board, first, last):
            attributes = json.loads(text) if text else None
            key = _text(_lookup(attributes, board.group_by), GROUP_CHARS) if board.group_by else user
            if key is not None:
                per.setdefault(key, []).append((1.0 if board.aggregate == "count" else value, ts, attributes,
                                                (ts, topic, part, off, name, event_id)))  # fmt: skip
        scored = []
        for key, events in per.items():
            values = [e[0] for e in events]
            if board.aggregate in ("sum", "count"):
                score, reached = sum(values), max(e[1] for e in events)
            elif board.aggregate == "last":
                newest = max(events, key=lambda e: e[3])  # the order display names are chosen in
                score, reached = newest[0], newest[1]
            else:
                score = max(values) if board.aggregate == "max" else min(values)
                reached = min(e[1] for e in events if e[0] == score)
            latest = sorted(events, key=lambda e: e[3])  # oldest first
            name = None
            if not board.group_by:
                names = [_text(_lookup(e[2], "display_name"), NAME_CHARS) for e in latest]
                name = next((n for n in reversed(names) if n is not None), None)
            metadata = None
            if board.metadata:
                metadata, size = {}, 2
                for k in board.metadata:
                    found = [_lookup(e[2], k) for e in latest]
                    value = next((v for v in reversed(found) if v is not None), None)
                    if value is None:
                        continue
                    cost = len(f"{_json(k)}:{_json(value)}".encode()) + (1 if metadata else 0)
                    if size + cost <= METADATA_BYTES:
                        metadata[k], size = value, size + cost
            scored.append((key, score, len(events), reached, name, metadata))
        if board.min_score is not None:
            scored = [s for s in scored if s[1] >= board.min_score]
        sign = -1 if board.order == "desc" else 1
        scored.sort(key=lambda s: (sign * s[1], s[3], s[0].encode()))
        return {s[0]: Entry(i + 1, s[1], s[2], s[3], s[4], s[5]) for i, s in enumerate(scored)}
