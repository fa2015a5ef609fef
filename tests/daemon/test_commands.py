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
    assert result.returncode in (0, 1), result.stderr  # 1: a problem elsewhere (lmsav-ctl(8))
    status = one_object(result.stdout)["daemon"]["status"]
    assert status["database"]["version"] == "2026112401"
    assert status["pid"] == daemon.proc.pid
    assert {"uptime", "workers", "requests", "found", "listeners"} <= set(status)

