"""A running ``lmsav daemon`` for the real clamd clients (clamdscan, pyclamd, Exim's malware ACL,
clamav-milter), and a real clamd for comparison.

The daemon listens on a unix socket and a free TCP port on 127.0.0.1, serves the bundled database
(``lmsav/data/bases``) and is stopped after the module. Everything lives in a private directory
under /tmp that unprivileged MTA processes can reach; nothing under /etc is read or changed.

Set ``LMSAV_DAEMON_UNDER_TEST=clamd`` to run the same tests against Debian's clamd
(``clamav-daemon``) with the same database: this is how the tests themselves are checked. Set
``LMSAV_KEEP_DAEMON=1`` to keep the directories for a post-mortem.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.mta.conftest import _chown as _chown_to_user

from tests.conftest import EICAR

REPO = Path(__file__).resolve().parents[2]
BUNDLED_BASES = REPO / "lmsav" / "data" / "bases"
LMSAV = shutil.which("lmsav") or str(Path(sys.executable).parent / "lmsav")
CLAMD = shutil.which("clamd") or "/usr/sbin/clamd"
START_TIMEOUT = float(os.environ.get("LMSAV_DAEMON_START_TIMEOUT", "60"))

# Both daemons name EICAR after the bundled .ndb signature; clamd adds ".UNOFFICIAL" to names
# from databases it does not know, so tests match on this prefix.
EICAR_NAME = "Eicar-Test-Signature"

__all__ = ["EICAR", "EICAR_NAME", "Daemon", "free_port", "start_clamd", "start_lmsav_daemon"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_root(name: str) -> Path:
    """A private directory under /tmp that the MTAs' and milter's users can traverse."""
    root = Path(tempfile.mkdtemp(prefix=f"lmsav-{name}-", dir="/tmp"))
    os.chmod(root, 0o755)
    return root


# -- the clamd protocol, as a client speaks it -----------------------------------------------------

def read_reply(sock: socket.socket, end: bytes = b"\0") -> bytes:
    """Read one reply up to ``end`` (NUL for z-commands, newline for n-commands)."""
    data = b""
    while not data.endswith(end):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.rstrip(end)


@dataclass
class Daemon:
    """A clamd-protocol daemon under test: lmsav's or the real clamd."""

    name: str  # "lmsav" or "clamd"
    root: Path
    socket: Path
    tcp_port: int
    proc: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    def connect(self, timeout: float = 30.0, tcp: bool = False) -> socket.socket:
        if tcp:
            return socket.create_connection(("127.0.0.1", self.tcp_port), timeout=timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(self.socket))
        return sock

    def command(self, command: bytes, timeout: float = 30.0, tcp: bool = False) -> bytes:
        """Send one z-command (``b"PING"``) on a fresh connection and return the reply."""
        with self.connect(timeout, tcp) as sock:
            sock.sendall(b"z" + command + b"\0")
            return read_reply(sock)

    def ping(self, timeout: float = 5.0, tcp: bool = False) -> bool:
        try:
            return self.command(b"PING", timeout, tcp) == b"PONG"
        except OSError:
            return False

    def instream(self, data: bytes, chunk: int = 65536, tcp: bool = False,
                 timeout: float = 60.0) -> bytes:
        with self.connect(timeout, tcp) as sock:
            sock.sendall(b"zINSTREAM\0")
            view = memoryview(data)
            for start in range(0, len(data), chunk):
                piece = view[start:start + chunk]
                sock.sendall(struct.pack(">I", len(piece)) + piece)
            sock.sendall(struct.pack(">I", 0))
            return read_reply(sock)

    def memory_kib(self) -> tuple[int, int]:
        """(RSS, PSS) of the daemon and all its processes (workers), in KiB. RSS counts pages
        the workers share copy-on-write once per process; PSS divides them among the sharers."""
        pids = _process_tree(self.proc.pid)
        return (sum(_proc_field(f"/proc/{pid}/status", "VmRSS:") for pid in pids),
                sum(_proc_field(f"/proc/{pid}/smaps_rollup", "Pss:") for pid in pids))

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.socket.exists() and self.ping(timeout=2) and self.ping(tcp=True, timeout=2):
                return
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"{self.name} does not answer PING after {timeout} s:\n"
                           f"{self.log_tail()}")


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parent = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def _proc_field(path: str, name: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# -- starting the daemons ------------------------------------------------------------------------

def lmsav_daemon_available() -> str | None:
    """None when ``lmsav daemon`` exists, else why not."""
    proc = subprocess.run([LMSAV, "daemon", "--help"], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"lmsav daemon is not available: {(proc.stderr or proc.stdout).strip()[-200:]}"
    return None


def start_lmsav_daemon(root: Path, bases: Path = BUNDLED_BASES, workers: int | None = 2,
                       settings: dict[str, str | int | float] | None = None,
                       args: tuple[str, ...] = (),
                       start_timeout: float = START_TIMEOUT) -> Daemon:
    """``lmsav daemon`` in the foreground on root/lmsav.sock and a free TCP port, with the
    [daemon] ``settings`` given; ``workers`` None leaves their number to the daemon (one per
    CPU)."""
    # The MTAs and the milter connect as unprivileged users of their own.
    daemon_settings = {"socket_mode": "0666", **(settings or {})}
    lines = "".join(f"{key} = {value!r}\n".replace("'", '"') if isinstance(value, str)
                    else f"{key} = {value}\n" for key, value in daemon_settings.items())
    config = root / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{root / "state"}"\n\n[daemon]\n{lines}')
    sock, port, log = root / "lmsav.sock", free_port(), root / "lmsav-daemon.log"
    env = {**os.environ, "LMSAV_CONFIG": str(config), "XDG_CACHE_HOME": str(root / "cache")}
    cmd = [LMSAV, "daemon", "--socket", str(sock), "--tcp", f"127.0.0.1:{port}",
           "-d", str(bases), *(["--workers", str(workers)] if workers else []), *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=root)
    daemon = Daemon("lmsav", root, sock, port, proc, log)
    daemon.wait_ready(start_timeout)
    return daemon


CLAMD_CONF = """\
Foreground yes
LocalSocket {socket}
LocalSocketMode 666
FixStaleSocket yes
TCPSocket {port}
TCPAddr 127.0.0.1
PidFile {root}/clamd.pid
TemporaryDirectory {root}/tmp
DatabaseDirectory {bases}
LogFile {root}/clamd.log
LogTime yes
MaxThreads {threads}
MaxConnectionQueueLength 200
MaxQueue 200
StreamMaxLength {stream_max}
MaxScanSize 200M
MaxFileSize 100M
IdleTimeout {timeout}
ReadTimeout {timeout}
CommandReadTimeout {timeout}
SelfCheck 0
AllowAllMatchScan yes
"""


def start_clamd(root: Path, bases: Path = BUNDLED_BASES, threads: int = 12,
                stream_max: str = "100M", timeout: int = 30, extra_conf: str = "") -> Daemon:
    """Debian's clamd with a private clamd.conf (the reference the tests and bench compare to)."""
    if not os.path.exists(CLAMD):
        pytest.skip("clamd is not installed (Debian package clamav-daemon)")
    (root / "tmp").mkdir(exist_ok=True)
    sock, port = root / "clamd.sock", free_port()
    conf = root / "clamd.conf"
    conf.write_text(CLAMD_CONF.format(socket=sock, port=port, root=root, bases=bases,
                                      threads=threads, stream_max=stream_max,
                                      timeout=timeout) + extra_conf)
    log = root / "clamd.log"
    proc = subprocess.Popen([CLAMD, f"--config-file={conf}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=root)
    daemon = Daemon("clamd", root, sock, port, proc, log, {"config": conf})
    daemon.wait_ready(timeout=max(START_TIMEOUT, 600))
    return daemon


def under_clamd() -> bool:
    return os.environ.get("LMSAV_DAEMON_UNDER_TEST", "lmsav") == "clamd"


def start_daemon_under_test(root: Path, stream_max: str = "25M", timeout: int = 30,
                            max_connections: int = 200) -> Daemon:
    """lmsav's daemon, or clamd when LMSAV_DAEMON_UNDER_TEST=clamd (to check the tests), with
    the given INSTREAM limit, read timeout (seconds) and connection limit (lmsav only)."""
    if under_clamd():
        return start_clamd(root, stream_max=stream_max, timeout=timeout)
    reason = lmsav_daemon_available()
    if reason:
        pytest.skip(reason)
    return start_lmsav_daemon(root, settings={
        "stream_max_length": stream_max, "read_timeout": timeout, "idle_timeout": timeout,
        "max_connections": max_connections})


give_to = _chown_to_user  # chown to a user and its primary group (an MTA's delivery user)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("these tests start real MTAs and a milter as other users and need root")


# -- fixtures ------------------------------------------------------------------------------------

@contextlib.contextmanager
def running_daemon(**options):
    """The daemon under test in a private directory, stopped and removed afterwards."""
    root = make_root("daemon")
    try:
        running = start_daemon_under_test(root, **options)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield running
    finally:
        running.stop()
        if os.environ.get("LMSAV_KEEP_DAEMON") != "1":
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def daemon():
    """The daemon under test, running for the module's tests."""
    with running_daemon() as running:
        yield running


@pytest.fixture(scope="module")
def reference_clamd():
    """Debian's clamd on the bundled database (for comparisons; the bench starts its own)."""
    root = make_root("clamd")
    try:
        running = start_clamd(root)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield running
    finally:
        running.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scan_tree() -> Path:
    """A directory the daemon's user can read: two clean files and EICAR in a subdirectory."""
    root = Path(tempfile.mkdtemp(prefix="lmsav-tree-", dir="/tmp"))
    os.chmod(root, 0o755)
    (root / "clean.txt").write_bytes(b"nothing to see\n")
    (root / "notes.md").write_bytes(b"# notes\n" * 100)
    (root / "sub").mkdir()
    (root / "sub" / "eicar.com").write_bytes(EICAR)
    for path in root.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    yield root
    shutil.rmtree(root, ignore_errors=True)
