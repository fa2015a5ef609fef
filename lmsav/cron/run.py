"""`lmsav cron run`: one scheduled sweep, database update or report, never two of the same
schedule at once, its result logged in one line and kept for `lmsav cron list`."""

from __future__ import annotations

import collections
import contextlib
import datetime
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import paths
from ..durable import write_atomic
from .schedules import Schedule

KEEP_REPORTS = 30  # per schedule; older reports are deleted after each run
# The files a run keeps in reports/: a sweep's JSON lines, a report schedule's HTML page.
REPORT_SUFFIXES = {"sweep": ".jsonl", "report": ".html"}

log = logging.getLogger("lmsav.cron")
log.addHandler(logging.NullHandler())  # syslog only when the command adds it; never stderr


@dataclass(frozen=True)
class StateFiles:
    """Where scheduled runs keep their state, under the configured state_dir."""

    state_dir: Path

    @property
    def cron_dir(self) -> Path:
        return paths.cron_dir(self.state_dir)

    @property
    def reports_dir(self) -> Path:
        return paths.reports_dir(self.state_dir)

    @property
    def log_file(self) -> Path:
        return paths.log_dir(self.state_dir) / "cron.log"

    def lock_file(self, name: str) -> Path:
        # Under state_dir, not run_dir: cron does not set $XDG_RUNTIME_DIR, so a run started
        # by cron and one started by hand would otherwise lock different files.
        return self.cron_dir / f"{name}.lock"

    def last_file(self, name: str) -> Path:
        return self.cron_dir / f"{name}.last.json"


@dataclass
class RunResult:
    """The outcome of one scheduled run, as logged and as `cron list` shows it."""

    name: str
    started: str  # ISO 8601, local time with offset
    # A sweep: clean, found, error or skipped; an update: updated, current, failed (the
    # database is not current: no source answered), error or skipped; a report: sent (mailed),
    # written (kept only), error or skipped.
    result: str
    exit: int | None = None
    files: int | None = None
    found: int | None = None
    seconds: float | None = None
    report: str | None = None
    error: str | None = None
    kind: str = "sweep"
    version: str | None = None  # an update: the active database version afterwards

    @property
    def exit_code(self) -> int:
        """lmsav's exit code for this run: 0 clean, current or updated (or skipped), 1 found
        or not current, 2 error."""
        return {"clean": 0, "skipped": 0, "updated": 0, "current": 0, "sent": 0,
                "written": 0, "found": 1, "failed": 1}.get(self.result, 2)

    @property
    def ok(self) -> bool:
        """Nothing to tell the administrator about."""
        return self.result in ("clean", "updated", "current", "sent", "written")

    def fields(self) -> str:
        """``name=… result=… …``: the log line without its time."""
        if self.result == "skipped":
            pairs = [("name", self.name), ("result", self.result), ("reason", self.error)]
        elif self.kind == "update":
            pairs = [("name", self.name), ("kind", self.kind), ("result", self.result),
                     ("exit", self.exit), ("version", self.version), ("seconds", self.seconds)]
            if self.error:
                pairs.append(("error", self.error))
        elif self.kind == "report":
            pairs = [("name", self.name), ("kind", self.kind), ("result", self.result),
                     ("exit", self.exit), ("seconds", self.seconds), ("report", self.report)]
            if self.error:
                pairs.append(("error", self.error))
        else:
            pairs = [("name", self.name), ("result", self.result), ("exit", self.exit),
                     ("files", self.files), ("found", self.found), ("seconds", self.seconds),
                     ("report", self.report)]
            if self.error:
                pairs.append(("error", self.error))
        return " ".join(f"{key}={_log_value(value)}" for key, value in pairs)

    def to_json(self) -> dict:
        return asdict(self)


def _log_value(value) -> str:
    if value is None:
        return "-"
    text = str(value)
    return text if re.fullmatch(r'[^\s"=]+', text) else json.dumps(text, ensure_ascii=False)


def _now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()


