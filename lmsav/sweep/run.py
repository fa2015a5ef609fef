"""The sweep of ``lmsav scan`` and ``lmsav cron run``: walk, scan in parallel workers, tally.

The per-file loop is deliberately plain: the walker (``walk.regular_files``) yields paths (with
their stat only when the scan cache needs it), workers open and scan them with the engine loaded
once before forking, and only a compact record travels back to the parent for each file. The
workers are ``lmsav.workers.WorkerPool``'s, as the daemon's: a job is a batch of paths, the parent
keeps every worker busy and hands the reports on in walk order; a worker that dies costs its
batch an ERROR report each and is replaced.

Incremental sweeps (``SweepOptions.incremental``) look each file's stat up in the scan cache
(``cache.py``) in the parent: a file unchanged since a clean verdict is never read, never sent
to a worker, and only counted. The parent records the clean verdicts that come back, so workers
never touch the cache.
"""

from __future__ import annotations

import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import __version__
from ..scanner.engine import Engine
from ..scanner.objects import ObjectResult, Status, Verdict
from .walk import WalkError, regular_files

if TYPE_CHECKING:
    from .cache import ScanCache  # imported at run time by incremental sweeps only


@dataclass(frozen=True)
class SweepOptions:
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    max_dir_depth: int = 0  # 0 = unlimited
    one_file_system: bool = False
    follow_symlinks: bool = False
    workers: int = 1
    want_tree: bool = False  # return the whole verdict tree (for --json), not only findings
    incremental: bool = False  # skip files unchanged since a clean verdict (the scan cache)
    cache_path: str | None = None  # the scan cache file; None: <state dir>/scancache.sqlite
    database_version: str = ""  # the database verdicts are valid for; "": the engine's
    report_unchanged: bool = False  # on_report for unchanged files too (-v, --json); else counted


@dataclass(slots=True)
class FileReport:
    """What one scanned input amounts to, small enough to send between processes."""

    path: str
    status: Status
    size: int = 0
    findings: list[tuple[str, Status, list[str], str]] = field(default_factory=list)
    tree: dict | None = None  # the verdict as JSON when asked for
    skipped: bool = False  # not scanned on purpose (special file): not counted as scanned
    unchanged: bool = False  # clean as the scan cache knows it, not read: not counted as scanned
    unreached: bool = False  # the walk could not get to it (missing, unlistable): an error only


@dataclass
class Tally:
    directories: int = 0
    files: int = 0
    bytes: int = 0
    by_status: dict[Status, int] = field(default_factory=lambda: {s: 0 for s in Status})
    skipped: int = 0
    unchanged: int = 0  # skipped by an incremental sweep as unchanged since a clean verdict
    started: float = field(default_factory=time.monotonic)

    def add(self, report: FileReport) -> None:
        if report.unreached:  # clamscan counts these as errors, never as scanned files
            self.by_status[Status.ERROR] += 1
            return
        if report.skipped:
            self.skipped += 1
            return
        if report.unchanged:
            self.unchanged += 1
            return
        self.files += 1
        self.bytes += report.size
        self.by_status[report.status] += 1

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


# -- walking -----------------------------------------------------------------------------------

_WHY = {"open": "cannot open", "link": "broken symlink", "list": "cannot read directory",
        "stat": "cannot stat"}


def inputs(paths: Iterable[str], opts: SweepOptions, tally: Tally,
           descend: Callable[[str], bool] | None = None
           ) -> Iterator[FileReport | tuple[str, os.stat_result | None]]:
    """Walk order: ``(path, stat)`` of a file to scan, or the report of what cannot be scanned
    (an entry the walk could not look at, a special file). Counts directories in ``tally``.
    Files are stat'ed only for an incremental sweep (the scan cache keys on the stat): the
    stat is None otherwise, which saves a system call per file."""
    pending: deque[FileReport] = deque()
    want_tree = opts.want_tree

    def on_error(path: str, err: OSError) -> None:
        why = _WHY[err.step] if isinstance(err, WalkError) else "cannot open"
        pending.append(problem_report(path, Status.ERROR, f"{why}: {err.strerror}", want_tree,
                                      unreached=True))

    def on_special(path: str) -> None:
        pending.append(problem_report(path, Status.CLEAN, "special file", want_tree,
                                      skipped=True))

    def on_directory(_path: str) -> None:
        tally.directories += 1

    for item in regular_files(paths, follow_symlinks=opts.follow_symlinks, on_error=on_error,
                              exclude=opts.exclude, include=opts.include,
                              max_depth=opts.max_dir_depth,
                              one_file_system=opts.one_file_system, on_special=on_special,
                              on_directory=on_directory, descend=descend,
                              want_stat=opts.incremental):
        while pending:  # the callbacks ran while looking for this file: they come first
            yield pending.popleft()
        yield item
    yield from pending


