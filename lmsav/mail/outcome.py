"""What mail policy decided for one message: per recipient group, the action and the result."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class ObjectAction:
    """One object of the message (a part, a member, or the whole message) and what was done."""

    object: str
    status: str
    action: str
    threats: list[str] = field(default_factory=list)
    reason: str = ""

    def to_json(self) -> dict:
        return {"object": self.object, "status": self.status, "action": self.action,
                "threats": self.threats, "reason": self.reason}


@dataclass
class GroupOutcome:
    """The outcome for the recipients that resolved to one group."""

    group: str
    recipients: list[str]
    status: str  # worst status as this group sees it: clean … infected, filtered, unscanned
    action: str  # the decisive action on the message: skip warn drop reject cure delete hold
    message: bytes | None  # what these recipients get; None when dropped, rejected, deleted, held
    reject_reply: str = ""
    objects: list[ObjectAction] = field(default_factory=list)
    notices: list = field(default_factory=list)  # notify.Notice: those about this group
    backup_id: str | None = None

    @property
    def delivered(self) -> bool:
        return self.message is not None

    def to_json(self) -> dict:
        return {
            "group": self.group,
            "recipients": self.recipients,
            "status": self.status,
            "action": self.action,
            "delivered": self.delivered,
            "size": len(self.message) if self.message is not None else 0,
            "reject_reply": self.reject_reply,
            "objects": [o.to_json() for o in self.objects],
            "notices": [{"kind": n.kind, "to": list(n.envelope_to)} for n in self.notices],
            "backup": self.backup_id,
        }


@dataclass
class MessageOutcome:
    message_id: str
    sender: str
    recipients: list[str]
    subject: str
    size: int
    status: str  # worst over the groups
    threats: list[str]
    groups: list[GroupOutcome]
    verdict: dict | None  # the engine's verdict tree (None when the message was not scanned)
    scan_seconds: float
    database_version: str
    started: float = field(default_factory=time.time)
    notices: list = field(default_factory=list)  # notify.Notice, one per person and kind

    def to_json(self) -> dict:
        return {
            "message_id": self.message_id,
            "sender": self.sender,
            "recipients": self.recipients,
            "subject": self.subject,
            "size": self.size,
            "status": self.status,
            "threats": self.threats,
            "scan_seconds": round(self.scan_seconds, 4),
            "database_version": self.database_version,
            "groups": [g.to_json() for g in self.groups],
            "notices": [{"kind": n.kind, "to": list(n.envelope_to), "groups": list(n.groups)}
                        for n in self.notices],
            "verdict": self.verdict,
        }

    def stats_event(self, queue_id: str = "") -> dict:
        """The event the statistics store records for this message (``lmsav.stats.events``)."""
        return {
            "kind": "message",
            "time": self.started,
            "queue_id": queue_id,
            "message_id": self.message_id,
            "sender": self.sender,
            "recipients": list(self.recipients),
            "groups": [{"group": g.group, "status": g.status, "action": g.action}
                       for g in self.groups],
            "status": self.status,
            "threats": list(self.threats),
            "size": self.size,
            "scan_ms": self.scan_seconds * 1000,
        }
