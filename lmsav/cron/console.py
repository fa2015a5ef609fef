"""What a front end other than the command line (the web console) asks of `lmsav cron`: the
schedules with their next runs and last results, adding a sweep or an update schedule with the
checks and one-line errors of `lmsav cron add`, removing one, and running a command in a child
process in the background (`lmsav cron run NAME`, `lmsav update`) without two at once."""

from __future__ import annotations

import collections
import datetime
import json
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..durable import write_atomic
from . import expression as expression_mod
from . import install as install_mod
from .run import RunResult, StateFiles, forget_last_result, last_result
from .schedules import (
    NAME_RE,
    Schedule,
    ScheduleError,
    Store,
    check_name,
    schedules_dir,
    split_scan_args,
)

NEXT_IN_LIST = 3  # as `lmsav cron list`
OUTPUT_LINES = 50  # lines of a background run's output kept for the page
KEEP_LINES = 500  # lines its summary reads: the end of what it printed


class ConsoleError(Exception):
    """One line, the text `lmsav cron` prints after ``lmsav: error:`` for the same mistake."""


@dataclass(frozen=True)
class Place:
    """Where one configuration keeps its schedules and their state, and how its jobs start."""

    config_file: Path
    state_dir: Path
    config_explicit: bool = False

    @property
    def store(self) -> Store:
        return Store(schedules_dir(self.config_file))

    @property
    def state(self) -> StateFiles:
        return StateFiles(Path(self.state_dir))

    @property
    def job_config(self) -> Path | None:
        """The --config the installed jobs pass on, as `lmsav cron` decides it."""
        path = Path(self.config_file).absolute()
        return path if self.config_explicit or path.exists() else None


# -- reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Listed:
    """One schedule as `lmsav cron list` shows it."""

    schedule: Schedule
    file: Path
    next: list[datetime.datetime]
    last: RunResult | None

    def to_json(self) -> dict:
        """The object of `lmsav cron list --json`."""
        data = self.schedule.to_json()
        data["file"] = str(self.file)
        data["next"] = [t.isoformat() for t in self.next]
        data["last"] = self.last.to_json() if self.last else None
        return data


def list_schedules(place: Place, count: int = NEXT_IN_LIST,
                   now: datetime.datetime | None = None) -> tuple[list[Listed], list[str]]:
    """Every schedule that loads, and one line for each file that does not."""
    store, state = place.store, place.state
    rows, broken = [], []
    for name in store.names():
        try:
            schedule = store.load(name)
        except ScheduleError as err:
            broken.append(str(err))
            continue
        rows.append(Listed(schedule, store.path(name), schedule.expression.next_times(count, now),
                           last_result(state, name, since=schedule.created)))
    return rows, broken


def load_schedule(place: Place, name: str) -> Schedule:
    """One schedule by a name from outside (a URL): checked before it reaches a path."""
    try:
        check_name(name)
    except ScheduleError as err:
        raise ConsoleError(f'NAME "{name}": {err}') from None
    try:
        return place.store.load(name)
    except ScheduleError as err:
        raise ConsoleError(str(err)) from None


# -- adding and removing ---------------------------------------------------------------------------

def checked_expression(name: str, when: str, systemd: bool = False
                       ) -> expression_mod.CronExpression:
    """NAME and the schedule checked as `lmsav cron add` checks them."""
    try:
        check_name(name)
    except ScheduleError as err:
        raise ConsoleError(f'NAME "{name}": {err}') from None
    try:
        expression = expression_mod.parse(when)
    except expression_mod.ExpressionError as err:
        raise ConsoleError(f'--schedule "{when}": {err}') from None
    if systemd:
        try:
            expression.on_calendar()
        except expression_mod.ExpressionError as err:
            raise ConsoleError(f'--systemd: --schedule "{when}" has {err}') from None
    return expression


def sweep_schedule(name: str, when: str, paths: Sequence[str], scan_options: str = "",
                   incremental: bool = True, systemd: bool = False) -> Schedule:
    """A sweep schedule from a form: ``paths`` one per item, ``scan_options`` the `lmsav scan`
    options as they would be typed after the paths (split as a shell splits words, never run
    by one)."""
    expression = checked_expression(name, when, systemd)
    try:
        tokens = shlex.split(scan_options)
    except ValueError as err:
        raise ConsoleError(f"scan options {scan_options}: {err}") from None
    try:
        options, more_paths = split_scan_args(tokens)
    except ScheduleError as err:
        raise ConsoleError(str(err)) from None
    wanted = [p.strip() for p in (*paths, *more_paths) if p.strip()]
    if not wanted:
        raise ConsoleError("no paths to sweep: give them with --paths PATH")
    for path in wanted:
        if any(c in path for c in "\r\n\0"):
            raise ConsoleError(f"--paths {path!r}: a path on one line, please")
        if not os.path.isabs(path):
            # The command line makes it absolute against the shell's directory; the console
            # has no directory of the administrator's to read it against.
            raise ConsoleError(f"--paths {path!r}: an absolute path, please")
    return Schedule(name=name, schedule=expression.text,
                    paths=tuple(dict.fromkeys(os.path.normpath(p) for p in wanted)),
                    scan_options=tuple(options), incremental=incremental, systemd=systemd,
                    created=_created())


def update_schedule(name: str, when: str, systemd: bool = False) -> Schedule:
    """An update schedule: `lmsav update` with the configuration's sources and databases."""
    expression = checked_expression(name, when, systemd)
    return Schedule(name=name, schedule=expression.text, kind="update", systemd=systemd,
                    created=_created())


