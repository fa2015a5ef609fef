"""Sending SNMPv2c traps to the sinks of ``[snmp] traps`` with net-snmp's ``snmptrap``.

net-snmp's own sender rather than a Python SNMP library: it is in Debian's ``snmp`` package,
which an administrator monitoring with snmpd has anyway, it encodes exactly what snmptrapd
and every net-snmp-based manager expect, and it keeps a second SNMP implementation and its
dependencies out of lmsav. One process per trap and sink is cheap at the rate traps happen.

Nothing here raises: a missing ``snmptrap``, a sink that cannot be resolved or a sender that
fails is one log line, and the caller goes on.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import dataclass, field

from .mib import COUNTER64, GAUGE, INTEGER, STRING, UNSIGNED, format_oid

log = logging.getLogger("lmsav.snmp")

SNMPTRAP = "snmptrap"
TIMEOUT = 10.0
# snmptrap's letters for the value types of the MIB.
TYPE_LETTERS = {INTEGER: "i", GAUGE: "u", UNSIGNED: "u", COUNTER64: "C", STRING: "s"}


@dataclass(frozen=True)
class Trap:
    """One notification: its name in the MIB, its OID and its variable bindings."""

    name: str
    oid: tuple[int, ...]
    varbinds: tuple[tuple[tuple[int, ...], str, int | str], ...] = field(default=())


def sink_address(sink: str) -> str:
    """``HOST:PORT`` of ``[snmp] traps`` as net-snmp names a UDP transport."""
    return ("udp6:" if sink.startswith("[") else "udp:") + sink


class Sender:
    """Sends traps to every sink; remembers a missing snmptrap so it is reported once."""

    def __init__(self, sinks: tuple[str, ...], community: str, command: str = SNMPTRAP):
        self.sinks = sinks
        self.community = community
        self.command = command
        self._missing_reported = False

    def available(self) -> str | None:
        """The snmptrap program's path, or None (reported once)."""
        path = shutil.which(self.command)
        if path is None and not self._missing_reported:
            log.error("cannot send SNMP traps: %s not found (install Debian's snmp package)",
                      self.command)
            self._missing_reported = True
        return path

    def send(self, trap: Trap) -> int:
        """Send ``trap`` to each sink; returns how many sinks took it."""
        program = self.available()
        if program is None:
            return 0
        sent = 0
        for sink in self.sinks:
            args = [program, "-v", "2c", "-c", self.community, "-m", "", sink_address(sink),
                    "", format_oid(trap.oid)]
            for oid, kind, value in trap.varbinds:
                args += [format_oid(oid), TYPE_LETTERS[kind], str(value)]
            try:
                done = subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT,
                                      stdin=subprocess.DEVNULL, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                log.error("cannot send %s to %s: %s", trap.name, sink, err)
                continue
            if done.returncode != 0:
                reason = " ".join(done.stderr.split()).removeprefix("snmptrap:").strip() or \
                    f"snmptrap exited with {done.returncode} (an unknown host?)"
                log.error("cannot send %s to %s: %s", trap.name, sink, reason)
                continue
            log.info("sent %s to %s", trap.name, sink)
            sent += 1
        return sent


__all__ = ["Sender", "Trap", "sink_address"]
