"""The spool as a console page sees it: depth per state, one page of entries (held first) and
one entry's details, read from directory listings and only the headers shown.

`Spool.list()` opens every entry; a page of 50 out of 100,000 must not. The order comes from
the file names alone (state, then arrival: entry ids sort by arrival), so only the entries of
the page asked for are opened.
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

# The entry file's own reader: one header line, then the message (nqueue's format).
from .nqueue import (
    ID_PATTERN,
    STATES,
    Spool,
    SpoolEntry,
    SpoolError,
    entry_from,
    read_header,
    validate_id,
)
from .queue_ops import QueueOps

# Held entries first: they are the ones waiting for the administrator.
PAGE_ORDER = ("hold", "work", "new")
PER_PAGE = 50
HEADER_BYTES = 64 << 10  # the message head read for the details; never the whole message
SHOWN_HEADERS = ("From", "To", "Cc", "Subject", "Date", "Message-ID")
# What the page may do to an entry: the operations of `lmsav ctl queue`.
ACTIONS = ("release", "requeue", "hold", "delete")


@dataclass(frozen=True)
class EntryRow:
    """One entry as a list row: the envelope and history, the message size, the file's state."""

    id: str
    state: str
    sender: str
    recipients: tuple[str, ...]
    queue_id: str
    arrived: float
    attempts: int
    not_before: float
    reason: str
    size: int  # message bytes, the header line left out
    damaged: bool = False

    def age(self, now: float | None = None) -> float:
        """Seconds since arrival (0 when the arrival is unknown)."""
        if not self.arrived:
            return 0.0
        return max(0.0, (time.time() if now is None else now) - self.arrived)


@dataclass(frozen=True)
class SpoolPage:
    depth: dict[str, int]  # state → entries (an entry caught in two states counts once)
    rows: list[EntryRow]
    page: int
    pages: int
    total: int  # entries in the states listed
    states: tuple[str, ...]


@dataclass(frozen=True)
class EntryDetail:
    row: EntryRow
    path: Path
    client: str
    headers: list[tuple[str, str]]


def read_page(spool_dir: Path | str, page: int = 1, per_page: int = PER_PAGE,
              states: tuple[str, ...] = PAGE_ORDER) -> SpoolPage:
    """Page ``page`` (from 1) of the entries in ``states``, held first, oldest first within a
    state. A page past the end is the last one. Raises SpoolError when a directory of the
    spool cannot be read (a spool not set up yet is empty)."""
    root = Path(spool_dir)
    names = {state: _highest_revisions(root, state) for state in STATES}
    _drop_duplicates(names)
    depth = {state: len(names[state]) for state in STATES}
    wanted = [state for state in PAGE_ORDER if state in states]
    total = sum(depth[state] for state in wanted)
    per_page = max(1, per_page)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    first, rows = (page - 1) * per_page, []
    for state in wanted:  # only the states the page reaches into are sorted
        count = depth[state]
        if first >= count:
            first -= count
            continue
        for entry_id in sorted(names[state])[first:first + per_page - len(rows)]:
            row = _read_row(root / state / names[state][entry_id][1], entry_id, state)
            if row is not None:
                rows.append(row)
        first = 0
        if len(rows) >= per_page:
            break
    return SpoolPage(depth, rows, page, pages, total, tuple(wanted))


def read_entry(spool_dir: Path | str, entry_id: str) -> EntryDetail:
    """One entry wherever it is, with the main headers of its message (read from its first
    64 KiB). SpoolError for an invalid id or an entry that is not there."""
    root = Path(spool_dir)
    validate_id(entry_id)
    state, name = QueueOps(Spool(root)).locate(entry_id)
    path = root / state / name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SpoolError(f"spool entry {entry_id} moved meanwhile; look again") from None
    except OSError as err:
        raise SpoolError(f"cannot read spool entry {entry_id}: {err.strerror}") from None
    with open(fd, "rb") as fh:
        try:
            fields = read_header(fh, path)
            entry = entry_from(entry_id, path, fields)
            start = fh.tell()
            head = fh.read(HEADER_BYTES)
            size = os.fstat(fh.fileno()).st_size - start
        except OSError as err:
            raise SpoolError(f"cannot read spool entry {entry_id}: {err.strerror}") from None
    return EntryDetail(_row(entry, state, size), path, entry.envelope.client, shown_headers(head))