# -- scanning ----------------------------------------------------------------------------------

_engine: Engine | None = None
_want_tree = False


def summarize(path: str, verdict: Verdict, want_tree: bool) -> FileReport:
    """What a verdict amounts to for the output, the actions and the exit code."""
    root = verdict.root
    status = verdict.status
    report = FileReport(path, status, root.size)
    if status != Status.CLEAN:
        report.findings = [
            (r.path, r.status, [t.name for t in r.threats], r.reason)
            for r in root.walk()
            if r.status != Status.CLEAN
        ]
    if want_tree:
        report.tree = verdict.to_json()
    return report


def scan_one(path: str) -> FileReport:
    """Scan one file with this process's engine (set before the workers fork)."""
    try:
        verdict = _engine.scan_path(path)
    except FileNotFoundError:
        verdict = Verdict(ObjectResult(path, "", 0, Status.ERROR, reason="vanished during scan"))
    except OSError as err:
        verdict = Verdict(
            ObjectResult(path, "", 0, Status.ERROR, reason=f"cannot open: {err.strerror}")
        )
    return summarize(path, verdict, _want_tree)


def problem_report(path: str, status: Status, reason: str, want_tree: bool,
                   skipped: bool = False, unreached: bool = False) -> FileReport:
    """The report of a path the walk could not descend into or must not scan (not fatal)."""
    verdict = Verdict(ObjectResult(path, "", 0, status, reason=reason))
    report = summarize(path, verdict, want_tree)
    report.skipped = skipped
    report.unreached = unreached
    if skipped:
        report.findings = [(path, Status.CLEAN, [], reason)]
    return report


def unchanged_report(path: str, size: int, want_tree: bool) -> FileReport:
    report = FileReport(path, Status.CLEAN, size, unchanged=True)
    if want_tree:
        result = ObjectResult(path, "", size, reason="unchanged since a clean scan")
        report.tree = Verdict(result).to_json()
    return report


def cache_version(engine: Engine, opts: SweepOptions) -> str:
    """Everything a cached clean verdict depends on besides the file itself.

    The database's build time is part of it, so signatures changed under an unchanged version
    string still invalidate the cache. Limits are not: hitting one never yields CLEAN.
    """
    db = engine.db
    return (f"lmsav {__version__}; database {opts.database_version or db.version} built "
            f"{db.built_at!r}; archives {engine.scan_archives}; mail {engine.scan_mail}")


def open_cache(engine: Engine, opts: SweepOptions) -> ScanCache:
    from ..paths import scan_cache_file, state_dir
    from .cache import ScanCache

    path = opts.cache_path or str(scan_cache_file(state_dir()))
    return ScanCache(path, cache_version(engine, opts))


def sweep(
    engine: Engine,
    paths: Iterable[str],
    opts: SweepOptions,
    tally: Tally,
    on_report: Callable[[FileReport], None],
    on_planned: Callable[[int], None] | None = None,
    on_walked: Callable[[], None] | None = None,
) -> None:
    """Scan everything under ``paths``, calling ``on_report`` in walk order for each input.

    Files an incremental sweep skips as unchanged are counted in ``tally.unchanged`` and reach
    ``on_report`` (as ``FileReport.unchanged``) only when ``opts.report_unchanged`` is set.

    For a progress display: ``on_planned(n)`` tells of ``n`` more inputs that will reach
    ``on_report`` as the walk finds them (ahead of their reports: workers scan while the walk
    goes on), and ``on_walked()`` that the walk is over, every input planned.
    """
    global _engine, _want_tree
    _engine, _want_tree = engine, opts.want_tree
    cache = open_cache(engine, opts) if opts.incremental else None
    try:
        planned = _plan(paths, opts, tally, cache)
        if on_planned is not None or on_walked is not None:
            planned = _announced(planned, on_planned, on_walked)
        if opts.workers <= 1:
            _sweep_here(planned, tally, on_report, cache)
        else:
            _sweep_forked(planned, opts, tally, on_report, cache)
    finally:
        if cache is not None:
            cache.close()