def last_result(state: StateFiles, name: str,
                since: datetime.datetime | None = None) -> RunResult | None:
    """The last completed run of a schedule, None if it never ran (or its file is unreadable).

    A run started before ``since`` (the schedule's creation) was one of an earlier schedule of
    that name, still running when this one replaced it: not this schedule's result."""
    if since is not None and since.tzinfo is None:
        since = since.astimezone()  # a hand-written created = without offset: local time
    try:
        result = RunResult(**json.loads(state.last_file(name).read_text()))
        if since is not None and datetime.datetime.fromisoformat(result.started) < since:
            return None
        return result
    except (OSError, ValueError, TypeError):
        return None


def forget_last_result(state: StateFiles, name: str) -> None:
    """Drop a schedule's last result (its reports stay): a schedule added under the name of
    a removed one has not run yet."""
    state.last_file(name).unlink(missing_ok=True)


def run_schedule(schedule: Schedule, state: StateFiles, lmsav: Sequence[str],
                 on_line: Callable[[str], None] | None = None) -> RunResult:
    """Run the schedule with ``lmsav`` (``[lmsav, --config F]``): the command its kind names."""
    if schedule.kind == "update":
        return run_update(schedule, state, [*lmsav, "update"], on_line)
    if schedule.kind == "report":
        return run_report(schedule, state, [*lmsav, "report"], on_line)
    return run_sweep(schedule, state, [*lmsav, "scan"], on_line)


def run_sweep(schedule: Schedule, state: StateFiles, scan: Sequence[str],
              on_line: Callable[[str], None] | None = None) -> RunResult:
    """Run ``scan`` (``[lmsav, --config F, scan]``) for the schedule, unless a run of it is in
    progress; log the result, keep it as the last one, and prune old reports.

    ``on_line`` gets each line the scan prints on standard output.
    """
    result = _run_once(schedule, state,
                       lambda lock_fd: _run_locked(schedule, state, scan, lock_fd, on_line))
    prune_reports(state.reports_dir, schedule.name)
    return result


def run_update(schedule: Schedule, state: StateFiles, update: Sequence[str],
               on_line: Callable[[str], None] | None = None) -> RunResult:
    """Run ``update`` (``[lmsav, --config F, update]``) for the schedule, unless a run of it
    is in progress; log the result and keep it as the last one."""
    return _run_once(schedule, state,
                     lambda lock_fd: _update_locked(schedule, update, lock_fd, on_line))


def run_report(schedule: Schedule, state: StateFiles, report: Sequence[str],
               on_line: Callable[[str], None] | None = None) -> RunResult:
    """Run ``report`` (``[lmsav, --config F, report]``) for the schedule: the HTML page kept
    in the reports directory and, when the schedule names recipients, mailed to them."""
    result = _run_once(schedule, state,
                       lambda lock_fd: _report_locked(schedule, state, report, lock_fd, on_line))
    prune_reports(state.reports_dir, schedule.name)
    return result


