"""LMSAVMAIL: the exchange through which the daemon applies the mail policy for a local client.

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

The daemon side is ``decode_request`` → ``MailService.decide`` → ``write_plan``; the client
side (lmsav-qmail-queue) is ``encode_request`` → ``read_plan``. The top of this module imports
``os`` and the envelope encoding only: the qmail wrapper imports it for every message.
"""

import os

from . import qmail_envelope as envelope

COMMAND = b"zLMSAVMAIL\0"
REPLY_OK = "LMSAVMAIL OK"
REPLY_ERROR = "LMSAVMAIL ERROR"
REQUEST_MAGIC = b"LMSAVREQ1\0"
PLAN_MAGIC = b"LMSAVPLAN1\0"
MAX_REQUEST = envelope.MAX_ENVELOPE + 4096
MAX_MESSAGE = 1 << 40  # the client's memory file; scanning limits apply inside


class PlanError(Exception):
    """A request or plan file that does not follow the format."""


class ExchangeError(Exception):
    """The daemon gave no plan; ``connected`` is False when nobody listens on the socket
    (the caller may then decide in-process instead)."""

    def __init__(self, message: str, connected: bool = True):
        super().__init__(message)
        self.connected = connected


def ask(path: str, request: bytes, message_fd: int, timeout: float):
    """The client's side: ``request`` (``encode_request``) and the message's descriptor to the
    daemon at ``path``; its plan, as ``read_plan`` gives it. Uses the C ``_socket`` module:
    ``import socket`` costs a per-message client milliseconds for nothing used here."""
    import sys

    try:
        import _socket as _sock
    except ImportError:  # not CPython
        import socket as _sock

    request_fd = os.memfd_create("lmsav-request", os.MFD_CLOEXEC)
    plan = os.memfd_create("lmsav-plan", os.MFD_CLOEXEC)
    sock = _sock.socket(_sock.AF_UNIX, _sock.SOCK_STREAM)
    try:
        os.pwrite(request_fd, request, 0)
        sock.settimeout(timeout or None)
        try:
            sock.connect(path)
        except OSError as err:
            raise ExchangeError(err.strerror or str(err), connected=False) from None
        try:
            sock.sendall(COMMAND)
            rights = b"".join(fd.to_bytes(4, sys.byteorder, signed=True)
                              for fd in (request_fd, message_fd, plan))
            sock.sendmsg([b"\0"], [(_sock.SOL_SOCKET, _sock.SCM_RIGHTS, rights)])
            reply = _read_reply(sock)
        except TimeoutError:
            raise ExchangeError(f"daemon at {path}: no answer within {timeout:g} s") from None
        except OSError as err:
            raise ExchangeError(f"daemon at {path}: {err.strerror or err}") from None
        if reply != REPLY_OK:
            raise ExchangeError(f"daemon at {path}: {reply or 'closed the connection'}")
        try:
            return read_plan(plan)
        except PlanError as err:
            raise ExchangeError(f"daemon at {path}: {err}") from None
    finally:
        sock.close()
        os.close(request_fd)
        os.close(plan)


def _read_reply(sock) -> str:
    buf = b""
    while not buf.endswith(b"\0") and len(buf) <= 65536:
        piece = sock.recv(4096)
        if not piece:
            break
        buf += piece
    return buf.rstrip(b"\0").decode("utf-8", "replace")


# The files are NUL-separated fields and qmail envelopes (no JSON: the wrapper that reads them
# runs for every message, and importing json costs it more than the rest of its work).

# -- request ------------------------------------------------------------------------------------

def encode_request(sender: bytes, recipients: list[bytes], group: str = "",
                   client: str = "") -> bytes:
    """The request file: the group forced for this connection ("" to resolve per recipient),
    the client (for the logs), the envelope."""
    return b"".join([REQUEST_MAGIC, _field(group), _field(client),
                     envelope.encode(sender, recipients)])


def decode_request(data: bytes):
    """The request file as an ``Envelope`` (arrived now)."""
    from .envelope import Envelope

    if not data.startswith(REQUEST_MAGIC):
        raise PlanError("request file has no request")
    fields, pos = _fields(data, len(REQUEST_MAGIC), 2)
    try:
        sender, recipients, _end = envelope.parse(data, pos)
    except envelope.EnvelopeError as err:
        raise PlanError(f"request envelope: {err}") from None
    return Envelope(envelope.text(sender), tuple(envelope.text(r) for r in recipients),
                    client=fields[1], group=fields[0])


# -- plan file ----------------------------------------------------------------------------------

_PLAN_FIELDS = ("result", "reply", "status", "threats", "message_id")


def write_plan(fd: int, plan) -> None:
    """Write a ``service.Plan`` at offset 0 of ``fd`` (positional writes: the descriptor's
    offset is shared with the client). The client answers the SMTP transaction itself, so it
    gets the plan's before-queue deliveries."""
    outcome = plan.outcome
    values = {"result": plan.result, "reply": plan.reply, "status": outcome.status,
              "threats": " ".join(outcome.threats), "message_id": outcome.message_id}
    deliveries = plan.before_queue_deliveries()
    parts = [PLAN_MAGIC]
    parts += [_field(values[k]) for k in _PLAN_FIELDS]
    parts.append(_field(str(len(deliveries))))
    for d in deliveries:
        parts += [_field(d.key), _field(str(len(d.message))),
                  envelope.encode(envelope.raw(d.sender), [envelope.raw(r) for r in d.recipients])]
    head = b"".join(parts)
    _pwrite_all(fd, head, 0)
    offset = len(head)
    for d in deliveries:
        _pwrite_all(fd, d.message, offset)
        offset += len(d.message)
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
