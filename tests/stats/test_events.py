"""What an event becomes: the columns and roll-up counters made ready when it is recorded are
exactly what json.dumps and the plain definitions give, whatever the text, and a group
combination seen before gives the same row as a new one."""

from __future__ import annotations

import json

import pytest

from lmsav.stats import events, schema
from lmsav.stats.backend import rollup_rows
from lmsav.stats.events import ACTION_STRICTNESS, FILE_KINDS, InvalidEvent, row_of

from .conftest import NOW, message_event


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def escaped(text: str | None) -> str:
    return (text or "").encode("utf-8", "backslashreplace").decode("utf-8")


def expected_message(event: dict, node: str) -> tuple[dict, list]:
    """The row and counters of a message event, by their definitions."""
    groups = event.get("groups") or []
    names = [escaped(g.get("group")) for g in groups]
    outcomes = {name: {"status": escaped(g.get("status")), "action": escaped(g.get("action"))}
                for name, g in zip(names, groups, strict=True)}
    status = escaped(event.get("status")) or "clean"
    threats = [escaped(t) for t in event.get("threats") or []]
    sender = escaped(event.get("sender"))
    row = {"time": float(event["time"]), "node": node,
           "queue_id": escaped(event.get("queue_id")),
           "message_id": escaped(event.get("message_id")), "sender": sender,
           "recipients": dumps([escaped(r) for r in event.get("recipients") or []]),
           "groups": dumps(names), "status": status,
           "action": max((o["action"] for o in outcomes.values()),
                         key=lambda a: ACTION_STRICTNESS.get(a, -1), default=""),
           "outcomes": dumps(outcomes), "threats": dumps(threats),
           "size": int(event.get("size") or 0), "scan_ms": float(event.get("scan_ms") or 0)}
    counts = [("messages", "", 1), ("status", status, 1), ("bytes", "", row["size"]),
              ("scan_ms", "", round(row["scan_ms"]))]
    for group, outcome in outcomes.items():
        counts.append(("group_status", f"{group}\t{outcome['status']}", 1))
        counts.append(("group_action", f"{group}\t{outcome['action']}", 1))
    counts.extend(("threat", name, 1) for name in threats)
    if status == "infected":
        counts.append(("infected_sender", sender or "<>", 1))
    return row, counts


def expected_event(event: dict, node: str) -> tuple[dict, list]:
    kind, status = escaped(event["kind"]), escaped(event.get("status"))
    row = {"time": float(event["time"]), "node": node, "kind": kind, "status": status,
           "files": int(event.get("files") or 0),
           "threats": dumps([escaped(t) for t in event.get("threats") or []]),
           "size": int(event.get("size") or 0),
           "duration_ms": float(event.get("duration_ms") or 0),
           "detail": dumps(event.get("detail") or {})}
    counts = [("event", kind, 1)]
    if status:
        counts.append(("event_status", f"{kind}\t{status}", 1))
    if kind in FILE_KINDS and row["files"]:
        counts.append(("files_scanned", "", row["files"]))
    if row["size"]:
        counts.append(("event_bytes", kind, row["size"]))
    return row, counts


MESSAGES = [
    message_event(NOW),
    message_event(NOW + 1, status="infected", action="reject", threats=["Eicar-Test-Signature",
                                                                        "Other \"quoted\""]),
    message_event(NOW + 2, sender="", status="infected", action="drop", threats=["T"]),
    # Text JSON must escape, text that is not ASCII, bytes that were not UTF-8 (surrogates).
    message_event(NOW + 3, sender="jos\u00e9@exampl\u00e9.org",
                  recipients=["a\\b@x", 'q"uote@x', "tab\there@x", "\u2028line@x",
                              "bad\udcffbyte@x", "\x00nul@x", "\U0001f600@x"],
                  group="gr\u00fcppe \"1\"", threats=["\u00c9-sig"]),
    {"kind": "message", "time": NOW + 4, "sender": "s\udce9@x",
     "groups": [{"group": "a", "status": "clean", "action": "skip"},
                {"group": "b", "status": "infected", "action": "hold"},
                {"group": "c", "status": "suspicious", "action": "unknown-action"},
                {"group": "a", "status": "protected", "action": "warn"}],
     "status": "infected", "threats": ("T1", "T2"), "recipients": ("x@y",), "size": 7,
     "scan_ms": 2.5},
    {"kind": "message", "time": NOW + 5},
    {"kind": "message", "time": NOW + 6, "groups": [{}], "status": "", "size": 0,
     "scan_ms": 0.4999},
    {"kind": "message", "time": NOW + 7, "groups": [{"group": "g", "status": "clean",
                                                     "action": "reject"},
                                                    {"group": "h", "status": "clean",
                                                     "action": "delete"}],
     "scan_ms": 1},
]
EVENTS = [
    {"kind": "file_scan", "time": NOW, "files": 40, "status": "infected",
     "threats": ["Eicar-Test-Signature"], "detail": {"path": "/srv/\u00e9", "n": [1, 2.5],
                                                     "when": object}},
    {"kind": "daemon_scan", "time": NOW + 1, "files": 0, "size": 12, "duration_ms": 3},
    {"kind": "update", "time": NOW + 2, "status": "ok", "detail": {"quote": "\"\\"}},
    {"kind": "stats_dropped", "time": NOW + 3, "detail": {"dropped": 7}},
]


