"""Display names from the identity service (docs/contracts.md#identity-service).

When IDENTITY_SERVICE_URL is set, a publish asks `POST {url}/users/batch` with `{"ids": [...]}`
for the users it publishes that the cache (`stores/identity_cache.py`) has no fresh answer for,
best ranked first, in batches, until every one is answered or IDENTITY_TIMEOUT_SECONDS are spent
over all batches. The answers win over the names computed from events; a user the service did
not answer this time keeps the name last known (the cache's, even expired), else the event's.

The batches run in a worker thread that the publish stops waiting for at the deadline, so no
slow connect, DNS lookup or trickling answer delays a publish past it; the worker itself gives
up at its next read after the deadline.

httpx is the client: already a dependency (the dashboard's), with per-request timeouts and
streamed bodies, which is what a deadline over several requests needs; the standard library's
urllib has neither a body size bound nor a read deadline short of socket timeouts.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import polars as pl

from leaderboard.settings import Settings
from leaderboard.stores.identity_cache import CACHE_SCHEMA, IdentityCache

BATCH_PATH = "/users/batch"
MAX_NAME_CHARS = 256  # a longer display_name is cut: bodies stay small whatever the service sends
MAX_AVATAR_URL_CHARS = 2048  # a longer avatar_url is dropped (a cut URL is a broken one)
ANSWER_BYTES_PER_ID = 8192  # an answer larger than this per id asked is refused, not parsed

ANSWER_SCHEMA = {k: v for k, v in CACHE_SCHEMA.items() if k != "fetched_at"}


class IdentityError(RuntimeError):
    """A batch the service did not answer as the contract says; the message says how."""


@dataclass(frozen=True)
class IdentityService:
    """Where and how to ask; built from the IDENTITY_* settings."""

    url: str
    timeout_seconds: float = 5.0
    batch_size: int = 500
    cache_hours: float = 24.0

    @classmethod
    def from_settings(cls, s: Settings) -> IdentityService | None:
        """None when IDENTITY_SERVICE_URL is unset: names then come from events alone."""
        if not s.IDENTITY_SERVICE_URL:
            return None
        return cls(s.IDENTITY_SERVICE_URL, s.IDENTITY_TIMEOUT_SECONDS, s.IDENTITY_BATCH_SIZE, s.IDENTITY_CACHE_HOURS)

    @property
    def endpoint(self) -> str:
        return self.url.rstrip("/") + BATCH_PATH

    @property
    def server(self) -> str:
        """host:port for messages (never credentials in the URL)."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


def parse_answer(body: bytes, asked: Sequence[str]) -> pl.DataFrame:
    """One batch's answer as a row per id asked (ANSWER_SCHEMA); an id the service left out,
    or answered without a name, has a null `display_name`. Ids it was not asked are ignored."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise IdentityError(f"answer is not JSON: {exc}") from None
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict):
        raise IdentityError('answer has no "users" object')
    rows = []
    for user_id in asked:
        entry = users.get(user_id)
        if entry is None:
            rows.append((user_id, None, None))
            continue
        if not isinstance(entry, dict):
            raise IdentityError(f"users[{user_id!r}] is not an object")
        name, avatar = entry.get("display_name"), entry.get("avatar_url")
        if not isinstance(name, str | None) or not isinstance(avatar, str | None):
            raise IdentityError(f"users[{user_id!r}]: display_name and avatar_url must be strings or null")
        name = name[:MAX_NAME_CHARS] if name and name.strip() else None
        avatar = avatar if avatar and len(avatar) <= MAX_AVATAR_URL_CHARS else None
        rows.append((user_id, name, avatar))
    return pl.DataFrame(rows, schema=ANSWER_SCHEMA, orient="row")


@dataclass
class _Progress:
    """What the worker thread hands over; nothing changes after `closed` (the deadline)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[pl.DataFrame] = field(default_factory=list)
    asked: int = 0
    error: str | None = None
    done: bool = False
    closed: bool = False


class _PastDeadline(Exception):
    pass


def _post(client: httpx.Client, service: IdentityService, batch: list[str], deadline: float) -> pl.DataFrame:
    left = deadline - time.monotonic()
    if left <= 0:
        raise _PastDeadline
    limit = len(batch) * ANSWER_BYTES_PER_ID
    try:
        with client.stream("POST", service.endpoint, json={"ids": batch}, timeout=left) as answer:
            if not answer.is_success:
                raise IdentityError(f"HTTP {answer.status_code} from {service.server}")
            body = bytearray()
            for chunk in answer.iter_bytes():
                body += chunk
                if len(body) > limit:
                    raise IdentityError(f"answer larger than {limit} bytes for {len(batch)} ids")
                if time.monotonic() > deadline:
                    raise _PastDeadline
    except httpx.TimeoutException:
        raise _PastDeadline from None
    except httpx.HTTPError as exc:
        raise IdentityError(f"{type(exc).__name__} from {service.server}: {exc}".rstrip(": ")) from None
    return parse_answer(bytes(body), batch)


