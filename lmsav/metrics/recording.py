"""Statistics events of the daemon, sweeps and updates (``lmsav.stats.events``), to the store
the settings name.

Nothing is opened before the first event, and recording never raises. When the store is the
SQLite file and this user cannot write it (an ordinary user scanning with the system's
configuration), events are skipped without a word: a scan must not print more because the
statistics are somebody else's.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

log = logging.getLogger("lmsav.stats")


class EventRecorder:
    """``record(event)`` into ``open_store(settings)``, opened on first use.

    ``background``: every write goes to the store's writer thread, none on the caller's (a
    daemon's event loop must not wait on a disk)."""

    def __init__(self, settings, background: bool = False):
        self.settings = settings
        self.background = background
        self._store = None
        self._off = False

    def record(self, event: dict) -> None:
        store = self._open()
        if store is not None:
            store.record(event)  # never raises

    @property
    def dropped(self) -> int:
        """Events dropped so far while the store was unavailable."""
        return self._store.dropped if self._store is not None else 0

    @contextlib.contextmanager
    def held(self):
        """No write in progress while this lasts (around a fork: a child must not inherit a
        database connection in the middle of a write)."""
        if self._store is None:
            yield
            return
        with self._store.recorder.write_lock:
            yield

    def close(self) -> None:
        """Write what waits (a process ending)."""
        store, self._store = self._store, None
        if store is not None:
            with contextlib.suppress(Exception):
                store.close()

    def _open(self):
        if self._store is not None or self._off:
            return self._store
        try:
            from ..stats.store import open_store, sqlite_path

            if not self.settings.stats.url and \
                    not _writable_quietly(sqlite_path(self.settings.paths.state_dir)):
                self._off = True
                return None
            store = open_store(self.settings)
            if self.background:
                store.recorder.quiet = float("inf")
            self._store = store
        except Exception:  # statistics never take a scan or a daemon down
            log.debug("statistics store not opened", exc_info=True)
            self._off = True
        return self._store


def writable(path: Path) -> bool:
    """Whether this user can write the SQLite file ``path`` (and its -wal beside it), or
    create it with the directories missing on the way."""
    path = Path(path)
    if _exists(path):
        return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)
    parent = path.parent
    while not _exists(parent):
        if parent.parent == parent:
            return False
        parent = parent.parent
    return parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)


def _writable_quietly(path: Path) -> bool:
    try:
        return writable(path)
    except OSError:
        return False


def _exists(path: Path) -> bool:
    """True, False when missing; PermissionError (not ours to write) propagates."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    return True
