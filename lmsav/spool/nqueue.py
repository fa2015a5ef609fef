"""The nqueue/ spool: durable entries handed over by the MTA, claimed and finished by workers.

Layout, in the style of Maildir (directories 2770, entry files 0640)::

    <spool>/tmp/    entries being written; a file here is never an accepted message
    <spool>/new/    accepted entries waiting for a worker (or for their retry time)
    <spool>/work/   entries a worker has claimed
    <spool>/hold/   entries that failed too often or were held, for the administrator

One file per entry, so a rename always moves envelope and message together. The file is one
header line, then the message bytes exactly as received (CRLF, NUL, a missing final newline are
all kept)::

    LMSAVQ1 {"sender": "", "recipients": ["a@b"], "queue_id": "4Xy", "arrived": 1.7e9,
             "attempts": 0, "not_before": 0.0, "reason": "", "client": "192.0.2.1"}\\n
    <message bytes>

(the JSON is on one line, ASCII only; ``client``, the MTA's SMTP client as the listener learns
it from XFORWARD, only when known). The file name is the entry id, ``<arrival ns>.<pid>.<8
hex>``, which sorts by arrival. Once its metadata has been rewritten the name also carries a
revision and the retry time, ``<id>,r<rev>,t<not_before in ms, rounded up>``, so ``pending()``
finds what is due from one directory listing, without opening a file.

The directories are shared by the MTA's pipe user, which writes ``tmp/`` and ``new/``, and the
watcher: in the system layout they belong to the service user and its group, and the
set-group-id bit keeps that group on what is created inside (see lmsav.spool.permissions).

Moves:

- enqueue: written and fsynced in ``tmp/``, renamed into ``new/``, ``new/`` fsynced; only then is
  the message accepted.
- claim: one rename ``new/`` → ``work/`` (same name); of two workers exactly one succeeds.
- retry, hold, release rewrite the metadata: a copy with revision + 1 is written and fsynced in
  ``tmp/``, renamed into the target directory (fsynced), and only then is the old file unlinked.
  The entry therefore always exists somewhere; a crash in between leaves it in two places.
- complete: unlink from ``work/``, ``work/`` fsynced.

Duplicates: two files of one id are always two revisions of the same message, and the higher
revision is the newer metadata. ``recover()`` (at watcher start, before any worker runs) keeps
the highest revision of every id and removes the others before moving ``work/`` back to
``new/``; ``pending()`` lists each id once and removes older revisions it finds in ``new/``;
``claim()`` takes the name ``pending()`` saw (in another process: the bare id first, then a
listing). Because a rewrite gets a new name, a claim can never replace a file another process
still holds in ``work/``. A crash can thus cause a message to be processed twice, never lost.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir as _fsync_dir
from ..mail.envelope import Envelope

TYPE_CHECKING = False  # typing costs milliseconds `lmsav enqueue` does not need to spend
if TYPE_CHECKING:
    from typing import BinaryIO

SUBDIRS = ("tmp", "new", "work", "hold")
STATES = ("new", "work", "hold")  # where an accepted entry can be

MAGIC = b"LMSAVQ1 "
# rwxrws---: the owner (the service user) and its group (an MTA's pipe user, qmail's users) write;
# set-group-id, so what they create stays in the group.
DIR_MODE = 0o2770
FILE_MODE = 0o640

MAX_ADDRESS = 998  # the longest line SMTP allows (RFC 5322 2.1.1)
MAX_HEADER = 16 << 20  # a header line longer than this is a damaged file, not a big envelope
CHUNK = 1 << 20
# A tmp/ file this old is a crash leftover, not a write in progress; recover() removes it.
STALE_TMP_SECONDS = 3600.0

ID_PATTERN = r"\d{19,20}\.\d{1,10}\.[0-9a-f]{8}"
ID_RE = re.compile(rf"\A{ID_PATTERN}\Z")
NAME_RE = re.compile(rf"\A(?P<id>{ID_PATTERN})(?:,r(?P<rev>\d{{1,9}}),t(?P<nb>\d{{1,16}}))?\Z")
_BAD_CHARS = re.compile(r"[\r\n\x00]")

_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class SpoolError(Exception):
    """A spool operation failed; the message is one line a person can act on."""


@dataclass(frozen=True)
class SpoolEntry:
    """One spooled message where it currently is: its envelope (the mail service's type), the
    MTA's queue id, and its processing history."""

    id: str  # "<arrival ns>.<pid>.<8 hex>" — sorts by arrival
    path: Path  # the entry file where it currently is
    envelope: Envelope
    queue_id: str = ""  # the MTA's queue id, for the logs
    attempts: int = 0
    not_before: float = 0.0  # epoch; retries wait until then
    reason: str = ""  # last failure / hold reason


def validate_id(entry_id: object) -> str:
    """Return ``entry_id`` if it is a well-formed entry id; anything else (``../x``) is refused."""
    if not isinstance(entry_id, str) or not ID_RE.match(entry_id):
        raise SpoolError(f"invalid spool entry id {str(entry_id)!r}: expected "
                         "<arrival ns>.<pid>.<8 hex digits>")
    return entry_id


def validate_envelope(envelope: Envelope, queue_id: str = "") -> None:
    """Refuse an envelope the MTA could not take back: no recipient, CR/LF/NUL, overlong."""
    if not envelope.recipients:
        raise SpoolError("no recipients")
    if isinstance(envelope.recipients, str):
        raise SpoolError("recipients must be a sequence of addresses, not one string")
    _check_text("sender", envelope.sender)
    for recipient in envelope.recipients:
        _check_text("recipient", recipient)
        if not recipient:
            raise SpoolError("empty recipient address")
    _check_text("queue id", queue_id)
    _check_text("client", envelope.client)


def _check_text(what: str, value: object) -> None:
    if not isinstance(value, str):
        raise SpoolError(f"{what} must be text, not {type(value).__name__}")
    if _BAD_CHARS.search(value):
        raise SpoolError(f"{what} {value[:80]!r} contains CR, LF or NUL")
    if len(value) > MAX_ADDRESS:
        raise SpoolError(f"{what} longer than {MAX_ADDRESS} characters")


def new_id(now_ns: int | None = None) -> str:
    # os.urandom, not secrets: `lmsav enqueue` runs per message and must import little.
    ns = time.time_ns() if now_ns is None else now_ns
    return f"{ns:019d}.{os.getpid()}.{os.urandom(4).hex()}"


def entry_name(entry_id: str, rev: int, not_before: float) -> str:
    """The file name of revision ``rev`` of an entry (revision 0 is the bare id)."""
    if rev == 0 and not not_before:
        return entry_id
    millis = max(0, -int(-not_before * 1000 // 1))  # rounded up: never due before not_before
    return f"{entry_id},r{rev},t{millis}"


def _parse_name(name: str) -> tuple[str, int, float] | None:
    """(id, revision, not_before) of an entry file name; None for anything else."""
    m = NAME_RE.match(name)
    if not m:
        return None
    if m["rev"] is None:
        return m["id"], 0, 0.0
    return m["id"], int(m["rev"]), int(m["nb"]) / 1000


class Spool:
    """The spool directory ``root`` with its ``tmp/ new/ work/ hold/``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._dirs = {name: self.root / name for name in SUBDIRS}
        # id → file name in new/ from the last pending() scan, so claim() needs no listing.
        self._new_names: dict[str, str] = {}

    # -- setting up ------------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the root and its subdirectories (DIR_MODE) if missing; existing ones are kept."""
        try:
            created = _mkdir(self.root, parents=True)
            for name in SUBDIRS:
                created |= _mkdir(self._dirs[name])
            if created:
                _fsync_dir(self.root)
        except OSError as err:
            raise SpoolError(f"cannot create spool {self.root}: {_reason(err)}") from None

    # -- accepting -------------------------------------------------------------------------------

    def enqueue(self, envelope: Envelope, message: bytes | BinaryIO, queue_id: str = "") -> str:
        """Store a message durably and return its id; ``queue_id`` is the MTA's, for the logs.

        When this returns, the entry is complete in ``new/`` and on disk. On any failure it
        raises :class:`SpoolError` and leaves nothing in ``new/``. A file-like ``message`` is
        copied in chunks, so a large message is never held in memory.
        """
        incoming = self.incoming(envelope, queue_id)
        try:
            if isinstance(message, (bytes, bytearray, memoryview)):
                incoming.write(message)
            else:
                for chunk in iter(lambda: message.read(CHUNK), b""):
                    incoming.write(chunk)
        except BaseException as err:
            incoming.abort()
            if isinstance(err, SpoolError) or not isinstance(err, Exception):
                raise
            raise SpoolError(f"cannot read the message: {err}") from err
        return incoming.commit()

    def incoming(self, envelope: Envelope, queue_id: str = "") -> Incoming:
        """Start an entry whose message arrives piece by piece (the SMTP listener's DATA):
        ``write`` the bytes, then ``commit`` (durable in ``new/``) or ``abort``."""
        validate_envelope(envelope, queue_id)
        return Incoming(self, envelope, queue_id)

    # -- working ---------------------------------------------------------------------------------

    def pending(self, now: float | None = None) -> list[str]:
        """Ids in ``new/`` that are due (``not_before <= now``), oldest first.

        Reads one directory listing and no file: the retry time is part of the file name.
        Older revisions of an entry found next to a newer one (crash leftovers) are removed.
        """
        now = time.time() if now is None else now
        best = self._scan("new", remove_stale=True)
        self._new_names = {entry_id: name for entry_id, (name, _rev, _nb) in best.items()}
        due = [entry_id for entry_id, (_name, _rev, nb) in best.items() if nb <= now]
        due.sort()  # ids sort by arrival as plain strings: the nanoseconds are zero-padded
        return due

    def claim(self, entry_id: str) -> SpoolEntry | None:
        """Move an entry from ``new/`` to ``work/`` and return it; None if another worker got it.

        A damaged entry (its header unreadable) is moved to ``hold/`` and None is returned.
        """
        validate_id(entry_id)
        tried = set()
        name = self._new_names.pop(entry_id, entry_id)
        while name is not None:
            tried.add(name)
            source, target = self._dirs["new"] / name, self._dirs["work"] / name
            try:
                os.rename(source, target)
            except FileNotFoundError:
                # Gone (claimed by another worker), or a retried entry under a longer name.
                found = self._names_of(entry_id, "new")
                name = next((n for n, _rev in found if n not in tried), None)
                continue
            except OSError as err:
                raise SpoolError(f"cannot claim spool entry {entry_id}: {_reason(err)}") from None
            try:
                return self._read_entry(target)
            except SpoolError as err:
                self._hold_damaged(target, str(err))
                return None
        return None

    def message(self, entry: SpoolEntry) -> bytes:
        """The message bytes exactly as received."""
        try:
            fd = os.open(entry.path, _O_READ)
        except OSError as err:
            raise SpoolError(f"cannot read spool entry {entry.id}: {_reason(err)}") from None
        with open(fd, "rb") as fh:
            try:
                read_header(fh, entry.path)
                return fh.read()
            except OSError as err:
                raise SpoolError(f"cannot read spool entry {entry.id}: {_reason(err)}") from None

    def complete(self, entry: SpoolEntry) -> None:
        """Remove a finished entry from ``work/``; call only once its mail was reinjected."""
        self._own(entry, "work")
        try:
            os.unlink(entry.path)
        except FileNotFoundError:
            return  # already removed: nothing is left to lose
        except OSError as err:
            raise SpoolError(f"cannot remove spool entry {entry.id}: {_reason(err)}") from None
        try:
            _fsync_dir(self._dirs["work"])
        except OSError as err:
            raise SpoolError(f"cannot sync spool directory {self._dirs['work']}: "
                             f"{_reason(err)}") from None

    def retry(self, entry: SpoolEntry, reason: str, delay: float, max_attempts: int) -> bool:
        """Count a failed attempt: back to ``new/`` after ``delay`` seconds, or to ``hold/``.

        Returns True when the entry was held because it has now failed ``max_attempts`` times.
        """
        attempts = entry.attempts + 1
        if attempts >= max_attempts:
            self._rewrite(entry, "hold", attempts=attempts, not_before=0.0, reason=reason)
            return True
        not_before = time.time() + max(0.0, delay)
        self._rewrite(entry, "new", attempts=attempts, not_before=not_before, reason=reason)
        return False

    def hold(self, entry: SpoolEntry, reason: str) -> None:
        """Keep an entry in ``hold/`` with ``reason`` until the administrator acts."""
        self._rewrite(entry, "hold", attempts=entry.attempts, not_before=0.0, reason=reason)

    def recover(self) -> int:
        """Make the spool consistent after a crash; call once at watcher start, before workers.

        Removes stale duplicates (the highest revision of each id wins), moves everything in
        ``work/`` back to ``new/`` and removes ``tmp/`` files older than an hour. Returns how many
        entries came back from ``work/``.
        """
        try:
            self._remove_stale_tmp(time.time())
            self._remove_duplicates()
            moved = 0
            for name in os.listdir(self._dirs["work"]):
                if _parse_name(name) is None:
                    continue  # not ours: left alone for the administrator
                try:
                    os.rename(self._dirs["work"] / name, self._dirs["new"] / name)
                except FileNotFoundError:
                    continue
                moved += 1
            if moved:
                _fsync_dir(self._dirs["new"])
                _fsync_dir(self._dirs["work"])
        except OSError as err:
            raise SpoolError(f"cannot recover spool {self.root}: {_reason(err)}") from None
        self._new_names = {}
        return moved

    # -- administration --------------------------------------------------------------------------

    def held(self) -> list[SpoolEntry]:
        """Entries in ``hold/``, oldest first."""
        return [entry for state, entry in self.list() if state == "hold"]

    def get(self, entry_id: str) -> SpoolEntry:
        """The entry with this id, wherever it is (``new/``, ``work/`` or ``hold/``)."""
        return self._read_entry(self._locate(entry_id)[1])

    def release(self, entry_id: str) -> None:
        """Send a held entry back to ``new/`` for a fresh start: no attempts, no wait, no reason."""
        state, path = self._locate(entry_id)
        if state != "hold":
            raise SpoolError(f"spool entry {entry_id} is not held (it is in {state}/)")
        entry = self._read_entry(path, damaged_ok=False)
        self._rewrite(entry, "new", attempts=0, not_before=0.0, reason="")

    def delete(self, entry_id: str) -> None:
        """Remove an entry from ``hold/`` or ``new/``, with any duplicates there.

        An entry in ``work/`` is being processed and cannot be deleted.
        """
        validate_id(entry_id)
        removed = False
        try:
            for state in ("hold", "new"):
                names = self._names_of(entry_id, state, missing_ok=True)
                for name, _rev in names:
                    try:
                        os.unlink(self._dirs[state] / name)
                        removed = True
                    except FileNotFoundError:
                        continue  # claimed or deleted meanwhile
                if names:
                    _fsync_dir(self._dirs[state])
        except OSError as err:
            raise SpoolError(f"cannot delete spool entry {entry_id}: {_reason(err)}") from None
        if not removed:
            if self._names_of(entry_id, "work", missing_ok=True):
                raise SpoolError(f"spool entry {entry_id} is being processed; it cannot be "
                                 "deleted now")
            raise SpoolError(f"no spool entry {entry_id}")
        self._new_names.pop(entry_id, None)

    def list(self) -> list[tuple[str, SpoolEntry]]:
        """(state, entry) for every entry in ``new/``, ``work/`` and ``hold/``, oldest first.

        A damaged entry is listed too (empty envelope, the damage as reason), so an
        administrator can see and delete it. A spool not set up yet is an empty one.
        """
        best: dict[str, tuple[int, int, str, str]] = {}
        for priority, state in enumerate(("work", "new", "hold")):
            for entry_id, (name, rev, _nb) in self._scan(state, missing_ok=True).items():
                key = (rev, priority, state, name)
                if entry_id not in best or key > best[entry_id]:
                    best[entry_id] = key
        result = []
        for entry_id in sorted(best):
            _rev, _priority, state, name = best[entry_id]
            try:
                entry = self._read_entry(self._dirs[state] / name, damaged_ok=True)
            except SpoolError:
                continue  # moved away while we listed
            result.append((state, entry))
        return result

    # -- internals -------------------------------------------------------------------------------

    def _scan(self, state: str, remove_stale: bool = False,
              missing_ok: bool = False) -> dict[str, tuple[str, int, float]]:
        """id → (name, rev, not_before) of the highest revision of each entry in one directory."""
        names = self._listdir(state, missing_ok)
        best: dict[str, tuple[str, int, float]] = {}
        stale = []
        for name in names:
            parsed = _parse_name(name)
            if parsed is None:
                continue
            entry_id, rev, nb = parsed
            if entry_id not in best:
                best[entry_id] = (name, rev, nb)
            elif rev > best[entry_id][1]:
                stale.append(best[entry_id][0])
                best[entry_id] = (name, rev, nb)
            else:
                stale.append(name)
        if remove_stale:
            for name in stale:
                _unlink_quietly(self._dirs[state] / name)
        return best

    def _names_of(self, entry_id: str, state: str,
                  missing_ok: bool = False) -> list[tuple[str, int]]:
        """(name, rev) of every file of ``entry_id`` in one directory, highest revision first."""
        found = []
        for name in self._listdir(state, missing_ok):
            if name.startswith(entry_id):
                parsed = _parse_name(name)
                if parsed is not None and parsed[0] == entry_id:
                    found.append((name, parsed[1]))
        found.sort(key=lambda item: item[1], reverse=True)
        return found

    def _listdir(self, state: str, missing_ok: bool) -> list[str]:
        """The names in one directory. With ``missing_ok``, a directory not made yet (a spool
        nobody has set up, as a person's before their first ``lmsav enqueue``) holds nothing;
        the watcher, which made them, wants to hear that one has gone."""
        try:
            return os.listdir(self._dirs[state])
        except OSError as err:
            if missing_ok and isinstance(err, FileNotFoundError):
                return []
            raise SpoolError(f"cannot read spool directory {self._dirs[state]}: "
                             f"{_reason(err)}") from None

    def _locate(self, entry_id: str) -> tuple[str, Path]:
        """(state, path) of the highest revision of an entry; SpoolError if there is none."""
        validate_id(entry_id)
        best: tuple[int, int, str, str] | None = None
        for priority, state in enumerate(("work", "new", "hold")):
            for name, rev in self._names_of(entry_id, state, missing_ok=True):
                if best is None or (rev, priority) > best[:2]:
                    best = (rev, priority, state, name)
        if best is None:
            raise SpoolError(f"no spool entry {entry_id}")
        return best[2], self._dirs[best[2]] / best[3]

    def _own(self, entry: SpoolEntry, state: str) -> None:
        if entry.path.parent != self._dirs[state] or _parse_name(entry.path.name) is None:
            raise SpoolError(f"spool entry {entry.id} is not in {self._dirs[state]}")

    def _read_entry(self, path: Path, damaged_ok: bool = False) -> SpoolEntry:
        parsed = _parse_name(path.name)
        if parsed is None:
            raise SpoolError(f"{path}: not a spool entry name")
        try:
            fd = os.open(path, _O_READ)
        except OSError as err:
            raise SpoolError(f"cannot read spool entry {path.name}: {_reason(err)}") from None
        try:
            with open(fd, "rb") as fh:
                fields = read_header(fh, path)
            return entry_from(parsed[0], path, fields)
        except (SpoolError, OSError) as err:
            if not damaged_ok:
                if isinstance(err, OSError):
                    raise SpoolError(f"cannot read spool entry {path.name}: "
                                     f"{_reason(err)}") from None
                raise
            return SpoolEntry(parsed[0], path, Envelope("", (), 0.0), reason=f"damaged: {err}")

    def _rewrite(self, entry: SpoolEntry, target: str, *, attempts: int, not_before: float,
                 reason: str) -> Path:
        """Move ``entry`` to ``target`` with new metadata as revision + 1 (see module doc)."""
        parsed = _parse_name(entry.path.name)
        if parsed is None or entry.path.parent not in (self._dirs[s] for s in STATES):
            raise SpoolError(f"spool entry {entry.id} is not in {self.root}")
        _entry_id, rev, _nb = parsed
        name = entry_name(entry.id, rev + 1, not_before)
        reason = _one_line(reason)
        header = _header(entry.envelope, entry.queue_id, entry.envelope.arrived, attempts,
                         not_before, reason)
        tmp = self._dirs["tmp"] / f"{name}.{os.urandom(4).hex()}"
        final = self._dirs[target] / name
        try:
            src = os.open(entry.path, _O_READ)
            with open(src, "rb") as source:
                read_header(source, entry.path)
                fd = os.open(tmp, _O_CREATE, FILE_MODE)
                with open(fd, "wb") as fh:
                    os.fchmod(fd, FILE_MODE)
                    fh.write(header)
                    fh.writelines(iter(lambda: source.read(CHUNK), b""))
                    fh.flush()
                    os.fsync(fd)
            os.rename(tmp, final)
        except BaseException as err:
            _unlink_quietly(tmp)
            if isinstance(err, OSError):
                raise SpoolError(f"cannot move spool entry {entry.id} to {target}/: "
                                 f"{_reason(err)}") from None
            raise
        # From here the new revision is in place; the old one is a duplicate recover() removes
        # should any of the following fail.
        try:
            _fsync_dir(self._dirs[target])
            os.unlink(entry.path)
            _fsync_dir(entry.path.parent)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise SpoolError(f"cannot move spool entry {entry.id} to {target}/: "
                             f"{_reason(err)}") from None
        return final

    def _hold_damaged(self, path: Path, reason: str) -> None:
        """Move a file whose header cannot be read to ``hold/`` as it is, for the administrator."""
        try:
            os.rename(path, self._dirs["hold"] / path.name)
            _fsync_dir(self._dirs["hold"])
        except OSError as err:
            raise SpoolError(f"spool entry {path.name} is damaged ({reason}) and cannot be "
                             f"held: {_reason(err)}") from None

    def _remove_stale_tmp(self, now: float) -> None:
        tmp = self._dirs["tmp"]
        for name in os.listdir(tmp):
            try:
                if now - os.lstat(tmp / name).st_mtime > STALE_TMP_SECONDS:
                    os.unlink(tmp / name)
            except OSError:
                continue  # removed meanwhile, or not a file: nothing of ours to clean

    def _remove_duplicates(self) -> None:
        """Keep the highest revision of every id across new/, work/ and hold/; remove the rest."""
        files: dict[str, list[tuple[int, int, str, str]]] = {}
        for priority, state in enumerate(("work", "new", "hold")):
            for name in os.listdir(self._dirs[state]):
                parsed = _parse_name(name)
                if parsed is not None:
                    files.setdefault(parsed[0], []).append((parsed[1], priority, state, name))
        touched = set()
        for copies in files.values():
            if len(copies) < 2:
                continue
            copies.sort(reverse=True)
            for _rev, _priority, state, name in copies[1:]:
                _unlink_quietly(self._dirs[state] / name)
                touched.add(state)
        for state in touched:
            _fsync_dir(self._dirs[state])


class Incoming:
    """One entry being written in ``tmp/``; nothing of it is in ``new/`` until ``commit``.

    Every failure raises :class:`SpoolError` and removes the partial file, so a caller only has
    to refuse the message (the MTA keeps it)."""

    def __init__(self, spool: Spool, envelope: Envelope, queue_id: str):
        self.id = new_id()
        self.size = 0
        self._spool = spool
        self._tmp = spool._dirs["tmp"] / self.id
        arrived = envelope.arrived or time.time()
        try:
            fd = os.open(self._tmp, _O_CREATE, FILE_MODE)
        except OSError as err:
            raise SpoolError(f"cannot write to spool {spool.root}: {_reason(err)}") from None
        self._fh = open(fd, "wb", buffering=CHUNK)  # noqa: SIM115 - closed by commit or abort
        try:
            os.fchmod(fd, FILE_MODE)  # explicitly: the umask must not decide who reads mail
            self._fh.write(_header(envelope, queue_id, arrived, 0, 0.0, ""))
        except OSError as err:
            self._fail(err)

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as err:
            self._fail(err)
        self.size += len(data)

    def commit(self) -> str:
        """Flush, fsync, rename into ``new/`` and fsync that directory; returns the id. Only
        when this returns is the message accepted."""
        final = self._spool._dirs["new"] / self.id
        renamed = False
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            os.rename(self._tmp, final)
            renamed = True
            _fsync_dir(self._spool._dirs["new"])
        except BaseException as err:
            if renamed:
                # Not known to be durable, so not accepted: the MTA will hand it over again.
                _unlink_quietly(final)
            if isinstance(err, OSError):
                self._fail(err)
            self.abort()
            raise
        return self.id

    def abort(self) -> None:
        """Drop the partial entry (a refused or broken transfer)."""
        try:
            self._fh.close()
        except OSError:
            pass
        _unlink_quietly(self._tmp)

    def _fail(self, err: OSError):
        self.abort()
        raise SpoolError(f"cannot write to spool {self._spool.root}: {_reason(err)}") from None


# -- the entry file ------------------------------------------------------------------------------

def _header(envelope: Envelope, queue_id: str, arrived: float, attempts: int,
            not_before: float, reason: str) -> bytes:
    fields = {
        "sender": envelope.sender,
        "recipients": list(envelope.recipients),
        "queue_id": queue_id,
        "arrived": float(arrived),
        "attempts": int(attempts),
        "not_before": float(not_before),
        "reason": reason,
    }
    if envelope.client:
        fields["client"] = envelope.client  # the MTA's client, when the door was told it
    # ensure_ascii: the header is one ASCII line whatever the addresses hold.
    return MAGIC + json.dumps(fields, ensure_ascii=True).encode("ascii") + b"\n"


def read_header(fh: BinaryIO, path: Path) -> dict:
    """Read the header line and leave ``fh`` at the first byte of the message."""
    data = b""
    while True:
        chunk = fh.read(65536)
        if not chunk:
            raise SpoolError(f"{path}: damaged spool entry: no complete header line")
        start = len(data)
        data += chunk
        end = data.find(b"\n", max(0, start - 1))
        if end >= 0:
            break
        if len(data) > MAX_HEADER:
            raise SpoolError(f"{path}: damaged spool entry: header line too long")
    fh.seek(end + 1)
    line = data[:end]
    if not line.startswith(MAGIC):
        raise SpoolError(f"{path}: not a spool entry (no {MAGIC.decode().strip()} header)")
    try:
        fields = json.loads(line[len(MAGIC):])
    except (UnicodeDecodeError, ValueError) as err:
        raise SpoolError(f"{path}: damaged spool entry header: {err}") from None
    if not isinstance(fields, dict):
        raise SpoolError(f"{path}: damaged spool entry header: not an object")
    return fields


def entry_from(entry_id: str, path: Path, fields: dict) -> SpoolEntry:
    try:
        recipients = fields["recipients"]
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise TypeError("recipients")
        envelope = Envelope(
            sender=_typed(fields.get("sender", ""), str, "sender"),
            recipients=tuple(recipients),
            arrived=float(_typed(fields.get("arrived", 0.0), (int, float), "arrived")),
            client=_typed(fields.get("client", ""), str, "client"),
        )
        return SpoolEntry(
            id=entry_id,
            path=path,
            envelope=envelope,
            queue_id=_typed(fields.get("queue_id", ""), str, "queue_id"),
            attempts=_typed(fields.get("attempts", 0), int, "attempts"),
            not_before=float(_typed(fields.get("not_before", 0.0), (int, float), "not_before")),
            reason=_typed(fields.get("reason", ""), str, "reason"),
        )
    except (KeyError, TypeError) as err:
        raise SpoolError(f"{path}: damaged spool entry header: bad or missing {err}") from None


def _typed(value, types, name: str):
    if isinstance(value, bool) or not isinstance(value, types):
        raise TypeError(name)
    return value


# -- helpers -------------------------------------------------------------------------------------

def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _mkdir(path: Path, parents: bool = False) -> bool:
    """Create ``path`` with DIR_MODE; False if it already is a directory."""
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise NotADirectoryError(errno.ENOTDIR, "exists and is not a directory") from None
        return False
    except FileNotFoundError:
        if not parents:
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        return _mkdir(path)
    os.chmod(path, DIR_MODE)  # explicitly: the umask must not decide who reads mail
    _fsync_dir(path.parent)
    return True


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _reason(err: OSError) -> str:
    reason = err.strerror or str(err)
    if err.errno in (errno.EACCES, errno.EPERM):
        reason += " (`lmsav spool check` shows the owners and modes the spool needs)"
    return reason


QUEUE_STATES = ("new", "work", "hold")


def depth(spool_dir: Path | str) -> dict[str, int]:
    """Entries in new/, work/ and hold/; two revisions of one entry (a rewrite) count once.
    A directory that cannot be read counts 0 (``lmsav.status`` reports it separately)."""
    out = {}
    for state in QUEUE_STATES:
        try:
            names = os.listdir(Path(spool_dir) / state)
        except OSError:
            names = []
        out[state] = len({m.group("id") for m in map(NAME_RE.match, names) if m})
    return out
