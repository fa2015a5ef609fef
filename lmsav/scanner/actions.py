"""What a sweep does to a detected file: report it, quarantine it, cure it or delete it.

Runs in the parent process on the reports the workers send back. Before touching anything it
looks again: the path must still be a regular file (not a link) and is scanned once more here;
if its inode, size, times or verdict differ from what was reported, the file changed since the
scan and is left alone. The verdict acted upon is always the one of the bytes acted upon.

Quarantine and delete copy the file durably into a store (``quarantine/``, ``backup/files/``)
before unlinking it. Cure rebuilds a zip, a tar (also inside gzip, bzip2, xz, lzma or zstd) or a
mail file without what was found — a mail part becomes a short text naming the threat — scans
the result, and only when that is clean replaces the file atomically (owner and mode kept),
after keeping the original in the backup store. Anything it cannot cure gets the uncurable
action instead.
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import logging
import lzma
import os
import socket
import stat
import time
from dataclasses import dataclass, field
from typing import Mapping

from .. import __version__
from ..durable import fsync_dir
from ..quarantine.store import FileStore, StoreError, file_facts, replace_file
from .engine import Engine
from .objects import PATH_SEP, ObjectResult, Status, Verdict

log = logging.getLogger(__name__)

ARCHIVES = frozenset({"zip", "tar"})
COMPRESSORS = frozenset({"gzip", "bzip2", "xz", "lzma", "zstd"})

_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC | os.O_NOCTTY
_PAST = {"quarantine": "quarantined", "cure": "cured", "delete": "deleted"}


class Changed(Exception):
    """The file is no longer what was scanned: do not act on it."""


class Refused(Exception):
    """The path is not something lmsav acts on (a link, a device)."""


class Uncurable(Exception):
    """Cure cannot remove the threat; the message says why."""


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
    def from_settings(cls, scan) -> "ActionPolicy":
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
        return {"time": _iso(self.time), "path": self.path, "status": self.status.label,
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
                 keep_out: tuple[str, ...] = ()):
        self.engine = engine
        self.policy = policy
        self.quarantine = quarantine
        self.backup = backup
        self.database_version = database_version
        # Never act inside lmsav's own stores: a sweep of / would otherwise move them around.
        self.keep_out = tuple(os.path.realpath(p) for p in (quarantine.root, backup.root,
                                                            *keep_out))
        self.hostname = socket.gethostname()

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
        try:
            fd = self._open(path, look.st)
            try:
                data = _read_all(fd, look.st.st_size)
            finally:
                os.close(fd)
            cured = self.cure_bytes(data, look.verdict.root)
            after = self.engine.scan_bytes(cured, path)
            if self.policy.action_for(after.status) != "report":
                names = ", ".join(sorted({t.name for _, t in after.threats}))
                raise Uncurable(f"still {after.status.label} after the cure"
                                + (f": {names}" if names else ""))
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

    def cure_bytes(self, data: bytes, node: ObjectResult) -> bytes:
        """``data`` (the object ``node`` describes) without whatever gets an action."""
        from .containers import rebuild  # here: report-only sweeps never need the mail code

        bad = [c for c in node.children if any(self._bad(r.status) for r in c.walk())]
        if not bad:
            if self._bad(node.status):
                raise Uncurable(_whole(node))
            return data
        if node.type in ARCHIVES:
            try:
                return rebuild.rebuild_archive(data, {_member(node, c) for c in bad})
            except rebuild.RebuildError as err:
                raise Uncurable(str(err)) from None
        if node.type in COMPRESSORS and len(node.children) == 1:
            inner = _decompress(node.type, data, self.engine.limits.max_scan_size)
            return _compress(node.type, self.cure_bytes(inner, node.children[0]), data)
        if node.type == "mail":
            return self._cure_mail(data, node, bad)
        raise Uncurable(f"{node.type or 'such'} files cannot be rebuilt")

    def _cure_mail(self, data: bytes, node: ObjectResult, bad: list[ObjectResult]) -> bytes:
        """Each part holding a threat becomes a short text naming it; an attached archive or
        message with a threat inside is cured in turn when it can be, replaced otherwise."""
        from .containers import rebuild

        by_leaf: dict[int, list[ObjectResult]] = {}
        for child in bad:
            index = _leaf_index(_member(node, child))
            if index is None:
                raise Uncurable(f"cannot tell which part of the message holds {child.path}")
            by_leaf.setdefault(index, []).append(child)
        try:
            leaves = {leaf.index: leaf for leaf in rebuild.mail_leaves(data)}
            edits: dict[int, bytes | None] = {}
            texts: dict[int, str] = {}
            for index, children in sorted(by_leaf.items()):
                if index not in leaves:
                    raise Uncurable(f"the message has no part {index}")
                child = children[0]
                inside = len(children) == 1 and "." not in _member(node, child).split(":")[0]
                if inside and not self._bad(child.status) and child.children:
                    try:
                        edits[index] = self.cure_bytes(leaves[index].decoded(), child)
                        continue
                    except Uncurable:
                        pass
                texts[index] = _part_notice(children)
            out = rebuild.rebuild_mail(data, edits) if edits else data
            for index, text in texts.items():
                out = rebuild.replace_with_text(out, index, text)
            return out
        except rebuild.RebuildError as err:
            raise Uncurable(str(err)) from None

    def _bad(self, status: Status) -> bool:
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


# -- the report file -------------------------------------------------------------------------

class ReportFile:
    """``--report FILE``: one line per input something was found in, appended as it happens."""

    FORMATS = ("text", "jsonl")

    def __init__(self, path: str, fmt: str | None = None):
        self.format = fmt or ("jsonl" if path.endswith((".jsonl", ".json", ".ndjson"))
                              else "text")
        self._fh = open(path, "a", encoding="utf-8", errors="surrogateescape", buffering=1)

    def write(self, result: ActionResult) -> None:
        if self.format == "jsonl":
            line = json.dumps(result.record(), ensure_ascii=False)
        else:
            line = text_line(result)
        self._fh.write(line + "\n")

    def close(self) -> None:
        self._fh.close()


def text_line(result: ActionResult) -> str:
    threats = f" ({', '.join(result.threats)})" if result.threats else ""
    what = result.message or ("reported" if result.done == "report" else result.done)
    ids = "".join(f" {k}={v}" for k, v in (("quarantine_id", result.quarantine_id),
                                            ("backup_id", result.backup_id)) if v)
    error = f" error={json.dumps(result.error)}" if result.error else ""
    path = result.path.replace("\\", "\\\\").replace("\n", "\\n")
    return (f"{_iso(result.time)} {path}: {result.status.label}{threats}; "
            f"requested={result.requested} done={result.done} "
            f"result={'ok' if result.ok else 'error'}{ids}{error}; {what}")


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


def _member(node: ObjectResult, child: ObjectResult) -> str:
    prefix = node.path + PATH_SEP
    return child.path[len(prefix):] if child.path.startswith(prefix) else child.path


def _leaf_index(name: str) -> int | None:
    """A mail child's part number: "2:a.zip" → 2, "3.1:x.exe" (uuencoded in part 3) → 3."""
    head = name.split(":", 1)[0].split(".", 1)[0]
    return int(head) if head.isdigit() and ":" in name else None


