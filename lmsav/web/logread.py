"""The Logs page's reading: lmsav's log files read backwards from their end within a byte
budget (a log of any size answers at once), parsed into records and filtered by component,
level and text; the journal through `journalctl` with an argument list and a line count.

The files are those lmsav writes (lmsav.logsetup, lmsav.cron.run, lmsav.web.audit): the [log]
file (also where a process goes when syslog is missing), the spool watcher's [spool] log_file,
the scheduled runs' <state_dir>/log/cron.log and the console's <state_dir>/web/audit.jsonl.
A page names a source by its key, never by a path.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import logsetup, paths

LEVELS = ("error", "warning", "info", "debug")  # most severe first
_RANK = {name: rank for rank, name in enumerate(LEVELS)} | {"critical": 0}
COMPONENTS = (*logsetup.COMPONENTS, "web")
MAX_LINES = 1000  # the most lines a page asks for
SCAN_BYTES = 16 << 20  # read at most this much of a file's end per request
BLOCK = 256 << 10
MAX_MESSAGE = 8000  # characters of one record shown; a longer one is cut
MAX_CONTINUATION = 200  # lines after a record's first (a traceback) kept with it
JOURNAL_TIMEOUT = 10.0
JOURNAL_MAX_LINES = 5000
AUDIT_FILE = "audit.jsonl"  # lmsav.web.audit.AUDIT_FILE

# "2026-12-04T21:33:13.123+00:00 lmsav-daemon[123]: info: message" (logsetup.LineFormatter)
_TEXT_RE = re.compile(r"(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<ident>lmsav(?:-(?P<component>[a-z]+))?)"
                      r"\[(?P<pid>\d+)\]: (?P<level>critical|error|warning|info|debug): "
                      r"(?P<message>.*)", re.DOTALL)
# "2026-12-04T21:33:13+00:00 name=nightly result=clean exit=0 …" (lmsav.cron.run)
_CRON_RE = re.compile(r"(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<fields>name=.*)", re.DOTALL)
_CRON_RESULT_RE = re.compile(r"\bresult=(\S+)")
_CRON_LEVELS = {"error": "error", "failed": "error", "found": "warning"}


@dataclass(frozen=True)
class LogRecord:
    """One record: its first line and any continuation lines (a traceback)."""

    time: str
    component: str
    level: str
    pid: str
    message: str


@dataclass(frozen=True)
class LogFilter:
    component: str = ""  # one of COMPONENTS, "" for all
    level: str = ""  # the least severe level shown ("warning": warnings and errors)
    text: str = ""  # a substring, any case

    def __post_init__(self):
        if self.component and self.component not in COMPONENTS:
            raise ValueError(f"unknown component {self.component[:40]!r}: choose "
                             f"{', '.join(COMPONENTS)}")
        if self.level and self.level not in LEVELS:
            raise ValueError(f"unknown level {self.level[:40]!r}: choose {', '.join(LEVELS)}")

    def matches(self, record: LogRecord) -> bool:
        if self.component and record.component != self.component:
            return False
        if self.level and _RANK.get(record.level, len(LEVELS)) > _RANK[self.level]:
            return False
        return not self.text or self.text.casefold() in record.message.casefold()


@dataclass(frozen=True)
class LogSource:
    key: str  # what the page's ?source= says
    label: str
    path: Path | None  # None for the journal
    form: str  # "text" (logsetup's text or JSON lines), "cron", "audit" or "journal"
    note: str = ""


@dataclass
class Tail:
    """What one read found: records newest first, and how much was looked at."""

    records: list[LogRecord] = field(default_factory=list)
    scanned: int = 0  # bytes read from the end
    size: int = 0  # the file's size
    whole: bool = True  # the whole file was read (else only its last ``scanned`` bytes)
    error: str = ""


# -- where lmsav logs ----------------------------------------------------------------------------

def destination_note(settings) -> str:
    """Where [log] sends the lines, in a sentence for the page."""
    log = settings.log
    if log.destination == "file":
        return f"[log] destination is \"file\": {logsetup.default_log_file(settings)}."
    if log.destination == "syslog":
        return (f"[log] destination is \"syslog\" (facility {log.syslog_facility}): the lines "
                "are in the system log (the journal where there is one, or the files syslog "
                f"writes for that facility, such as /var/log/{log.syslog_facility}.log). "
                f"Processes that found no {logsetup.SYSLOG_SOCKET} wrote to "
                f"{logsetup.default_log_file(settings)}.")
    if log.destination == "journald":
        return ("[log] destination is \"journald\": the lines are in the journal "
                "(journalctl -t lmsav-daemon, -t lmsav-spool, …).")
    return ("[log] destination is \"stderr\": each service's lines go where its standard error "
            "goes (the journal for a systemd unit); detached, to syslog.")


def sources(settings, state_dir: Path | str,
            journal_available: Callable[[], bool] | None = None) -> list[LogSource]:
    """The log files lmsav writes under these settings (each path once), and the journal when
    [log] sends the lines to syslog or journald and `journalctl` is installed."""
    found: list[LogSource] = []
    seen: set[str] = set()

    def add(key: str, label: str, path: Path | None, form: str, note: str = "") -> None:
        if path is not None:
            real = os.path.abspath(path)
            if real in seen:
                return
            seen.add(real)
        found.append(LogSource(key, label, path, form, note))

    log_file = logsetup.default_log_file(settings)
    if settings.log.destination == "file":
        add("log", "lmsav log ([log] file)", log_file, "text")
    if settings.spool.log_file:
        add("spool", "spool watcher ([spool] log_file)", Path(settings.spool.log_file), "text")
    if settings.log.destination != "file":
        add("log", "fallback log file", log_file, "text",
            "where a process writes when syslog is missing")
    add("cron", "scheduled runs (cron.log)", paths.log_dir(state_dir) / "cron.log", "cron")
    add("audit", "console audit trail", Path(state_dir) / "web" / AUDIT_FILE, "audit")
    available = journal_available or (lambda: shutil.which("journalctl") is not None)
    if settings.log.destination in ("syslog", "journald", "stderr") and available():
        add("journal", "journal (journalctl)", None, "journal",
            "lines lmsav sent to syslog or journald, as far as this account may read them")
    return found


# -- reading files -------------------------------------------------------------------------------

def read_file(source: LogSource, limit: int = 200, flt: LogFilter = LogFilter(),
              budget: int = SCAN_BYTES) -> Tail:
    """The newest ``limit`` records of a file matching ``flt``, reading at most ``budget``
    bytes from its end."""
    limit = max(1, min(limit, MAX_LINES))
    tail = Tail()
    try:
        fd = os.open(source.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except FileNotFoundError:
        tail.error = f"{source.path}: not written yet"
        return tail
    except OSError as err:
        tail.error = f"cannot read {source.path}: {err.strerror or err}"
        return tail
    with open(fd, "rb") as fh:
        try:
            st = os.fstat(fd)
            if not _is_regular(st.st_mode):
                tail.error = f"{source.path}: not a regular file"
                return tail
            tail.size = st.st_size
            parse = _PARSERS[source.form]
            lines = _lines_backward(fh, tail.size, budget, tail)
            for record in _records(lines, parse):
                if flt.matches(record):
                    tail.records.append(record)
                    if len(tail.records) >= limit:
                        break
        except OSError as err:
            tail.error = f"cannot read {source.path}: {err.strerror or err}"
    return tail


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _lines_backward(fh, size: int, budget: int, tail: Tail) -> Iterator[bytes]:
    """The lines of the last ``budget`` bytes, last line first; a line cut by the budget is
    left out. Updates ``tail.scanned`` and ``tail.whole`` as it goes."""
    pos = size
    carry: list[bytes] = []  # pieces of the line being read, the rightmost first
    tail.whole = size == 0
    while pos > 0 and tail.scanned < budget:
        count = min(BLOCK, pos, budget - tail.scanned)
        pos -= count
        fh.seek(pos)
        chunk = fh.read(count)
        tail.scanned += len(chunk)
        newline = chunk.rfind(b"\n")
        if newline < 0:
            carry.append(chunk)  # joined once, when the line's start is found
            continue
        line = chunk[newline + 1:] + b"".join(reversed(carry))
        if line:
            yield line
        parts = chunk[:newline].split(b"\n")
        for piece in reversed(parts[1:]):
            if piece:
                yield piece
        carry = [parts[0]]
    if pos == 0:
        tail.whole = True
        line = b"".join(reversed(carry))
        if line:
            yield line


def _records(lines: Iterator[bytes], parse) -> Iterator[LogRecord]:
    """Records newest first; lines that do not start a record (a traceback's) are kept with
    the record above them."""
    pending: list[str] = []
    for raw in lines:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        record = parse(text)
        if record is None:
            pending.append(text)
            if len(pending) > MAX_CONTINUATION:
                yield _unparsed(pending.pop(0))
            continue
        if pending:
            record = _with_continuation(record, pending)
            pending = []
        yield record
    for text in reversed(pending):  # the start of the budget cut their first line off
        yield _unparsed(text)


def _with_continuation(record: LogRecord, pending: list[str]) -> LogRecord:
    message = "\n".join([record.message, *reversed(pending)])
    return LogRecord(record.time, record.component, record.level, record.pid,
                     _cut(message))


def _unparsed(text: str) -> LogRecord:
    return LogRecord("", "", "", "", _cut(text))


def _cut(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + " …(cut)"


def parse_text_line(text: str) -> LogRecord | None:
    """A line of logsetup.LineFormatter, text or JSON; None for anything else."""
    if text.startswith("{"):
        return _json_record(text)
    match = _TEXT_RE.fullmatch(text)
    if match is None:
        return None
    level = "error" if match["level"] == "critical" else match["level"]
    return LogRecord(match["time"], match["component"] or "", level, match["pid"],
                     _cut(match["message"]))


def _json_record(text: str) -> LogRecord | None:
    try:
        fields = json.loads(text)
    except ValueError:
        return None
    if not isinstance(fields, dict) or "message" not in fields:
        return None
    extra = {k: v for k, v in fields.items()
             if k not in ("time", "level", "component", "pid", "message")}
    message = str(fields["message"])
    if extra:
        message += " " + json.dumps(extra, ensure_ascii=False, default=str)
    level = str(fields.get("level", ""))
    return LogRecord(str(fields.get("time", "")), str(fields.get("component", "")),
                     "error" if level == "critical" else level, str(fields.get("pid", "")),
                     _cut(message))


def parse_cron_line(text: str) -> LogRecord | None:
    match = _CRON_RE.fullmatch(text)
    if match is None:
        return None
    result = _CRON_RESULT_RE.search(match["fields"])
    level = _CRON_LEVELS.get(result[1] if result else "", "info")
    return LogRecord(match["time"], "cron", level, "", _cut(match["fields"]))


def parse_audit_line(text: str) -> LogRecord | None:
    """One record of lmsav.web.audit: who did what to which target, and how it ended."""
    try:
        fields = json.loads(text)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    outcome = str(fields.get("outcome", "ok"))
    words = [str(fields.get("user") or "-"), str(fields.get("action", "")),
             str(fields.get("target", "")), outcome]
    message = " ".join(word for word in words if word)
    if fields.get("address"):
        message += f" from {fields['address']}"
    if fields.get("detail"):
        message += " " + json.dumps(fields["detail"], ensure_ascii=False, default=str)
    return LogRecord(_epoch_text(fields.get("time")), "web",
                     "info" if outcome == "ok" else "warning", "", _cut(message))


def _epoch_text(value) -> str:
    try:
        moment = datetime.datetime.fromtimestamp(float(value)).astimezone()
    except (TypeError, ValueError, OverflowError, OSError):
        return str(value or "")
    return moment.isoformat(timespec="seconds")


_PARSERS = {"text": parse_text_line, "cron": parse_cron_line, "audit": parse_audit_line}


# -- the journal ---------------------------------------------------------------------------------

_PRIORITY_LEVELS = {0: "error", 1: "error", 2: "error", 3: "error", 4: "warning", 5: "info",
                    6: "info", 7: "debug"}
_JOURNAL_PRIORITY = {"error": "err", "warning": "warning", "info": "info", "debug": "debug"}


def journal_argv(limit: int, flt: LogFilter) -> list[str]:
    """journalctl's arguments: lmsav's identifiers (or the filtered component's), the level,
    newest first, a bounded count. The text filter is applied to what comes back, so more
    lines are asked for when it is set."""
    components = [flt.component] if flt.component else list(COMPONENTS)
    count = limit if not flt.text else min(JOURNAL_MAX_LINES, limit * 20)
    argv = ["journalctl", "--no-pager", "--quiet", "--output=json", "--reverse",
            f"--lines={max(1, min(count, JOURNAL_MAX_LINES))}"]
    if flt.level:
        argv.append(f"--priority={_JOURNAL_PRIORITY[flt.level]}")
    identifiers = [logsetup.ident(c) for c in components]
    if not flt.component:
        identifiers.insert(0, logsetup.ident(""))
    argv += [f"--identifier={name}" for name in identifiers]
    return argv


def read_journal(limit: int = 200, flt: LogFilter = LogFilter(),
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> Tail:
    limit = max(1, min(limit, MAX_LINES))
    tail = Tail()
    try:
        done = run(journal_argv(limit, flt), capture_output=True, timeout=JOURNAL_TIMEOUT,
                   check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        tail.error = "journalctl is not installed"
        return tail
    except subprocess.TimeoutExpired:
        tail.error = f"journalctl did not answer within {JOURNAL_TIMEOUT:g} s"
        return tail
    except OSError as err:
        tail.error = f"cannot run journalctl: {err.strerror or err}"
        return tail
    if done.returncode != 0:
        said = done.stderr.decode("utf-8", "replace").strip().splitlines()
        tail.error = f"journalctl failed: {said[-1] if said else f'exit {done.returncode}'}"
        return tail
    tail.scanned = tail.size = len(done.stdout)
    for line in done.stdout.splitlines():
        record = _journal_record(line)
        if record is not None and flt.matches(record):
            tail.records.append(record)
            if len(tail.records) >= limit:
                break
    return tail


def _journal_record(line: bytes) -> LogRecord | None:
    try:
        fields = json.loads(line)
    except ValueError:
        return None
    if not isinstance(fields, dict):
        return None
    message = fields.get("MESSAGE", "")
    if isinstance(message, list):  # journalctl's form of a value that is not text
        message = bytes(b for b in message if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace")
    identifier = str(fields.get("SYSLOG_IDENTIFIER", ""))
    component = str(fields.get("LMSAV_COMPONENT") or identifier.removeprefix("lmsav")
                    .removeprefix("-"))
    try:
        priority = int(fields.get("PRIORITY", 6))
        stamp = int(fields.get("__REALTIME_TIMESTAMP", 0)) / 1e6
    except (TypeError, ValueError):
        priority, stamp = 6, 0.0
    return LogRecord(_epoch_text(stamp) if stamp else "", component,
                     _PRIORITY_LEVELS.get(priority, "info"),
                     str(fields.get("SYSLOG_PID") or fields.get("_PID") or ""),
                     _cut(str(message)))


def read(source: LogSource, limit: int = 200, flt: LogFilter = LogFilter()) -> Tail:
    """Read one source, file or journal."""
    if source.form == "journal":
        return read_journal(limit, flt)
    return read_file(source, limit, flt)


__all__ = ["COMPONENTS", "LEVELS", "LogFilter", "LogRecord", "LogSource", "Tail",
           "destination_note", "journal_argv", "parse_audit_line", "parse_cron_line",
           "parse_text_line", "read", "read_file", "read_journal", "sources"]
