"""The milter deciding through a running `lmsav daemon` (its workers scan), and what it does
when the daemon is gone: decide in-process (fallback) or defer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from lmsav.daemon.client import Client as DaemonClient
from lmsav.milter import protocol
from lmsav.milter.daemon_backend import DaemonBackend
from lmsav.milter.server import make_server
from lmsav.milter.session import Limits
from tests.milter.conftest import Milter, added_headers, build, infected, write_config

pytestmark = pytest.mark.integration

SENDER = "alice@senders.test"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    root = tmp_path_factory.mktemp("milter-daemon")
    config = write_config(root, root / "notices")
    sock = root / "run" / "clamd.sock"
    with open(config, "a") as out:
        out.write(f'\n[daemon]\nsocket = "{sock}"\n')
    log = open(root / "daemon.log", "ab")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([sys.executable, "-m", "lmsav.launcher", "daemon", "--workers", "2"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(config)))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if DaemonClient(sock, timeout=10).ping():
                    break
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
            assert proc.poll() is None, (root / "daemon.log").read_text()
        yield sock, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def serve(backend, tmp_path):
    server = make_server("inet:0@127.0.0.1", backend, Limits(tmp_dir=str(tmp_path)), 10)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    return server, thread


@pytest.fixture
def through_daemon(daemon, milter_service, tmp_path):
    sock, _proc = daemon
    local, notices = milter_service
    backend = DaemonBackend(str(sock), 30, local, fallback=False)
    server, thread = serve(backend, tmp_path)
    try:
        yield Milter(server, notices, backend)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def transaction(milter, recipient, raw):
    client = milter.client()
    try:
        client.connect()
        client.mail(SENDER)
        assert client.rcpt(recipient).command == b"c"
        return client.message(raw)
    finally:
        client.close()


def test_the_daemon_decides_reject_accept_and_warn(through_daemon, monkeypatch):
    # Were the milter's own service asked, this would fail: only the daemon may decide.
    monkeypatch.setattr(through_daemon.backend.local, "decide", None)
    [reply] = transaction(through_daemon, "bob@clean.test", infected())
    assert reply.data.startswith(b"550 5.7.1 Refused here: ")
    assert b"Eicar-Test-Signature" in reply.data
    answers = transaction(through_daemon, "bob@clean.test", build())
    assert answers[-1].command == protocol.ACCEPT
    assert added_headers(answers)["X-AV-Status"] == "clean"
    answers = transaction(through_daemon, "dave@warn.test", infected(subject="x"))
    assert added_headers(answers)["Subject"] == "[VIRUS] x"
    assert any(p.command == protocol.REPLBODY for p in answers)


def test_without_the_daemon_it_falls_back_or_defers(milter_service, tmp_path):
    local, notices = milter_service
    missing = str(tmp_path / "no-daemon.sock")
    for fallback, expected in ((True, b"550 5.7.1 Refused here: "), (False, b"451 4.3.0 ")):
        backend = DaemonBackend(missing, 5, local, fallback=fallback)
        server, thread = serve(backend, tmp_path)
        try:
            [reply] = transaction(Milter(server, notices, backend), "bob@clean.test", infected())
        finally:
            server.shutdown()
            server.server_close()
            thread.join(10)
        assert reply.command == protocol.REPLYCODE and reply.data.startswith(expected)
