"""Benchmark: one day of landed events through our ingest+rank path vs a bare DuckDB query.

Generates one local day of N events as landed NDJSON and as Parquet (cached in --workdir),
then, per format and alternating order, runs in fresh subprocesses:
  ours    ingest_day (read, validate, quarantine, dedupe, write clean events)
          + score_day + rank_period + publish_period for the daily period (all boards)
  duckdb  read_json/read_parquet -> GROUP BY user -> RANK() over the same files, result fetched
  copy    DuckDB's own typed reader straight into one Parquet file: no checks, no dedupe, no
          ranking; the least any path that writes the day's clean events to the lake must do
  copy-text  (Parquet) the same with attributes written as JSON text, as clean events hold them
  copy-rank  copy-text, then each board ranked by a bare GROUP BY -> RANK() over the copied file
and prints medians, the ratio ours/duckdb (and copy/duckdb), each side's peak RSS, and ours'
parts as multiples of copy's time.

    .venv/bin/python bench/ingest_rank.py --events 10000000 --repeat 3
    .venv/bin/python bench/ingest_rank.py --events 10000000 --bad-rate 0.001 --dup-rate 0.01 --formats json --only-ours

--s3 also runs ours with the landing zone in a bucket (uploaded once per format) on the S3 server
the AWS_* variables name, by default scripts/services' local one (moto, 127.0.0.1:$S3_PORT), and
prints its median against the same day from local files; --s3-lake puts the lake there too:

    .venv/bin/python bench/ingest_rank.py --events 1000000 --users 100000 --only-ours --s3 --repeat 3

--code DIR runs another checkout's pipeline as ours (bench/checkout.py); given more than once,
each checkout's runs alternate with the others' and the medians are compared to the first's:

    git worktree add /tmp/before <commit> && .venv/bin/python bench/ingest_rank.py --formats json \
        --only-ours --code /tmp/before --code .
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from leaderboard.objstore import S3Location

DAY = dt.date(2026, 11, 20)
ROOT = Path(__file__).resolve().parents[1]


def _landing(workdir: Path, fmt: str, events: int, users: int, bad_rate: float, dup_rate: float) -> Path:
    suffix = f"-bad{bad_rate}-dup{dup_rate}" if bad_rate or dup_rate else ""
    landing = workdir / f"landing-{fmt}-{events}-{users}{suffix}"
    marker = landing / ".complete"
    if not marker.exists():
        # In a subprocess: ru_maxrss is inherited across fork, so the parent must stay small.
        shutil.rmtree(landing, ignore_errors=True)
        t0 = time.perf_counter()
        code = (
            "import sys, datetime as dt; from pathlib import Path;"
            "from pipelines.generate import GenerateSpec, generate;"
            f"generate(GenerateSpec(Path(sys.argv[1]), dt.date.fromisoformat('{DAY}'), 1, {users}, {events},"
            f" seed=1, bad_rate={bad_rate}, dup_rate={dup_rate}, formats=('{fmt}',)))"
        )
        subprocess.run([sys.executable, "-c", code, str(landing)], check=True, cwd=ROOT)
        marker.write_text("ok")
        print(f"generated {events:,} events as {fmt} in {time.perf_counter() - t0:.1f}s -> {landing}", flush=True)
    return landing


SCALE_CODE = """
import sys
from pathlib import Path
import polars as pl
src, out, factor = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for path in sorted(src.glob("topics/*/*/*/*/*/*.parquet")):
    table = pl.read_parquet(path)
    topic, part, offset = path.name.removesuffix(".parquet").split("+")
    folder = out / path.parent.relative_to(src)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(factor):  # the same records again with other ids, in files of later offsets
        copy = table.with_columns(pl.col("event_id") + f"-{k}")
        copy.write_parquet(folder / f"{topic}+{part}+{int(offset) + k * 10**12}.parquet")
