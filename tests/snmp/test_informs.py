"""`lmsav snmp monitor` with [snmp] informs: acknowledged by Debian's snmptrapd, and a sink that
does not answer is one error line after a bounded time while the others still get it."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.snmp.mib import BASE, format_oid
from lmsav.spool.nqueue import Spool
from tests.snmp.test_monitor import TRAP, received, run_monitor, trap_oid, write_config

pytestmark = pytest.mark.integration

B = format_oid(BASE)
INFORM_PDU = 0xA6  # InformRequest-PDU (RFC 3416); an SNMPv2-Trap-PDU is 0xA7


def over_threshold(tmp_path: Path, sinks: list[str]) -> Path:
    """A configuration sending informs to ``sinks`` and a spool over its threshold of 1."""
    listed = ", ".join(f'"{sink}"' for sink in sinks)
    config = write_config(tmp_path, f"[snmp]\ntraps = [{listed}]\ninforms = true\n"
                                    "spool_threshold = 1\n")
    spool = Spool(tmp_path / "state" / "nqueue")
    spool.ensure()
    for n in range(2):
        spool.enqueue(Envelope("a@example.org", ("b@example.org",)), b"Subject: %d\n\nx\n" % n)
    return config


def messages(stderr: str) -> list[str]:
    """[log] lines "<time> lmsav-snmp[<pid>]: <level>: <message>" without time and pid."""
    return [line.split("]: ", 1)[1] for line in stderr.splitlines() if " lmsav-snmp[" in line]


def pdu_type(datagram: bytes) -> int:
    """The PDU tag of an SNMPv2c message: SEQUENCE { version, community, PDU }."""

    def skip_header(at: int) -> tuple[int, int]:  # (start of contents, length)
        length = datagram[at + 1]
        if length & 0x80:
            count = length & 0x7F
            return at + 2 + count, int.from_bytes(datagram[at + 2:at + 2 + count], "big")
        return at + 2, length

    at, _ = skip_header(0)  # the message's SEQUENCE
    start, length = skip_header(at)  # version
    start, length = skip_header(start + length)  # community
    return datagram[start + length]


def test_an_inform_is_acknowledged_and_logged(tmp_path, trapd):
    config = over_threshold(tmp_path, [trapd.sink])
    done = run_monitor(config)
    assert done.returncode == 0, done.stderr
    assert messages(done.stderr) == [
        f"info: sent lmsavSpoolOverThreshold to {trapd.sink} (acknowledged)"]
    [block] = received(trapd, 1)
    assert trap_oid(block) == TRAP["spoolOverThreshold"]
    assert f"{B}.1.3.4.0 = Gauge32: 2" in block and f"{B}.1.3.5.0 = Gauge32: 1" in block


def test_a_sink_that_does_not_answer_is_an_error_in_bounded_time(tmp_path, trapd):
    # A sink that takes the datagrams and never acknowledges them.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.settimeout(5)
        sink = f"127.0.0.1:{silent.getsockname()[1]}"
        config = over_threshold(tmp_path, [sink, trapd.sink])
        started = time.monotonic()
        done = run_monitor(config, "--inform-timeout", "0.3", "--inform-retries", "1")
        elapsed = time.monotonic() - started
        tries = [silent.recv(65536) for _ in range(2)]
        silent.settimeout(0.2)
        with pytest.raises(TimeoutError):
            silent.recv(65536)  # -r 1: one retry, no more
    assert done.returncode == 2
    *logged, last = done.stderr.splitlines()
    assert messages("\n".join(logged)) == [
        (f"error: cannot send lmsavSpoolOverThreshold to {sink}: no acknowledgement within "
         "0.6 s (2 tries of 0.3 s)"),
        f"info: sent lmsavSpoolOverThreshold to {trapd.sink} (acknowledged)"]
    assert last == "lmsav: error: not acknowledged by every sink: lmsavSpoolOverThreshold"
    assert [pdu_type(d) for d in tries] == [INFORM_PDU, INFORM_PDU]  # sent, and sent again
    # Python's start-up and the status snapshot, plus 0.6 s of waiting; never the 10 s a
    # hung sender would be given.
    assert elapsed < 10.0, elapsed
    # The other sink got it all the same.
    assert [trap_oid(t) for t in received(trapd, 1)] == [TRAP["spoolOverThreshold"]]


def test_informs_without_snmpinform_are_a_clear_error(tmp_path):
    config = write_config(tmp_path, '[snmp]\ntraps = ["127.0.0.1:162"]\ninforms = true\n')
    done = run_monitor(config, env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("lmsav: error: snmpinform not found: install "
                                            "Debian's snmp package to send informs")
