"""`lmsav daemon` as a user runs it: a real subprocess on a temporary socket and TCP port."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.daemon.client import Client
from tests.conftest import EICAR

pytestmark = pytest.mark.integration

READ_TIMEOUT = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.sock = tmp / "run" / "clamd.sock"
        self.port = _free_port()
        self.db = tmp / "bases"
        shutil.copytree(paths.bundled_database_dir(), self.db,
                        ignore=shutil.ignore_patterns(".compiled*"))
        self.config = tmp / "lmsav.toml"
        self.config.write_text(
            "[daemon]\n"
            f"read_timeout = {READ_TIMEOUT}\n"
            "idle_timeout = 20\n"
            "max_connections = 700\n"
            'stream_max_length = "1M"\n'
            f'[paths]\nrun_dir = "{tmp / "run"}"\nstate_dir = "{tmp / "state"}"\n')
        self.log = open(tmp / "daemon.log", "w+")
        env = dict(os.environ, LMSAV_CONFIG=str(self.config))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lmsav.launcher", "daemon", "--socket", str(self.sock),
             "--tcp", f"127.0.0.1:{self.port}", "-d", str(self.db), "--workers", "2"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.client = Client(self.sock, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.ping():
                    return
            except Exception:
                time.sleep(0.1)
            assert self.proc.poll() is None, self.output()
        raise AssertionError("daemon did not start: " + self.output())

    def output(self) -> str:
        self.log.flush()
        return (self.tmp / "daemon.log").read_text()

    def raw(self, payload: bytes, tcp: bool = False) -> bytes:
        s = self.connect(tcp)
        s.sendall(payload)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out

    def connect(self, tcp: bool = False) -> socket.socket:
        if tcp:
            s = socket.create_connection(("127.0.0.1", self.port), 10)
        else:
            s = socket.socket(socket.AF_UNIX)
            s.connect(str(self.sock))
        s.settimeout(30)
        return s

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            self.log.close()


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "clean.txt").write_bytes(b"just text\n")
    (root / "sub" / "eicar.com").write_bytes(EICAR)
    (root / "sub" / "other.txt").write_bytes(b"more text\n")
    return root


def test_ping_and_version_on_unix_and_tcp(daemon):
    assert daemon.raw(b"zPING\0") == b"PONG\0"
    assert daemon.raw(b"nPING\n", tcp=True) == b"PONG\n"
    assert daemon.raw(b"PING") == b"PONG\n"
    product, version, date = daemon.raw(b"zVERSION\0", tcp=True).rstrip(b"\0").split(b"/")
    assert product.startswith(b"ClamAV") and version == b"2026112401" and date


def test_scan_file_clean_file_and_directory(daemon, files):
    eicar = files / "sub" / "eicar.com"
    assert daemon.raw(f"zSCAN {eicar}\0".encode()) == \
        f"{eicar}: Eicar-Test-Signature FOUND\0".encode()
    clean = files / "clean.txt"
    assert daemon.raw(f"nSCAN {clean}\n".encode()) == f"{clean}: OK\n".encode()
    clean_dir = files / "sub2"
    clean_dir.mkdir()
    (clean_dir / "a").write_bytes(b"a\n")
    assert daemon.raw(f"zCONTSCAN {clean_dir}\0".encode()) == f"{clean_dir}: OK\0".encode()
    for mode in ("CONTSCAN", "MULTISCAN", "SCAN"):
        reply = daemon.raw(f"z{mode} {files}\0".encode())
        assert reply == f"{eicar}: Eicar-Test-Signature FOUND\0".encode(), mode
    missing = files / "missing"
    assert daemon.raw(f"zSCAN {missing}\0".encode()) == \
        f"{missing}: lstat() failed: No such file or directory. ERROR\0".encode()


def test_instream_and_fildes(daemon, files):
    assert daemon.client.instream(EICAR).line == "stream: Eicar-Test-Signature FOUND"
    assert daemon.client.instream(b"clean bytes" * 1000).line == "stream: OK"
    body = b"".join(struct.pack(">I", 1) + EICAR[i:i + 1] for i in range(len(EICAR)))
    assert daemon.raw(b"zINSTREAM\0" + body + b"\0\0\0\0", tcp=True) == \
        b"stream: Eicar-Test-Signature FOUND\0"
    with open(files / "sub" / "eicar.com", "rb") as fh:
        result = daemon.client.fildes(fh)
    assert result.status == "FOUND" and result.path.startswith("fd[")


def test_instream_and_fildes_unpack_what_7z_reads(daemon, tmp_path):
    # ARJ, CHM and deflate64 zips are unpacked by a 7z child process. It used to be given the
    # worker's /proc/self/fd/N, a descriptor it does not have: "7z failed", so a milter or an
    # Exim ACL deferred every such message.
    for tool in ("7z", "arj"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    src = tmp_path / "src"
    src.mkdir()
    (src / "eicar.com").write_bytes(EICAR)
    (src / "words.txt").write_bytes(b" ".join([b"alpha", b"beta", b"gamma"] * 2000))
    quiet = {"check": True, "stdout": subprocess.DEVNULL, "cwd": src}
    subprocess.run(["arj", "a", str(tmp_path / "e.arj"), "eicar.com"], **quiet)
    subprocess.run(["7z", "a", "-bso0", "-tzip", "-mm=Deflate64", str(tmp_path / "e.zip"),
                    "words.txt", "eicar.com"], **quiet)
    for archive in (tmp_path / "e.arj", tmp_path / "e.zip"):
        data = archive.read_bytes()
        assert daemon.client.instream(data).line == "stream: Eicar-Test-Signature FOUND"
        with open(archive, "rb") as fh:
            result = daemon.client.fildes(fh)
        assert result.status == "FOUND", (archive.name, result)
    assert "7z failed" not in daemon.output()


def test_oversize_stream_is_refused_and_closed(daemon):
    s = daemon.connect()
    s.sendall(b"zINSTREAM\0" + struct.pack(">I", 2 << 20))
    assert s.recv(1000) == b"INSTREAM size limit exceeded. ERROR\0"
    assert s.recv(1000) == b""
    assert daemon.client.ping()


def test_idsession_numbers_replies(daemon, files):
    payload = (b"zIDSESSION\0zPING\0zINSTREAM\0" + struct.pack(">I", len(EICAR)) + EICAR +
               b"\0\0\0\0" + f"zSCAN {files / 'clean.txt'}\0".encode() + b"zEND\0")
    replies = set(daemon.raw(payload).split(b"\0")) - {b""}
    assert replies == {b"1: PONG", b"2: stream: Eicar-Test-Signature FOUND",
                       f"3: {files / 'clean.txt'}: OK".encode()}
    assert daemon.raw(b"zIDSESSION\0zRELOAD\0") == b"1: Command invalid inside IDSESSION. ERROR\0"


def test_unknown_command(daemon):
    assert daemon.raw(b"zFROBNICATE\0") == b"UNKNOWN COMMAND\0"
    assert daemon.raw(b"STATS\n") == b"UNKNOWN COMMAND\n"  # needs a z/n prefix, as in clamd
    assert daemon.raw(b"zEND\0") == b"UNKNOWN COMMAND\0"


def test_client_stopping_mid_chunk_is_dropped_others_served(daemon):
    stalled = daemon.connect()
    stalled.sendall(b"zINSTREAM\0" + struct.pack(">I", 1000) + b"only part")
    started = time.monotonic()
    for _ in range(5):
        assert daemon.client.instream(EICAR).status == "FOUND"
        assert daemon.client.ping()
    assert stalled.recv(100) == b"COMMAND READ TIMED OUT\n"
    assert stalled.recv(100) == b""
    assert READ_TIMEOUT - 0.5 < time.monotonic() - started < READ_TIMEOUT + 5


def test_many_idle_connections_do_not_block_ping(daemon):
    idle = [daemon.connect() for _ in range(500)]
    try:
        for _ in range(10):
            t0 = time.monotonic()
            assert daemon.raw(b"zPING\0") == b"PONG\0"
            assert time.monotonic() - t0 < 2
        assert daemon.client.status()["connections"] >= 500
        extra = [daemon.connect() for _ in range(250)]  # over max_connections = 700
        refused = 0
        for s in extra:
            s.settimeout(5)
            try:
                if s.recv(100).startswith(b"Max connections reached. ERROR"):
                    refused += 1
            except TimeoutError:
                pass
        assert refused >= 40
        for s in extra:
            s.close()
    finally:
        for s in idle:
            s.close()
    assert daemon.client.ping()


def _scan_loop(client: Client, stop: threading.Event, failures: list, count: list) -> None:
    while not stop.is_set():
        try:
            if client.instream(EICAR).line != "stream: Eicar-Test-Signature FOUND":
                failures.append(f"bad reply {client.instream(EICAR).line}")
            if not client.ping():
                failures.append("no pong")
            count[0] += 1
        except Exception as err:  # any failure during reload is a bug
            failures.append(repr(err))


def test_reload_good_database_swaps_without_failures(daemon):
    (daemon.db / "database.toml").write_text('version = "2026112402"\n')
    stop, failures, count = threading.Event(), [], [0]
    threads = [threading.Thread(target=_scan_loop, args=(daemon.client, stop, failures, count))
               for _ in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        assert daemon.client.reload()
        deadline = time.monotonic() + 60
        while b"2026112402" not in daemon.raw(b"zVERSION\0"):
            assert time.monotonic() < deadline, daemon.output()
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures and count[0] > 10
    assert daemon.client.status()["last_reload"]["result"] == "ok"
    os.kill(daemon.proc.pid, signal.SIGUSR2)  # the signal reloads too
    deadline = time.monotonic() + 60
    while daemon.client.status()["reloads"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_reload_broken_database_is_refused_and_old_one_kept(daemon):
    (daemon.db / "database.toml").write_text('version = "2026999999"\n')
    (daemon.db / "broken.ndb").write_text("Broken.Sig:0:*:zz-not-hex\n")
    os.kill(daemon.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 60
    while not daemon.client.status().get("last_reload"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    st = daemon.client.status()
    assert st["last_reload"]["result"] == "refused"
    assert st["database"]["version"] == "2026112401"
    assert daemon.client.instream(EICAR).status == "FOUND"
    assert "reload refused" in daemon.output()


def test_sigterm_finishes_and_exits_cleanly(daemon):
    assert daemon.client.ping()
    assert daemon.stop() == 0
    assert not daemon.sock.exists()


def test_ctl_commands(daemon):
    env = dict(os.environ, LMSAV_CONFIG=str(daemon.config))
    run = lambda *args: subprocess.run(
        [sys.executable, "-m", "lmsav.launcher", "ctl", *args, "--socket", str(daemon.sock)],
        capture_output=True, text=True, env=env, timeout=120)
    assert run("ping").stdout.strip() == "PONG"
    status = run("status")
    assert status.returncode == 0 and "database:    2026112401" in status.stdout
    (daemon.db / "database.toml").write_text('version = "2026112403"\n')
    reload = run("reload")
    assert reload.returncode == 0 and "2026112403" in reload.stdout, reload.stderr
    stop = run("stop")
    assert stop.returncode == 0
    assert daemon.proc.wait(30) == 0


def test_lmsav_scan_through_the_daemon(daemon, files):
    """`lmsav scan --daemon` as clamdscan: paths (MULTISCAN), --stream, and stdin."""
    import os
    import subprocess

    base = [sys.executable, "-m", "lmsav.launcher", "scan", "--daemon", "--socket",
            str(daemon.sock)]
    env = dict(os.environ, LMSAV_CONFIG=os.devnull)
    os.mkfifo(files / "fifo")  # never opened: streaming skips what is not a regular file
    by_path = subprocess.run([*base, str(files)], capture_output=True, text=True, env=env,
                             timeout=60)
    assert by_path.returncode == 1
    assert f"{files}/sub/eicar.com: Eicar-Test-Signature FOUND" in by_path.stdout
    assert "Infected files: 1" in by_path.stdout  # the summary, as clamdscan prints it
    streamed = subprocess.run([*base, "--no-summary", "--stream", str(files)],
                              capture_output=True, text=True,
                              env=env, timeout=60)
    assert streamed.returncode == 1
    assert streamed.stdout.splitlines() == [f"{files}/sub/eicar.com: Eicar-Test-Signature FOUND"]
    stdin = subprocess.run([*base, "--no-summary", "-v", "-"], input=b"clean words", capture_output=True,
                           env=env, timeout=60)
    assert (stdin.returncode, stdin.stdout) == (0, b"stream: OK\n")


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_starts_as_root_then_runs_as_the_configured_user(tmp_path):
    import pwd
    import subprocess

    tmp_path.chmod(0o755)
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text(f'[daemon]\nuser = "nobody"\nsocket_mode = "0666"\n'
                   f'[paths]\nstate_dir = "{tmp_path}/state"\nrun_dir = "{tmp_path}/run"\n')
    import tempfile

    public = Path(tempfile.mkdtemp(prefix="lmsav-daemon-user-"))  # pytest's tmp is root-only
    public.chmod(0o755)
    sample = public / "e.com"
    sample.write_bytes(EICAR)
    sample.chmod(0o644)
    env = dict(os.environ, LMSAV_CONFIG=str(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "lmsav.launcher", "daemon"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = Client(tmp_path / "run" / "clamd.sock", timeout=30)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    break
            except Exception:
                time.sleep(0.1)
        owners = {pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
                  for pid in [proc.pid]}
        assert owners == {"nobody"}
        [result] = client.scan(str(sample), "SCAN")
        assert result.status == "FOUND"
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(public, ignore_errors=True)


def _wait_version(daemon, version: bytes) -> None:
    deadline = time.monotonic() + 60
    while version not in daemon.raw(b"zVERSION\0"):
        assert time.monotonic() < deadline, daemon.output()
        time.sleep(0.1)


def test_yara_rules_match_in_workers_across_reloads(daemon):
    """yara-x scanners are bound to the thread that made them; the database a reload thread
    loaded and self-tested is handed to the workers with its YARA matcher rebuilt, so rules
    keep matching after every reload (and the daemon does not load the database twice)."""
    sample = b"xx LMSAV-YARA-TEST-SAMPLE xx"
    assert daemon.client.instream(sample).detail == "YARA.lmsav_test_yara"
    (daemon.db / "extra.yar").write_text(
        'rule lmsav_second { strings: $a = "lmsav-yara-two" condition: $a }\n')
    (daemon.db / "database.toml").write_text('version = "2026112402"\n')
    assert daemon.client.reload()
    _wait_version(daemon, b"2026112402")
    for _ in range(4):  # every worker, whichever answers
        assert daemon.client.instream(sample).detail == "YARA.lmsav_test_yara"
        assert daemon.client.instream(b"-- lmsav-yara-two --").detail == "YARA.lmsav_second"
    (daemon.db / "database.toml").write_text('version = "2026112403"\n')
    assert daemon.client.reload()
    _wait_version(daemon, b"2026112403")
    for _ in range(4):
        assert daemon.client.instream(b"-- lmsav-yara-two --").detail == "YARA.lmsav_second"
    assert daemon.client.status()["last_reload"]["result"] == "ok"
    log = daemon.output()
    assert "Traceback" not in log and "panick" not in log
