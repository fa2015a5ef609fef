"""The updates service of the web console: the status `lmsav update --status` shows, sources
and feeds without passwords, and an update and a rollback run as `lmsav update` in a child
process, read back from its --json output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w

from lmsav import config as config_mod
from lmsav.cron.console import Runs
from lmsav.update import console
from lmsav.update import state as state_mod

from ..jsonlines import one_object
from .conftest import copy_genuine


class Setup:
    """A configuration whose [update] takes the genuine test database from a directory."""

    def __init__(self, tmp: Path, **update):
        self.tmp = tmp
        self.config = tmp / "lmsav.toml"
        self.source = tmp / "source"
        self.root = tmp / "state" / "bases"
        self.write(**update)

    def write(self, **update) -> None:
        keys = {"sources": [str(self.source)], "databases": ["test"], "check_interval": 0,
                "retries": 2, "retry_delay": 0.01, "timeout": 5, **update}
        lines = ["[paths]", f'state_dir = "{self.tmp}/state"', f'run_dir = "{self.tmp}/run"',
                 f'database = "{self.root}/current"', "[daemon]",
                 f'socket = "{self.tmp}/run/clamd.sock"', "[spool]", f'dir = "{self.tmp}/spool"']
        self.config.write_text("\n".join(lines) + "\n" + tomli_w.dumps({"update": keys}))

    def settings(self):
        return config_mod.load_settings(self.config, required=True)

    def lmsav(self) -> list[str]:
        return [sys.executable, "-m", "lmsav", "--config", str(self.config)]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.lmsav(), "update", *args], capture_output=True, text=True,
                              timeout=120, check=False, env=dict(os.environ))

    def run(self, runs: Runs, argv: list[str]):
        runs.start("update", argv, what=" ".join(argv[4:]), by="alice",
                   summary=console.update_summary)
        done = runs.wait("update", 120)
        assert done is not None and not done.running
        return done


@pytest.fixture
def setup(tmp_path) -> Setup:
    return Setup(tmp_path)


def test_an_update_and_a_rollback_through_the_command_in_a_child(setup, tmp_path):
    runs = Runs(tmp_path / "runs")
    copy_genuine(setup.source, 3)
    first = setup.run(runs, console.update_command(setup.lmsav()))
    assert (first.result, first.exit) == ("updated", 0)
    assert first.message == f"updated: test-3 (test - -> 3 (full)) from {setup.source}"
    assert first.detail["active"] == "test-3"
    again = setup.run(runs, console.update_command(setup.lmsav()))
    assert again.message == f"current: test-3 (test 3 (unchanged)) from {setup.source}"
    copy_genuine(setup.source, 4)
    assert setup.run(runs, console.update_command(setup.lmsav())).result == "updated"
    assert console.status_report(setup.settings(), setup.config)["active"] == "test-4"

    label = console.kept_version(setup.settings(), "test-3")
    back = setup.run(runs, console.rollback_command(setup.lmsav(), label))
    assert (back.result, back.message) == (
        "rolled back", "rolled back: test-3 is active (was test-4)")
    assert console.status_report(setup.settings(), setup.config)["active"] == "test-3"


def test_a_failed_update_is_one_line_with_the_errors(setup, tmp_path):
    runs = Runs(tmp_path / "runs")
    done = setup.run(runs, console.update_command(setup.lmsav()))  # the source is missing
    assert (done.result, done.exit) == ("failed", 1)
    assert done.message == f"not updated: no database is active: {setup.source}: no such directory"
    assert f"lmsav: error: {setup.source}: no such directory" in done.output


def test_the_status_is_what_update_status_shows(setup):
    copy_genuine(setup.source, 3)
    assert setup.cli().returncode == 0
    shown = one_object(setup.cli("--status", "--json").stdout)
    report = console.status_report(setup.settings(), setup.config, True)
    for changing in ("age_seconds",):
        shown.pop(changing), report.pop(changing)
    assert report == shown
    assert report["versions"][0]["label"] == "test-3" and report["versions"][0]["active"]


def test_an_unknown_version_is_refused_with_the_error_of_rollback(setup):
    copy_genuine(setup.source, 3)
    assert setup.cli().returncode == 0
    for label in ("test-9", "../etc", "current", ""):
        with pytest.raises(console.ConsoleError) as error:
            console.kept_version(setup.settings(), label)
        assert str(error.value) == f"no version {label} in {setup.root} (kept: test-3)"
        if label:
            refused = setup.cli(f"--rollback={label}")
            assert (refused.returncode, refused.stderr) == (2, f"lmsav: error: {error.value}\n")


def test_sources_and_feeds_are_shown_without_passwords(setup):
    setup.write(sources=["https://user:secret@mirror.example.org/clamav", "file:///srv/mirror",
                         "/srv/copy"],
                feeds=["https://bob:pw@feeds.example.org/lmsav.bundle",
                       {"url": "http://feeds.example.org/x.ndb", "sha256": "a" * 64},
                       "/srv/rules", "https://feeds.example.org/y.yar"],
                proxy="http://p:hidden@proxy:3128")
    settings = setup.settings()
    state = state_mod.State(last_source="file:///srv/mirror",
                            cool_downs={"https://user:secret@mirror.example.org/clamav": 2e9})
    console.update_root(settings).mkdir(parents=True)
    state_mod.save(console.update_root(settings), state, 1e9)
    shown = console.sources(settings, now=1.5e9)
    assert [(s.shown, s.kind, s.cooling_until, s.last_used) for s in shown] == [
        ("https://user:***@mirror.example.org/clamav", "mirror", None, False),
        ("file:///srv/mirror", "file:// directory", None, True),
        ("/srv/copy", "directory", None, False)]
    assert console.sources(settings, now=2e9 - 60)[0].cooling_until == 2e9
    assert [(f.shown, f.kind, f.verified_by) for f in console.feeds(settings)] == [
        ("https://bob:***@feeds.example.org/lmsav.bundle", "bundle",
         "signature by a key of lmsav keys"),
        ("http://feeds.example.org/x.ndb", "file", "sha256 pin aaaaaaaaaaaa…"),
        ("/srv/rules", "directory", "local file, read as it is"),
        ("https://feeds.example.org/y.yar", "file", "the https server's certificate")]
    assert console.without_password(settings.update.proxy) == "http://p:***@proxy:3128"
    assert console.without_password("https://[::1]:8443/x") == "https://[::1]:8443/x"
    assert console.without_password("https://u:p@[::1]:8443/x") == "https://u:***@[::1]:8443/x"


@pytest.mark.parametrize("lines, expected", [
    (["lmsav: error: --status and --rollback cannot be combined"],
     ("error", "--status and --rollback cannot be combined")),
    ([], ("error", "lmsav update exited with 2")),
    (["{not json", "lmsav: error: x"], ("error", "x")),
])
def test_output_without_an_outcome_is_an_error_line(lines, expected):
    result, message, detail = console.update_summary(2, lines)
    assert (result, message, detail) == (*expected, {})


def test_commands_are_argument_lists():
    assert console.update_command(["lmsav"]) == ["lmsav", "update", "--json"]
    assert console.rollback_command(["lmsav", "--config", "/c"], "daily-1_main-2") == [
        "lmsav", "--config", "/c", "update", "--rollback=daily-1_main-2", "--json"]
