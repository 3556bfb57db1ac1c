"""The landing reader under Hypothesis: whatever lands, a day is read whole or stops cleanly.

Each example lands one UTC day of files in its hour folders (JSON lines, gzip, Parquet; odd,
empty, hidden and foreign files among them) and reads it both ways `read_day` can (JSON rows
in scan order or not). An oracle written from docs/contracts.md (#landing-layout,
#event-record, #quarantine-reasons, #duplicates, #conservation), not from the reader's SQL,
says what each written line or row must become:

- a file the contract says stops the day (bad gzip, unreadable Parquet) raises a
  `LandingError` naming that file, and nothing else ever escapes the reader;
- every non-blank line and every Parquet row is read exactly once: as an event, or
  quarantined with its file, its line (the number of the line written) and the first rule it
  breaks; read = counted + duplicates + quarantined, and read is what was written;
- the first delivery of an event id in Kafka order is kept.

Budgets are fixed and derandomized so CI runs the same examples each time; the counts of
examples run are asserted and printed (`pytest -s`), and the README reports them.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import math
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leaderboard.landing import LandingError, dedupe, hour_folder, read, read_day
from leaderboard.landing.sources import FIRST_RECORD_BYTES, MAX_RECORD_BYTES

UTC = dt.UTC
DAY_START = dt.datetime(2026, 11, 26, tzinfo=UTC)
DAY_END = DAY_START + dt.timedelta(days=1)
BOM = b"\xef\xbb\xbf"
BLANKS = " \t\r\v\f"  # the blanks a line may hold and still be no record
FIELDS = ("event_id", "event_type", "user_id", "occurred_at", "value", "attributes")
MIN_MS, MAX_MS = -62_135_596_800_000, 253_402_300_799_999  # 0001-01-01T00:00Z .. 9999-12-31T23:59:59.999Z
RAW_CHARS = 2000
# Every reason the contract lists, as the start of the text (docs/contracts.md#quarantine-reasons).
REASONS = (
    "invalid UTF-8", "bad JSON", "not a JSON object", "missing event_id", "event_id is not a string: ",
    "event_id must be 1-128 characters", "missing event_type", "event_type is not a string: ",
    "event_type is empty", "missing user_id", "user_id is not a string: ", "user_id must be 1-64 characters, got ",
    "missing occurred_at", "occurred_at epoch milliseconds out of range: ",
    "occurred_at must be an RFC 3339 string or integer epoch milliseconds: ",
    "occurred_at has no UTC offset (ambiguous): ", "occurred_at is not an RFC 3339 timestamp: ",
    "value is not a number: ", "value is not finite: ", "attributes is not an object",
)  # fmt: skip
OUTSIDE = re.compile(
    r"occurred_at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z is outside its hour folder \d{4}-\d\d-\d\dT\d\dZ"
)
RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(?:[Zz]|([+-])(\d\d):(\d\d))", re.ASCII)
NAIVE = re.compile(r"\d{4}-\d\d-\d\d(?:[Tt ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?)?", re.ASCII)

FUZZ = settings(
    deadline=None,
    derandomize=True,  # the same examples on every run: CI reproducible
    database=None,  # no example database written into the checkout
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# --- the oracle ------------------------------------------------------------------------------


class Lit(NamedTuple):
    """A JSON number literal that `json.dumps` cannot write (or writes only one way)."""

    text: str
    finite: bool
    integer: bool = False


ABSENT = object()  # a field left out of the record
LITERALS = [
    Lit("NaN", False), Lit("nan", False), Lit("-NaN", False), Lit("Infinity", False), Lit("-Infinity", False),
    Lit("inf", False), Lit("-inf", False), Lit("1e999", False), Lit("-1E400", False), Lit("1E2", True),
    Lit("1e-400", True), Lit("-0", True, True), Lit("0.0", True), Lit("1" + "0" * 400, False, True),
]  # fmt: skip


def kind(v: object) -> str:
    """The JSON type a value is written as."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, Lit):
        return "integer" if v.integer else "number"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def finite(v: int | float | Lit) -> bool:
    if isinstance(v, Lit):
        return v.finite
    try:
        return math.isfinite(float(v))
    except OverflowError:  # an integer literal a double cannot hold
        return False


def number(v: int | float | Lit) -> float:
    return float(v.text) if isinstance(v, Lit) else float(v)


def parse_time(text: str) -> dt.datetime | None:
    """An RFC 3339 time as the contract reads it (fraction truncated to microseconds), or None."""
    m = RFC3339.fullmatch(text)
    if not m:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    offset = dt.timedelta(0)
    if m[8]:
        oh, om = int(m[9]), int(m[10])
        if oh > 23 or om > 59:
            return None
        offset = (1 if m[8] == "+" else -1) * dt.timedelta(hours=oh, minutes=om)
    try:
        local = dt.datetime(year, month, day, hour, minute, second, int((m[7] or ".0")[1:7].ljust(6, "0")))
    except ValueError:  # an impossible date, hour 24, minute or second 60 (a leap second)
        return None
    try:
        return (local - offset).replace(tzinfo=UTC)
    except OverflowError:
        return None


