"""Synthetic Kafka-landed events for demos, tests and the benchmark.

Users follow a Zipf-like activity curve (a few very active, a long tail), events spread over
several topics and Kafka partitions (keyed by user), one file per topic-partition and UTC
hour as the Kafka Connect sink writes them, in JSON lines, gzip JSON or Parquet.
"""

from __future__ import annotations

import datetime as dt
import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from leaderboard.landing import hour_folder
from leaderboard.periods import local_midnight

# event type -> (topic, share of events). Sign-ups are drawn apart (`_registrations`, from a random
# stream of their own), hence a share of 0 here: the other types' draws stay as they were.
EVENT_TYPES = {
    "score.earned": ("game-events", 0.55),
    "game.finished": ("game-events", 0.25),
    "lap.completed": ("race-events", 0.12),
    "referral.bound": ("social-events", 0.08),
    "user.registered": ("user-events", 0.0),
}
EVENTS_PER_SIGN_UP = 20
REFERRED_SHARE = 0.75  # of sign-ups, those with a referrer_id; the others are ungrouped on `referrers`
TEAMS = 12
COUNTRIES = ("FR", "DE", "US", "JP", "BR", "IN")
ATTRIBUTE_FIELDS = ("display_name", "level", "country", "team_id", "referrer_id")
PARTITIONS_PER_TOPIC = 3
FORMATS = ("json", "json.gz", "parquet")

# Each broken record the contract must quarantine, as a raw JSON line.
BAD_LINES = (
    '{"event_id": "broken", "user_id": "u1"',  # bad JSON
    '{"event_type": "score.earned", "user_id": "u1", "occurred_at": "{at}"}',  # missing event_id
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": 42, "occurred_at": "{at}"}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "' + "x" * 65 + '", "occurred_at": "{at}"}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "u1", "occurred_at": "{naive}"}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "u1", "occurred_at": "soon"}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "u1", "occurred_at": "{at}", "value": "7"}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "u1", "occurred_at": "{at}", "value": true}',
    '{"event_id": "{id}", "event_type": "score.earned", "user_id": "u1", "occurred_at": "{at}", "value": NaN}',
)


@dataclass(frozen=True)
class GenerateSpec:
    landing: Path
    start: dt.date
    days: int
    users: int
    events_per_day: int
    seed: int = 7
    bad_rate: float = 0.0
    dup_rate: float = 0.0
    formats: tuple[str, ...] = FORMATS
    timezone: str = "UTC"


def user_names(ids: pl.Expr) -> pl.Expr:
    """`user-000042`: readable, sortable ids for sample users."""
    return pl.format("user-{}", ids.cast(pl.String).str.zfill(6))


def _day_events(spec: GenerateSpec, day_index: int, rng: np.random.Generator) -> pl.DataFrame:
    day = spec.start + dt.timedelta(days=day_index)
    tz = ZoneInfo(spec.timezone)
    start = local_midnight(day, tz)
    seconds = (local_midnight(day + dt.timedelta(days=1), tz) - start).total_seconds()
    n = spec.events_per_day
    users = (rng.zipf(1.3, n) - 1) % spec.users  # Zipf activity; the rare huge draws wrap around
    users = (users * 2_654_435_761 + spec.seed * 7_919) % spec.users  # heavy users are not the lowest ids
    types = list(EVENT_TYPES)
    kind = rng.choice(len(types), n, p=[EVENT_TYPES[t][1] for t in types])
    offsets_us = np.sort(rng.integers(0, int(seconds * 1e3), n)) * 1000  # producers send milliseconds
    value = np.where(
        kind == types.index("lap.completed"),
        rng.integers(30_000, 120_000, n),
        np.where(kind == types.index("game.finished"), rng.integers(0, 10_000, n), rng.integers(1, 100, n)),
    )
    frame = pl.DataFrame(
        {
            "seq": pl.int_range(n, eager=True),
            "event_type": np.array(types)[kind],
            "uid": users,
            "at": pl.Series(offsets_us, dtype=pl.Int64),
            "value": value.astype(np.int64),
            "referrer": rng.integers(0, spec.users, n),
        }
    )
    epoch_us = int(start.timestamp() * 1e6)
    return (
        frame.with_columns(
            pl.format(f"{day:%Y%m%d}-{spec.seed}-{{}}", "seq").alias("event_id"),
            user_names(pl.col("uid")).alias("user_id"),
            pl.from_epoch(pl.col("at") + epoch_us, time_unit="us").dt.replace_time_zone("UTC").alias("occurred_at"),
        )
        .with_columns(
            pl.col("event_type").replace_strict({t: EVENT_TYPES[t][0] for t in types}).alias("topic"),
            (pl.col("user_id").hash(spec.seed) % PARTITIONS_PER_TOPIC).cast(pl.Int32).alias("partition"),
        )
        .drop("at", "seq", "uid")
    )