"""


def _scaled(landing: Path, factor: int) -> Path:
    """`landing` (Parquet) `factor` times over, each copy's event ids made its own: a day of
    `factor` times the events with the same users and hours, without generating it whole."""
    out = landing.with_name(f"{landing.name}-x{factor}")
    marker = out / ".complete"
    if not marker.exists():
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", SCALE_CODE, str(landing), str(out), str(factor)], check=True)
        marker.write_text("ok")
        print(f"made {factor}x {landing.name} in {time.perf_counter() - t0:.1f}s -> {out}", flush=True)
    return out


def _bucket(workdir: Path, landing: Path) -> str:
    """A bucket on the S3 server holding `landing` under `landing/`, made once (named in workdir)."""
    import boto3

    from leaderboard import objstore
    from leaderboard.objstore import S3Location

    marker = landing / ".bucket"
    if marker.exists():
        return marker.read_text()
    name = f"bench-{landing.name.lower().replace('.', '-')}"[:63].rstrip("-")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), region_name=os.environ["AWS_REGION"])
    client.create_bucket(Bucket=name)
    store, location = objstore.store_of(S3Location(name)), S3Location(name, "landing")
    t0 = time.perf_counter()
    files = [p for p in sorted((landing / "topics").rglob("*")) if p.is_file()]
    for path in files:
        objstore.put_bytes(store, location.key(path.relative_to(landing).as_posix()), path.read_bytes())
    marker.write_text(name)
    print(f"uploaded {len(files)} files to s3://{name}/landing in {time.perf_counter() - t0:.1f}s", flush=True)
    return name


# Steps of `ingest_day` timed apart (where the checkout has them): it scores the day itself.
PHASES = ("read_day", "dedupe", "score_events")


def _timing_phases(steps: ModuleType) -> dict[str, float]:
    """Wraps the PHASES that `steps` calls so that each adds its seconds to the returned dict."""
    spent: dict[str, float] = {}

    def timed(name: str, step: Callable[..., Any]) -> Callable[..., Any]:
        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return step(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - t0

        return run

    for name in PHASES:
        if hasattr(steps, name):
            setattr(steps, name, timed(name, getattr(steps, name)))
    return spent


def _run_ours(landing: Path | S3Location, lake_dir: Path | S3Location) -> dict:
    from checkout import load

    import pipelines.steps
    from leaderboard.boards import load_boards
    from leaderboard.periods import period_of
    from leaderboard.settings import DEFAULT_BOARDS_FILE
    from pipelines.steps import ingest_day, publish_period, rank_period, score_day

    phases = _timing_phases(pipelines.steps)
    if isinstance(lake_dir, Path):
        shutil.rmtree(lake_dir, ignore_errors=True)
    boards, lake, period = load_boards(DEFAULT_BOARDS_FILE), load("lake").Lake(lake_dir), period_of("daily", DAY)
    c0, t0 = time.process_time(), time.perf_counter()
    stats = ingest_day(landing, lake, boards, DAY)
    t1 = time.perf_counter()
    score_day(lake, boards, DAY)
    t2 = time.perf_counter()
    table = rank_period(lake, boards, period)
    publish_period(lake, boards, period, table, "bench")
    t3 = time.perf_counter()
    return {
        "seconds": t3 - t0,
        "cpu": time.process_time() - c0,  # every thread's, so the machine's other load counts less than in wall time
        "ingest": t1 - t0,
        "score": t2 - t1,
        "rank_publish": t3 - t2,
        "phases": phases,
        "read": stats.read,
        "quarantined": stats.quarantined,
        "duplicates": stats.duplicates,
        "ranked": table.height,
        "boards": len(boards.boards),
    }


# The event record's fields as DuckDB's reader would type them (it coerces what does not fit;
# see leaderboard/landing/contract.py)
TYPED = (
    "{event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR', occurred_at: 'VARCHAR', value: 'DOUBLE', "
    "attributes: 'JSON'}"
)


def _run_duckdb(landing: Path, fmt: str) -> dict:
    import duckdb

    con = duckdb.connect()
    glob = f"{landing}/topics/*/*/*/*/*/*.{fmt}"
    source = f"read_json('{glob}', format='newline_delimited')" if fmt == "json" else f"read_parquet('{glob}')"
    t0 = time.perf_counter()
    table = con.sql(
        f"SELECT user_id, sum(value) AS score, rank() OVER (ORDER BY sum(value) DESC) AS rank "
        f"FROM {source} GROUP BY user_id"
    ).to_arrow_table()
    return {"seconds": time.perf_counter() - t0, "ranked": table.num_rows}


def _run_copy(landing: Path, fmt: str, out: Path, text: bool = False, keep: bool = False) -> dict:
    """`text`: attributes written as JSON text, as clean events hold them (NDJSON's already are);
    `keep`: leave the file in place."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")  # the cheaper setting (ours keeps order for JSON only)
    glob = f"{landing}/topics/*/*/*/*/*/*.{fmt}"
    source = (  # the event record's columns only, not the hour folders' key=value parts
        f"read_json('{glob}', format='newline_delimited', columns={TYPED})"
        if fmt == "json"
        else f"read_parquet('{glob}', hive_partitioning=false)"
    )
    t0 = time.perf_counter()
    columns = "* REPLACE (to_json(attributes)::VARCHAR AS attributes)" if text else "*"
    rows = con.execute(f"COPY (SELECT {columns} FROM {source}) TO '{out}' (FORMAT parquet)").fetchone()[0]  # type: ignore[index]
    seconds = time.perf_counter() - t0
    if not keep:
        out.unlink()
    return {"seconds": seconds, "rows": rows}


