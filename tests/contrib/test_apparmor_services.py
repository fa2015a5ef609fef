"""The profile against the real services: on a server set up by `lmsav setup --yes`, the daemon
and the spool watcher started with the commands setup prints and `lmsav enqueue` run as
Postfix's pipe runs it, all under strace; clients scan through the daemon and two messages
(one clean, one EICAR) go through the spool. Every file they create, write, remove, execute,
map or lock, and every unix socket they bind or connect, must be allowed by
contrib/apparmor/usr.bin.lmsav: without a kernel AppArmor here, a path missing from the profile
shows as a failure of this test instead of a denial on a server in enforce mode.

What is specific to this machine's installation is left out: the checkout, its virtual
environment and Python, and the test's own scripts (a server has /usr/bin/lmsav and the
system's Python, which the profile's Python rules cover).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

from lmsav.setup import mta as mta_mod
from tests.conftest import EICAR
from tests.contrib import strace_log
from tests.contrib.profile import compile_profile, parser
from tests.setup.conftest import TESTS_DIR, Server, start_commands
from tests.sysroot import SystemRoot

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALLATION = tuple(dict.fromkeys(
    str(Path(p).resolve()) for p in (REPO, sys.prefix, sys.base_prefix, TESTS_DIR)))
STARTERS = ("strace", "sh", "setsid", "runuser")
# Where a process's own files are (owner rules apply to them).
OWN_FILES = ("/tmp/", "/var/tmp/", "/dev/shm/")
# Clients of the daemon, run as root inside: a SCAN of a path, INSTREAM and FILDES.
CLIENT = r"""
import socket, sys
def ask(command, data=b"", fd=None):
    s = socket.socket(socket.AF_UNIX)
    s.connect("/run/lmsav/clamd.sock")
    if fd is None:
        s.sendall(command + data)
    else:
        s.sendall(command)
        socket.send_fds(s, [b"\0"], [fd])
    reply = b""
    while not reply.endswith(b"\0"):
        chunk = s.recv(4096)
        if not chunk:
            break
        reply += chunk
    print(reply.rstrip(b"\0").decode())
eicar = open(sys.argv[1], "rb").read()
ask(b"zSCAN " + sys.argv[1].encode() + b"\0")
ask(b"zINSTREAM\0", len(eicar).to_bytes(4, "big") + eicar + b"\0\0\0\0")
with open(sys.argv[1], "rb") as fp:
    ask(b"zFILDES\0", fd=fp.fileno())
"""


@pytest.fixture
def server():
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (Debian package strace)")
    if parser() is None:
        pytest.skip("apparmor_parser is not installed (Debian package apparmor)")
    root = SystemRoot(net=True, overlays=("/var",))
    try:
        root.start()
        server = Server(root)
        if mta_mod.program("postconf") is None or not server.path("/etc/postfix/main.cf").is_file():
            pytest.skip("Postfix is not installed (Debian package postfix)")
        yield server
    finally:
        root.stop()


def traced(command: str, output: str) -> str:
    """``command`` under strace in the background; prints strace's pid."""
    strace = (f"strace -f -qq -y -e signal=none -e trace={strace_log.TRACED} -o {output} "
              f"-- sh -c {shlex.quote(command)}")
    return f"{strace} </dev/null >/dev/null 2>&1 & echo $!"


def watcher_pid(server: Server) -> int:
    """The spool watcher's parent process (its workers are its children; runuser and strace,
    which started it, name it in their arguments too)."""
    def args(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""

    def parent(pid: int) -> int:
        status = Path(f"/proc/{pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("PPid:")))

    watchers = {pid for pid in server.root.processes() if "spool watch" in args(pid)
                and Path(f"/proc/{pid}/comm").read_text().strip() not in STARTERS}
    [pid] = [pid for pid in watchers if parent(pid) not in watchers] or [None]
    assert pid is not None, "no spool watcher runs\n" + server.debug()
    return pid


def test_the_services_stay_within_the_profile(server):
    profile = compile_profile()
    setup = server.setup("--yes")
    daemon_start, watcher_start = start_commands(setup.stdout)
    traces = [f"{TESTS_DIR}/trace.{name}" for name in ("daemon", "watcher", "enqueue", "ctl")]
    tracers = [int(server.sh(traced(command, trace)).stdout)
               for command, trace in zip((daemon_start, watcher_start), traces)]
    lmsav = shlex.quote(server.lmsav)
    server.wait_for(lambda: server.sh(f"{lmsav} ctl ping", check=False).returncode == 0,
                    "the daemon to answer")
    server.wait_for(lambda: "watching " in server.read("/var/log/lmsav/spool.log"),
                    "the spool watcher to start")
    server.sh("postfix start")

    # The daemon's clients: clamd protocol, and lmsav ctl (run under the profile too).
    eicar = server.write_eicar()
    scans = server.root.run("/usr/bin/python3", "-c", CLIENT, eicar).stdout
    assert scans.count("Eicar") == 3, scans
    server.sh(f"strace -f -qq -y -e signal=none -e trace={strace_log.TRACED} -o {traces[3]} "
              f"-- sh -c '{lmsav} ctl status && {lmsav} ctl reload'")

    # Two messages as Postfix's pipe hands them over: as the service user, no terminal.
    domain = server.sh("postconf -h myhostname").stdout.strip()
    server.sh("useradd --no-create-home alice")
    tok = server.root.tmp.name[-8:]
    clean = (f"From: bob@{domain}\nTo: alice@{domain}\nSubject: clean\n"
             f"Message-ID: <clean{tok}@{domain}>\n\nLunch at noon?\n")
    infected = (f"From: bob@{domain}\nTo: alice@{domain}\nSubject: eicar\n"
                f"Message-ID: <eicar{tok}@{domain}>\n\n{EICAR.decode()}\n")
    for message in (clean, infected):
        server.root.run("strace", "-f", "-qq", "-y", "-e", "signal=none",
                        "-e", f"trace={strace_log.TRACED}", "-A", "-o", traces[2],
                        "runuser", "-u", "lmsav", "--", server.lmsav, "enqueue",
                        "-f", f"bob@{domain}", "--", f"alice@{domain}", input=message,
                        stdin=None)
    assert server.watcher_line(f"clean{tok}")["status"] == "clean"
    assert server.watcher_line(f"eicar{tok}")["status"] == "infected"

    # Stopped as systemd stops them; strace ends with the last process it follows.
    server.sh(f"{lmsav} ctl stop")
    os.kill(watcher_pid(server), signal.SIGTERM)
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in tracers):
        assert time.monotonic() < deadline, "the services did not stop\n" + server.debug()
        time.sleep(0.1)

    program = os.path.realpath(server.lmsav)
    refused, executed = set(), set()
    for trace in traces:
        log = strace_log.parse(server.read(trace),
                               is_program=lambda path: os.path.realpath(path) == program,
                               leaves_profile=lambda path: "sendmail" in path or "exim" in path)
        assert log.accesses, f"{trace}: no access of lmsav's processes was traced"
        executed.update(log.executed)
        for access in log.accesses:
            path = access.path
            if any(path.rstrip("/") == top or path.startswith(f"{top}/")
                   for top in INSTALLATION):
                continue
            if not path.endswith("/") and server.path(path).is_dir():
                path += "/"  # AppArmor names a directory with its trailing slash
            if not profile.allows(path, access.perms, owned=path.startswith(OWN_FILES)):
                refused.add(f"{access.perms} {path} ({access.syscall}, {Path(trace).name})")
    assert not refused, "the profile does not allow:\n" + "\n".join(sorted(refused))
    assert any(path.endswith("python3") or "python3." in path for path in executed), executed