# One pass of the regular expression engine over a whole listing (a line per name) instead of
# a match per name: 100,000 entries are listed in milliseconds.
_LISTING_RE = re.compile(rf"^(?P<name>(?P<id>{ID_PATTERN})(?:,r(?P<rev>\d{{1,9}}),t\d{{1,16}})?)$",
                         re.MULTILINE)


def _highest_revisions(root: Path, state: str) -> dict[str, tuple[int, str]]:
    """id → (revision, file name) of the highest revision of each entry in one state's
    directory."""
    try:
        listing = os.listdir(root / state)
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise SpoolError(f"cannot read spool directory {root / state}: {err.strerror}") from None
    best: dict[str, tuple[int, str]] = {}
    for name, entry_id, rev in _LISTING_RE.findall("\n".join(listing)):
        if not rev:
            best.setdefault(entry_id, (0, name))
        elif entry_id not in best or int(rev) > best[entry_id][0]:
            best[entry_id] = (int(rev), name)
    return best


def _drop_duplicates(names: dict[str, dict[str, tuple[int, str]]]) -> None:
    """An entry seen in two states (a rewrite caught half way) is listed once, where its
    highest revision is; on a tie work/ wins, as in QueueOps.locate."""
    hold, new, work = names["hold"].keys(), names["new"].keys(), names["work"].keys()
    for entry_id in (hold & new) | (hold & work) | (new & work):
        seen = [(names[state][entry_id][0], priority, state)
                for priority, state in enumerate(("hold", "new", "work"))
                if entry_id in names[state]]
        winner = max(seen)[2]
        for _rev, _priority, state in seen:
            if state != winner:
                del names[state][entry_id]


def _read_row(path: Path, entry_id: str, state: str) -> EntryRow | None:
    """The row of one entry file; None when it moved away since the listing. A file whose
    header is damaged is still a row, for the administrator to see and delete."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as err:
        return _damaged(entry_id, state, 0, f"cannot read: {err.strerror}")
    with open(fd, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        try:
            entry = entry_from(entry_id, path, read_header(fh, path))
        except SpoolError as err:
            return _damaged(entry_id, state, size, str(err))
        except OSError as err:
            return _damaged(entry_id, state, size, f"cannot read: {err.strerror}")
        return _row(entry, state, size - fh.tell())


def _row(entry: SpoolEntry, state: str, size: int) -> EntryRow:
    env = entry.envelope
    return EntryRow(entry.id, state, env.sender, tuple(env.recipients), entry.queue_id,
                    env.arrived, entry.attempts, entry.not_before, entry.reason, size)


def _damaged(entry_id: str, state: str, size: int, reason: str) -> EntryRow:
    # The id is the arrival time in nanoseconds: the age is known even without a header.
    arrived = int(entry_id.split(".", 1)[0]) / 1e9
    return EntryRow(entry_id, state, "", (), "", arrived, 0, 0.0, f"damaged: {reason}", size,
                    damaged=True)


def shown_headers(head: bytes) -> list[tuple[str, str]]:
    """The headers a person identifies a message by, decoded, one line each."""
    end = head.find(b"\n\n")
    crlf = head.find(b"\r\n\r\n")
    if crlf >= 0 and (end < 0 or crlf < end):
        end = crlf
    if end >= 0:
        head = head[:end]
    msg = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    out = []
    for name in SHOWN_HEADERS:
        value = msg.get(name)
        if value is None:
            continue
        try:
            text = str(email.header.make_header(email.header.decode_header(str(value))))
        except (ValueError, LookupError, UnicodeError):
            text = str(value)
        out.append((name, " ".join(text.split())))
    return out


def apply(spool_ops: QueueOps, action: str, entry_id: str, reason: str | None = None) -> str:
    """Run one of ACTIONS on an entry as `lmsav ctl queue` does; returns what was done.
    SpoolError (one line) when it cannot be done."""
    validate_id(entry_id)
    if action == "release":
        return spool_ops.release(entry_id)
    if action == "requeue":
        return spool_ops.requeue(entry_id)
    if action == "hold":
        return spool_ops.hold(entry_id, reason or None)
    if action == "delete":
        return spool_ops.delete(entry_id)
    raise SpoolError(f"unknown spool action {action!r}: choose {', '.join(ACTIONS)}")


__all__ = ["ACTIONS", "PAGE_ORDER", "PER_PAGE", "EntryDetail", "EntryRow", "SpoolPage",
           "apply", "read_entry", "read_page"]
