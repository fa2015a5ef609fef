"""The logging tree of one lmsav process, set from [log]: how much each component says, where
its lines go (stderr, syslog, a file reopened for logrotate, journald) and in which form (text
or JSON lines).

Every lmsav logger is named ``lmsav.<component>`` (daemon, spool, qmail, mail, scan, update,
cron, stats, snmp, setup); the engine's and the sweeps' modules (``lmsav.scanner.*``,
``lmsav.sweep.*``) are the component ``scan``, and a logger of no component (``lmsav.workers``)
speaks for the process's own component. A line never stops a process: a log file or socket
that fails is said once on stderr, and the lines go to stderr from then on.
"""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import os
import signal
import socket
import struct
import sys
from pathlib import Path

from . import paths

COMPONENTS = ("daemon", "spool", "qmail", "mail", "scan", "update", "cron", "stats", "snmp",
              "setup")
ROOT = "lmsav"
# Loggers named after their module, older than the component names.
ALIASES = {"lmsav.sweep": "scan", "lmsav.scanner": "scan"}
# Loggers shared by several components: they take the level of the process's component.
SHARED = ("lmsav.workers",)
LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
          "debug": logging.DEBUG}
SYSLOG_SOCKET = "/dev/log"
JOURNAL_SOCKET = "/run/systemd/journal/socket"
LOG_FILE_NAME = "lmsav.log"
LOG_DIR_MODE, LOG_FILE_MODE = 0o750, 0o640
FACILITIES = {
    "mail": logging.handlers.SysLogHandler.LOG_MAIL,
    "daemon": logging.handlers.SysLogHandler.LOG_DAEMON,
    "user": logging.handlers.SysLogHandler.LOG_USER,
    "cron": logging.handlers.SysLogHandler.LOG_CRON,
    **{f"local{n}": logging.handlers.SysLogHandler.LOG_LOCAL0 + n for n in range(8)},
}
# syslog(3) priorities, which journald takes too.
PRIORITIES = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
              logging.DEBUG: 7}
# What every LogRecord has; anything else was given with ``extra=`` and goes into JSON lines.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message", "asctime", "taskName"}


class LogSetupError(Exception):
    """A detached process has nowhere to write its lines (one line; the command exits 2)."""


