"""`lmsav ctl status --json` against a running daemon: one compact object on one line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.jsonlines import one_object

pytestmark = pytest.mark.integration


def ctl(daemon, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LMSAV_CONFIG=str(daemon.config))
    return subprocess.run(
        [sys.executable, "-m", "lmsav.launcher", "ctl", *args, "--socket", str(daemon.sock)],
        capture_output=True, text=True, env=env, timeout=120, check=False)


def test_status_json_is_one_line(daemon):
    result = ctl(daemon, "status", "--json")
    assert result.returncode == 0, result.stderr
    status = one_object(result.stdout)
    assert status["database"]["version"] == "2026112401"
    assert status["pid"] == daemon.proc.pid
    assert {"uptime", "workers", "requests", "found", "listeners"} <= set(status)


def test_status_json_without_a_daemon_is_an_error_on_stderr(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}
    result = subprocess.run(
        [sys.executable, "-m", "lmsav.launcher", "ctl", "status", "--json", "--socket",
         str(tmp_path / "none.sock")], capture_output=True, text=True, env=env, timeout=60,
        check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("lmsav: error: ") and len(result.stderr.splitlines()) == 1
