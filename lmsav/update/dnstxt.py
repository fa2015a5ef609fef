"""Database versions announced in DNS, as ClamAV publishes them in ``current.cvd.clamav.net``.

The TXT record is one string of colon-separated fields: 0 the current engine version, 1 the
version of main, 2 of daily, 3 the time the record was written (Unix seconds), 4 a
version-warning flag, 5 the engine's functionality level, 6 safebrowsing, 7 bytecode. A record
over 12 hours old is not trusted (ClamAV's own updater draws the same line).

``AnnouncedMirror`` wraps an HTTP mirror: for a container the record names, ``header()`` answers
from the record instead of a Range request, so a run that finds everything current asks the
mirror nothing. Any failure to learn the record (no network, no resolver, no such name, a
malformed or stale answer) leaves the mirror to be asked as usual, with one debug line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .http import HEADER_SIZE

log = logging.getLogger("lmsav.update")

FIELDS = {"main": 1, "daily": 2, "bytecode": 7}
RECORD_TIME_FIELD = 3
MAX_RECORD_AGE = 12 * 3600
MAX_CLOCK_SKEW = 3600  # a record from the future beyond this is a broken clock or record
LOOKUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Announcement:
    versions: dict[str, int]
    record_time: int


def parse(text: str, now: float) -> Announcement:
    """The versions in one TXT string; ValueError when it is malformed or not fresh."""
    fields = text.strip().split(":")
    if len(fields) <= max(FIELDS.values()):
        raise ValueError(f"{len(fields)} fields where ClamAV's record has at least "
                         f"{max(FIELDS.values()) + 1}")
    record_time = _number(fields[RECORD_TIME_FIELD], "record time")
    age = now - record_time
    if age > MAX_RECORD_AGE:
        raise ValueError(f"the record is {age / 3600:.0f} hours old")
    if age < -MAX_CLOCK_SKEW:
        raise ValueError("the record's time is in the future")
    versions = {name: _number(fields[index], f"{name} version")
                for name, index in FIELDS.items()}
    return Announcement({k: v for k, v in versions.items() if v > 0}, record_time)


def _number(text: str, label: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise ValueError(f"{label} {text[:24]!r} is not a number")
    return int(text)


def make_resolver():
    """The system's resolver (/etc/resolv.conf), bounded in time."""
    import dns.resolver

    resolver = dns.resolver.Resolver()
    resolver.lifetime = LOOKUP_TIMEOUT
    return resolver


def lookup(name: str, *, resolver=None, now: float | None = None) -> Announcement | None:
    """The announcement at ``name``, or None (logged at debug level) when there is none."""
    import dns.exception

    try:
        resolver = resolver or make_resolver()
        answer = resolver.resolve(name, "TXT")
        texts = [b"".join(rdata.strings).decode("ascii") for rdata in answer]
        if not texts:
            raise ValueError("empty answer")
        return parse(texts[0], time.time() if now is None else now)
    except (dns.exception.DNSException, ValueError, UnicodeDecodeError, OSError) as err:
        log.debug("DNS TXT %s: %s; asking the mirrors for versions", name,
                  " ".join(str(err).split()) or type(err).__name__)
        return None


class AnnouncedMirror:
    """An HTTP mirror whose ``header()`` answers from the DNS record where it can."""

    def __init__(self, mirror, record_name: str, *, lookup=lookup):
        self.mirror = mirror
        self.record_name = record_name
        self._lookup = lookup
        self._announcement: Announcement | None = None
        self._asked = False

    def __getattr__(self, attribute):  # label, url, download, close, network, incremental …
        return getattr(self.mirror, attribute)

    def announcement(self) -> Announcement | None:
        if not self._asked:  # once per run: the record changes a few times a day
            self._asked = True
            self._announcement = self._lookup(self.record_name)
        return self._announcement

    def header(self, name: str) -> bytes:
        base, dot, suffix = name.partition(".")
        if dot and suffix == "cvd" and base in FIELDS:
            found = self.announcement()
            if found is not None and base in found.versions:
                return announced_header(found.versions[base], found.record_time)
        return self.mirror.header(name)


def announced_header(version: int, record_time: int) -> bytes:
    """A container header carrying the announced version (what the updater compares); the
    fields DNS does not tell are left empty, and the real header is read from the file
    itself once downloaded."""
    when = time.strftime("%d %b %Y %H-%M +0000", time.gmtime(record_time))
    line = f"ClamAV-VDB:{when}:{version}:0:0:::dns:{record_time}".encode("ascii")
    return line.ljust(HEADER_SIZE, b" ")


__all__ = ["AnnouncedMirror", "Announcement", "announced_header", "lookup", "parse"]
