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
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, where timestamptz counts from
_WIDTH = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "timestamptz": ">i8"}
TYPES = (*_WIDTH, "text")
WINDOW_ROWS = 16_384
KEY_BITS = 62  # a row shape packed into one Int64, while the lengths fit
# A window whose rows fall into more shapes than one per this many rows (texts of many lengths:
# names, metadata) is joined row by row by Arrow instead (`_joined`): a group costs about as
# much as this many rows, and a window of names can hold thousands of shapes.
MIN_GROUP_ROWS = 512


def encode(frame: pl.DataFrame, types: dict[str, str]) -> Iterator[bytes | memoryview]:
    """`frame`'s columns `types` (name -> int4, int8, float8, timestamptz or text), in that
    order, as a binary COPY payload in parts: the header, groups of rows, the trailer. Any
    column may hold NULLs (the table's NOT NULL constraints refuse them where they apply).

    Within a window of WINDOW_ROWS rows, rows are grouped by their shape (each text's byte
    length, which values are NULL): rows of one shape have the same size, so a group is an
    n x size byte matrix, filled with one template row (field count and lengths) and then
    column slice by column slice, at memory speed. Rows move only within their window, so the
    table keeps (nearly) the frame's order, e.g. rank order. A window of too many shapes is
    written in order, its rows joined field by field (`_joined`).
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
        if shape.n_unique() * MIN_GROUP_ROWS > window.height:
            yield _joined(window, types)
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
        if pg_type == "text":  # NULL 0, else the length + 1 (an empty text is not a NULL)
            longest = frame[name].str.len_bytes().max()
            field = (pl.col(name).str.len_bytes() + 1).fill_null(0)
            bits = (0 if longest is None else int(longest) + 1).bit_length()  # type: ignore[arg-type]
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
        if dtype != pl.String:
            raise ValueError(f"column {name!r} must be strings for {pg_type}, got {dtype}")
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
        if series.null_count():  # the whole group is NULL here
            template += np.array([-1], ">i4").tobytes()
            continue
        if pg_type == "text":
            offsets, data = _text_buffers(series)
            width = int(offsets[1] - offsets[0])
            values, dtype = np.frombuffer(data, np.uint8, n * width, int(offsets[0])).reshape(n, width), None
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


def _text_buffers(series: pl.Series) -> tuple[np.ndarray, memoryview | bytes]:
    """A text column's Arrow offsets (n + 1, int64; a NULL has length 0) and data buffer."""
    data = series.cast(pl.Binary).rechunk().to_arrow()
    if str(data.type) != "large_binary":  # int64 offsets and one data buffer are read below
        raise TypeError(f"column {series.name!r}: polars exported {data.type}, expected large_binary")
    buffers = data.buffers()
    offsets = np.frombuffer(buffers[1], np.int64, len(data) + 1, data.offset * 8)
    return offsets, (memoryview(buffers[2]) if buffers[2] is not None else b"")


def _joined(rows: pl.DataFrame, types: dict[str, str]) -> memoryview:
    """Rows of any shapes, in order: each field as a binary array of its length word and value
    (a NULL: the length -1 alone), joined row by row by Arrow's `binary_join_element_wise`, whose
    result's data buffer is the rows' bytes."""
    n = rows.height
    pieces: list[pa.Array | pa.Scalar] = [pa.scalar(np.array([len(types)], ">i2").tobytes(), pa.large_binary())]
    for name, pg_type in types.items():
        series = rows[name]
        if pg_type == "text":
            lengths = series.str.len_bytes().fill_null(0).to_numpy().astype(">i4")
            piece = pc.binary_join_element_wise(
                _binary(lengths.view(np.uint8).reshape(n, 4)), series.cast(pl.Binary).to_arrow(), _EMPTY
            )
        else:
            if pg_type == "timestamptz":
                series = series.dt.epoch("us") - _PG_EPOCH_US
            values = series.fill_null(0).to_numpy().astype(_WIDTH[pg_type])  # big-endian on the cast
            field = np.empty((n, 4 + values.itemsize), np.uint8)
            field[:, :4] = np.frombuffer(np.array([values.itemsize], ">i4").tobytes(), np.uint8)
            field[:, 4:] = values.view(np.uint8).reshape(n, values.itemsize)
            piece = _binary(field)
        if series.null_count():
            piece = pc.if_else(series.is_not_null().to_arrow(), piece, _NULL_FIELD)
        pieces.append(piece)
    joined = pc.binary_join_element_wise(*pieces, _EMPTY)
    offsets = np.frombuffer(joined.buffers()[1], np.int64, n + 1, joined.offset * 8)
    return memoryview(joined.buffers()[2])[int(offsets[0]) : int(offsets[-1])]


_EMPTY = pa.scalar(b"", pa.large_binary())
_NULL_FIELD = pa.scalar(np.array([-1], ">i4").tobytes(), pa.large_binary())


def _binary(matrix: np.ndarray) -> pa.Array:
    """An n x w byte matrix as n binary values of w bytes (no copy)."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int64)
    data = np.ascontiguousarray(matrix)
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
