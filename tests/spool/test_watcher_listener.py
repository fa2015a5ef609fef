"""`lmsav spool watch` with `[spool] listen`: the watcher runs the SMTP/LMTP listener as its
child, restarts it when it dies, moves it on SIGHUP and stops it with itself."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.spool.test_listener import free_port


def wait_for(predicate, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def listener_pids(watcher_pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(watcher_pid), "-f", "spool listen"],
                         capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


class WatcherWithDoor:
    def __init__(self, tmp_path: Path):
        self.out = tmp_path / "out"
        self.out.mkdir()
        self.port = free_port()
        self.config = tmp_path / "lmsav.toml"
        self.tmp_path = tmp_path
        self.write_config(self.port)
        self.log = tmp_path / "watch.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lmsav", "--config", str(self.config), "spool", "watch",
                 "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
        wait_for(lambda: listening(self.port), what=f"the listener: {self.log.read_text()}")

    def write_config(self, port: int) -> None:
        self.config.write_text(
            f'[paths]\nstate_dir = "{self.tmp_path / "state"}"\n'
            f'[spool]\ndir = "{self.tmp_path / "spool"}"\nreinject = "dir:{self.out}"\n'
            f'listen = ["smtp:127.0.0.1:{port}"]\n')

    def send(self, port: int, subject: str) -> None:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.sendmail("ann@example.org", ["bob@example.org"],
                        f"Subject: {subject}\r\n\r\nbody\r\n".encode())
        client.quit()

    def delivered(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.glob("*.eml"))]


@pytest.fixture
def watcher(tmp_path):
    running = WatcherWithDoor(tmp_path)
    yield running
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
        running.proc.wait(60)


def test_mail_through_the_door_is_scanned_and_reinjected(watcher):
    watcher.send(watcher.port, "first")
    wait_for(lambda: len(watcher.delivered()) == 1, what="the reinjected message")
    message = watcher.delivered()[0]
    assert b"Subject: first\n" in message and b"\nX-AV-Status: clean\n" in message


def test_a_killed_listener_is_restarted_and_takes_mail_again(watcher):
    [pid] = listener_pids(watcher.proc.pid)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: listener_pids(watcher.proc.pid) not in ([], [pid]), what="a new listener")
    wait_for(lambda: listening(watcher.port), what="the port again")
    watcher.send(watcher.port, "after restart")
    wait_for(lambda: len(watcher.delivered()) == 1, what="the reinjected message")
    assert "listener %d exited (killed by SIGKILL)" % pid in watcher.log.read_text()


def test_sighup_moves_the_listener_and_sigterm_stops_it(watcher):
    new_port = free_port()
    watcher.write_config(new_port)
    watcher.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: listening(new_port), what="the new port")
    wait_for(lambda: not listening(watcher.port), what="the old port closed")
    watcher.send(new_port, "moved")
    wait_for(lambda: len(watcher.delivered()) == 1, what="the reinjected message")
    watcher.proc.send_signal(signal.SIGTERM)
    assert watcher.proc.wait(60) == 0
    assert not listening(new_port)
    assert listener_pids(watcher.proc.pid) == []
