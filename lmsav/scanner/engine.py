"""The engine: one loaded database, ``scan(ScanObject) -> Verdict``, limits through one Context.

Per object the work is, in this order: limits, sniff (once: handlers read ``obj.type``),
size-gated hashes, one Hyperscan pass, YARA if rules exist, and — for containers — the
handler's members, scanned recursively, each result carrying the member index its container's
rebuild knows it by (``Child.member`` → ``ObjectResult.member``, for cure.py).

A container with more members than ``max_files`` is marked with the limit, yet its further
members are still matched — without unpacking them — while the byte and time budgets last:
otherwise a threat placed after 10,000 decoys would pass as a mere limit error.
"""

from __future__ import annotations

import logging
import os

from . import filetype
from .containers import Corrupted, Encrypted, Unsupported, handler_for
from .limits import Context, LimitExceeded, Limits, running
from .objects import (
    ObjectResult,
    ScanObject,
    Status,
    Threat,
    Verdict,
    join_path,
    one_line,
)
from .signatures.database import Database
from .signatures.subject import Subject

log = logging.getLogger(__name__)

MAIL_TYPES = frozenset({"mail", "mbox"})


class Engine:
    """Scans objects against one database. One instance per process; not thread-safe."""

    def __init__(
        self,
        database: Database,
        limits: Limits = Limits(),
        scan_archives: bool = True,
        scan_mail: bool = True,
        tmp_root: str | None = None,
    ):
        self.db = database
        self.limits = limits
        self.scan_archives = scan_archives
        self.scan_mail = scan_mail
        self.tmp_root = tmp_root
        self._origin: str | None = None  # the file on disk behind the input being scanned

    # -- entry points ------------------------------------------------------------------------
    def scan(self, obj: ScanObject) -> Verdict:
        ctx = Context(self.limits, self.tmp_root)
        self._origin = obj.path  # YARA's ``owner`` of the input and of all its members
        try:
            with running(ctx):  # the normalisers check its clock too
                return Verdict(self._scan(obj, ctx))
        finally:
            ctx.cleanup()

    def scan_path(self, path: str | os.PathLike, name: str | None = None) -> Verdict:
        with ScanObject.from_path(path, name) as obj:
            return self.scan(obj)

    def scan_bytes(self, data: bytes, name: str = "stream") -> Verdict:
        return self.scan(ScanObject(name, data=data))

    # -- the recursive step ------------------------------------------------------------------
    def _scan(self, obj: ScanObject, ctx: Context, unpack: bool = True) -> ObjectResult:
        res = ObjectResult(obj.name, "", 0)
        try:
            size = obj.size
            res.size = size
            ctx.check_depth(obj.depth)
            ctx.check_file_size(size)
            if obj.depth == 0:
                ctx.account(size)
            data = obj.data
            # The one sniff of this object: handlers read obj.type and obj.offset.
            ftype, obj.offset = filetype.locate(data, size)
            obj.type = res.type = ftype
            found = self._match(obj, data, ftype, size)
            if found:
                res.status = Status.INFECTED
                res.threats = found
            handler = handler_for(ftype) if unpack else None
            if handler is not None and self._wants(ftype):
                self._explode(handler, obj, ctx, res)
        except LimitExceeded as err:
            self._limit(res, err, ctx, obj.depth)
        except OSError as err:
            res.status = max(res.status, Status.ERROR)
            res.reason = f"read error: {err.strerror or err}"
        return res

    def _wants(self, ftype: str) -> bool:
        return self.scan_mail if ftype in MAIL_TYPES else self.scan_archives

    def _match(self, obj: ScanObject, data, ftype: str, size: int) -> list[Threat]:
        db = self.db
        subject = Subject(data, size, ftype, db.clamav_type(data, ftype), obj.clamav_ancestry,
                          in_mail=not MAIL_TYPES.isdisjoint(obj.ancestry), name=obj.name,
                          member=obj.member, container_size=obj.container_size,
                          origin=self._origin)
        return self._threats(db.match(subject))

    @staticmethod
    def _threats(hits: list[tuple[str, str]]) -> list[Threat]:
        if not hits:
            return []
        seen, threats = set(), []
        for name, source in hits:
            if name not in seen:
                seen.add(name)
                threats.append(Threat(name, source))
        return threats

    def _explode(self, handler, obj: ScanObject, ctx: Context, res: ObjectResult) -> None:
        try:
            ctx.check_depth(obj.depth + 1)
        except LimitExceeded as err:
            self._limit(res, err, ctx, obj.depth)
            return
        count = 0
        past_limit = False
        # What members learn of this container: its type as ClamAV names it (for .cdb rules
        # and Container:/Intermediates: conditions), computed once for all of them.
        ancestry = obj.clamav_ancestry + (self.db.container_type(obj.data, obj.type),)
        try:
            for child in handler.explode(obj, ctx):
                if child.meta_only:
                    self._judge_meta(obj, child, ancestry, res)
                    continue
                if child.status is None and not past_limit:  # no data: no scan, no count
                    count += 1
                    try:
                        ctx.check_files(count)
                    except LimitExceeded as err:
                        self._limit(res, err, ctx, obj.depth)
                        past_limit = True
                if past_limit:
                    # Already read and charged to the byte budget: matching it is cheap,
                    # unpacking it is not. Clean members stay out of the result tree, which
                    # stays small however many follow.
                    found = self._guarded_child(obj, child, ctx, ancestry, unpack=False)
                    if found.status != Status.CLEAN:
                        found.member = child.member
                        res.children.append(found)
                else:
                    found = self._guarded_child(obj, child, ctx, ancestry)
                    found.member = child.member
                    res.children.append(found)
                ctx.check_time()
        except Encrypted as err:
            self._mark(res, Status.PROTECTED, f"encrypted{': ' + str(err) if str(err) else ''}")
        except Corrupted as err:
            self._mark(res, Status.CORRUPTED, f"corrupted: {err}" if str(err) else "corrupted")
        except Unsupported as err:
            self._mark(res, Status.ERROR, f"unsupported: {err}")
        except LimitExceeded as err:
            self._limit(res, err, ctx, obj.depth)
        except Exception as err:  # a handler bug must cost one object, never the whole scan
            log.exception("handler %s failed on %s", type(handler).__name__, obj.name)
            self._mark(res, Status.ERROR, f"internal error: {type(err).__name__}: {err}")

    def _guarded_child(self, parent: ScanObject, child, ctx: Context,
                       ancestry: tuple[str, ...], unpack: bool = True) -> ObjectResult:
        """One member; a bug met while scanning it costs that member, not its siblings."""
        try:
            return self._scan_child(parent, child, ctx, ancestry, unpack)
        except (LimitExceeded, Encrypted, Corrupted, Unsupported):
            raise
        except Exception as err:
            name = join_path(parent.name, child.name)
            log.exception("scanning %s failed", name)
            return ObjectResult(name, "", child.size or 0, Status.ERROR,
                                reason=f"internal error: {type(err).__name__}: {err}")

    def _scan_child(self, parent: ScanObject, child, ctx: Context,
                    ancestry: tuple[str, ...], unpack: bool = True) -> ObjectResult:
        name = join_path(parent.name, child.name)
        if child.status is not None:
            res = ObjectResult(name, "", child.size or 0, child.status, reason=child.reason)
            # An encrypted or damaged member still has metadata .cdb rules judge.
            found = self._meta_threats(parent, child, ancestry)
            if found:
                res.status, res.threats = Status.INFECTED, found
            return res
        if child.path is not None:
            sub = ScanObject(name, path=child.path, depth=parent.depth + 1, size=child.size)
        else:
            sub = ScanObject(name, data=child.data or b"", depth=parent.depth + 1)
        sub.ancestry = parent.ancestry + (parent.type,)
        sub.clamav_ancestry = ancestry
        sub.member = child.meta
        sub.container_size = parent.size
        try:
            return self._scan(sub, ctx, unpack)
        finally:
            sub.close()
            if child.path is not None:
                # Spilled members are deleted as soon as scanned, bounding temp disk use.
                try:
                    os.unlink(child.path)
                except OSError:
                    pass

    def _meta_threats(self, parent: ScanObject, child, ancestry) -> list[Threat]:
        if child.meta is None:
            return []
        subject = Subject(b"", 0, "", "CL_TYPE_ANY", ancestry, member=child.meta,
                          container_size=parent.size)
        return self._threats(self.db.match_member_meta(subject))

    def _judge_meta(self, parent: ScanObject, child, ancestry, res: ObjectResult) -> None:
        found = self._meta_threats(parent, child, ancestry)
        if found:
            res.children.append(ObjectResult(join_path(parent.name, child.name), "directory",
                                             0, Status.INFECTED, found, member=child.member))

    def _limit(self, res: ObjectResult, err: LimitExceeded, ctx: Context, depth: int) -> None:
        self._mark(res, ctx.limits.limit_status, err.reason)
        if err.whole_input and depth > 0:
            raise err  # time/total-size limits stop the whole input, not just this member

    @staticmethod
    def _mark(res: ObjectResult, status: Status, reason: str) -> None:
        res.status = max(status, res.status)
        if not res.reason:
            res.reason = one_line(reason)
