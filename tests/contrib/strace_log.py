"""What a traced program asked of the kernel, as AppArmor would be asked: from the output of
``strace -f -y``, the paths a process created, wrote, removed, executed, mapped executable,
locked, or bound and connected a unix socket to, each with the permission a profile must grant
(w, x, m, k), and the programs it executed.

Only calls that succeeded count (one that failed for another reason never reached AppArmor),
and only in the processes of the program of interest: from its execve on, and their children,
until one of them executes a program the profile runs outside itself.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

TRACED = "%file,%process,bind,connect,mmap,flock,fchmod,fchown,ftruncate"

_LINE = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(-?\d+|0x[0-9a-f]+|\?)(?:<(.*?)>)?(.*)$")
_UNFINISHED = re.compile(r"^(\d+)\s+(.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. \w+ resumed>(.*)$")
_WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")


@dataclass(frozen=True)
class Access:
    pid: int
    syscall: str
    path: str
    perms: str


@dataclass
class Trace:
    accesses: list[Access] = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # relative paths without a directory


def _split_args(text: str) -> list[str]:
    """Top-level arguments: commas inside quotes, braces, brackets and <...> do not split."""
    args, depth, quoted, start, i = [], 0, False, 0, 0
    while i < len(text):
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c in "{[(<":
            depth += 1
        elif c in "}])>":
            depth -= 1
        elif c == "," and depth == 0:
            args.append(text[start:i].strip())
            start = i + 1
        i += 1
    args.append(text[start:].strip())
    return args


def _string(arg: str) -> str | None:
    """The text of a quoted string argument (strace escapes what is not printable)."""
    if not (arg.startswith('"') and arg.rstrip(".").endswith('"')):
        return None
    body = arg.rstrip(".")[1:-1]
    return body.encode("latin-1", "backslashreplace").decode("unicode_escape")


def _fd_path(arg: str) -> str | None:
    """The path strace -y shows for a descriptor: ``3</var/lib/x>``, ``AT_FDCWD</>``."""
    match = re.fullmatch(r"(?:\d+|AT_FDCWD)<(.*)>", arg)
    return match.group(1) if match else None


class _Parser:
    def __init__(self, is_program, leaves_profile):
        self.is_program = is_program
        self.leaves_profile = leaves_profile
        self.confined: set[int] = set()
        self.trace = Trace()

    def path(self, dirfd: str | None, arg: str) -> str | None:
        name = _string(arg)
        if name is None:
            return None
        if name.startswith("/"):
            return os.path.normpath(name)
        base = _fd_path(dirfd) if dirfd else None
        if base is None:
            self.trace.unresolved.append(name)
            return None
        return os.path.normpath(os.path.join(base, name))

    def add(self, pid: int, syscall: str, path: str | None, perms: str) -> None:
        if path:
            self.trace.accesses.append(Access(pid, syscall, path, perms))

    def line(self, pid: int, name: str, args: list[str], ret: str, ret_path: str | None) -> None:
        if ret.startswith("-") or ret == "?":
            return
        if name in ("clone", "clone3", "fork", "vfork"):
            if pid in self.confined:
                self.confined.add(int(ret))
            return
        if name in ("execve", "execveat"):
            program = (self.path(None, args[0]) if name == "execve"
                       else self.path(args[0], args[1]))
            if program is None:
                return
            if pid in self.confined or self.is_program(program):
                self.confined.add(pid)
                self.add(pid, name, os.path.realpath(program), "x")
                self.trace.executed.append(program)
                if self.leaves_profile(os.path.realpath(program)):
                    self.confined.discard(pid)
            return
        if pid not in self.confined:
            return
        getattr(self, f"_{name}", lambda *a: None)(pid, name, args, ret_path)

    # -- one method per system call ----------------------------------------------------------

    def _open(self, pid, name, args, ret_path, flags_at=1):
        flags = args[flags_at] if len(args) > flags_at else ""
        if "O_PATH" in flags:
            return  # a handle for *at() calls: AppArmor checks those calls, not this
        self.add(pid, name, ret_path, "w" if any(f in flags for f in _WRITE_FLAGS) else "r")

    def _openat(self, pid, name, args, ret_path):
        self._open(pid, name, args, ret_path, flags_at=2)

    _openat2 = _openat

    def _creat(self, pid, name, args, ret_path):
        self.add(pid, name, ret_path, "w")

    def _mkdir(self, pid, name, args, ret_path):
        path = self.path(None, args[0])
        self.add(pid, name, path and path.rstrip("/") + "/", "w")

    def _mkdirat(self, pid, name, args, ret_path):
        path = self.path(args[0], args[1])
        self.add(pid, name, path and path.rstrip("/") + "/", "w")

    def _rename(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(None, args[0]), "rw")
        self.add(pid, name, self.path(None, args[1]), "w")

    def _renameat(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(args[0], args[1]), "rw")
        self.add(pid, name, self.path(args[2], args[3]), "w")

    _renameat2 = _renameat

    def _unlink(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(None, args[0]), "w")

    def _rmdir(self, pid, name, args, ret_path):
        path = self.path(None, args[0])
        self.add(pid, name, path and path + "/", "w")

    def _unlinkat(self, pid, name, args, ret_path):
        path = self.path(args[0], args[1])
        directory = len(args) > 2 and "AT_REMOVEDIR" in args[2]
        self.add(pid, name, path and path + ("/" if directory else ""), "w")

    def _link(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(None, args[1]), "l")

    def _linkat(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(args[2], args[3]), "l")

    def _symlink(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(None, args[1]), "w")

    def _symlinkat(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(args[1], args[2]), "w")

    def _chmod(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(None, args[0]), "w")

    _chown = _lchown = _truncate = _chmod

    def _fchmodat(self, pid, name, args, ret_path):
        self.add(pid, name, self.path(args[0], args[1]), "w")

    _fchownat = _fchmodat

    def _fchmod(self, pid, name, args, ret_path):
        self.add(pid, name, _fd_path(args[0]), "w")

    _fchown = _ftruncate = _fchmod

    def _utimensat(self, pid, name, args, ret_path):
        if args[1] == "NULL":
            self.add(pid, name, _fd_path(args[0]), "w")
        else:
            self.add(pid, name, self.path(args[0], args[1]), "w")

    def _mmap(self, pid, name, args, ret_path):
        if len(args) > 4 and "PROT_EXEC" in args[2]:
            self.add(pid, name, _fd_path(args[4]), "m")

    def _flock(self, pid, name, args, ret_path):
        self.add(pid, name, _fd_path(args[0]), "k")

    def _socket_path(self, pid, name, args, ret_path):
        match = re.search(r'sun_path="([^"]*)"', args[1] if len(args) > 1 else "")
        if match and match.group(1).startswith("/"):
            self.add(pid, name, match.group(1), "w")

    _bind = _connect = _socket_path


def parse(text: str, is_program, leaves_profile=lambda program: False) -> Trace:
    """The accesses of the processes that executed a program ``is_program(path)`` accepts,
    and of their children; ``leaves_profile(path)``: executing it leaves the profile."""
    parser = _Parser(is_program, leaves_profile)
    pending: dict[int, str] = {}
    for raw in text.splitlines():
        match = _UNFINISHED.match(raw)
        if match:
            pending[int(match.group(1))] = match.group(2)
            continue
        match = _RESUMED.match(raw)
        if match:
            pid = int(match.group(1))
            raw = f"{pid} {pending.pop(pid, '')}{match.group(2)}"
        match = _LINE.match(raw)
        if not match:
            continue
        pid, name, args, ret, ret_path, _rest = match.groups()
        parser.line(int(pid), name, _split_args(args), ret, ret_path)
    return parser.trace