@dataclass(frozen=True)
class Verdict:
    """What one written record must become: an event (reason None) or a refusal."""

    reason: str | None
    exact: bool = False  # the reason is the whole text, not only its start
    event_id: str | None = None
    content: tuple[Any, ...] | None = None  # event_type, user_id, occurred_at, value


def judge(rec: dict[str, object], hour: dt.datetime, typed_at: bool = False) -> Verdict:
    """The first rule `rec` breaks in its hour folder, in the contract's order; ABSENT or None
    is a missing field. `typed_at`: occurred_at is a Parquet time with a zone (a datetime)."""
    get = lambda name: None if rec.get(name, ABSENT) is ABSENT else rec[name]  # noqa: E731
    eid, etype, user, at, value, attrs = (get(name) for name in FIELDS)
    if eid is None:
        return Verdict("missing event_id", True)
    if kind(eid) != "string":
        return Verdict("event_id is not a string: ")
    if not 1 <= len(eid) <= 128:  # type: ignore[arg-type]
        return Verdict("event_id must be 1-128 characters", True)
    if etype is None:
        return Verdict("missing event_type", True)
    if kind(etype) != "string":
        return Verdict("event_type is not a string: ")
    if etype == "":
        return Verdict("event_type is empty", True)
    if user is None:
        return Verdict("missing user_id", True)
    if kind(user) != "string":
        return Verdict("user_id is not a string: ")
    if not 1 <= len(user) <= 64:  # type: ignore[arg-type]
        return Verdict(f"user_id must be 1-64 characters, got {len(user)}", True)  # type: ignore[arg-type]
    if at is None:
        return Verdict("missing occurred_at", True)
    if typed_at:
        ts: dt.datetime | None = at  # type: ignore[assignment]
    elif kind(at) == "integer":
        ms = int(at.text) if isinstance(at, Lit) else at
        if not MIN_MS <= ms <= MAX_MS:  # type: ignore[operator]
            return Verdict("occurred_at epoch milliseconds out of range: ")
        ts = dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(milliseconds=ms)  # type: ignore[arg-type]
    elif kind(at) != "string":
        return Verdict("occurred_at must be an RFC 3339 string or integer epoch milliseconds: ")
    else:
        ts = parse_time(at)  # type: ignore[arg-type]
        if ts is None:
            naive = NAIVE.fullmatch(at)  # type: ignore[arg-type]
            return Verdict(
                f"occurred_at {'has no UTC offset (ambiguous)' if naive else 'is not an RFC 3339 timestamp'}: "
            )
    if value is not None and kind(value) not in ("integer", "number"):
        return Verdict("value is not a number: ")
    if value is not None and not finite(value):  # type: ignore[arg-type]
        return Verdict("value is not finite: ")
    if attrs is not None and kind(attrs) != "object":
        return Verdict("attributes is not an object", True)
    assert ts is not None
    if not hour <= ts < hour + dt.timedelta(hours=1):
        text = f"{ts.year:04d}-{ts:%m-%dT%H:%M:%S.%f}Z"
        return Verdict(f"occurred_at {text} is outside its hour folder {hour:%Y-%m-%dT%HZ}", True)
    content = (etype, user, ts, 1.0 if value is None else number(value))  # type: ignore[arg-type]
    return Verdict(None, event_id=eid, content=content)  # type: ignore[arg-type]


def dumps(v: object, ascii_only: bool) -> str:
    if isinstance(v, Lit):
        return v.text
    return json.dumps(v, ensure_ascii=ascii_only)


# --- strategies ------------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # no lone surrogates: not UTF-8
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts | st.sampled_from(LITERALS),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
# Lengths around the bounds, in characters that take more than one byte each.
sized = st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129]).flatmap(
    lambda n: st.sampled_from(["x", "é", "👍", "\x00"]).map(lambda c: c * n)
)
ids = st.sampled_from(["a", "b", "c", "d", "e"]) | texts | sized
absent = st.just(ABSENT)


@st.composite
def times(draw: st.DrawFn, hour: dt.datetime) -> object:
    """occurred_at as written: a time in or near the hour folder in any accepted form, or one
    of the near misses the contract refuses."""
    near = draw(st.booleans())
    micros = draw(st.integers(-7_200_000_000, 10_800_000_000) if near else st.integers(0, 3_599_999_999))
    instant = hour + dt.timedelta(microseconds=micros)
    form = draw(st.sampled_from(["text", "text", "ms", "naive", "leap", "impossible", "other"]))
    if form == "ms":
        return int((instant - dt.datetime(1970, 1, 1, tzinfo=UTC)) / dt.timedelta(milliseconds=1))
    offset = dt.timedelta(minutes=draw(st.integers(-23 * 60 - 59, 23 * 60 + 59)))
    local = instant + offset
    digits = draw(st.integers(0, 9))
    fraction = f"{local.microsecond:06d}"[:digits] + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=max(0, digits - 6), max_size=max(0, digits - 6))))  # fmt: skip
    sep = draw(st.sampled_from("Tt "))
    sign, off = ("-", -offset) if offset < dt.timedelta(0) else ("+", offset)
    zone = draw(st.sampled_from(["Z", "z"])) if not offset and draw(st.booleans()) else f"{sign}{off.seconds // 3600:02d}:{off.seconds // 60 % 60:02d}"  # fmt: skip
    text = f"{local.year:04d}-{local:%m-%d}{sep}{local:%H:%M:%S}" + (f".{fraction}" if digits else "")
    if form == "naive":
        return draw(st.sampled_from([text, text[:10], text[:16]]))
    if form == "leap":
        return f"{text[:17]}60{text[19:]}{zone}"
    if form == "impossible":
        return draw(
            st.sampled_from([f"2026-02-30{text[10:]}{zone}", f"{text[:11]}24{text[13:]}{zone}", f"{text}+24:00"])
        )
    if form == "other":
        return draw(json_values)
    return text + zone


