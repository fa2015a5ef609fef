"""`lmsav spool watch` as an administrator runs it, logging where [log] says: one line per
message from the mail service (amavis' one line: queue id, Message-ID, envelope, groups,
status, action, threats, size, scan time), in text or JSON lines, in a file that logrotate moves
and SIGUSR1 reopens."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.spool.nqueue import Spool
from tests.conftest import EICAR
from tests.spool.test_watcher import GROUPS, make_message

pytestmark = pytest.mark.integration


class Site:
    """A configuration (with groups.d), a spool and a dir: sink, and `lmsav spool watch`."""

    def __init__(self, tmp_path: Path, log: str, spool: str = ""):
        self.tmp = tmp_path
        self.config = tmp_path / "etc" / "lmsav.toml"
        (tmp_path / "etc" / "groups.d").mkdir(parents=True)
        for name, text in GROUPS.items():
            (tmp_path / "etc" / "groups.d" / name).write_text(text)
        self.config.write_text(
            f'[paths]\nstate_dir = "{tmp_path / "state"}"\nrun_dir = "{tmp_path / "run"}"\n\n'
            f'[spool]\nreinject = "dir:{tmp_path / "sink"}"\nworkers = 1\n'
            f'rescan_interval = 0.5\n{spool}\n[log]\n{log}\n')
        self.spool = Spool(tmp_path / "state" / "nqueue")
        self.spool.ensure()

    def enqueue(self, raw: bytes, *rcpts: str, queue_id: str = "") -> None:
        self.spool.enqueue(Envelope("alice@example.org", rcpts), raw, queue_id)

    def lmsav(self, *args: str, **kw):
        env = dict(os.environ, LMSAV_CONFIG=str(self.config))
        return [sys.executable, "-m", "lmsav", *args], env


def wait_for(what, predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def mail_lines(log: str) -> list[dict]:
    return [r for r in (json.loads(x) for x in log.splitlines()) if r["component"] == "mail"]


def test_one_text_line_per_message_on_stderr(tmp_path):
    site = Site(tmp_path, 'level = "info"')
    infected = make_message(1, ("e.com", EICAR))
    site.enqueue(infected, "bob@example.net", "carol@warned.example")
    site.enqueue(make_message(2), "bob@example.net")
    argv, env = site.lmsav("spool", "watch", "--once")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    lines = [x for x in done.stderr.splitlines() if " lmsav-mail[" in x]
    line_re = (r"\S+ lmsav-mail\[\d+\]: info: queue=- msgid=<m{n}@example\.org> "
               r"from=<alice@example\.org> to={to} group={group} status={status} "
               r"action={action} threats={threats} size={size} time=\d+ms")
    assert len(lines) == 2, done.stderr
    assert re.fullmatch(line_re.format(
        n=1, to=re.escape("<bob@example.net>,<carol@warned.example>"), group="default,warned",
        status="infected,infected", action="reject,warn", threats="Eicar-Test-Signature",
        size=len(infected)), lines[0]), lines[0]
    assert re.fullmatch(line_re.format(
        n=2, to=re.escape("<bob@example.net>"), group="default", status="clean",
        action="skip", threats="-", size=len(make_message(2))), lines[1]), lines[1]


def test_json_lines_in_a_file_reopened_on_sigusr1(tmp_path):
    log_file = tmp_path / "log" / "lmsav.log"
    site = Site(tmp_path, f'destination = "file"\nfile = "{log_file}"\nformat = "json"')
    argv, env = site.lmsav("spool", "watch")
    with open(tmp_path / "stderr", "w") as stderr:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for("the watcher", lambda: "watching" in text(log_file))
        infected = make_message(3, ("e.com", EICAR))
        site.enqueue(infected, "bob@example.net", queue_id="4XyZ1")
        wait_for("the first message's line", lambda: mail_lines(text(log_file)))
        [first] = mail_lines(text(log_file))
        assert first["level"] == "info" and first["pid"] > 0
        assert {k: first[k] for k in ("msgid", "from", "to", "group", "status", "action",
                                      "threats", "size")} == {
            "msgid": "<m3@example.org>", "from": "alice@example.org",
            "to": ["bob@example.net"], "group": ["default"], "status": ["infected"],
            "action": ["reject"], "threats": ["Eicar-Test-Signature"], "size": len(infected)}
        assert isinstance(first["time_ms"], int) and first["queue"] == "4XyZ1"
        assert first["message"].startswith("queue=4XyZ1 ")

        rotated = log_file.with_name("lmsav.log.1")
        log_file.rename(rotated)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        assert proc.poll() is None, "SIGUSR1 ended the watcher"
        site.enqueue(make_message(4), "bob@example.net")
        wait_for("the second message's line in the new file",
                 lambda: mail_lines(text(log_file)))
        assert [r["msgid"] for r in mail_lines(text(log_file))] == ["<m4@example.org>"]
        assert [r["msgid"] for r in mail_lines(rotated.read_text())] == ["<m3@example.org>"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0
    assert (tmp_path / "stderr").read_text() == ""


def test_spool_log_file_still_takes_the_watchers_lines(tmp_path):
    """[spool] log_file (what `lmsav setup` sets) is the watcher's own [log] file."""
    spool_log = tmp_path / "spool.log"
    site = Site(tmp_path, "", spool=f'log_file = "{spool_log}"\n')
    site.enqueue(make_message(5), "bob@example.net")
    argv, env = site.lmsav("spool", "watch", "--once")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    logged = spool_log.read_text()
    assert " lmsav-mail[" in logged and "msgid=<m5@example.org>" in logged
    assert " lmsav-spool[" in logged
