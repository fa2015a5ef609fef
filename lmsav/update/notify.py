"""Tell the running components that a new database is active: best effort, each reported.

- The daemon: RELOAD over its socket when its status shows it uses the updated directory (it
  loads and self-tests the new database beside the old one and swaps without refusing a
  request); SIGUSR2 through its pid file when the socket does not answer.
- The spool watcher: SIGHUP (it reloads and replaces its workers as each finishes its message),
  found as the process holding ``<spool>/watch.lock``, when the configuration's database is the
  updated directory.
- qmail's in-process path opens ``current`` per message: nothing to tell.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from .. import proclocks

WATCH_LOCK = "watch.lock"


def tell_running(root: Path, configured_database: Path, daemon_socket: Path,
                 daemon_pid_file: Path, spool_dir: Path) -> dict[str, str]:
    """What each component was told, e.g. {"daemon": "reload requested", …}."""
    return {
        "daemon": _tell_daemon(root, daemon_socket, daemon_pid_file),
        "spool watcher": _tell_watcher(root, configured_database, spool_dir),
    }


def uses(root: Path, directory) -> bool:
    """Whether a database directory is the managed one (``<root>/current`` or a version)."""
    try:
        directory = Path(directory)
        return directory.resolve().parent == root.resolve() or \
            Path(os.path.abspath(directory)) == Path(os.path.abspath(root)) / "current"
    except (OSError, RuntimeError):
        return False


def _tell_daemon(root: Path, socket_path: Path, pid_file: Path) -> str:
    from ..daemon.client import Client, ClientError

    client = Client(socket_path, timeout=10)
    try:
        status = client.status()
    except ClientError:
        return _signal_pid_file(pid_file, signal.SIGUSR2)
    directory = (status.get("database") or {}).get("directory", "")
    if not uses(root, directory):
        return f"not told: it uses {directory or 'another database'}"
    try:
        return "reload requested" if client.reload() else "reload not accepted"
    except ClientError as err:
        return f"reload failed: {err}"


def _signal_pid_file(pid_file: Path, sig: signal.Signals) -> str:
    try:
        text = pid_file.read_text().strip()
    except OSError:
        return "not running"
    if not text.isdigit():
        return f"not running ({pid_file} holds no pid)"
    try:
        os.kill(int(text), sig)
    except ProcessLookupError:
        return f"not running ({pid_file} is stale)"
    except PermissionError:
        return f"cannot signal pid {text}: not permitted"
    return f"sent {sig.name} to pid {text}"


def _tell_watcher(root: Path, configured_database: Path, spool_dir: Path) -> str:
    lock = spool_dir / WATCH_LOCK
    pid = lock_holder(lock)
    if pid is None:
        return "not running"
    if not uses(root, configured_database):
        return f"not told: the configured database is {configured_database}"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return "not running"
    except PermissionError:
        return f"cannot signal pid {pid}: not permitted"
    return f"sent SIGHUP to pid {pid}"


def lock_holder(lock: Path) -> int | None:
    """The pid that took the flock on ``lock`` (from /proc/locks), if it still holds it open."""
    for pid, confirmed in proclocks.holders(lock) or ():
        if confirmed:
            return pid
    return None


__all__ = ["lock_holder", "tell_running", "uses"]
