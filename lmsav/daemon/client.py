"""A small clamd-protocol client: for `lmsav ctl`, `lmsav scan --daemon` and tests.

Written here rather than taken from PyPI: the `clamd`/`pyclamd` packages have no FILDES, no
IDSESSION and no recent releases, and the protocol is a few lines of framing.
"""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

CHUNK = 1 << 18


class ClientError(Exception):
    """The daemon could not be reached or answered something unexpected."""


@dataclass(frozen=True)
class Result:
    """One reply line: ``path: OK``, ``path: Name FOUND`` or ``path: reason ERROR``."""

    path: str
    status: str  # "OK", "FOUND", "ERROR" or "" when the line is none of those
    detail: str  # the signature name for FOUND, the reason for ERROR
    line: str


def parse_result(line: str) -> Result:
    path, sep, rest = line.rpartition(": ")
    if not sep:
        path, rest = "", line
    if rest == "OK":
        return Result(path, "OK", "", line)
    for word in ("FOUND", "ERROR"):
        if rest.endswith(" " + word) or rest == word:
            return Result(path, word, rest[: -len(word)].rstrip(), line)
    return Result(path, "", rest, line)


class Client:
    """Talks to one daemon over its unix socket (``path``) or TCP (``host:port``)."""

    def __init__(self, path: str | os.PathLike | None = None, tcp: str | None = None,
                 timeout: float = 60.0):
        if (path is None) == (tcp is None):
            raise ValueError("Client needs exactly one of a socket path or a TCP address")
        self.path = os.fspath(path) if path is not None else None
        self.tcp = tcp
        self.timeout = timeout

    def connect(self) -> socket.socket:
        try:
            if self.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                sock.connect(self.path)
            else:
                host, _, port = self.tcp.rpartition(":")
                sock = socket.create_connection((host.strip("[]"), int(port)), self.timeout)
                sock.settimeout(self.timeout)
        except OSError as err:
            where = self.path or self.tcp
            raise ClientError(f"cannot connect to {where}: {err.strerror or err}") from None
        return sock

    # -- plumbing ---------------------------------------------------------------------------
    def _exchange(self, payload: bytes, fds: Iterable[int] = ()) -> list[str]:
        """Send one z-command (and its data), read NUL-terminated replies until EOF."""
        with self.connect() as sock:
            try:
                fds = list(fds)
                if fds:
                    sock.sendall(payload)
                    socket.send_fds(sock, [b"\0"], fds)
                else:
                    sock.sendall(payload)
                return _read_replies(sock)
            except OSError as err:
                raise ClientError(f"daemon connection failed: {err.strerror or err}") from None

    def command(self, name: str, arg: str | None = None) -> list[str]:
        line = name if arg is None else f"{name} {arg}"
        return self._exchange(b"z" + line.encode("utf-8", "surrogateescape") + b"\0")

    def _single(self, name: str) -> str:
        replies = self.command(name)
        if not replies:
            raise ClientError(f"no reply to {name}")
        return replies[0]

    # -- commands ---------------------------------------------------------------------------
    def ping(self) -> bool:
        return self._single("PING") == "PONG"

    def version(self) -> str:
        return self._single("VERSION")

    def stats(self) -> str:
        return self._single("STATS")

    def status(self) -> dict:
        """lmsav's private status (uptime, workers, database, counters) as a dict."""
        reply = self._single("LMSAVSTATUS")
        try:
            return json.loads(reply)
        except ValueError:
            raise ClientError(f"unexpected status reply: {reply[:200]}") from None

    def reload(self) -> bool:
        return self._single("RELOAD") == "RELOADING"

    def shutdown(self) -> None:
        self.command("SHUTDOWN")

    def scan(self, path: str, mode: str = "CONTSCAN") -> list[Result]:
        """SCAN, CONTSCAN, MULTISCAN or ALLMATCHSCAN of a path the daemon can read."""
        return [parse_result(line) for line in self.command(mode, os.fspath(path))]

    def instream(self, data: bytes | BinaryIO) -> Result:
        """Stream bytes (or a binary file object) with INSTREAM."""
        with self.connect() as sock:
            try:
                sock.sendall(b"zINSTREAM\0")
                if isinstance(data, (bytes, bytearray, memoryview)):
                    view = memoryview(data)
                    for off in range(0, len(view), CHUNK):
                        piece = view[off:off + CHUNK]
                        sock.sendall(struct.pack(">I", len(piece)))
                        sock.sendall(piece)
                else:
                    while piece := data.read(CHUNK):
                        sock.sendall(struct.pack(">I", len(piece)) + piece)
                sock.sendall(b"\0\0\0\0")
            except OSError:
                pass  # the daemon may answer (size limit) and close before we finish sending
            replies = _read_replies(sock)
        if not replies:
            raise ClientError("no reply to INSTREAM")
        return parse_result(replies[0])

    def fildes(self, fileobj: BinaryIO | int) -> Result:
        """Pass an open file's descriptor (unix socket only) with FILDES."""
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        replies = self._exchange(b"zFILDES\0", [fd])
        if not replies:
            raise ClientError("no reply to FILDES")
        return parse_result(replies[0])


def _read_replies(sock: socket.socket) -> list[str]:
    data = bytearray()
    while True:
        try:
            piece = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            raise ClientError("daemon did not answer in time") from None
        if not piece:
            break
        data += piece
    text = data.decode("utf-8", "surrogateescape")
    parts = text.split("\0") if "\0" in text else text.split("\n")
    return [p.rstrip("\n") for p in parts if p.strip("\n")]
