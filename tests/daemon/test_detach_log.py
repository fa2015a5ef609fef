"""`lmsav daemon --detach` on a host without a syslog socket logs to a file and says where on
stderr before it leaves the terminal; without it, every line went nowhere."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.daemon.client import Client, ClientError

pytestmark = pytest.mark.integration

# lmsav as a person runs it (whoever runs the tests), on a host whose syslog socket is missing.
AS_A_PERSON_WITHOUT_SYSLOG = """
import sys
from lmsav import paths
from lmsav import logsetup
paths.layout = lambda env=None, euid=None: paths.PERSONAL
logsetup.SYSLOG_SOCKET = sys.argv.pop(1)
sys.argv[0] = "lmsav"
from lmsav.launcher import main
main()
"""


def _wait(what, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _pings(client: Client) -> bool:
    try:
        return client.ping()
    except ClientError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def person(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "LMSAV_CONFIG"}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_STATE_HOME=str(home / ".local" / "state"),
               XDG_CACHE_HOME=str(home / ".cache"), XDG_RUNTIME_DIR=str(tmp_path / "runtime"))
    (tmp_path / "runtime").mkdir(mode=0o700)
    return env


def test_detached_without_syslog_logs_to_the_state_log_directory(tmp_path, person):
    db = tmp_path / "bases"
    shutil.copytree(paths.bundled_database_dir(), db, ignore=shutil.ignore_patterns(".compiled*"))
    sock = tmp_path / "clamd.sock"
    pid_file = tmp_path / "runtime" / "lmsav" / "lmsav.pid"
    log_dir = Path(person["XDG_STATE_HOME"]) / "lmsav" / "log"
    log_file = log_dir / "lmsav.log"
    missing_syslog = tmp_path / "no-such-dev" / "log"

    started = subprocess.run(
        [sys.executable, "-c", AS_A_PERSON_WITHOUT_SYSLOG, str(missing_syslog), "daemon",
         "--detach", "--socket", str(sock), "-d", str(db), "--workers", "1"],
        check=False, env=person, capture_output=True, text=True, timeout=120)
    pid = None
    try:
        assert started.returncode == 0, started.stderr
        assert started.stderr == f"lmsav: {missing_syslog} not found; logging to {log_file}\n"
        _wait("the daemon to answer", lambda: _pings(Client(sock, timeout=10)))
        pid = int(pid_file.read_text())
        _wait("the start line", lambda: "lmsav daemon ready" in log_file.read_text())
        assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
        assert stat.S_IMODE(log_dir.stat().st_mode) & 0o027 == 0
        line = next(x for x in log_file.read_text().splitlines() if "lmsav daemon ready" in x)
        assert f"lmsav-daemon[{pid}]: info: lmsav daemon ready: unix:{sock}, 1 workers" in line
    finally:
        if pid is None and pid_file.exists():
            pid = int(pid_file.read_text())
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            _wait("the daemon to stop", lambda: not _alive(pid), timeout=30)
    _wait("the stop line", lambda: "lmsav daemon stopped" in log_file.read_text())
