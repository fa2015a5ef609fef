"""`lmsav snmp agent`: the LMSAV-MIB for net-snmp's snmpd, over its pass_persist protocol.

snmpd starts the agent once (``pass_persist OID COMMAND`` in snmpd.conf) and talks to it on
its standard input and output, one request at a time::

    PING                    → PONG
    get / OID               → OID / TYPE / VALUE, or NONE
    getnext / OID           → the next OID / TYPE / VALUE, or NONE
    set / OID / TYPE VALUE  → not-writable

The answers come from one status snapshot kept for a few seconds, so a walk sees one
consistent state and a busy manager does not make lmsav look at its directories for every
object. When the snapshot cannot be taken the agent answers NONE and logs one line; it ends
only when snmpd closes its input.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable
from typing import TextIO

from .. import status
from .mib import BASE, View, format_oid, parse_oid, values

log = logging.getLogger("lmsav.snmp")

CACHE_SECONDS = 5.0


class Agent:
    """GET and GETNEXT over the values of one cached view."""

    def __init__(self, settings, totals: Callable[[], dict | None], *,
                 base: tuple[int, ...] = BASE, cache_seconds: float = CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.totals = totals
        self.base = base
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._taken: float | None = None
        self._oids: list[tuple[int, ...]] = []
        self._values: list[tuple[str, int | str]] = []
        self._failing = False

    def refresh(self) -> None:
        """Take a new snapshot when the cached one is older than ``cache_seconds``."""
        now = self.clock()
        if self._taken is not None and now - self._taken < self.cache_seconds:
            return
        try:
            snapshot = status.collect(self.settings)
            view = View(snapshot, self.settings, status.problems(snapshot, self.settings),
                        self.totals())
            table = values(view, self.base)
        except Exception as err:  # noqa: BLE001 - snmpd would restart us over and over
            if not self._failing:
                log.error("cannot read lmsav's status: %s", err)
                self._failing = True
            self._oids, self._values, self._taken = [], [], now
            return
        self._failing = False
        self._oids = [oid for oid, _ in table]
        self._values = [value for _, value in table]
        self._taken = now

    def get(self, oid: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[str, int | str]] | None:
        self.refresh()
        at = bisect.bisect_left(self._oids, oid)
        if at < len(self._oids) and self._oids[at] == oid:
            return oid, self._values[at]
        return None

    def getnext(self, oid: tuple[int, ...]
                ) -> tuple[tuple[int, ...], tuple[str, int | str]] | None:
        self.refresh()
        at = bisect.bisect_right(self._oids, oid)
        if at < len(self._oids):
            return self._oids[at], self._values[at]
        return None

    def dump(self) -> list[str]:
        """Every instance as ``OID = TYPE: VALUE`` (what a walk of snmpd would return)."""
        self.refresh()
        return [f"{format_oid(oid)} = {kind}: {value}"
                for oid, (kind, value) in zip(self._oids, self._values, strict=True)]


def serve(agent: Agent, stdin: TextIO, stdout: TextIO) -> None:
    """Answer snmpd until it closes our standard input."""

    def reply(*lines: str) -> None:
        stdout.write("".join(line + "\n" for line in lines))
        stdout.flush()

    while True:
        command = stdin.readline()
        if not command:
            return
        command = command.strip().lower()
        if command == "ping":
            reply("PONG")
        elif command in ("get", "getnext"):
            oid = parse_oid(stdin.readline())
            found = None
            if oid is not None:
                found = agent.get(oid) if command == "get" else agent.getnext(oid)
            if found is None:
                reply("NONE")
            else:
                (answer, (kind, value)) = found
                reply(format_oid(answer), kind, str(value))
        elif command == "set":
            stdin.readline()
            stdin.readline()
            reply("not-writable")
        elif command:
            reply("NONE")


__all__ = ["Agent", "serve"]