@pytest.mark.parametrize("event", MESSAGES)
def test_a_message_row_is_what_the_definitions_give(event):
    row, counts = expected_message(event, "mx.test")
    for _twice in range(2):  # the second time, the group combination is known
        got = row_of(event, "mx.test")
        assert got.table == "messages"
        assert dict(zip(schema.MESSAGE_COLUMNS, got.values, strict=True)) == row
        assert sorted(got.counts) == sorted(counts)
        assert (got.time, got.node) == (row["time"], "mx.test")


@pytest.mark.parametrize("event", EVENTS)
def test_an_event_row_is_what_the_definitions_give(event):
    row, counts = expected_event(event, "mx.test")
    got = row_of(event, "mx.test")
    assert got.table == "events"
    assert dict(zip(schema.EVENT_COLUMNS, got.values, strict=True)) == row
    assert sorted(got.counts) == sorted(counts)


def test_every_json_column_reads_back_as_what_was_recorded():
    got = dict(zip(schema.MESSAGE_COLUMNS, row_of(MESSAGES[3], "mx").values, strict=True))
    assert json.loads(got["recipients"])[:3] == ["a\\b@x", 'q"uote@x', "tab\there@x"]
    assert json.loads(got["recipients"])[4] == "bad\\udcffbyte@x"
    assert json.loads(got["outcomes"]) == {
        "gr\u00fcppe \"1\"": {"status": "clean", "action": "skip"}}


def test_the_group_combinations_kept_are_bounded(monkeypatch):
    monkeypatch.setattr(events, "_GROUP_PARTS", {})
    monkeypatch.setattr(events, "_GROUP_PARTS_MAX", 3)
    for n in range(10):
        event = message_event(NOW, group=f"g{n}", action="warn")
        assert row_of(event, "mx").values[6] == f'["g{n}"]'
        assert len(events._GROUP_PARTS) <= 3
    # One seen before and one forgotten since: the same row either way.
    assert row_of(message_event(NOW, group="g9"), "mx") == row_of(
        message_event(NOW, group="g9"), "mx")
    assert row_of(message_event(NOW, group="g0"), "mx").values[9] == \
        '{"g0":{"status":"clean","action":"skip"}}'


@pytest.mark.parametrize("event", [
    {"kind": "message", "groups": [{"group": ["not", "text"]}]},
    {"kind": "message", "groups": [{"group": "g", "status": 3}]},
    {"kind": "message", "groups": [{"group": "g", "action": {"a": 1}}]},
    {"kind": "message", "groups": ["not an object"]},
    {"kind": "message", "groups": "not a list"},
    {"kind": "message", "sender": b"bytes"},
    {"kind": "message", "threats": "T1"},
    {"kind": "message", "size": True},
    {"kind": "update", "detail": ["not", "an", "object"]},
    {"kind": ""},
])
def test_events_of_the_wrong_shape_are_refused(event):
    known = dict(events._GROUP_PARTS)
    with pytest.raises(InvalidEvent):
        row_of(event, "mx")
    assert events._GROUP_PARTS == known  # nothing kept of what was refused


def test_rollups_add_every_rows_counters_per_minute_hour_and_day():
    rows = [row_of(e, "mx") for e in MESSAGES + EVENTS]
    expected: dict[tuple, int] = {}
    for row in rows:
        for table, (width, _kept) in schema.ROLLUPS.items():
            for metric, label, value in row.counts:
                key = (table, int(row.time // width * width), "mx", metric, label)
                expected[key] = expected.get(key, 0) + value
    got = {}
    for statement, (bucket, node, metric, label, value) in rollup_rows(rows):
        table = statement.split()[2]
        got[(table, bucket, node, metric, label)] = value
    assert got == expected
