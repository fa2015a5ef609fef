"""What the daemon runs with, resolved once from the settings and the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any


class DaemonError(Exception):
    """The daemon cannot start: a listener, the database or the user is not usable."""


# Bound before privileges are dropped, or fixed for the life of the process: a reload that
# changes one of these keeps the running value and says a restart is needed.
RESTART_ONLY = ("socket", "tcp", "socket_mode", "socket_group", "user", "pid_file")

UNLIMITED = 1 << 20  # what 0 ("no limit") in max_connections and max_queue becomes


@dataclass
class Options:
    """Everything the daemon needs, resolved from settings and the command line."""

    socket: Path | None
    tcp: tuple[str, ...]
    database: Path
    workers: int
    socket_mode: int = 0o660
    socket_group: str = ""
    user: str = ""
    pid_file: Path | None = None
    stream_max_length: int = 25 << 20
    read_timeout: float = 120.0
    idle_timeout: float = 30.0
    max_connections: int = 200
    max_queue: int = 100
    heuristic_names: bool = True
    follow_symlinks: bool = False
    tmp_dir: str | None = None
    limits: Any = None  # scanner.limits.Limits
    scan_archives: bool = True
    scan_mail: bool = True
    config_path: Path | None = None  # groups.d/ beside it, for LMSAVMAIL
    settings: Any = None  # the config.Settings these came from (the mail service's)


def options_from_settings(settings, socket_path: str | None, tcp: tuple[str, ...],
                          database: str | None, workers: int | None,
                          pid_file: str | None, config_path: Path | None = None) -> Options:
    d = settings.daemon
    try:
        mode = int(d.socket_mode, 8)
    except ValueError:
        raise DaemonError(f'[daemon] socket_mode = "{d.socket_mode}": expected an octal '
                          'mode like "0660"') from None
    sock = Path(socket_path) if socket_path else settings.daemon_socket()
    count = workers if workers else (d.workers or os.cpu_count() or 1)
    return Options(
        socket=sock,
        tcp=tuple(tcp) if tcp else tuple(d.tcp),
        database=Path(database) if database else Path(settings.database_dir()),
        workers=count,
        socket_mode=mode,
        socket_group=d.socket_group,
        user=d.user,
        pid_file=Path(pid_file) if pid_file else (d.pid_file or Path(settings.paths.run_dir) /
                                                  "lmsav.pid"),
        stream_max_length=d.stream_max_length,
        read_timeout=d.read_timeout,
        idle_timeout=d.idle_timeout,
        max_connections=d.max_connections or UNLIMITED,
        max_queue=d.max_queue or UNLIMITED,
        heuristic_names=d.heuristic_names,
        follow_symlinks=settings.scan.follow_symlinks,
        tmp_dir=str(settings.paths.tmp_dir) if settings.paths.tmp_dir else None,
        limits=settings.limits(),
        scan_archives=settings.scan.scan_archives,
        scan_mail=settings.scan.scan_mail,
        config_path=Path(config_path) if config_path else None,
        settings=settings,
    )


def merge_reloaded(running: Options, new: Options) -> tuple[Options, list[str]]:
    """``new`` with the restart-only settings of ``running`` kept; the names of those that
    differ (a restart would apply them)."""
    changed = [name for name in RESTART_ONLY if getattr(running, name) != getattr(new, name)]
    merged = Options(**{f.name: getattr(running if f.name in RESTART_ONLY else new, f.name)
                        for f in fields(Options)})
    return merged, changed
