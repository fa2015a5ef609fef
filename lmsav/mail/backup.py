"""Original messages kept before a modifying action: save, list, show, extract, delete.

Layout, one directory per entry, none of it readable by others::

    <state_dir>/backup/                 0700
        20261125T134501Z-0b3f2a9c41de/  0700
            message.eml                 0600  the original, byte for byte
            info.json                   0600  envelope, group, verdict tree, actions, ...
        .tmp-<id>/                      an entry being written (or left by a crash): never listed
        .del-<id>/                      an entry being deleted: never listed

An entry is assembled under ``.tmp-<id>`` (each file written to a temporary name, fsynced and
renamed, then the directory fsynced) and only then renamed to ``<id>``, so a crash never leaves a
half entry visible. The caller learns of any failure through :class:`BackupError` and decides what
happens to the mail; nothing here reports success for a backup that is not on disk.
"""

from __future__ import annotations

import calendar
import dataclasses
import enum
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..durable import entry_dirs, remove_dir
from ..durable import fsync_dir as _fsync_dir

MESSAGE_FILE = "message.eml"
INFO_FILE = "info.json"
TMP_PREFIX = ".tmp-"
DEL_PREFIX = ".del-"

DIR_MODE = 0o700
FILE_MODE = 0o600

# "20261125T134501Z-" then 12 hex digits: 5 for the microseconds (so ids made in the same
# second still sort by time) and 7 random ones (so two processes never pick the same id).
ID_RE = re.compile(r"\A(\d{8}T\d{6}Z)-([0-9a-f]{12})\Z")
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"

# A .tmp- directory this old is a crash leftover, not a save in progress; prune() removes it.
STALE_TMP_SECONDS = 3600.0

_ID_ATTEMPTS = 16

_O_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC


