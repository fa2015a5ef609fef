"""What one event becomes in the store: its row, and the counters it adds to the roll-ups.

An event is a dict with a ``kind``: "message" (one per message the mail policy decided; see
``lmsav.mail.outcome.MessageOutcome.stats_event``) or any other kind ("file_scan",
"daemon_scan", "update", …) with the optional keys ``status``, ``files``, ``threats``, ``size``,
``duration_ms`` and ``detail`` (a JSON object). Every key is optional but ``kind``; ``time``
defaults to when the event was recorded.
"""

from __future__ import annotations

import json
import json.encoder
import time
from typing import NamedTuple

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


class Row(NamedTuple):
    """One event as the store keeps it, all that writing it needs made once: its columns as
    statement parameters, the counters it adds to the roll-ups."""

    table: str  # "messages" or "events"
    values: tuple  # the columns, in the order of schema.MESSAGE_COLUMNS or EVENT_COLUMNS
    counts: tuple  # (metric, label, value) it adds to its minute, hour and day

    @property
    def time(self) -> float:
        return self.values[0]

    @property
    def node(self) -> str:
        return self.values[1]


# A message's columns (schema.MESSAGE_COLUMNS):
#   time, node, queue_id, message_id, sender,
#   recipients (JSON array), groups (JSON array of group names), status,
#   action (the strictest of the groups' actions),
#   outcomes (JSON object: group → {"status": …, "action": …}), threats (JSON array),
#   size, scan_ms
# Another event's (schema.EVENT_COLUMNS):
#   time, node, kind, status, files, threats (JSON array), size, duration_ms,
#   detail (JSON object)


def _text(value, name: str) -> str:
    if value.__class__ is str and value.isascii():
        return value  # the usual case, nothing to escape
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


# JSON as json.dumps(value, ensure_ascii=False, separators=(",", ":")) writes it, without
# building an encoder per call: a string as json's own C function quotes it, arrays of
# strings and the outcomes object put together from those.
_quoted = json.encoder.encode_basestring
_detail_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _strings_json(values: list[str]) -> str:
    return f"[{','.join(map(_quoted, values))}]" if values else "[]"


def event_time(event: dict) -> float:
    return float(_number(event.get("time"), "time") or time.time())


# The columns and counters of a message's groups, by their (group, status, action): a server
# sees the same few combinations again and again. Bounded: emptied when full.
_GROUP_PARTS: dict[tuple, tuple[str, str, str, tuple]] = {}
_GROUP_PARTS_MAX = 1024
_NO_GROUPS = ("[]", "{}", "", ())


def _group_parts(groups) -> tuple[str, str, str, tuple]:
    """groups (JSON), outcomes (JSON), the decisive action and the group counters."""
    if not groups:
        return _NO_GROUPS
    if not isinstance(groups, list | tuple) or not all(isinstance(g, dict) for g in groups):
        raise InvalidEvent("groups is not a list of objects")
    key = tuple([(g.get("group"), g.get("status"), g.get("action")) for g in groups])
    try:
        parts = _GROUP_PARTS.get(key)
    except TypeError:  # a value that is not text: refused below
        parts = None
    if parts is None:
        parts = _new_group_parts(key)
        if len(_GROUP_PARTS) >= _GROUP_PARTS_MAX:
            _GROUP_PARTS.clear()
        _GROUP_PARTS[key] = parts
    return parts


def _new_group_parts(key: tuple) -> tuple[str, str, str, tuple]:
    names = [_text(group, "group") for group, _status, _action in key]
    # A group named twice counts once, with its last outcome (as a JSON object would keep it).
    outcomes = {name: (_text(status, "status"), _text(action, "action"))
                for name, (_group, status, action) in zip(names, key, strict=True)}
    decisive = max((action for _status, action in outcomes.values()),
                   key=lambda a: ACTION_STRICTNESS.get(a, -1), default="")
    outcomes_json = ",".join(f'{_quoted(name)}:{{"status":{_quoted(status)},'
                             f'"action":{_quoted(action)}}}'
                             for name, (status, action) in outcomes.items())
    counts = []
    for name, (status, action) in outcomes.items():
        counts.append(("group_status", f"{name}\t{status}", 1))
        counts.append(("group_action", f"{name}\t{action}", 1))
    return _strings_json(names), f"{{{outcomes_json}}}", decisive, tuple(counts)


def message_row(event: dict, node: str) -> Row:
    get = event.get
    groups, outcomes, action, group_counts = _group_parts(get("groups"))
    at = event_time(event)
    queue_id = _text(get("queue_id"), "queue_id")
    message_id = _text(get("message_id"), "message_id")
    sender = _text(get("sender"), "sender")
    recipients = _strings_json(_texts(get("recipients"), "recipients"))
    status = _text(get("status"), "status") or "clean"
    threats = _texts(get("threats"), "threats")
    size = int(_number(get("size"), "size"))
    scan_ms = float(_number(get("scan_ms"), "scan_ms"))
    counts = (("messages", "", 1), ("status", status, 1), ("bytes", "", size),
              ("scan_ms", "", round(scan_ms)), *group_counts)
    if threats:
        counts += tuple(("threat", name, 1) for name in threats)
    if status == "infected":
        counts += (("infected_sender", sender or "<>", 1),)
    return Row("messages", (at, node, queue_id, message_id, sender, recipients, groups, status,
                            action, outcomes, _strings_json(threats), size, scan_ms), counts)


def event_row(event: dict, node: str) -> Row:
    detail = event.get("detail") or {}
    if not isinstance(detail, dict):
        raise InvalidEvent("detail is not an object")
    at = event_time(event)
    kind = _text(event["kind"], "kind")
    status = _text(event.get("status"), "status")
    files = int(_number(event.get("files"), "files"))
    threats = _strings_json(_texts(event.get("threats"), "threats"))
    size = int(_number(event.get("size"), "size"))
    duration_ms = float(_number(event.get("duration_ms"), "duration_ms"))
    counts = [("event", kind, 1)]
    if status:
        counts.append(("event_status", f"{kind}\t{status}", 1))
    if kind in FILE_KINDS and files:
        counts.append(("files_scanned", "", files))
    if size:
        counts.append(("event_bytes", kind, size))
    return Row("events", (at, node, kind, status, files, threats, size, duration_ms,
                          _detail_json(detail)), tuple(counts))


def row_of(event: dict, node: str) -> Row:
    """The row an event becomes; InvalidEvent when it cannot be one."""
    if not isinstance(event, dict) or not isinstance(event.get("kind"), str) \
            or not event["kind"]:
        raise InvalidEvent("an event is an object with a kind")
    if event["kind"] == MESSAGE:
        return message_row(event, node)
    return event_row(event, node)
