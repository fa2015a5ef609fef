"""The daemon's listening sockets: a unix socket (with its mode, group and stale-file check)
and TCP addresses."""

from __future__ import annotations

import grp
import logging
import os
import socket
import stat
from pathlib import Path

from .options import DaemonError

log = logging.getLogger("lmsav.daemon")

BACKLOG = 512


def bind_unix(path: Path, mode: int, group: str) -> tuple[socket.socket, tuple[int, int]]:
    """Listen on ``path``; returns the socket and the file's (device, inode), so only this
    socket file is ever removed at exit. A stale file nobody listens on is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise DaemonError(f"{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens on it
            log.info("removed stale socket %s", path)
        else:
            raise DaemonError(f"{path}: another daemon is listening on this socket")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(~mode & 0o777)  # created with its final mode: no window with another
    try:
        sock.bind(str(path))
    except OSError as err:
        sock.close()
        raise DaemonError(f"{path}: cannot bind: {err.strerror}") from None
    finally:
        os.umask(old)
    os.chmod(path, mode)
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
            os.chown(path, -1, gid)
        except (KeyError, OSError) as err:
            sock.close()
            raise DaemonError(f"{path}: cannot set group {group}: "
                              f"{getattr(err, 'strerror', None) or err}") from None
    st = path.stat()
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock, (st.st_dev, st.st_ino)


def bind_tcp(addr: str) -> socket.socket:
    """Listen on ``HOST:PORT`` (``[v6]:PORT`` for IPv6)."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as err:
        sock.close()
        raise DaemonError(f"{addr}: cannot bind: {err.strerror}") from None
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def remove_socket_file(path: Path, inode: tuple[int, int]) -> None:
    """Unlink ``path`` if it is still the socket this process bound."""
    try:
        st = os.stat(path)
        if (st.st_dev, st.st_ino) == inode:
            os.unlink(path)
    except OSError:
        pass


def name_of(sock: socket.socket, unix: bool) -> str:
    if unix:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    return f"tcp:{host}:{port}"
