"""What one kept original's page shows: its record, its findings as a flat verdict tree, and for
a message the decoded header fields of the original (only its head is read).

Everything here reads a record someone else's file wrote: odd values are shown as text, deep or
huge trees are cut, and a record that cannot be read makes a ``damaged`` detail, never an
exception.
"""

from __future__ import annotations

import email.policy
import os
import re
import stat
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any, BinaryIO

from ..mail.backup import ID_RE, BackupError, BackupStore
from .index import store_roots
from .kept_row import (
    CONTENT_NAMES,
    DAMAGED,
    KINDS,
    MAIL,
    KeptRow,
    read_row,
    row_from_record,
)
from .store import FileStore, StoreError

MAX_HEAD = 256 << 10  # bytes of a message read for its header fields
MAX_HEADERS = 200
MAX_VALUE = 2000
MAX_NODES = 2000
MAX_DEPTH = 64
_O_READ = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_HEAD_END = re.compile(rb"\r?\n\r?\n")


class NoSuchEntry(Exception):
    """The kind or id names no entry (malformed, or not there)."""


@dataclass(frozen=True)
class TreeNode:
    """One object of a verdict tree, at its depth."""

    depth: int
    path: str
    type: str
    size: Any
    status: str
    own_status: str
    threats: tuple[str, ...]
    reason: str


@dataclass
class EntryDetail:
    kind: str
    id: str
    row: KeptRow
    record: dict = field(default_factory=dict)
    error: str = ""  # why the record could not be read (a damaged entry)
    tree: list[TreeNode] = field(default_factory=list)
    tree_cut: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_file(self) -> bool:
        return self.kind != MAIL


def stores_of(state_dir: Path | str) -> dict[str, FileStore | BackupStore]:
    roots = store_roots(state_dir)
    return {"quarantine": FileStore(roots["quarantine"], "quarantine"),
            "file": FileStore(roots["file"], "backup"),
            "mail": BackupStore(roots["mail"])}


def check(kind: str, entry_id: str) -> None:
    """NoSuchEntry unless ``kind`` and ``entry_id`` are well formed (before any path is built)."""
    if kind not in KINDS or not isinstance(entry_id, str) or not ID_RE.match(entry_id):
        raise NoSuchEntry(f"no {kind[:20]} entry {entry_id[:60]!r}")


def open_original(state_dir: Path | str, kind: str, entry_id: str) -> BinaryIO:
    """The original's file, open for reading (a link is never followed); NoSuchEntry when the
    entry has none."""
    check(kind, entry_id)
    directory = store_roots(state_dir)[kind] / entry_id
    try:
        if stat.S_ISDIR(os.lstat(directory).st_mode):
            fd = os.open(directory / CONTENT_NAMES[kind], _O_READ)
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return open(fd, "rb")
            os.close(fd)
    except OSError:
        pass
    raise NoSuchEntry(f"no {kind} entry '{entry_id}' (or its original is missing)")


def read_detail(state_dir: Path | str, kind: str, entry_id: str) -> EntryDetail:
    check(kind, entry_id)
    store = stores_of(state_dir)[kind]
    try:
        exists = store.exists(entry_id)
    except (StoreError, BackupError) as err:
        raise NoSuchEntry(str(err)) from None
    if not exists:
        raise NoSuchEntry(f"no {kind} entry '{entry_id}'")
    directory = str(store.root / entry_id)
    try:
        record = store.info(entry_id) if kind != MAIL else store.show(entry_id)
    except (StoreError, BackupError, RecursionError) as err:
        message = str(err) if not isinstance(err, RecursionError) else "its record nests too deep"
        row = read_row(kind, store.root, entry_id) or KeptRow(kind, entry_id, 0.0, 0, DAMAGED)
        if row.status != DAMAGED:
            row = KeptRow(kind, entry_id, row.created, row.size, DAMAGED)
        return EntryDetail(kind, entry_id, row, error=message)
    detail = EntryDetail(kind, entry_id, row_from_record(kind, entry_id, record, directory),
                         record)
    detail.tree, detail.tree_cut = flatten_verdict(record.get("verdict"))
    if kind == MAIL:
        detail.headers = message_headers(Path(directory) / CONTENT_NAMES[MAIL])
    return detail


def flatten_verdict(verdict: Any) -> tuple[list[TreeNode], bool]:
    """The verdict tree (a scan's ``{"result": node}`` or a bare node) depth first, without
    recursion; True when it was cut at MAX_NODES or MAX_DEPTH."""
    if isinstance(verdict, dict) and isinstance(verdict.get("result"), dict):
        verdict = verdict["result"]
    if not isinstance(verdict, dict):
        return [], False
    nodes: list[TreeNode] = []
    cut = False
    stack = [(0, verdict)]
    while stack:
        depth, node = stack.pop()
        if len(nodes) >= MAX_NODES or depth > MAX_DEPTH:
            cut = True
            continue
        threats = node.get("threats")
        threats = threats if isinstance(threats, list) else []
        nodes.append(TreeNode(
            depth=depth, path=_text(node.get("path")), type=_text(node.get("type")),
            size=node.get("size") if isinstance(node.get("size"), int) else "",
            status=_text(node.get("status")), own_status=_text(node.get("own_status")),
            threats=tuple(_text(t.get("name")) if isinstance(t, dict) else _text(t)
                          for t in threats),
            reason=_text(node.get("reason"))))
        children = node.get("children")
        if isinstance(children, list):
            stack.extend((depth + 1, c) for c in reversed(children) if isinstance(c, dict))
    return nodes, cut


def message_headers(path: Path) -> list[tuple[str, str]]:
    """The header fields of the message at ``path``, decoded (RFC 2047) for reading; [] when
    it cannot be read."""
    try:
        fd = os.open(path, _O_READ)
    except OSError:
        return []
    with open(fd, "rb") as fh:
        head = fh.read(MAX_HEAD)
    end = _HEAD_END.search(head)
    if end:
        head = head[:end.start()] + b"\n"
    message = BytesHeaderParser(policy=email.policy.default).parsebytes(head)
    headers = []
    for name, raw in message.raw_items():
        if len(headers) >= MAX_HEADERS:
            break
        try:
            value = str(email.policy.default.header_fetch_parse(name, raw))
        except Exception:  # noqa: BLE001 - the stdlib's header parsers fail on odd input
            value = raw
        headers.append((_text(name)[:200], _text(" ".join(value.split()))[:MAX_VALUE]))
    return headers


def _text(value: Any) -> str:
    """Text safe to show: no control characters, no lone surrogates."""
    if value is None:
        return ""
    value = value if isinstance(value, str) else str(value)
    value = _CONTROL.sub("?", value)
    return value if value.isascii() else value.encode("utf-8", "replace").decode("utf-8")
