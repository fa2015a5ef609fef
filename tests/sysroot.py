"""A private view of the system directories, so tests can run lmsav on its default paths.

/etc, /var/lib, /var/cache and /run are overlays in a mount namespace of their own: inside, lmsav
and the MTAs read and write /etc/lmsav, /var/lib/lmsav, /var/cache/lmsav and /run/lmsav (and
accounts added with useradd) exactly as on a server, while the host's files stay untouched and
everything written vanishes with the namespace. Inside, it is a server before lmsav was set up:
what the host has of lmsav (its directories, the lmsav account) is hidden. Commands run inside
through nsenter; a test reads the files through /proc/PID/root. Needs root and permission to
mount (else the test is skipped).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

OVERLAID = ("/etc", "/var/lib", "/var/cache", "/run")
REPO = Path(__file__).resolve().parents[1]


def _mount_points() -> list[str]:
    """Mount points of this mount namespace, as /proc/self/mountinfo lists them."""
    out = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as fp:
        for line in fp:
            target = line.split()[4]
            out.append(target.encode().decode("unicode_escape"))  # \040 for a space
    return out


def _tool(name: str) -> str:
    """util-linux's tools by full path: runuser is in /usr/sbin, off an ordinary PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin") or name


class SystemRoot:
    """The namespace: ``command()`` wraps a command to run inside, ``path()`` maps a path."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="lmsav-sysroot-", dir="/tmp"))
        self.holder: subprocess.Popen | None = None

    def start(self) -> None:
        if os.geteuid() != 0 or not all(os.path.isabs(_tool(name))
                                        for name in ("unshare", "nsenter", "runuser")):
            pytest.skip("needs root, unshare and nsenter (util-linux) for a private /etc")
        top = shlex.quote(str(self.tmp))
        lines = [f"mount -t tmpfs -o mode=0700 lmsav-sysroot {top}"]
        mounts = _mount_points()
        for where in OVERLAID:
            name = where.strip("/").replace("/", "-")
            upper, work, orig = (f"{top}/{name}.{part}" for part in ("upper", "work", "orig"))
            below = [m for m in mounts if m.startswith(where + "/")]
            lines.append(f"mkdir {upper} {work} {orig}")
            if below:  # /etc/hosts and the like, bind-mounted by container runtimes
                lines.append(f"mount --rbind {where} {orig}")
            lines.append(f"mount -t overlay overlay -o lowerdir={where},upperdir={upper},"
                         f"workdir={work} {where}")
            for target in below:
                rel = shlex.quote(target[len(where) + 1:])
                lines.append(f"[ -e {where}/{rel} ] || touch {where}/{rel}")
                lines.append(f"mount --bind {orig}/{rel} {where}/{rel}")
        # A server before lmsav: whatever the host has of it is hidden (only inside, where each
        # of these directories is an overlay: `mountpoint` guards every removal).
        for where, sub in (("/etc", "lmsav"), ("/var/lib", "lmsav"), ("/var/cache", "lmsav"),
                           ("/run", "lmsav")):
            lines.append(f"mountpoint -q {where} && rm -rf {where}/{sub}")
        lines += ["mountpoint -q /etc && { ! id -u lmsav >/dev/null 2>&1 || userdel lmsav; }",
                  "echo ready", "exec sleep 1000000"]
        self.holder = subprocess.Popen(
            [_tool("unshare"), "--mount", "--propagation", "private", "sh", "-ec",
             "\n".join(lines)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            start_new_session=True)
        if self.holder.stdout.readline().strip() != b"ready":
            err = self.holder.stderr.read().decode(errors="replace").strip()
            self.holder.wait()
            self.holder = None
            pytest.skip(f"cannot make a private view of the system directories: {err}")

    @property
    def pid(self) -> int:
        assert self.holder is not None
        return self.holder.pid

    def command(self, *args: str, user: str | None = None) -> list[str]:
        """``args`` run inside; with ``user``, as that account with its groups and HOME, as an
        MTA runs its pipe (runuser: setpriv keeps more of root than a real switch does)."""
        inside = [_tool("nsenter"), f"--mount=/proc/{self.pid}/ns/mnt", "--"]
        if user is not None:
            inside += [_tool("runuser"), "-u", user, "--"]
        return [*inside, *args]

    def run(self, *args: str, user: str | None = None, check: bool = True, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.run(self.command(*args, user=user), check=False, **kw)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}"
                                 f"{proc.stderr}")
        return proc

    def path(self, inside: str | Path) -> Path:
        """Where the test reads a file that lives inside."""
        return Path(f"/proc/{self.pid}/root") / Path(inside).relative_to("/")

    def program(self, name: str) -> str:
        """``lmsav`` or ``lmsav-qmail-queue`` of this checkout, runnable by every account: the
        virtual environment's, or where that lives under /root (a pyenv Python), a script
        running the checkout and the environment's packages with the system Python."""
        installed = str(Path(sys.executable).parent / name)
        if self.run(installed, "--version", user="nobody", check=False).returncode == 0:
            return installed
        system = "/usr/bin/python3"
        same = subprocess.run([system, "-c", "import sys; print(sys.version_info[:2])"],
                              capture_output=True, text=True, check=False).stdout.strip()
        if same != str(tuple(sys.version_info[:2])):
            pytest.skip(f"other users cannot run {installed}, and {system} is not Python "
                        f"{sys.version_info[0]}.{sys.version_info[1]}")
        site = sysconfig.get_paths()["purelib"]
        target = {"lmsav": "-m lmsav.launcher",
                  "lmsav-qmail-queue": shlex.quote(str(REPO / "scripts" / name))}[name]
        script = self.path(f"/run/lmsav-tests/{name}")
        script.parent.mkdir(mode=0o755, exist_ok=True)
        script.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(f'{REPO}:{site}')} "
                          f'exec {system} {target} "$@"\n')
        script.chmod(0o755)
        return f"/run/lmsav-tests/{name}"

    def add_system_user(self, name: str, home: str, *groups: str) -> None:
        """A system account, as an administrator (or `lmsav setup`) creates one."""
        if self.run("id", "-u", name, check=False).returncode != 0:
            self.run("useradd", "--system", "--user-group", "--home-dir", home,
                     "--no-create-home", "--shell", "/usr/sbin/nologin", name)
        for group in groups:
            self.run("usermod", "-a", "-G", group, name)

    def uid_of(self, name: str) -> int:
        return int(self.run("id", "-u", name).stdout)

    def gid_of(self, name: str) -> int:
        return int(self.run("id", "-g", name).stdout)

    def stop(self) -> None:
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
            self.holder.stdout.close()
            self.holder.stderr.close()
            self.holder = None
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def sysroot():
    root = SystemRoot()
    try:
        root.start()
        yield root
    finally:
        root.stop()