def _batches(service: IdentityService, ids: Sequence[str] | pl.Series, deadline: float, progress: _Progress) -> None:
    try:
        with httpx.Client(timeout=service.timeout_seconds) as client:
            for start in range(0, len(ids), service.batch_size):
                batch = list(ids[start : start + service.batch_size])
                rows = _post(client, service, batch, deadline)
                with progress.lock:
                    if progress.closed:
                        return
                    progress.answers.append(rows)
                    progress.asked += len(batch)
        with progress.lock:
            progress.done = True
    except _PastDeadline:
        return  # the caller reports the budget as spent
    except IdentityError as exc:
        with progress.lock:
            if not progress.closed:
                progress.error = str(exc)
    except Exception as exc:  # a bug here must not fail the publish either: it is reported
        with progress.lock:
            if not progress.closed:
                progress.error = f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Answers:
    """What the service answered within the budget."""

    rows: pl.DataFrame  # ANSWER_SCHEMA, one row per id of every answered batch
    error: str | None  # the failed batch's reason, if one failed
    spent: bool  # the budget ran out before every id was answered
    seconds: float


def ask(service: IdentityService, ids: Sequence[str] | pl.Series) -> Answers:
    """Ask for `ids` in batches, in order, for at most `service.timeout_seconds` in all.

    Never raises for the service's sake: a failed batch ends the asking with its reason in
    `error`, and the batches answered before it are kept.
    """
    t0 = time.monotonic()
    if len(ids) == 0:
        return Answers(pl.DataFrame(schema=ANSWER_SCHEMA), None, False, 0.0)
    deadline = t0 + service.timeout_seconds
    progress = _Progress()
    worker = threading.Thread(target=_batches, args=(service, ids, deadline, progress), name="identity", daemon=True)
    worker.start()
    worker.join(timeout=max(0.0, deadline - time.monotonic()))
    with progress.lock:
        progress.closed = True
        answered = pl.concat(progress.answers) if progress.answers else pl.DataFrame(schema=ANSWER_SCHEMA)
        error, spent = progress.error, progress.error is None and not progress.done
    return Answers(answered, error, spent, round(time.monotonic() - t0, 3))


def users_by_rank(table: pl.DataFrame, boards: Sequence[str]) -> pl.Series:
    """The users of those boards in a standings frame, each once, best rank first: the order
    they are asked in, so a budget that runs out leaves the bottom of the boards unasked."""
    return (
        table.lazy()
        .filter(pl.col("board_id").is_in(list(boards)))
        .select("user_id", "rank")
        .sort("rank", "user_id")
        .unique("user_id", keep="first", maintain_order=True)
        .collect()
        .get_column("user_id")
    )


def apply_names(table: pl.DataFrame, names: pl.DataFrame, boards: Sequence[str]) -> pl.DataFrame:
    """A standings frame with `display_name` set from `names` (user_id, display_name; a null
    name changes nothing) on the rows of `boards`; the column is added when missing (before
    `metadata` if there is one, else last) and kept as it is elsewhere."""
    if "display_name" not in table.columns:
        at = table.columns.index("metadata") if "metadata" in table.columns else table.width
        table = table.insert_column(at, pl.lit(None, pl.String).alias("display_name"))
    known = names.select("user_id", pl.col("display_name").alias("_known")).filter(pl.col("_known").is_not_null())
    named = table.join(known, on="user_id", how="left", validate="m:1", maintain_order="left")
    use = pl.col("board_id").is_in(list(boards)) & pl.col("_known").is_not_null()
    return named.with_columns(
        pl.when(use).then(pl.col("_known")).otherwise(pl.col("display_name")).alias("display_name")
    ).drop("_known")


@dataclass(frozen=True)
class Named:
    """A standings frame with names applied, and what the publish reports about it."""

    table: pl.DataFrame
    report: str  # "ok: ...", "partial: ..." or "unavailable: <reason>; ..."
    asked: int  # ids sent in batches the service answered
    wanted: int  # ids missing or expired in the cache
    from_cache: int  # published users named from the cache rather than this run's answers


def name_standings(
    table: pl.DataFrame, boards: Sequence[str], service: IdentityService, cache: IdentityCache, now: dt.datetime
) -> Named:
    """Ask the service for the users of `boards` missing or expired in `cache`, keep its
    answers there, and apply every name known (this run's answers, else the cache's)."""
    users = users_by_rank(table, boards)
    cached = cache.lookup(users)
    fresh = cached.filter(pl.col("fetched_at") >= now - dt.timedelta(hours=service.cache_hours))
    wanted = users.to_frame().join(fresh, on="user_id", how="anti", maintain_order="left").get_column("user_id")
    answers = ask(service, wanted)
    cache.save(answers.rows.with_columns(pl.lit(now).cast(CACHE_SCHEMA["fetched_at"]).alias("fetched_at")))
    older = cached.join(answers.rows.select("user_id"), on="user_id", how="anti")
    names = pl.concat([answers.rows.select("user_id", "display_name"), older.select("user_id", "display_name")])
    from_cache = older.filter(pl.col("display_name").is_not_null()).height
    asked, budget = answers.rows.height, f"{service.timeout_seconds:g} s"
    if answers.error is not None:
        state = f"unavailable: {answers.error}; {asked} of {len(wanted)} asked"
    elif answers.spent and not asked:
        state = f"unavailable: no answer from {service.server} within {budget}; 0 of {len(wanted)} asked"
    elif answers.spent:
        state = (
            f"partial: time budget of {budget} spent, {asked} of {len(wanted)} asked, the rest left for later publishes"
        )
    else:
        state = f"ok: {asked} asked"
    report = f"{state}; {from_cache} names from cache"
    return Named(apply_names(table, names, boards), report, asked, len(wanted), from_cache)
