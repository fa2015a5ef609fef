"""A plan of the mail service → what a milter tells the MTA at the end of the message: the
notices to send on the side, the header and body changes that turn the received message into
the one the group's recipients get, and the final reply.

The MTA keeps the message it received and applies our changes, so the group's message is
compared with the received one: each header changed, added or removed becomes CHGHEADER or
ADDHEADER (Subject prefix, X-AV-*, Content-Type of a rebuilt body), a different body REPLBODY.
A held message (every recipient's group holds it) is quarantined unchanged with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..mail.deliveries import Delivery
from ..scanner.containers.mimeedit import header_end
from . import protocol

DEFAULT_REJECT = "550 5.7.1 Message rejected by the anti-virus policy"
MIXED_GROUPS_REPLY = "451 4.7.1 Recipients of another policy group: try them again separately"


@dataclass
class Answer:
    """What to send: ``notices`` first (before the reply: a failure there must tempfail),
    then ``packets`` (modifications, then the final reply)."""

    notices: list[Delivery] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)
    summary: str = ""  # for the log line: accept, reject, discard, hold, tempfail


def answer(plan, headers: list[tuple[str, str]], body: bytes, recipients: list[str]) -> Answer:
    """``headers`` and ``body`` as the MTA sent them, ``recipients`` the accepted ones."""
    deliveries = plan.before_queue_deliveries()
    messages = [d for d in deliveries if d.key.endswith(":message")]
    notices = [d for d in deliveries if not d.key.endswith(":message")]
    if plan.rejected:
        return Answer(notices, [protocol.reply_code(smtp_reply(plan.reply, "45"))], "reject")
    if plan.result == "hold":
        # Kept as received, for the administrator: Postfix puts it in its hold queue, Sendmail
        # quarantines it (both offer QUARANTINE to a milter that asks, as lmsav does).
        reason = plan.reply or "held by the anti-virus policy"
        return Answer(notices, [protocol.quarantine(reason), protocol.encode(protocol.ACCEPT)],
                      "hold")
    if not messages:
        # Every recipient's group dropped it (or deleted it): accepted and thrown away.
        return Answer(notices, [protocol.encode(protocol.DISCARD)], "discard")
    if len(messages) > 1 or not set(messages[0].recipients) <= set(recipients):
        # The recipients were checked at RCPT time to share one group; never hand one group's
        # message to another's recipients.
        return Answer([], [protocol.reply_code(MIXED_GROUPS_REPLY)], "tempfail")
    [delivery] = messages
    packets = [protocol.delete_recipient(r) for r in recipients if r not in delivery.recipients]
    packets += header_changes(headers, parse_headers(delivery.message))
    new_body = crlf(delivery.message[header_end(delivery.message):])
    if new_body.startswith(b"\r\n"):
        new_body = new_body[2:]
    if new_body != crlf(body):
        packets += protocol.replace_body(new_body)
    packets.append(protocol.encode(protocol.ACCEPT))
    return Answer(notices, packets, "accept")


def smtp_reply(reply: str, classes: str) -> str:
    """The reply as one line ``Xyz a.b.c text`` whose class is one of ``classes`` ("45": a
    temporary or permanent failure) whatever the configured text says: the MTA refuses a
    milter reply of any other class."""
    text = " ".join((reply or "").split())
    code, _, _rest = text.partition(" ")
    if len(code) == 3 and code.isdigit() and code[0] in classes:
        return text
    default = DEFAULT_REJECT if "5" in classes else "451 4.7.1 Try again later"
    return f"{default[:9]} {text}" if text else default


def parse_headers(message: bytes) -> list[tuple[str, str]]:
    """(name, value) of each header line of ``message``, folded lines kept with LF."""
    block = message[:header_end(message)].replace(b"\r\n", b"\n").decode("utf-8",
                                                                          "surrogateescape")
    out: list[tuple[str, str]] = []
    for line in block.split("\n"):
        if not line:
            continue
        if line[0] in " \t" and out:
            name, value = out[-1]
            out[-1] = (name, value + "\n" + line)
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip(), value.removeprefix(" ")))
    return out


def header_changes(old: list[tuple[str, str]], new: list[tuple[str, str]]) -> list[bytes]:
    """CHGHEADER/ADDHEADER packets that turn the ``old`` headers into the ``new`` ones, header
    name by header name (the MTA indexes a header by its occurrence among those of its name)."""
    packets = []
    names: dict[str, str] = {}
    for name, _ in old + new:
        names.setdefault(name.lower(), name)
    for key, name in names.items():
        before = [v for n, v in old if n.lower() == key]
        after = [v for n, v in new if n.lower() == key]
        for i in range(max(len(before), len(after))):
            if i >= len(before):
                packets.append(protocol.add_header(name, _folded(after[i])))
            elif i >= len(after):
                packets.append(protocol.change_header(name, i + 1, ""))
            elif _same(before[i], after[i]):
                continue
            else:
                packets.append(protocol.change_header(name, i + 1, _folded(after[i])))
    return packets


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _folded(value: str) -> str:
    # The MTA writes the value as given: folded lines keep their line break (LF; Postfix and
    # Sendmail write their own line ends).
    return value.replace("\r\n", "\n")


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
