"""The administrator's operations on spool entries (`lmsav ctl queue`), safe beside a watcher.

Built on lmsav.spool.nqueue and its rules: an entry always exists somewhere, and a move that
must be atomic is one rename. Two more rules keep a running watcher out of the way:

- An entry in ``new/`` is taken away from the watcher by one rename into ``hold/`` under the
  same name. Of that rename and a worker's claim (``new/`` → ``work/``) exactly one succeeds;
  whatever is rewritten afterwards is rewritten in ``hold/``, which the watcher never reads.
- An entry in ``work/`` belongs to a worker while any process holds ``<spool>/watch.lock``
  (the watcher, or the workers of one that was killed: they inherit the lock). It is touched
  only while this module holds a shared lock on that file itself, which also keeps a watcher
  from starting (and recovering ``work/``) meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from ..durable import fsync_dir
from .nqueue import NAME_RE, STATES, Spool, SpoolEntry, SpoolError, validate_id

LOCK_NAME = "watch.lock"  # lmsav.spool.watcher.LOCK_NAME (not imported: it loads the mail path)
HELD_REASON = "held by the administrator"


def entry_record(state: str, entry: SpoolEntry) -> dict:
    """One entry as `--json` shows it (the fields of `lmsav spool list --json`)."""
    env = entry.envelope
    return {
        "id": entry.id,
        "state": state,
        "sender": env.sender,
        "recipients": list(env.recipients),
        "queue_id": entry.queue_id,
        "arrived": env.arrived,
        "attempts": entry.attempts,
        "not_before": entry.not_before,
        "reason": entry.reason,
    }


class QueueOps:
    """hold, release, requeue and delete by entry id; each raises SpoolError with one line."""

    def __init__(self, spool: Spool):
        self.spool = spool
        self.root = spool.root

    # -- the operations --------------------------------------------------------------------------

    def hold(self, entry_id: str, reason: str | None = None) -> str:
        """Keep an entry in ``hold/`` until it is released; returns what was done. An entry
        already held keeps its reason (why it failed) unless another ``reason`` is given."""
        state = self.locate(entry_id)[0]
        if state == "hold":
            held = self._held_entry(entry_id)
            if held is None or reason is None or held.reason == reason:
                return "already held"
            self.spool.hold(held, reason)  # hold/ is the administrator's: no watcher reads it
            return "already held; reason changed"
        with self._taken(entry_id) as taken:
            entry = self._held_entry(entry_id)
            if entry is None:
                return f"held from {taken}/ (damaged: its metadata was kept as it is)"
            self.spool.hold(entry, reason or HELD_REASON)
        return f"held from {taken}/"

    def release(self, entry_id: str) -> str:
        """Send a held entry back to ``new/``: attempts, retry time and reason reset."""
        self.spool.release(entry_id)
        return "released"

    def requeue(self, entry_id: str) -> str:
        """Back to ``new/`` and due now, attempts reset, from ``hold/``, ``work/`` (no watcher
        running) or ``new/`` (an entry waiting for its retry time)."""
        state = self.locate(entry_id)[0]
        if state == "hold":
            self.spool.release(entry_id)
            return "requeued from hold/"
        with self._taken(entry_id) as taken:
            self.spool.release(entry_id)
        return f"requeued from {taken}/"

    def delete(self, entry_id: str) -> str:
        """Remove an entry for good: its mail is not delivered."""
        from .watcher import DeliveredStore

        state = self.locate(entry_id)[0]
        if state == "work":
            with self._taken(entry_id):
                self.spool.delete(entry_id)
        else:
            self.spool.delete(entry_id)
        DeliveredStore(self.root).discard(entry_id)
        return f"deleted from {state}/"

    # -- where an entry is -----------------------------------------------------------------------

    def locate(self, entry_id: str) -> tuple[str, str]:
        """(state, file name) of the newest revision of an entry."""
        validate_id(entry_id)
        best: tuple[int, int, str, str] | None = None
        # Equal revisions in two places only a crash leaves; then work/ wins: refusing to
        # touch an entry a worker may hold is the safe side.
        for priority, state in enumerate(("hold", "new", "work")):
            try:
                names = os.listdir(self.root / state)
            except FileNotFoundError:
                continue
            except OSError as err:
                raise SpoolError(f"cannot read spool directory {self.root / state}: "
                                 f"{err.strerror}") from None
            for name in names:
                match = NAME_RE.match(name)
                if match and match["id"] == entry_id:
                    key = (int(match["rev"] or 0), priority, state, name)
                    best = key if best is None or key > best else best
        if best is None:
            raise SpoolError(f"no spool entry {entry_id}")
        return best[2], best[3]

    # -- internals -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _taken(self, entry_id: str) -> Iterator[str]:
        """Move the entry from ``new/`` or ``work/`` into ``hold/`` by one rename and yield the
        state it came from; the block then works on it in ``hold/``."""
        state, name = self.locate(entry_id)
        if state == "hold":
            yield state
            return
        if state == "new":
            self._rename_to_hold(entry_id, state, name)
            yield state
            return
        with self._no_watcher(entry_id):
            state, name = self.locate(entry_id)  # recovered meanwhile by a watcher that ended
            if state != "hold":
                self._rename_to_hold(entry_id, state, name)
            yield state

    def _rename_to_hold(self, entry_id: str, state: str, name: str) -> None:
        try:
            os.rename(self.root / state / name, self.root / "hold" / name)
        except FileNotFoundError:
            now = self.locate(entry_id)[0]
            if now == "work":
                raise SpoolError(f"spool entry {entry_id} was just claimed by the spool "
                                 "watcher and is being processed; left alone") from None
            raise SpoolError(f"spool entry {entry_id} moved to {now}/ meanwhile; "
                             "try again") from None
        except OSError as err:
            raise SpoolError(f"cannot move spool entry {entry_id} to hold/: "
                             f"{err.strerror}") from None
        try:
            fsync_dir(self.root / "hold")
            fsync_dir(self.root / state)
        except OSError as err:
            raise SpoolError(f"cannot sync the spool directories of {entry_id}: "
                             f"{err.strerror}") from None

    @contextlib.contextmanager
    def _no_watcher(self, entry_id: str) -> Iterator[None]:
        """Hold a shared lock on the watch lock for the block; refuse when a watcher (or the
        workers of one) holds it: then a worker may be processing the entry."""
        path = self.root / LOCK_NAME
        fd = self._open_lock(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise SpoolError(f"{path}: {err.strerror}") from None
                raise SpoolError(f"spool entry {entry_id} is in work/ and a spool watcher "
                                 f"holds {path}: it is being processed; left alone") from None
            yield
        finally:
            os.close(fd)

    def _open_lock(self, path: Path) -> int:
        """The watch lock, created as the watcher creates it when no watcher has run yet (and
        given to the spool's owner, so that a watcher running as that user can open it)."""
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise SpoolError(f"{path}: {err.strerror}") from None
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
            if os.geteuid() == 0:
                st = os.stat(self.root)
                os.fchown(fd, st.st_uid, st.st_gid)
        except OSError as err:
            raise SpoolError(f"{path}: {err.strerror}") from None
        return fd

    def _held_entry(self, entry_id: str) -> SpoolEntry | None:
        """The entry now in ``hold/``; None when its header is damaged."""
        try:
            return self.spool.get(entry_id)
        except SpoolError:
            return None


def list_entries(spool: Spool, states: tuple[str, ...] = STATES) -> list[tuple[str, SpoolEntry]]:
    """(state, entry) for every entry in ``states``, oldest first."""
    return [(state, entry) for state, entry in spool.list() if state in states]


__all__ = ["HELD_REASON", "QueueOps", "entry_record", "list_entries"]