def _announced(planned: Iterator, on_planned, on_walked) -> Iterator:
    for item in planned:
        if on_planned is not None:
            on_planned(1)
        yield item
    if on_walked is not None:
        on_walked()


def _plan(paths: Iterable[str], opts: SweepOptions, tally: Tally, cache: ScanCache | None
          ) -> Iterator[FileReport | tuple[str, os.stat_result | None]]:
    """Walk order: a report that needs no scan, or ``(path, stat or None)`` to scan (the stat
    only for the scan cache)."""
    if cache is None:
        for item in inputs(paths, opts, tally):
            yield item if isinstance(item, FileReport) else (item[0], None)
        return
    if _can_split(opts, cache):
        yield from _plan_split(paths, opts, tally, cache)
        return
    for item in inputs(paths, opts, tally):
        planned = _plan_one(item, opts, tally, cache)
        if planned is not None:
            yield planned


def _plan_one(item, opts: SweepOptions, tally: Tally, cache: ScanCache):
    """What one walk item of an incremental sweep becomes: a report, a file to scan, or None
    (unchanged, only counted)."""
    if isinstance(item, FileReport):
        return item
    if not cache.is_unchanged(item[1]):
        return item
    if opts.report_unchanged:
        return unchanged_report(item[0], item[1].st_size, opts.want_tree)
    tally.unchanged += 1
    return None


# -- the walk of a repeated incremental sweep, split over processes ------------------------------
#
# When most files are known clean, a sweep is its directory walk: one stat per file. The stat
# calls and the per-file work then go to ``workers`` forked processes, each walking whole
# subtrees of a top directory; the parent hands their results on in walk order. Only for
# repeated sweeps (a first one would buffer every path) and only without the options whose
# bookkeeping spans subtrees (followed links, depth limit, one file system).

def _can_split(opts: SweepOptions, cache: ScanCache) -> bool:
    return (opts.workers > 1 and cache.known > 0 and not opts.follow_symlinks
            and not opts.max_dir_depth and not opts.one_file_system)


def _plan_split(paths: Iterable[str], opts: SweepOptions, tally: Tally, cache: ScanCache):
    for top in paths:
        try:
            st = os.lstat(top)
        except OSError:
            st = None
        subdirs: list[str] = []

        def walk_elsewhere(path: str, subdirs: list[str] = subdirs) -> bool:
            subdirs.append(path)
            return False

        # Errors, links and files as a whole sweep has them; of a directory, its own entries
        # here and its subdirectories' trees in walkers.
        split = st is not None and stat.S_ISDIR(st.st_mode)
        for item in inputs([top], opts, tally, walk_elsewhere if split else None):
            planned = _plan_one(item, opts, tally, cache)
            if planned is not None:
                yield planned
        yield from _walk_subtrees(subdirs, opts, tally, cache)


def _plan_subtree(directory: str, opts: SweepOptions, cache: ScanCache) -> tuple[list, int, int]:
    """(planned items, directories, unchanged files) of one subtree."""
    tally = Tally()
    out = []
    for item in inputs([directory], opts, tally):
        planned = _plan_one(item, opts, tally, cache)
        if planned is not None:
            out.append(planned)
    return out, tally.directories, tally.unchanged


