"""The wrapper's side of the daemon's LMSAVMAIL command (see mail/transfer.py).

Uses the C ``_socket`` module directly: ``import socket`` adds enum and selectors, several
milliseconds of the per-message budget, for nothing this exchange needs.
"""

import os
import sys

try:
    import _socket as _sock
except ImportError:  # not CPython
    import socket as _sock

from ..mail import transfer


class DaemonUnavailable(Exception):
    """Nobody listens on the socket: the caller may scan in-process instead."""


def ask(path: str, message_fd: int, sender: bytes, recipients: list[bytes], group: str,
        client: str, timeout: float):
    """The plan for one message: (header, [(key, sender, recipients, body), ...])."""
    from .errors import Defer

    request = os.memfd_create("lmsav-request", os.MFD_CLOEXEC)
    plan = os.memfd_create("lmsav-plan", os.MFD_CLOEXEC)
    sock = _sock.socket(_sock.AF_UNIX, _sock.SOCK_STREAM)
    try:
        data = transfer.encode_request(sender, recipients, group, client)
        os.pwrite(request, data, 0)
        sock.settimeout(timeout or None)
        try:
            sock.connect(path)
        except OSError as err:
            raise DaemonUnavailable(err.strerror or str(err)) from None
        try:
            sock.sendall(transfer.COMMAND)
            rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True)
                              for fd in (request, message_fd, plan))
            sock.sendmsg([b"\0"], [(_sock.SOL_SOCKET, _sock.SCM_RIGHTS, rights)])
            reply = _read_reply(sock)
        except TimeoutError:
            raise Defer(f"daemon at {path}: no answer within {timeout:g} s") from None
        except OSError as err:
            raise Defer(f"daemon at {path}: {err.strerror or err}") from None
        if reply != transfer.REPLY_OK:
            raise Defer(f"daemon at {path}: {reply or 'closed the connection'}")
        try:
            return transfer.read_plan(plan)
        except transfer.PlanError as err:
            raise Defer(f"daemon at {path}: {err}") from None
    finally:
        sock.close()
        os.close(request)
        os.close(plan)


def _read_reply(sock) -> str:
    buf = b""
    while not buf.endswith(b"\0"):
        piece = sock.recv(4096)
        if not piece:
            break
        buf += piece
        if len(buf) > 65536:
            break
    return buf.rstrip(b"\0").decode("utf-8", "replace")

