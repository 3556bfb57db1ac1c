"""Object storage locations (`s3://bucket/prefix`) for the landing zone and the lake.

Credentials, region and endpoint come from the standard AWS variables, read by obstore (the
Rust `object_store` crate) itself: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL` (MinIO and other S3-compatible servers),
and the pod's role (web identity or instance metadata) where none are set. Plain http is
allowed for a loopback endpoint; elsewhere only with `AWS_ALLOW_HTTP=true`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

ObjectStoreError = BaseError  # every obstore failure but a missing object (FileNotFoundError)

SCHEME = "s3://"
# S3's bucket naming rules (lower case, digits, dots, hyphens; 3-63 characters)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
FETCH_THREADS = 16  # parallel GETs: one object's latency, not the bandwidth, bounds a small file


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing `/`; empty for the bucket's root)."""

    bucket: str
    prefix: str = ""

    def __str__(self) -> str:
        return self.url()

    def url(self, rel: str = "") -> str:
        key = self.key(rel)
        return f"{SCHEME}{self.bucket}/{key}" if key else f"{SCHEME}{self.bucket}"

    def key(self, rel: str = "") -> str:
        """The object key of `rel` (a path relative to the prefix, `/`-separated)."""
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix and rel else self.prefix or rel

    def rel(self, key: str) -> str:
        """`key` relative to the prefix (the inverse of `key`)."""
        return key[len(self.prefix) + 1 :] if self.prefix else key


Location = Path | S3Location


def is_s3(value: object) -> bool:
    return isinstance(value, S3Location) or (isinstance(value, str) and value.startswith(SCHEME))


def location_of(text: str) -> Location:
    """A folder path or an `s3://` URL, as the settings give it (already validated)."""
    return parse_s3_url(text) if is_s3(text) else Path(text)


def location_text(location: Location) -> str:
    """The inverse of `location_of`: a folder as an absolute path, a bucket as its URL."""
    return location.url() if isinstance(location, S3Location) else str(location.resolve())


def parse_s3_url(text: str) -> S3Location:
    """`s3://bucket/prefix` as a location; a malformed one raises ValueError saying why."""
    hint = "expected s3://bucket or s3://bucket/prefix"
    if not text.startswith(SCHEME):
        raise ValueError(f"not an s3:// URL; {hint}")
    parts = urlsplit(text)
    if parts.query or parts.fragment or "@" in parts.netloc or ":" in parts.netloc:
        raise ValueError(f"must have no user, port, ?query or #fragment; {hint}")
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"{bucket!r} is not a bucket name (3-63 lower-case letters, digits, '.' or '-'); {hint}")
    prefix = parts.path.strip("/")
    if any(not part or part in (".", "..") for part in prefix.split("/") if prefix) or any(c.isspace() for c in prefix):
        raise ValueError(f"the prefix {prefix!r} has an empty, '.' or '..' segment or a blank; {hint}")
    return S3Location(bucket, prefix)


def _loopback(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def store_of(location: S3Location, *, quick: bool = False) -> S3Store:
    """An obstore client for the bucket (keys relative to the bucket, not the prefix).

    `quick`: few retries and short timeouts, for a check at start that must fail fast.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT") or ""
    client: dict[str, Any] = {}
    if endpoint.startswith("http://") and _loopback(endpoint):
        client["allow_http"] = True
    kwargs: dict[str, Any] = {}
    if endpoint:
        kwargs["endpoint"] = endpoint
        # path-style requests: MinIO and most S3-compatible servers have no per-bucket host names
        kwargs["virtual_hosted_style_request"] = False
    if quick:
        client |= {"connect_timeout": "3s", "timeout": "10s"}
        kwargs["retry_config"] = {"max_retries": 1, "retry_timeout": dt.timedelta(seconds=5)}
    return S3Store(location.bucket, client_options=client or None, **kwargs)


def cached_store(location: S3Location) -> S3Store:
    """`store_of`, one client per bucket and AWS settings for the process (clients pool connections)."""
    env = tuple(os.environ.get(n, "") for n in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_REGION"))
    return _cached(location.bucket, env)


@lru_cache(maxsize=16)
def _cached(bucket: str, env: tuple[str, ...]) -> S3Store:
    return store_of(S3Location(bucket))


def head(store: S3Store, key: str) -> ObjectInfo | None:
    try:
        m = obstore.head(store, key)
    except FileNotFoundError:
        return None
    return ObjectInfo(m["path"], m["size"], m["last_modified"], m.get("e_tag") or "")


def check_bucket(location: S3Location) -> None:
    """Raise ValueError naming the bucket when it cannot be listed (missing, unreachable, denied)."""
    try:
        obstore.list_with_delimiter(store_of(location, quick=True), prefix=location.key() or None)
    except Exception as exc:  # obstore raises its own error types for every transport and HTTP failure
        first = str(exc).splitlines()[0][:300]
        raise ValueError(f"bucket {location.bucket!r} cannot be listed: {first}") from None


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: dt.datetime
    etag: str


def list_objects(store: S3Store, prefix: str) -> Iterator[ObjectInfo]:
    """Every object under `prefix` (a folder: `/` is appended)."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    for page in obstore.list(store, prefix=prefix or None):
        for meta in page:
            yield ObjectInfo(meta["path"], meta["size"], meta["last_modified"], meta.get("e_tag") or "")


def list_children(store: S3Store, prefix: str) -> tuple[list[str], list[ObjectInfo]]:
    """One level under `prefix`: its sub-prefixes (names only) and its objects."""
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    found = obstore.list_with_delimiter(store, prefix=prefix or None)
    names = [p.rstrip("/").rsplit("/", 1)[-1] for p in found["common_prefixes"]]
    objects = [ObjectInfo(m["path"], m["size"], m["last_modified"], m.get("e_tag") or "") for m in found["objects"]]
    return names, objects


def get_bytes(store: S3Store, key: str) -> bytes | None:
    """An object's bytes, or None when there is no such object."""
    try:
        return bytes(obstore.get(store, key).bytes())
    except FileNotFoundError:
        return None


def put_bytes(store: S3Store, key: str, data: bytes) -> None:
    """One PUT: readers see the old object or the new one, never part of it."""
    obstore.put(store, key, data)


def delete(store: S3Store, keys: list[str]) -> None:
    if keys:
        obstore.delete(store, keys)


def download(store: S3Store, pairs: list[tuple[str, Path]]) -> None:
    """Fetch objects to local files, in parallel (see FETCH_THREADS)."""

    def one(pair: tuple[str, Path]) -> None:
        key, path = pair
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(obstore.get(store, key).bytes())

    with ThreadPoolExecutor(min(FETCH_THREADS, max(1, len(pairs)))) as pool:
        list(pool.map(one, pairs))