def _attributes(day_index: int) -> pl.Expr:
    """Attributes by event type, from the user and the day (no random draw, so the events
    themselves are what they were without them).

    - `display_name` on score.earned, game.finished and user.registered: "Player 42"; every
      seventh user renames each day, every eleventh after 12:00 UTC; game.finished of every
      thirteenth user carries an empty name (which must not win).
    - `level` (a number rising day by day) on score.earned and game.finished; `country` on
      score.earned (every ninth user moves every day); `team_id` on score.earned, but for
      every twenty-fifth user (teamless: ungrouped on `teams`); `referrer_id` on referral.bound.
    """
    uid = pl.col("user_id").str.slice(5).cast(pl.Int64)  # user-000042
    kind = pl.col("event_type")
    named = kind.is_in(["score.earned", "game.finished", "user.registered"])
    name = (
        pl.when((kind == "game.finished") & (uid % 13 == 0))
        .then(pl.lit(""))
        .when(uid % 7 == 0)
        .then(pl.format(f"Player {{}} (day {day_index + 1})", uid))
        .when((uid % 11 == 0) & (pl.col("occurred_at").dt.hour() >= 12))
        .then(pl.format("Ace {}", uid))
        .otherwise(pl.format("Player {}", uid))
    )
    moved = pl.when(uid % 9 == 0).then(day_index).otherwise(0)
    country = ((uid + moved) % len(COUNTRIES)).replace_strict(dict(enumerate(COUNTRIES)), return_dtype=pl.String)
    fields = {
        "display_name": pl.when(named).then(name),
        "level": pl.when(kind.is_in(["score.earned", "game.finished"])).then(1 + uid % 20 + day_index),
        "country": pl.when(kind == "score.earned").then(country),
        "team_id": pl.when((kind == "score.earned") & (uid % 25 != 0)).then(
            pl.format("team-{}", (uid % TEAMS).cast(pl.String).str.zfill(2))
        ),
        "referrer_id": pl.when(kind.is_in(["referral.bound", "user.registered"])).then(pl.col("referrer_id")),
    }
    present = pl.any_horizontal(*(f.is_not_null() for f in fields.values()))
    return pl.when(present).then(pl.struct(**fields)).alias("attributes")


