"""Stored schedules: one TOML file per schedule in ``<config dir>/schedules.d/``, checked on read.

A schedule file is validated as the main configuration is: a bad value is one line naming the
file, the key, the value and what is allowed. Scan options are checked against the options of
the ``lmsav scan`` command itself, so a schedule never stores an option the scan would refuse.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import fcntl
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import tomli_w

from ..durable import fsync_dir, write_atomic
from . import expression as expression_mod

SCHEDULES_DIR = "schedules.d"
# A sweep runs `lmsav scan`, an update `lmsav update`, a report `lmsav report`.
KINDS = ("sweep", "update", "report")
# Keys of a sweep that an update schedule does not have.
SWEEP_ONLY_KEYS = ("paths", "scan_options", "incremental")
# Keys of a report schedule, which no other kind has.
REPORT_ONLY_KEYS = ("report", "mail")
# The keys each kind has besides those every schedule has.
KIND_KEYS = {"sweep": SWEEP_ONLY_KEYS, "update": (), "report": REPORT_ONLY_KEYS}
REPORTS = ("daily", "weekly")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
NAME_ALLOWED = "letters, digits, - and _ (at most 64, starting with a letter or digit)"

# Options of `lmsav scan` that `lmsav cron run` sets itself, or that would hide the summary it
# logs; a schedule cannot carry them.
RESERVED_SCAN_OPTIONS = {
    "--report": "cron run writes the report itself, to <state_dir>/reports/",
    "--report-format": "cron run's reports are JSON lines",
    "--watch": "a watch never ends; a scheduled sweep must",
    "--initial-scan": "it goes with --watch, which a schedule cannot use",
    "--daemon": "a sweep through the daemon cannot write the report cron run asks for",
    "--socket": "it goes with --daemon, which a schedule cannot use",
    "--stream": "it goes with --daemon, which a schedule cannot use",
    "--incremental": "set by the schedule (incremental = true; cron add --no-incremental)",
    "--no-incremental": "set by the schedule (incremental = false; cron add --no-incremental)",
    "--json": "cron run reads the scan's summary for its log; the report file is JSON already",
    "--no-summary": "cron run reads the scan's summary for its log",
    "--help": "it prints help and scans nothing",
    "-h": "it prints help and scans nothing",
}


class ScheduleError(Exception):
    """One line: ``<file>: <key> = <value>: <what is wrong or allowed>``."""


@dataclass(frozen=True)
class Schedule:
    """One scheduled job: what it runs (kind), when (schedule) and, for a sweep, on what
    (paths, options); for a report, which one (report) and to whom it is mailed (mail)."""

    name: str
    schedule: str
    paths: tuple[str, ...] = ()
    kind: str = "sweep"
    scan_options: tuple[str, ...] = ()
    incremental: bool = True
    systemd: bool = False
    created: datetime.datetime | None = None
    report: str = ""
    mail: tuple[str, ...] = ()
    expression: expression_mod.CronExpression = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expression", expression_mod.parse(self.schedule))

    def to_toml(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "name": self.name,
            "schedule": self.schedule,
            "paths": list(self.paths),
            "scan_options": list(self.scan_options),
            "incremental": self.incremental,
            "report": self.report,
            "mail": list(self.mail),
            "systemd": self.systemd,
        }
        for kind, keys in KIND_KEYS.items():
            if kind != self.kind:
                for key in keys:
                    data.pop(key, None)
        if self.created is not None:
            data["created"] = self.created
        return data

    @property
    def runs(self) -> str:
        """What a run does, in a few words: for `cron list` and the installed files."""
        if self.kind == "update":
            return "lmsav update (the [update] sources and databases)"
        if self.kind == "report":
            where = (f"mailed to {', '.join(self.mail)}" if self.mail
                     else "kept in <state_dir>/reports/")
            return f"lmsav report {self.report}, {where}"
        return "lmsav scan " + " ".join(self.paths)

    def to_json(self) -> dict[str, Any]:
        data = self.to_toml()
        data["created"] = self.created.isoformat() if self.created else None
        return data


# -- checking values -----------------------------------------------------------------------------

def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ScheduleError("expected a string")
    return value


def _check_kind(value: Any) -> str:
    if value not in KINDS:
        raise ScheduleError("expected " + " or ".join(f'"{k}"' for k in KINDS))
    return value


def check_name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ScheduleError(f"expected {NAME_ALLOWED}")
    return value


def _check_schedule(value: Any) -> str:
    try:
        return expression_mod.parse(_string(value)).text
    except expression_mod.ExpressionError as err:
        raise ScheduleError(str(err)) from None


def _one_line(text: str) -> bool:
    return not any(c in text for c in "\r\n\0")


def _check_paths(value: Any) -> tuple[str, ...]:
    allowed = 'expected a list of absolute paths like ["/srv/mail", "/home"]'
    if not isinstance(value, (list, tuple)) or not value:
        raise ScheduleError(allowed)
    for item in value:
        if not isinstance(item, str) or not os.path.isabs(item) or not _one_line(item):
            raise ScheduleError(allowed)
    return tuple(value)


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ScheduleError("expected true or false")
    return value


def _check_report(value: Any) -> str:
    if value not in REPORTS:
        raise ScheduleError("expected " + " or ".join(f'"{r}"' for r in REPORTS))
    return value


def check_mail(value: Any) -> tuple[str, ...]:
    """Report recipients: a list of addresses (none: the report is only kept)."""
    from ..stats.report_mail import check_address

    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ScheduleError('expected a list of mail addresses like ["postmaster@example.org"]')
    try:
        return tuple(dict.fromkeys(check_address(v) for v in value))
    except ValueError as err:
        raise ScheduleError(str(err)) from None


def _check_created(value: Any) -> datetime.datetime | None:
    if not isinstance(value, datetime.datetime):
        raise ScheduleError("expected a date and time like 2026-11-25T03:00:00+01:00")
    return value


def _check_scan_options(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, str) and _one_line(v) for v in value):
        raise ScheduleError('expected a list of `lmsav scan` arguments like '
                            '["--exclude", "*.log", "-j", "2"]')
    options, paths = split_scan_args(list(value))
    if paths:
        raise ScheduleError(f'"{paths[0]}" is not an option of `lmsav scan`; the paths to '
                            f'scan go in paths')
    return tuple(options)


_KEYS: dict[str, tuple[Callable[[Any], Any], bool]] = {
    # key: (check, required)
    "kind": (_check_kind, True),
    "name": (check_name, True),
    "schedule": (_check_schedule, True),
    "paths": (_check_paths, False),  # required of a sweep, refused in an update
    "scan_options": (_check_scan_options, False),
    "incremental": (_check_bool, False),
    "systemd": (_check_bool, False),
    "created": (_check_created, False),
    "report": (_check_report, False),  # required of a report, refused in the others
    "mail": (check_mail, False),
}

_REQUIRED_HELP = {
    "kind": '"sweep", "update" or "report"',
    "name": NAME_ALLOWED,
    "schedule": 'a cron expression like "0 3 * * *"',
    "paths": 'a list of absolute paths like ["/srv/mail"]',
    "report": '"daily" or "weekly"',
}


def from_toml(data: Mapping[str, Any], where: str, expect_name: str | None = None) -> Schedule:
    """A Schedule from a parsed file; ScheduleError names ``where``, the key and the value."""
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key not in _KEYS:
            close = difflib.get_close_matches(key, list(_KEYS), n=1)
            hint = f"did you mean {close[0]}?" if close else f"keys are {', '.join(_KEYS)}"
            raise ScheduleError(f"{where}: unknown key {key}; {hint}")
        check, _required = _KEYS[key]
        try:
            values[key] = check(raw)
        except ScheduleError as err:
            raise ScheduleError(f"{where}: {key} = {show(raw)}: {err}") from None
    for key, (_check, required) in _KEYS.items():
        if required and key not in values:
            raise ScheduleError(f"{where}: missing key {key} ({_REQUIRED_HELP[key]})")
    if values["kind"] == "sweep" and "paths" not in values:
        raise ScheduleError(f"{where}: missing key paths ({_REQUIRED_HELP['paths']})")
    if values["kind"] == "report" and "report" not in values:
        raise ScheduleError(f"{where}: missing key report ({_REQUIRED_HELP['report']})")
    command = {"sweep": "scan", "update": "update", "report": "report"}[values["kind"]]
    article = "an" if values["kind"] == "update" else "a"
    for other, keys in KIND_KEYS.items():
        for key in keys if other != values["kind"] else ():
            if key in data:
                raise ScheduleError(f"{where}: {key} = {show(data[key])}: {article} "
                                    f"{values['kind']} schedule runs `lmsav {command}` and has "
                                    f"no {key}")
    if expect_name is not None and values["name"] != expect_name:
        raise ScheduleError(f'{where}: name = {show(values["name"])}: expected "{expect_name}", '
                            f"the name of the file")
    schedule = Schedule(**values)
    if schedule.systemd:
        try:
            schedule.expression.on_calendar()
        except expression_mod.ExpressionError as err:
            raise ScheduleError(f'{where}: systemd = true: schedule "{schedule.schedule}" has '
                                f"{err}") from None
    return schedule


def show(value: Any) -> str:
    """A value as it is written in TOML, on one line, for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string reads the same
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {show(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return repr(value)


# -- `lmsav scan` options ------------------------------------------------------------------------

def scan_command() -> click.Command:
    """A command with the options of `lmsav scan`, those a schedule may pass on."""
    from ..sweep.options import scan_command as command

    return command()


def split_scan_args(tokens: list[str], command: click.Command | None = None
                    ) -> tuple[list[str], list[str]]:
    """Separate `lmsav scan` options (with their values) from paths, as scan would parse them.

    Unknown and reserved options, options missing their value and values scan would reject
    (``-j x``) raise ScheduleError.
    """
    command = command or scan_command()
    table = _option_table(command)
    options: list[str] = []
    paths: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token.startswith("--") and len(token) > 2:
            name, eq, _value = token.partition("=")
            takes_value = _lookup(table, name)
            options.append(token)
            if takes_value and not eq:
                if i >= len(tokens):
                    raise ScheduleError(f"scan option {name} needs a value")
                options.append(tokens[i])
                i += 1
            elif eq and not takes_value:
                raise ScheduleError(f"scan option {name} takes no value")
        elif token.startswith("-") and len(token) > 1:
            options.append(token)
            for pos in range(1, len(token)):  # a cluster such as -vi or -j2
                if _lookup(table, "-" + token[pos]):
                    if pos == len(token) - 1:
                        if i >= len(tokens):
                            raise ScheduleError(f"scan option -{token[pos]} needs a value")
                        options.append(tokens[i])
                        i += 1
                    break
        else:
            paths.append(token)
    try:  # let click convert the values as `lmsav scan` would (types, choices)
        command.make_context("scan", [*options, "--", "/"])
    except click.ClickException as err:
        raise ScheduleError(f"scan options {' '.join(options)}: {err.format_message()}") from None
    return options, paths


def _option_table(command: click.Command) -> dict[str, bool | None]:
    """Every option string of the command → whether it takes a value; None when reserved."""
    table: dict[str, bool | None] = {}
    for param in command.params:
        if not isinstance(param, click.Option):
            continue
        spellings = (*param.opts, *param.secondary_opts)
        # Every spelling of a reserved option is reserved (--incremental/--no-incremental).
        reserved = any(opt in RESERVED_SCAN_OPTIONS for opt in spellings)
        takes_value = None if reserved else not (param.is_flag or param.count)
        for opt in spellings:
            table[opt] = takes_value
    return table


def _lookup(table: dict[str, bool | None], option: str) -> bool:
    if option in RESERVED_SCAN_OPTIONS or (option in table and table[option] is None):
        reason = RESERVED_SCAN_OPTIONS.get(option, "set by cron run itself")
        raise ScheduleError(f"scan option {option} is not allowed in a schedule: {reason}")
    if option not in table:
        known = [o for o, v in table.items() if v is not None]
        close = difflib.get_close_matches(option, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else "; see `lmsav scan --help`"
        raise ScheduleError(f"unknown scan option {option}{hint}")
    return bool(table[option])


# -- the directory of schedule files -------------------------------------------------------------

def schedules_dir(config_file: Path | str) -> Path:
    """``schedules.d/`` beside the lmsav.toml in use."""
    return Path(config_file).absolute().parent / SCHEDULES_DIR


class Store:
    """The schedule files of one configuration directory."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.toml"

    def names(self) -> list[str]:
        try:
            return sorted(p.stem for p in self.directory.glob("*.toml")
                          if NAME_RE.fullmatch(p.stem))
        except OSError:
            return []

    def exists(self, name: str) -> bool:
        return self.path(name).is_file()

    def load(self, name: str) -> Schedule:
        path = self.path(name)
        if not path.is_file():
            known = ", ".join(self.names()) or "none"
            raise ScheduleError(f"no schedule '{name}' in {self.directory} (schedules: {known})")
        from ..config import ConfigError, _read_toml

        try:
            data = _read_toml(path)
        except ConfigError as err:
            raise ScheduleError(str(err)) from None
        return from_toml(data, str(path), expect_name=name)

    def load_all(self) -> list[Schedule]:
        return [self.load(name) for name in self.names()]

    def read_raw(self, name: str) -> bytes | None:
        """The file's bytes (to put back if installing fails), None when there is none."""
        try:
            return self.path(name).read_bytes()
        except FileNotFoundError:
            return None

    def save(self, schedule: Schedule) -> Path:
        """Write atomically: a reader sees the old file or the new one, never half of one."""
        return self.write_raw(schedule.name, tomli_w.dumps(schedule.to_toml()).encode())

    def write_raw(self, name: str, data: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(name)
        write_atomic(path, data, 0o644)
        return path

    def delete(self, name: str) -> None:
        self.path(name).unlink()
        fsync_dir(self.directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise changes: two administrators adding at once must not lose a schedule."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
