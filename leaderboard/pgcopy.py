"""PostgreSQL's binary COPY format, built column by column with numpy.

With text COPY the server parses every value, and a timestamp's text alone is about half of
loading a 1M-row period (bench/publish.py: 2.2 s as CSV, 1.25 s as binary). Binary rows carry
each value as the server stores it, so the server only copies bytes.

Format (PostgreSQL docs, "COPY", binary format): a header, then per row a 16-bit field count
and per field a 32-bit length (-1 for NULL) and the value in network byte order, then -1.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, where timestamptz counts from
_WIDTH = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}
TYPES = (*_WIDTH, "text")
WINDOW_ROWS = 16_384


def encode(frame: pl.DataFrame, types: dict[str, str]) -> Iterator[bytes | memoryview]:
    """`frame`'s columns `types` (name -> int4, int8, float8, timestamptz or text), in that
    order, as a binary COPY payload in parts: the header, groups of rows, the trailer.

    Within a window of WINDOW_ROWS rows, rows are grouped by their shape (each text's byte
    length, which values are NULL): rows of one shape have the same size, so a group is an
    n x size byte matrix filled column slice by column slice, at memory speed. Rows move only
    within their window, so the table keeps (nearly) the frame's order, e.g. rank order.
    """
    for name, pg_type in types.items():
        _check(frame[name], pg_type)
    yield HEADER
    shape = [pl.col(n).str.len_bytes() if t == "text" else pl.col(n).is_null() for n, t in types.items()]
    keyed = frame.select(*types).with_columns(pl.struct(shape).alias("_shape"))
    for offset in range(0, frame.height, WINDOW_ROWS):
        window = keyed.slice(offset, WINDOW_ROWS)
        for group in window.partition_by("_shape", maintain_order=True, include_key=False):
            yield _rows(group, types)
    yield TRAILER


def _check(series: pl.Series, pg_type: str) -> None:
    """Refuse what binary COPY would store wrong without a word (text COPY made the server refuse it)."""
    name, dtype = series.name, series.dtype
    if pg_type not in TYPES:
        raise ValueError(f"column {name!r}: no binary COPY encoding for {pg_type!r}; one of {', '.join(TYPES)}")
    if pg_type == "text":
        if dtype != pl.String or series.null_count():
            raise ValueError(f"column {name!r} must be non-NULL text for {pg_type}, got {dtype} with NULLs or not")
    elif pg_type == "timestamptz":
        if not isinstance(dtype, pl.Datetime):
            raise ValueError(f"column {name!r} must be a datetime for {pg_type}, got {dtype}")
    elif pg_type == "float8":
        if not dtype.is_numeric():
            raise ValueError(f"column {name!r} must be numeric for {pg_type}, got {dtype}")
    else:
        info = np.iinfo(_WIDTH[pg_type])
        if not dtype.is_integer():
            raise ValueError(f"column {name!r} must be integers for {pg_type}, got {dtype}")
        low, high = series.min(), series.max()
        if low is not None and (low < info.min or high > info.max):  # type: ignore[operator]
            raise ValueError(f"column {name!r}: {low}..{high} does not fit {pg_type} ({info.min}..{info.max})")


def _rows(group: pl.DataFrame, types: dict[str, str]) -> memoryview:
    """Rows of one shape: the same field sizes in every row."""
    n = group.height
    fields: list[tuple[int, np.ndarray | None]] = []  # (value bytes or -1 for NULL, values as n x width)
    for name, pg_type in types.items():
        series = group[name]
        if pg_type == "text":
            data = series.cast(pl.Binary).rechunk().to_arrow()
            if str(data.type) != "large_binary":  # int64 offsets and one data buffer are read below
                raise TypeError(f"column {name!r}: polars exported {data.type}, expected large_binary")
            width = len(data[0].as_py())
            start = int(np.frombuffer(data.buffers()[1], np.int64, 1, data.offset * 8)[0])
            values = np.frombuffer(data.buffers()[2], np.uint8, n * width, start).reshape(n, width)
            fields.append((width, values))
        elif series.null_count():  # the whole group is NULL here
            fields.append((-1, None))
        else:
            dtype = np.dtype(_WIDTH[pg_type])
            if pg_type == "timestamptz":
                series = series.dt.epoch("us") - _PG_EPOCH_US
            fields.append((dtype.itemsize, series.to_numpy().astype(dtype).view(np.uint8).reshape(n, -1)))
    out = np.empty((n, 2 + sum(4 + max(width, 0) for width, _ in fields)), np.uint8)
    out[:, :2] = np.array([len(fields)], ">i2").view(np.uint8)
    at = 2
    for width, values in fields:
        out[:, at : at + 4] = np.array([width], ">i4").view(np.uint8)
        at += 4
        if values is not None:
            out[:, at : at + width] = values
            at += width
    return out.reshape(-1).data  # bytes, not rows: psycopg sizes its sends by len()
