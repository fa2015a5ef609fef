"""The scan service inside a daemon worker: a scan job in, clamd's reply lines out.

One ``ScanService`` per worker process, with one Engine over the database the worker was forked
with, and the mail service for LMSAVMAIL. The parent decides nothing here: it sends jobs and
writes the lines it gets back. Each result also says what the parent counts (metrics) and
records (statistics): the verdicts by status, the bytes and threats scanned, the time taken,
and the statistics events the worker's own store had to drop.
"""

from __future__ import annotations

import logging
import os
import stat
import time

from ..mail import transfer
from ..sweep.walk import regular_files
from . import protocol as proto

log = logging.getLogger("lmsav.daemon")


MAX_THREATS = 100  # names one result carries back, for the statistics event


def empty_result(total: int = 0) -> dict:
    return {"lines": [], "infected": 0, "errors": 0, "total": total, "verdicts": {},
            "size": 0, "threats": []}


def count_verdict(res: dict, status: str, size: int = 0, threats=()) -> None:
    """One verdict into ``res``: its status (the engine's), the bytes scanned, new threats."""
    res["verdicts"][status] = res["verdicts"].get(status, 0) + 1
    res["size"] += size
    for name in threats:
        if name not in res["threats"] and len(res["threats"]) < MAX_THREATS:
            res["threats"].append(name)


def _threat_names(verdict) -> list[str]:
    return [threat.name for _where, threat in verdict.threats]


def finish(path: str, res: dict) -> dict:
    """clamd's closing line of a whole target: "path: OK" when nothing was found and not
    everything failed."""
    if not res["infected"] and res["errors"] != res["total"]:
        res["lines"].append(proto.ok(path))
    return res


