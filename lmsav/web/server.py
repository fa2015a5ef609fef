"""Serving the console: cheroot's threaded WSGI server, HTTPS with the configured certificate,
and the rules on where it may listen."""

from __future__ import annotations

import ipaddress
import logging
import ssl
from pathlib import Path

from ..config import LISTEN_RE

log = logging.getLogger("lmsav.web")
THREADS = 8


class ServeError(Exception):
    """One line a person can act on."""


def parse_listen(text: str) -> tuple[str, int]:
    match = LISTEN_RE.fullmatch(text.strip())
    if not match:
        raise ServeError(f"listen address {text!r}: expected HOST:PORT like 127.0.0.1:8343")
    host, port = match.group(1).strip("[]"), int(match.group(2))
    if not 0 < port < 65536:
        raise ServeError(f"listen address {text!r}: the port must be 1-65535")
    return host, port


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, tls: bool, trusted_proxies: int) -> None:
    """Passwords and session cookies never cross a network in clear: off loopback the console
    needs its own certificate, or a reverse proxy in front that terminates TLS."""
    if not is_loopback(host) and not tls and not trusted_proxies:
        raise ServeError(f"refusing to serve plain HTTP on {host}: give [web] certificate "
                         "(HTTPS), or listen on 127.0.0.1 behind a reverse proxy "
                         "([web] trusted_proxies)")


def tls_adapter(certificate: Path, key: Path | None):
    """cheroot's TLS layer over the certificate, checked before the server starts."""
    from cheroot.ssl.builtin import BuiltinSSLAdapter

    key = key or certificate
    try:
        probe = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        probe.load_cert_chain(str(certificate), str(key))
    except FileNotFoundError as err:
        raise ServeError(f"cannot read {err.filename}: no such file") from None
    except (ssl.SSLError, OSError) as err:
        raise ServeError(f"cannot use certificate {certificate} with key {key}: "
                         f"{getattr(err, 'reason', None) or err}") from None
    adapter = BuiltinSSLAdapter(str(certificate), str(key))
    adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
    return adapter


def make_server(app, host: str, port: int, adapter=None):
    from cheroot import wsgi

    server = wsgi.Server((host, port), app, numthreads=THREADS, server_name="lmsav-web",
                         shutdown_timeout=5)
    if adapter is not None:
        server.ssl_adapter = adapter
    return server
