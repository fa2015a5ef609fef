"""A server in a tests.sysroot namespace with a network of its own, where `lmsav setup` runs as the
administrator runs it: as root, on the default paths, with the machine's MTA (the host's
/etc/postfix, an unpacked Exim, a qmail stand-in), and the start commands it prints run as
printed. Nothing here configures lmsav: what lmsav does is what setup made.

The namespace overlays the whole of /var as well (/var/spool, /var/mail, a /var/qmail), so a
Postfix or Exim started inside listens on its own 127.0.0.1:25 and delivers to its own
mailboxes, and has its own PIDs, so userdel there sees no process of another namespace's lmsav
account (same uid); everything vanishes with the namespace, processes included.
"""

from __future__ import annotations

import json
import mailbox
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import EICAR
from tests.sysroot import SystemRoot, file_state

REPO = Path(__file__).resolve().parents[2]
TESTS_DIR = "/run/lmsav-tests"  # inside: where sysroot.program puts the lmsav scripts
SETUP_LOCK = "/run/lmsav-setup.lock"
# What shadow's useradd, usermod, gpasswd and userdel leave whatever account they handle.
ACCOUNT_BYPRODUCTS = {"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-",
                      "/etc/subuid-", "/etc/subgid-", "/etc/.pwd.lock", "/var/log/lastlog",
                      "/var/log/faillog"}
WAIT = 60.0


def environment() -> dict:
    """Root's environment at a shell: nothing that points lmsav at another configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


class Server:
    """The namespace as a server: root's commands, lmsav's, and what a test looks at."""

    def __init__(self, sysroot: SystemRoot):
        self.root = sysroot
        self.lmsav = sysroot.program("lmsav")
        sysroot.program("lmsav-qmail-queue")  # beside lmsav, where setup looks for it
        # A server without systemd as PID 1: a host's systemd is not this namespace's.
        self.sh("mountpoint -q /run && rm -rf /run/systemd/system")

    # -- commands ---------------------------------------------------------------------------------

    def sh(self, command: str, check: bool = True, timeout: float = 300,
           **kw) -> subprocess.CompletedProcess:
        """A command line as root types it at a shell inside."""
        return self.root.run("sh", "-c", command, env=environment(), check=check,
                             timeout=timeout, **kw)

    def setup(self, *args: str, answers: dict | None = None, check: bool = True,
              **kw) -> subprocess.CompletedProcess:
        """`lmsav setup …` as root; ``answers`` go into an answers file (--answers)."""
        command = [self.lmsav, "setup", *args, "--lmsav", self.lmsav]
        if answers:
            self.write(f"{TESTS_DIR}/answers.toml", "".join(
                f"{key} = {toml_value(value)}\n" for key, value in answers.items()))
            command += ["--answers", f"{TESTS_DIR}/answers.toml"]
        proc = self.root.run(*command, env=environment(), check=False, timeout=600, **kw)
        if check:
            assert proc.returncode == 0, f"lmsav setup {' '.join(args)}: exit " \
                f"{proc.returncode}\n{proc.stdout}{proc.stderr}"
        return proc

    def start_services(self, setup_output: str) -> list[str]:
        """Run the start commands setup printed, literally, and wait for both services."""
        commands = start_commands(setup_output)
        assert len(commands) == 2, setup_output
        for command in commands:
            self.sh(command, timeout=120)
        self.wait_for(lambda: self.sh(f"{shlex.quote(self.lmsav)} ctl ping",
                                      check=False).returncode == 0, "the daemon to answer")
        self.wait_for(lambda: "watching " in self.read("/var/log/lmsav/spool.log"),
                      "the spool watcher to start")
        return commands

    def wait_port(self, port: int) -> None:
        probe = ("import socket, sys, time\n"
                 "deadline = time.monotonic() + 30\n"
                 "while True:\n"
                 "    try:\n"
                 f"        socket.create_connection(('127.0.0.1', {port}), 1).close(); break\n"
                 "    except OSError:\n"
                 "        if time.monotonic() > deadline: sys.exit(1)\n"
                 "        time.sleep(0.05)\n")
        assert self.root.run("/usr/bin/python3", "-c", probe, check=False).returncode == 0, \
            f"nothing listens on 127.0.0.1:{port} inside"

    def swaks(self, sender: str, recipient: str, tok: str, *extra: str) -> str:
        """One message over SMTP to 127.0.0.1:25 inside; ``tok`` in its Subject and
        Message-ID."""
        swaks = shutil.which("swaks")
        if swaks is None:
            pytest.skip("swaks is not installed (Debian package swaks)")
        proc = self.root.run(
            swaks, "--server", "127.0.0.1:25", "--helo", "client.example", "--from", sender,
            "--to", recipient, "--header", f"Subject: test {tok}",
            "--header", f"Message-Id: <{tok}@client.example>", *extra,
            env=environment(), check=False, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def write_eicar(self) -> str:
        path = f"{TESTS_DIR}/eicar.com"
        self.root.path(path).write_bytes(EICAR)
        return path

    # -- what a test looks at ---------------------------------------------------------------------

    def path(self, inside: str) -> Path:
        return self.root.path(inside)

    def read(self, inside: str) -> str:
        try:
            return self.path(inside).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)

    def mailbox(self, user: str) -> list:
        """The messages in /var/mail/<user>, parsed."""
        path = self.path(f"/var/mail/{user}")
        if not path.exists():
            return []
        return list(mailbox.mbox(str(path), create=False))

    def wait_for(self, ready, what: str, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}\n" \
                + self.debug()
            time.sleep(0.1)

    def watcher_line(self, tok: str) -> dict[str, str]:
        """The spool watcher's final log line for the message with ``tok`` in its Message-ID."""
        found: dict[str, str] = {}

        def logged() -> bool:
            for line in self.read("/var/log/lmsav/spool.log").splitlines():
                fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
                if tok in fields.get("message_id", "") and fields.get("result") in ("done",
                                                                                    "held"):
                    found.update(fields)
                    return True
            return False

        self.wait_for(logged, f"the watcher's line for {tok}")
        return found

    def processes(self) -> list[tuple[int, str]]:
        """What runs inside: (PID here, command line)."""
        out = []
        for pid in self.root.processes():
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            out.append((pid, args))
        return out

    def lmsav_processes(self) -> list[str]:
        """lmsav's processes running inside (the daemon, the watcher and their workers)."""
        return [f"{pid} {args}" for pid, args in self.processes() if "lmsav" in args]

    def account_exists(self, name: str) -> bool:
        return self.sh(f"getent passwd {name} || getent group {name}",
                       check=False).returncode == 0

    def tree(self, inside: str) -> dict[str, str]:
        """Every entry under a directory with its state (mode, owner, sha256 of the bytes)."""
        top = self.path(inside)
        out = {}
        for folder, dirs, files in os.walk(top):
            for name in dirs + files:
                full = Path(folder, name)
                out[str(full.relative_to(top))] = file_state(full)
        return out

    def debug(self) -> str:
        return (f"--- spool.log\n{self.read('/var/log/lmsav/spool.log')[-3000:]}\n"
                f"--- lmsav processes\n{chr(10).join(self.lmsav_processes())}")


