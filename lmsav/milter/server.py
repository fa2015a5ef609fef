"""``lmsav milter``'s server: one process, the mail service built once (database loaded once),
one thread per MTA connection. Decisions are made one at a time on one long-lived thread: the
engine's matchers are shared and not made for concurrent use (a yara-x scanner belongs to the
thread that made it), and a scan is CPU-bound anyway. ``daemon_backend.py`` hands decisions to
the daemon's workers instead.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import protocol
from ..spool.milter_socket import parse_listen
from .protocol import ProtocolError
from .session import Limits, Quit, Session

log = logging.getLogger("lmsav.milter")

class Backend:
    """What sessions share: the mail service, its groups, and the way notices go out."""

    def __init__(self, service, reinjector_factory):
        self.service = service
        self.reinjector_factory = reinjector_factory
        self._decider = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lmsav-decide")

    def group_of(self, sender: str, recipient: str) -> str:
        return self.service.groups.resolve(sender, recipient).name

    def decide(self, message: bytes, envelope, queue_id: str = ""):
        return self._decider.submit(self.service.decide, message, envelope,
                                    queue_id=queue_id).result()

    def close(self) -> None:
        self._decider.submit(self._release).result()
        self._decider.shutdown(wait=True)

    def _release(self) -> None:
        """Free, on the deciding thread, what the engine made there (a yara-x scanner may only
        be freed by its own thread)."""
        matchers = getattr(self.service.database, "matchers", {}) or {}
        for matcher in matchers.values():
            release = getattr(getattr(matcher, "rules", None), "release", None)
            if release is not None:
                release()

    def send(self, deliveries) -> None:
        """Notices, through the configured reinjection; any failure raises (and the message is
        deferred: the client's retry sends them again)."""
        reinjector = self.reinjector_factory()
        try:
            for d in deliveries:
                reinjector.deliver(d.sender, list(d.recipients), d.message)
        finally:
            reinjector.close()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        serve_connection(self.request, self.server.backend, self.server.limits,
                         self.server.timeout_seconds)


class _Threads(socketserver.ThreadingMixIn):
    daemon_threads = True
    allow_reuse_address = True


class UnixServer(_Threads, socketserver.UnixStreamServer):
    pass


class InetServer(_Threads, socketserver.TCPServer):
    pass


class Inet6Server(InetServer):
    address_family = socket.AF_INET6


def make_server(listen: str, backend: Backend, limits: Limits, timeout: float,
                socket_mode: int = 0o660):
    kind, address = parse_listen(listen)
    if kind == "unix":
        path = Path(address)
        if path.is_socket():
            path.unlink()  # a socket left by a previous run; anything else is not ours to remove
        # created with its final mode: a client never sees the socket more open or closed
        old = os.umask(~socket_mode & 0o777)
        try:
            server = UnixServer(str(path), _Handler)
        finally:
            os.umask(old)
        os.chmod(path, socket_mode)  # the umask cannot grant set-id or sticky bits
    else:
        host, port = address
        cls = Inet6Server if ":" in host else InetServer
        server = cls((host, port), _Handler)
    server.backend = backend
    server.limits = limits
    server.timeout_seconds = timeout
    return server


def serve_connection(sock: socket.socket, backend, limits: Limits, timeout: float) -> None:
    """Speak the protocol on one connection until QUIT, end of stream or a protocol error."""
    sock.settimeout(timeout or None)
    session = Session(backend, limits)
    reader = sock.makefile("rb")
    try:
        while True:
            packet = protocol.read_packet(reader.read)
            if packet is None:
                return
            replies = session.handle(packet)
            if replies:
                sock.sendall(b"".join(replies))
    except Quit:
        return
    except ProtocolError as err:
        log.warning("milter connection closed: %s", err)
    except (OSError, TimeoutError) as err:
        log.info("milter connection lost: %s", err)
    except Exception:  # one connection's bug must not stop the others
        log.exception("milter connection closed by an internal error")
    finally:
        session.close()
        reader.close()
