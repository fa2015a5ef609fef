"""Versions from a DNS TXT record in ClamAV's format, answered by a small DNS server on
127.0.0.1: current databases need no Range request; a failing lookup falls back to them."""

from __future__ import annotations

import logging
import socket
import threading
import time

import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest

from lmsav.update import dnstxt
from lmsav.update.store import Store
from lmsav.update.updater import update

from .conftest import TEST_CERTS, options

RECORD = "current.cvd.test"


class DnsServer:
    """Answers TXT queries for ``RECORD`` with ``self.text`` (None: NXDOMAIN; "drop": no
    answer at all); counts the queries."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.text: str | None = None
        self.queries = 0
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while self.running:
            try:
                wire, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(wire)
            self.queries += 1
            if self.text == "drop":
                continue
            response = dns.message.make_response(query)
            question = query.question[0]
            if self.text is None or question.name.to_text() != RECORD + ".":
                response.set_rcode(dns.rcode.NXDOMAIN)
            else:
                response.answer.append(dns.rrset.from_text(
                    question.name, 60, "IN", "TXT", f'"{self.text}"'))
            self.sock.sendto(response.to_wire(), peer)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.port
        resolver.lifetime = 1.0
        return resolver

    def stop(self):
        self.running = False
        self.thread.join()
        self.sock.close()


@pytest.fixture
def dns_server(monkeypatch):
    server = DnsServer()
    monkeypatch.setattr(dnstxt, "make_resolver", server.resolver)
    yield server
    server.stop()


def record(daily: int, *, main: int = 62, bytecode: int = 339, age: float = 600) -> str:
    return f"1.4.3:{main}:{daily}:{int(time.time() - age)}:1:90:49192:{bytecode}"


def dns_update(root, mirror, **kw):
    return update(root, options(mirror.url, databases=("daily",), trust_dirs=(TEST_CERTS,),
                                dns_txt=RECORD, **kw))


def active_daily(root) -> int:
    return Store(root).current().meta["databases"]["daily"]["version"]


def ranged(mirror) -> list[str]:
    return [r.path for r in mirror.requests if r.range]


# -- the record ---------------------------------------------------------------------------------

def test_clamav_s_record_format_is_read_field_by_field():
    now = 1_764_800_000
    found = dnstxt.parse(f"1.4.3:62:27840:{now - 3600}:1:90:49192:339", now)
    assert found.versions == {"main": 62, "daily": 27840, "bytecode": 339}
    assert found.record_time == now - 3600


@pytest.mark.parametrize("text, message", [
    ("1.4.3:62:27840", "3 fields"),
    ("1.4.3:62:x:{t}:1:90:49192:339", "daily version 'x' is not a number"),
    ("1.4.3:62:27840:{old}:1:90:49192:339", "13 hours old"),
    ("1.4.3:62:27840:{future}:1:90:49192:339", "in the future"),
])
def test_a_malformed_or_stale_record_is_refused(text, message):
    now = 1_764_800_000
    text = text.format(t=now, old=now - 13 * 3600, future=now + 2 * 3600)
    with pytest.raises(ValueError, match=message):
        dnstxt.parse(text, now)


def test_the_lookup_asks_the_dns_server(dns_server):
    dns_server.text = record(27840)
    found = dnstxt.lookup(RECORD)
    assert found is not None and found.versions["daily"] == 27840
    assert dns_server.queries == 1


# -- used by an update ------------------------------------------------------------------------

def test_a_current_database_needs_no_request_to_the_mirror(tmp_path, mirror, dns_server,
                                                          trust_test_root):
    root = tmp_path / "bases"
    mirror.publish_genuine(3, name="daily", cdiffs=False)
    dns_server.text = record(3)
    first = dns_update(root, mirror)
    assert first.ok, first.errors
    assert active_daily(root) == 3
    assert ranged(mirror) == []  # the version came from DNS; the file itself from the mirror
    assert mirror.paths() == ["daily.cvd", "daily-3.cvd.sign"]
    mirror.requests.clear()
    again = dns_update(root, mirror)
    assert again.ok and again.result == "current", again.errors
    assert mirror.paths() == []
    assert dns_server.queries == 2  # once per run


def test_a_newer_announced_version_is_fetched(tmp_path, mirror, dns_server, trust_test_root):
    root = tmp_path / "bases"
    mirror.publish_genuine(3, name="daily", cdiffs=False)
    dns_server.text = record(3)
    assert dns_update(root, mirror).ok
    mirror.publish_genuine(5, name="daily", cdiffs=False)
    mirror.requests.clear()
    dns_server.text = record(5)
    outcome = dns_update(root, mirror)
    assert outcome.ok and outcome.result == "updated", outcome.errors
    assert active_daily(root) == 5
    meta = Store(root).current().meta["databases"]["daily"]
    assert meta["signatures"] > 0 and meta["builder"] != "dns"  # from the file, not from DNS
    assert ranged(mirror) == []


@pytest.mark.parametrize("answer", [None, "drop", "garbage", "stale"])
def test_a_failing_lookup_falls_back_to_range_requests_with_one_debug_line(
        tmp_path, mirror, dns_server, trust_test_root, caplog, answer):
    dns_server.text = {"garbage": "v=spf1 -all", "stale": record(3, age=13 * 3600)}.get(
        answer, answer)
    mirror.publish_genuine(3, name="daily", cdiffs=False)
    with caplog.at_level(logging.DEBUG, logger="lmsav.update"):
        outcome = dns_update(tmp_path / "bases", mirror)
    assert outcome.ok and outcome.warnings == [], (outcome.errors, outcome.warnings)
    assert ranged(mirror) == ["daily.cvd"]
    lines = [r for r in caplog.records if r.name == "lmsav.update"]
    assert len(lines) == 1 and lines[0].levelno == logging.DEBUG
    assert lines[0].getMessage().startswith(f"DNS TXT {RECORD}: ")


def test_an_empty_name_turns_discovery_off(tmp_path, mirror, dns_server, trust_test_root):
    dns_server.text = record(3)
    mirror.publish_genuine(3, name="daily", cdiffs=False)
    outcome = update(tmp_path / "bases", options(mirror.url, databases=("daily",),
                                                 trust_dirs=(TEST_CERTS,), dns_txt=""))
    assert outcome.ok
    assert dns_server.queries == 0 and ranged(mirror) == ["daily.cvd"]


def test_databases_the_record_does_not_name_are_asked_for_as_usual(
        tmp_path, mirror, dns_server, trust_test_root):
    dns_server.text = record(3)
    mirror.publish_genuine(3, name="test", cdiffs=False)
    outcome = update(tmp_path / "bases", options(mirror.url, databases=("test",),
                                                 trust_dirs=(TEST_CERTS,), dns_txt=RECORD))
    assert outcome.ok, outcome.errors
    assert ranged(mirror) == ["test.cvd"]
