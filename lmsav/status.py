"""One snapshot of every component, for `lmsav ctl status`, the SNMP agent and its traps.

``collect(settings)`` looks, and changes nothing: the daemon is asked PING and VERSION over its
socket (1 s each), the spool watcher is found as the holder of ``<spool>/watch.lock`` in
/proc/locks (so a watcher starting at that moment never finds its lock taken), and the rest is
read from the state directory: the updater's store and state, the spool's directory listings,
the quarantine and backup entries, the setup manifest. No signature database is loaded, so a
snapshot costs milliseconds and may be taken every few seconds.

``problems(snapshot, settings)`` turns a snapshot into the lines an administrator must act on;
an empty list is a healthy system.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from . import __version__, paths, proclocks

DAEMON_TIMEOUT = 1.0  # a daemon slower than this to answer PING is reported as not answering
MIN_FREE_PERCENT = 5.0
DAEMON_UNIT = "lmsav-daemon.service"  # the units `lmsav setup` installs (lmsav.setup.units)
SPOOL_UNIT = "lmsav-spool.service"
MANIFEST_NAME = "manifest.json"  # lmsav.setup.manifest
WATCH_LOCK = "watch.lock"  # lmsav.spool.watcher.LOCK_NAME


def collect(settings, now: float | None = None, stores: Callable[[], dict] | None = None) -> dict:
    """The state of every component as a JSON-ready dict (see lmsav-snmp(8) for the fields).
    ``stores`` answers the "quarantine" and "backup" parts from an index (the console's);
    without it each store's entries are counted and measured, which takes seconds with a
    hundred thousand of them."""
    now = time.time() if now is None else now
    state = Path(settings.paths.state_dir)
    manifest = _manifest(state)
    spool_dir = Path(settings.spool_dir())
    return {
        "time": now,
        "lmsav_version": __version__,
        "daemon": _daemon(settings, manifest),
        "watcher": _watcher(spool_dir, manifest),
        "qmail": _qmail(manifest),
        "database": _database(settings, now),
        "update": _update(settings),
        "spool": _spool(spool_dir),
        **(stores() if stores is not None else stores_usage(state)),
        "disk": _disk(spool_dir),
    }


def stores_usage(state: Path) -> dict:
    """The "quarantine" and "backup" parts of the snapshot, counted on disk."""
    return {"quarantine": _store_usage(paths.quarantine_dir(state)),
            "backup": {"messages": _store_usage(paths.backup_dir(state), skip=("files",)),
                       "files": _store_usage(paths.backup_files_dir(state))}}


def problems(snapshot: dict, settings) -> list[str]:
    """What is wrong in ``snapshot``, one line each; [] when everything is healthy."""
    out = []
    for key, name in (("daemon", "the daemon"), ("watcher", "the spool watcher")):
        part = snapshot[key]
        if part["configured"] and not part["running"]:
            out.append(f"{name} is not running ({part['detail']})")
    database = snapshot["database"]
    max_age = settings.snmp.database_max_age
    if database_outdated(snapshot, settings):
        out.append(f"the signature database was built {_span(database['age_seconds'])} ago, "
                   f"more than {_span(max_age)} (database_max_age): updates are not arriving")
    update = snapshot["update"]
    if update["failed"]:
        out.append(f"the last update failed: {update['last_error'] or 'no reason recorded'}")
    if spool_over_threshold(snapshot, settings):
        spool = snapshot["spool"]
        out.append(f"{spool['depth']} messages wait in the spool {spool['directory']}, more "
                   f"than {settings.snmp.spool_threshold} (spool_threshold)")
    if spool_error := snapshot["spool"].get("error"):
        out.append(spool_error)
    for store in (snapshot["quarantine"], snapshot["backup"]["messages"],
                  snapshot["backup"]["files"]):
        if store.get("error"):
            out.append(store["error"])
    disk = snapshot["disk"]
    if disk.get("free_percent") is not None and disk["free_percent"] < MIN_FREE_PERCENT:
        out.append(f"{disk['free_percent']:.1f}% free on the file system of {disk['path']} "
                   f"(less than {MIN_FREE_PERCENT:.0f}%)")
    return out


def database_outdated(snapshot: dict, settings) -> bool:
    max_age = settings.snmp.database_max_age
    age = snapshot["database"]["age_seconds"]
    return bool(max_age) and age is not None and age > max_age


def spool_over_threshold(snapshot: dict, settings) -> bool:
    threshold = settings.snmp.spool_threshold
    return bool(threshold) and snapshot["spool"]["depth"] > threshold


# -- the daemon ----------------------------------------------------------------------------------

def _daemon(settings, manifest: dict) -> dict:
    from .daemon.client import Client, ClientError

    socket_path = Path(settings.daemon_socket())
    pid_file = Path(settings.daemon.pid_file or Path(settings.paths.run_dir) / "lmsav.pid")
    pid = _pid_from(pid_file)
    alive = pid is not None and _alive(pid)
    client = Client(socket_path, timeout=DAEMON_TIMEOUT)
    version = None
    try:
        answering = client.ping()
        version = client.version() if answering else None
        detail = "answers PING" if answering else f"{socket_path} gave no PONG"
    except ClientError as err:
        answering, detail = False, str(err)
    configured = DAEMON_UNIT in manifest["units"] or pid_file.exists() or \
        socket_path.exists()
    if not answering and pid is not None and not alive:
        detail += f"; {pid_file} names pid {pid}, which is gone"
    return {
        "configured": configured,
        "running": answering,
        "pid": pid if alive else None,
        "socket": str(socket_path),
        "pid_file": str(pid_file),
        "version": version,
        "detail": detail,
    }


def _pid_from(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


# -- the spool watcher ---------------------------------------------------------------------------

def _watcher(spool_dir: Path, manifest: dict) -> dict:
    lock = spool_dir / WATCH_LOCK
    pid, running = _lock_holder(lock)
    if running:
        detail = f"holds {lock}"
    elif lock.exists():
        detail = f"nobody holds {lock}"
    else:
        detail = f"{lock} does not exist: no watcher has run on this spool"
    return {
        "configured": SPOOL_UNIT in manifest["units"],
        "running": running,
        "pid": pid,
        "spool": str(spool_dir),
        "detail": detail,
    }


def _lock_holder(lock: Path) -> tuple[int | None, bool]:
    """(pid, held) for the flock on ``lock``: read from /proc/locks, which lists only locks
    held now, so nothing is taken; where /proc/locks cannot be read, a shared lock is tried
    and let go at once."""
    if not os.path.exists(lock):
        return None, False
    found = proclocks.holders(lock)
    if found is None:
        return None, _probe(lock)
    for pid, _confirmed in found:
        # After a kill -9 of the parent its workers still hold the lock under its pid.
        return (pid if pid > 0 and _alive(pid) else None), True
    return None, False


def _probe(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


# -- the qmail wrapper ---------------------------------------------------------------------------

def _qmail(manifest: dict) -> dict:
    """Configured when `lmsav setup` put lmsav-qmail-queue into tcpserver's rules and the
    rules file still names it."""
    entry = manifest["mta"].get("qmail")
    if entry is None:
        return {"configured": False, "rules": None, "detail": "not set up by lmsav setup"}
    from .qmail import setup as qmail_setup

    rules = Path((entry.get("config") or {}).get("qmail_rules") or qmail_setup.DEFAULT_RULES)
    try:
        text = rules.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        return {"configured": False, "rules": str(rules),
                "detail": f"{rules}: {err.strerror}"}
    for line in text.splitlines():
        try:
            rule = qmail_setup.parse_rule(line)
        except qmail_setup.SetupError:
            continue
        value = rule.get("QMAILQUEUE") if rule is not None else None
        if value and os.path.basename(value) == "lmsav-qmail-queue":
            return {"configured": True, "rules": str(rules),
                    "detail": f"QMAILQUEUE={value} in {rules}"}
    return {"configured": False, "rules": str(rules),
            "detail": f"{rules} no longer names lmsav-qmail-queue"}


def _manifest(state: Path) -> dict:
    """What `lmsav setup` recorded under this state directory: unit names and MTAs."""
    found: dict = {"units": set(), "mta": {}}
    try:
        data = json.loads((paths.setup_dir(state) / MANIFEST_NAME).read_text(encoding="utf-8"))
        entries = data.get("entries") if isinstance(data, dict) else None
    except (OSError, ValueError):
        return found
    for entry in entries if isinstance(entries, list) else ():
        if not isinstance(entry, dict):
            continue
        if entry.get("kind") == "unit" and isinstance(entry.get("name"), str):
            found["units"].add(entry["name"])
        elif entry.get("kind") == "mta" and isinstance(entry.get("name"), str):
            found["mta"][entry["name"]] = entry
    return found


# -- the database and the updater ----------------------------------------------------------------

def update_root(settings) -> Path:
    return Path(settings.update.dir or paths.bases_dir(settings.paths.state_dir))


def _database(settings, now: float) -> dict:
    """The database lmsav scans with: from the updater's record when it is the managed one,
    else from the container headers (512 bytes each) of the configured directory."""
    from .update.notify import uses
    from .update.store import Store

    directory = Path(settings.database_dir())
    root = update_root(settings)
    managed = uses(root, directory)
    databases: list[dict] = []
    current = Store(root).current() if managed else None
    if current is not None:
        for name, info in sorted((current.meta.get("databases") or {}).items()):
            if isinstance(info, dict):
                databases.append({"name": name, "version": info.get("version"),
                                  "built_at": _number(info.get("built_at"))})
    else:
        databases = _headers(directory)
    built = [d["built_at"] for d in databases if d["built_at"] is not None]
    newest = max(built) if built else None
    if databases:
        version = ", ".join(f"{d['name']} {d['version']}" for d in databases)
    else:
        version = _bundled_version(directory)
    return {
        "directory": str(directory),
        "managed": managed,
        "active": current.label if current is not None else None,
        "version": version,
        "signatures": current.meta.get("signatures") if current is not None else None,
        "databases": databases,
        "built_at": newest,
        "age_seconds": max(0.0, now - newest) if newest is not None else None,
    }


def _headers(directory: Path) -> list[dict]:
    from .scanner.signatures.cvd import ContainerError, read_header

    found = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        stem, _, ext = name.rpartition(".")
        if ext not in ("cvd", "cld", "cud"):
            continue
        try:
            header = read_header(directory / name)
        except ContainerError:
            continue
        found.append({"name": stem, "version": header.version,
                      "built_at": float(header.stime) if header.stime else None})
    return found


def _bundled_version(directory: Path) -> str | None:
    """The version line of a database.toml (lmsav's bundled database), if there is one."""
    import tomllib

    try:
        with open(directory / "database.toml", "rb") as fh:
            version = tomllib.load(fh).get("version")
    except (OSError, ValueError):
        return None
    return str(version) if version is not None else None


def _update(settings) -> dict:
    from .update import state as state_mod
    from .update.store import Store

    root = update_root(settings)
    state = state_mod.load(root)
    store = Store(root)
    return {
        "directory": str(root),
        "active": store.current_label(),
        "versions": [v.label for v in reversed(store.versions())],
        "last_check": state.last_check,
        "last_success": state.last_success,
        "last_result": state.last_result or None,
        "last_error": state.last_error or None,
        "failed": state.last_result == "failed",
    }


def _number(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) else None


# -- the spool, the stores, the disk -------------------------------------------------------------

def _spool(spool_dir: Path) -> dict:
    from .spool.nqueue import QUEUE_STATES, depth

    error = None
    for state in QUEUE_STATES:
        try:
            os.listdir(spool_dir / state)
        except FileNotFoundError:
            pass
        except OSError as err:
            error = f"cannot read the spool directory {spool_dir / state}: {err.strerror}"
    counts = depth(spool_dir)
    out = {"directory": str(spool_dir), **counts, "depth": counts["new"] + counts["work"]}
    if error:
        out["error"] = error
    return out


def _store_usage(root: Path, skip: tuple[str, ...] = ()) -> dict:
    """Entries and bytes of a quarantine-like store (one directory per entry)."""
    from .mail.backup import ID_RE

    entries = size = 0
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        names = []
    except OSError as err:
        return {"directory": str(root), "entries": None, "bytes": None,
                "error": f"cannot read {root}: {err.strerror}"}
    for name in names:
        if name in skip or not ID_RE.match(name):
            continue
        entry = root / name
        try:
            with os.scandir(entry) as it:
                size += sum(f.stat(follow_symlinks=False).st_size for f in it
                            if f.is_file(follow_symlinks=False))
        except OSError:
            continue  # deleted while we looked, or not a directory
        entries += 1
    return {"directory": str(root), "entries": entries, "bytes": size}


def _disk(spool_dir: Path) -> dict:
    """Free space of the file system the spool is on (its nearest existing directory)."""
    path = spool_dir
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError as err:
        return {"path": str(path), "free_bytes": None, "total_bytes": None,
                "free_percent": None, "error": err.strerror}
    total = st.f_blocks * st.f_frsize
    free = st.f_bavail * st.f_frsize
    return {"path": str(path), "free_bytes": free, "total_bytes": total,
            "free_percent": round(100.0 * free / total, 2) if total else None}


def _span(seconds: float) -> str:
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 86400:.1f} days"


__all__ = ["collect", "database_outdated", "problems", "spool_over_threshold", "update_root"]
