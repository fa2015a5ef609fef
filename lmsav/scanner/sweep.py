"""Filesystem sweeps for ``lmsav scan``: walk, filter, scan in parallel workers, tally.

The per-file loop is deliberately plain: the walker yields paths (with stat facts it already
has), workers open and scan them with the engine loaded once before forking, and only a compact
record travels back to the parent for each file.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import os
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

from .engine import Engine
from .objects import ObjectResult, Status, Verdict


@dataclass(frozen=True)
class SweepOptions:
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    max_dir_depth: int = 0  # 0 = unlimited
    one_file_system: bool = False
    follow_symlinks: bool = False
    workers: int = 1
    want_tree: bool = False  # return the whole verdict tree (for --json), not only findings


@dataclass(slots=True)
class FileReport:
    """What one scanned input amounts to, small enough to send between processes."""

    path: str
    status: Status
    size: int = 0
    findings: list[tuple[str, Status, list[str], str]] = field(default_factory=list)
    tree: dict | None = None  # the verdict as JSON when asked for
    skipped: bool = False


@dataclass
class Tally:
    directories: int = 0
    files: int = 0
    bytes: int = 0
    by_status: dict[Status, int] = field(default_factory=lambda: {s: 0 for s in Status})
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    def add(self, report: FileReport) -> None:
        if report.skipped:
            self.skipped += 1
            return
        self.files += 1
        self.bytes += report.size
        self.by_status[report.status] += 1

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


# -- walking -----------------------------------------------------------------------------------

class _Problem:
    """A path the walker could not descend into or must not scan; reported, not fatal."""

    __slots__ = ("path", "status", "reason", "skipped")

    def __init__(self, path: str, status: Status, reason: str, skipped: bool = False):
        self.path, self.status, self.reason, self.skipped = path, status, reason, skipped


def _matches(path: str, patterns: tuple[str, ...]) -> bool:
    base = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(base, p) for p in patterns)


def walk(paths: Iterable[str], opts: SweepOptions, tally: Tally) -> Iterator[str | _Problem]:
    """Yield file paths to scan and problems to report, depth first, in directory order."""
    for top in paths:
        try:
            st = os.stat(top) if opts.follow_symlinks else os.lstat(top)
        except OSError as err:
            yield _Problem(top, Status.ERROR, f"cannot open: {err.strerror}")
            continue
        if stat.S_ISLNK(st.st_mode):
            # A symlink named on the command line is what the user asked for: follow it once.
            try:
                st = os.stat(top)
            except OSError as err:
                yield _Problem(top, Status.ERROR, f"broken symlink: {err.strerror}")
                continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(top, st, opts, tally)
        elif stat.S_ISREG(st.st_mode):
            if not opts.exclude or not _matches(top, opts.exclude):
                yield top
        else:
            yield _Problem(top, Status.CLEAN, "special file", skipped=True)


def _walk_dir(top: str, top_st: os.stat_result, opts: SweepOptions, tally: Tally):
    seen_dirs = {(top_st.st_dev, top_st.st_ino)}
    stack = [(top, 0)]
    while stack:
        directory, depth = stack.pop()
        tally.directories += 1
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            yield _Problem(directory, Status.ERROR, f"cannot read directory: {err.strerror}")
            continue
        subdirs = []
        for entry in entries:
            path = entry.path
            if opts.exclude and _matches(path, opts.exclude):
                continue
            try:
                is_link = entry.is_symlink()
                if is_link and not opts.follow_symlinks:
                    continue  # clamscan's default too: links are not followed
                if entry.is_dir(follow_symlinks=opts.follow_symlinks):
                    if opts.max_dir_depth and depth + 1 > opts.max_dir_depth:
                        continue
                    st = entry.stat(follow_symlinks=opts.follow_symlinks)
                    if opts.one_file_system and st.st_dev != top_st.st_dev:
                        continue
                    key = (st.st_dev, st.st_ino)
                    if key in seen_dirs:
                        continue  # a symlink loop or a bind mount seen already
                    seen_dirs.add(key)
                    subdirs.append((path, depth + 1))
                elif entry.is_file(follow_symlinks=opts.follow_symlinks):
                    if opts.include and not _matches(path, opts.include):
                        continue
                    if opts.one_file_system and is_link:
                        if entry.stat().st_dev != top_st.st_dev:
                            continue
                    yield path
                elif is_link:
                    yield _Problem(path, Status.ERROR, "broken symlink")
                else:
                    yield _Problem(path, Status.CLEAN, "special file", skipped=True)
            except OSError as err:
                yield _Problem(path, Status.ERROR, f"cannot stat: {err.strerror}")
        stack.extend(reversed(subdirs))


# -- scanning ----------------------------------------------------------------------------------

_engine: Engine | None = None
_want_tree = False


def _summarize(path: str, verdict: Verdict, want_tree: bool) -> FileReport:
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
    return _summarize(path, verdict, _want_tree)


def problem_report(p: _Problem, want_tree: bool) -> FileReport:
    verdict = Verdict(ObjectResult(p.path, "", 0, p.status, reason=p.reason))
    report = _summarize(p.path, verdict, want_tree)
    report.skipped = p.skipped
    if p.skipped:
        report.findings = [(p.path, Status.CLEAN, [], p.reason)]
    return report


def sweep(
    engine: Engine,
    paths: Iterable[str],
    opts: SweepOptions,
    tally: Tally,
    on_report: Callable[[FileReport], None],
) -> None:
    """Scan everything under ``paths``, calling ``on_report`` in walk order for each input."""
    global _engine, _want_tree
    _engine, _want_tree = engine, opts.want_tree
    items = walk(paths, opts, tally)
    if opts.workers <= 1:
        for item in items:
            report = problem_report(item, opts.want_tree) if isinstance(item, _Problem) else scan_one(item)
            tally.add(report)
            on_report(report)
        return
    # Fork after the database is loaded: workers share its pages copy-on-write.
    mp = multiprocessing.get_context("fork")
    problems: dict[int, _Problem] = {}

    def feed() -> Iterator[str | None]:
        for n, item in enumerate(items):
            if isinstance(item, _Problem):
                problems[n] = item
                yield None
            else:
                yield item

    with mp.Pool(opts.workers) as pool:
        results = pool.imap(_scan_or_skip, feed(), chunksize=32)
        for n, report in enumerate(results):
            if report is None:
                report = problem_report(problems.pop(n), opts.want_tree)
            tally.add(report)
            on_report(report)


def _scan_or_skip(path: str | None) -> FileReport | None:
    return None if path is None else scan_one(path)
