"""Board definitions (docs/contracts.md#boards-and-periods), loaded from YAML and validated with
file, board and field named."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PeriodType = Literal["daily", "weekly", "monthly", "all_time", "season"]
# The calendar periods a board has unless it lists its own; `season` follows from `seasons:`.
PERIOD_TYPES: tuple[PeriodType, ...] = ("daily", "weekly", "monthly", "all_time")
SEASON: PeriodType = "season"
ALL_PERIOD_TYPES: tuple[PeriodType, ...] = (*PERIOD_TYPES, SEASON)
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# Words after /leaderboard/{board}/{period}/ that name routes, so no season can be called so.
RESERVED_SEASON_IDS = frozenset({"periods", "results", "me", "users", "reopen"})
ATTRIBUTES = "attributes."  # how the boards file names a field of the event's `attributes`
# One name of a dotted attribute path: plain characters, so it needs no quoting in a JSON path
# and is written as-is (unescaped) in the JSON text of `attributes`.
PATH_PART = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_METADATA = 16


class BoardsFileError(ValueError):
    """A bad boards file; the message names the file (and line), the board and the field."""


def _local_datetime(value: object) -> object:
    """A season's start or end: a local date-time (`2026-03-01T18:00`) or a date (its midnight),
    without an offset: the boards' time zone says which instant it is."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime.combine(value, dt.time(0))
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a local date-time like 2026-03-01T18:00 (or a date)") from None
    else:
        raise ValueError(f"{value!r} is not a local date-time like 2026-03-01T18:00 (or a date)")
    if parsed.tzinfo is not None:
        raise ValueError(
            f"{value!s} has a UTC offset; write the local date-time without it: the boards' timezone applies"
        )
    return parsed


