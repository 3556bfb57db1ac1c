"""Object storage locations: settings accept s3:// URLs and refuse bad ones by name."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import dagster as dg
import pytest

from leaderboard import objstore
from leaderboard.landing import hour_rel
from leaderboard.objstore import S3Location, parse_s3_url
from leaderboard.settings import SettingsError, load_settings
from pipelines import landing_watch
from pipelines.landing_watch import WatchCursor
from tests.conftest import event


def test_settings_take_a_bucket_and_prefix_or_a_folder(settings, s3_bucket, monkeypatch):
    monkeypatch.setenv("LEADERBOARD_LANDING_DIR", f"s3://{s3_bucket}/sink/landing/")
    monkeypatch.setenv("LEADERBOARD_LAKE_DIR", f"s3://{s3_bucket}")
    s = load_settings()
    assert S3Location(s3_bucket, "sink/landing") == s.LEADERBOARD_LANDING_DIR
    assert S3Location(s3_bucket, "") == s.LEADERBOARD_LAKE_DIR
    assert str(s.LEADERBOARD_LANDING_DIR) == f"s3://{s3_bucket}/sink/landing"
    monkeypatch.setenv("LEADERBOARD_LAKE_DIR", "data/lake")
    assert Path("data/lake") == load_settings().LEADERBOARD_LAKE_DIR


@pytest.mark.parametrize(
    ("value", "hint"),
    [
        ("s3://", "not a bucket name"),
        ("s3://Upper_Case/x", "not a bucket name"),
        ("s3://bucket:9000/x", "no user, port"),
        ("s3://bucket/a//b", "empty, '.' or '..' segment"),
        ("s3://bucket/x?versionId=1", "?query"),
        ("s3:/bucket/x", "not an s3:// URL"),
    ],
)
def test_a_malformed_url_is_refused_naming_the_variable(settings, monkeypatch, value, hint):
    monkeypatch.setenv("LEADERBOARD_LAKE_DIR", value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert f"LEADERBOARD_LAKE_DIR={value!r}" in str(err.value) and hint in str(err.value)


def test_a_missing_bucket_is_refused_naming_it(settings, s3_bucket, monkeypatch):
    monkeypatch.setenv("LEADERBOARD_LANDING_DIR", f"s3://{s3_bucket}-gone/landing")
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value)
    assert f"LEADERBOARD_LANDING_DIR='s3://{s3_bucket}-gone/landing'" in msg and "cannot be listed" in msg


def test_an_unreachable_endpoint_is_refused_quickly(settings, s3_bucket, monkeypatch):
    from tests.conftest import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("LEADERBOARD_LAKE_DIR", f"s3://{s3_bucket}/lake")
    with pytest.raises(SettingsError, match=rf"LEADERBOARD_LAKE_DIR='s3://{s3_bucket}/lake'.*cannot be listed"):
        load_settings()


def test_keys_and_urls_round_trip():
    loc = parse_s3_url("s3://my-bucket/a/b")
    assert loc.key("topics/t/x.json") == "a/b/topics/t/x.json"
    assert loc.rel(loc.key("topics/t/x.json")) == "topics/t/x.json"
    assert loc.url("topics") == "s3://my-bucket/a/b/topics"
    root = parse_s3_url("s3://my-bucket")
    assert root.key("x") == "x" and root.key() == "" and root.url() == "s3://my-bucket"


def _put(location: S3Location, hour: dt.datetime, name: str, records: list[dict], topic: str = "events") -> str:
    rel = f"{hour_rel(topic, hour)}/{name}"
    body = "".join(json.dumps(r) + "\n" for r in records).encode()
    objstore.put_bytes(objstore.store_of(location), location.key(rel), body)
    return rel


def _paths(changes: list) -> list[str]:
    return [c.path.rsplit("/", 1)[1] for c in changes]


def test_bucket_sensor_lists_the_head_every_tick_and_sweeps_old_hours_once(s3_bucket, monkeypatch):
    monkeypatch.setattr(landing_watch, "SLACK_NS", 2_000_000_000)  # S3 times are whole seconds
    monkeypatch.setattr(landing_watch, "SWEEP_HOURS", 48)
    location = S3Location(s3_bucket, "landing")
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    recent, old = now - dt.timedelta(hours=1), now - dt.timedelta(days=5, hours=3)
    _put(location, recent, "events+0+0.json", [event("a", "u", recent.isoformat(), 1)])
    _put(location, old, "events+0+0.json", [event("b", "u", old.isoformat(), 1)])
    time.sleep(2.5)  # older than the slack before the first tick
    first_hour = now - dt.timedelta(days=10)
    changes, cursor = landing_watch.scan_bucket(location, WatchCursor(), first_hour)
    assert _paths(changes) == ["events+0+0.json", "events+0+0.json"]  # the first tick: everything

    _put(location, recent, "events+1+0.json", [event("c", "u", recent.isoformat(), 1)])
    late = _put(location, old, "events+0+9.json", [event("d", "u", old.isoformat(), 1)])
    _put(location, recent, ".events+2+0.json.tmp", [event("e", "u", recent.isoformat(), 1)])
    _put(location, recent, "notes.txt", [event("f", "u", recent.isoformat(), 1)])
    listed: list[str] = []
    real = objstore.list_children

    def spy(store, prefix):
        listed.append(prefix)
        return real(store, prefix)

    monkeypatch.setattr(landing_watch.objstore, "list_children", spy)
    changes, cursor = landing_watch.scan_bucket(location, WatchCursor.from_json(cursor.to_json()), first_hour)
    assert _paths(changes) == ["events+1+0.json"]  # the head; the late one waits for the sweep
    # cost: the topics, and per topic the head (RECENT_HOURS before now, now, one ahead) and one sweep's hours
    assert len(listed) == 1 + (landing_watch.RECENT_HOURS + 2) + 48

    # ticks a quarter of an hour apart: the sweep (10 days, 48 hours a tick) finds the late file, once
    seen: list[str] = []
    t0 = time.time_ns()
    for k in range(1, 16):
        changes, cursor = landing_watch.scan_bucket(location, cursor, first_hour, now_ns=t0 + k * 900 * 10**9)
        seen += [c.path for c in changes]
    assert seen == [late]


def test_bucket_sensor_requests_the_days_of_new_objects(settings, s3_bucket, monkeypatch):
    from pipelines.definitions import build_defs
    from pipelines.resources import LakeResource

    monkeypatch.setattr(landing_watch, "SLACK_NS", 2_000_000_000)
    location = S3Location(s3_bucket, "landing")
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    yesterday = now - dt.timedelta(days=1)
    _put(location, yesterday, "events+0+0.json", [event("a", "u", yesterday.isoformat(), 1)])
    _put(location, now, "events+0+0.json", [event("b", "u", now.isoformat(), 1)])
    defs = build_defs(settings)
    sensor = defs.get_repository_def().get_sensor_def("landing_files")
    lake = LakeResource(landing_dir=location.url(), lake_dir=str(settings.LEADERBOARD_LAKE_DIR))

    def sense(cursor: str | None) -> dg.SensorResult:
        with (
            dg.DagsterInstance.ephemeral() as instance,
            dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"lake": lake}, definitions=defs
            ) as ctx,
        ):
            return sensor(ctx)

    first = sense(None)
    assert sorted(r.partition_key for r in first.run_requests) == sorted(
        {yesterday.date().isoformat(), now.date().isoformat()}
    )
    time.sleep(2.5)
    assert not sense(first.cursor).run_requests
    _put(location, now, "events+0+5.json", [event("c", "u", now.isoformat(), 1)])
    again = sense(first.cursor)
    assert [r.partition_key for r in again.run_requests] == [now.date().isoformat()]


def test_a_bucket_out_of_reach_mid_run_fails_the_day_naming_it(s3_bucket, monkeypatch, tmp_path):
    from leaderboard.landing import LandingError, read_day
    from tests.conftest import free_port

    location = S3Location(s3_bucket, "landing")
    hour = dt.datetime(2026, 11, 26, 10, tzinfo=dt.UTC)
    _put(location, hour, "events+0+0.json", [event("a", "u", hour.isoformat(), 1)])
    monkeypatch.setattr(objstore, "store_of", lambda loc, quick=False: objstore.S3Store(
        loc.bucket, endpoint=f"http://127.0.0.1:{free_port()}", client_options={"allow_http": True},
        retry_config={"max_retries": 0, "retry_timeout": dt.timedelta(seconds=1)}))  # fmt: skip
    with pytest.raises(LandingError, match=rf"cannot list or fetch s3://{s3_bucket}/landing/topics for 2026-11-26"):
        read_day(location, hour, hour + dt.timedelta(days=1), tmp_path / "work")
