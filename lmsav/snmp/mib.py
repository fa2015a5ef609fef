"""The LMSAV-MIB (contrib/snmp/LMSAV-MIB.txt) as data: every object's OID and type, and its
value in a status snapshot. The agent serves these values; the monitor's notifications carry
some of them.

An OID here is a tuple of ints; ``BASE`` is lmsavMIB, under net-snmp's playpen
(NET-SNMP-MIB::netSnmpPlaypen.5766), and every object is placed relative to it, so moving the
subtree (``--base``) moves everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..status import database_outdated

BASE = (1, 3, 6, 1, 4, 1, 8072, 9999, 9999, 5766)

# Types in the words of net-snmp's pass_persist protocol.
INTEGER, GAUGE, UNSIGNED, COUNTER64, STRING = "integer", "gauge", "unsigned", "counter64", \
    "string"
TRUE, FALSE = 1, 2  # SNMPv2-TC TruthValue
UP, DOWN, NOT_CONFIGURED = 1, 2, 3  # lmsavComponentStatus
MAX_STRING = 255  # DisplayString
MAX_GAUGE = 2**32 - 1

Value = tuple[str, int | str]  # (type, value)


@dataclass(frozen=True)
class View:
    """What one answer is made of: a snapshot of lmsav.status, the settings, the problems and
    the statistics totals (None when the store cannot be read)."""

    snapshot: dict
    settings: object
    problems: list[str]
    totals: dict[str, int] | None


def parse_oid(text: str) -> tuple[int, ...] | None:
    """``.1.3.6…`` or ``1.3.6…`` as a tuple; None for anything else."""
    parts = text.strip().strip(".").split(".")
    if not parts or not all(p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def format_oid(oid: tuple[int, ...]) -> str:
    return "." + ".".join(map(str, oid))


def text(value: object) -> str:
    """A DisplayString: one line, at most 255 characters."""
    line = " ".join(str(value if value is not None else "").split())
    return line[:MAX_STRING]


def gauge(value: float | None) -> int:
    return max(0, min(int(value or 0), MAX_GAUGE))


def truth(flag: bool) -> int:
    return TRUE if flag else FALSE


# -- components (lmsavComponentTable) ------------------------------------------------------------

COMPONENTS = ("daemon", "watcher", "qmail", "updater")  # row index = position + 1


def component_rows(snapshot: dict) -> list[dict]:
    """One row per component: name, status, configured, pid, detail."""
    rows = []
    for name in ("daemon", "watcher"):
        part = snapshot[name]
        status = UP if part["running"] else DOWN if part["configured"] else NOT_CONFIGURED
        rows.append({"name": name, "status": status, "configured": part["configured"],
                     "pid": part["pid"] or 0, "detail": part["detail"]})
    qmail = snapshot["qmail"]
    rows.append({"name": "qmail", "status": UP if qmail["configured"] else NOT_CONFIGURED,
                 "configured": qmail["configured"], "pid": 0, "detail": qmail["detail"]})
    update = snapshot["update"]
    has_run = bool(update["last_result"] or update["versions"])
    status = DOWN if update["failed"] else UP if has_run else NOT_CONFIGURED
    detail = (f"last update failed: {update['last_error']}" if update["failed"] else
              f"last result: {update['last_result']}" if update["last_result"] else
              f"no update has run in {update['directory']}")
    rows.append({"name": "updater", "status": status, "configured": has_run, "pid": 0,
                 "detail": detail})
    return rows


COMPONENT_COLUMNS: tuple[tuple[int, str, Callable[[dict], int | str]], ...] = (
    (2, STRING, lambda row: text(row["name"])),
    (3, INTEGER, lambda row: row["status"]),
    (4, INTEGER, lambda row: truth(row["configured"])),
    (5, INTEGER, lambda row: int(row["pid"])),
    (6, STRING, lambda row: text(row["detail"])),
)
COMPONENT_ENTRY = (1, 1, 1, 1)  # lmsavObjects.lmsavComponents.lmsavComponentTable.entry


# -- scalars -------------------------------------------------------------------------------------

def _database(v: View) -> dict:
    return v.snapshot["database"]


def _update(v: View) -> dict:
    return v.snapshot["update"]


def _spool(v: View) -> dict:
    return v.snapshot["spool"]


def _kib(size: int | None) -> int:
    return gauge(-(-(size or 0) // 1024))


def _free_percent(v: View) -> int:
    value = v.snapshot["disk"].get("free_percent")
    return gauge(value) if value is not None else 0


def _backup(v: View, key: str) -> int:
    backup = v.snapshot["backup"]
    return sum(backup[part][key] or 0 for part in ("messages", "files"))


# (suffix under lmsavObjects, name, type, value); instance .0 is added for each.
SCALARS: tuple[tuple[tuple[int, ...], str, str, Callable[[View], int | str]], ...] = (
    ((2, 1), "lmsavDatabaseVersion", STRING, lambda v: text(_database(v)["version"])),
    ((2, 2), "lmsavDatabaseBuilt", UNSIGNED, lambda v: gauge(_database(v)["built_at"])),
    ((2, 3), "lmsavDatabaseAge", UNSIGNED, lambda v: gauge(_database(v)["age_seconds"])),
    ((2, 4), "lmsavDatabaseStale", INTEGER,
     lambda v: truth(database_outdated(v.snapshot, v.settings))),
    ((2, 5), "lmsavDatabaseSignatures", UNSIGNED, lambda v: gauge(_database(v)["signatures"])),
    ((2, 6), "lmsavUpdateLastResult", STRING, lambda v: text(_update(v)["last_result"])),
    ((2, 7), "lmsavUpdateLastSuccess", UNSIGNED, lambda v: gauge(_update(v)["last_success"])),
    ((2, 8), "lmsavUpdateLastError", STRING, lambda v: text(_update(v)["last_error"])),
    ((3, 1), "lmsavSpoolNew", GAUGE, lambda v: gauge(_spool(v)["new"])),
    ((3, 2), "lmsavSpoolWork", GAUGE, lambda v: gauge(_spool(v)["work"])),
    ((3, 3), "lmsavSpoolHold", GAUGE, lambda v: gauge(_spool(v)["hold"])),
    ((3, 4), "lmsavSpoolDepth", GAUGE, lambda v: gauge(_spool(v)["depth"])),
    ((3, 5), "lmsavSpoolThreshold", GAUGE, lambda v: gauge(v.settings.snmp.spool_threshold)),
    ((3, 6), "lmsavSpoolFreePercent", GAUGE, _free_percent),
    ((3, 7), "lmsavSpoolFreeMBytes", GAUGE,
     lambda v: gauge((v.snapshot["disk"].get("free_bytes") or 0) >> 20)),
    ((4, 1), "lmsavQuarantineEntries", GAUGE,
     lambda v: gauge(v.snapshot["quarantine"]["entries"])),
    ((4, 2), "lmsavQuarantineKBytes", GAUGE, lambda v: _kib(v.snapshot["quarantine"]["bytes"])),
    ((4, 3), "lmsavBackupEntries", GAUGE, lambda v: gauge(_backup(v, "entries"))),
    ((4, 4), "lmsavBackupKBytes", GAUGE, lambda v: _kib(_backup(v, "bytes"))),
    ((6, 1), "lmsavHealthy", INTEGER, lambda v: truth(not v.problems)),
    ((6, 2), "lmsavProblemCount", GAUGE, lambda v: gauge(len(v.problems))),
    ((6, 3), "lmsavProblems", STRING, lambda v: text("; ".join(v.problems))),
)

# lmsavCounters.N ← the statistics store's totals() key.
COUNTERS: tuple[tuple[int, str, str], ...] = (
    (1, "lmsavMessages", "messages"),
    (2, "lmsavInfected", "infected"),
    (3, "lmsavSuspicious", "suspicious"),
    (4, "lmsavProtected", "protected"),
    (5, "lmsavCorrupted", "corrupted"),
    (6, "lmsavErrors", "errors"),
    (7, "lmsavFiltered", "filtered"),
    (8, "lmsavBytes", "bytes"),
    (9, "lmsavFilesScanned", "files_scanned"),
)


def scalar_oid(name: str, base: tuple[int, ...] = BASE) -> tuple[int, ...]:
    """The instance OID (``….0``) of a scalar of the MIB, by its name."""
    for suffix, scalar, _type, _value in SCALARS:
        if scalar == name:
            return base + (1, *suffix, 0)
    for number, counter, _key in COUNTERS:
        if counter == name:
            return base + (1, 5, number, 0)
    if name in NOTIFY_OBJECTS:
        return base + (1, 7, NOTIFY_OBJECTS[name], 0)
    raise KeyError(name)


def values(view: View, base: tuple[int, ...] = BASE) -> list[tuple[tuple[int, ...], Value]]:
    """Every object instance with its value, in OID order (as GETNEXT walks them)."""
    out: dict[tuple[int, ...], Value] = {}
    rows = component_rows(view.snapshot)
    for column, kind, get in COMPONENT_COLUMNS:
        for index, row in enumerate(rows, 1):
            out[base + COMPONENT_ENTRY + (column, index)] = (kind, get(row))
    for suffix, _name, kind, get in SCALARS:
        out[base + (1, *suffix, 0)] = (kind, get(view))
    if view.totals is not None:
        for number, _name, key in COUNTERS:
            out[base + (1, 5, number, 0)] = (COUNTER64, max(0, int(view.totals.get(key, 0))))
    return sorted(out.items())


# -- notifications -------------------------------------------------------------------------------

NOTIFY_OBJECTS = {"lmsavNotifyComponent": 1, "lmsavNotifyVirusCount": 2,
                  "lmsavNotifyInterval": 3, "lmsavNotifyText": 4}
NOTIFY_TYPES = {"lmsavNotifyComponent": STRING, "lmsavNotifyVirusCount": UNSIGNED,
                "lmsavNotifyInterval": UNSIGNED, "lmsavNotifyText": STRING}
NOTIFICATIONS = {
    "lmsavVirusFound": 1,
    "lmsavUpdateFailed": 2,
    "lmsavDatabaseOutdated": 3,
    "lmsavComponentStopped": 4,
    "lmsavComponentStarted": 5,
    "lmsavSpoolOverThreshold": 6,
}


def notification_oid(name: str, base: tuple[int, ...] = BASE) -> tuple[int, ...]:
    return base + (0, NOTIFICATIONS[name])


__all__ = ["BASE", "COMPONENTS", "NOTIFICATIONS", "View", "component_rows", "format_oid",
           "notification_oid", "parse_oid", "scalar_oid", "values"]
