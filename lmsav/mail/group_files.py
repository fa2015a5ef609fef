"""One group file of ``groups.d`` as a form edits it: read as text, checked, written back.

A form holds one text per key. Lists are one item a line; a table (``subject_prefix``) is a
TOML inline table; other values are written as in the file, quotes optional. Checking is the
loader's own: each value goes through the kind and the one-line message of
:mod:`lmsav.mail.groups`, and before a file replaces the old one the whole directory, with the
new file in it, must load with :func:`~lmsav.mail.groups.load_groups`. Files are replaced
atomically, keeping their mode and owner. Comments in a rewritten file are not kept.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from ..config import ConfigError, _show
from ..durable import fsync_dir, write_atomic
from .groups import (
    DEFAULT_GROUP,
    LIMIT_KEYS,
    MATCH_KEYS,
    SPECS,
    TOP_LEVEL,
    _parse,
    _read_group_file,
    load_groups,
    toml_text,
)

# Stricter than the loader's rule (a subset of it): no path separator, no leading dot, bounded.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "letters, digits, '_', '-' and '.', starting with a letter or a digit, at most 64"

# The sections a form shows, in order; every key of a group file is in exactly one.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Who", MATCH_KEYS),
    ("All mail", tuple(TOP_LEVEL)),
    ("Scanning", ("scan_policy", "max_scan_depth", "max_file_size", "max_scan_size",
                  "max_scan_time")),
    ("Actions", ("infected_action", "suspicious_action", "protected_action", "corrupted_action",
                 "error_action", "filtered_action", "uncurable_action", "virus_name_list",
                 "virus_name_action", "reject_reply")),
    ("Headers", ("add_headers", "subject_prefix")),
    ("Filters", ("filter_names", "filter_names_exclude", "filter_types", "filter_type_mismatch",
                 "filter_max_size")),
    ("Notices", ("notify_sender", "notify_recipients", "notify_admin", "admin_addresses",
                 "notice_from", "no_sender_notice", "templates_dir")),
    ("Backup", ("backup",)),
)

_write_lock = threading.Lock()  # one writer at a time within a process (a threaded server)


class GroupFileError(Exception):
    """A group that cannot be read or written: one-line messages by key ("" for the group)."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(self.errors.values()))


# -- names and keys ------------------------------------------------------------------------------

def valid_name(name: str) -> bool:
    return isinstance(name, str) and NAME_RE.fullmatch(name) is not None


def name_error(name: str) -> str | None:
    if valid_name(name):
        return None
    return f"group name {_show(name)}: expected {NAME_RULE} characters"


def group_path(directory: Path, name: str) -> Path:
    """``<directory>/<name>.toml``; a name outside :data:`NAME_RE` never becomes a path."""
    error = name_error(name)
    if error:
        raise GroupFileError({"": error})
    return Path(directory) / f"{name}.toml"


def editable_keys(name: str) -> list[str]:
    """The keys a group's file may set, in the order of :data:`SECTIONS`."""
    is_default = name == DEFAULT_GROUP
    keys = []
    for _title, section in SECTIONS:
        for key in section:
            if key in TOP_LEVEL and not is_default:
                continue
            if key in MATCH_KEYS and is_default:
                continue
            keys.append(key)
    return keys


def inheritable(key: str) -> bool:
    """Whether a key left unset falls back to the default group (priority, senders and
    recipients fall back to their own defaults, so a form always sets them)."""
    return key not in MATCH_KEYS


def _kind(key: str):
    return TOP_LEVEL[key][0] if key in TOP_LEVEL else SPECS[key].kind


def _table_default(key: str) -> Any:
    return TOP_LEVEL[key][1] if key in TOP_LEVEL else SPECS[key].default()


def shape(key: str) -> str:
    """How a key is typed in a form: list, table, bool, choice, number or text."""
    default = _table_default(key)
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, tuple):
        return "list"
    if isinstance(default, dict):
        return "table"
    if choices(key):
        return "choice"
    if isinstance(default, (int, float)) or key in LIMIT_KEYS:
        return "number"
    return "text"


_CHOICES_RE = re.compile(r'"[^"]*"(?: or "[^"]*")*')


