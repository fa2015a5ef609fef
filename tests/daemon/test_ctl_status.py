"""`lmsav ctl status` as a monitoring system runs it: a real daemon, a spool filled by `lmsav
enqueue`, a managed database from `lmsav update`; exit 0 healthy, 1 with problems, 2 when the
status cannot be taken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jsonlines import one_object

pytestmark = pytest.mark.integration

LMSAV = [sys.executable, "-m", "lmsav.launcher"]


class Site:
    """A mail node's configuration file and the commands an administrator runs with it."""

    def __init__(self, config: Path):
        self.config = config

    @classmethod
    def create(cls, tmp: Path, extra: str = "") -> Site:
        config = tmp / "lmsav.toml"
        config.write_text(f'[paths]\nstate_dir = "{tmp}/state"\nrun_dir = "{tmp}/run"\n{extra}')
        return cls(config)

    def add(self, text: str) -> None:
        self.config.write_text(self.config.read_text() + text)

    def env(self) -> dict:
        # `lmsav` on PATH, as the man page's examples run it
        return dict(os.environ, LMSAV_CONFIG=str(self.config),
                    PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def lmsav(self, *args: str, stdin: str | bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*LMSAV, *args], input=stdin, capture_output=True, env=self.env(),
                              text=not isinstance(stdin, bytes), timeout=180, check=False)

    def ctl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return self.lmsav("ctl", *args, stdin=stdin)

    def spool(self) -> Path:
        from lmsav import config as config_mod

        return Path(config_mod.load_settings(self.config).spool_dir())

    def enqueue(self, sender: str = "ann@example.org", *rcpts: str, subject: str = "hello") -> str:
        """`lmsav enqueue` as the MTA runs it; the id of the new entry."""
        new = self.spool() / "new"
        before = set(os.listdir(new)) if new.exists() else set()
        message = f"From: <{sender}>\nSubject: {subject}\n\nsome text\n".encode()
        done = self.lmsav("enqueue", "-f", sender, "--", *(rcpts or ("bob@example.org",)),
                          stdin=message)
        assert done.returncode == 0, done.stderr
        (added,) = set(os.listdir(new)) - before
        return added


def lines(result: subprocess.CompletedProcess) -> list[str]:
    return result.stdout.splitlines()


def test_healthy_with_a_running_daemon_and_two_messages_waiting(daemon):
    site = Site(daemon.config)
    site.enqueue()
    site.enqueue("carl@example.org", "dora@example.org", "erin@example.org")

    text = site.ctl("status")
    assert text.returncode == 0, text.stderr
    out = lines(text)
    assert out[0] == "status:      OK"
    assert f"daemon:      running, pid {daemon.proc.pid}, answers PING on {daemon.sock}" in out
    assert any(line.startswith("  version:   ClamAV ") for line in out), out
    assert any(line.startswith("  database:  2026112401 (") for line in out), out
    assert "  workers:   2 (0 busy)" in out
    assert f"spool:       2 new, 0 work, 0 hold (depth 2) in {site.spool()}" in out
    assert any(line.startswith("watcher:     not running: ") for line in out), out
    assert not [line for line in out if line.startswith("problem:")]
    assert text.stderr == ""

    status = one_object(site.ctl("status", "--json").stdout)
    assert status["ok"] is True and status["problems"] == []
    assert status["daemon"]["running"] is True
    assert status["daemon"]["status"]["pid"] == daemon.proc.pid
    assert status["daemon"]["status"]["database"]["version"] == "2026112401"
    assert (status["spool"]["new"], status["spool"]["depth"]) == (2, 2)
    assert status["watcher"]["running"] is False

    # Another configuration, the daemon's socket named on the command line (before or after).
    (Path(daemon.tmp) / "other").mkdir()
    other = Site.create(Path(daemon.tmp) / "other")
    for args in (("--socket", str(daemon.sock), "status", "--json"),
                 ("status", "--json", "--socket", str(daemon.sock))):
        named = one_object(other.ctl(*args).stdout)
        assert named["daemon"]["socket"] == str(daemon.sock)
        assert named["daemon"]["status"]["pid"] == daemon.proc.pid