def _registrations(spec: GenerateSpec, day_index: int, rng: np.random.Generator) -> pl.DataFrame:
    """A day's sign-ups of new users, most of them referred by an active one."""
    day = spec.start + dt.timedelta(days=day_index)
    tz = ZoneInfo(spec.timezone)
    start = local_midnight(day, tz)
    seconds = (local_midnight(day + dt.timedelta(days=1), tz) - start).total_seconds()
    n = max(1, spec.events_per_day // EVENTS_PER_SIGN_UP)
    offsets_us = np.sort(rng.integers(0, int(seconds * 1e3), n)) * 1000
    referrer = np.where(rng.random(n) < REFERRED_SHARE, rng.integers(0, spec.users, n), -1)
    epoch_us = int(start.timestamp() * 1e6)
    return pl.DataFrame(
        {
            "event_id": [f"{day:%Y%m%d}-{spec.seed}-r{i}" for i in range(n)],
            "event_type": "user.registered",
            "uid": spec.users + day_index * n + np.arange(n),  # ids past the active users'
            "occurred_at": pl.Series(offsets_us + epoch_us, dtype=pl.Int64),
            "value": pl.Series([1] * n, dtype=pl.Int64),
            "referrer": referrer,
        }
    ).with_columns(
        user_names(pl.col("uid")).alias("user_id"),
        pl.from_epoch("occurred_at", time_unit="us").dt.replace_time_zone("UTC"),
        pl.lit(EVENT_TYPES["user.registered"][0]).alias("topic"),
        (pl.col("event_id").hash(spec.seed) % PARTITIONS_PER_TOPIC).cast(pl.Int32).alias("partition"),
        pl.when(pl.col("referrer") >= 0).then(user_names(pl.col("referrer"))).alias("referrer_id"),
        pl.lit(False).alias("redelivered"),
    )


def _with_duplicates(frame: pl.DataFrame, rate: float, rng: np.random.Generator) -> pl.DataFrame:
    """Redeliveries: copies of some events, a tenth of them with a changed value (conflicts)."""
    if rate <= 0 or frame.is_empty():
        return frame.with_columns(pl.lit(False).alias("redelivered"))
    picks = rng.choice(frame.height, int(frame.height * rate), replace=False)
    copies = frame[np.sort(picks)].with_columns(pl.lit(True).alias("redelivered"))
    conflict = pl.Series(rng.random(copies.height) < 0.1)
    copies = copies.with_columns(pl.when(conflict).then(pl.col("value") + 1).otherwise("value").alias("value"))
    return pl.concat([frame.with_columns(pl.lit(False).alias("redelivered")), copies])


def _json_lines(group: pl.DataFrame, rng: np.random.Generator) -> pl.Series:
    """Encode records as JSON lines, mixing the accepted time formats (Z, an offset, epoch ms)."""

    def encode(occurred_at: pl.Expr) -> pl.Expr:
        return pl.struct(
            "event_id", "event_type", "user_id", occurred_at.alias("occurred_at"), "value", "attributes"
        ).struct.json_encode()

    at = pl.col("occurred_at")
    style = pl.Series(rng.integers(0, 3, group.height))
    return group.select(
        pl.when(style == 0)
        .then(encode(at.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")))
        .when(style == 1)
        .then(encode(at.dt.convert_time_zone("Asia/Kolkata").dt.strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")))
        .otherwise(encode(at.dt.epoch("ms")))
        # an attribute an event does not have is left out of its line (in Parquet it is a null field)
        .str.replace_all(f'"(?:{"|".join(ATTRIBUTE_FIELDS)})":null,?', "")
        .str.replace(",}", "}", literal=True)
        .alias("line")
    ).to_series()


def _bad_lines(count: int, hour: dt.datetime, rng: np.random.Generator, tag: str) -> list[str]:
    at = hour + dt.timedelta(minutes=30)
    return [
        BAD_LINES[k]
        .replace("{id}", f"bad-{tag}-{i}")
        .replace("{at}", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .replace("{naive}", at.strftime("%Y-%m-%dT%H:%M:%S"))
        for i, k in enumerate(rng.integers(0, len(BAD_LINES), count))
    ]


def _write_lines(lines: list[str] | pl.Series, path: Path) -> None:
    frame = pl.DataFrame({"line": pl.Series(lines, dtype=pl.String)})
    tmp = path.with_name("." + path.name + ".tmp")  # the sink's in-progress name, then the final one
    if path.name.endswith(".gz"):
        tmp.write_bytes(gzip.compress(frame.write_csv(include_header=False, quote_style="never").encode(), 1))
    else:
        frame.write_csv(tmp, include_header=False, quote_style="never")
    tmp.rename(path)


def _write_parquet(group: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    group.select("event_id", "event_type", "user_id", "occurred_at", "value", "attributes").write_parquet(tmp)
    tmp.rename(path)


def generate(spec: GenerateSpec, progress: Callable[[int], None] | None = None) -> dict[str, int]:
    """Write `spec.days` days of landed files; returns counts of what was written."""
    rng = np.random.default_rng(spec.seed)
    sign_ups = np.random.default_rng([spec.seed, 17])  # apart, so the activity is drawn as before them
    offsets: dict[tuple[str, int], int] = {}
    totals = {"files": 0, "events": 0, "redeliveries": 0, "bad": 0}
    for d in range(spec.days):
        frame = _day_events(spec, d, rng)
        frame = _with_duplicates(frame, spec.dup_rate, rng).with_columns(
            user_names(pl.col("referrer")).alias("referrer_id"),
            pl.when(pl.col("event_type") == "referral.bound").then(1).otherwise("value").alias("value"),
        )
        _write_day(spec, frame.with_columns(_attributes(d)), offsets, totals, rng, spec.bad_rate)
        _write_day(spec, _registrations(spec, d, sign_ups).with_columns(_attributes(d)), offsets, totals, sign_ups, 0.0)
        if progress:
            progress(1)
    return totals


def _write_day(
    spec: GenerateSpec,
    frame: pl.DataFrame,
    offsets: dict[tuple[str, int], int],
    totals: dict[str, int],
    rng: np.random.Generator,
    bad_rate: float,
) -> None:
    """One file per topic, partition and UTC hour (redeliveries in a later file), as the sink does."""
    frame = frame.with_columns(pl.col("occurred_at").dt.truncate("1h").alias("hour"))
    totals["events"] += int((~frame["redelivered"]).sum())
    totals["redeliveries"] += int(frame["redelivered"].sum())
    groups = frame.sort("occurred_at").partition_by(["topic", "partition", "hour"], as_dict=True, maintain_order=True)
    for (topic, part, hour), group in sorted(groups.items()):
        fmt = spec.formats[zlib.crc32(f"{topic}/{part}/{hour:%H}/{spec.seed}".encode()) % len(spec.formats)]
        folder = hour_folder(spec.landing, str(topic), hour)
        folder.mkdir(parents=True, exist_ok=True)
        for redelivered, chunk in (
            (False, group.filter(~pl.col("redelivered"))),
            (True, group.filter(pl.col("redelivered"))),
        ):
            if chunk.is_empty():
                continue
            key = (str(topic), int(part))
            offset = offsets.get(key, 0)
            name = f"{topic}+{part}+{offset}.{fmt}"
            n_bad = 0
            if fmt == "parquet":
                _write_parquet(chunk, folder / name)
            else:
                lines: pl.Series | list[str] = _json_lines(chunk, rng)
                if bad_rate > 0 and not redelivered:
                    n_bad = int(rng.binomial(len(lines), bad_rate))
                    lines = lines.to_list()
                    for bad in _bad_lines(n_bad, hour, rng, f"{topic}-{part}-{offset}"):
                        lines.insert(int(rng.integers(0, len(lines) + 1)), bad)
                _write_lines(lines, folder / name)
            offsets[key] = offset + chunk.height + n_bad
            totals["files"] += 1
            totals["bad"] += n_bad
