"""Commands the web console runs in child processes (`lmsav cron run NAME`, `lmsav update`):
at most one per key at a time, each followed in a thread that keeps the tail of its output, and
the last run of each key kept on disk so that a page shows it after the console restarts."""

from __future__ import annotations

import collections
import datetime
import json
import shlex
import subprocess
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..durable import write_atomic
from .schedules import NAME_RE

OUTPUT_LINES = 50  # lines of a background run's output kept for the page
KEEP_LINES = 500  # lines its summary reads: the end of what it printed


class AlreadyRunning(Exception):
    """The console has a run of this kind in progress already."""


@dataclass
class BackgroundRun:
    """One command the console started: what, by whom, when, and how it ended."""

    key: str
    what: str
    by: str
    started: str  # ISO 8601, local time
    pid: int | None = None
    finished: str | None = None
    exit: int | None = None
    result: str = "running"  # then what the summary says, or "error"
    message: str = ""  # one line
    output: list[str] = field(default_factory=list)  # the last lines of output
    detail: dict = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.finished is None

    def to_json(self) -> dict:
        return asdict(self)


# What a finished run means: (exit code, the last lines of its output) → (result, one-line
# message, detail for the page).
Summary = Callable[[int, list[str]], tuple[str, str, dict]]


class Runs:
    """Commands started in child processes by the console, at most one per key at a time.

    The last run of each key is kept in ``<directory>/<key>.json`` so that the page shows it
    after the console restarts; a run the record says was in progress but that this process
    does not follow (the console was restarted meanwhile) is shown as "unknown". The command's
    own lock (the update lock, a schedule's lock) still keeps a run started elsewhere, by cron
    or by hand, from overlapping it: the command then ends at once and says so."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self._lock = threading.Lock()
        self._active: dict[str, tuple[BackgroundRun, threading.Thread]] = {}

    def start(self, key: str, argv: Sequence[str], *, what: str, by: str,
              summary: Summary) -> BackgroundRun:
        """Start ``argv`` (an argument list, never a shell line); AlreadyRunning when a run
        of ``key`` is in progress; OSError when the command cannot start."""
        _check_key(key)
        with self._lock:
            if key in self._active:
                running = self._active[key][0]
                raise AlreadyRunning(f"{running.what} is running already (started "
                                     f"{running.started} by {running.by})")
            run = BackgroundRun(key, what, by, _now())
            # Its own session: a signal meant for the console (Ctrl-C) does not end an update
            # half way; the command's own locks and staging make a later one safe anyway.
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    close_fds=True, start_new_session=True)
            run.pid = proc.pid
            thread = threading.Thread(target=self._follow, args=(run, proc, summary),
                                      name=f"lmsav-run-{key}", daemon=True)
            self._active[key] = (run, thread)
            self._save(run)
            thread.start()
        return run

    def get(self, key: str) -> BackgroundRun | None:
        """The run in progress, else the last one recorded; None when there was none."""
        _check_key(key)
        with self._lock:
            active = self._active.get(key)
            if active is not None:
                return BackgroundRun(**active[0].to_json())  # a copy: the follower changes it
        try:
            run = BackgroundRun(**json.loads(self._path(key).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if run.running:
            run.result = "unknown"
            run.message = ("the console restarted while it ran; the last result below says "
                           "how it ended")
        return run

    def wait(self, key: str, timeout: float) -> BackgroundRun | None:
        """Wait for the run of ``key`` to end (tests, and a caller that has time)."""
        with self._lock:
            active = self._active.get(key)
        if active is not None:
            active[1].join(timeout)
        return self.get(key)

    def _follow(self, run: BackgroundRun, proc: subprocess.Popen, summary: Summary) -> None:
        # Only the tail is kept: a sweep may print a line per file.
        tail: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        result, message, detail = "error", "", {}
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                tail.append(raw.decode(errors="replace").rstrip("\n"))
            code = proc.wait()
            try:
                result, message, detail = summary(code, list(tail))
            except Exception as problem:  # noqa: BLE001 - the run ended: say so, whatever
                message = f"cannot read its result: {problem}"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            with self._lock:
                run.exit = proc.returncode
                run.result, run.message, run.detail = result, message, detail
                run.output = [line for line in tail if line.strip()][-OUTPUT_LINES:]
                run.finished = _now()
                self._active.pop(run.key, None)
                self._save(run)

    def _save(self, run: BackgroundRun) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomic(self._path(run.key),
                         (json.dumps(run.to_json(), indent=2) + "\n").encode(), 0o600)
        except OSError:
            pass  # the page still shows the run this process follows

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"


_RUNS: dict[Path, Runs] = {}
_RUNS_LOCK = threading.Lock()


def runs_for(directory: Path) -> Runs:
    """The one Runs of a directory in this process (every request thread shares it)."""
    key = Path(directory).absolute()
    with _RUNS_LOCK:
        if key not in _RUNS:
            _RUNS[key] = Runs(key)
        return _RUNS[key]


def schedule_key(name: str) -> str:
    """The key of a schedule's runs (an update has the key "update")."""
    return f"schedule-{name}"


def _check_key(key: str) -> None:
    """A key names a file: a schedule's name, with or without its prefix."""
    if not NAME_RE.fullmatch(key.removeprefix("schedule-")):
        raise ValueError(f"not a run key: {key!r}")


def cron_run_summary(code: int, lines: list[str]) -> tuple[str, str, dict]:
    """What `lmsav cron run NAME` said: its ``lmsav cron: name=… result=…`` line, the line
    saying the schedule is running already, or why it could not start."""
    for line in lines:
        if line.startswith("lmsav: error: "):
            return "error", line[len("lmsav: error: "):], {}
    for line in lines:
        if line.startswith("lmsav: ") and line.endswith("not started again"):
            return "skipped", line[len("lmsav: "):], {}
    logged = [line[len("lmsav cron: "):] for line in lines if line.startswith("lmsav cron: ")]
    if not logged:
        return "error", f"lmsav cron run exited with {code} and logged no result", {}
    fields = dict(word.partition("=")[::2] for word in _words(logged[-1]))
    return fields.get("result", "error"), logged[-1], fields


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")
