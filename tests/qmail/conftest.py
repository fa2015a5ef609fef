"""Fixtures for lmsav-qmail-queue: the test qmail-queue, a caller that behaves like qmail's
qmail.c (as used by qmail-smtpd and qmail-inject), and a daemon with test groups."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.daemon.client import Client

HERE = Path(__file__).resolve().parent
WRAPPER = str(Path(sys.executable).parent / "lmsav-qmail-queue")
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"

GROUPS = {
    "default.toml": 'notify_recipients = []\nnotify_admin = []\n'
                    'reject_reply = "554 5.7.1 Virus found: $threats"\n',
    "cure.toml": 'priority = 10\nrecipients = ["*@cure.example"]\ninfected_action = "cure"\n'
                 'notify_recipients = []\nnotify_admin = []\n',
    "drop.toml": 'priority = 10\nrecipients = ["*@drop.example"]\ninfected_action = "drop"\n'
                 'notify_recipients = []\nnotify_admin = []\n',
    "notify.toml": 'priority = 10\nrecipients = ["*@notify.example"]\n'
                   'notify_recipients = []\nnotify_admin = ["infected"]\n'
                   'admin_addresses = ["postmaster@mx.test"]\nnotice_from = "av@mx.test"\n',
    "internal.toml": 'priority = 1\nrecipients = ["*@nowhere.invalid"]\n'
                     'infected_action = "warn"\nnotify_recipients = []\nnotify_admin = []\n',
}


@dataclass
class Submitted:
    code: int
    error: bytes  # what the program wrote on descriptor 4 (custom-error convention)
    stderr: str


def envelope(sender: bytes | str, *rcpts: bytes | str) -> bytes:
    b = [x.encode() if isinstance(x, str) else x for x in (sender, *rcpts)]
    return b"F" + b[0] + b"\0" + b"".join(b"T" + r + b"\0" for r in b[1:]) + b"\0"


def submit(message: bytes, env_bytes: bytes, env: dict, program: str = WRAPPER,
           custom_error: bool = False, timeout: float = 60) -> Submitted:
    """What qmail.c does: two pipes on descriptors 0 and 1 (and, with the custom-error patch,
    a third on 4); write the whole message, close it, then the envelope, close it, wait."""
    msg_r, msg_w = os.pipe()
    env_r, env_w = os.pipe()
    log_r, log_w = os.pipe()
    err_r = err_w = -1
    actions = [(os.POSIX_SPAWN_DUP2, msg_r, 0), (os.POSIX_SPAWN_DUP2, env_r, 1),
               (os.POSIX_SPAWN_DUP2, log_w, 2)]
    if custom_error:
        err_r, err_w = os.pipe()
        actions.append((os.POSIX_SPAWN_DUP2, err_w, 4))
    pid = os.posix_spawn(program, [program], env, file_actions=actions)
    for fd in (msg_r, env_r, log_w, err_w):
        if fd >= 0:
            os.close(fd)
    stderr: list[bytes] = []

    def drain():
        with os.fdopen(log_r, "rb") as fp:
            stderr.append(fp.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()

    def feed():
        try:
            _write_all(msg_w, message)
            os.close(msg_w)
            _write_all(env_w, env_bytes)
        except OSError:
            pass
        finally:
            for fd in (msg_w, env_w):
                try:
                    os.close(fd)
                except OSError:
                    pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("lmsav-qmail-queue did not finish (deadlock?)")
        time.sleep(0.002)
    code = os.waitstatus_to_exitcode(status)
    writer.join(5)
    reader.join(5)
    error = b""
    if custom_error:
        os.set_blocking(err_r, False)
        try:
            error = os.read(err_r, 1024)
        except BlockingIOError:
            error = b""
        os.close(err_r)
    return Submitted(code, error, (stderr[0] if stderr else b"").decode("utf-8", "replace"))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FakeQueue:
    """The test qmail-queue and what it received."""

    def __init__(self, root: Path):
        self.dir = root / "queue"
        self.dir.mkdir(parents=True)
        self.program = root / "qmail-queue"
        # Standard library only, so the system interpreter will do: unlike a virtual
        # environment under /root, it can be run by the unprivileged users of qmail.
        python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
        self.program.write_text(
            f"#!{python} -S\nimport sys\nsys.path.insert(0, {str(HERE)!r})\n"
            "from fake_qmail_queue import main\nmain()\n")
        self.program.chmod(0o755)
        self.dir.chmod(0o777)

    def exits(self, *codes: int) -> None:
        (self.dir / "exit").write_text(" ".join(map(str, codes)))

    def records(self) -> list[dict]:
        out = []
        for d in sorted((p for p in self.dir.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
            info = json.loads((d / "info.json").read_text())
            info["message"] = (d / "message").read_bytes()
            info["envelope"] = (d / "envelope").read_bytes()
            out.append(info)
        return out

    def queued(self) -> list[dict]:
        return [r for r in self.records() if r["queued"]]


class Setup:
    """A configuration (groups, state, socket) and optionally a daemon serving it."""

    def __init__(self, root: Path, daemon: bool):
        self.root = root
        self.sock = root / "run" / "clamd.sock"
        self.config = root / "etc" / "lmsav.toml"
        (root / "etc" / "groups.d").mkdir(parents=True)
        for name, text in GROUPS.items():
            (root / "etc" / "groups.d" / name).write_text(text)
        self.db = root / "bases"
        shutil.copytree(paths.bundled_database_dir(), self.db,
                        ignore=shutil.ignore_patterns(".compiled*"))
        self.config.write_text(
            f'[paths]\nrun_dir = "{root / "run"}"\nstate_dir = "{root / "state"}"\n'
            f'bases = "{self.db}"\n'
            f'[daemon]\nsocket = "{self.sock}"\n'
            '[qmail]\nqmail_queue = "/nonexistent/qmail-queue"\n')
        self.proc = None
        if daemon:
            self.start_daemon()

    def start_daemon(self) -> None:
        self.log = open(self.root / "daemon.log", "a")
        env = dict(os.environ, LMSAV_CONFIG=str(self.config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmsav.launcher", "daemon", "--workers", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        client = Client(self.sock, timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return
            except Exception:
                time.sleep(0.1)
            assert self.proc.poll() is None, (self.root / "daemon.log").read_text()
        raise AssertionError("daemon did not start")

    def stop_daemon(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def env(self, queue: FakeQueue, **extra: str) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}
        env.update(LMSAV_CONFIG=str(self.config), LMSAV_QMAILQUEUE=str(queue.program),
                   FAKE_QMAILQUEUE_DIR=str(queue.dir))
        env.update(extra)
        return env


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    setup = Setup(tmp_path_factory.mktemp("qmail"), daemon=True)
    yield setup
    setup.stop_daemon()


@pytest.fixture
def queue(tmp_path):
    return FakeQueue(tmp_path)
