"""Fetching many landing objects: obstore (the landing reader's client) against boto3.

Puts OBJECTS objects of SIZE bytes into a fresh bucket on the S3 server the AWS_* variables name
(by default scripts/services' local one: moto on 127.0.0.1:$S3_PORT), then, alternating, downloads
all of them to a scratch folder with each client, THREADS at a time, and prints the medians and
the ratio boto3/obstore.

    .venv/bin/python bench/object_fetch.py --objects 300 --size 300000 --threads 16 --repeat 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3

from leaderboard import objstore
from leaderboard.objstore import S3Location


def _obstore(location: S3Location, keys: list[str], into: Path, threads: int) -> float:
    store = objstore.store_of(location)
    objstore.FETCH_THREADS = threads
    t0 = time.perf_counter()
    objstore.download(store, [(k, into / k) for k in keys])
    return time.perf_counter() - t0


def _boto3(location: S3Location, keys: list[str], into: Path, threads: int) -> float:
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), region_name=os.environ["AWS_REGION"])

    def one(key: str) -> None:
        path = into / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(client.get_object(Bucket=location.bucket, Key=key)["Body"].read())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, keys))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objects", type=int, default=300)
    p.add_argument("--size", type=int, default=300_000)
    p.add_argument("--threads", type=int, default=16)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    os.environ.setdefault("AWS_ENDPOINT_URL", f"http://127.0.0.1:{os.environ.get('S3_PORT', '9020')}")
    local = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
    for name, value in local.items():
        os.environ.setdefault(name, value)
    location = S3Location(f"bench-fetch-{uuid.uuid4().hex[:8]}")
    admin = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name=os.environ["AWS_REGION"])
    admin.create_bucket(Bucket=location.bucket)
    store = objstore.store_of(location)
    keys = [f"topics/t/year=2026/month=11/day=20/hour={i % 24:02d}/t+{i}+0.json.gz" for i in range(args.objects)]
    for key in keys:
        objstore.put_bytes(store, key, os.urandom(args.size))
    runs: dict[str, list[float]] = {"obstore": [], "boto3": []}
    sides = [("obstore", _obstore), ("boto3", _boto3)]
    try:
        for i in range(args.repeat):
            for name, fetch in sides if i % 2 == 0 else sides[::-1]:
                scratch = Path(tempfile.mkdtemp(prefix="fetch-"))
                try:
                    runs[name].append(fetch(location, keys, scratch, args.threads))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
                print(f"  {name:8} {runs[name][-1]:.2f}s", flush=True)
    finally:
        objstore.delete(store, keys)
        admin.delete_bucket(Bucket=location.bucket)
    med = {name: statistics.median(r) for name, r in runs.items()}
    print(
        f"{args.objects} objects of {args.size:,} bytes, {args.threads} threads, {args.repeat} runs each: "
        f"obstore {med['obstore']:.2f}s, boto3 {med['boto3']:.2f}s, boto3/obstore {med['boto3'] / med['obstore']:.2f}x"
    )


if __name__ == "__main__":
    main()
