"""One kept original as a list shows it, read from its entry directory in any of the three stores.

The stores are the quarantine and the sweep backups (FileStore: ``content`` + ``info.json``) and
the mail backups (BackupStore: ``message.eml`` + ``info.json``). An entry whose record cannot be
read is a row with the status ``damaged``, never an exception: it must stay visible so that an
administrator can delete it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..mail.backup import ID_RE, id_time

QUARANTINE, FILE, MAIL = "quarantine", "file", "mail"
KINDS = (QUARANTINE, FILE, MAIL)
DAMAGED = "damaged"

# The file holding the original, per kind.
CONTENT_NAMES = {QUARANTINE: "content", FILE: "content", MAIL: "message.eml"}
INFO_NAME = "info.json"

_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
# info.json holds a verdict tree; one larger than this is not a record lmsav wrote.
MAX_INFO_BYTES = 16 << 20


@dataclass(frozen=True)
class KeptRow:
    """What the list of kept originals shows of one entry."""

    kind: str
    id: str
    created: float
    size: int
    status: str
    threats: tuple[str, ...] = ()
    action: str = ""  # files: quarantine, cure, delete; mail: the groups' actions
    original_path: str = ""  # files
    sender: str = ""  # mail
    recipients: tuple[str, ...] = ()
    subject: str = ""
    groups: tuple[str, ...] = ()

    @property
    def damaged(self) -> bool:
        return self.status == DAMAGED

    def to_json(self) -> dict:
        return {"kind": self.kind, "id": self.id, "created": self.created, "size": self.size,
                "status": self.status, "threats": list(self.threats), "action": self.action,
                "original_path": self.original_path, "sender": self.sender,
                "recipients": list(self.recipients), "subject": self.subject,
                "groups": list(self.groups)}


def read_row(kind: str, root: Path | str, entry_id: str) -> KeptRow | None:
    """The row of ``root/entry_id``; None when the entry is not there (any more)."""
    if not ID_RE.match(entry_id):
        return None
    directory = os.path.join(root, entry_id)
    try:
        fd = os.open(os.path.join(directory, INFO_NAME), _O_READ)
    except FileNotFoundError:
        return None if not os.path.isdir(directory) else _damaged(kind, directory, entry_id)
    except OSError:
        return _damaged(kind, directory, entry_id)
    try:
        with open(fd, "rb") as fh:
            raw = fh.read(MAX_INFO_BYTES + 1)
        record = json.loads(raw) if len(raw) <= MAX_INFO_BYTES else None
    except (OSError, ValueError, RecursionError):
        record = None
    if not isinstance(record, dict):
        return _damaged(kind, directory, entry_id)
    return row_from_record(kind, entry_id, record, directory)


def row_from_record(kind: str, entry_id: str, record: dict, directory: str = "") -> KeptRow:
    """The row of a record as its store wrote it; odd values are shown empty, never raised."""
    created = record.get("created")
    size = record.get("size")
    if not isinstance(size, int) or isinstance(size, bool):
        size = _content_size(kind, directory) if directory else 0
    common = {
        "kind": kind, "id": entry_id, "size": size, "status": _text(record.get("status")),
        "created": float(created) if _is_number(created) else id_time(entry_id),
        "threats": _names(record.get("threats"))}
    if kind != MAIL:
        return KeptRow(**common, action=_text(record.get("action")),
                       original_path=_text(record.get("original_path")))
    # The envelope is kept flat ({"sender", "recipients"}) or nested under "envelope".
    envelope = record.get("envelope")
    envelope = envelope if isinstance(envelope, dict) else record
    groups = record.get("groups")
    groups = groups if isinstance(groups, list) else []
    group_names = tuple(_text(g.get("group")) for g in groups if isinstance(g, dict))
    if not group_names and record.get("group"):
        group_names = (_text(record.get("group")),)
    actions = record.get("actions")
    actions = [_text(a) for a in actions] if isinstance(actions, list) else []
    return KeptRow(**common, action=", ".join(dict.fromkeys(a for a in actions if a)),
                   sender=_text(envelope.get("sender")),
                   recipients=_names(envelope.get("recipients")),
                   subject=_text(record.get("subject")), groups=group_names)


def _damaged(kind: str, directory: str, entry_id: str) -> KeptRow:
    return KeptRow(kind=kind, id=entry_id, created=id_time(entry_id),
                   size=_content_size(kind, directory), status=DAMAGED)


def _content_size(kind: str, directory: str) -> int:
    try:
        return os.lstat(os.path.join(directory, CONTENT_NAMES[kind])).st_size
    except OSError:
        return 0


def _is_number(value: Any) -> bool:
    # Epoch seconds: not a bool, not NaN or infinite, not past the year 5000.
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and 0 <= value < 1e11


def _names(value: Any) -> tuple[str, ...]:
    """A list of names (threats, recipients); a threat may be kept as {"name": ...}."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        return ()
    return tuple(_text(v.get("name")) if isinstance(v, dict) else _text(v) for v in value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    value = value if isinstance(value, str) else str(value)
    if value.isascii():
        return value
    # Undecodable header bytes come back from JSON as lone surrogates, which SQLite (UTF-8)
    # and the page cannot hold.
    return value.encode("utf-8", "replace").decode("utf-8")
