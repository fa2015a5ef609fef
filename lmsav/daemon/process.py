"""The daemon as a Unix process: detaching, the pid file, dropping privileges, descriptor
limits and handing freed heap back to the system."""

from __future__ import annotations

import ctypes
import grp
import logging
import os
import pwd
import resource
from pathlib import Path

from .options import DaemonError

log = logging.getLogger("lmsav.daemon")


def detach() -> None:
    """Classic double fork: the daemon leaves the terminal and its session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: Path) -> None:
    """Remove the pid file if it still names this process."""
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass


def drop_privileges(user: str, socket_path: Path | None, socket_group: str) -> None:
    """As root with ``user`` set: hand the socket to ``user`` and become it for good."""
    if not user or os.geteuid() != 0:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise DaemonError(f"[daemon] user = {user!r}: no such user") from None
    if socket_path is not None:
        gid = grp.getgrnam(socket_group).gr_gid if socket_group else -1
        os.chown(socket_path, pw.pw_uid, gid)
    os.initgroups(user, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)
    log.info("running as user %s", user)


def raise_nofile(wanted: int) -> int:
    """Raise the soft descriptor limit towards ``wanted`` (one per connection, and some); the
    soft limit now (the hard limit caps it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(wanted, 4096)))
    if target != soft and target != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 62


def close_descriptors_from(first: int) -> None:
    """Close every descriptor >= ``first`` (a new worker drops the parent's connections)."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(first, soft if soft != resource.RLIM_INFINITY else 1 << 20)


_malloc_trim = None


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc keeps them after a large free, and a
    forked worker would count them as its own); a no-op where malloc_trim is missing."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)
