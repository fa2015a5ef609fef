"""What one message's policy outcome asks the MTA to accept: the messages per group, the
rejection notices to the sender and the groups' notices, in order. Shared by the spool watcher
(after the queue) and lmsav-qmail-queue (before it)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from email.utils import formatdate, make_msgid
from typing import Protocol

from .raw import header_end


class Envelope(Protocol):
    """What is needed of an envelope: the spool's Envelope and qmail's both qualify."""

    sender: str
    arrived: float


@dataclass(frozen=True)
class Delivery:
    """One message to hand back to the MTA, with the key that identifies it across retries."""

    key: str  # "<group>:message", "<group>:reject", "<group>:notice<i>:<kind>"
    sender: str
    recipients: tuple[str, ...]
    message: bytes


def plan_deliveries(outcome, envelope: Envelope, raw: bytes, groups=None,
                    hostname: str = "localhost") -> list[Delivery]:
    """Every delivery an outcome asks for, in order: per group its message, the rejection
    notice to the sender, then the group's notices."""
    out: list[Delivery] = []
    for g in outcome.groups:
        if g.message is not None and g.recipients:
            out.append(Delivery(f"{g.group}:message", envelope.sender, tuple(g.recipients),
                                g.message))
        if g.action == "reject" and _wants_reject_notice(g, outcome, envelope, groups):
            out.append(Delivery(f"{g.group}:reject", "", (envelope.sender,), build_reject_notice(
                envelope, g.recipients, g.reject_reply, raw, hostname)))
        for i, n in enumerate(g.notices, 1):
            if n.envelope_to:
                out.append(Delivery(f"{g.group}:notice{i}:{n.kind}", n.envelope_from,
                                    tuple(n.envelope_to), n.message))
    return out


def _wants_reject_notice(g, outcome, envelope: Envelope, groups) -> bool:
    if not envelope.sender or envelope.sender.lower().startswith("mailer-daemon@"):
        return False  # a bounce is never answered with a bounce
    if any(n.kind == "sender" for n in g.notices):
        return False  # the group's own sender notice already carries the reject reply
    policy = groups.get(g.group) if groups is not None else None
    patterns = tuple(getattr(policy, "no_sender_notice", ()) or ())
    if patterns:
        # Threats that forge their sender: a notice would be backscatter to an innocent party.
        from ..mail.groups import match_pattern

        if any(match_pattern(p, t) for p in patterns for t in outcome.threats):
            return False
    return True


_STATUS_IN_REPLY = re.compile(r"^\s*[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")


def build_reject_notice(envelope: Envelope, recipients, reply: str, raw: bytes,
                        hostname: str, now: float | None = None) -> bytes:
    """A delivery status notification (RFC 3464) telling the sender that ``recipients`` did not
    get the message, with the rejection text and the original headers. LF line ends."""
    reply = " ".join((reply or "550 5.7.1 Message rejected").split())
    match = _STATUS_IN_REPLY.match(reply)
    status = match.group(1) if match and match.group(1)[0] in "45" else "5.7.1"
    if status[0] == "4":
        status = "5" + status[1:]  # after the queue a rejection is final
    boundary = f"=_lmsav_{os.urandom(8).hex()}"
    when = formatdate(now, localtime=True)
    arrived = formatdate(envelope.arrived, localtime=True) if envelope.arrived else when
    rcpts = [" ".join(r.split()) for r in recipients]
    end = header_end(raw)
    headers = raw[:min(end, 65536)].replace(b"\r\n", b"\n").rstrip(b"\r\n") + b"\n"
    text = "\n".join([
        f"This is the mail system at host {hostname}.",
        "",
        "Your message was not delivered to the following recipients; it was refused",
        "by the anti-virus policy of this host:",
        "",
        *[f"<{r}>: {reply}" for r in rcpts],
        "",
        "The headers of your message are attached.",
        "",
    ])
    status_part = "\n".join(
        [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {arrived}", ""]
        + [line for r in rcpts for line in (
            f"Final-Recipient: rfc822; {r}", "Action: failed", f"Status: {status}",
            f"Diagnostic-Code: smtp; {reply}", "")])
    head = "\n".join([
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>",
        f"To: <{' '.join(envelope.sender.split())}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {when}",
        f"Message-ID: {make_msgid('lmsav-dsn', domain=hostname)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        text,
        f"--{boundary}",
        "Content-Type: message/delivery-status",
        "",
        status_part,
        f"--{boundary}",
        "Content-Type: text/rfc822-headers",
        "",
        "",
    ])
    return head.encode("utf-8", "surrogateescape") + headers + f"\n--{boundary}--\n".encode()
