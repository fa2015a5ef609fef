"""Reload as an administrator uses it: SIGHUP (or `lmsav ctl reload`) re-reads lmsav.toml as
well as the database and groups; a bad file keeps the running configuration."""

from __future__ import annotations

import os
import signal
import struct
import time

import pytest

from tests.conftest import EICAR
from tests.daemon.test_server import READ_TIMEOUT, Daemon


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def _config(daemon, extra: str = "", stream_max_length: str = "1M") -> None:
    tmp = daemon.tmp
    daemon.config.write_text(
        "[daemon]\n"
        f"read_timeout = {READ_TIMEOUT}\n"
        "idle_timeout = 20\n"
        "max_connections = 700\n"
        f'stream_max_length = "{stream_max_length}"\n'
        f"{extra}"
        f'[paths]\nrun_dir = "{tmp / "run"}"\nstate_dir = "{tmp / "state"}"\n')


def _reload(daemon) -> dict:
    before = daemon.client.status()["last_reload"]
    os.kill(daemon.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while True:
        last = daemon.client.status()["last_reload"]
        if last and last != before:
            return last
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.05)


def _stream(daemon, size: int) -> bytes:
    """An INSTREAM of ``size`` bytes in one chunk; the daemon refuses an oversize chunk as
    soon as it reads the length."""
    s = daemon.connect()
    try:
        s.sendall(b"zINSTREAM\0" + struct.pack(">I", size))
        s.sendall(b"x" * size + b"\0\0\0\0")
    except BrokenPipeError:
        pass
    reply = s.recv(1000)
    s.close()
    return reply


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_sighup_applies_a_changed_configuration(daemon):
    assert _stream(daemon, 1_500_000) == b"INSTREAM size limit exceeded. ERROR\0"
    _config(daemon, stream_max_length="2M")
    assert _reload(daemon)["result"] == "ok"
    assert _stream(daemon, 1_500_000) == b"stream: OK\0"
    assert daemon.client.instream(EICAR).status == "FOUND"


def test_a_bad_configuration_is_refused_and_the_running_one_kept(daemon):
    _config(daemon, extra="workers = -3\n", stream_max_length="2M")
    last = _reload(daemon)
    # The database and groups still reload; the file is refused as a whole.
    assert last["result"] == "ok" and "configuration not reloaded" in last["error"]
    assert _stream(daemon, 1_500_000) == b"INSTREAM size limit exceeded. ERROR\0"
    assert daemon.client.instream(EICAR).status == "FOUND"
    log = daemon.output()
    lines = [ln for ln in log.splitlines() if "configuration not reloaded" in ln]
    assert len(lines) == 1 and "workers" in lines[0], log
    assert "Traceback" not in log


def test_settings_bound_at_start_say_a_restart_is_needed(daemon):
    _config(daemon, extra='socket_mode = "0600"\n')
    assert _reload(daemon)["result"] == "ok"
    mode = daemon.sock.stat().st_mode & 0o777
    assert mode == 0o660  # the socket stays as it was bound
    assert "[daemon] socket_mode changed; restart the daemon to apply it" in daemon.output()
    assert daemon.client.ping()


def test_many_reloads_free_the_old_databases_quietly(daemon):
    """yara-x's scanner of an old database used to be freed on the reload thread (a
    "RuntimeError: ... unsendable" on stderr and a leaked scanner at every reload)."""
    sample = b"xx LMSAV-YARA-TEST-SAMPLE xx"
    sizes = []
    for n in range(40):
        assert daemon.client.instream(sample).detail == "YARA.lmsav_test_yara"
        assert _reload(daemon)["result"] == "ok"
        if n in (9, 39):
            sizes.append(_rss_kib(daemon.proc.pid))
    log = daemon.output()
    assert "unsendable" not in log and "Traceback" not in log, log
    assert daemon.client.status()["reloads"] == 40
    assert sizes[1] < sizes[0] * 1.25, sizes  # flat, not a database per reload
