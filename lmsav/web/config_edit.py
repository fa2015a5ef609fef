"""The configuration page's logic: the effective values with their sources, and changes to a
safe subset of keys and to the profile, written into the configuration file.

A change touches only the lines of the keys it changes (the rest of the file, comments
included, stays as it was); the edited text is parsed back and must give exactly the values
intended, else the file is written whole from its parsed values (comments lost, and said so).
The new file is validated as lmsav loads it (`load_settings`) before it replaces the old one
by one atomic rename that keeps its mode and owner. The running daemon and spool watcher are
then told to reload, as `lmsav ctl reload` and `lmsav update` tell them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import signal
import tempfile
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from .. import config as config_mod
from ..durable import write_atomic

# The keys the console may change: sizes, counts, times and levels. Nothing that names a path,
# a socket, a user, a listener, a reinjection target or a URL (which may hold a password),
# nothing that deletes files (actions), nothing that decides where signatures come from.
SAFE_KEYS: tuple[str, ...] = (
    "limits.max_scan_depth",
    "limits.max_file_size",
    "limits.max_scan_size",
    "limits.max_files",
    "limits.max_scan_time",
    "limits.max_compression_ratio",
    "limits.limit_status",
    "scan.scan_archives",
    "scan.scan_mail",
    "scan.max_dir_depth",
    "scan.detect_corrupted",
    "scan.detect_protected",
    "spool.max_attempts",
    "spool.retry_delay",
    "spool.rescan_interval",
    "spool.max_message_size",
    "daemon.stream_max_length",
    "daemon.read_timeout",
    "daemon.idle_timeout",
    "daemon.max_connections",
    "daemon.max_queue",
    "server.host_name",
    "log.level",
    "log.levels",
    "update.check_interval",
    "update.max_age",
    "update.keep_versions",
    "snmp.spool_threshold",
    "snmp.database_max_age",
    "stats.buffer",
)

WATCH_LOCK = "watch.lock"  # lmsav.spool.watcher.LOCK_NAME (not imported: it loads the mail path)
_edit_lock = threading.Lock()  # one change at a time in this process (the digest guards others)


class EditError(Exception):
    """A change refused; the message is one line (the configuration's own error when a value
    is not allowed)."""


# -- what the page shows -------------------------------------------------------------------------

@dataclass(frozen=True)
class ConfigRow:
    """One key: its effective value as TOML writes it (passwords masked), where it came from,
    and how the form edits it when it is in SAFE_KEYS."""

    name: str
    section: str
    key: str
    value: str
    source: str
    help: str
    allowed: str
    editable: bool
    form_value: str = ""
    widget: str = "text"  # "text", "boolean", "choice" or "list"
    choices: tuple[str, ...] = field(default=())


_CHOICES_RE = re.compile(r'"[^"]*"(?: or "[^"]*")*')


def rows(settings: config_mod.Settings) -> list[ConfigRow]:
    """Every key of every section, in file order."""
    out = []
    for spec in config_mod.SPECS.values():
        value = settings.dumped(spec, redact=True)
        editable = spec.name in SAFE_KEYS
        widget, choices = _widget(spec)
        out.append(ConfigRow(
            name=spec.name, section=spec.section, key=spec.key, value=toml_text(value),
            source=settings.sources.get(spec.name, config_mod.BUILT_IN), help=spec.help,
            allowed=spec.kind.allowed, editable=editable,
            form_value=form_text(settings.dumped(spec)) if editable else "",
            widget=widget, choices=choices))
    return out


def _widget(spec: config_mod.Spec) -> tuple[str, tuple[str, ...]]:
    if spec.kind is config_mod.BOOLEAN:
        return "boolean", ("true", "false")
    if isinstance(spec.default(), tuple):
        return "list", ()
    if _CHOICES_RE.fullmatch(spec.kind.allowed):
        return "choice", tuple(re.findall(r'"([^"]*)"', spec.kind.allowed))
    return "text", ()


def toml_text(value: Any) -> str:
    """A value as it reads in a TOML file, on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_text(v)}" for k, v in value.items()) + " }"
    return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else str(value),
                      ensure_ascii=False)