def send_eicar_to_alice(server: Server, domain: str) -> str:
    """swaks sends bob's EICAR message to alice; the Default group rejects it (the watcher's
    line says so), alice gets the notice and never the message. Returns its token."""
    from tests.mta.conftest import token

    infected = "eicar-" + token()
    server.swaks(f"bob@{domain}", f"alice@{domain}", infected,
                 "--attach", f"@{server.write_eicar()}")
    line = server.watcher_line(infected)
    assert (line["status"], line["action"], line["group"]) == ("infected", "reject", "default")
    server.wait_for(lambda: len(server.mailbox("alice")) >= 2, "the notice to alice")
    for message in server.mailbox("alice"):
        assert infected not in (message["Message-ID"] or "")
        assert b"EICAR-STANDARD" not in message.as_bytes()
    return infected


def start_commands(output: str) -> list[str]:
    """The commands setup's step 6 prints where systemd does not run."""
    lines = output.splitlines()
    for index, line in enumerate(lines):
        if "start the services with" in line:
            return [text.strip() for text in lines[index + 1:index + 3]]
    return []


def leftovers(server: Server, before: dict[str, str], ignore: tuple[str, ...] = ()) -> list[str]:
    """What the namespace holds now that it did not at ``before`` (a ``changes()``): files
    and directories added, changed or deleted, whatever reads as the host's file aside (and
    the test's own files)."""
    ignore = (*ignore, TESTS_DIR + "/")
    out = []
    after = server.root.changes()
    for path in sorted(set(before) | set(after)):
        state = after.get(path, "absent")
        if state == before.get(path, "absent") or path in ACCOUNT_BYPRODUCTS \
                or path == SETUP_LOCK or path.startswith(ignore):
            continue
        if path not in before and state == file_state(path):
            continue  # copied up and back to what the host has (/etc/passwd after userdel)
        out.append(f"{path}: {before.get(path, 'absent')} -> {state}")
    return out


@pytest.fixture
def server():
    root = SystemRoot(net=True, pids=True, overlays=("/var",))
    try:
        root.start()
        yield Server(root)
    finally:
        root.stop()