def choices(key: str) -> tuple[str, ...]:
    """The values of a choice key (an action, scan_policy, unprotected); () for others."""
    allowed = _kind(key).allowed
    if _CHOICES_RE.fullmatch(allowed):
        return tuple(re.findall(r'"([^"]*)"', allowed))
    return ()


def help_text(key: str) -> str:
    return TOP_LEVEL[key][2] if key in TOP_LEVEL else SPECS[key].help


def allowed_text(key: str) -> str:
    return _kind(key).allowed


# -- between TOML values and form text -----------------------------------------------------------

def form_text(key: str, raw: Any) -> str:
    """A value of a file (valid or not) as a form shows it."""
    kind = shape(key)
    if kind == "list" and isinstance(raw, (list, tuple)) and all(isinstance(i, str) for i in raw):
        return "\n".join(raw)
    if kind == "table" and isinstance(raw, dict):
        return toml_text(raw)
    if isinstance(raw, str):
        return raw
    if isinstance(raw, os.PathLike):
        return os.fspath(raw)
    return _show(raw)


def _toml_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (tomllib.TOMLDecodeError, KeyError):
        return text


def raw_value(key: str, text: str) -> Any:
    """Form text → the value a file would hold; what is not well formed is kept as text, for
    the loader's check to refuse with its own message."""
    text = text.replace("\r\n", "\n")
    kind = shape(key)
    if kind == "list":
        return [line.strip() for line in text.split("\n") if line.strip()]
    text = text.strip()
    if kind == "table":
        return {} if text == "" else _toml_literal(text)
    if kind == "bool":
        return {"true": True, "false": False}.get(text.lower(), text)
    if kind == "number":
        return _toml_literal(text) if text else ""
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        return _toml_literal(text)
    return text


# -- reading -------------------------------------------------------------------------------------

@dataclass
class EditableGroup:
    """A group as a form shows it: the values its file sets and those it inherits, as text."""

    name: str
    path: Path
    exists: bool
    digest: str  # of the file's bytes ("" when there is none): a save refuses a changed file
    own: dict[str, str]  # keys the file sets
    inherited: dict[str, str]  # what every editable key is without the file setting it
    keys: list[str]
    unknown: dict[str, str] = field(default_factory=dict)  # keys no group file may set
    problem: str = ""  # why groups.d does not load as it is, if it does not

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_GROUP

    def value(self, key: str) -> str:
        """The effective value of a key as text."""
        return self.own.get(key, self.inherited.get(key, ""))


def _digest(data: bytes | None) -> str:
    return "" if data is None else hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise GroupFileError({"": f"{path}: cannot read: {err.strerror or err}"}) from None