def form_text(value: Any) -> str:
    """A value as the form's text field holds it: lists comma-separated, strings bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


def file_digest(path: Path | None) -> str:
    """The SHA-256 of the configuration file as the page read it ("" when there is none): a
    save is refused when the file changed since."""
    if path is None:
        return ""
    try:
        return _digest(Path(path).read_bytes())
    except FileNotFoundError:
        return ""
    except OSError as err:
        raise EditError(f"{path}: cannot read: {err.strerror or err}") from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest() if data else ""


# -- changing it ---------------------------------------------------------------------------------

UNSET = object()  # a key taken out of the file: the profile's or built-in value applies again


@dataclass(frozen=True)
class EditResult:
    path: Path
    changed: tuple[str, ...]  # dotted names (and "profile") whose line changed
    comments_kept: bool
    settings: config_mod.Settings  # the file as lmsav now loads it


def form_raw(spec: config_mod.Spec, text: str) -> Any:
    """A form's text as the TOML value a person would have written: numbers as numbers, lists
    split at commas, true/false for booleans; anything else as a string, for the kind's own
    validation to judge."""
    text = text.strip()
    if spec.kind is config_mod.BOOLEAN:
        return {"true": True, "false": False}.get(text.lower(), text)
    if isinstance(spec.default(), tuple):
        return [item.strip() for item in text.split(",") if item.strip()]
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d*", text):
        return float(text)
    return text


def apply_changes(config_file: Path, current: config_mod.Settings, submitted: Mapping[str, str],
                  unset: tuple[str, ...] = (), expected_digest: str | None = None) -> EditResult:
    """Write the submitted form values (dotted name → text) that differ from the effective
    ones, and take the ``unset`` keys out of the file. Every name must be in SAFE_KEYS."""
    for name in [*submitted, *unset]:
        if name not in SAFE_KEYS:
            shown = name if name in config_mod.SPECS else repr(name)[:80]
            raise EditError(f"{shown} cannot be changed from the console; edit {config_file}")
    changes: dict[str, Any] = {}
    for name, text in submitted.items():
        spec = config_mod.SPECS[name]
        raw = form_raw(spec, str(text))
        try:
            parsed = spec.kind.parse(raw)
        except (TypeError, ValueError):
            changes[name] = raw  # refused below by load_settings, in the configuration's words
            continue
        if parsed != current.value(name):
            changes[name] = spec.kind.dump(parsed)
    for name in unset:
        changes[name] = UNSET
    return _edit(Path(config_file), changes, None, expected_digest)


def switch_profile(config_file: Path, name: str,
                   expected_digest: str | None = None) -> EditResult:
    """Set the top-level ``profile = "…"`` of the file to one of the shipped profiles."""
    names = config_mod.profile_names()
    if name not in names:
        raise EditError(f"unknown profile {str(name)[:80]!r}: choose {', '.join(names)}")
    return _edit(Path(config_file), {}, name, expected_digest)


def _edit(path: Path, changes: dict[str, Any], profile: str | None,
          expected_digest: str | None) -> EditResult:
    with _edit_lock:
        try:
            old = path.read_bytes()
        except FileNotFoundError:
            old = b""
        except OSError as err:
            raise EditError(f"{path}: cannot read: {err.strerror or err}") from None
        if expected_digest is not None and expected_digest != _digest(old):
            raise EditError(f"{path} changed since the page was shown; look at it again "
                            "before saving")
        try:
            text = old.decode("utf-8")
            data = tomllib.loads(text)
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise EditError(f"{path}: invalid TOML, not changed from the console: {err}") \
                from None
        new_text, comments_kept, changed = edit_text(text, data, changes, profile)
        if not changed:
            return EditResult(path, (), True, _validate(path, new_text.encode("utf-8")))
        data_out = new_text.encode("utf-8")
        settings = _validate(path, data_out)
        try:
            if not path.parent.is_dir():
                path.parent.mkdir(parents=True, mode=0o755)
            write_atomic(path, data_out, mode=None if old or path.exists() else 0o640)
        except OSError as err:
            raise EditError(f"cannot write {path}: {err.strerror or err}") from None
        return EditResult(path, tuple(changed), comments_kept, settings)


def _validate(path: Path, data: bytes) -> config_mod.Settings:
    """Load ``data`` as lmsav would load ``path``; ConfigError becomes EditError naming
    ``path`` (the copy validated is in a private directory)."""
    with tempfile.TemporaryDirectory(prefix="lmsav-config-") as tmp:
        candidate = Path(tmp) / path.name
        candidate.write_bytes(data)
        try:
            return config_mod.load_settings(candidate, required=True)
        except config_mod.ConfigError as err:
            raise EditError(str(err).replace(str(candidate), str(path))) from None


# -- editing the text ----------------------------------------------------------------------------

_HEADER_RE = re.compile(r"\s*\[\s*([A-Za-z0-9_-]+)\s*\]\s*(?:#.*)?")
_ANY_HEADER_RE = re.compile(r"\s*\[")


def edit_text(text: str, data: dict, changes: Mapping[str, Any],
              profile: str | None) -> tuple[str, bool, list[str]]:
    """(new text, comments kept, names changed): ``changes`` (dotted name → TOML value, or
    UNSET) and ``profile`` applied to the file ``text`` whose parsed values are ``data``."""
    wanted = copy.deepcopy(data)
    changed = []
    if profile is not None and wanted.get("profile") != profile:
        wanted["profile"] = profile
        changed.append("profile")
    for name, value in changes.items():
        section, key = name.split(".", 1)
        table = wanted.get(section)
        if value is UNSET:
            if isinstance(table, dict) and key in table:
                del table[key]
                changed.append(name)
            continue
        if not isinstance(table, dict):
            table = wanted.setdefault(section, {})
            if not isinstance(table, dict):
                table = wanted[section] = {}
        if key not in table or table[key] != value:
            table[key] = value
            changed.append(name)
    if not changed:
        return text, True, []
    lines = text.splitlines()
    try:
        if "profile" in changed:
            _set_top_level(lines, "profile", profile)
        for name in changed:
            if name == "profile":
                continue
            section, key = name.split(".", 1)
            value = wanted.get(section, {}).get(key, UNSET)
            _set_in_section(lines, section, key, value)
        edited = "\n".join(lines) + "\n"
        if tomllib.loads(edited) == wanted:
            return edited, True, changed
    except (tomllib.TOMLDecodeError, ValueError):
        pass
    # A layout the line edit does not follow (dotted keys, inline tables): written whole.
    return tomli_w.dumps(wanted), not _has_comments(text), changed


def _has_comments(text: str) -> bool:
    return any(line.lstrip().startswith("#") or " #" in line for line in text.splitlines())


def _assignment(key: str, value: Any) -> list[str]:
    return tomli_w.dumps({key: value}).rstrip("\n").split("\n")


def _value_end(lines: list[str], start: int, stop: int) -> int:
    """The last line of the assignment starting at ``start`` (a multi-line array or string
    spans several)."""
    for end in range(start, stop):
        try:
            tomllib.loads("\n".join(lines[start:end + 1]))
            return end
        except tomllib.TOMLDecodeError:
            continue
    raise ValueError("assignment without an end")


def _trailing_comment(line: str) -> str:
    """The comment ending a one-line assignment (``  # why``), "" when there is none."""
    for match in re.finditer("#", line):
        head = line[:match.start()]
        try:
            tomllib.loads(head)
        except tomllib.TOMLDecodeError:
            continue  # a "#" inside a string
        return line[len(head.rstrip()):]
    return ""


def _key_line(lines: list[str], key: str, start: int, stop: int) -> int | None:
    pattern = re.compile(rf"\s*{re.escape(key)}\s*=")
    for index in range(start, stop):
        if pattern.match(lines[index]):
            return index
    return None


def _sections(lines: list[str]) -> list[tuple[str | None, int, int]]:
    """(table name or None for the top and for arrays of tables, first line after the
    header, end) of every part of the file."""
    parts: list[tuple[str | None, int, int]] = []
    name, start = None, 0
    for index, line in enumerate(lines):
        if _ANY_HEADER_RE.match(line):
            parts.append((name, start, index))
            match = _HEADER_RE.fullmatch(line)
            name = match[1] if match else None
            start = index + 1
    parts.append((name, start, len(lines)))
    return parts


def _set_top_level(lines: list[str], key: str, value: Any) -> None:
    _name, start, stop = _sections(lines)[0]
    index = _key_line(lines, key, start, stop)
    if index is not None:
        lines[index:_value_end(lines, index, stop) + 1] = _assignment(key, value)
        return
    # Before the first table, above the comment lines that belong to it.
    insert = stop
    while insert > 0 and lines[insert - 1].lstrip().startswith("#"):
        insert -= 1
    new = _assignment(key, value)
    if insert < len(lines):
        new.append("")
    lines[insert:insert] = new


def _set_in_section(lines: list[str], section: str, key: str, value: Any) -> None:
    parts = [part for part in _sections(lines) if part[0] == section]
    if len(parts) > 1:
        raise ValueError(f"[{section}] twice")
    if not parts:
        if value is UNSET:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        lines.extend(([""] if lines else []) + [f"[{section}]"] + _assignment(key, value))
        return
    _name, start, stop = parts[0]
    index = _key_line(lines, key, start, stop)
    if index is not None:
        end = _value_end(lines, index, stop)
        new = [] if value is UNSET else _assignment(key, value)
        if len(new) == 1 and end == index:
            new[0] += _trailing_comment(lines[index])
        lines[index:end + 1] = new
        return
    if value is UNSET:
        return
    last = start - 1  # after the last line of the table that is not blank
    for position in range(start, stop):
        if lines[position].strip():
            last = position
    lines[last + 1:last + 1] = _assignment(key, value)


# -- telling the running components --------------------------------------------------------------

def reload_components(settings: config_mod.Settings) -> dict[str, str]:
    """Ask the daemon (RELOAD over its socket) and the spool watcher (SIGHUP to the process
    holding the spool's watch lock) to read the configuration again; what each was told."""
    return {"daemon": _reload_daemon(settings), "spool watcher": _reload_watcher(settings)}


def _reload_daemon(settings: config_mod.Settings) -> str:
    from ..daemon.client import Client, ClientError

    socket_path = settings.daemon_socket()
    if not Path(socket_path).exists():
        return "not running"
    try:
        return "reload requested" if Client(socket_path, timeout=10).reload() \
            else "reload not accepted"
    except ClientError as err:
        return f"not reloaded: {err}"


def _reload_watcher(settings: config_mod.Settings) -> str:
    from ..update.notify import lock_holder

    pid = lock_holder(Path(settings.spool_dir()) / WATCH_LOCK)
    if pid is None:
        return "not running"
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        return "not running"
    except PermissionError:
        return f"not reloaded: not permitted to signal pid {pid}"
    return f"sent SIGHUP to pid {pid}"


__all__ = ["SAFE_KEYS", "UNSET", "ConfigRow", "EditError", "EditResult", "apply_changes",
           "edit_text", "file_digest", "form_raw", "reload_components", "rows",
           "switch_profile", "toml_text"]
