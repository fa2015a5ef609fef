"""LMSAVMAIL: the daemon applies the whole mail policy to one message for a local client.

This is how lmsav-qmail-queue (and any other local front end) uses the loaded database and
groups without loading anything itself. The exchange, on the unix socket only:

- the client sends ``zLMSAVMAIL\\0`` and then one byte carrying three descriptors
  (SCM_RIGHTS): the request (see ``encode_request``), the message, and an empty file
  the daemon writes the plan into;
- the daemon answers one line: ``LMSAVMAIL OK`` once the plan is written, or
  ``LMSAVMAIL ERROR <reason>`` when the message could not be processed (the client defers).

The request holds the envelope in qmail's encoding; the plan holds the result, then for each
delivery its key, length and envelope, then the bodies one after the other. Passing
descriptors keeps the message out of the socket and lets both sides use memory files, so a
20 KB message costs no disk I/O.

The top of this module is standard library only: the qmail wrapper imports it for every
message. ``make_plan`` imports the mail policy when it runs.
"""

import os

from ..qmail import envelope

COMMAND = b"zLMSAVMAIL\0"
REPLY_OK = "LMSAVMAIL OK"
REPLY_ERROR = "LMSAVMAIL ERROR"
REQUEST_MAGIC = b"LMSAVREQ1\0"
PLAN_MAGIC = b"LMSAVPLAN1\0"
MAX_REQUEST = envelope.MAX_ENVELOPE + 4096
MAX_MESSAGE = 1 << 40  # the client's memory file; scanning limits apply inside


class PlanError(Exception):
    """A request or plan file that does not follow the format."""


# The files are NUL-separated fields and qmail envelopes (no JSON: the wrapper that reads them
# runs for every message, and importing json costs it more than the rest of its work).

# -- request ------------------------------------------------------------------------------------

def encode_request(sender: bytes, recipients: list[bytes], group: str = "",
                   client: str = "") -> bytes:
    """The request file: the group forced for this connection ("" to resolve per recipient),
    the client (for the logs), the envelope."""
    return b"".join([REQUEST_MAGIC, _field(group), _field(client),
                     envelope.encode(sender, recipients)])


def decode_request(data: bytes) -> dict:
    if not data.startswith(REQUEST_MAGIC):
        raise PlanError("request file has no request")
    fields, pos = _fields(data, len(REQUEST_MAGIC), 2)
    try:
        sender, recipients, _end = envelope.parse(data, pos)
    except envelope.EnvelopeError as err:
        raise PlanError(f"request envelope: {err}") from None
    return {"group": fields[0], "client": fields[1], "sender": envelope.text(sender),
            "recipients": [envelope.text(r) for r in recipients]}


# -- plan file ----------------------------------------------------------------------------------

_PLAN_FIELDS = ("result", "reply", "status", "threats", "message_id")


def write_plan(fd: int, header: dict, bodies: list[bytes]) -> None:
    """Write the plan at offset 0 of ``fd`` (positional writes: the descriptor's offset is
    shared with the client)."""
    parts = [PLAN_MAGIC]
    parts += [_field(" ".join(header[k]) if k == "threats" else header[k]) for k in _PLAN_FIELDS]
    parts.append(_field(str(len(bodies))))
    for d, body in zip(header["deliveries"], bodies):
        parts += [_field(d["key"]), _field(str(len(body))),
                  envelope.encode(envelope.raw(d["sender"]),
                                  [envelope.raw(r) for r in d["recipients"]])]
    head = b"".join(parts)
    _pwrite_all(fd, head, 0)
    offset = len(head)
    for body in bodies:
        _pwrite_all(fd, body, offset)
        offset += len(body)
    os.ftruncate(fd, offset)


