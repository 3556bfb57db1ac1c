"""An independent computation of standings in DuckDB SQL over the landing files.

It shares no code with the pipeline: its own reading (DuckDB's JSON and Parquet readers),
validity filter, dedupe and ranking, so the end-to-end tests compare two implementations.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb

from leaderboard.boards import Board

_EVENTS = """
CREATE OR REPLACE TABLE ref_events AS
WITH j AS (
    SELECT filename, event_id, event_type, user_id, occurred_at, value
    FROM read_json('{root}/topics/*/*/*/*/*/*.json*', format='newline_delimited', ignore_errors=true,
                   filename=true, columns={{event_id: 'JSON', event_type: 'JSON', user_id: 'JSON',
                   occurred_at: 'JSON', value: 'JSON'}})
), jv AS (
    SELECT filename, event_id ->> '$' AS event_id, event_type ->> '$' AS event_type, user_id ->> '$' AS user_id,
           CASE WHEN json_type(occurred_at) = 'VARCHAR'
                     AND regexp_matches(occurred_at ->> '$', '(Z|[+-]\\d\\d:\\d\\d)$')
                THEN try_cast(occurred_at ->> '$' AS TIMESTAMPTZ)
                WHEN json_type(occurred_at) IN ('BIGINT', 'UBIGINT')
                THEN epoch_ms(occurred_at::BIGINT)::TIMESTAMPTZ END AS ts,
           CASE WHEN value IS NULL OR json_type(value) = 'NULL' THEN 1.0
                WHEN json_type(value) IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN value::DOUBLE END AS value
    FROM j
    WHERE json_type(event_id) = 'VARCHAR' AND json_type(event_type) = 'VARCHAR' AND json_type(user_id) = 'VARCHAR'
      AND length(user_id ->> '$') <= 64
), p AS (
    SELECT filename, event_id, event_type, user_id, occurred_at::TIMESTAMPTZ AS ts, value::DOUBLE AS value
    FROM read_parquet('{root}/topics/*/*/*/*/*/*.parquet', filename=true, union_by_name=true)
), allv AS (
    SELECT * FROM jv WHERE ts IS NOT NULL AND value IS NOT NULL AND isfinite(value)
    UNION ALL SELECT * FROM p
), ordered AS (
    SELECT *, timezone('{tz}', ts)::DATE AS day,
           regexp_extract(filename, '([^/+]+)\\+(\\d+)\\+(\\d+)\\.', ['topic', 'part', 'off']) AS k
    FROM allv
)
SELECT * EXCLUDE (k) FROM ordered
QUALIFY row_number() OVER (PARTITION BY day, event_id ORDER BY k.topic, k.part::INT, k.off::BIGINT) = 1
"""


class Reference:
    def __init__(self, landing: Path, tz: str) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(_EVENTS.format(root=landing, tz=tz))

    def count(self) -> int:
        return self.con.sql("SELECT count(*) FROM ref_events").fetchall()[0][0]

    def ranking(self, board: Board, first: dt.date, last: dt.date) -> dict[str, tuple[int, float]]:
        """user -> (rank, score) over local days [first, last]."""
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
                       WHERE event_type IN ({types}) AND day BETWEEN DATE '{first}' AND DATE '{last}'),
                 s AS (SELECT user_id, {agg} FROM e GROUP BY user_id)
            SELECT user_id, row_number() OVER (ORDER BY score {direction}, reached_at, user_id) AS rank, score
            FROM s {having}
        """).fetchall()
        return {u: (r, s) for u, r, s in rows}