def _run_once(schedule: Schedule, state: StateFiles, run: Callable[[int], RunResult]
              ) -> RunResult:
    """``run(lock_fd)`` under the schedule's lock, or a "skipped" result when it is held."""
    state.cron_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive(state.lock_file(schedule.name)) as (lock_fd, holder):
        if lock_fd is None:
            result = RunResult(schedule.name, _now().isoformat(timespec="seconds"), "skipped",
                               error=f"already running (pid {holder})" if holder
                               else "already running", kind=schedule.kind)
            _append_log(state, result)
            log.warning("%s", result.fields())
            return result
        result = run(lock_fd)
    _write_last(state, result)
    _append_log(state, result)
    log.log(logging.INFO if result.ok else logging.WARNING, "%s", result.fields())
    return result


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[tuple[int | None, str]]:
    """A non-blocking flock on ``path``: (fd, "") when taken, (None, holder's pid) when not."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            yield None, holder
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield fd, ""
    finally:
        os.close(fd)


def _run_locked(schedule: Schedule, state: StateFiles, scan: Sequence[str], lock_fd: int,
                on_line: Callable[[str], None] | None) -> RunResult:
    started = _now()
    state.reports_dir.mkdir(parents=True, exist_ok=True)
    report = report_path(state.reports_dir, schedule.name, started, REPORT_SUFFIXES["sweep"])
    argv = [*scan, "--incremental" if schedule.incremental else "--no-incremental",
            "--report", str(report), *schedule.scan_options, "--", *schedule.paths]
    result = RunResult(schedule.name, started.isoformat(timespec="seconds"), "error")
    t0 = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=100)
    try:
        code, error_text = _run_child(argv, lock_fd, tail.append, on_line)
    except OSError as err:
        result.error = f"cannot run {argv[0]}: {err.strerror or err}"
        result.seconds = 0.0
        return result
    result.seconds = round(time.monotonic() - t0, 3)
    result.exit = code
    result.result = {0: "clean", 1: "found"}.get(code, "error")
    result.files, result.found = parse_summary(list(tail), report)
    if report.exists():
        result.report = str(report)
    if result.result == "error":
        result.error = (f"killed by signal {-code}" if code < 0
                        else _last_line(error_text) or f"lmsav scan exited with {code}")
    return result


def _report_locked(schedule: Schedule, state: StateFiles, report: Sequence[str], lock_fd: int,
                   on_line: Callable[[str], None] | None) -> RunResult:
    started = _now()
    state.reports_dir.mkdir(parents=True, exist_ok=True)
    page = report_path(state.reports_dir, schedule.name, started, REPORT_SUFFIXES["report"])
    argv = [*report, schedule.report, "--format", "html", "-o", str(page),
            *(word for address in schedule.mail for word in ("--mail", address))]
    result = RunResult(schedule.name, started.isoformat(timespec="seconds"), "error",
                       kind="report")
    t0 = time.monotonic()
    try:
        code, error_text = _run_child(argv, lock_fd, lambda _line: None, on_line)
    except OSError as err:
        result.error = f"cannot run {argv[0]}: {err.strerror or err}"
        result.seconds = 0.0
        return result
    result.seconds = round(time.monotonic() - t0, 3)
    result.exit = code
    if page.exists():
        result.report = str(page)
    if code == 0:
        result.result = "sent" if schedule.mail else "written"
    else:
        result.error = (f"killed by signal {-code}" if code < 0
                        else _first_error(error_text) or _last_line(error_text)
                        or f"lmsav report exited with {code}")
    return result


# What `lmsav update` prints last: "updated: V …", "current: V …" or "not updated: still
# using V".
_UPDATE_LINE_RE = re.compile(r"(?:updated|current|not updated: still using):? (\S+)")


def _update_locked(schedule: Schedule, update: Sequence[str], lock_fd: int,
                   on_line: Callable[[str], None] | None) -> RunResult:
    started = _now()
    result = RunResult(schedule.name, started.isoformat(timespec="seconds"), "error",
                       kind="update")
    t0 = time.monotonic()
    lines: list[str] = []
    try:
        code, error_text = _run_child(list(update), lock_fd, lines.append, on_line)
    except OSError as err:
        result.error = f"cannot run {update[0]}: {err.strerror or err}"
        result.seconds = 0.0
        return result
    result.seconds = round(time.monotonic() - t0, 3)
    result.exit = code
    for line in lines:
        match = _UPDATE_LINE_RE.match(line)
        if match:
            result.version = match[1]
    if code == 0:
        result.result = "current" if any(line.startswith("current:") for line in lines) \
            else "updated"
    else:
        result.result = "failed" if code == 1 else "error"
        result.error = (f"killed by signal {-code}" if code < 0
                        else _first_error(error_text) or _last_line(error_text)
                        or f"lmsav update exited with {code}")
    return result


def _run_child(argv: list[str], lock_fd: int, keep: Callable[[str], None],
               on_line: Callable[[str], None] | None) -> tuple[int, str]:
    """Run the job's command with the schedule's lock inherited (should this process die, the
    job still holds it until it ends, so no second run starts beside it); each output line
    goes to ``keep`` and ``on_line``. Returns the exit code and standard error. OSError when
    the command cannot be started."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=errors, pass_fds=(lock_fd,), text=True,
                                errors="replace")
        with _forwarding_signals(proc):
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip("\n")
                keep(line)
                if on_line is not None:
                    on_line(line)
            code = proc.wait()
        errors.seek(0)
        return code, errors.read().decode(errors="replace")


