"""``lmsav stats`` options and bad input: one-line errors, exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lmsav.stats.commands import stats_group
from lmsav.stats.timespec import parse_time

from .conftest import NOW


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    return path


def run(config, *args):
    return CliRunner().invoke(stats_group, list(args), env={"LMSAV_CONFIG": str(config)})


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", NOW - 86400), ("7d", NOW - 7 * 86400), ("90m", NOW - 5400), ("2w", NOW - 14 * 86400),
    ("30s", NOW - 30), ("now", NOW), ("2026-12-04", 1_796_342_400.0),
    ("2026-12-04T16:00", NOW), ("2026-12-04T16:00:00Z", NOW),
    ("2026-12-04T17:00:00+01:00", NOW),
])
def test_times(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "7x", "", "-1d", "2026-13-01"])
def test_bad_times(text):
    with pytest.raises(ValueError, match="neither an ISO date"):
        parse_time(text, NOW)


def test_an_empty_store_reports_zeros_and_creates_nothing(config, tmp_path):
    result = run(config)
    assert result.exit_code == 0, result.output
    assert "Messages       0" in result.output and "p50 -, p99 -" in result.output
    assert run(config, "messages").output.splitlines()[0].startswith("DATE (UTC)")
    assert run(config, "messages", "--json").output == ""
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "yesterday"], "lmsav: error: --since: 'yesterday' is neither an ISO date"),
    (["--since", "1h", "--until", "2h"], "lmsav: error: --since must be before --until"),
    (["messages", "--until", "soon"], "lmsav: error: --until: 'soon' is neither"),
])
def test_bad_options_are_one_line_errors(config, args, message):
    result = run(config, *args)
    assert result.exit_code == 2
    assert result.output.startswith(message) and result.output.count("\n") == 1


def test_bad_choices_are_refused_by_click(config):
    assert run(config, "--by", "week").exit_code == 2
    assert run(config, "messages", "--status", "bad").exit_code == 2
    assert run(config, "messages", "--limit", "0").exit_code == 2


def test_a_damaged_store_is_a_one_line_error(config, tmp_path):
    stats = tmp_path / "state" / "stats"
    stats.mkdir(parents=True)
    (stats / "stats.sqlite").write_bytes(b"garbage" * 1000)
    for args in ([], ["messages"]):
        result = run(config, *args)
        assert result.exit_code == 2
        assert result.output.startswith("lmsav: error: cannot read the statistics store: ")
        assert "file is not a database" in result.output and result.output.count("\n") == 1
    assert (stats / "stats.sqlite").read_bytes() == b"garbage" * 1000


def test_index_gives_recorded_messages_their_search_keys(config):
    import json
    import sqlite3

    from lmsav.config import load_settings
    from lmsav.stats.store import open_store, sqlite_path

    from .conftest import message_event

    store = open_store(load_settings(config))
    for i in range(7):
        store.record(message_event(NOW + i, sender=f"s{i}@example.org"))
    store.close()  # written as mail writes them: without keys
    path = sqlite_path(load_settings(config).paths.state_dir)
    keys = "SELECT count(DISTINCT message) FROM message_keys"
    with sqlite3.connect(path) as conn:
        assert conn.execute(keys).fetchone()[0] == 0
    result = run(config, "index", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"indexed": 7}
    with sqlite3.connect(path) as conn:
        assert conn.execute(keys).fetchone()[0] == 7
    again = run(config, "index")
    assert again.output == "0 messages given their search keys\n"


@pytest.mark.integration
def test_index_runs_as_written_on_a_server_as_the_service_user(sysroot):
    """`lmsav stats index` as a cron job of the service user runs it: default paths, its own
    environment, no configuration file."""
    lmsav = sysroot.program("lmsav")
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.run("install", "-d", "-o", "lmsav", "-g", "lmsav", "-m", "0750", "/var/lib/lmsav")
    done = sysroot.run(lmsav, "stats", "index", user="lmsav")
    assert done.stdout == "0 messages given their search keys\n", done.stderr
    assert done.stderr == ""