def test_a_spool_over_its_threshold_is_a_problem(daemon):
    site = Site(daemon.config)
    site.add("[snmp]\nspool_threshold = 1\n")
    site.enqueue()
    assert site.ctl("status").returncode == 0  # one waits: not more than the threshold
    site.enqueue()

    text = site.ctl("status")
    assert text.returncode == 1
    assert lines(text)[0] == "status:      1 problem"
    assert lines(text)[-1] == (f"problem: 2 messages wait in the spool {site.spool()}, more than "
                               "1 (spool_threshold)")
    status = site.ctl("status", "--json")
    assert status.returncode == 1
    report = one_object(status.stdout)
    assert report["ok"] is False and len(report["problems"]) == 1


def test_a_daemon_is_missed_only_when_it_is_configured(daemon):
    site = Site(daemon.config)
    assert site.ctl("stop").returncode == 0
    assert daemon.proc.wait(30) == 0

    # Nobody set it up, no socket or pid file is left: not a problem.
    gone = site.ctl("status")
    assert gone.returncode == 0, gone.stdout
    assert any(line.startswith("daemon:      not running: cannot connect to ")
               for line in lines(gone)), gone.stdout

    # A pid file left behind says a daemon should run here.
    pid_file = Path(daemon.tmp) / "run" / "lmsav.pid"
    pid_file.write_text(f"{daemon.proc.pid}\n")
    missed = site.ctl("status")
    assert missed.returncode == 1
    problem = [line for line in lines(missed) if line.startswith("problem:")]
    assert problem == [(f"problem: the daemon is not running (cannot connect to {daemon.sock}: "
                       f"No such file or directory; {pid_file} names pid {daemon.proc.pid}, "
                       "which is gone)")]


def test_an_outdated_database_is_a_problem(tmp_path):
    from tests.update.test_commands import Admin

    admin = Admin(tmp_path)
    admin.configure([str(admin.source)], databases=["test"])
    admin.publish(3)  # ClamAV's test database, built in 2021
    assert admin.run().returncode == 0
    site = Site(admin.config)
    site.add("[snmp]\ndatabase_max_age = \"24h\"\n")

    text = site.ctl("status")
    assert text.returncode == 1
    out = lines(text)
    assert any(line.startswith(f"database:    test 3 in {admin.root}/current, built ")
               for line in out), out
    assert "  managed:   active test-3" in [line.split(",")[0] for line in out]
    assert out[-1].startswith("problem: the signature database was built ")
    assert out[-1].endswith("ago, more than 24.0 hours (database_max_age): updates are not "
                            "arriving")

    site.config.write_text(site.config.read_text().replace('"24h"', "0"))  # 0: never outdated
    assert site.ctl("status").returncode == 0


def test_the_status_cannot_be_taken_exit_2(tmp_path):
    site = Site.create(tmp_path)
    usage = site.ctl("status", "--verbose-please")
    assert usage.returncode == 2 and usage.stdout == ""
    site.add("[nosuch]\nkey = 1\n")
    bad = site.ctl("status", "--json")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("lmsav: error: ") and len(bad.stderr.splitlines()) == 1


def test_config_check_and_stats_are_lmsavs(tmp_path):
    site = Site.create(tmp_path)
    checked = site.ctl("config", "check")
    assert (checked.returncode, checked.stdout) == (0, (f"{site.config}: OK (profile "
                                                       "default_recommended)\n"))
    groups = tmp_path / "groups.d"
    groups.mkdir()
    (groups / "sales.toml").write_text('recipients = ["*@sales.example"]\ninfected_action = "x"\n')
    refused = site.ctl("config", "check")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"lmsav: error: {groups / 'sales.toml'}: infected_action")

    stats = site.ctl("stats", "--since", "7d", "--json")
    assert stats.returncode == 0, stats.stderr
    assert one_object(stats.stdout) == one_object(
        site.lmsav("stats", "--since", "7d", "--json").stdout) | {}
    messages = site.ctl("stats", "messages", "--json")
    assert (messages.returncode, messages.stdout) == (0, "")