def _whole(node: ObjectResult) -> str:
    if node.threats:
        return "the whole file is the threat"
    if node.status == Status.PROTECTED:
        return f"the file is encrypted ({node.reason})" if node.reason else "the file is encrypted"
    return f"the file itself is {node.status.label}" + (f" ({node.reason})" if node.reason else "")


def _part_notice(found: list[ObjectResult]) -> str:
    lines = ["This part of the message was removed by lmsav, the anti-virus:", ""]
    for res in found:
        for r in res.walk():
            if r.status == Status.CLEAN:
                continue
            names = ", ".join(t.name for t in r.threats)
            lines.append(f"  {r.path.rsplit(PATH_SEP, 1)[-1]}: {r.status.label}"
                         + (f" ({names})" if names else f" ({r.reason})" if r.reason else ""))
    return "\n".join(lines) + "\n"


def _decompress(ftype: str, data: bytes, limit: int) -> bytes:
    src = io.BytesIO(data)
    try:
        if ftype == "gzip":
            reader = gzip.GzipFile(fileobj=src)
        elif ftype == "bzip2":
            reader = bz2.BZ2File(src)
        elif ftype in ("xz", "lzma"):
            reader = lzma.LZMAFile(src, format=lzma.FORMAT_XZ if ftype == "xz"
                                   else lzma.FORMAT_ALONE)
        else:
            import zstandard

            reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        out, total = [], 0
        while chunk := reader.read(1 << 20):
            total += len(chunk)
            if limit and total > limit:
                raise Uncurable(f"the {ftype} member is larger than max_scan_size")
            out.append(chunk)
        return b"".join(out)
    except Uncurable:
        raise
    except Exception as err:  # damaged streams raise whatever their library raises
        raise Uncurable(f"cannot decompress the {ftype} stream: {err}") from None


def _compress(ftype: str, data: bytes, original: bytes) -> bytes:
    if ftype == "gzip":
        name, mtime = _gzip_header(original)
        buf = io.BytesIO()
        with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=mtime) as gz:
            gz.write(data)
        return buf.getvalue()
    if ftype == "bzip2":
        return bz2.compress(data)
    if ftype in ("xz", "lzma"):
        return lzma.compress(data, format=lzma.FORMAT_XZ if ftype == "xz" else lzma.FORMAT_ALONE)
    import zstandard

    return zstandard.ZstdCompressor().compress(data)


def _gzip_header(data: bytes) -> tuple[str, int]:
    """The original gzip header's file name (FNAME) and time, so the cured file keeps them."""
    flags, mtime = data[3], int.from_bytes(data[4:8], "little")
    pos = 10
    if flags & 4:  # FEXTRA
        pos += 2 + int.from_bytes(data[10:12], "little")
    name = ""
    if flags & 8:  # FNAME, zero-terminated Latin-1
        end = data.find(b"\0", pos)
        if end > pos:
            name = data[pos:end].decode("latin-1")
    return name, mtime


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _text(err: Exception) -> str:
    if isinstance(err, OSError):
        return f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    return str(err)

