"""A JSON-lines file's bytes cut into numbered lines, as DuckDB's NDJSON reader sees them.

DuckDB's reader gives one row per non-blank line but no line numbers, and a broken line
comes out as an empty row; a quarantined record needs its line's number and text. Every
reader of lines numbers them with `line_spans` alone, so the lines cut here and the rows of
DuckDB's reader cannot drift apart (tests hold it to DuckDB's count of rows).
"""

from __future__ import annotations

import codecs
import gzip
import zlib
from typing import NamedTuple

import numpy as np
import polars as pl
import pyarrow as pa

from leaderboard.landing.layout import LandedFile, LandingError

BLANK = b" \t\r\n\v\f"  # what DuckDB's reader skips as an empty line, and allows around a record
_BLANK_BYTES = np.frombuffer(BLANK, dtype=np.uint8)
LINES_SCHEMA = {"file_idx": pl.Int32, "line": pl.Int64, "raw": pl.String, "problem": pl.String}


class LineSpans(NamedTuple):
    """The non-blank lines of some bytes, in order."""

    number: np.ndarray  # from 1, as `data.split(b"\n")` counts lines, blank ones included
    start: np.ndarray  # byte offset of the line's first byte
    end: np.ndarray  # byte offset after its text: line end and trailing carriage returns excluded

    def pick(self, places: np.ndarray) -> LineSpans:
        """The lines at `places` (0-based places among the non-blank lines, ascending)."""
        return LineSpans(self.number[places], self.start[places], self.end[places])


def landed_bytes(f: LandedFile) -> bytes:
    """A JSON-lines file's bytes, without the byte order mark that DuckDB's reader skips."""
    try:
        data = f.path.read_bytes()
        data = gzip.decompress(data) if f.gzipped else data
    except (OSError, EOFError, zlib.error) as exc:  # zlib.error: a corrupt deflate stream (BadGzipFile is an OSError)
        raise LandingError(f"{f.path}: cannot read: {exc}") from exc
    return data.removeprefix(codecs.BOM_UTF8)


def line_spans(data: bytes) -> LineSpans:
    """Number, start and end of each non-blank line (one holding a byte not in BLANK)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buf)]))
    # Nearly every line starts with "{": only a line starting blank needs a closer look.
    keep = starts < ends
    keep[keep] = ~np.isin(buf[starts[keep]], _BLANK_BYTES)
    for i in np.flatnonzero((starts < ends) & ~keep):
        keep[i] = bool(data[starts[i] : ends[i]].strip(BLANK))
    numbers, starts, ends = np.flatnonzero(keep) + 1, starts[keep], ends[keep]
    # A non-blank line keeps a byte that is no carriage return, so `end - 1` stays in the line.
    cr = np.flatnonzero(buf[ends - 1] == ord("\r")) if len(ends) else ends
    while len(cr):
        ends[cr] -= 1
        cr = cr[buf[ends[cr] - 1] == ord("\r")]
    return LineSpans(numbers, starts, ends)


def cut_lines(file_idx: int, data: bytes, spans: LineSpans) -> pl.DataFrame:
    """The lines at `spans` as LINES_SCHEMA rows: number and text, and a problem for a line
    that is not UTF-8 (kept with replacement characters, so it is quarantined, not fatal).

    Cut without a Python loop over the lines: one Arrow array over `data` whose pieces are
    line, gap, line, ..., so every second piece is a line. Arrow's `take` copies the lines
    out, so the result does not keep the whole of `data` alive for a few picked lines.
    """
    n = len(spans.number)
    if n == 0:
        return pl.DataFrame(schema=LINES_SCHEMA)
    bounds = np.column_stack((spans.start, spans.end)).ravel().astype(np.int64)
    pieces = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * n - 1, [None, pa.py_buffer(bounds), pa.py_buffer(data)]
    )
    try:
        raw = pl.Series("raw", pieces.take(np.arange(0, 2 * n - 1, 2))).cast(pl.String)
        problem = pl.repeat(None, n, dtype=pl.String, eager=True).alias("problem")
    except pl.exceptions.PolarsError:  # not UTF-8 somewhere: line by line, to mark that line
        decoded = [_decoded(data[s:e]) for s, e in zip(spans.start, spans.end, strict=True)]
        raw = pl.Series("raw", [text for text, _ in decoded], pl.String)
        problem = pl.Series("problem", [why for _, why in decoded], pl.String)
    return pl.DataFrame(
        {"file_idx": np.full(n, file_idx, np.int32), "line": spans.number, "raw": raw, "problem": problem},
        schema=LINES_SCHEMA,
    )


def _decoded(line: bytes) -> tuple[str, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError:
        return line.decode("utf-8", "replace"), "invalid UTF-8"
