"""The one name this machine gives itself in notices, records, reports and HELO."""

from __future__ import annotations

import functools
import socket


@functools.cache
def _system_name() -> str:
    # getfqdn() answers "localhost" when /etc/hosts lists the host name on 127.0.0.1 only;
    # the short name is then the better of the two.
    fqdn = socket.getfqdn()
    return socket.gethostname() if fqdn.startswith("localhost") else fqdn


def host_name(configured: str = "") -> str:
    """``[server] host_name`` when set, else the fully qualified name."""
    return configured.strip() or _system_name() or "localhost"