def read_plan(fd: int) -> tuple[dict, list[tuple[str, bytes, list[bytes], bytes]]]:
    """The header fields and the deliveries (key, sender, recipients, body) of a plan."""
    size = os.fstat(fd).st_size
    data = _pread_all(fd, size, 0)
    if not data.startswith(PLAN_MAGIC):
        raise PlanError("plan file has no plan")
    values, pos = _fields(data, len(PLAN_MAGIC), len(_PLAN_FIELDS) + 1)
    header = dict(zip(_PLAN_FIELDS, values))
    header["threats"] = header["threats"].split()
    heads = []
    try:
        for _ in range(int(values[-1])):
            (key, length), pos = _fields(data, pos, 2)
            sender, recipients, pos = envelope.parse(data, pos)
            heads.append((key, int(length), sender, recipients))
    except (ValueError, envelope.EnvelopeError) as err:
        raise PlanError(f"plan unreadable: {err}") from None
    deliveries = []
    for key, length, sender, recipients in heads:
        if length < 0 or pos + length > len(data):
            raise PlanError("plan file is truncated")
        deliveries.append((key, sender, recipients, data[pos:pos + length]))
        pos += length
    return header, deliveries


def _field(value: str) -> bytes:
    return value.replace("\0", " ").encode("utf-8", "surrogateescape") + b"\0"


def _fields(data: bytes, pos: int, count: int) -> tuple[list[str], int]:
    out = []
    for _ in range(count):
        nul = data.find(b"\0", pos)
        if nul < 0:
            raise PlanError("file ends inside a field")
        out.append(data[pos:nul].decode("utf-8", "surrogateescape"))
        pos = nul + 1
    return out, pos


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    parts = []
    while size > 0:
        piece = os.pread(fd, min(size, 1 << 24), offset)
        if not piece:
            break
        parts.append(piece)
        size -= len(piece)
        offset += len(piece)
    return b"".join(parts)


def read_fd(fd: int, limit: int) -> bytes:
    """Everything in a passed file, from offset 0."""
    data = _pread_all(fd, limit + 1, 0)
    if len(data) > limit:
        raise PlanError(f"file larger than {limit} bytes")
    return data


# -- making the plan (daemon workers and the in-process fallback) --------------------------------

def make_plan(processor, groups, request: dict, raw: bytes, hostname: str) -> tuple[dict,
                                                                                      list[bytes]]:
    """Apply the policy and turn the outcome into what a before-queue front end does.

    When every recipient's group rejects, the message is refused as a whole (the client hears
    the first group's reject reply); only the groups' notices are queued. When some groups
    accept, those deliveries go ahead and the rejecting groups' recipients are reported to the
    sender with a delivery status notice, as after the queue — the SMTP transaction has one
    answer for all recipients. Notices come first, the messages last, so a failure to queue a
    message cannot leave it queued while its notices were lost.
    """
    import time
    from types import SimpleNamespace

    from ..mail.deliveries import plan_deliveries

    sender, recipients = request["sender"], request["recipients"]
    outcome = processor.process(raw, sender, recipients, group=request.get("group") or None)
    envelope = SimpleNamespace(sender=sender, arrived=time.time())
    deliveries = plan_deliveries(outcome, envelope, raw, groups, hostname)
    addressed = [g for g in outcome.groups if g.recipients]
    rejected = bool(addressed) and all(g.action == "reject" for g in addressed)
    reply = ""
    if rejected:
        deliveries = [d for d in deliveries if not d.key.endswith(":reject")]
        reply = next((g.reject_reply for g in addressed if g.reject_reply), "")
    ordered = [d for d in deliveries if not d.key.endswith(":message")] + \
              [d for d in deliveries if d.key.endswith(":message")]
    header = {
        "result": "reject" if rejected else "accept",
        "reply": reply,
        "status": outcome.status,
        "threats": outcome.threats,
        "message_id": outcome.message_id,
        "deliveries": [{"key": d.key, "sender": d.sender, "recipients": list(d.recipients)}
                       for d in ordered],
    }
    return header, [d.message for d in ordered]