def notice(text: str) -> None:
    """One line on stderr about logging itself; a closed stderr is no reason to fail."""
    try:
        sys.stderr.write(f"lmsav: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def component_of(name: str, default: str = "") -> str:
    """The component a logger belongs to, ``default`` for a logger of none."""
    parts = name.split(".")
    if len(parts) > 1 and parts[0] == ROOT and parts[1] in COMPONENTS:
        return parts[1]
    for prefix, component in ALIASES.items():
        if name == prefix or name.startswith(prefix + "."):
            return component
    return default


def loggers_of(component: str) -> list[str]:
    """The logger names whose level is the component's."""
    return [f"{ROOT}.{component}", *(p for p, c in ALIASES.items() if c == component)]


def ident(component: str) -> str:
    return f"lmsav-{component}" if component else "lmsav"


def default_log_file(settings) -> Path:
    """[log] file when it says "": /var/log/lmsav/lmsav.log in the system layout (which
    `lmsav setup` makes and has logrotate rotate), else the state directory's log/."""
    if settings.log.file:
        return Path(settings.log.file)
    if paths.layout() == paths.SYSTEM:
        return paths.SYSTEM_LOG_DIR / LOG_FILE_NAME
    return paths.log_dir(settings.paths.state_dir) / LOG_FILE_NAME


# -- formats ----------------------------------------------------------------------------------

def _time(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created).astimezone()
    return moment.isoformat(timespec="milliseconds")


def extra_fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class LineFormatter(logging.Formatter):
    """``time ident[pid]: level: message`` (text), or one JSON object per line with time,
    level, component, pid, message and the record's extra fields. ``stamp`` False leaves out
    what syslog and journald record themselves (time, level; syslog keeps ``ident[pid]:``)."""

    def __init__(self, component: str, form: str = "text", stamp: bool = True,
                 short: bool = False, tag: bool = True):
        super().__init__()
        self.component, self.form, self.stamp, self.short, self.tag = (
            component, form, stamp, short, tag)

    def format(self, record: logging.LogRecord) -> str:
        component = component_of(record.name, self.component)
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        level = record.levelname.lower()
        if self.form == "json":
            fields = {"time": _time(record), "level": level, "component": component,
                      "pid": record.process, "message": message}
            fields.update({k: v for k, v in extra_fields(record).items() if k not in fields})
            body = json.dumps(fields, ensure_ascii=False, default=str)
            if self.stamp:
                return body
        elif self.short:
            return f"lmsav: {level}: {message}"
        elif self.stamp:
            return f"{_time(record)} {ident(component)}[{record.process}]: {level}: {message}"
        else:
            body = message
        return f"{ident(component)}[{record.process}]: {body}" if self.tag else body


# -- destinations -----------------------------------------------------------------------------

class _FallBack:
    """After the first failure: say so once on stderr and write every line there instead."""

    broken: logging.Handler | None = None

    def _give_up(self, what: str, record: logging.LogRecord | None) -> None:
        err = sys.exc_info()[1]
        reason = getattr(err, "strerror", None) or err or "failed"
        notice(f"cannot write {what}: {reason}; logging to standard error")
        self.broken = StderrHandler()
        self.broken.setFormatter(LineFormatter(getattr(self, "component", ""),
                                               getattr(self.formatter, "form", "text")))
        if record is not None:
            self.broken.handle(record)


class StderrHandler(logging.StreamHandler):
    """Standard error as it is when a line is written (a test runner may swap it)."""

    def __init__(self):
        logging.Handler.__init__(self)

    @property
    def stream(self):
        return sys.stderr

    def handleError(self, record):
        pass  # stderr itself is gone: there is nowhere left to say so


_reopen_requested = False


def _request_reopen(_signum, _frame) -> None:
    # Only a flag: the handler's lock may be held by the line being written right now.
    global _reopen_requested
    _reopen_requested = True


class LogFileHandler(_FallBack, logging.handlers.WatchedFileHandler):
    """A log file, reopened before the next line when it was moved (checked at every line,
    so forked workers follow too) and after SIGUSR1 (logrotate's postrotate)."""

    def __init__(self, path: Path, component: str):
        self.component = component
        super().__init__(str(path), encoding="utf-8")

    def emit(self, record):
        global _reopen_requested
        if self.broken is not None:
            self.broken.handle(record)
            return
        try:
            if _reopen_requested:
                _reopen_requested = False
                if self.stream is not None:
                    self.stream.close()
                self.stream = self._open()
                self._statstream()
            super().emit(record)
        except Exception:  # noqa: BLE001 - a line never stops mail
            self.handleError(record)

    def handleError(self, record):
        if self.broken is None:
            self._give_up(f"the log file {self.baseFilename}", record)

    def close(self):
        try:
            super().close()
        except OSError:
            pass  # what was buffered for a failing file is on stderr already


class SyslogHandler(_FallBack, logging.handlers.SysLogHandler):
    """syslog over its unix socket; ``ident[pid]: `` starts every message."""

    def __init__(self, address: str, facility: int, component: str):
        self.component = component
        super().__init__(address, facility)
        if self.socket.fileno() == -1:
            # The stdlib ignores a missing socket here (as openlog(3) does); lmsav falls back.
            self._connect_unixsocket(address)

    def emit(self, record):
        if self.broken is not None:
            self.broken.handle(record)
        else:
            super().emit(record)

    def handleError(self, record):
        if self.broken is None:
            self._give_up(f"to syslog ({self.address})", record)


class JournalHandler(_FallBack, logging.Handler):
    """journald's native protocol: one datagram of KEY=value fields per line on its socket
    (binary-safe form for values with a newline), as sd_journal_send(3) sends them."""

    def __init__(self, address: str, facility: int, component: str):
        super().__init__()
        self.address, self.facility, self.component = address, facility, component
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.sock.connect(address)
        except OSError:
            self.sock.close()
            raise

    def emit(self, record):
        if self.broken is not None:
            self.broken.handle(record)
            return
        try:
            component = component_of(record.name, self.component)
            fields = {
                "MESSAGE": self.format(record),
                "PRIORITY": PRIORITIES.get(record.levelno, 6),
                "SYSLOG_IDENTIFIER": ident(component),
                "SYSLOG_FACILITY": self.facility,
                "SYSLOG_PID": record.process,
                "LMSAV_COMPONENT": component,
                "CODE_FILE": record.pathname, "CODE_LINE": record.lineno,
                "CODE_FUNC": record.funcName,
            }
            for key, value in extra_fields(record).items():
                fields["LMSAV_" + "".join(c if c.isalnum() else "_" for c in key).upper()] = (
                    ",".join(map(str, value)) if isinstance(value, (list, tuple)) else value)
            self.sock.send(journal_datagram(fields))
        except Exception:  # noqa: BLE001 - a line never stops mail
            self.handleError(record)

    def handleError(self, record):
        if self.broken is None:
            self._give_up(f"to journald ({self.address})", record)

    def close(self):
        self.sock.close()
        super().close()


def journal_datagram(fields: dict) -> bytes:
    out = bytearray()
    for key, value in fields.items():
        data = str(value).encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode() + b"=" + data + b"\n"
    return bytes(out)


def prepare_log_file(path: Path, user: str = "") -> None:
    """Make the log file, and its directory, when missing: for the owner and the group only.
    As root with a service ``user``, what is made is that user's, so the process can reopen
    the file after dropping privileges (and logrotate's ``su`` rotate it). OSError when the
    file cannot be written."""
    owner = _service_ids(user)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    try:
        fd = os.open(path, flags, LOG_FILE_MODE)
    except FileNotFoundError:
        path.parent.mkdir(mode=LOG_DIR_MODE, parents=True, exist_ok=True)
        if owner:
            os.chown(path.parent, *owner)
        fd = os.open(path, flags, LOG_FILE_MODE)
    try:
        if owner and os.fstat(fd).st_uid == 0:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def _service_ids(user: str) -> tuple[int, int] | None:
    if not user or os.geteuid() != 0:
        return None
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


# -- the one configuration of a process ---------------------------------------------------------

_installed: list[tuple[logging.Logger, logging.Handler]] = []
_saved: dict[str, tuple[int, bool]] = {}
_saved_usr1: list = []


def configure(settings, component: str = "", *, verbosity: int = 0, interactive: bool = False,
              detached: bool = False, user: str = "", file: Path | str | None = None) -> str:
    """Set the levels and the one destination of this process from ``settings.log``, in place
    of any earlier call. ``verbosity`` is the root -v (1: debug) or -q (-1: errors only) and
    overrides [log] level and levels. An ``interactive`` command (one that prints its own
    results) logs only warnings and errors on stderr, in the short ``lmsav: level: …`` form,
    unless -v. ``detached``: stderr is gone, so "stderr" means syslog. ``file`` (a command's
    own log file option) sends the lines to that file. Returns the destination in use."""
    reset()
    log = settings.log
    default = LEVELS[log.level]
    levels = {name: LEVELS[level] for name, _, level in (item.partition(":")
                                                         for item in log.levels)}
    if verbosity:
        default, levels = (logging.DEBUG if verbosity > 0 else logging.ERROR), {}
    handler, where = _destination(settings, component, detached, user, file)
    if interactive and where == "stderr":
        if verbosity <= 0:
            default = max(default, logging.WARNING)
            levels = {name: max(level, logging.WARNING) for name, level in levels.items()}
        if log.format == "text":
            handler.setFormatter(LineFormatter(component, short=True))
    _set_level(ROOT, default)
    for name in COMPONENTS:  # every one, so that nothing set elsewhere outlives -v or -q
        for logger_name in loggers_of(name):
            _set_level(logger_name, levels.get(name, default))
    for logger_name in SHARED:
        _set_level(logger_name, levels.get(component, default))
    _attach(logging.getLogger(ROOT), handler)
    if not interactive:
        _catch_usr1()  # logrotate's postrotate signal must never end a service
    return where


def syslog_only(logger_name: str, component: str, facility: str, form: str = "text") -> None:
    """Lines of ``logger_name`` to syslog only (with ``facility``), where there is a syslog;
    nowhere else otherwise: for a command whose standard error is read by people (cron mails
    it) and that keeps its own record of the same lines."""
    logger = logging.getLogger(logger_name)
    _set_level(logger_name, logger.level or logging.INFO, propagate=False)
    try:
        handler: logging.Handler = SyslogHandler(SYSLOG_SOCKET, FACILITIES[facility], component)
        handler.setFormatter(LineFormatter(component, form, stamp=False))
    except OSError:
        handler = logging.NullHandler()
    _attach(logger, handler)


def reset() -> None:
    """Undo ``configure`` and ``syslog_only``: handlers closed, levels as they were."""
    global _reopen_requested
    while _installed:
        logger, handler = _installed.pop()
        logger.removeHandler(handler)
        handler.close()
    for name, (level, propagate) in _saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = propagate
    _saved.clear()
    if _saved_usr1:
        try:
            signal.signal(signal.SIGUSR1, _saved_usr1.pop())
        except ValueError:
            pass
    _reopen_requested = False


def _set_level(name: str, level: int, propagate: bool | None = None) -> None:
    logger = logging.getLogger(name)
    _saved.setdefault(name, (logger.level, logger.propagate))
    logger.setLevel(level)
    if propagate is not None:
        logger.propagate = propagate


def _attach(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.addHandler(handler)
    _installed.append((logger, handler))


def _catch_usr1() -> None:
    try:
        _saved_usr1.append(signal.signal(signal.SIGUSR1, _request_reopen))
    except ValueError:
        pass  # not the main thread: the file is still reopened when it has been moved


def _destination(settings, component: str, detached: bool, user: str,
                 file: Path | str | None) -> tuple[logging.Handler, str]:
    """The handler and the name of the destination really used, falling back (and saying so
    once on stderr) when syslog, journald or the file cannot be used."""
    log = settings.log
    where = "file" if file else log.destination
    facility = FACILITIES[log.syslog_facility]
    if where == "stderr" and detached:
        where = "syslog"  # no terminal once detached
    if where == "journald":
        try:
            handler: logging.Handler = JournalHandler(JOURNAL_SOCKET, facility, component)
            handler.setFormatter(LineFormatter(component, log.format, stamp=False, tag=False))
            return handler, "journald"
        except OSError as err:
            if not detached:
                notice(f"journald: cannot use {JOURNAL_SOCKET}: {err.strerror or err}; logging "
                       f"to standard error")
                where = "stderr"
            else:
                where = "syslog"
    tried_syslog = where == "syslog"
    if where == "syslog":
        handler = _syslog(component, facility, log.format)
        if handler is not None:
            return handler, "syslog"
        file = default_log_file(settings)
        notice(f"{SYSLOG_SOCKET} not found; logging to {file}")
        where = "file"
    if where == "file":
        path = Path(file) if file else default_log_file(settings)
        try:
            prepare_log_file(path, user)
            handler = LogFileHandler(path, component)
            handler.setFormatter(LineFormatter(component, log.format))
            return handler, "file"
        except OSError as err:
            problem = f"cannot write the log file {path}: {err.strerror or err}"
        if detached:
            handler = None if tried_syslog else _syslog(component, facility, log.format)
            if handler is None:
                raise LogSetupError(f"{problem}, and {SYSLOG_SOCKET} is not there either")
            notice(f"{problem}; logging to syslog")
            return handler, "syslog"
        notice(f"{problem}; logging to standard error")
    handler = StderrHandler()
    handler.setFormatter(LineFormatter(component, log.format))
    return handler, "stderr"


def _syslog(component: str, facility: int, form: str) -> logging.Handler | None:
    try:
        handler = SyslogHandler(SYSLOG_SOCKET, facility, component)
    except OSError:
        return None
    handler.setFormatter(LineFormatter(component, form, stamp=False))
    return handler


def verbosity_of(ctx) -> int:
    """The root command's -v (1) or -q (-1) of this invocation; 0 when a command group runs on
    its own."""
    obj = ctx.find_root().obj
    return obj.get("verbosity", 0) if isinstance(obj, dict) else 0
