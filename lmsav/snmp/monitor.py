"""`lmsav snmp monitor`: notifications of the LMSAV-MIB on changes of lmsav's status.

Each poll takes a status snapshot and the statistics totals, compares them with what the
previous poll saw, and sends a trap for each change (an inform, acknowledged by the sink,
with ``[snmp] informs``; the sender, ``traps.Sender``, makes the difference):

- lmsavComponentStopped / lmsavComponentStarted: the daemon or the spool watcher stopped or
  started (a configured one found stopped by the first poll counts as stopped);
- lmsavDatabaseOutdated, lmsavSpoolOverThreshold: the condition began (again only after it
  ended in between);
- lmsavUpdateFailed: an update run failed (once per run);
- lmsavVirusFound: the infected count grew; at most one per ``[snmp] trap_interval``, carrying
  how many were found since the previous one.

What the previous poll saw is kept in ``<state_dir>/snmp/monitor.json``, so ``--once`` from
cron sees the same changes as a monitor that runs on, and a restart sends no trap twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import status
from ..durable import write_atomic
from .mib import BASE, NOTIFY_TYPES, SCALARS, notification_oid, scalar_oid
from .traps import Trap

log = logging.getLogger("lmsav.snmp")

WATCHED = ("daemon", "watcher")
NAMES = {"daemon": "the daemon", "watcher": "the spool watcher"}


def state_file(settings) -> Path:
    return Path(settings.paths.state_dir) / "snmp" / "monitor.json"


@dataclass
class Seen:
    """What the previous poll saw."""

    running: dict[str, bool] = field(default_factory=dict)
    outdated: bool = False
    spool_over: bool = False
    failed_update: float | None = None  # last_check of the failed update already reported
    infected: int | None = None  # the store's infected total at the previous poll
    pending: int = 0  # infected found since the last virus-found trap, not yet sent
    last_virus_trap: float | None = None
    since: float | None = None  # when counting began (for the first trap's interval)


def load(path: Path) -> Seen | None:
    """None when there is no state yet (the first poll) or it cannot be read."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        log.warning("%s cannot be read (%s): starting afresh", path, err)
        return None
    seen = Seen()
    if not isinstance(raw, dict):
        return None
    for key, kind in (("outdated", bool), ("spool_over", bool), ("pending", int)):
        if isinstance(raw.get(key), kind):
            setattr(seen, key, raw[key])
    for key in ("failed_update", "last_virus_trap", "since"):
        if isinstance(raw.get(key), (int, float)):
            setattr(seen, key, float(raw[key]))
    if isinstance(raw.get("infected"), int):
        seen.infected = raw["infected"]
    if isinstance(raw.get("running"), dict):
        seen.running = {k: v for k, v in raw["running"].items() if isinstance(v, bool)}
    return seen


def save(path: Path, seen: Seen) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(asdict(seen), sort_keys=True) + "\n").encode())


def changes(previous: Seen | None, snapshot: dict, totals: dict | None, settings, now: float,
            base: tuple[int, ...] = BASE) -> tuple[list[Trap], Seen]:
    """The traps due since ``previous`` and what to remember for the next poll."""
    first = previous is None
    seen = Seen() if previous is None else Seen(**asdict(previous))
    traps: list[Trap] = []

    def trap(name: str, *binds: tuple[str, int | str]) -> None:
        varbinds = tuple((_oid(obj, base), _type(obj), value) for obj, value in binds)
        traps.append(Trap(name, notification_oid(name, base), varbinds))

    for name in WATCHED:
        part = snapshot[name]
        was = seen.running.get(name)
        now_running = bool(part["running"])
        if was and not now_running or (was is None and first and part["configured"]
                                       and not now_running):
            trap("lmsavComponentStopped", ("lmsavNotifyComponent", name),
                 ("lmsavNotifyText", _line(f"{NAMES[name]} is not running ({part['detail']})")))
        elif was is False and now_running:
            trap("lmsavComponentStarted", ("lmsavNotifyComponent", name),
                 ("lmsavNotifyText", _line(f"{NAMES[name]} is running ({part['detail']})")))
        seen.running[name] = now_running

    outdated = status.database_outdated(snapshot, settings)
    if outdated and not seen.outdated:
        database = snapshot["database"]
        trap("lmsavDatabaseOutdated",
             ("lmsavDatabaseVersion", _line(database["version"])),
             ("lmsavDatabaseAge", int(database["age_seconds"])),
             ("lmsavNotifyText", _line(_problem(snapshot, settings, "the signature database"))))
    seen.outdated = outdated

    over = status.spool_over_threshold(snapshot, settings)
    if over and not seen.spool_over:
        trap("lmsavSpoolOverThreshold",
             ("lmsavSpoolDepth", snapshot["spool"]["depth"]),
             ("lmsavSpoolThreshold", settings.snmp.spool_threshold),
             ("lmsavNotifyText", _line(_problem(snapshot, settings, "messages wait"))))
    seen.spool_over = over

    update = snapshot["update"]
    if update["failed"] and update["last_check"] != seen.failed_update:
        trap("lmsavUpdateFailed",
             ("lmsavUpdateLastError", _line(update["last_error"])),
             ("lmsavUpdateLastSuccess", int(update["last_success"] or 0)))
        seen.failed_update = update["last_check"]

    if totals is not None:
        infected = int(totals.get("infected") or 0)
        if seen.infected is None:
            seen.since = now  # the first count is where counting begins, not news
        else:
            # A smaller total is a new store: all of it is new.
            seen.pending += infected - seen.infected if infected >= seen.infected else infected
        seen.infected = infected
        interval = settings.snmp.trap_interval
        if seen.pending > 0 and (seen.last_virus_trap is None
                                 or now - seen.last_virus_trap >= interval):
            began = seen.last_virus_trap if seen.last_virus_trap is not None else seen.since
            trap("lmsavVirusFound",
                 ("lmsavNotifyVirusCount", seen.pending),
                 ("lmsavNotifyInterval", int(max(0.0, now - (began or now)))),
                 ("lmsavInfected", infected))
            seen.pending = 0
            seen.last_virus_trap = now
    return traps, seen


def poll(settings, totals_reader, sender, path: Path, now: float | None = None,
         base: tuple[int, ...] = BASE) -> list[tuple[Trap, int]]:
    """One poll: look, send what changed, remember. Returns each trap due with the number
    of sinks that took it."""
    now = time.time() if now is None else now
    snapshot = status.collect(settings, now=now)
    traps, seen = changes(load(path), snapshot, totals_reader(), settings, now, base)
    results = [(trap, sender.send(trap)) for trap in traps]
    try:
        save(path, seen)
    except OSError as err:
        log.error("cannot remember the monitor's state in %s: %s", path,
                  err.strerror or err)
    return results


def _oid(obj: str, base: tuple[int, ...]) -> tuple[int, ...]:
    return scalar_oid(obj, base)


def _type(obj: str) -> str:
    if obj in NOTIFY_TYPES:
        return NOTIFY_TYPES[obj]
    for _suffix, name, kind, _value in SCALARS:
        if name == obj:
            return kind
    return "counter64"  # the counters of lmsavCounters


def _problem(snapshot: dict, settings, starts: str) -> str:
    for line in status.problems(snapshot, settings):
        if starts in line:
            return line
    return ""


def _line(value) -> str:
    return " ".join(str(value or "").split())[:255]


__all__ = ["Seen", "changes", "load", "poll", "save", "state_file"]