def missing_paths(schedule: Schedule) -> list[str]:
    """What `lmsav cron add sweep` warns about: paths that do not exist (yet)."""
    return [f"{path}: no such file or directory (yet); the sweep reports an error for it "
            f"until it exists" for path in schedule.paths if not os.path.exists(path)]


@dataclass
class Changed:
    """What adding or removing did: the file, whether one was replaced, and what the
    installation says (lines as `lmsav cron` prints them)."""

    path: Path
    replaced: bool = False
    messages: list[str] = field(default_factory=list)
    systemctl: str = ""  # what to run for systemd to see the change, when anything


def add(place: Place, schedule: Schedule, replace: bool = False,
        target: install_mod.Target | None = None) -> Changed:
    """Store the schedule and reinstall every schedule, as `lmsav cron add` does."""
    store = place.store
    target = target or install_mod.resolve_target()
    name = schedule.name
    try:
        with store.locked():
            existed = store.exists(name)
            if existed and not replace:
                raise ConsoleError(f"schedule '{name}' exists ({store.path(name)}); use "
                                   f"--replace, or `lmsav cron remove {name}` first")
            installed = _change(place, store, target, name, lambda: store.save(schedule))
            forget_last_result(place.state, name)
    except (ScheduleError, install_mod.InstallError) as err:
        raise ConsoleError(str(err)) from None
    except OSError as err:
        raise ConsoleError(f"{err.filename or store.directory}: {err.strerror or err}") from None
    enable = [f"{install_mod.unit_stem(schedule)}.timer"] if schedule.systemd else []
    return Changed(store.path(name), existed, installed.messages,
                   _systemctl_text(target, installed, enable))


def remove(place: Place, name: str, target: install_mod.Target | None = None) -> Changed:
    """Delete a schedule and reinstall the others, as `lmsav cron remove` does."""
    store = place.store
    load_schedule(place, name)  # a bad or unknown name: the error lists the schedules there are
    target = target or install_mod.resolve_target()
    try:
        with store.locked():
            installed = _change(place, store, target, name, lambda: store.delete(name))
            forget_last_result(place.state, name)
    except (ScheduleError, install_mod.InstallError) as err:
        raise ConsoleError(str(err)) from None
    except OSError as err:
        raise ConsoleError(f"{err.filename or store.directory}: {err.strerror or err}") from None
    return Changed(store.path(name), False, installed.messages,
                   _systemctl_text(target, installed, []))


def _change(place: Place, store: Store, target: install_mod.Target, name: str,
            change: Callable[[], object]) -> install_mod.Installed:
    """Make ``change`` to one schedule file and reinstall; put the file back if that fails."""
    before = store.read_raw(name)
    change()
    try:
        return _install_all(place, store, target)
    except (ScheduleError, install_mod.InstallError, OSError):
        if before is None:
            store.path(name).unlink(missing_ok=True)
        else:
            store.write_raw(name, before)
        try:
            _install_all(place, store, target)
        except (ScheduleError, install_mod.InstallError, OSError):
            pass  # the first error is the one to report
        raise


def _install_all(place: Place, store: Store, target: install_mod.Target
                 ) -> install_mod.Installed:
    schedules = store.load_all()
    lmsav = install_mod.lmsav_command()
    commands = {s.name: install_mod.job_command(s, lmsav, place.job_config) for s in schedules}
    return install_mod.install(target, schedules, commands, store.directory)


def _systemctl_text(target: install_mod.Target, installed: install_mod.Installed,
                    enable: list[str]) -> str:
    """The systemctl commands a changed unit needs; the console never runs them (it runs
    unprivileged), it shows them."""
    commands = []
    if installed.timers_removed:
        commands.append(target.systemctl("stop", *installed.timers_removed))
    if installed.units_changed or enable:
        commands.append(target.systemctl("daemon-reload"))
    if enable:
        commands.append(target.systemctl("enable", "--now", *enable))
    return " && ".join(shlex.join(command) for command in commands)


def _created() -> datetime.datetime:
    return datetime.datetime.now().astimezone().replace(microsecond=0)


# -- running in the background ---------------------------------------------------------------------

def lmsav_argv(place: Place, *args: str, profile: str | None = None) -> list[str]:
    """An lmsav command line for a child process: this interpreter, the configuration in use."""
    config = place.job_config
    return [sys.executable, "-m", "lmsav", *(["--config", str(config)] if config else []),
            *(["--profile", profile] if profile else []), *args]


def run_argv(place: Place, name: str, profile: str | None = None) -> list[str]:
    """`lmsav cron run NAME`, what cron and systemd run: the schedule's own lock keeps a
    second run of it from starting, its result is logged and kept for `lmsav cron list`.
    Not --quiet: the result line and a refusal to start again are then always printed."""
    load_schedule(place, name)
    return lmsav_argv(place, "cron", "run", name, profile=profile)


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
    return f"schedule-{name}"


def _check_key(key: str) -> None:
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


__all__ = ["AlreadyRunning", "BackgroundRun", "Changed", "ConsoleError", "Listed", "Place",
           "Runs", "add", "checked_expression", "cron_run_summary", "list_schedules",
           "lmsav_argv", "load_schedule", "missing_paths", "remove", "run_argv", "runs_for",
           "schedule_key", "sweep_schedule", "update_schedule"]
