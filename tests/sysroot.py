"""A private view of the system directories, so tests can run lmsav on its default paths.

/etc, /var/lib, /var/cache, /var/log and /run are overlays in a mount namespace of their own:
inside, lmsav and the MTAs read and write /etc/lmsav, /var/lib/lmsav, /var/cache/lmsav,
/var/log/lmsav and /run/lmsav (and accounts added with useradd) exactly as on a server, while the
host's files stay untouched and everything written vanishes with the namespace. Inside, it is a
server before lmsav was set up: what the host has of lmsav (its directories, the lmsav account)
is hidden. Commands run inside through nsenter; a test reads the files through /proc/PID/root.
Needs root and permission to mount (else the test is skipped).

``SystemRoot(net=True)`` adds a network namespace with only a loopback interface, so an MTA
inside listens on 127.0.0.1:25 without meeting the host's; ``pids=True`` a PID namespace with its
own /proc, so what looks for processes inside (userdel, `postfix status`) sees only those of the
namespace, not another namespace's that share a uid; ``overlays=("/var",)`` overlays more
directories (the whole of /var: /var/spool, /var/mail, a /var/qmail the host lacks). Processes
still running inside when the namespace is stopped (an MTA, a detached daemon) are killed.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

OVERLAID = ("/etc", "/var/lib", "/var/cache", "/var/log", "/run")
HIDDEN = ("/etc/lmsav", "/var/lib/lmsav", "/var/cache/lmsav", "/var/log/lmsav", "/run/lmsav")
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

    def __init__(self, net: bool = False, pids: bool = False,
                 overlays: tuple[str, ...] = ()) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="lmsav-sysroot-", dir="/tmp"))
        self.holder: subprocess.Popen | None = None
        self.net = net
        self.pids = pids
        # Parents before children: an overlay of /var/lib goes on top of one of /var.
        self.overlaid = sorted(dict.fromkeys((*OVERLAID, *overlays)),
                               key=lambda where: where.count("/"))

    def start(self) -> None:
        tools = ["unshare", "nsenter", "runuser"] + (["ip"] if self.net else [])
        if os.geteuid() != 0 or not all(os.path.isabs(_tool(name)) for name in tools):
            pytest.skip(f"needs root and {', '.join(tools)} for a private /etc")
        top = shlex.quote(str(self.tmp))
        lines = [f"mount -t tmpfs -o mode=0700 lmsav-sysroot {top}"]
        if self.net:
            lines.append(f"{_tool('ip')} link set lo up")
        mounts = _mount_points()
        for where in self.overlaid:
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
        for hidden in HIDDEN:
            lines.append(f"mountpoint -q {os.path.dirname(hidden)} && rm -rf {hidden}")
        lines += ["mountpoint -q /etc && { ! id -u lmsav >/dev/null 2>&1 || userdel lmsav; }",
                  "echo ready", "exec sleep 1000000"]
        self.holder = subprocess.Popen(
            # With a PID namespace, unshare forks the shell that becomes its init, and kills it
            # (and with it every process inside) when it is killed itself.
            [_tool("unshare"), "--mount", *(["--net"] if self.net else []),
             *(["--pid", "--kill-child", "--mount-proc"] if self.pids else []),
             "--propagation", "private", "sh", "-ec",
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
        inside = [_tool("nsenter"), f"--mount=/proc/{self.pid}/ns/mnt",
                  *([f"--net=/proc/{self.pid}/ns/net"] if self.net else []),
                  *([f"--pid=/proc/{self.pid}/ns/pid_for_children"] if self.pids else []),
                  "--"]
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

    def changes(self) -> dict[str, str]:
        """What the namespace changed of the overlaid directories, read from their upper
        layers: path → state ("dir", "deleted", "link -> …", or the file's mode, owner and
        sha256). A file copied up and changed back reads as what it holds, so compare two
        calls (or a state with ``host_state``), not the keys alone."""
        out = {}
        for where in self.overlaid:
            upper = self.path(self.tmp) / f"{where.strip('/').replace('/', '-')}.upper"
            for folder, dirs, files in os.walk(upper):
                for name in dirs + files:
                    full = Path(folder, name)
                    inside = where + "/" + str(full.relative_to(upper))
                    if not any(inside.startswith(o + "/") for o in self.overlaid if o != where
                               and o.startswith(where + "/")):  # that overlay's own record
                        out[inside] = file_state(full)
        return out

    def processes(self) -> list[int]:
        """Processes inside the namespace (started through ``command()``), by their PIDs here;
        the holder and the namespace's init aside."""
        if self.holder is None:
            return []
        try:
            mine = os.readlink(f"/proc/{self.pid}/ns/mnt")
        except OSError:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.pid:
                continue
            try:
                if os.readlink(f"/proc/{entry}/ns/mnt") != mine:
                    continue
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if self.pids and int(stat_line[stat_line.rfind(")") + 2:].split()[1]) == self.pid:
                continue  # the namespace's init, which unshare forked
            out.append(int(entry))
        return out

    def stop(self) -> None:
        if self.holder is not None:
            # What was started inside and still runs (an MTA, a detached daemon) would keep the
            # namespace and its mounts alive.
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            self.holder.kill()
            self.holder.wait()
            self.holder.stdout.close()
            self.holder.stderr.close()
            self.holder = None
        shutil.rmtree(self.tmp, ignore_errors=True)


def file_state(path: str | Path) -> str:
    """How ``changes()`` describes one entry (a host path gives the state below the overlay)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return "absent"
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return "deleted"  # an overlay whiteout
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return f"link -> {os.readlink(path)}"
    if not stat.S_ISREG(st.st_mode):  # a socket, a fifo: its kind, mode and owner
        return f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid}"
    with open(path, "rb") as fp:
        digest = hashlib.file_digest(fp, "sha256").hexdigest()
    return f"{stat.filemode(st.st_mode)} {st.st_uid}:{st.st_gid} {digest}"


@pytest.fixture
def sysroot():
    root = SystemRoot()
    try:
        root.start()
        yield root
    finally:
        root.stop()


@pytest.fixture
def isolated_sysroot():
    """A namespace with its own network and PIDs as well: for tests that start services or
    run userdel, which looks for the account's processes among all it can see (another test's
    namespace may run processes under the same uid)."""
    root = SystemRoot(net=True, pids=True)
    try:
        root.start()
        yield root
    finally:
        root.stop()