def _first_error(text: str) -> str:
    """The first ``lmsav: error:`` line, without its prefix: why the update failed."""
    for line in text.splitlines():
        if line.startswith("lmsav: error: "):
            return line[len("lmsav: error: "):].strip()
    return ""


@contextlib.contextmanager
def _forwarding_signals(proc: subprocess.Popen) -> Iterator[None]:
    """SIGTERM, SIGINT or SIGHUP to this process ends the sweep it runs, which is then logged."""
    def forward(_signum, _frame):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)

    previous = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        try:
            previous[signum] = signal.signal(signum, forward)
        except ValueError:  # not the main thread: leave signals alone
            break
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


_SUMMARY_RE = {
    "files": re.compile(r"Scanned files: (\d+)"),
    "infected": re.compile(r"Infected files: (\d+)"),
    "suspicious": re.compile(r"Suspicious files: (\d+)"),
}


def parse_summary(lines: Sequence[str], report: Path | None = None
                  ) -> tuple[int | None, int | None]:
    """(files scanned, infected + suspicious files) from the scan's summary: its text form on
    standard output, or a ``{"summary": …}`` line on standard output or at the report's end."""
    for line in reversed(lines):
        summary = _json_summary(line)
        if summary is not None:
            return summary
    counts = {}
    for line in lines:
        for key, pattern in _SUMMARY_RE.items():
            match = pattern.fullmatch(line.strip())
            if match:
                counts[key] = int(match[1])
    if "files" in counts:
        return counts["files"], counts.get("infected", 0) + counts.get("suspicious", 0)
    if report is not None:
        with contextlib.suppress(OSError):
            summary = _json_summary(_tail_line(report))
            if summary is not None:
                return summary
    return None, None


def _json_summary(line: str) -> tuple[int | None, int | None] | None:
    if not line.startswith("{"):
        return None
    try:
        data = json.loads(line)
    except ValueError:
        return None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        return None
    files = summary.get("scanned_files")
    found = summary.get("infected_files", 0) + summary.get("suspicious_files", 0)
    return files, found


def _tail_line(path: Path) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - 65536))
        lines = fh.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def report_path(directory: Path, name: str, when: datetime.datetime,
                suffix: str = ".jsonl") -> Path:
    """``NAME-YYYYmmddTHHMMSS.jsonl`` (or another suffix), with ``-2``, ``-3`` … for runs
    within one second."""
    stamp = when.strftime("%Y%m%dT%H%M%S")
    path = directory / f"{name}-{stamp}{suffix}"
    n = 2
    while path.exists():
        path = directory / f"{name}-{stamp}-{n}{suffix}"
        n += 1
    return path


def prune_reports(directory: Path, name: str, keep: int = KEEP_REPORTS) -> list[Path]:
    """Delete all but the newest ``keep`` reports of one schedule; the deleted paths."""
    suffixes = "|".join(re.escape(s) for s in REPORT_SUFFIXES.values())
    pattern = re.compile(re.escape(name) + rf"-(\d{{8}}T\d{{6}})(?:-(\d+))?(?:{suffixes})")
    try:
        reports = sorted((m[1], int(m[2] or 1), path) for path in directory.iterdir()
                         if (m := pattern.fullmatch(path.name)))
    except OSError:
        return []
    removed = []
    for *_key, path in reports[:max(0, len(reports) - keep)]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def _write_last(state: StateFiles, result: RunResult) -> None:
    path = state.last_file(result.name)
    write_atomic(path, (json.dumps(result.to_json(), indent=2) + "\n").encode(), 0o644)


def log_error(state: StateFiles, name: str, message: str) -> None:
    """Log a run that could not start (its schedule is missing or invalid)."""
    result = RunResult(name, _now().isoformat(timespec="seconds"), "error", error=message)
    _append_log(state, result)
    log.error("%s", result.fields())


def _append_log(state: StateFiles, result: RunResult) -> None:
    """One line, appended in one write so lines of concurrent runs never interleave."""
    path = state.log_file
    path.parent.mkdir(parents=True, exist_ok=True)
    line = f"{_now().isoformat(timespec='seconds')} {result.fields()}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