class Season(BaseModel):
    """A custom window ranked as period type `season` with key `id`: [start, end) in local time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    title: str = ""
    start: dt.datetime
    end: dt.datetime

    _local = field_validator("start", "end", mode="before")(_local_datetime)

    @field_validator("id")
    @classmethod
    def _not_a_route(cls, value: str) -> str:
        if value in RESERVED_SEASON_IDS:
            words = ", ".join(sorted(RESERVED_SEASON_IDS))
            raise ValueError(f"{value!r} names a route; choose another id (none of {words})")
        return value

    @model_validator(mode="after")
    def _ends_after_start(self) -> Season:
        if self.end <= self.start:
            raise ValueError(f"end {self.end.isoformat()} must be after start {self.start.isoformat()}")
        return self


class Board(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=ID_PATTERN)
    title: str = ""
    event_types: tuple[str, ...] = Field(min_length=1)
    # `last`: the value of the latest counted event (a rating, a level), latest as names are chosen
    aggregate: Literal["sum", "count", "max", "min", "last"]
    order: Literal["desc", "asc"] = "desc"
    periods: tuple[PeriodType, ...] = PERIOD_TYPES
    display_limit: int | None = Field(None, ge=1, le=10_000)
    min_score: float | None = None
    # `attributes.<path>` in the file; kept without the prefix ("team_id"). Set: the board ranks
    # the values of that attribute (teams, referrers) instead of users.
    group_by: str | None = None
    metadata: tuple[str, ...] = ()  # attribute paths whose latest values each entry carries
    # Custom windows (docs/contracts.md#seasons); listing any gives the board the period type `season`.
    seasons: tuple[Season, ...] = ()
    # [min, max] of `value` for events of the board's types; others are quarantined at ingest
    value_range: tuple[float, float] | None = None

    @field_validator("value_range")
    @classmethod
    def _range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is None:
            return None
        if not all(math.isfinite(v) for v in value) or value[0] > value[1]:
            raise ValueError(f"must be [min, max] of finite numbers with min <= max; got {list(value)}")
        return value

    @field_validator("group_by")
    @classmethod
    def _attribute_path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        path = value.removeprefix(ATTRIBUTES)
        if not value.startswith(ATTRIBUTES) or not is_attribute_path(path):
            raise ValueError(
                f"must be attributes.<name>, a dotted path into the event's attributes whose names are "
                f"1-64 letters, digits, '_' or '-' (e.g. attributes.team_id); got {value!r}"
            )
        return path

    @field_validator("metadata")
    @classmethod
    def _metadata_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if not is_attribute_path(v)]
        if bad:
            raise ValueError(
                f"names an attribute of the events, without 'attributes.' (e.g. level or profile.country), in "
                f"1-64 letters, digits, '_' or '-' per dotted part; got {bad[0]!r}"
            )
        if len(set(value)) != len(value) or len(value) > MAX_METADATA:
            raise ValueError(f"must list each attribute once, at most {MAX_METADATA}")
        return value

    @field_validator("periods")
    @classmethod
    def _unique_periods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError("must list each period type at most once, at least one")
        return value

    @field_validator("seasons")
    @classmethod
    def _apart(cls, value: tuple[Season, ...]) -> tuple[Season, ...]:
        ids = [s.id for s in value]
        if dupes := sorted({i for i in ids if ids.count(i) > 1}):
            raise ValueError(f"season ids must be unique on a board; repeated: {', '.join(dupes)}")
        ordered = sorted(value, key=lambda s: s.start)
        for a, b in itertools.pairwise(ordered):
            if b.start < a.end:
                raise ValueError(
                    f"seasons {a.id!r} ({a.start.isoformat()} to {a.end.isoformat()}) and {b.id!r} "
                    f"({b.start.isoformat()} to {b.end.isoformat()}) overlap; a season may start when another ends"
                )
        return tuple(ordered)

    @model_validator(mode="after")
    def _season_period(self) -> Board:
        if SEASON in self.periods and not self.seasons:
            raise ValueError("periods lists 'season' but the board lists no seasons: add them under 'seasons'")
        if self.seasons and SEASON not in self.periods:
            object.__setattr__(self, "periods", (*self.periods, SEASON))
        return self

    def season(self, season_id: str) -> Season | None:
        return next((s for s in self.seasons if s.id == season_id), None)


class BoardsDoc(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = "UTC"
    start_date: dt.date = dt.date(2024, 1, 1)
    boards: list[Board] = Field(min_length=1)

    @field_validator("timezone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA time zone name") from exc
        return value


def is_attribute_path(path: str) -> bool:
    """`team_id`, `profile.country`: dotted names of plain characters."""
    return all(PATH_PART.match(part) for part in path.split("."))


@dataclass(frozen=True)
class ValueRange:
    """The values an event type may carry: the intersection of the `value_range` of every board
    counting the type that has one (`boards`, in file order)."""

    low: float
    high: float
    boards: tuple[str, ...]


def value_ranges(boards: tuple[Board, ...]) -> dict[str, ValueRange]:
    """event type -> its ValueRange, for the types some board gives a range."""
    found: dict[str, ValueRange] = {}
    for b in boards:
        if b.value_range is None:
            continue
        low, high = b.value_range
        for t in b.event_types:
            r = found.get(t)
            found[t] = ValueRange(low, high, (b.id,)) if r is None else ValueRange(
                max(r.low, low), min(r.high, high), (*r.boards, b.id)
            )  # fmt: skip
    return found


@dataclass(frozen=True)
class BoardSet:
    """The validated boards file: boards by id, the period time zone and the first day."""

    boards: tuple[Board, ...]
    timezone: str
    start_date: dt.date
    source: Path

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def get(self, board_id: str) -> Board | None:
        return next((b for b in self.boards if b.id == board_id), None)

    def with_period(self, period_type: PeriodType) -> tuple[Board, ...]:
        return tuple(b for b in self.boards if period_type in b.periods)

    def season_ids(self) -> list[str]:
        """Every season id of any board, in the order of their first start (the partitions)."""
        seasons = sorted((s.start, s.id) for b in self.boards for s in b.seasons)
        return list(dict.fromkeys(i for _, i in seasons))

    def with_season(self, season_id: str) -> tuple[Board, ...]:
        return tuple(b for b in self.boards if b.season(season_id) is not None)


def _where(loc: tuple[object, ...], raw: dict) -> str:
    """Turn a pydantic location like ('boards', 2, 'aggregate') into "board 'x' field 'aggregate'"."""
    if len(loc) >= 2 and loc[0] == "boards" and isinstance(loc[1], int):
        items = raw.get("boards") or []
        board = items[loc[1]] if loc[1] < len(items) else {}
        name = board.get("id") if isinstance(board, dict) else None
        label = f"board {name!r}" if name else f"board #{loc[1] + 1}"
        rest = loc[2:]
        if len(rest) >= 2 and rest[0] == "seasons" and isinstance(rest[1], int):
            seasons = board.get("seasons") if isinstance(board, dict) else None
            item = seasons[rest[1]] if isinstance(seasons, list) and rest[1] < len(seasons) else {}
            season = item.get("id") if isinstance(item, dict) else None
            label += f" season {season!r}" if season else f" season #{rest[1] + 1}"
            rest = rest[2:]
        field = ".".join(str(p) for p in rest)
        return f"{label} field {field!r}" if field else label
    return f"field {'.'.join(str(p) for p in loc)!r}"


def local_instant(local: dt.datetime, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of a local date-time (one that exists once: `season_time_problems`)."""
    return local.replace(tzinfo=tz).astimezone(dt.UTC)


