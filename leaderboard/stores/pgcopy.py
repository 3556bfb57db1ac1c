"""PostgreSQL's binary COPY format, built column by column with numpy.

With text COPY the server parses every value, and a timestamp's text alone is a large part of
loading a large period (README, Benchmarks: publish). Binary rows carry each value as the
server stores it, so the server only copies bytes.

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
KEY_BITS = 62  # a row shape packed into one Int64, while the lengths fit


def encode(frame: pl.DataFrame, types: dict[str, str]) -> Iterator[bytes | memoryview]:
    """`frame`'s columns `types` (name -> int4, int8, float8, timestamptz or text), in that
    order, as a binary COPY payload in parts: the header, groups of rows, the trailer.

    Within a window of WINDOW_ROWS rows, rows are grouped by their shape (each text's byte
    length, which values are NULL): rows of one shape have the same size, so a group is an
    n x size byte matrix, filled with one template row (field count and lengths) and then
    column slice by column slice, at memory speed. Rows move only within their window, so the
    table keeps (nearly) the frame's order, e.g. rank order.
    """
    for name, pg_type in types.items():
        _check(frame[name], pg_type)
    yield HEADER
    keyed = frame.select(*types).with_columns(_shape_key(frame, types).alias("_shape"))
    for offset in range(0, frame.height, WINDOW_ROWS):
        window = keyed.slice(offset, WINDOW_ROWS)
        shape = window["_shape"]
        if shape.dtype != pl.Struct and shape.min() == shape.max():  # the usual window: one shape
            yield _rows(window, types)
            continue
        for group in window.partition_by("_shape", maintain_order=True, include_key=False):
            yield _rows(group, types)
    yield TRAILER


def _shape_key(frame: pl.DataFrame, types: dict[str, str]) -> pl.Expr:
    """A row's shape (each text's byte length, which values are NULL) as one integer: the
    lengths and NULL flags packed into bit fields as wide as the frame needs. Hashing an
    integer is much cheaper than hashing a struct of them."""
    fields, parts, shift = [], [], 0
    for name, pg_type in types.items():
        if pg_type == "text":
            field, bits = pl.col(name).str.len_bytes(), int(frame[name].str.len_bytes().max() or 0).bit_length()
        else:
            field, bits = pl.col(name).is_null(), 1
        fields.append(field)
        parts.append(field.cast(pl.Int64) * (1 << shift))
        shift += bits
    if shift > KEY_BITS:  # lengths too long to pack: the struct of them is the key
        return pl.struct(fields)
    return pl.sum_horizontal(parts) if parts else pl.lit(0, pl.Int64)


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
    template = bytearray(np.array([len(types)], ">i2").tobytes())
    slots: list[tuple[int, np.ndarray, np.dtype | None]] = []  # (offset in the row, values, number type)
    for name, pg_type in types.items():
        series = group[name]
        if pg_type == "text":
            data = series.cast(pl.Binary).rechunk().to_arrow()
            if str(data.type) != "large_binary":  # int64 offsets and one data buffer are read below
                raise TypeError(f"column {name!r}: polars exported {data.type}, expected large_binary")
            width = len(data[0].as_py())
            start = int(np.frombuffer(data.buffers()[1], np.int64, 1, data.offset * 8)[0])
            values, dtype = np.frombuffer(data.buffers()[2], np.uint8, n * width, start).reshape(n, width), None
        elif series.null_count():  # the whole group is NULL here
            template += np.array([-1], ">i4").tobytes()
            continue
        else:
            dtype = np.dtype(_WIDTH[pg_type])
            width = dtype.itemsize
            if pg_type == "timestamptz":
                series = series.dt.epoch("us") - _PG_EPOCH_US
            values = series.to_numpy()
        template += np.array([width], ">i4").tobytes()
        slots.append((len(template), values, dtype))
        template += bytes(width)
    out = np.empty((n, len(template)), np.uint8)
    out[:] = np.frombuffer(template, np.uint8)
    for at, values, dtype in slots:
        if dtype is None:  # text: bytes as they are
            out[:, at : at + values.shape[1]] = values
        else:  # cast to big-endian while storing: no intermediate array
            out[:, at : at + dtype.itemsize].view(dtype)[:, 0] = values
    return out.reshape(-1).data  # bytes, not rows: psycopg sizes its sends by len()