@st.composite
def records(draw: st.DrawFn, hour: dt.datetime) -> dict[str, object]:
    """A record as a dict of its fields (ABSENT: left out), valid more often than not."""
    rec: dict[str, object] = {
        "event_id": draw(ids | json_values | absent),
        "event_type": draw(st.sampled_from(["score.earned", "", "lap"]) | json_values | absent),
        "user_id": draw(st.sampled_from(["u1", "u2", "ü"]) | texts | sized | json_values | absent),
        "occurred_at": draw(times(hour) | absent),
        "value": draw(st.integers() | st.floats() | st.sampled_from(LITERALS) | json_values | absent),
        "attributes": draw(st.dictionaries(texts, json_values, max_size=2) | json_values | absent),
    }
    if draw(st.integers(0, 3)):  # mostly a valid record, so events and duplicates are common
        rec.update(event_id=draw(ids.filter(lambda s: 1 <= len(s) <= 128)), event_type="score.earned",
                   user_id=draw(st.sampled_from(["u1", "u2", "ü"])), attributes=ABSENT)  # fmt: skip
        rec["occurred_at"] = draw(times(hour).filter(lambda t: isinstance(t, str | int) and not isinstance(t, bool)))
        if draw(st.booleans()):
            rec["value"] = draw(st.integers(-1000, 1000) | absent)
    return rec


class Line(NamedTuple):
    data: bytes  # without the line end
    verdict: Verdict | None  # None: blank, or bytes with no verdict of their own (counted only)
    blank: bool = False


@st.composite
def lines(draw: st.DrawFn, hour: dt.datetime) -> Line:
    choice = draw(st.integers(0, 9))
    if choice <= 4:  # a record, blanks around it, fields in any order, unknown ones among them
        rec = draw(records(hour))
        extra = draw(st.dictionaries(texts.filter(lambda k: k not in FIELDS), json_values, max_size=2))
        items = [(k, v) for k, v in rec.items() if v is not ABSENT] + list(extra.items())
        items = draw(st.permutations(items))
        ascii_only, sep = draw(st.booleans()), draw(st.sampled_from([",", ", "]))
        pad = ""
        if draw(st.integers(0, 19)) == 0:  # a long line, well below the cap (MAX_RECORD_BYTES)
            pad = "p" * draw(st.integers(10_000, 2_000_000))
            items.append(("padding", pad))
        body = (
            "{" + sep.join(f"{json.dumps(k, ensure_ascii=ascii_only)}:{dumps(v, ascii_only)}" for k, v in items) + "}"
        )
        text = draw(st.text(BLANKS, max_size=2)) + body + draw(st.text(BLANKS, max_size=2))
        return Line(text.encode(), judge(rec, hour))
    if choice == 5:  # no record: blank to the contract, or a long blank run
        blank = draw(st.text(BLANKS, max_size=4) | st.integers(1000, 300_000).map(lambda n: " " * n))
        return Line(blank.encode(), None, blank=True)
    if choice == 6:  # looks blank, is not: a record, and bad JSON
        text = draw(st.sampled_from(["\u00a0", "\ufeff", "\x85", "\u2028", "\x00", "\x1c", "\u3000"]))
        return Line((text + draw(st.text(BLANKS, max_size=2))).encode(), Verdict("bad JSON", True))
    if choice == 7:  # JSON that is no object
        v = draw(json_values.filter(lambda v: not isinstance(v, dict)))
        return Line(dumps(v, True).encode(), Verdict("not a JSON object", True))
    if choice == 8:  # not UTF-8
        good = json.dumps({"event_id": "x", "event_type": "s", "user_id": "u", "occurred_at": "2026-11-26T00:00:00Z"})
        cut = draw(st.integers(0, len(good)))
        bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
        return Line(good[:cut].encode() + bad + good[cut:].encode(), Verdict("invalid UTF-8", True))
    # arbitrary bytes, or a record cut, spliced or with a key twice: counted, any known reason
    rec = draw(records(hour))
    text = "{" + ",".join(f"{json.dumps(k)}:{dumps(v, True)}" for k, v in rec.items() if v is not ABSENT) + "}"
    data = draw(
        st.binary(min_size=1, max_size=40)
        | st.integers(0, len(text)).map(lambda n: text[:n].encode())
        | st.tuples(st.integers(0, len(text)), st.binary(min_size=1, max_size=3)).map(lambda t: text[: t[0]].encode() + t[1] + text[t[0] :].encode())
        | st.just(text[:-1] + ',"event_id":"dup"}' if len(text) > 2 else "{}").map(str.encode)
    )  # fmt: skip
    return Line(data, None)