def _run_copy_rank(landing: Path, fmt: str, out: Path) -> dict:
    """`copy` (with attributes as text), then each board of `leaderboard/boards.yaml` ranked by a bare
    `GROUP BY -> RANK()` over the copied file: its aggregate over its event types, per user or
    group, with no name, metadata, tie order, dedupe or check. The least a path that writes the
    day's clean events and ranks every board from them must do."""
    import duckdb

    from leaderboard.boards import load_boards
    from leaderboard.settings import DEFAULT_BOARDS_FILE

    copied = _run_copy(landing, fmt, out, text=True, keep=True)
    con = duckdb.connect()
    t0 = time.perf_counter()
    ranked = 0
    for board in load_boards(DEFAULT_BOARDS_FILE).boards:
        types = ", ".join(f"'{t}'" for t in board.event_types)
        who = f"json_extract_string(attributes, '$.{board.group_by}')" if board.group_by else "user_id"
        score = {"sum": "sum(value)", "count": "count(*)", "max": "max(value)", "min": "min(value)"}[board.aggregate]
        order = "DESC" if board.order == "desc" else "ASC"
        ranked += (
            con.sql(
                f"SELECT who, score, rank() OVER (ORDER BY score {order}) AS rank FROM (SELECT {who} AS who, "
                f"{score} AS score FROM read_parquet('{out}') WHERE event_type IN ({types}) GROUP BY who "
                "HAVING who IS NOT NULL)"
            )
            .to_arrow_table()
            .num_rows
        )
    out.unlink()
    return {"seconds": copied["seconds"] + time.perf_counter() - t0, "ranked": ranked}