def read_group(directory: Path, name: str) -> EditableGroup:
    """A group for editing; a group without a file (a new one, the default without an
    administrator's default.toml) has no own values. Raises GroupFileError for a bad name, a
    file that cannot be read or is not TOML, and a non-default group that does not exist."""
    directory = Path(directory)
    path = group_path(directory, name)
    data = _read_bytes(path)
    if data is None and name != DEFAULT_GROUP:
        raise GroupFileError({"": f"no group {_show(name)}: {path} does not exist"})
    document: dict[str, Any] = {}
    if data is not None:
        try:
            document = tomllib.loads(data.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise GroupFileError({"": f"{path}: invalid TOML: {err}"}) from None
    keys = editable_keys(name)
    own = {key: form_text(key, document[key]) for key in keys if key in document}
    unknown = {key: _show(raw) for key, raw in document.items() if key not in keys
               and key != "name"}
    inherited, problem = _inherited(directory, name)
    return EditableGroup(name, path, data is not None, _digest(data), own, inherited, keys,
                         unknown, problem)


def new_group(directory: Path) -> EditableGroup:
    """An empty group for a form that creates one (its name is chosen in the form)."""
    inherited, problem = _inherited(Path(directory), "")
    return EditableGroup("", Path(directory), False, "", {}, inherited, editable_keys(""),
                         problem=problem)


def _inherited(directory: Path, name: str) -> tuple[dict[str, str], str]:
    """What each key is when the group's file does not set it, and groups.d's problem if any.

    The default group's keys fall back to the shipped file; other groups' keys to the
    (administrator's) default group, or the shipped one while groups.d does not load.
    """
    shipped = load_groups(None)
    problem = ""
    groups = shipped
    if name != DEFAULT_GROUP:
        try:
            groups = load_groups(directory)
        except ConfigError as err:
            problem = str(err)
            groups = _default_only(directory) or shipped
    base = groups.default
    out = {}
    for key in editable_keys(name):
        if key in TOP_LEVEL:
            out[key] = form_text(key, TOP_LEVEL[key][0].dump(getattr(shipped, key)))
        elif key in MATCH_KEYS:
            out[key] = form_text(key, SPECS[key].kind.dump(SPECS[key].default()))
        else:
            out[key] = form_text(key, SPECS[key].kind.dump(getattr(base, key)))
    return out, problem


def _default_only(directory: Path):
    """The groups with the administrator's default.toml alone, while another file is broken."""
    default_file = directory / f"{DEFAULT_GROUP}.toml"
    with tempfile.TemporaryDirectory(prefix="lmsav-groups-default-") as stage:
        try:
            shutil.copyfile(default_file, Path(stage) / default_file.name)
            return load_groups(Path(stage))
        except (OSError, ConfigError):
            return None


# -- from a submitted form -----------------------------------------------------------------------

INHERIT_PREFIX = "inherit_"


def fields_from_form(group: EditableGroup, form: Mapping[str, str]) -> tuple[dict[str, str],
                                                                          dict[str, str]]:
    """The keys a submitted form sets (key → text) and its contradictions (key → message).

    ``<key>`` holds the text, ``inherit_<key>`` (a ticked box) asks for the default's value. A
    key the form does not carry keeps what the file holds. A ticked box beside a value that is
    neither the default's nor the file's own (a value typed without unticking it) is refused
    rather than guessed.
    """
    fields: dict[str, str] = {}
    errors: dict[str, str] = {}
    for key in group.keys:
        text = form.get(key)
        wants_default = inheritable(key) and bool(form.get(INHERIT_PREFIX + key))
        if wants_default:
            known = [group.inherited.get(key, ""), group.own.get(key)]
            if text is not None and text.strip() and raw_value(key, text) not in [
                    raw_value(key, other) for other in known if other is not None]:
                errors[key] = (f"{key}: both the default and a value were given; untick "
                               f"'default' to set the value, or clear it")
                fields[key] = text
            continue
        if text is not None:
            fields[key] = text
        elif key in group.own:
            fields[key] = group.own[key]
    return fields, errors


# -- checking ------------------------------------------------------------------------------------

def check_group(directory: Path, name: str, fields: Mapping[str, str]) -> tuple[dict[str, Any],
                                                                                dict[str, str]]:
    """The file's content (key → TOML value) and one message per refused key, each the very
    line the loader gives for that value in ``<directory>/<name>.toml``."""
    errors: dict[str, str] = {}
    error = name_error(name)
    if error:
        return {}, {"": error}
    path = group_path(directory, name)
    allowed = editable_keys(name)
    document: dict[str, Any] = {}
    for key in [*(k for k in allowed if k in fields), *(k for k in fields if k not in allowed)]:
        if key not in allowed:
            errors[key] = _placement_error(path, name, key, fields[key])
            continue
        raw = raw_value(key, fields[key])
        try:
            _parse(_kind(key), raw, f"{path}: {key} = {_show(raw)}")
        except ConfigError as err:
            errors[key] = str(err)
        document[key] = raw
    return document, errors


def _placement_error(path: Path, name: str, key: str, text: str) -> str:
    """The loader's message for a key this group's file may not hold (unknown, or only for
    the default group, or never in it), from the loader itself on a one-key file."""
    raw = raw_value(key, text) if key in SPECS or key in TOP_LEVEL else text
    with tempfile.TemporaryDirectory(prefix="lmsav-group-key-") as stage:
        probe = Path(stage) / path.name
        probe.write_bytes(render({key: raw}))
        try:
            _read_group_file(probe, name)
        except ConfigError as err:
            return str(err).replace(str(probe), str(path))
    return f"{path}: {key}: not a key of this form"


def render(document: Mapping[str, Any]) -> bytes:
    return tomli_w.dumps(dict(document)).encode("utf-8")


def _check_directory(directory: Path, name: str, data: bytes | None) -> str | None:
    """Whether groups.d loads with ``<name>.toml`` replaced by ``data`` (None: removed): the
    loader's message when it does not. Checked on a copy, so nothing is written before."""
    with tempfile.TemporaryDirectory(prefix="lmsav-groups-check-") as stage_name:
        stage = Path(stage_name) / "groups.d"
        stage.mkdir()
        if directory.is_dir():
            for path in directory.glob("*.toml"):
                if path.name.startswith(".") or not path.is_file() or path.stem == name:
                    continue
                try:
                    shutil.copyfile(path, stage / path.name)
                except OSError as err:
                    return f"{path}: cannot read: {err.strerror or err}"
        if data is not None:
            (stage / f"{name}.toml").write_bytes(data)
        try:
            load_groups(stage)
        except ConfigError as err:
            return str(err).replace(str(stage), str(directory))
    return None


# -- writing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SaveResult:
    path: Path
    created: bool
    keys: tuple[str, ...]  # the keys the file now sets
    changed: tuple[str, ...]  # keys set, changed or unset by this save
    dropped: tuple[str, ...] = ()  # unknown keys the old file held


def save_group(directory: Path, name: str, fields: Mapping[str, str], *, create: bool = False,
               expected_digest: str | None = None) -> SaveResult:
    """Write ``<directory>/<name>.toml`` from form text: checked key by key, then the whole
    directory, then replaced atomically (mode and owner kept). ``create`` refuses an existing
    group; ``expected_digest`` (from :func:`read_group`) refuses a file changed meanwhile.
    Raises GroupFileError with one message per refused key."""
    directory = Path(directory)
    document, errors = check_group(directory, name, fields)
    if errors:
        raise GroupFileError(errors)
    path = group_path(directory, name)
    data = render(document)
    with _write_lock:
        old = _read_bytes(path)
        if create and (old is not None or name == DEFAULT_GROUP):
            raise GroupFileError({"": f"group {_show(name)} exists already"})
        if not create and old is None and name != DEFAULT_GROUP:
            raise GroupFileError({"": f"no group {_show(name)}: {path} does not exist"})
        if expected_digest is not None and expected_digest != _digest(old):
            raise GroupFileError({"": f"{path} was changed since it was read; "
                                      f"open the group again"})
        problem = _check_directory(directory, name, data)
        if problem:
            raise GroupFileError({"": problem})
        previous = _previous_values(old)
        try:
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
            write_atomic(path, data, mode=None)
        except OSError as err:
            raise GroupFileError({"": f"{path}: cannot write: {err.strerror or err}"}) from None
    known = set(editable_keys(name))
    changed = tuple(key for key in editable_keys(name)
                    if previous.get(key, _UNSET) != document.get(key, _UNSET))
    dropped = tuple(key for key in previous if key not in known and key != "name")
    return SaveResult(path, old is None, tuple(document), changed, dropped)


_UNSET = object()


def _previous_values(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}


@dataclass(frozen=True)
class DeleteResult:
    path: Path
    content: str  # what the file held, for the record of who removed what


def delete_group(directory: Path, name: str, *, expected_digest: str | None = None
                 ) -> DeleteResult:
    """Remove ``<directory>/<name>.toml``; never the default group. Raises GroupFileError."""
    directory = Path(directory)
    path = group_path(directory, name)
    if name == DEFAULT_GROUP:
        raise GroupFileError({"": f"the group {DEFAULT_GROUP} cannot be deleted: it applies "
                                  f"when no other group does"})
    with _write_lock:
        old = _read_bytes(path)
        if old is None:
            raise GroupFileError({"": f"no group {_show(name)}: {path} does not exist"})
        if expected_digest is not None and expected_digest != _digest(old):
            raise GroupFileError({"": f"{path} was changed since it was read; "
                                      f"open the group again"})
        problem = _check_directory(directory, name, None)
        if problem:
            raise GroupFileError({"": problem})
        try:
            path.unlink()
            fsync_dir(directory)
        except OSError as err:
            raise GroupFileError({"": f"{path}: cannot remove: {err.strerror or err}"}) from None
    return DeleteResult(path, old.decode("utf-8", "replace"))


__all__ = [
    "NAME_RE", "SECTIONS", "DeleteResult", "EditableGroup", "GroupFileError", "SaveResult",
    "check_group", "choices", "delete_group", "editable_keys", "fields_from_form", "form_text",
    "inheritable", "new_group", "raw_value", "read_group", "save_group", "shape", "valid_name",
]