def _walk_subtrees(subdirs: list[str], opts: SweepOptions, tally: Tally, cache: ScanCache):
    import selectors
    import socket

    from ..workers import RECV_SIZE, frames_in, send_frame

    def take(result) -> Iterator:
        items, directories, unchanged = result
        tally.directories += directories
        tally.unchanged += unchanged
        yield from items

    count = min(opts.workers, len(subdirs))
    if count < 2:
        for directory in subdirs:
            yield from take(_plan_subtree(directory, opts, cache))
        return
    children: dict[socket.socket, tuple[int, bytearray]] = {}  # -> (pid, read buffer)
    for n in range(count):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # a walker: its share of the subtrees, one frame (index, result) each
            code = 0
            try:
                ours.close()
                for other in children:
                    other.close()
                for i in range(n, len(subdirs), count):
                    send_frame(theirs, (i, _plan_subtree(subdirs[i], opts, cache)))
            except BaseException:  # noqa: BLE001 - a forked walker must reach os._exit
                code = 1
            finally:
                os._exit(code)
        theirs.close()
        children[ours] = (pid, bytearray())
    done: dict[int, tuple] = {}
    sel = selectors.DefaultSelector()
    for sock in children:
        sel.register(sock, selectors.EVENT_READ)
    try:
        for i in range(len(subdirs)):
            while i not in done and children:
                for key, _ in sel.select():
                    sock = key.fileobj
                    pid, buf = children[sock]
                    try:
                        chunk = sock.recv(RECV_SIZE)
                    except OSError:
                        chunk = b""
                    if not chunk:  # finished (or died: what it did not send is walked here)
                        sel.unregister(sock)
                        sock.close()
                        os.waitpid(pid, 0)
                        del children[sock]
                        continue
                    buf += chunk
                    for index, result in frames_in(buf):
                        done[index] = result
            result = done.pop(i, None)
            if result is None:
                result = _plan_subtree(subdirs[i], opts, cache)
            yield from take(result)
    finally:
        sel.close()
        for sock, (pid, _buf) in children.items():
            sock.close()
            try:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            except OSError:
                pass


def _remember(cache: ScanCache, report: FileReport, st: os.stat_result) -> None:
    if report.status == Status.CLEAN:
        cache.record_clean(st)
    else:
        cache.forget(st)


def _sweep_here(planned: Iterable, tally: Tally, on_report, cache) -> None:
    for item in planned:
        if isinstance(item, FileReport):
            report = item
        else:
            path, st = item
            report = scan_one(path)
            if st is not None:
                _remember(cache, report, st)
        tally.add(report)
        on_report(report)


BATCH = 32  # paths per job sent to a worker: each worker's first
# Later jobs grow to MAX_BATCH paths: a worker done with a job waits for the parent to hand it the
# next, which costs most when the parent is itself waiting for the CPU (a loaded machine).
MAX_BATCH = 128
MAX_IN_FLIGHT_PER_WORKER = 8  # batches sent and not yet passed on, per worker
MAX_WAITING = 4096  # reports queued in walk order before the walker waits
STOP_TIMEOUT = 5.0  # seconds idle workers get to exit once the sweep is done


class _Batch:
    """A stretch of walk order: the paths one worker job scans, and the reports that need no
    scan in between (``None`` in ``slots`` stands for the next scanned report)."""

    __slots__ = ("paths", "result", "sent", "slots", "stats")

    def __init__(self):
        self.paths: list[str] = []
        self.stats: list[os.stat_result | None] = []
        self.slots: list[FileReport | None] = []
        self.sent = False
        self.result: list[FileReport] | None = None  # the scanned reports, once answered


class _BatchScanner:
    """A worker's job handler: a job is a list of paths, the answer their reports."""

    def run_job(self, job: list[str], fds: list[int]) -> list[FileReport]:
        return [scan_one(path) for path in job]

    def close(self) -> None:
        pass


