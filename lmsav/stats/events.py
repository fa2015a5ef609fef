"""What one event becomes in the store: its row, and the counters it adds to the roll-ups.

An event is a dict with a ``kind``: "message" (one per message the mail policy decided; see
``lmsav.mail.outcome.MessageOutcome.stats_event``) or any other kind ("file_scan",
"daemon_scan", "update", …) with the optional keys ``status``, ``files``, ``threats``, ``size``,
``duration_ms`` and ``detail`` (a JSON object). Every key is optional but ``kind``; ``time``
defaults to when the event was recorded.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

MESSAGE = "message"
# Every status a message can end with, worst last (the engine's, then the mail policy's own).
STATUSES = ("unscanned", "clean", "error", "corrupted", "protected", "suspicious", "infected",
            "filtered")
# How strict each action is, to name the decisive one of a message whose groups disagree.
ACTION_STRICTNESS = {"skip": 0, "warn": 1, "cure": 2, "delete": 3, "drop": 4, "hold": 5,
                     "reject": 6}
# Kinds whose ``files`` count is what ``totals()["files_scanned"]`` adds up.
FILE_KINDS = ("file_scan", "daemon_scan")


class InvalidEvent(ValueError):
    """An event the store cannot take (no kind, values of the wrong type)."""


@dataclass(frozen=True)
class MessageRow:
    time: float
    node: str
    queue_id: str
    message_id: str
    sender: str
    recipients: str  # JSON array
    groups: str  # JSON array of group names
    status: str
    action: str  # the strictest of the groups' actions
    outcomes: str  # JSON object: group → {"status": …, "action": …}
    threats: str  # JSON array
    size: int
    scan_ms: float


@dataclass(frozen=True)
class EventRow:
    time: float
    node: str
    kind: str
    status: str
    files: int
    threats: str  # JSON array
    size: int
    duration_ms: float
    detail: str  # JSON object


def _text(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidEvent(f"{name} is not text")
    # Addresses may carry bytes that are not UTF-8 (kept as surrogates): stored escaped.
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _texts(value, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise InvalidEvent(f"{name} is not a list")
    return [_text(v, name) for v in value]


def _number(value, name: str) -> float:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{name} is not a number")
    return value


def _json(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def event_time(event: dict) -> float:
    return float(_number(event.get("time"), "time") or time.time())


def message_row(event: dict, node: str) -> MessageRow:
    groups = event.get("groups") or []
    if not isinstance(groups, list | tuple) or not all(isinstance(g, dict) for g in groups):
        raise InvalidEvent("groups is not a list of objects")
    names = [_text(g.get("group"), "group") for g in groups]
    outcomes = {name: {"status": _text(g.get("status"), "status"),
                       "action": _text(g.get("action"), "action")}
                for name, g in zip(names, groups, strict=True)}
    decisive = max((o["action"] for o in outcomes.values()),
                   key=lambda a: ACTION_STRICTNESS.get(a, -1), default="")
    return MessageRow(
        time=event_time(event), node=node, queue_id=_text(event.get("queue_id"), "queue_id"),
        message_id=_text(event.get("message_id"), "message_id"),
        sender=_text(event.get("sender"), "sender"),
        recipients=_json(_texts(event.get("recipients"), "recipients")),
        groups=_json(names), status=_text(event.get("status"), "status") or "clean",
        action=decisive, outcomes=_json(outcomes),
        threats=_json(_texts(event.get("threats"), "threats")),
        size=int(_number(event.get("size"), "size")),
        scan_ms=float(_number(event.get("scan_ms"), "scan_ms")))


def event_row(event: dict, node: str) -> EventRow:
    detail = event.get("detail") or {}
    if not isinstance(detail, dict):
        raise InvalidEvent("detail is not an object")
    return EventRow(
        time=event_time(event), node=node, kind=_text(event["kind"], "kind"),
        status=_text(event.get("status"), "status"),
        files=int(_number(event.get("files"), "files")),
        threats=_json(_texts(event.get("threats"), "threats")),
        size=int(_number(event.get("size"), "size")),
        duration_ms=float(_number(event.get("duration_ms"), "duration_ms")),
        detail=json.dumps(detail, ensure_ascii=False, separators=(",", ":"), default=str))


def row_of(event: dict, node: str) -> MessageRow | EventRow:
    """The row an event becomes; InvalidEvent when it cannot be one."""
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str) \
            or not event["kind"]:
        raise InvalidEvent("an event is an object with a kind")
    if event["kind"] == MESSAGE:
        return message_row(event, node)
    return event_row(event, node)


def counters(row: MessageRow | EventRow) -> list[tuple[str, str, int]]:
    """(metric, label, value) the row adds to its minute, hour and day."""
    if isinstance(row, EventRow):
        out = [("event", row.kind, 1)]
        if row.status:
            out.append(("event_status", f"{row.kind}\t{row.status}", 1))
        if row.kind in FILE_KINDS and row.files:
            out.append(("files_scanned", "", row.files))
        if row.size:
            out.append(("event_bytes", row.kind, row.size))
        return out
    out = [("messages", "", 1), ("status", row.status, 1), ("bytes", "", row.size),
           ("scan_ms", "", round(row.scan_ms))]
    for group, outcome in json.loads(row.outcomes).items():
        out.append(("group_status", f"{group}\t{outcome['status']}", 1))
        out.append(("group_action", f"{group}\t{outcome['action']}", 1))
    out.extend(("threat", name, 1) for name in json.loads(row.threats))
    if row.status == "infected":
        out.append(("infected_sender", row.sender or "<>", 1))
    return out
