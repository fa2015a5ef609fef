"""The ``lmsav_*`` metric families of one component, in a registry of its own.

Counters are counted by the parent process from what its workers report back (never by the
workers: a worker's counts would die with it), so one scrape of the parent sees everything.
Gauges (database, spool) are read when scraped. Every known label value starts at 0, so a
rate() over a series that has not happened yet is 0 rather than missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily

# No *_created series: a scrape stays short, and a restart shows as counters starting again.
disable_created_metrics()

# Engine statuses, then the mail policy's own (lmsav.stats.events.STATUSES).
STATUSES = ("clean", "error", "corrupted", "protected", "suspicious", "infected", "filtered",
            "unscanned")
ACTIONS = ("skip", "warn", "cure", "delete", "drop", "hold", "reject")
DAEMON_RESULTS = ("accept", "reject", "hold", "error")  # LMSAVMAIL: the plan's answer to the MTA
WATCHER_RESULTS = ("done", "retry", "held", "stuck")  # what became of a spool entry
RELOAD_RESULTS = ("ok", "failed")
SCAN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0)


class Metrics:
    """The counters one component updates, and the gauges read at scrape time.

    ``database()``: the database in use (None before it is loaded); ``spool_depth()``: the
    entries of the watcher's spool by state (``spool.nqueue.depth``), or None."""

    def __init__(self, results: Iterable[str], database: Callable[[], object | None],
                 spool_depth: Callable[[], dict[str, int]] | None = None,
                 commands: Iterable[str] = ()):
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.messages = Counter("lmsav_messages", "Messages the mail policy handled, by result.",
                                ["result"], registry=reg)
        self.verdicts = Counter("lmsav_verdicts", "Verdicts given (files or messages), by status.",
                                ["status"], registry=reg)
        self.actions = Counter("lmsav_actions",
                               "Actions the mail policy took, one per message and group.",
                               ["action"], registry=reg)
        self.scan_seconds = Histogram("lmsav_scan_seconds",
                                      "Time to scan one request or message.",
                                      buckets=SCAN_BUCKETS, registry=reg)
        self.reloads = Counter("lmsav_reloads", "Reloads, by result (failed: something was "
                                                "refused and the running one kept).",
                               ["result"], registry=reg)
        self.stats_dropped = Counter("lmsav_stats_events_dropped",
                                     "Statistics events dropped while the store was unavailable.",
                                     registry=reg)
        self.requests = None
        commands = tuple(commands)
        if commands:
            self.requests = Counter("lmsav_requests", "Daemon requests, by command.",
                                    ["command"], registry=reg)
            for command in commands:
                self.requests.labels(command)
        for counter, values in ((self.messages, results), (self.verdicts, STATUSES),
                                (self.actions, ACTIONS), (self.reloads, RELOAD_RESULTS)):
            for value in values:
                counter.labels(value)
        reg.register(_Gauges(database, spool_depth))

    def count_verdicts(self, by_status: dict[str, int]) -> None:
        for status, n in by_status.items():
            if n:
                self.verdicts.labels(status).inc(n)

    def count_actions(self, actions: Iterable[str]) -> None:
        for action in actions:
            if action:
                self.actions.labels(action).inc()


class _Gauges:
    """Database and spool gauges, computed when scraped (a scrape runs on its own thread)."""

    def __init__(self, database: Callable[[], object | None],
                 spool_depth: Callable[[], dict[str, int]] | None):
        self.database = database
        self.spool_depth = spool_depth

    def describe(self):
        return []  # computed at scrape time: nothing to check at registration

    def collect(self):
        db = self.database()
        if db is not None:
            yield GaugeMetricFamily("lmsav_database_age_seconds",
                                    "Seconds since the database in use was built.",
                                    value=max(0.0, time.time() - db.built_at))
            yield GaugeMetricFamily("lmsav_database_signatures",
                                    "Signatures in the database in use.", value=db.total)
            info = GaugeMetricFamily("lmsav_database_info", "The database in use.",
                                     labels=["version"])
            info.add_metric([str(db.version)], 1)
            yield info
        if self.spool_depth is not None:
            depth = GaugeMetricFamily("lmsav_spool_queue_depth",
                                      "Messages in the spool, by state.", labels=["state"])
            for state, n in self.spool_depth().items():
                depth.add_metric([state], n)
            yield depth