class ScanService:
    """Turns scan jobs into clamd reply lines with one Engine (one per worker process)."""

    def __init__(self, engine, heuristic_names: bool, follow_symlinks: bool, mail=None):
        self.engine = engine
        self.heuristic_names = heuristic_names
        self.follow_symlinks = follow_symlinks
        self.mail = mail  # lmsav.mail.service.MailService, for LMSAVMAIL
        self._dropped_seen = 0
        self._jobs = {"mail": lambda job, fds: self.mail_job(fds),
                      "path": lambda job, fds: self.scan_target(job["path"], job["mode"]),
                      "files": lambda job, fds: self.scan_files(job["paths"],
                                                                job["mode"] == "allmatch"),
                      "fd": lambda job, fds: self.scan_fd(fds[0] if fds else -1, job["name"])}

    # -- the worker pool's side ------------------------------------------------------------
    def run_job(self, job: dict, fds: list[int]) -> dict:
        """One job; a bug costs this request an ERROR line, never the worker."""
        started = time.monotonic()
        try:
            run = self._jobs.get(job.get("kind"))
            if run is None:
                raise ValueError(f"unknown job kind {job.get('kind')!r}")
            res = run(job, fds)
        except Exception as err:
            log.exception("scan job failed")
            name = job.get("path") or job.get("name") or ""
            res = {"lines": [proto.error(name, f"Internal error: {type(err).__name__}")],
                   "infected": 0, "errors": 1, "total": 1, "verdicts": {"error": 1}}
        res["seconds"] = time.monotonic() - started
        res["dropped"] = self._newly_dropped()
        return res

    def _newly_dropped(self) -> int:
        """Statistics events this worker's mail service dropped since the last result."""
        store = self._mail_stats()
        total = store.dropped if store is not None else 0
        new, self._dropped_seen = total - self._dropped_seen, total
        return new

    def close(self) -> None:
        """The worker is ending: the statistics its mail service still holds are written (a
        worker leaves with os._exit, which runs no exit hook)."""
        store = self._mail_stats()
        if store is not None:
            store.close()

    def _mail_stats(self):
        return getattr(getattr(self.mail, "processor", None), "stats", None)

    # -- paths -----------------------------------------------------------------------------
    # clamd's reply rules (clamd/scanner.c, session.c): every file that is not clean gets a
    # line; the top-level path gets "path: OK" when nothing was found and not everything failed.
    def scan_target(self, path: str, mode: str) -> dict:
        res = empty_result(1)
        try:
            st = os.stat(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"lstat() failed: {err.strerror}."))
            res["errors"] = 1
            count_verdict(res, "error")
            return res
        if stat.S_ISDIR(st.st_mode):
            files, problems = self.walk(path)
            res["lines"] += problems
            res["errors"] += len(problems)
            res["total"] += len(problems)
            for _problem in problems:
                count_verdict(res, "error")
            if mode in ("contscan", "multiscan"):
                res["fanout"] = files  # the parent spreads them over every worker
                return res
            for name in files:
                self._scan_into(res, name, False, mode == "allmatch")
                if mode == "scan" and res["infected"]:
                    return res  # SCAN stops at the first virus, as clamd's TYPE_SCAN does
        elif stat.S_ISREG(st.st_mode):
            res["total"] = 0
            self._scan_into(res, path, True, mode == "allmatch")
        else:
            res["lines"].append(proto.error(path, "Not supported file type"))
            res["errors"] = 1
            count_verdict(res, "error")
            return res
        return finish(path, res)

    def scan_files(self, paths: list[str], allmatch: bool) -> dict:
        res = empty_result()
        for name in paths:
            self._scan_into(res, name, False, allmatch)
        return res

    def _scan_into(self, res: dict, path: str, toplevel: bool, allmatch: bool) -> None:
        res["total"] += 1
        try:
            st = os.stat(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"lstat() failed: {err.strerror}."))
            res["errors"] += 1
            count_verdict(res, "error")
            return
        if st.st_size == 0:
            if toplevel:
                res["lines"].append(f"{path}: Empty file")
            return
        if not os.access(path, os.R_OK):
            res["lines"].append(proto.error(path, "Access denied."))
            res["errors"] += 1
            count_verdict(res, "error")
            return
        try:
            verdict = self.engine.scan_path(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"Can't open file or directory: {err.strerror}"))
            res["errors"] += 1
            count_verdict(res, "error")
            return
        count_verdict(res, verdict.status.label, st.st_size, _threat_names(verdict))
        lines, status = proto.verdict_lines(path, verdict, self.heuristic_names, allmatch)
        res["lines"] += [] if status is proto.Status.CLEAN else lines
        if status is proto.Status.INFECTED:
            res["infected"] += 1
        elif status is not proto.Status.CLEAN:
            res["errors"] += 1

    def walk(self, top: str) -> tuple[list[str], list[str]]:
        """Regular files under ``top`` in the walker's stable order, and clamd's reply lines
        for the entries that could not be looked at."""
        problems: list[str] = []

        def on_error(path: str, err: OSError) -> None:
            problems.append(proto.error(err.filename or path, f"lstat() failed: {err.strerror}."))

        files = [path for path, _st in regular_files([top.rstrip("/") or "/"],
                                                     follow_symlinks=self.follow_symlinks,
                                                     on_error=on_error)]
        return files, problems

    # -- descriptors -----------------------------------------------------------------------
    def scan_fd(self, fd: int, name: str) -> dict:
        res = empty_result(1)
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            res["lines"].append(proto.error(name, "Not a regular file"))
            res["errors"] = 1
            count_verdict(res, "error")
            return res
        try:
            # The descriptor's own file, reopened through /proc: works for unlinked spools too.
            verdict = self.engine.scan_path(f"/proc/self/fd/{fd}", name)
        except OSError as err:
            res["lines"].append(proto.error(name, f"Can't read file: {err.strerror}"))
            res["errors"] = 1
            count_verdict(res, "error")
            return res
        count_verdict(res, verdict.status.label, st.st_size, _threat_names(verdict))
        lines, status = proto.verdict_lines(name, verdict, self.heuristic_names)
        res["lines"] = lines
        res["infected"] = int(status is proto.Status.INFECTED)
        res["errors"] = int(status not in (proto.Status.INFECTED, proto.Status.CLEAN))
        return res

    # -- mail ------------------------------------------------------------------------------
    def mail_job(self, fds: list[int]) -> dict:
        """LMSAVMAIL: the mail service decides; the plan goes into the client's reply file."""
        from ..mail.service import MailServiceError

        if self.mail is None or len(fds) != 3:
            return {"lines": [f"{transfer.REPLY_ERROR} mail policy not available"],
                    "errors": 1, "total": 1, "mail": {"result": "error"}}
        req_fd, msg_fd, plan_fd = fds
        try:
            envelope = transfer.decode_request(transfer.read_fd(req_fd, transfer.MAX_REQUEST))
            raw = transfer.read_fd(msg_fd, transfer.MAX_MESSAGE)
            plan = self.mail.decide(raw, envelope)
            transfer.write_plan(plan_fd, plan)
        except (transfer.PlanError, MailServiceError, OSError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            return {"lines": [f"{transfer.REPLY_ERROR} {reason}"], "errors": 1, "total": 1,
                    "mail": {"result": "error"}}
        outcome = plan.outcome
        return {"lines": [transfer.REPLY_OK], "infected": int(outcome.status == "infected"),
                "errors": 0, "total": 1, "verdicts": {outcome.status: 1},
                "mail": {"result": plan.result, "actions": [g.action for g in outcome.groups],
                         "seconds": outcome.scan_seconds},
                "log": f"LMSAVMAIL {outcome.message_id or '-'} status={outcome.status} "
                       f"result={plan.result} threats={','.join(outcome.threats) or '-'}"}


def self_test(db, limits) -> list[str]:
    """Scan the database's own samples; return the failures (empty means it passed).

    Whatever the scans bound to this thread (yara-x's scanner) is dropped here, on this
    thread, before returning: the database may then be handed to, and freed by, another."""
    from ..scanner.engine import Engine

    engine = Engine(db, limits)
    failures = []
    try:
        for sample in db.samples:
            verdict = engine.scan_bytes(sample.data, f"selftest:{sample.name}")
            names = [t.name for _, t in verdict.threats]
            ok = sample.expect in names if sample.expect else not names
            if not ok:
                failures.append(f"{sample.name}: expected {sample.expect or 'clean'}, got "
                                f"{', '.join(names) or 'clean'}")
    finally:
        del engine
        db.drop_thread_state()
    return failures