class _Scanners:
    """The sweep's workers (``lmsav.workers.WorkerPool``) and the batches waiting for one.

    Workers are forked (after the database is loaded: they share its pages copy-on-write)
    only when a first batch needs scanning, so a sweep of an unchanged tree forks none.
    """

    def __init__(self, size: int):
        self.size = size
        self.pool = None
        self.selector = None
        self.queued: deque[_Batch] = deque()  # sent by the sweep, not given to a worker yet

    def send(self, batch: _Batch) -> None:
        if self.pool is None:
            import selectors

            from ..scanner.containers import load_all
            from ..workers import WorkerPool

            load_all()  # before forking: the workers share the handlers' modules
            self.selector = selectors.DefaultSelector()
            self.pool = WorkerPool(self.size, _BatchScanner, self.selector)
            self.pool.start()
        batch.sent = True
        self.queued.append(batch)
        self.poll(0)

    def poll(self, timeout: float | None) -> None:
        """Take the answers that are in (waiting up to ``timeout``), give idle workers work."""
        if self.pool is None:
            return
        for key, _events in self.selector.select(timeout):
            worker = key.data
            answers = self.pool.read(worker)
            if answers is None:  # it died: its batch is an error, a new worker takes its place
                batch = self.pool.died(worker)
                if batch is not None:
                    batch.result = _died_reports(batch.paths, worker.exit_status)
                continue
            for batch, reports in answers:
                batch.result = reports
        for worker in self.pool.idle():
            if not self.queued:
                break
            batch = self.queued.popleft()
            try:
                self.pool.send(worker, batch, batch.paths)
            except OSError:
                self.queued.appendleft(batch)  # the worker is gone: its death comes next

    def wait_for(self, batch: _Batch) -> list[FileReport]:
        while batch.result is None:
            self.poll(None)
        return batch.result

    def close(self, finished: bool) -> None:
        """Let idle workers exit after a finished sweep; kill them when it ended early."""
        if self.pool is None:
            return
        if finished:
            self.pool.stop(STOP_TIMEOUT)  # every batch is answered: they exit at once
        else:
            for worker in list(self.pool.workers.values()):
                self.pool.retire(worker, kill=True)
            for pid in list(self.pool.pids):
                self.pool.reap(pid, wait=True)
        self.selector.close()


def _died_reports(paths: list[str], status: str) -> list[FileReport]:
    reason = f"scanning process died ({status})"
    return [problem_report(path, Status.ERROR, reason, _want_tree) for path in paths]


def _sweep_forked(planned: Iterable, opts: SweepOptions, tally: Tally, on_report, cache
                  ) -> None:
    """The parent walks (``planned``) and keeps walk order; forked workers scan batches of
    paths."""
    scanners = _Scanners(opts.workers)
    waiting: deque[FileReport | _Batch] = deque()  # walk order
    open_batch: _Batch | None = None  # the last batch, still taking paths; not sent yet
    in_flight = 0
    max_in_flight = MAX_IN_FLIGHT_PER_WORKER * opts.workers
    batch_size, sent = BATCH, 0

    def send(batch: _Batch) -> None:
        nonlocal in_flight, batch_size, sent
        scanners.send(batch)
        in_flight += 1
        sent += 1
        if sent >= opts.workers:  # every worker has had a first, small job: double up
            batch_size = max(BATCH, min(batch_size * 2, MAX_BATCH))

    def pass_on(entry: FileReport | _Batch) -> None:
        nonlocal in_flight
        if isinstance(entry, FileReport):
            tally.add(entry)
            on_report(entry)
            return
        in_flight -= 1
        scanned = zip(scanners.wait_for(entry), entry.stats)
        for report in entry.slots:
            if report is None:
                report, st = next(scanned)
                if st is not None:
                    _remember(cache, report, st)
            tally.add(report)
            on_report(report)

    finished = False
    try:
        for item in planned:
            if isinstance(item, FileReport):
                if open_batch is None:
                    waiting.append(item)
                else:
                    open_batch.slots.append(item)
                    if len(open_batch.slots) >= MAX_WAITING:
                        send(open_batch)
                        open_batch = None
            else:
                if open_batch is None:
                    open_batch = _Batch()
                    waiting.append(open_batch)
                open_batch.paths.append(item[0])
                open_batch.stats.append(item[1])
                open_batch.slots.append(None)
                if len(open_batch.paths) >= batch_size:
                    send(open_batch)
                    open_batch = None
            # Pass on what is ready; wait for the oldest batch only when too much is queued.
            while waiting:
                head = waiting[0]
                if isinstance(head, _Batch):
                    crowded = in_flight >= max_in_flight or len(waiting) >= MAX_WAITING
                    if not head.sent:  # the open batch
                        if not crowded:
                            break
                        send(head)
                        open_batch = None
                    elif not crowded and head.result is None:
                        break
                pass_on(waiting.popleft())
        if open_batch is not None:
            send(open_batch)
        while waiting:
            pass_on(waiting.popleft())
        finished = True
    finally:
        scanners.close(finished)
