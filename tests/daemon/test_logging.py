"""`lmsav daemon` logging where [log] says: a file that logrotate moves (SIGUSR1 reopens it, and
never ends the daemon), syslog once detached, and the root -v."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.daemon.client import Client, ClientError

pytestmark = pytest.mark.integration

# lmsav with the syslog socket moved to a private path (argv[1]), as the tests' stand-in.
WITH_SYSLOG_AT = """
import sys
from lmsav import logsetup
logsetup.SYSLOG_SOCKET = sys.argv.pop(1)
sys.argv[0] = "lmsav"
from lmsav.launcher import main
main()
"""


def wait_for(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def pings(sock: Path) -> bool:
    try:
        return Client(sock, timeout=10).ping()
    except (ClientError, OSError):
        return False


def text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


@pytest.fixture
def site(tmp_path):
    db = tmp_path / "bases"
    shutil.copytree(paths.bundled_database_dir(), db, ignore=shutil.ignore_patterns(".compiled*"))
    return tmp_path, db


def start(tmp_path: Path, db: Path, log: str, *root: str, prefix=()) -> subprocess.Popen:
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nrun_dir = "{tmp_path / "run"}"\n'
                      f'state_dir = "{tmp_path / "state"}"\n\n[log]\n{log}\n')
    env = dict(os.environ, LMSAV_CONFIG=str(config))
    return subprocess.Popen(
        [sys.executable, *(prefix or ["-m", "lmsav"]), *root, "daemon", "--socket",
         str(tmp_path / "clamd.sock"), "-d", str(db), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "stderr", "w"), env=env)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def test_the_log_file_is_reopened_on_sigusr1_after_logrotate_moved_it(site):
    tmp_path, db = site
    log_file = tmp_path / "log" / "lmsav.log"
    proc = start(tmp_path, db, f'destination = "file"\nfile = "{log_file}"')
    try:
        wait_for("the start line", lambda: "lmsav daemon ready" in text(log_file))
        ready = next(x for x in text(log_file).splitlines() if "lmsav daemon ready" in x)
        assert f" lmsav-daemon[{proc.pid}]: info: lmsav daemon ready: " in ready
        rotated = log_file.with_name("lmsav.log.1")
        log_file.rename(rotated)  # what logrotate does, then its postrotate kill -USR1
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        assert proc.poll() is None, "SIGUSR1 ended the daemon"
        assert pings(tmp_path / "clamd.sock")
        proc.send_signal(signal.SIGHUP)  # a reload logs a line
        wait_for("the reload line in the new file", lambda: "reloading" in text(log_file))
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert "reloading" not in rotated.read_text()
    wait_for("the stop line", lambda: "lmsav daemon stopped" in text(log_file))
    assert (tmp_path / "stderr").read_text() == ""


def test_detached_the_default_stderr_becomes_syslog(site):
    tmp_path, db = site
    syslog = tmp_path / "dev-log"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(syslog))
    receiver.settimeout(60)
    pid_file = tmp_path / "lmsav.pid"
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nrun_dir = "{tmp_path / "run"}"\n'
                      f'state_dir = "{tmp_path / "state"}"\n')  # [log] as shipped: stderr
    started = subprocess.run(
        [sys.executable, "-c", WITH_SYSLOG_AT, str(syslog), "daemon", "--detach", "--pid-file",
         str(pid_file), "--socket", str(tmp_path / "clamd.sock"), "-d", str(db), "--workers",
         "1"], env=dict(os.environ, LMSAV_CONFIG=str(config)),
        capture_output=True, text=True, timeout=120, check=False)
    pid = None
    try:
        assert started.returncode == 0 and started.stderr == "", started.stderr
        wait_for("the pid file", pid_file.exists)
        pid = int(pid_file.read_text())
        lines = []
        while not any(b"lmsav daemon ready" in line for line in lines):
            lines.append(receiver.recv(65536))
        mail_info = 2 * 8 + 6  # facility mail, priority info
        ready = next(line for line in lines if b"lmsav daemon ready" in line)
        assert ready.startswith(f"<{mail_info}>lmsav-daemon[{pid}]: lmsav daemon ready".encode())
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGTERM)
            wait_for("the daemon to stop", lambda: not os.path.exists(f"/proc/{pid}"), 30)
        receiver.close()


def test_root_verbose_and_quiet_override_the_level(site):
    tmp_path, db = site
    log_file = tmp_path / "lmsav.log"
    proc = start(tmp_path, db, f'level = "warning"\ndestination = "file"\nfile = "{log_file}"',
                 "-v")
    try:
        wait_for("the start line", lambda: "lmsav daemon ready" in text(log_file))
        assert pings(tmp_path / "clamd.sock")
    finally:
        stop(proc)
    assert ": info: lmsav daemon ready" in text(log_file)
    quiet = start(tmp_path, db, f'destination = "file"\nfile = "{log_file}.q"', "-q")
    try:
        wait_for("the daemon", lambda: pings(tmp_path / "clamd.sock"))
    finally:
        stop(quiet)
    assert "info:" not in text(Path(f"{log_file}.q"))
