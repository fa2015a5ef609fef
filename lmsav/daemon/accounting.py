"""What the daemon counts: the Prometheus metrics of every request and result (served on
``[metrics] daemon`` by a thread of the parent), and one ``daemon_scan`` statistics event per
answered request, written by the store's own thread so the event loop never waits on a disk
(LMSAVMAIL is recorded by the mail service itself)."""

from __future__ import annotations

import collections
import contextlib
import logging
from dataclasses import dataclass, field

from ..metrics.endpoint import open_endpoint
from ..metrics.families import DAEMON_RESULTS, Metrics
from ..metrics.recording import EventRecorder
from ..stats.events import STATUSES
from .protocol import Cmd

log = logging.getLogger("lmsav.daemon")

# lmsav_requests_total{command}: every command of the protocol, and "unknown".
REQUEST_COMMANDS = tuple(c.value for c in Cmd if c is not Cmd.UNKNOWN) + ("unknown",)


@dataclass
class Tally:
    """What the results of one request add up to, for the metrics and the statistics."""

    seconds: float | None = None  # None: no worker timed it (it died)
    size: int = 0
    errors: int = 0
    verdicts: collections.Counter = field(default_factory=collections.Counter)
    threats: list[str] = field(default_factory=list)
    mail: dict | None = None  # LMSAVMAIL: the plan's result and the groups' actions

    def add(self, result: dict) -> None:
        if "seconds" in result:
            self.seconds = (self.seconds or 0.0) + result["seconds"]
        self.size += result.get("size", 0)
        self.errors += result.get("errors", 0)
        self.verdicts.update(result.get("verdicts", {}))
        self.threats += [t for t in result.get("threats", ()) if t not in self.threats]
        self.mail = result.get("mail", self.mail)

    @property
    def files(self) -> int:
        """Files (or messages) given a verdict, those that could not be scanned included."""
        return sum(self.verdicts.values())

    @property
    def status(self) -> str:
        """The worst status of the request (clean when nothing was scanned)."""
        found = [s for s, n in self.verdicts.items() if n]
        return max(found, key=_status_rank, default="clean")


def _status_rank(status: str) -> int:
    return STATUSES.index(status) if status in STATUSES else 0


class Accounting:
    """The daemon's metrics and statistics events, kept in the parent."""

    def __init__(self, settings, database):
        self.metrics = Metrics(DAEMON_RESULTS, database, commands=REQUEST_COMMANDS)
        self.endpoint = None
        self.events = EventRecorder(settings, background=True) if settings is not None else None
        self._dropped_seen = 0

    # -- /metrics ---------------------------------------------------------------------------
    def open_endpoint(self, address: str) -> None:
        """Bind ``[metrics] daemon`` (nothing for ""); MetricsError when it cannot."""
        self.endpoint = open_endpoint(address, self.metrics.registry, "[metrics] daemon")

    def start_endpoint(self) -> None:
        if self.endpoint is not None:
            self.endpoint.start()
            log.info("metrics at %s", self.endpoint.url)

    def close_endpoint(self) -> None:
        endpoint, self.endpoint = self.endpoint, None
        if endpoint is not None:
            endpoint.close()

    def close(self) -> None:
        self.close_endpoint()
        if self.events is not None:
            self.events.close()  # what waits is written now

    def fork_safely(self):
        """Around every fork of a worker: no statistics write in progress on the store's
        thread (a child must not inherit a database connection in the middle of one)."""
        if self.events is None:
            return contextlib.nullcontext()
        return self.events.held()

    # -- counting ---------------------------------------------------------------------------
    def count_request(self, command: str) -> None:
        self.metrics.requests.labels(command).inc()

    def count_result(self, result: dict) -> None:
        self.metrics.count_verdicts(result.get("verdicts", {}))
        if result.get("dropped"):
            self.metrics.stats_dropped.inc(result["dropped"])

    def count_reload(self, ok: bool) -> None:
        self.metrics.reloads.labels("ok" if ok else "failed").inc()

    def request_done(self, command: str, tally: Tally) -> None:
        """One request answered: its scan time, and its event (a message's is the mail
        service's own)."""
        if tally.seconds is not None:
            self.metrics.scan_seconds.observe(tally.seconds)
        if tally.mail is not None:
            self.metrics.messages.labels(tally.mail["result"]).inc()
            self.metrics.count_actions(tally.mail.get("actions", ()))
            return
        if self.events is None:
            return
        self.events.record({
            "kind": "daemon_scan", "status": tally.status, "files": tally.files,
            "threats": tally.threats, "size": tally.size,
            "duration_ms": (tally.seconds or 0.0) * 1000,
            "detail": {"command": command, "errors": tally.errors}})
        dropped = self.events.dropped
        if dropped > self._dropped_seen:
            self.metrics.stats_dropped.inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
