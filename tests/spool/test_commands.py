"""`lmsav spool list|show|check --json`: JSON Lines as lmsav(1) MACHINE OUTPUT defines them — a
line per entry (none for an empty spool), one line for show and for check."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from lmsav import paths
from lmsav.cli import main
from lmsav.mail.envelope import Envelope
from lmsav.spool.nqueue import Spool
from tests.jsonlines import one_object, records


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A person's process with a new HOME and XDG directories: the spool lives there."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setattr(paths, "layout", lambda env=None, euid=None: paths.PERSONAL)
    monkeypatch.delenv("LMSAV_CONFIG", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / ".local" / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    return home


def lmsav(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_list_is_one_line_per_entry_and_show_one_line(home):
    spool = Spool(home / ".local" / "state" / "lmsav" / "nqueue")
    spool.ensure()
    assert lmsav("spool", "list", "--json").stdout == ""
    first = spool.enqueue(Envelope("ann@example.org", ("bob@example.org",)),
                          b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\n\nhello\n", queue_id="Q1")
    second = spool.enqueue(Envelope("", ("carl@example.org", "dora@example.org")),
                           b"Subject: two\n\n")

    listed = lmsav("spool", "list", "--json")
    assert listed.exit_code == 0
    entries = records(listed.stdout)
    assert sorted((e["id"], e["state"]) for e in entries) == sorted(
        [(first, "new"), (second, "new")])
    assert {e["id"]: e["recipients"] for e in entries}[second] == ["carl@example.org",
                                                                    "dora@example.org"]

    shown = lmsav("spool", "show", first, "--json")
    assert shown.exit_code == 0
    entry = one_object(shown.stdout)
    assert (entry["id"], entry["queue_id"], entry["sender"]) == (first, "Q1", "ann@example.org")
    assert entry["headers"]["Subject"] == "Grüße"  # UTF-8 as it is, not \u-escaped
    assert "Grüße" in shown.stdout


def test_show_of_a_missing_entry_is_an_error_on_stderr_only(home):
    result = lmsav("spool", "show", f"{0:019d}.1.0000abcd", "--json")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.startswith("lmsav: error: no spool entry")


def test_check_reports_one_object_with_every_directory(home):
    missing = lmsav("spool", "check", "--json")
    assert missing.exit_code == 1
    report = one_object(missing.stdout)
    assert report["ok"] is False and report["mode"] == "2770"
    spool_dir = str(home / ".local" / "state" / "lmsav" / "nqueue")
    [finding] = [f for f in report["findings"] if f["path"] == spool_dir]
    assert finding["problem"] == "missing" and finding["fixes"][0].startswith("install -d ")

    for found in report["findings"]:  # the fixes as printed, run as they are
        for command in found["fixes"]:
            subprocess.run(["sh", "-c", command], check=True)
    fixed = lmsav("spool", "check", "--json")
    report = one_object(fixed.stdout)
    assert (fixed.exit_code, report["ok"]) == (0, True), report
    assert all(f["problem"] is None and f["fixes"] == [] for f in report["findings"])