@dataclass
class Landed:
    """One landing file as written: where, its bytes, and the verdict of each record in it."""

    topic: str
    hour: dt.datetime
    partition: int
    offset: int
    ext: str
    data: bytes
    records: dict[int, Verdict | None] = field(default_factory=dict)  # line or row number -> verdict
    raws: dict[int, str] = field(default_factory=dict)  # line number -> text of a JSON line
    fatal: bool = False

    @property
    def name(self) -> str:
        return f"{self.topic}+{self.partition}+{self.offset}.{self.ext}"

    def path(self, landing: Path) -> Path:
        return hour_folder(landing, self.topic, self.hour) / self.name


def reference_lines(data: bytes) -> dict[int, str]:
    """Non-blank lines as the contract numbers them: every line from 1, a byte order mark
    opening the file and trailing carriage returns not part of them."""
    data = data.removeprefix(BOM)
    return {
        n: line.rstrip(b"\r").decode("utf-8", "replace")
        for n, line in enumerate(data.split(b"\n"), start=1)
        if line.strip(BLANKS.encode() + b"\n")
    }


@st.composite
def json_file(draw: st.DrawFn, topic: str, hour: dt.datetime, partition: int, offset: int) -> Landed:
    written = draw(st.lists(lines(hour), max_size=10))
    ends = draw(st.lists(st.sampled_from([b"\n", b"\r\n", b"\r\r\n"]), min_size=len(written), max_size=len(written)))
    data, verdicts, number = bytearray(BOM if draw(st.booleans()) else b""), {}, 1
    for line, end in zip(written, ends, strict=True):
        if not line.blank and line.verdict is not None:
            verdicts[number] = line.verdict
        data += line.data + end
        number += line.data.count(b"\n") + 1
    if written and draw(st.booleans()):  # no line end after the last line
        data = data[: -len(ends[-1])]
    raws = reference_lines(bytes(data))
    records = {n: verdicts.get(n) for n in raws}
    ext = draw(st.sampled_from(["json", "json", "json.gz"]))
    body = bytes(data)
    if ext == "json.gz":
        cut = draw(st.integers(0, len(body)))
        # sometimes two gzip members (valid gzip, as `cat a.gz b.gz` makes), split anywhere
        body = gzip.compress(body) if draw(st.booleans()) else gzip.compress(body[:cut]) + gzip.compress(body[cut:])
    return Landed(topic, hour, partition, offset, ext, body, records, raws)


# Parquet column kinds: the Arrow type and its cells (as Python values: their JSON form).
COLUMN_KINDS: dict[str, tuple[pa.DataType, Callable[[dt.datetime], st.SearchStrategy[Any]]]] = {
    "string": (pa.string(), lambda h: ids | texts | times(h).filter(lambda t: isinstance(t, str))),
    "int64": (pa.int64(), lambda h: st.integers(-(2**63), 2**63 - 1) | times(h).filter(lambda t: type(t) is int)),
    "float64": (pa.float64(), lambda h: st.floats()),
    "bool": (pa.bool_(), lambda h: st.booleans()),
    "list": (pa.list_(pa.int64()), lambda h: st.lists(st.integers(-5, 5), max_size=2)),
    "struct": (pa.struct([("k", pa.int64())]), lambda h: st.builds(dict, k=st.integers(-5, 5) | st.none())),
    "null": (pa.null(), lambda h: st.nothing()),
}
ZONES = ["UTC", "+05:30", "-08:00", "America/New_York"]


class Column(NamedTuple):
    name: str
    kind: str  # a key of COLUMN_KINDS, or "time" (zoned), "naive", "date"
    nulls: bool
    unit: str = "us"
    zone: str = "UTC"


EXTRA_COLUMNS = ["extra", "file_index", "File_Index", "file_row_number", "FILE_ROW_NUMBER", "filename", "ordinality",
                 "EVENT_ID", "Value"]  # fmt: skip


@st.composite
def parquet_layouts(draw: st.DrawFn) -> list[Column]:
    """The columns of a Parquet file: any of the six fields (or none), each of a right or wrong
    type, with nulls or not, and extra columns (names DuckDB's reader might take for its own
    among them), in any order."""
    columns = []
    for name in FIELDS:
        choice = draw(st.sampled_from([*COLUMN_KINDS, "absent", "right", "right", "right", "time", "naive", "date"]))
        if choice == "absent":
            continue
        if choice == "right":
            choice = {"event_id": "string", "event_type": "string", "user_id": "string", "occurred_at": "time",
                      "value": "float64", "attributes": "struct"}[name]  # fmt: skip
        if name != "occurred_at" and choice in ("time", "naive", "date"):
            choice = "string"
        unit, zone = draw(st.sampled_from(["s", "ms", "us", "ns"])), draw(st.sampled_from(ZONES))
        columns.append(Column(name, choice, draw(st.booleans()), unit, zone))
    for extra in draw(st.lists(st.sampled_from(EXTRA_COLUMNS), unique=True, max_size=2)):
        columns.append(Column(extra, draw(st.sampled_from(["int64", "string", "null"])), True))
    return draw(st.permutations(columns))


