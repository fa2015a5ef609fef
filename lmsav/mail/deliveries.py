"""What one message's policy outcome asks the MTA to accept: the notices (the groups' notices
and the delivery status notice to the sender about refused recipients) first, then the messages
per group. ``service.MailService.decide`` calls this; front ends read the plan."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from email.utils import formatdate, make_msgid

from ..scanner.containers.mimeedit import header_end
from .envelope import Envelope
from .groups import match_pattern

# The key of the delivery status notice telling the sender which recipients refused the message.
REJECT_NOTICE_KEY = "reject"


@dataclass(frozen=True)
class Delivery:
    """One message to hand back to the MTA, with the key that identifies it across retries."""

    key: str  # "notice<i>:<kind>", "reject", "<group>:message"
    sender: str
    recipients: tuple[str, ...]
    message: bytes


def plan_deliveries(outcome, envelope: Envelope, raw: bytes, groups=None,
                    hostname: str = "localhost") -> list[Delivery]:
    """Every delivery an outcome asks for: the notices, the one status notice to the sender
    for every recipient whose group rejected, then each group's message."""
    out: list[Delivery] = []
    for i, n in enumerate(outcome.notices, 1):
        if n.envelope_to:
            out.append(Delivery(f"notice{i}:{n.kind}", n.envelope_from, tuple(n.envelope_to),
                                n.message))
    refused = [(r, g.reject_reply) for g in outcome.groups if g.action == "reject"
               and _wants_reject_notice(g, outcome, envelope, groups) for r in g.recipients]
    if refused:
        out.append(Delivery(REJECT_NOTICE_KEY, "", (envelope.sender,),
                            build_refusal_notice(envelope, refused, raw, hostname)))
    for g in outcome.groups:
        if g.message is not None and g.recipients:
            out.append(Delivery(f"{g.group}:message", envelope.sender, tuple(g.recipients),
                                g.message))
    return out


def _wants_reject_notice(g, outcome, envelope: Envelope, groups) -> bool:
    if not envelope.sender or envelope.sender.lower().startswith("mailer-daemon@"):
        return False  # a bounce is never answered with a bounce
    if any(n.kind == "sender" and g.group in n.groups for n in outcome.notices):
        return False  # the sender's notice already carries this group's reject reply
    policy = groups.get(g.group) if groups is not None else None
    patterns = tuple(getattr(policy, "no_sender_notice", ()) or ())
    # Threats that forge their sender: a notice would be backscatter to an innocent party.
    return not any(match_pattern(p, t) for p in patterns for t in outcome.threats)


_STATUS_IN_REPLY = re.compile(r"^\s*[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")


def build_refusal_notice(envelope: Envelope, refused: list[tuple[str, str]], raw: bytes,
                         hostname: str, now: float | None = None) -> bytes:
    """A delivery status notification (RFC 3464) telling the sender that the ``refused``
    recipients did not get the message, each with its group's reject reply, and the original
    headers. LF line ends."""
    rcpts = [(" ".join(r.split()), _reply(reply)) for r, reply in refused]
    boundary = f"=_lmsav_{os.urandom(8).hex()}"
    when = formatdate(now, localtime=True)
    arrived = formatdate(envelope.arrived, localtime=True) if envelope.arrived else when
    end = header_end(raw)
    headers = raw[:min(end, 65536)].replace(b"\r\n", b"\n").rstrip(b"\r\n") + b"\n"
    text = "\n".join([
        f"This is the mail system at host {hostname}.",
        "",
        "Your message was not delivered to the following recipients; it was refused",
        "by the anti-virus policy of this host:",
        "",
        *[f"<{r}>: {reply}" for r, reply in rcpts],
        "",
        "The headers of your message are attached.",
        "",
    ])
    status_part = "\n".join(
        [f"Reporting-MTA: dns; {hostname}", f"Arrival-Date: {arrived}", ""]
        + [line for r, reply in rcpts for line in (
            f"Final-Recipient: rfc822; {r}", "Action: failed", f"Status: {_status(reply)}",
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


def _reply(reply: str) -> str:
    return " ".join((reply or "550 5.7.1 Message rejected").split())


def _status(reply: str) -> str:
    """The enhanced status code of a reply, made permanent: after the queue a refusal is final."""
    match = _STATUS_IN_REPLY.match(reply)
    status = match.group(1) if match and match.group(1)[0] in "45" else "5.7.1"
    return "5" + status[1:] if status[0] == "4" else status
