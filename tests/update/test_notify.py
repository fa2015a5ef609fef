"""After an update the running components are told: the real daemon reloads and detects with the
new signatures; the spool watcher (the holder of watch.lock) gets SIGHUP; each result reported."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.daemon.client import Client, ClientError
from lmsav.update.notify import lock_holder, tell_running

from .test_commands import Admin

# A stand-in for a process of lmsav's: it holds a lock (flock, as the spool watcher does) or
# writes a pid file, and records the signals it receives.
HOLDER = """
import fcntl, os, signal, sys, time
path, record = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT)
if path.endswith(".lock"):
    fcntl.flock(fd, fcntl.LOCK_EX)
else:
    os.write(fd, f"{os.getpid()}\\n".encode())
def note(signum, _frame):
    with open(record, "a") as fh:
        fh.write(signal.Signals(signum).name + "\\n")
signal.signal(signal.SIGHUP, note)
signal.signal(signal.SIGUSR2, note)
print("ready", flush=True)
time.sleep(60)
"""


def holder(path: Path, record: Path) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(record)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    return process


def received(record: Path, signal_name: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if record.exists() and signal_name in record.read_text().split():
            return True
        time.sleep(0.02)
    return False


def test_the_spool_watcher_holding_its_lock_gets_sighup(tmp_path):
    root, spool = tmp_path / "bases", tmp_path / "spool"
    root.mkdir()
    spool.mkdir()
    record = tmp_path / "signals"
    watcher = holder(spool / "watch.lock", record)
    try:
        assert lock_holder(spool / "watch.lock") == watcher.pid
        told = tell_running(root, root / "current", tmp_path / "no.sock", tmp_path / "no.pid",
                            spool)
        assert told == {"daemon": "not running",
                        "spool watcher": f"sent SIGHUP to pid {watcher.pid}"}
        assert received(record, "SIGHUP")
        elsewhere = tell_running(root, tmp_path / "clamav", tmp_path / "no.sock",
                                 tmp_path / "no.pid", spool)
        assert elsewhere["spool watcher"] == f"not told: the configured database is " \
                                             f"{tmp_path / 'clamav'}"
    finally:
        watcher.kill()
        watcher.wait()
    assert lock_holder(spool / "watch.lock") is None


def test_a_daemon_whose_socket_does_not_answer_gets_sigusr2_through_its_pid_file(tmp_path):
    record = tmp_path / "signals"
    daemon = holder(tmp_path / "lmsav.pid", record)
    try:
        told = tell_running(tmp_path / "bases", tmp_path / "bases" / "current",
                            tmp_path / "no.sock", tmp_path / "lmsav.pid", tmp_path / "spool")
        assert told["daemon"] == f"sent SIGUSR2 to pid {daemon.pid}"
        assert received(record, "SIGUSR2")
    finally:
        daemon.kill()
        daemon.wait()
    told = tell_running(tmp_path / "bases", tmp_path / "bases" / "current", tmp_path / "no.sock",
                        tmp_path / "lmsav.pid", tmp_path / "spool")
    assert told["daemon"] == f"not running ({tmp_path / 'lmsav.pid'} is stale)"


@pytest.mark.integration
def test_the_running_daemon_reloads_and_detects_with_the_new_signatures(tmp_path, eicar):
    admin = Admin(tmp_path)
    admin.publish(2)  # no EICAR signature yet
    assert admin.run().returncode == 0
    socket_path = tmp_path / "run" / "clamd.sock"
    with open(tmp_path / "daemon.log", "w+") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "lmsav", "daemon", "--socket", str(socket_path), "--workers",
             "1"], env=admin.env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            _check_reload(admin, daemon, Client(socket_path, timeout=30), eicar, tmp_path)
        finally:
            daemon.terminate()
            daemon.wait(30)


def _check_reload(admin, daemon, client, eicar, tmp_path) -> None:
    deadline = time.monotonic() + 60
    while not _answers(client):
        assert daemon.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "daemon.log").read_text()
        time.sleep(0.1)
    assert client.instream(eicar).status == "OK"
    admin.publish(3)
    result = admin.run()
    assert result.returncode == 0, result.stderr
    assert "told: daemon: reload requested; spool watcher: not running" in result.stdout
    deadline = time.monotonic() + 60
    while client.status()["database"]["version"] != "extra 7, test 3":
        assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
        time.sleep(0.1)
    found = client.instream(eicar)
    assert (found.status, found.detail) == ("FOUND", "Eicar-Test-Signature")
    assert client.status()["database"]["directory"] == str(admin.root / "current")


def _answers(client: Client) -> bool:
    try:
        return client.ping()
    except ClientError:
        return False


def test_nothing_running_is_reported_as_such(tmp_path):
    told = tell_running(tmp_path / "bases", tmp_path / "bases" / "current",
                        tmp_path / "no.sock", tmp_path / "no.pid", tmp_path / "spool")
    assert told == {"daemon": "not running", "spool watcher": "not running"}
    assert os.path.exists(tmp_path) and lock_holder(tmp_path / "spool" / "watch.lock") is None
