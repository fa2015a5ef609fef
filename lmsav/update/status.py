"""``lmsav update --status``: what is active, what is kept, when it was checked, how old it is,
and when `lmsav cron` runs the next update."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from .. import paths
from . import state as state_mod
from .notify import uses
from .store import Store

CLOCK_SLACK = 300.0  # build times this far ahead of the clock are tolerated silently


def status(root: Path, configured_database: Path, *, max_age: float, check_interval: float,
           network: bool, now: float, schedules: Path | None = None) -> dict:
    """The status as a JSON-ready dict; ``warnings`` lists what an administrator should know,
    ``ok`` is False when no database is active or it is older than ``max_age``.

    ``schedules`` is the ``schedules.d`` whose update schedules update ``root`` (see
    :func:`schedules_for`); None when none do."""
    store = Store(root)
    state = state_mod.load(root)
    current = store.current()
    warnings: list[str] = []
    databases = []
    newest = None
    if current is not None:
        for name, info in sorted((current.meta.get("databases") or {}).items()):
            if not isinstance(info, dict):
                continue
            databases.append({"name": name, **info})
            built = info.get("built_at")
            if isinstance(built, (int, float)):
                newest = built if newest is None else max(newest, built)
                if built > now + CLOCK_SLACK:
                    warnings.append(f"{name} was built in the future ({info.get('build_time')}): "
                                    f"is the system clock right?")
    age = max(0.0, now - newest) if newest is not None else None
    too_old = age is not None and max_age > 0 and age > max_age
    if current is None:
        warnings.append(f"no database installed in {root}: run lmsav update")
    elif too_old:
        warnings.append(f"the newest database was built {_days(age)} ago, more than max_age "
                        f"({_days(max_age)}): updates are not arriving")
    if state.last_result == "failed" and state.last_error:
        warnings.append(f"the last update failed: {state.last_error}")
    if current is not None and not uses(root, configured_database):
        warnings.append(f"[paths] database is {configured_database}, not {root}/current: "
                        f"lmsav scans with another database than the one updated")
    next_check = None
    if network and state.last_check is not None and check_interval and \
            state.last_result in state_mod.OK_RESULTS:
        next_check = max(now, state.last_check + check_interval)
    cool_downs = {s: until for s, until in state.cool_downs.items()
                  if state.cooling(s, now) is not None}
    next_run, schedule = None, None
    if schedules is not None:
        found = next_scheduled(schedules, now, warnings)
        if found is not None:
            schedule, moment = found
            next_run = moment.isoformat()
    return {
        "directory": str(root),
        "active": current.label if current else None,
        "installed_at": current.installed_at if current else None,
        "source": current.meta.get("source") if current else None,
        "signatures": current.meta.get("signatures") if current else None,
        "build_seconds": current.meta.get("build_seconds") if current else None,
        "databases": databases,
        "age_seconds": age,
        "max_age": max_age,
        "too_old": too_old,
        "versions": [{"label": v.label, "installed_at": v.installed_at,
                      "active": current is not None and v.label == current.label,
                      "source": v.meta.get("source"), "signatures": v.meta.get("signatures")}
                     for v in reversed(store.versions())],
        "last_check": state.last_check,
        "last_success": state.last_success,
        "last_result": state.last_result or None,
        "last_error": state.last_error or None,
        "next_check": next_check,
        "cool_downs": cool_downs,
        "next_run": next_run,
        "schedule": schedule,
        "configured_database": str(configured_database),
        "warnings": warnings,
        "ok": current is not None and not too_old,
    }


def schedules_for(config_file: Path, required: bool, root: Path) -> Path | None:
    """The ``schedules.d`` beside ``config_file`` when its update schedules update ``root``.

    A scheduled update runs ``lmsav --config FILE update`` with neither --database nor
    --profile, so it updates the directory that the file alone names; None when that is
    another directory than ``root`` or the file cannot be read."""
    from ..config import ConfigError, load_settings
    from ..cron.schedules import schedules_dir

    try:
        plain = load_settings(config_file, None, {}, required=required)
    except ConfigError:
        return None
    scheduled = plain.update.dir or paths.bases_dir(plain.paths.state_dir)
    if os.path.abspath(scheduled) != os.path.abspath(root):
        return None
    return schedules_dir(config_file)


def next_scheduled(schedules: Path, now: float, warnings: list[str]
                   ) -> tuple[str, datetime.datetime] | None:
    """The update schedule in ``schedules`` that runs first after ``now`` and when, computed as
    `lmsav cron list` computes it; a schedule file that does not load is a warning."""
    from ..cron.schedules import ScheduleError, Store

    store = Store(schedules)
    start = datetime.datetime.fromtimestamp(now).astimezone()
    first: tuple[str, datetime.datetime] | None = None
    for name in store.names():
        try:
            schedule = store.load(name)
        except ScheduleError as err:
            warnings.append(f"{err} (lmsav cron show {name})")
            continue
        if schedule.kind != "update":
            continue
        [moment] = schedule.expression.next_times(1, start)
        if first is None or moment < first[1]:
            first = (name, moment)
    return first


def _days(seconds: float) -> str:
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


__all__ = ["next_scheduled", "schedules_for", "status"]
