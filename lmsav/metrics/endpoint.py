"""The /metrics endpoint: bound at start (so a port in use stops the start with one line),
served by one thread of the parent process once it runs.

A single-threaded WSGI server: scrapes are answered one at a time, each bounded by a read
timeout, so a stalled client holds up only the next scrape, never the component's own loop.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from ..config import LISTEN_RE

REQUEST_TIMEOUT = 10.0


class MetricsError(Exception):
    """The endpoint cannot listen where [metrics] says."""


class _QuietHandler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT

    def log_message(self, *_args) -> None:
        pass  # one line per scrape is noise in the component's log


class _Server4(WSGIServer):
    address_family = socket.AF_INET


class _Server6(WSGIServer):
    address_family = socket.AF_INET6


def _only_metrics(app):
    """``app`` at /metrics; anything else is 404 (so a typo in a scrape config shows)."""
    def serve(environ, start_response):
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"lmsav serves /metrics only\n"]
        return app(environ, start_response)

    return serve


def split_address(address: str) -> tuple[str, int]:
    """("127.0.0.1", 9436) of "127.0.0.1:9436"; ("::1", 9436) of "[::1]:9436"."""
    match = LISTEN_RE.fullmatch(address)
    if not match:
        raise MetricsError(f"{address}: expected HOST:PORT like 127.0.0.1:9436")
    host = match.group(1).strip("[]")
    return ("127.0.0.1" if host == "localhost" else host), int(match.group(2))


class MetricsEndpoint:
    """``registry`` served at http://``address``/metrics (``setting`` names the key in errors)."""

    def __init__(self, address: str, registry, setting: str):
        self.address = address
        host, port = split_address(address)
        server_class = _Server6 if ":" in host else _Server4
        try:
            self.server = make_server(host, port, _only_metrics(make_wsgi_app(registry)),
                                      server_class, handler_class=_QuietHandler)
        except OSError as err:
            raise MetricsError(f'{setting} = "{address}": cannot listen: '
                               f"{err.strerror or err}") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def fileno(self) -> int:
        return self.server.fileno()

    def start(self) -> None:
        """Serve on a daemon thread (after any fork that detaches the process)."""
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.5,),
                                        name="lmsav-metrics", daemon=True)
        self._thread.start()

    def close(self) -> None:
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(REQUEST_TIMEOUT)
            self._thread = None
        with contextlib.suppress(OSError):
            self.server.server_close()

    def close_in_child(self) -> None:
        """In a forked worker: let go of the listening socket, touch nothing else."""
        with contextlib.suppress(OSError):
            self.server.socket.close()


def open_endpoint(address: str, registry, setting: str) -> MetricsEndpoint | None:
    """The endpoint, or None when ``address`` is "" (off); raises MetricsError."""
    return MetricsEndpoint(address, registry, setting) if address else None
