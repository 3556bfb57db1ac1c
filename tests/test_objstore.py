"""Object storage locations: settings accept s3:// URLs and refuse bad ones by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from leaderboard.objstore import S3Location, parse_s3_url
from leaderboard.settings import SettingsError, load_settings


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
