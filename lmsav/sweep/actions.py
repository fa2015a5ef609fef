"""What a sweep does to a detected file: report it, quarantine it, cure it or delete it.

Runs in the parent process on the reports the workers send back. Before touching anything it
looks again: the path must still be a regular file (not a link) and is scanned once more here;
if its inode, size, times or verdict differ from what was reported, the file changed since the
scan and is left alone. The verdict acted upon is always the one of the bytes acted upon.

Quarantine and delete copy the file durably into a store (``quarantine/``, ``backup/files/``)
before unlinking it. Cure is the engine's (``lmsav.scanner.cure``): a container is rebuilt
without the members that hold what gets an action and scanned again; only when that is clean
the file is replaced atomically (owner and mode kept), after keeping the original in the backup
store. What cannot be cured — a plain infected file, a format without a rebuilder — gets the
uncurable action instead.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import __version__
from ..durable import fsync_dir
from ..hostname import host_name
from ..quarantine.store import FileStore, StoreError, file_facts, replace_file
from ..scanner.engine import Engine
from ..scanner.objects import Status, Verdict

log = logging.getLogger(__name__)

_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC | os.O_NOCTTY
_PAST = {"quarantine": "quarantined", "cure": "cured", "delete": "deleted"}


class Changed(Exception):
    """The file is no longer what was scanned: do not act on it."""


class Refused(Exception):
    """The path is not something lmsav acts on (a link, a device)."""


@dataclass(frozen=True)
class ActionPolicy:
    """Which action each status gets ([scan] action, <status>_action, uncurable_action)."""

    action: str = "report"
    per_status: Mapping[Status, str] = field(default_factory=dict)  # "" means ``action``
    uncurable: str = "quarantine"
    backup: bool = True
    # PROTECTED and CORRUPTED get their action only when they count as found.
    found: frozenset[Status] = frozenset({Status.INFECTED, Status.SUSPICIOUS})

    @classmethod
    def from_settings(cls, scan) -> ActionPolicy:
        found = {Status.INFECTED, Status.SUSPICIOUS}
        if scan.detect_protected:
            found.add(Status.PROTECTED)
        if scan.detect_corrupted:
            found.add(Status.CORRUPTED)
        return cls(scan.action, {
            Status.INFECTED: scan.infected_action,
            Status.SUSPICIOUS: scan.suspicious_action,
            Status.PROTECTED: scan.protected_action,
            Status.CORRUPTED: scan.corrupted_action,
            Status.ERROR: scan.error_action,
        }, scan.uncurable_action, scan.backup, frozenset(found))

    def action_for(self, status: Status) -> str:
        if status == Status.CLEAN:
            return "report"
        if status in (Status.PROTECTED, Status.CORRUPTED) and status not in self.found:
            return "report"
        return self.per_status.get(status) or self.action

    @property
    def active(self) -> bool:
        """Whether any status gets more than a report."""
        return any(self.action_for(s) != "report" for s in Status)


@dataclass
class ActionResult:
    """What was asked for one input and what was done, for the output and the report file."""

    path: str
    status: Status
    threats: list[str]
    requested: str
    done: str  # what happened to the file: report (left in place), quarantine, cure, delete
    ok: bool
    message: str = ""  # printed after "PATH: "; empty for a plain report
    error: str = ""
    quarantine_id: str = ""
    backup_id: str = ""
    time: float = field(default_factory=time.time)

    def to_json(self) -> dict:
        out = {"requested": self.requested, "done": self.done,
               "result": "ok" if self.ok else "error"}
        if self.message:
            out["message"] = self.message
        if self.error:
            out["error"] = self.error
        if self.quarantine_id:
            out["quarantine_id"] = self.quarantine_id
        if self.backup_id:
            out["backup_id"] = self.backup_id
        return out

    def record(self) -> dict:
        """One line of the JSONL report file."""
        return {"time": iso_time(self.time), "path": self.path, "status": self.status.label,
                "threats": self.threats, **self.to_json()}


@dataclass
class _Look:
    """The file as looked at again just before acting."""

    st: os.stat_result
    verdict: Verdict


class ActionRunner:
    """Applies an ActionPolicy to reports; one per sweep, in the process that prints."""

    def __init__(self, engine: Engine, policy: ActionPolicy, quarantine: FileStore,
                 backup: FileStore, database_version: str = "",
                 keep_out: tuple[str, ...] = (), hostname: str = ""):
        self.engine = engine
        self.policy = policy
        self.quarantine = quarantine
        self.backup = backup
        self.database_version = database_version
        # Never act inside lmsav's own stores: a sweep of / would otherwise move them around.
        self.keep_out = tuple(os.path.realpath(p) for p in (quarantine.root, backup.root,
                                                            *keep_out))
        self.hostname = host_name(hostname)

    # -- entry point -----------------------------------------------------------------------------

    def apply(self, report, scanned: os.stat_result | None = None) -> ActionResult | None:
        """Act on one FileReport (None for clean and skipped inputs). ``scanned`` is the file's
        stat from just before it was scanned, when the caller has it (watch mode)."""
        if report.skipped or report.status == Status.CLEAN:
            return None
        threats = sorted({n for _, _, names, _ in report.findings for n in names})
        requested = self.policy.action_for(report.status)
        result = ActionResult(report.path, report.status, threats, requested, "report", True)
        if requested == "report":
            return result
        own = self._own_store(report.path)
        if own:
            # Scanning / finds what lmsav itself keeps; that is where it belongs, no error.
            result.message = f"left in place: inside lmsav's own store {own}"
            return result
        try:
            look = self._look_again(report, scanned)
            if requested == "cure":
                self._cure(report.path, look, result)
            else:
                self._remove(report.path, look, result, requested, requested)
        except Refused as why:
            result.ok, result.error = False, str(why)
            result.message = f"not {_PAST[requested]}: {why}"
        except Changed as why:
            result.ok, result.error = False, str(why)
            result.message = f"not {_PAST[requested]}: {why}"
        except (StoreError, OSError) as err:
            result.ok, result.error = False, _text(err)
            result.message = f"{requested} failed: {result.error}"
        except Exception as err:  # a bug must cost this file its action, not the whole sweep
            log.exception("%s: %s failed", report.path, requested)
            result.ok, result.error = False, f"{err.__class__.__name__}: {err}"
            result.message = f"{requested} failed: {result.error}"
        return result

    def apply_nothing(self, report) -> ActionResult | None:
        """The result for an input there is nothing on disk to act on (standard input)."""
        if report.skipped or report.status == Status.CLEAN:
            return None
        threats = sorted({n for _, _, names, _ in report.findings for n in names})
        return ActionResult(report.path, report.status, threats, "report", "report", True)

    # -- looking again ---------------------------------------------------------------------------

    def _own_store(self, path: str) -> str:
        real = os.path.realpath(path)
        for root in self.keep_out:
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return root
        return ""

    def _look_again(self, report, scanned: os.stat_result | None) -> _Look:
        st = _lstat(report.path)
        if scanned is not None and not _same(scanned, st):
            raise Changed("changed since scan")
        if report.status != Status.ERROR and st.st_size != report.size:
            raise Changed("changed since scan")
        verdict = self.engine.scan_path(report.path)
        if not _same(st, _lstat(report.path)):
            raise Changed("changed since scan")
        names = sorted({t.name for _, t in verdict.threats})
        reported = sorted({n for _, _, ns, _ in report.findings for n in ns})
        if verdict.status != report.status or names != reported:
            raise Changed("changed since scan")
        return _Look(st, verdict)

    def _check_unchanged(self, path: str, st: os.stat_result) -> None:
        if not _same(st, _lstat(path)):
            raise Changed("changed since scan")

    def _open(self, path: str, st: os.stat_result) -> int:
        fd = os.open(path, _O_READ)
        if not _same(st, os.fstat(fd)):
            os.close(fd)
            raise Changed("changed since scan")
        return fd

    # -- quarantine and delete -------------------------------------------------------------------

    def _remove(self, path: str, look: _Look, result: ActionResult, what: str,
                requested: str, why: str = "") -> None:
        """Quarantine (``what`` = quarantine) or delete the file, keeping a copy first unless
        deleting without backup."""
        store = self.quarantine if what == "quarantine" else self.backup
        entry = ""
        if what == "quarantine" or self.policy.backup:
            fd = self._open(path, look.st)
            try:
                entry = store.put(fd, self._record(path, look, what, requested, why))
            finally:
                os.close(fd)
        try:
            if entry and store.info(entry).get("size") != look.st.st_size:
                raise Changed("changed since scan")
            self._check_unchanged(path, look.st)
            os.unlink(path)
        except BaseException:
            if entry:
                _forget(store, entry)
            raise
        fsync_dir(os.path.dirname(os.path.abspath(path)) or ".")
        result.done = what
        if what == "quarantine":
            result.quarantine_id = entry
            done = f"moved to quarantine as {entry}"
        else:
            result.backup_id = entry
            done = "deleted" + (f", original kept in backup as {entry}" if entry else "")
        result.message = f"not curable ({why}); {done}" if why else done

    # -- cure ------------------------------------------------------------------------------------

    def _cure(self, path: str, look: _Look, result: ActionResult) -> None:
        # Here: report-only sweeps never load the rebuilders.
        from ..scanner.cure import Uncurable, cure

        fd = self._open(path, look.st)
        try:
            data = _read_all(fd, look.st.st_size)
        finally:
            os.close(fd)
        try:
            cured = cure(self.engine, data, look.verdict.root, bad=self._bad)
        except Uncurable as why:
            return self._uncurable(path, look, result, str(why))
        entry = ""
        if self.policy.backup:
            entry = self.backup.put(data, self._record(path, look, "cure", "cure"))
        try:
            replace_file(path, cured, look.st, lambda: self._check_unchanged(path, look.st))
        except BaseException:
            if entry:
                _forget(self.backup, entry)
            raise
        result.done, result.backup_id = "cure", entry
        result.message = "cured" + (f", original kept in backup as {entry}" if entry else "")

    def _uncurable(self, path: str, look: _Look, result: ActionResult, why: str) -> None:
        fallback = self.policy.uncurable
        if fallback == "report":
            result.message = f"not curable ({why}); left in place"
            return
        self._remove(path, look, result, fallback, "cure", why)

    def _bad(self, status: Status) -> bool:
        """What cure removes: whatever gets more than a report."""
        return self.policy.action_for(status) != "report"

    # -- what a store keeps ----------------------------------------------------------------------

    def _record(self, path: str, look: _Look, action: str, requested: str, why: str = "") -> dict:
        verdict = look.verdict
        return {
            **file_facts(path, look.st),
            "action": action,
            "requested": requested,
            "uncurable_reason": why,
            "status": verdict.status.label,
            "threats": sorted({t.name for _, t in verdict.threats}),
            "findings": [{"path": r.path, "status": r.status.label,
                          "threats": [t.name for t in r.threats], "reason": r.reason}
                         for r in verdict.findings()],
            "verdict": verdict.to_json(),
            "time": time.time(),
            "database_version": self.database_version,
            "engine_version": __version__,
            "hostname": self.hostname,
        }


# -- helpers ---------------------------------------------------------------------------------

def _lstat(path: str) -> os.stat_result:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Changed("changed since scan: no longer there") from None
    if stat.S_ISLNK(st.st_mode):
        raise Refused("a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise Refused("not a regular file")
    return st


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_size, a.st_mtime_ns, a.st_ctime_ns) == \
        (b.st_dev, b.st_ino, b.st_size, b.st_mtime_ns, b.st_ctime_ns) and stat.S_ISREG(b.st_mode)


def _read_all(fd: int, size: int) -> bytes:
    chunks, offset = [], 0
    while chunk := os.pread(fd, max(size - offset, 1 << 16), offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _forget(store: FileStore, entry: str) -> None:
    """Undo a copy kept for an action that did not happen (the original is still in place)."""
    try:
        store.delete(entry)
    except StoreError:
        pass


def iso_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _text(err: Exception) -> str:
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    return str(err)

