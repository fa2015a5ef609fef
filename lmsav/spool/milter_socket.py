"""Milter socket addresses as Postfix and Sendmail write them (``unix:/path``,
``inet:PORT@HOST``, ``inet:HOST:PORT``): shared by ``lmsav milter`` and ``lmsav setup postfix
--milter``, here so that setup need not import the milter."""

from __future__ import annotations

import re

_INET = re.compile(r"inet6?:(?:(\d{1,5})@(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)"
                   r"|(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5}))")


class ListenError(ValueError):
    """A listen address lmsav cannot use (one line)."""


def parse_listen(text: str) -> tuple[str, object]:
    """``unix:/path`` or ``/path`` → ("unix", path); ``inet:PORT@HOST`` (Postfix's and
    Sendmail's form) or ``inet:HOST:PORT`` → ("inet", (host, port))."""
    text = text.strip()
    if text.startswith(("/", "unix:", "local:")):
        path = text.partition(":")[2] if not text.startswith("/") else text
        if not path.startswith("/"):
            raise ListenError(f"{text}: a unix socket needs an absolute path")
        return "unix", path
    match = _INET.fullmatch(text)
    if match:
        port = int(match.group(1) or match.group(4))
        host = (match.group(2) or match.group(3)).strip("[]")
        if port > 65535:
            raise ListenError(f"{text}: port out of range")
        return "inet", (host, port)
    raise ListenError(f"{text}: expected unix:/path, inet:PORT@HOST or inet:HOST:PORT")