@st.composite
def parquet_file(
    draw: st.DrawFn, topic: str, hour: dt.datetime, partition: int, offset: int, layout: list[Column]
) -> Landed:
    """A Parquet file of `layout` with a few rows (none when it has no column)."""
    n = draw(st.integers(0, 6)) if layout else 0
    columns: dict[str, pa.Array] = {}
    cells: dict[str, list[Any]] = {}
    typed_at = False
    for c in layout:
        nulls = st.none() if c.nulls else st.nothing()
        if c.kind in ("time", "naive", "date"):
            step = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}[c.unit]
            nanos = st.integers(-7_200_000_000_000, 10_800_000_000_000).map(lambda x, s=step: x // s * s)
            raw = draw(st.lists(nulls | nanos, min_size=n, max_size=n))
            epoch = [None if x is None else int(hour.timestamp() * 1e9) + x for x in raw]
            if c.kind == "time":
                columns[c.name] = pa.array(
                    [None if x is None else x // step for x in epoch], pa.timestamp(c.unit, c.zone)
                )
                cells[c.name] = [None if x is None else dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=x // 1000) for x in epoch]  # fmt: skip
                typed_at = True
            elif c.kind == "naive":
                columns[c.name] = pa.array([None if x is None else x // step for x in epoch], pa.timestamp(c.unit))
                cells[c.name] = [None if x is None else "naive" for x in epoch]
            else:
                days = [None if x is None else x // 86_400_000_000_000 for x in epoch]
                columns[c.name] = pa.array(days, pa.date32())
                cells[c.name] = [None if d is None else "naive" for d in days]
            continue
        arrow_type, values = COLUMN_KINDS[c.kind]
        cells[c.name] = draw(st.lists(nulls | values(hour) if c.kind != "null" else st.none(), min_size=n, max_size=n))
        columns[c.name] = pa.array(cells[c.name], arrow_type)
    table = pa.table(columns) if columns else pa.table({"extra": pa.array([], pa.int64())})
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=draw(st.integers(1, 6)))
    records: dict[int, Verdict | None] = {}
    for row in range(n):
        rec: dict[str, object] = {name: cells[name][row] for name in FIELDS if name in cells}
        at = rec.get("occurred_at")
        if at == "naive":  # refused as such once the fields before it pass: judged as naive text
            records[row + 1] = judge({**rec, "occurred_at": "2026-01-01T00:00:00"}, hour)
            continue
        records[row + 1] = judge(rec, hour, typed_at=typed_at and at is not None)
    ext = draw(st.sampled_from(["parquet", "snappy.parquet"]))
    return Landed(topic, hour, partition, offset, ext, buf.getvalue(), records)


@st.composite
def days(draw: st.DrawFn, fatal: bool = False) -> list[Landed]:
    """One day of landing files in a few hour folders of one or two topics, in any mix."""
    files: list[Landed] = []
    offsets: Counter[tuple[str, int]] = Counter()
    shared = draw(parquet_layouts())  # files of one schema are read together by one reader
    for _ in range(draw(st.integers(1, 5))):
        topic = draw(st.sampled_from(["game", "shop"]))
        hour = DAY_START + dt.timedelta(hours=draw(st.sampled_from([0, 10, 23])))
        partition = draw(st.integers(0, 2))
        offset = offsets[topic, partition] * 100 + draw(st.integers(0, 99))
        offsets[topic, partition] += 1
        if draw(st.integers(0, 2)) == 0:
            layout = shared if draw(st.booleans()) else draw(parquet_layouts())
            files.append(draw(parquet_file(topic, hour, partition, offset, layout)))
        else:
            files.append(draw(json_file(topic, hour, partition, offset)))
    if fatal:
        victim = draw(st.sampled_from(files))
        victim.data, victim.ext = draw(broken(victim))
        victim.fatal, victim.records, victim.raws = True, {}, {}
    return files


@st.composite
def broken(draw: st.DrawFn, f: Landed) -> tuple[bytes, str]:
    """A file the contract says stops the day: bad gzip or unreadable Parquet."""
    text = f.data if f.ext in ("json",) else b'{"event_id":"x"}\n'
    how = draw(st.sampled_from(["truncated gzip", "zero padded gzip", "not gzip", "not parquet", "truncated parquet"]))
    if how == "truncated gzip":
        gz = gzip.compress(text or b"\n")
        return gz[: draw(st.integers(1, len(gz) - 1))], "json.gz"
    if how == "zero padded gzip":
        return gzip.compress(text or b"\n") + b"\0" * draw(st.integers(1, 16)), "json.gz"
    if how == "not gzip":
        return draw(st.binary(min_size=1, max_size=30).filter(lambda b: not b.startswith(b"\x1f\x8b"))), "json.gz"
    if how == "not parquet":
        return draw(st.binary(min_size=1, max_size=30) | st.just(text or b"x")), "parquet"
    buf = io.BytesIO()
    pq.write_table(pa.table({"event_id": ["x"], "value": [1.0]}), buf)
    data = buf.getvalue()
    return data[: draw(st.integers(1, len(data) - 1))], "parquet"


# --- writing and reading a day -----------------------------------------------------------------

# Files of the neighbour days and names that are no landing file: never read, never counted.
DECOYS = {
    "topics/game/year=2026/month=11/day=25/hour=23/game+0+900.json": b'{"event_id":"decoy"}\n',
    "topics/game/year=2026/month=11/day=27/hour=00/game+0+901.json": b"{bad\n",
    "topics/game/year=2026/month=11/day=26/hour=10/notes.txt": b"{bad\n",
    "topics/game/year=2026/month=11/day=26/hour=10/.game+0+902.json": b"{bad\n",
    "topics/game/year=2026/month=11/day=26/hour=10/game+0+903.json.tmp": b"{bad\n",
    "topics/game/year=2026/month=11/day=26/hour=10/game+0+904.json": b"",
    "topics/game/year=2026/month=11/day=26/hour=10/game+0+905.json.gz": b"",
    "topics/.hidden/year=2026/month=11/day=26/hour=10/x+0+0.json": b"{bad\n",
}


def write_day(landing: Path, files: list[Landed]) -> None:
    for rel, data in DECOYS.items():
        (landing / rel).parent.mkdir(parents=True, exist_ok=True)
        (landing / rel).write_bytes(data)
    for f in files:
        f.path(landing).parent.mkdir(parents=True, exist_ok=True)
        f.path(landing).write_bytes(f.data)


@contextmanager
def scan_order(ordered: bool) -> Iterator[None]:
    """`read_day` chooses by mean file size whether DuckDB's JSON rows keep scan order; force it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(read, "ORDERED_MIN_FILE_BYTES", 0 if ordered else 2**62)
        yield


@contextmanager
def fresh(base: Path) -> Iterator[Path]:
    """A landing zone of this example's own (the test's tmp_path outlives the examples)."""
    landing = base / "landing"
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir()
    try:
        yield landing
    finally:
        shutil.rmtree(landing, ignore_errors=True)


def check_day(landing: Path, files: list[Landed]) -> None:
    """The whole contract of one day read, against what was written."""
    r = read_day(landing, DAY_START, DAY_END, landing / ".work")
    events = r.events.collect()
    q = r.quarantine
    by_path = {str(f.path(landing)): f for f in files if f.data}  # an empty file is ignored: no record
    assert sorted(str(x.path) for x in r.files) == sorted(by_path), "every landing file of the day, no other"
    assert len(r.skipped) == 1 and "notes.txt" in r.skipped[0]
    written = sum(len(f.records) for f in files)
    # conservation, and nothing lost: read = counted + duplicates + quarantined = what was written
    kept = dedupe(events.lazy())
    counted = kept.events.select(pl.len()).collect().item()
    assert events.height + q.height == counted + kept.duplicates + q.height == written
    assert kept.duplicates == events.height - events["event_id"].n_unique()
    # every quarantined record: its file, a written line or row of it, once, with the first broken rule
    assert q["file"].null_count() == 0 and q["line"].null_count() == 0 and q["reason"].null_count() == 0
    assert q.select("file", "line").is_unique().all(), "a record quarantined twice"
    quarantined = {(row["file"], row["line"]): row for row in q.iter_rows(named=True)}
    for path, f in by_path.items():
        for number, verdict in f.records.items():
            row = quarantined.get((path, number))
            if verdict is not None and verdict.reason is None:
                assert row is None, (f.name, number, "valid record quarantined", row)
            elif verdict is not None:
                assert row is not None, (f.name, number, "refused record not quarantined", verdict)
                ok = row["reason"] == verdict.reason if verdict.exact else row["reason"].startswith(verdict.reason)
                assert ok, (f.name, number, row["reason"], "expected", verdict.reason)
            if row is not None:
                assert row["reason"].startswith(REASONS) or OUTSIDE.fullmatch(row["reason"]), row
                if f.ext.endswith("parquet"):
                    assert row["raw"].startswith('{"event_id":'), row
                else:
                    assert row["raw"] == f.raws[number][:RAW_CHARS], (f.name, number, row["raw"][:80])
    assert set(quarantined) <= {(p, n) for p, f in by_path.items() for n in f.records}, "a line never written"
    # the events: per file, the valid records written, with their content (ordered JSON rows have no line)
    files_of = [str(x.path) for x in r.files]
    got = Counter(
        (
            files_of[row["file_idx"]],
            row["event_id"],
            row["event_type"],
            row["user_id"],
            row["occurred_at"],
            row["value"],
        )
        for row in events.iter_rows(named=True)
    )
    expected = Counter(
        (p, v.event_id, *v.content)  # type: ignore[misc]
        for p, f in by_path.items()
        for v in f.records.values()
        if v is not None and v.reason is None
    )
    assert not expected - got, ("valid records missing", expected - got)
    unknown = sum(1 for f in files for v in f.records.values() if v is None)
    assert (got - expected).total() <= unknown, ("events nobody wrote", got - expected)
    # the first delivery in Kafka order wins (checked where every delivery of an id is known)
    kafka = sorted(files, key=lambda f: (f.topic, f.partition, f.offset, f.name))
    firsts: dict[str, tuple[Any, ...]] = {}
    if Counter(k[1] for k in got) == Counter(k[1] for k in expected):  # no valid record of unknown bytes
        deliveries = [v for f in kafka for _, v in sorted(f.records.items()) if v is not None and v.reason is None]
        for v in deliveries:
            firsts.setdefault(v.event_id, v.content)  # type: ignore[arg-type]
        first_rows = kept.events.collect()
        assert first_rows.height == len(firsts)
        for row in first_rows.iter_rows(named=True):
            content = (row["event_type"], row["user_id"], row["occurred_at"], row["value"])
            assert content == firsts[row["event_id"]], (row["event_id"], content, firsts[row["event_id"]])


# --- the tests ---------------------------------------------------------------------------------


def test_any_mix_of_landed_files_is_read_whole_and_every_refusal_explained(tmp_path):
    runs: Counter[str] = Counter()

    @settings(FUZZ, max_examples=200)
    @given(files=days(), ordered=st.booleans())
    def check(files: list[Landed], ordered: bool) -> None:
        runs["examples"] += 1
        runs["files"] += len(files)
        runs["records"] += sum(len(f.records) for f in files)
        with fresh(tmp_path) as landing, scan_order(ordered):
            write_day(landing, files)
            check_day(landing, files)

    check()
    print(f"\nlanding fuzz: {dict(runs)}")
    assert runs["examples"] >= 200


def test_a_file_that_stops_the_day_is_named_and_nothing_else_escapes(tmp_path):
    runs: Counter[str] = Counter()

    @settings(FUZZ, max_examples=100)
    @given(files=days(fatal=True), ordered=st.booleans())
    def check(files: list[Landed], ordered: bool) -> None:
        runs["examples"] += 1
        with fresh(tmp_path) as landing, scan_order(ordered):
            write_day(landing, files)
            with pytest.raises(LandingError) as raised:
                read_day(landing, DAY_START, DAY_END, landing / ".work")
            message = str(raised.value)
            assert message.startswith("cannot read landing files for 2026-11-26 00:00Z..2026-11-27 00:00Z: ")
            assert any(str(f.path(landing)) in message for f in files if f.fatal), message

    check()
    print(f"\nlanding fuzz, fatal files: {dict(runs)}")
    assert runs["examples"] >= 100


def test_a_line_over_twice_the_cap_stops_the_day_naming_its_file(tmp_path):
    """DuckDB's NDJSON reader refuses a line longer than its buffer (twice
    `maximum_object_size`, MAX_RECORD_BYTES); written compressed, so the disk holds little."""
    folder = hour_folder(tmp_path, "game", DAY_START)
    folder.mkdir(parents=True)
    path = folder / "game+0+0.json.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(b'{"event_id":"a","pad":"')
        chunk = b"p" * (1 << 20)
        for _ in range(2 * MAX_RECORD_BYTES // len(chunk) + 1):
            out.write(chunk)
        out.write(b'"}\n')
    with pytest.raises(LandingError, match=re.escape(str(path))):
        read_day(tmp_path, DAY_START, DAY_END, tmp_path / ".work")


# --- what the fuzz found, as regular tests -----------------------------------------------------

H10 = DAY_START + dt.timedelta(hours=10)
AT = "2026-11-26T10:00:00Z"


def _one_day(landing: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    r = read_day(landing, DAY_START, DAY_END, landing / ".work")
    return r.events.collect(), r.quarantine


def test_a_line_longer_than_the_first_reads_buffers_is_read_again_with_the_contracts(tmp_path):
    """A day is read first with DuckDB's own NDJSON buffers (twice `FIRST_RECORD_BYTES`), which
    a 40 MiB line does not fit: the day is read again with buffers for MAX_RECORD_BYTES, every
    record of every file counted once and the broken one quarantined with its line."""
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    long_pad = 40 * 1024 * 1024
    assert 2 * FIRST_RECORD_BYTES < long_pad < MAX_RECORD_BYTES
    with gzip.open(folder / "game+0+0.json.gz", "wb", compresslevel=1) as out:
        for j, pad in enumerate((10, long_pad, 10)):
            head = f'{{"event_id":"e0-{j}","event_type":"s","user_id":"u","occurred_at":"{AT}","attributes":{{"pad":"'
            out.write(head.encode() + b"p" * pad + b'"}}\n')
    (folder / "game+1+0.json").write_text(
        f'{{"event_id":"e1-0","event_type":"s","user_id":"v","occurred_at":"{AT}"}}\n{{"event_id":1}}\n'
    )
    events, quarantine = _one_day(tmp_path)
    assert sorted(events["event_id"]) == ["e0-0", "e0-1", "e0-2", "e1-0"]
    assert events.filter(pl.col("event_id") == "e0-1")["attributes"].str.len_bytes().item() == long_pad + 10
    assert quarantine.select("line", "reason").rows() == [(2, "event_id is not a string: 1")]


def test_records_near_the_cap_are_read_past_duckdbs_memory_cap(tmp_path):
    """Records just under MAX_RECORD_BYTES need larger buffers than the memory DuckDB is given
    (`sources.DUCKDB_MEMORY`): such a day is read again without the cap, not refused."""
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    for k in range(3):
        with gzip.open(folder / f"game+0+{k}.json.gz", "wb", compresslevel=1) as out:
            for j in range(2):
                head = f'{{"event_id":"e{k}-{j}","event_type":"s","user_id":"u","occurred_at":"{AT}","attributes":{{"pad":"'
                out.write(head.encode() + b"p" * (MAX_RECORD_BYTES - 4096) + b'"}}\n')
    events, quarantine = _one_day(tmp_path)
    assert sorted(events["event_id"]) == [f"e{k}-{j}" for k in range(3) for j in range(2)]
    assert quarantine.is_empty()


@pytest.mark.parametrize("column", ["File_Index", "FILE_ROW_NUMBER", "file_row_number"])
def test_a_parquet_column_named_like_one_the_reader_adds_is_an_extra_field(tmp_path, column):
    """An unknown field is ignored (docs/contracts.md#event-record). DuckDB matches column names
    case-insensitively: a file's own `File_Index` hid the reader's `file_index`, so rows of a
    group of files went to the wrong file or were lost (2 of 4 read); its own
    `file_row_number` stopped the day with no file named."""
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    at = pa.array([H10 + dt.timedelta(minutes=5)] * 2, pa.timestamp("us", "UTC"))
    for p, ids in ((0, ["a", "b"]), (1, ["c", "d"])):
        pq.write_table(pa.table({"event_id": ids, "event_type": ["s", "s"], "user_id": ["u", "v"], "occurred_at": at,
                                 column: [0, 7], "value": [None, "x"]}), folder / f"game+{p}+0.parquet")  # fmt: skip
    events, q = _one_day(tmp_path)
    files = sorted(str(p) for p in folder.iterdir())
    assert sorted(events.select("event_id", "file_idx", "line").rows()) == [("a", 0, 1), ("c", 1, 1)]
    assert q.select("file", "line", "reason").rows() == [(files[0], 2, 'value is not a number: "x"'),
                                                         (files[1], 2, 'value is not a number: "x"')]  # fmt: skip


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize(
    ("field", "literal", "reason"),
    [
        ("value", "nan", "value is not finite: nan"),
        ("value", "inf", "value is not finite: inf"),
        ("value", "-nan", "value is not finite: -nan"),
        ("occurred_at", "nan", "occurred_at must be an RFC 3339 string or integer epoch milliseconds: nan"),
        ("occurred_at", "-Inf", "occurred_at must be an RFC 3339 string or integer epoch milliseconds: -Inf"),
        ("event_id", "nan", "event_id is not a string: nan"),
        ("attributes", "nan", "attributes is not an object"),
    ],
)
def test_nan_and_infinity_in_any_case_are_refused_for_what_they_are(tmp_path, ordered, field, literal, reason):
    """DuckDB's JSON parser reads `nan` and `inf` in any case and keeps their text; taken for
    `null` or an integer, they were refused as `refused` (the fallback) or `missing event_id`."""
    rec = {"event_id": "a", "event_type": "s", "user_id": "u", "occurred_at": AT, field: "LITERAL"}
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    (folder / "game+0+0.json").write_text(json.dumps(rec).replace('"LITERAL"', literal) + "\n")
    with scan_order(ordered):
        events, q = _one_day(tmp_path)
    assert events.is_empty() and q["reason"].to_list() == [reason]


def _gzip_day(tmp_path: Path, data: bytes) -> Path:
    folder = hour_folder(tmp_path, "game", H10)
    folder.mkdir(parents=True)
    path = folder / "game+0+0.json.gz"
    path.write_bytes(data)
    return path


LINES = "".join(json.dumps({"event_id": f"e{i}", "event_type": "s", "user_id": "u", "occurred_at": AT}) + "\n"
                for i in range(200)).encode() + b"{bad\n"  # fmt: skip


@pytest.mark.parametrize("ordered", [True, False])
def test_a_gzip_file_padded_with_zeros_stops_the_day_naming_it(tmp_path, ordered):
    """DuckDB refuses padding as long as a gzip header ("Input is not a GZIP stream") without
    naming the file."""
    path = _gzip_day(tmp_path, gzip.compress(LINES) + b"\0" * 16)  # 10 or more: a header's length
    with scan_order(ordered), pytest.raises(LandingError, match=re.escape(str(path))):
        _one_day(tmp_path)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_corrupt_deflate_stream_stops_the_day_naming_it(tmp_path, ordered):
    """DuckDB decodes the garbage without a word; the lines it refuses are cut in Python, whose
    zlib error escaped the reader as `zlib.error` instead of a LandingError."""
    gz = gzip.compress(LINES)
    path = _gzip_day(tmp_path, gz[:100] + bytes([gz[100] ^ 0xFF]) + gz[101:])
    with scan_order(ordered), pytest.raises(LandingError, match=re.escape(str(path))):
        _one_day(tmp_path)


def test_a_field_beside_a_column_named_like_it_in_another_case_is_read_by_its_own_name(tmp_path):
    """DuckDB renames `event_id` to `event_id_1` when `EVENT_ID` comes first; the field was then
    read as missing (found by the fuzz on a fresh clone)."""
    hour = dt.datetime(2026, 11, 26, 0, tzinfo=UTC)
    folder = hour_folder(tmp_path / "landing", "game", hour)
    folder.mkdir(parents=True)
    table = pa.table({"EVENT_ID": pa.array([None], pa.string()), "event_id": ["x"], "event_type": ["s"],
                      "user_id": ["u"], "occurred_at": pa.array([hour], pa.timestamp("us", "UTC"))})  # fmt: skip
    pq.write_table(table, folder / "game+0+0.parquet")
    read = read_day(tmp_path / "landing", hour, hour + dt.timedelta(days=1), tmp_path / "work")
    assert read.quarantine.is_empty(), read.quarantine.to_dicts()
    assert read.events.collect()["event_id"].to_list() == ["x"]
