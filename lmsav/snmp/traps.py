"""Sending SNMPv2c traps to the sinks of ``[snmp] traps`` with net-snmp's ``snmptrap``, or
informs with its ``snmpinform`` (``[snmp] informs``).

net-snmp's own sender rather than a Python SNMP library: it is in Debian's ``snmp`` package,
which an administrator monitoring with snmpd has anyway, it encodes exactly what snmptrapd
and every net-snmp-based manager expect, and it keeps a second SNMP implementation and its
dependencies out of lmsav. One process per trap and sink is cheap at the rate traps happen.

A trap is one UDP datagram: "sent" says only that it left. An inform is acknowledged by the
sink and sent again when it is not (``-t`` seconds per try, ``-r`` retries): "sent" then
means received, and a sink that does not answer is an error after a bounded time.

Nothing here raises: a missing ``snmptrap`` or ``snmpinform``, a sink that cannot be resolved,
a sender that fails or an inform not acknowledged is one log line, and the caller goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from .mib import COUNTER64, GAUGE, INTEGER, STRING, UNSIGNED, format_oid

log = logging.getLogger("lmsav.snmp")

SNMPTRAP = "snmptrap"
SNMPINFORM = "snmpinform"
TIMEOUT = 10.0  # for the sender process, beyond the tries of an inform
INFORM_TIMEOUT = 2.0  # seconds an inform waits for its acknowledgement, per try
INFORM_RETRIES = 2  # tries after the first
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
    """Sends traps (or informs) to every sink; remembers a missing sender program so it is
    reported once."""

    def __init__(self, sinks: tuple[str, ...], community: str, command: str | None = None, *,
                 inform: bool = False, timeout: float = INFORM_TIMEOUT,
                 retries: int = INFORM_RETRIES, persistent_dir: Path | None = None):
        self.sinks = sinks
        self.community = community
        self.inform = inform
        self.command = command or (SNMPINFORM if inform else SNMPTRAP)
        self.timeout = timeout
        self.retries = retries
        # net-snmp's tools keep state (snmpapp.conf) in a persistent directory, by default
        # /var/lib/snmp, which the service user cannot write: lmsav gives them one of its own.
        self.persistent_dir = persistent_dir
        self._missing_reported = False

    @property
    def kind(self) -> str:
        return "informs" if self.inform else "traps"

    def available(self) -> str | None:
        """The sender program's path, or None (reported once)."""
        path = shutil.which(self.command)
        if path is None and not self._missing_reported:
            log.error("cannot send SNMP %s: %s not found (install Debian's snmp package)",
                      self.kind, self.command)
            self._missing_reported = True
        return path

    def _wait(self) -> float:
        """The longest an inform can wait for its acknowledgement, every try included."""
        return self.timeout * (self.retries + 1)

    def send(self, trap: Trap) -> int:
        """Send ``trap`` to each sink; returns how many sinks took it (acknowledged it, for
        an inform)."""
        program = self.available()
        if program is None:
            return 0
        sent = 0
        env = None
        if self.persistent_dir is not None:
            try:
                self.persistent_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                env = {**os.environ, "SNMP_PERSISTENT_DIR": str(self.persistent_dir)}
            except OSError as err:
                log.warning("cannot make %s for net-snmp's state: %s", self.persistent_dir,
                            err.strerror or err)
        for sink in self.sinks:
            args = [program, "-v", "2c", "-c", self.community, "-m", ""]
            if self.inform:
                args += ["-Ci", "-t", f"{self.timeout:g}", "-r", str(self.retries)]
            args += [sink_address(sink), "", format_oid(trap.oid)]
            for oid, kind, value in trap.varbinds:
                args += [format_oid(oid), TYPE_LETTERS[kind], str(value)]
            try:
                done = subprocess.run(args, capture_output=True, text=True, env=env,
                                      timeout=TIMEOUT + (self._wait() if self.inform else 0),
                                      stdin=subprocess.DEVNULL, check=False)
            except (OSError, subprocess.TimeoutExpired) as err:
                log.error("cannot send %s to %s: %s", trap.name, sink, err)
                continue
            if done.returncode != 0:
                log.error("cannot send %s to %s: %s", trap.name, sink, self._reason(done))
                continue
            log.info("sent %s to %s%s", trap.name, sink,
                     " (acknowledged)" if self.inform else "")
            sent += 1
        return sent

    def _reason(self, done: subprocess.CompletedProcess) -> str:
        """The sender's complaint on one line, without its program name (its last line: the
        lines before are net-snmp's notes about its own state, such as "Created directory")."""
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        text = " ".join(lines[-1].split()) if lines else ""
        for name in (SNMPTRAP, SNMPINFORM, self.command):
            text = text.removeprefix(f"{name}:").strip()
        if self.inform and text == "Timeout":
            tries = self.retries + 1
            return (f"no acknowledgement within {self._wait():g} s ({tries} "
                    f"{'try' if tries == 1 else 'tries'} of {self.timeout:g} s)")
        return text or f"{self.command} exited with {done.returncode} (an unknown host?)"


__all__ = ["Sender", "Trap", "sink_address"]
