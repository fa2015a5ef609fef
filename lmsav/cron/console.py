"""What a front end other than the command line (the web console) asks of `lmsav cron`: the
schedules with their next runs and last results, a sweep schedule from a form, and the command
lines it runs in the background. Adding and removing are those of `lmsav cron add|remove`
(`changes`), the runs in child processes are `background`'s; their names are here as well, so
that a page asks this one module."""

from __future__ import annotations

import datetime
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .background import (
    KEEP_LINES,
    OUTPUT_LINES,
    AlreadyRunning,
    BackgroundRun,
    Runs,
    cron_run_summary,
    runs_for,
    schedule_key,
)
from .changes import (
    Changed,
    Place,
    add,
    missing_paths,
    remove,
    typed_path,
    update_schedule,
)
from .changes import ChangeError as ConsoleError
from .changes import sweep_schedule as _sweep_schedule
from .run import RunResult, last_result
from .schedules import Schedule, ScheduleError, check_name

NEXT_IN_LIST = 3  # as `lmsav cron list`


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


# -- a form --------------------------------------------------------------------------------------

def sweep_schedule(name: str, when: str, paths: Sequence[str], scan_options: str = "",
                   incremental: bool = True, systemd: bool = False) -> Schedule:
    """A sweep schedule from a form: ``paths`` one per item, absolute; ``scan_options`` the
    `lmsav scan` options as they would be typed after the paths (split as a shell splits
    words, never run by one)."""
    try:
        words = shlex.split(scan_options)
    except ValueError as err:
        raise ConsoleError(f"scan options {scan_options}: {err}") from None
    return _sweep_schedule(name, when, paths, words, incremental=incremental, systemd=systemd,
                           read_path=typed_path)


# -- command lines for the background ------------------------------------------------------------

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


__all__ = ["KEEP_LINES", "NEXT_IN_LIST", "OUTPUT_LINES", "AlreadyRunning", "BackgroundRun",
           "Changed", "ConsoleError", "Listed", "Place", "Runs", "add", "cron_run_summary",
           "list_schedules", "lmsav_argv", "load_schedule", "missing_paths", "remove",
           "run_argv", "runs_for", "schedule_key", "sweep_schedule", "update_schedule"]
