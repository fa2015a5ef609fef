"""Reload as an administrator uses it: SIGHUP (or `lmsav ctl reload`) re-reads lmsav.toml as
well as the database and groups; each is taken or refused on its own, and a refused one keeps
running as it was."""

from __future__ import annotations

import os
import resource
import signal
import struct
import subprocess
import sys
import time

import pytest

from tests.conftest import EICAR
from tests.daemon.test_server import READ_TIMEOUT, Daemon

pytestmark = pytest.mark.integration

OLD_VERSION = "2026112401"  # the bundled database's


def _config(daemon, extra: str = "", stream_max_length: str = "1M",
            max_connections: int = 700) -> None:
    tmp = daemon.tmp
    daemon.config.write_text(
        "[daemon]\n"
        f"read_timeout = {READ_TIMEOUT}\n"
        "idle_timeout = 20\n"
        f"max_connections = {max_connections}\n"
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


def _new_database_version(daemon, version: str = "2026112402") -> None:
    (daemon.db / "database.toml").write_text(f'version = "{version}"\n')


def _break_database(daemon) -> None:
    _new_database_version(daemon, "2026999999")
    (daemon.db / "broken.ndb").write_text("Broken.Sig:0:*:zz-not-hex\n")


def test_a_valid_configuration_is_applied_when_the_database_is_refused(daemon):
    _config(daemon, stream_max_length="2M")
    _break_database(daemon)
    last = _reload(daemon)
    assert (last["result"], last["configuration"], last["groups"]) == \
        ("refused", "reloaded", "reloaded")
    assert last["version"] == OLD_VERSION and last["error"].startswith("database not reloaded")
    assert daemon.client.status()["database"]["version"] == OLD_VERSION
    assert _stream(daemon, 1_500_000) == b"stream: OK\0"  # the new limit
    assert daemon.client.instream(EICAR).status == "FOUND"  # the old database
    log = daemon.output()
    assert f"reload refused, keeping database {OLD_VERSION}: " in log, log
    assert f"configuration and recipient groups reloaded; database {OLD_VERSION} kept" in log
    assert "configuration not reloaded" not in log


def test_a_bad_configuration_and_a_refused_database_change_nothing(daemon):
    _config(daemon, extra="workers = -3\n", stream_max_length="2M")
    _break_database(daemon)
    (daemon.tmp / "groups.d").mkdir()
    (daemon.tmp / "groups.d" / "bad.toml").write_text('action = "explode"\n')
    pids = _worker_pids(daemon)
    last = _reload(daemon)
    assert (last["result"], last["configuration"], last["groups"]) == \
        ("refused", "kept", "kept")
    assert daemon.client.status()["reloads"] == 0
    assert _worker_pids(daemon) == pids  # no new generation for nothing new
    assert _stream(daemon, 1_500_000) == b"INSTREAM size limit exceeded. ERROR\0"


def _worker_pids(daemon) -> set[int]:
    with open(f"/proc/{daemon.proc.pid}/task/{daemon.proc.pid}/children") as fh:
        return {int(pid) for pid in fh.read().split()}


@pytest.fixture
def daemon_with_a_group(tmp_path):
    (tmp_path / "groups.d").mkdir()
    (tmp_path / "groups.d" / "strict.toml").write_text(
        'reject_reply = "550 5.7.1 the strict group says no"\n')
    d = Daemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def _mail(daemon, group: str) -> dict:
    """The plan header of an infected message sent through LMSAVMAIL with a forced group."""
    from lmsav.qmail.daemon_client import ask

    message = os.memfd_create("message")
    try:
        os.write(message, b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\n"
                 + EICAR + b"\r\n")
        header, _deliveries = ask(str(daemon.sock), message, b"a@example.com",
                                  [b"b@example.com"], group, "test", 30)
    finally:
        os.close(message)
    return header


def test_refused_groups_keep_the_running_groups_not_the_old_database(daemon_with_a_group):
    daemon = daemon_with_a_group
    assert _mail(daemon, "strict")["reply"] == "550 5.7.1 the strict group says no"
    (daemon.tmp / "groups.d" / "bad.toml").write_text('action = "explode"\n')
    _new_database_version(daemon)
    last = _reload(daemon)
    assert (last["result"], last["version"], last["groups"]) == ("ok", "2026112402", "kept")
    assert "recipient groups not reloaded" in last["error"] and "bad.toml" in last["error"]
    header = _mail(daemon, "strict")  # the running groups, over the new database
    assert header["reply"] == "550 5.7.1 the strict group says no"
    assert header["threats"] == ["Eicar-Test-Signature"]
    assert daemon.client.status()["database"]["version"] == "2026112402"
    log = daemon.output()
    lines = [ln for ln in log.splitlines() if "not reloaded" in ln]
    assert len(lines) == 1 and "recipient groups not reloaded, keeping the running ones" in \
        lines[0] and "bad.toml" in lines[0], log
    assert "keeping database" not in log and "reload refused" not in log
    ctl = subprocess.run(
        [sys.executable, "-m", "lmsav.launcher", "ctl", "reload", "--socket", str(daemon.sock)],
        capture_output=True, text=True, timeout=120, check=False,
        env=dict(os.environ, LMSAV_CONFIG=str(daemon.config)))
    assert (ctl.returncode, ctl.stdout) == (0, "reloaded: database 2026112402\n"), ctl
    assert ctl.stderr.startswith("lmsav: warning: recipient groups not reloaded: "), ctl


def _soft_nofile(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as fh:
        for line in fh:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no Max open files")


@pytest.fixture
def daemon_with_few_descriptors(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 10_064:
        pytest.skip(f"the hard descriptor limit ({hard}) is below what the test raises to")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the daemon inherits it
    try:
        d = Daemon(tmp_path)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def test_a_reload_raising_max_connections_raises_the_descriptor_limit(
        daemon_with_few_descriptors):
    daemon = daemon_with_few_descriptors
    assert _soft_nofile(daemon.proc.pid) == 4096  # 700 connections: the floor is enough
    _config(daemon, max_connections=10_000)
    assert _reload(daemon)["result"] == "ok"
    assert _soft_nofile(daemon.proc.pid) == 10_064
    assert daemon.client.ping()


def test_many_reloads_free_the_old_databases_quietly(daemon):
    """yara-x's scanner of an old database used to be freed on the reload thread (a
    "RuntimeError: ... unsendable" on stderr and a leaked scanner at every reload)."""
    sample = b"xx LMSAV-YARA-TEST-SAMPLE xx"
    sizes = []
    for n in range(50):
        assert daemon.client.instream(sample).detail == "YARA.lmsav_test_yara"
        assert _reload(daemon)["result"] == "ok"
        if n in (9, 49):
            sizes.append(_rss_kib(daemon.proc.pid))
    log = daemon.output()
    assert "unsendable" not in log and "Traceback" not in log, log
    assert daemon.client.status()["reloads"] == 50
    assert sizes[1] < sizes[0] * 1.25, sizes  # flat, not a database per reload
