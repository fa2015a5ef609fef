"""The Handler interface every container family implements, and the errors it may raise."""

from __future__ import annotations

from typing import Iterator, Protocol

from ..limits import Context
from ..objects import Child, ScanObject


class Encrypted(Exception):
    """The whole container is encrypted or password protected (members cannot be listed)."""


class Corrupted(Exception):
    """The container is damaged; members yielded before this was raised were still scanned."""


class Unsupported(Exception):
    """The container uses a feature this handler cannot read."""


class Handler(Protocol):
    """Explodes one family of containers into members. Stateless; never decides a verdict."""

    types: frozenset[str]

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]: ...
