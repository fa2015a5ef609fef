"""The statistics store as every component sees it: ``open_store(settings)`` then
``record(event)`` (never raises; see ``recorder``), ``totals()``, ``summary()``, ``messages()``.

SQLite at ``<state_dir>/stats/stats.sqlite`` unless ``[stats] url`` names a PostgreSQL
database. Nothing is opened until the first event or question: building a store costs nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from . import queries
from .backend import StoreUnavailable
from .recorder import Recorder

StatsError = StoreUnavailable  # what the reading methods raise: one line for the admin


def sqlite_path(state_dir: Path | str) -> Path:
    from .. import paths
    from .sqlite_store import FILE_NAME

    return paths.stats_dir(state_dir) / FILE_NAME


class Store:
    """One store of one node: the recorder writing to it and the questions asked of it."""

    def __init__(self, backend, node: str, buffer_size: int = 10000,
                 clock: Callable[[], float] = time.time, **recorder_options):
        self.backend = backend
        self.node = node
        self.clock = clock
        self.recorder = Recorder(backend, node, buffer_size, clock=clock, **recorder_options)

    @property
    def description(self) -> str:
        return self.backend.description

    # -- writing ---------------------------------------------------------------------------------
    def record(self, event: dict) -> None:
        self.recorder.record(event)

    def flush(self) -> bool:
        return self.recorder.flush()

    @property
    def buffered(self) -> int:
        return self.recorder.waiting

    @property
    def dropped(self) -> int:
        return self.recorder.dropped_total

    # -- reading (StatsError when the store cannot be read) --------------------------------------
    def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        if not self.backend.readable():
            return []  # nothing recorded yet; a question must not create the store
        with self.recorder.write_lock:  # the writer thread shares the connection
            return self.backend.fetchall(sql, params)

    def totals(self, since: float | None = None, until: float | None = None) -> dict[str, int]:
        """messages, infected, suspicious, protected, corrupted, errors, filtered, bytes,
        files_scanned over [since, until) (default: everything until now)."""
        now = self.clock()
        # Until now: what was recorded this very second counts too.
        sums = queries.counters(self._fetch, since or 0.0, now + 1 if until is None else until,
                                now)
        return queries.totals_of(sums)

    def summary(self, since: float, until: float, by: str | None = None) -> dict:
        return queries.summary(self._fetch, since, until, self.clock(), by)

    def series(self, since: float, until: float, by: str = "hour") -> list[dict]:
        """One row per hour (or day) of [since, until): messages, each status, bytes."""
        return queries.series(self._fetch, since, until, by)

    def messages(self, **filters) -> list[dict]:
        return queries.messages(self._fetch, **filters)

    def search(self, index: int | None = queries.KEYS_PER_SEARCH, **filters) -> queries.Page:
        """A page of per-message records (see ``queries.search``), with their ids; first up
        to ``index`` messages get their search keys (a store that cannot be written is
        searched all the same)."""
        if index:
            with contextlib.suppress(StoreUnavailable):
                self.index_keys(index)
        return queries.search(self._fetch, **filters)

    def index_keys(self, limit: int | None = None) -> int:
        """Give search keys to up to ``limit`` messages without (None: all); how many."""
        if not self.backend.readable():
            return 0
        with self.recorder.write_lock:
            return self.backend.index_keys(limit)

    def message(self, id_: int) -> dict | None:
        return queries.message(self._fetch, id_)

    def close(self) -> None:
        self.recorder.close()


def open_store(settings, clock: Callable[[], float] = time.time) -> Store:
    """The store the settings name, for this node (``[server] host_name``)."""
    from ..hostname import host_name

    node = host_name(settings.server.host_name)
    url = settings.stats.url
    if url:
        from .postgres_store import PostgresBackend

        backend = PostgresBackend(url)
    else:
        from .sqlite_store import SQLiteBackend

        backend = SQLiteBackend(sqlite_path(settings.paths.state_dir))
    return Store(backend, node, settings.stats.buffer, clock=clock)