def _run_incremental(landing: Path, workdir: Path, share: float) -> dict:
    """The day live: a refresh reading all files but every 1/share-th one (the day so far), then
    a refresh adding those (the files landed since); each followed by its scores."""
    from leaderboard.boards import load_boards
    from leaderboard.landing import list_files
    from leaderboard.periods import period_of
    from leaderboard.settings import DEFAULT_BOARDS_FILE
    from leaderboard.stores.lake import Lake
    from pipelines.steps import refresh_day, score_day

    boards = load_boards(DEFAULT_BOARDS_FILE)
    start, end = period_of("daily", DAY).bounds(boards.tz)
    files, _ = list_files(landing, start, end)
    step = round(1 / share)
    later = {f.path for i, f in enumerate(files) if i % step == step // 2}
    live_landing, lake_dir = workdir / "live-landing", workdir / "live-lake"
    shutil.rmtree(live_landing, ignore_errors=True)
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake = Lake(lake_dir)

    def link(paths: list[Path]) -> None:  # hard links: the same files, landing in two steps
        for path in paths:
            target = live_landing / path.relative_to(landing)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.hardlink_to(path)

    link([f.path for f in files if f.path not in later])
    t0 = time.perf_counter()
    first = refresh_day(live_landing, lake, boards, DAY)
    score_day(lake, boards, DAY)
    t1 = time.perf_counter()
    link(sorted(later))
    t2 = time.perf_counter()
    second = refresh_day(live_landing, lake, boards, DAY)
    score_day(lake, boards, DAY)
    t3 = time.perf_counter()
    shutil.rmtree(live_landing, ignore_errors=True)
    return {
        "seconds": t3 - t2,
        "first": t1 - t0,
        "new_files": len(later),
        "files": len(files),
        "new_events": second.read - first.read,
        "read": second.read,
    }


def _child(args: argparse.Namespace) -> None:
    from checkout import use

    use(args.code[0])  # the checkout whose pipeline "ours" runs
    landing = Path(args.landing)
    workdir = Path(args.workdir)
    if args.child == "ours":
        result = _run_ours(landing, workdir / "lake")
    elif args.child == "ours-s3":
        from leaderboard.objstore import S3Location

        bucket = (landing / ".bucket").read_text()
        lake = S3Location(bucket, f"lake-{time.time_ns()}") if args.s3_lake else workdir / "lake"
        result = _run_ours(S3Location(bucket, "landing"), lake)
    elif args.child in ("copy", "copy-text"):
        result = _run_copy(landing, args.fmt, workdir / "copy.parquet", text=args.child == "copy-text")
    elif args.child == "copy-rank":
        result = _run_copy_rank(landing, args.fmt, workdir / "copy.parquet")
    elif args.child == "incremental":
        result = _run_incremental(landing, workdir, args.share)
    else:
        result = _run_duckdb(landing, args.fmt)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def _scale(args: argparse.Namespace, code: str, workdir: Path) -> None:
    """Ours on the Parquet day and on the day `args.scale` times larger, alternated."""
    day = _landing(workdir, "parquet", args.events, args.users, 0.0, 0.0)
    sizes = {"day": day, "scaled": _scaled(day, args.scale)}
    runs: dict[str, list[dict]] = {"day": [], "scaled": []}
    for i in range(args.repeat):
        for size in ("day", "scaled") if i % 2 == 0 else ("scaled", "day"):
            cmd = [sys.executable, __file__, "--child", "ours", "--landing", str(sizes[size]), "--fmt", "parquet",
                   "--workdir", str(workdir), "--code", code]  # fmt: skip
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
            runs[size].append(json.loads(out.strip().splitlines()[-1]))
            r = runs[size][-1]
            print(f"  {size:6} {r['seconds']:7.2f}s (ingest {r['ingest']:.2f}s) {r['read']:,} records, "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    med = {k: statistics.median(r["seconds"] for r in rs) for k, rs in runs.items()}
    rss = {k: max(r["peak_rss_mb"] for r in rs) for k, rs in runs.items()}
    print(
        f"parquet  {runs['day'][0]['read']:,} records: {med['day']:.2f}s, peak RSS {rss['day']:.0f} MB; "
        f"{runs['scaled'][0]['read']:,} records: {med['scaled']:.2f}s ({med['scaled'] / med['day']:.2f}x), "
        f"peak RSS {rss['scaled']:.0f} MB  (ours: ingest + score + rank + publish; runs: {args.repeat} each)",
        flush=True,
    )


def _medians(runs: list[dict]) -> tuple[dict[str, float], dict[str, float]]:
    """Medians of where ours' time went: ingest, the score step after it, and ranking with
    publishing; and the phases inside the ingest (PHASES)."""
    med = {k: statistics.median(r[k] for r in runs) for k in ("ingest", "score", "rank_publish")}
    steps = {name: statistics.median(r.get("phases", {}).get(name, 0.0) for r in runs) for name in PHASES}
    return med, steps


def _parts(runs: list[dict]) -> str:
    """Where ours' time went: ingest (its read, dedupe and scoring apart), the score step after
    it, and ranking with publishing."""
    med, steps = _medians(runs)
    inside = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in steps.items() if seconds)
    inside = f" [{inside}]" if inside else ""
    return f"ingest {med['ingest']:.2f}s{inside}, score {med['score']:.2f}s, rank+publish {med['rank_publish']:.2f}s"


def _against_copy(runs: list[dict], ours: float, copy: float) -> str:
    """Ours' parts as multiples of copy's time, and how much ours is over 2.0x copy (issue 20's bar)."""
    med, steps = _medians(runs)
    rest = med["ingest"] - sum(steps.values())
    parts = {**steps, "the rest of the ingest": rest, "score": med["score"], "rank+publish": med["rank_publish"]}
    shares = ", ".join(f"{name} {seconds / copy:.2f}x" for name, seconds in parts.items() if seconds)
    return f"  ours against copy: {shares}; at 2.0x copy ours would take {2 * copy:.2f}s ({ours - 2 * copy:+.2f}s)"


def _incremental_report(fmt: str, args: argparse.Namespace, full: list[dict], live: list[dict]) -> None:
    ingest = statistics.median(r["ingest"] for r in full)
    refresh = statistics.median(r["seconds"] for r in live)
    first = statistics.median(r["first"] for r in live)
    one = live[0]
    print(
        f"{fmt:8} {args.events:,} events: a refresh adding {one['new_files']} of {one['files']} files "
        f"({one['new_events']:,} of {one['read']:,} records) took median {refresh:.2f}s (ingest + scores), "
        f"{refresh / ingest:.1%} of the full day's ingest ({ingest:.2f}s; its first live read with scores "
        f"{first:.2f}s); peak RSS {max(r['peak_rss_mb'] for r in live):.0f} MB  (runs: {args.repeat} each, alternated)",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bad-rate", type=float, default=0.0, help="share of broken records, as `leaderboard generate`")
    p.add_argument("--dup-rate", type=float, default=0.0, help="share of redelivered records")
    p.add_argument("--formats", default="json,parquet")
    p.add_argument("--only-ours", action="store_true", help="time our path alone (the bare query fails on broken JSON)")
    p.add_argument(
        "--code",
        action="append",
        help="checkout whose pipeline runs as ours (e.g. a git worktree; this one by default); repeat to compare",
    )
    p.add_argument("--workdir", default=str(ROOT / "bench" / "out"))
    p.add_argument("--s3", action="store_true", help="also run ours with the landing zone in a bucket")
    p.add_argument("--s3-lake", action="store_true", help="with --s3: the lake in the bucket too")
    p.add_argument(
        "--incremental",
        action="store_true",
        help="time a live refresh adding --share of the files to the day against ours (full ingest)",
    )
    p.add_argument(
        "--scale",
        type=int,
        default=0,
        help="time ours on the Parquet day and on one of SCALE times its events (its files copied with new ids)",
    )
    p.add_argument("--share", type=float, default=0.01, help="share of the day's files a refresh adds")
    children = ["ours", "ours-s3", "duckdb", "copy", "copy-text", "copy-rank", "incremental"]
    p.add_argument("--child", choices=children, help=argparse.SUPPRESS)
    p.add_argument("--landing", help=argparse.SUPPRESS)
    p.add_argument("--fmt", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args)
        return
    codes = [str(Path(c).resolve()) for c in args.code or [ROOT]]
    if args.s3:  # the local S3 server of scripts/services unless the environment names one
        os.environ.setdefault("AWS_ENDPOINT_URL", f"http://127.0.0.1:{os.environ.get('S3_PORT', '9020')}")
        local = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1"}
        for name, value in local.items():
            os.environ.setdefault(name, value)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.scale:
        _scale(args, codes[0], workdir)
        return
    for fmt in args.formats.split(","):
        landing = _landing(workdir, fmt, args.events, args.users, args.bad_rate, args.dup_rate)
        sides = [("ours", code) for code in codes]
        if args.s3:
            _bucket(workdir, landing)
            sides.append(("ours-s3", codes[0]))
        if args.incremental:
            sides = [("ours", codes[0]), ("incremental", codes[0])]
        elif not args.only_ours:
            sides += [("duckdb", codes[0]), ("copy", codes[0])]
            sides += [("copy-text", codes[0])] if fmt == "parquet" else []
            sides += [("copy-rank", codes[0])]
        runs: dict[tuple[str, str], list[dict]] = {side: [] for side in sides}
        for i in range(args.repeat):
            for who, code in sides if i % 2 == 0 else sides[::-1]:
                cmd = [
                    sys.executable,
                    __file__,
                    "--child",
                    who,
                    "--landing",
                    str(landing),
                    "--fmt",
                    fmt,
                    "--workdir",
                    str(workdir),
                    "--code",
                    code,
                    "--share",
                    str(args.share),
                ]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
                runs[who, code].append(json.loads(out.strip().splitlines()[-1]))
                cpu = f" (CPU {runs[who, code][-1]['cpu']:.2f}s)" if "cpu" in runs[who, code][-1] else ""
                print(f"  {who:6} {runs[who, code][-1]['seconds']:7.2f}s{cpu}  {code}", flush=True)
        if args.incremental:
            _incremental_report(fmt, args, runs[sides[0]], runs[sides[1]])
            continue
        med = {side: statistics.median(r["seconds"] for r in rs) for side, rs in runs.items()}
        rss = {side: max(r["peak_rss_mb"] for r in rs) for side, rs in runs.items()}
        first = ("ours", codes[0])
        ours = runs[first][0]
        print(
            f"{fmt:8} {args.events:,} events, {ours['ranked']:,} ranked rows ({ours['boards']} boards), quarantined "
            f"{ours['quarantined']:,}, duplicates {ours['duplicates']:,}",
            flush=True,
        )
        cpu0 = statistics.median(r["cpu"] for r in runs[first])
        for code in codes:
            rs = runs["ours", code]
            counts = {(r["read"], r["quarantined"], r["duplicates"], r["ranked"]) for r in rs}
            if counts != {(ours["read"], ours["quarantined"], ours["duplicates"], ours["ranked"])}:
                print(f"  counts differ for {code}: (read, quarantined, duplicates, ranked) {sorted(counts)}")
            m, cpu = med["ours", code], statistics.median(r["cpu"] for r in rs)
            ratio = f", {m / med[first]:.2f}x the first (CPU {cpu / cpu0:.2f}x)" if code != codes[0] else ""
            print(
                f"  ours   median {m:.2f}s ({_parts(rs)}), CPU {cpu:.2f}s, peak RSS {rss['ours', code]:.0f} MB; "
                f"code {code}{ratio}",
                flush=True,
            )
        if args.s3:
            rs, where = runs["ours-s3", codes[0]], "landing and lake" if args.s3_lake else "landing"
            counts = {(r["read"], r["quarantined"], r["duplicates"], r["ranked"]) for r in rs}
            same = counts == {(ours["read"], ours["quarantined"], ours["duplicates"], ours["ranked"])}
            m, cpu = med["ours-s3", codes[0]], statistics.median(r["cpu"] for r in rs)
            peak = rss["ours-s3", codes[0]]
            print(
                f"  s3     median {m:.2f}s ({_parts(rs)}), CPU {cpu:.2f}s, peak RSS {peak:.0f} MB; "
                f"{where} in the bucket: {m / med[first]:.2f}x the local files (CPU {cpu / cpu0:.2f}x)"
                + ("" if same else f"; counts differ: {sorted(counts)}"),
                flush=True,
            )
        if args.only_ours:
            print(f"  (runs: {args.repeat} each, alternated)", flush=True)
            continue
        duck, copy = ("duckdb", codes[0]), ("copy", codes[0])
        print(
            f"  duckdb median {med[duck]:.2f}s ({runs[duck][0]['ranked']:,} users), peak RSS {rss[duck]:.0f} MB\n"
            f"  copy   median {med[copy]:.2f}s (typed read -> Parquet, nothing checked), peak RSS {rss[copy]:.0f} MB\n"
            f"  ratio ours/duckdb {med[first] / med[duck]:.2f}x, copy/duckdb {med[copy] / med[duck]:.2f}x, "
            f"ours/copy {med[first] / med[copy]:.2f}x  (ours: the first code; runs: {args.repeat} each)\n"
            + _against_copy(runs[first], med[first], med[copy]),
            flush=True,
        )
        if ("copy-text", codes[0]) in med:
            text = med["copy-text", codes[0]]
            print(
                f"  copy-text median {text:.2f}s (the same with attributes as JSON text, as clean events hold them): "
                f"{text / med[copy]:.2f}x copy; ours/copy-text {med[first] / text:.2f}x",
                flush=True,
            )
        rank = ("copy-rank", codes[0])
        print(
            f"  copy-rank median {med[rank]:.2f}s (copy with attributes as text, then each board's bare GROUP BY -> "
            f"RANK over it: {runs[rank][0]['ranked']:,} ranked rows): {med[rank] / med[copy]:.2f}x copy; "
            f"ours/copy-rank {med[first] / med[rank]:.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
