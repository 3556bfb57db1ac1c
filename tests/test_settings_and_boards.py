from __future__ import annotations

from pathlib import Path

import pytest

from leaderboard.boards import BoardsFileError, load_boards
from leaderboard.settings import SettingsError, get_settings, load_settings
from tests.conftest import write_boards


def test_defaults_and_env_override(settings, monkeypatch):
    assert settings.PORT == 3000 and settings.DISPLAY_LIMIT_DEFAULT == 30 and settings.RETENTION_DAYS == 90
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = load_settings()
    assert s.PORT == 8080 and s.LOG_LEVEL == "DEBUG"


def test_dotenv_file_is_read(settings, tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DISPLAY_LIMIT_DEFAULT=12\nRETENTION_DAYS=30\n")
    s = load_settings()
    assert (s.DISPLAY_LIMIT_DEFAULT, s.RETENTION_DAYS) == (12, 30)


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("PORT", "70000", "less than or equal to 65535"),
        ("PORT", "http", "valid integer"),
        ("LOG_FORMAT", "xml", "'json' or 'text'"),
        ("LEADERBOARD_TIMEZONE", "Mars/Olympus", "IANA"),
        ("LEADERBOARD_BOARDS", "/nope/boards.yaml", "no such file"),
        ("RETENTION_DAYS", "0", "greater than or equal to 1"),
    ],
)
def test_bad_value_names_variable_and_value(settings, monkeypatch, name, value, hint):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    msg = str(err.value)
    assert f"{name}={value!r}" in msg and hint in msg


def test_bad_setting_stops_the_cli_with_the_message(settings, monkeypatch):
    from click.testing import CliRunner

    from cli.main import main

    monkeypatch.setenv("DISPLAY_LIMIT_DEFAULT", "lots")
    get_settings.cache_clear()
    result = CliRunner().invoke(main, ["show", "points", "daily"])
    assert result.exit_code != 0
    assert "DISPLAY_LIMIT_DEFAULT='lots'" in str(result.exception) + result.output


def test_default_boards_cover_every_aggregate(boards):
    assert {b.aggregate for b in boards.boards} == {"sum", "count", "max", "min"}
    assert any(b.order == "asc" for b in boards.boards)
    assert boards.timezone == "UTC" and str(boards.start_date) == "2024-01-01"


def test_bad_boards_file_names_file_board_and_field(tmp_path):
    path = write_boards(
        tmp_path / "b.yaml",
        "boards:\n"
        "  - id: good\n    event_types: [a]\n    aggregate: sum\n"
        "  - id: weird\n    event_types: [a]\n    aggregate: median\n"
        "  - id: lapsed\n    event_types: [a]\n    aggregate: min\n    periods: [hourly]\n",
    )
    with pytest.raises(BoardsFileError) as err:
        load_boards(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "board 'weird' field 'aggregate'" in msg
    assert "board 'lapsed' field 'periods.0'" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("boards: [", ":1"),  # YAML syntax error with a line number
        ("timezone: Nowhere/Land\nboards:\n  - {id: a, event_types: [x], aggregate: sum}\n", "field 'timezone'"),
        (
            "boards:\n  - {id: a, event_types: [x], aggregate: sum}\n  - {id: a, event_types: [y], aggregate: count}\n",
            "repeated: a",
        ),
        ("boards:\n  - {id: a, event_types: [x], aggregate: sum, colour: red}\n", "board 'a' field 'colour'"),
        (
            "boards:\n  - {id: a, event_types: [x], aggregate: sum, display_limit: 0}\n",
            "board 'a' field 'display_limit'",
        ),
        # group_by names a field of the event's attributes, with its prefix, in plain characters
        ("boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: team_id}\n", "board 't' field 'group_by'"),
        ("boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: team_id}\n", "got 'team_id'"),
        ("boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: attributes.}\n", "got 'attributes.'"),
        ("boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: user_id}\n", "got 'user_id'"),
        (
            "boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: attributes.a..b}\n",
            "got 'attributes.a..b'",
        ),
        (
            'boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: "attributes.a b"}\n',
            "got 'attributes.a b'",
        ),
        (
            "boards:\n  - {id: t, event_types: [x], aggregate: sum, group_by: [attributes.a]}\n",
            "board 't' field 'group_by'",
        ),
        ('boards:\n  - {id: m, event_types: [x], aggregate: sum, metadata: [level, "a\'b"]}\n', 'got "a\'b"'),
        ("boards:\n  - {id: m, event_types: [x], aggregate: sum, metadata: [level, level]}\n", "each attribute once"),
        ("boards:\n  - {id: m, event_types: [x], aggregate: sum, metadata: level}\n", "board 'm' field 'metadata'"),
    ],
)
def test_boards_file_errors(tmp_path, text, expected):
    path = write_boards(tmp_path / "b.yaml", text)
    with pytest.raises(BoardsFileError) as err:
        load_boards(path)
    assert expected in str(err.value) and str(path) in str(err.value)


def test_timezone_setting_overrides_boards_file(tmp_path: Path):
    path = write_boards(tmp_path / "b.yaml", "timezone: UTC\nboards:\n  - {id: a, event_types: [x], aggregate: sum}\n")
    assert load_boards(path, "America/New_York").timezone == "America/New_York"


def test_group_by_and_metadata_load_as_attribute_paths(tmp_path: Path):
    text = (
        "boards:\n"
        "  - {id: teams, event_types: [x], aggregate: sum, group_by: attributes.team.id, metadata: [level, p.country]}\n"
        "  - {id: users, event_types: [x], aggregate: sum}\n"
    )
    teams, users = load_boards(write_boards(tmp_path / "b.yaml", text)).boards
    assert (teams.group_by, teams.metadata) == ("team.id", ("level", "p.country"))
    assert (users.group_by, users.metadata) == (None, ())


def test_default_boards_ship_a_team_and_a_referral_board(boards):
    grouped = {b.id: (b.event_types, b.aggregate, b.group_by) for b in boards.boards if b.group_by}
    assert grouped == {
        "teams": (("score.earned",), "sum", "team_id"),
        "referrers": (("user.registered",), "count", "referrer_id"),
    }
    assert boards.get("points").metadata == ("level", "country")