class BackupError(Exception):
    """A backup operation failed; the message is one line a person can act on."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BackupEntry:
    """One kept original message, as ``lmsav backup list`` shows it."""

    id: str
    created: float  # epoch seconds
    size: int  # bytes of the original message
    sender: str
    recipients: tuple[str, ...]
    subject: str
    status: str
    group: str
    threats: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "created": self.created,
            "size": self.size,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "subject": self.subject,
            "status": self.status,
            "group": self.group,
            "threats": list(self.threats),
        }


def validate_id(entry_id: object) -> str:
    """Return ``entry_id`` if it is a well-formed id; anything else (``../x``) is refused."""
    if not isinstance(entry_id, str) or not ID_RE.match(entry_id):
        raise BackupError(
            f"invalid backup id {str(entry_id)!r}: expected YYYYMMDDTHHMMSSZ-<12 hex digits>"
        )
    return entry_id


def new_id(now: float) -> str:
    """A fresh id for an entry created at ``now`` (epoch seconds, UTC)."""
    seconds = int(now)
    micros = min(int((now - seconds) * 1_000_000), 999_999)
    stamp = time.strftime(_ID_TIME_FORMAT, time.gmtime(seconds))
    return f"{stamp}-{micros:05x}{secrets.token_hex(4)[:7]}"


def id_time(entry_id: str) -> float:
    """The creation time encoded in an id, to the microsecond."""
    m = ID_RE.match(entry_id)
    if not m:
        raise BackupError(f"invalid backup id {entry_id!r}")
    seconds = calendar.timegm(time.strptime(m.group(1), _ID_TIME_FORMAT))
    return seconds + int(m.group(2)[:5], 16) / 1_000_000


class BackupStore:
    """The ``backup/`` directory of lmsav's state."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self._clock = clock

    # -- writing -------------------------------------------------------------------------------

    def save(self, message: bytes, info: dict) -> str:
        """Keep ``message`` with its ``info`` durably; return the new entry's id.

        ``info`` holds ``envelope`` (``{"sender": str, "recipients": [str, ...]}``; top-level
        ``sender`` and ``recipients`` keys are understood too), ``group``,
        ``status``, ``verdict`` (the tree, JSON-able), ``actions``, ``time``,
        ``database_version``, ``subject``, ``message_id`` and ``threats``; any other JSON-able
        keys are kept too. ``id``, ``created``, ``size`` and ``sha256`` are set by the store.
        """
        message = bytes(message)
        created = float(self._clock())
        try:
            # Converted before touching the disk so a value JSON cannot hold fails cleanly.
            record = _plain(dict(info))
            json.dumps(record)
        except (TypeError, ValueError, RecursionError) as err:
            raise BackupError(f"cannot save backup: info is not JSON-serialisable: {err}")
        self._ensure_root()
        for _ in range(_ID_ATTEMPTS):
            entry_id = new_id(created)
            record.update(
                id=entry_id,
                created=created,
                size=len(message),
                sha256=hashlib.sha256(message).hexdigest(),
            )
            payload = (json.dumps(record, indent=2) + "\n").encode()
            if self._write_entry(entry_id, message, payload):
                return entry_id
        raise BackupError(f"cannot save backup in {self.root}: no free entry id")

    def _ensure_root(self) -> None:
        try:
            if self.root.is_dir():
                return
            self.root.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(self.root, DIR_MODE)
            except FileExistsError:
                return  # another process created it first
            os.chmod(self.root, DIR_MODE)
            _fsync_dir(self.root.parent)
        except OSError as err:
            raise BackupError(f"cannot create backup directory {self.root}: {_reason(err)}")

    def _write_entry(self, entry_id: str, message: bytes, payload: bytes) -> bool:
        """Write one entry; False when the id is already taken (the caller picks another)."""
        tmp = self.root / f"{TMP_PREFIX}{entry_id}"
        final = self.root / entry_id
        try:
            os.mkdir(tmp, DIR_MODE)
        except FileExistsError:
            return False
        except OSError as err:
            raise BackupError(f"cannot save backup in {self.root}: {_reason(err)}")
        try:
            os.chmod(tmp, DIR_MODE)
            _write_durably(tmp, MESSAGE_FILE, message)
            _write_durably(tmp, INFO_FILE, payload)
            _fsync_dir(tmp)
            if os.path.lexists(final):
                shutil.rmtree(tmp, ignore_errors=True)
                return False
            os.rename(tmp, final)
            _fsync_dir(self.root)
        except OSError as err:
            shutil.rmtree(tmp, ignore_errors=True)
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                return False  # lost a race for this id to another process
            raise BackupError(f"cannot save backup in {self.root}: {_reason(err)}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return True

    # -- reading -------------------------------------------------------------------------------

    def list(self) -> list[BackupEntry]:
        """All complete entries, newest first."""
        entries = [self._entry(entry_id) for entry_id in self._ids()]
        entries.sort(key=lambda e: (e.created, e.id), reverse=True)
        return entries

    def show(self, entry_id: str) -> dict:
        """The entry's info: what ``save`` was given plus ``id``, ``created``, ``size``."""
        directory = self._existing(entry_id)
        raw = self._read(directory, INFO_FILE, entry_id)
        try:
            info = json.loads(raw)
        except (UnicodeDecodeError, ValueError) as err:
            raise BackupError(f"backup entry '{entry_id}' is damaged: {INFO_FILE}: {err}")
        if not isinstance(info, dict):
            raise BackupError(f"backup entry '{entry_id}' is damaged: {INFO_FILE} is not an object")
        info["id"] = entry_id
        info.setdefault("created", id_time(entry_id))
        info.setdefault("size", self._message_size(directory))
        return info

    def extract(self, entry_id: str) -> bytes:
        """The original message, byte for byte."""
        directory = self._existing(entry_id)
        return self._read(directory, MESSAGE_FILE, entry_id)

    def exists(self, entry_id: str) -> bool:
        """Whether ``entry_id`` names an entry of this store (a malformed id names none)."""
        if not isinstance(entry_id, str) or not ID_RE.match(entry_id):
            return False
        try:
            return stat.S_ISDIR(os.lstat(self.root / entry_id).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as err:
            raise BackupError(f"cannot read backup entry '{entry_id}': {_reason(err)}") from None

    # -- removing ------------------------------------------------------------------------------

    def delete(self, entry_id: str) -> None:
        """Remove one entry. It disappears from ``list`` at once, even if removal is cut short."""
        self._existing(entry_id)
        try:
            remove_dir(self.root, entry_id, DEL_PREFIX)
        except OSError as err:
            raise BackupError(f"cannot delete backup entry '{entry_id}': {_reason(err)}")

    def prune(self, older_than_seconds: float, *, now: float | None = None) -> int:
        """Delete entries created more than ``older_than_seconds`` ago; return how many.

        Also clears crash leftovers: ``.del-*`` directories, and ``.tmp-*`` ones older than
        an hour (younger ones may be saves in progress).
        """
        now = float(self._clock()) if now is None else now
        cutoff = now - older_than_seconds
        removed = 0
        for entry in self.list():
            if entry.created < cutoff:
                try:
                    self.delete(entry.id)
                except BackupError:
                    if os.path.lexists(self.root / entry.id):
                        raise
                    continue  # deleted concurrently by someone else
                removed += 1
        self._remove_leftovers(now)
        return removed

    def _remove_leftovers(self, now: float) -> None:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return
        except OSError as err:
            raise BackupError(f"cannot read backup directory {self.root}: {_reason(err)}")
        for name in names:
            path = self.root / name
            if name.startswith(DEL_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(TMP_PREFIX):
                try:
                    age = now - path.lstat().st_mtime
                except OSError:
                    continue
                if age > STALE_TMP_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------

    def _ids(self) -> list[str]:
        try:
            return entry_dirs(self.root, ID_RE)
        except OSError as err:
            raise BackupError(f"cannot read backup directory {self.root}: {_reason(err)}")

    def _existing(self, entry_id: str) -> Path:
        validate_id(entry_id)
        directory = self.root / entry_id
        try:
            mode = os.lstat(directory).st_mode
        except FileNotFoundError:
            raise BackupError(f"no backup entry '{entry_id}'") from None
        except OSError as err:
            raise BackupError(f"cannot read backup entry '{entry_id}': {_reason(err)}")
        if not stat.S_ISDIR(mode):
            raise BackupError(f"no backup entry '{entry_id}'")
        return directory

    @staticmethod
    def _read(directory: Path, name: str, entry_id: str) -> bytes:
        try:
            fd = os.open(directory / name, _O_READ)
        except FileNotFoundError:
            raise BackupError(f"backup entry '{entry_id}' is damaged: {name} is missing") from None
        except OSError as err:
            raise BackupError(f"cannot read backup entry '{entry_id}': {name}: {_reason(err)}")
        with open(fd, "rb") as fh:
            return fh.read()

    @staticmethod
    def _message_size(directory: Path) -> int:
        try:
            return os.lstat(directory / MESSAGE_FILE).st_size
        except OSError:
            return 0

    def _entry(self, entry_id: str) -> BackupEntry:
        """An entry for ``list``; a damaged one is listed too, so an admin can see and delete it."""
        directory = self.root / entry_id
        try:
            info = self.show(entry_id)
        except BackupError:
            return BackupEntry(
                id=entry_id,
                created=id_time(entry_id),
                size=self._message_size(directory),
                sender="",
                recipients=(),
                subject="",
                status="damaged",
                group="",
                threats=(),
            )
        return _entry_from_info(entry_id, info)


def _entry_from_info(entry_id: str, info: dict) -> BackupEntry:
    # The envelope may come nested ({"envelope": {"sender", "recipients"}}) or flat.
    envelope = info.get("envelope")
    envelope = envelope if isinstance(envelope, dict) else info
    recipients = envelope.get("recipients") or ()
    if isinstance(recipients, str):
        recipients = (recipients,)
    threats = info.get("threats") or ()
    if isinstance(threats, (str, dict)):
        threats = (threats,)
    created = info.get("created")
    size = info.get("size")
    return BackupEntry(
        id=entry_id,
        created=float(created) if isinstance(created, (int, float)) else id_time(entry_id),
        size=int(size) if isinstance(size, int) else 0,
        sender=_text(envelope.get("sender")),
        recipients=tuple(_text(r) for r in recipients),
        subject=_text(info.get("subject")),
        status=_text(info.get("status")),
        group=_text(info.get("group")),
        threats=tuple(_threat_name(t) for t in threats),
    )


def _threat_name(threat: Any) -> str:
    if isinstance(threat, dict):
        return _text(threat.get("name"))
    return _text(threat)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    """Plain JSON data from what callers naturally have at hand: Status, Threat, Verdict, Path."""
    if isinstance(value, enum.Enum):  # before int: Status is an IntEnum, stored by its label
        return getattr(value, "label", None) or value.name.lower()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=str)
    to_json = getattr(value, "to_json", None)
    if callable(to_json):
        return _plain(to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def _write_durably(directory: Path, name: str, data: bytes) -> None:
    """Write ``directory/name`` via a temporary name: write, fsync, rename; mode 0600."""
    tmp = directory / f".{name}.tmp"
    fd = os.open(tmp, _O_WRITE, FILE_MODE)
    try:
        with open(fd, "wb", closefd=False) as fh:
            os.fchmod(fd, FILE_MODE)  # explicitly: the umask must not decide who reads mail
            fh.write(data)
            fh.flush()
            os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, directory / name)


def _reason(err: OSError) -> str:
    return err.strerror or str(err)