def _exists_once(local: dt.datetime, tz: ZoneInfo) -> str | None:
    """Why a local time is no single instant in `tz`: skipped or repeated by a clock change."""
    early, late = local.replace(tzinfo=tz, fold=0), local.replace(tzinfo=tz, fold=1)
    if early.utcoffset() == late.utcoffset():
        return None
    back = early.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None)
    if back != local:
        return f"{local.isoformat()} does not exist in {tz.key} (the clocks skip it); use a time outside the change"
    return f"{local.isoformat()} happens twice in {tz.key} (the clocks go back); use a time outside the change"


def season_time_problems(boards: list[Board], tz: ZoneInfo) -> list[str]:
    """Season starts and ends that are no single instant in the boards' time zone, and a season
    id given different windows: the id is the period key, and one key is one window."""
    problems = []
    first: dict[str, tuple[str, Season]] = {}
    for board in boards:
        for season in board.seasons:
            seen = first.setdefault(season.id, (board.id, season))
            if (seen[1].start, seen[1].end) != (season.start, season.end):
                problems.append(
                    f"  board {board.id!r} season {season.id!r}: {season.start.isoformat()} to "
                    f"{season.end.isoformat()}, but board {seen[0]!r} gives it {seen[1].start.isoformat()} to "
                    f"{seen[1].end.isoformat()}; a season id is one window on every board (give it another id)"
                )
    for board in boards:
        for season in board.seasons:
            for name in ("start", "end"):
                if why := _exists_once(getattr(season, name), tz):
                    problems.append(f"  board {board.id!r} season {season.id!r} field {name!r}: {why}")
    return problems


def load_boards(path: Path, timezone_override: str | None = None) -> BoardSet:
    """Load and validate a boards file; every problem names the file, the board and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoardsFileError(f"{path}: cannot read boards file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise BoardsFileError(f"{path}{where}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise BoardsFileError(f"{path}: expected a mapping with a 'boards' list")
    try:
        doc = BoardsDoc.model_validate(raw)
    except ValidationError as exc:
        problems = [f"  {_where(e['loc'], raw)}: {e['msg']}" for e in exc.errors()]
        raise BoardsFileError(f"{path}: invalid boards file:\n" + "\n".join(problems)) from None
    ids = [b.id for b in doc.boards]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BoardsFileError(f"{path}: board ids must be unique; repeated: {', '.join(dupes)}")
    for event_type, r in value_ranges(tuple(doc.boards)).items():
        if r.low > r.high:
            raise BoardsFileError(
                f"{path}: boards {', '.join(r.boards)} count {event_type!r} with value_range that do not overlap: "
                "an event of it must fit each (give the boards ranges that overlap, or their own event types)"
            )
    timezone = timezone_override or doc.timezone
    if problems := season_time_problems(doc.boards, ZoneInfo(timezone)):
        raise BoardsFileError(f"{path}: invalid boards file:\n" + "\n".join(problems))
    return BoardSet(
        boards=tuple(doc.boards),
        timezone=timezone,
        start_date=doc.start_date,
        source=path,
    )


@lru_cache(maxsize=8)
def _cached(path: str, mtime: float, tz: str | None) -> BoardSet:
    return load_boards(Path(path), tz)


def current_boards() -> BoardSet:
    """Boards named by the settings, reloaded when the file changes."""
    from leaderboard.settings import get_settings

    s = get_settings()
    return _cached(str(s.LEADERBOARD_BOARDS), s.LEADERBOARD_BOARDS.stat().st_mtime, s.LEADERBOARD_TIMEZONE)


def display_limit(board: Board) -> int:
    from leaderboard.settings import get_settings

    return board.display_limit or get_settings().DISPLAY_LIMIT_DEFAULT
