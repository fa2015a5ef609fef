"""The Handler interface every container family implements, and the errors it may raise."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

from ..limits import Context
from ..objects import Child, ScanObject

# Rebuilds a container with members changed: ``edits`` maps a member index (Child.member) to
# its new content, or to None to remove it. Raises RebuildError when it cannot.
Rebuilder = Callable[[bytes, dict[int, bytes | None]], bytes]


class Encrypted(Exception):
    """The whole container is encrypted or password protected (members cannot be listed)."""


class Corrupted(Exception):
    """The container is damaged; members yielded before this was raised were still scanned."""


class Unsupported(Exception):
    """The container uses a feature this handler cannot read."""


class RebuildError(Exception):
    """The container cannot be rebuilt so (its format, the edit, or damage); one line."""


class Handler(Protocol):
    """Explodes one family of containers into members. Stateless; never decides a verdict.

    ``explode`` reads ``obj.type`` (and ``obj.offset``), set by the engine. A handler that can
    rebuild its format also has ``rebuilder(file_type) -> Rebuilder | None`` and numbers its
    children's ``member`` the way that rebuilder does.
    """

    types: frozenset[str]

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]: ...


@contextmanager
def rebuild_errors(what: str):
    """Whatever a damaged input makes a rebuild trip over becomes a RebuildError."""
    try:
        yield
    except RebuildError:
        raise
    except RecursionError:
        raise RebuildError(f"{what}: nesting too deep") from None
    except Exception as err:
        raise RebuildError(f"{what}: {err.__class__.__name__}: {err}") from err


def check_indexes(edits: dict, count: int, what: str, first: int = 0) -> None:
    """Every key of ``edits`` names one of ``count`` members numbered from ``first``."""
    for n in edits:
        if not isinstance(n, int) or isinstance(n, bool) or not first <= n < first + count:
            raise RebuildError(f"the {what} has no member {n!r} (it has {count})")
