"""qmail's envelope encoding, as qmail-queue(8) documents it (also used by the LMSAVMAIL files).

``F<sender>\\0``, then ``T<recipient>\\0`` for each recipient, then one more ``\\0``. Addresses
are bytes (qmail does not decode them) and cannot contain a NUL. No imports at all: the qmail
wrapper runs this for every message (the ``Envelope`` type lives in ``envelope.py``, which
needs ``dataclasses`` and so costs the wrapper more than its whole run).
"""

# qmail-queue keeps addresses to ADDR = 1003 bytes; a longer one is refused, never truncated.
MAX_ADDRESS = 1003
# Far above what qmail-smtpd sends (it stops accepting RCPT long before), low enough that a
# runaway writer cannot fill memory.
MAX_ENVELOPE = 16 << 20


class EnvelopeError(Exception):
    """The envelope does not follow the format; the message must not be queued."""


class Incomplete(EnvelopeError):
    """The data ends before the final NUL: more is needed (or, at end of file, it is truncated)."""


def parse(data: bytes, start: int = 0) -> tuple[bytes, list[bytes], int]:
    """(sender, recipients, offset just past the final NUL) of the envelope at ``start``."""
    end = len(data)
    if start >= end:
        raise Incomplete("envelope is empty")
    if data[start] != 0x46:  # F
        raise EnvelopeError(f"envelope starts with {data[start:start + 1]!r}, not F")
    pos, sender = _address(data, start + 1, "sender")
    recipients = []
    while True:
        if pos >= end:
            raise Incomplete("envelope ends before the final NUL")
        tag = data[pos]
        if tag == 0:
            return sender, recipients, pos + 1
        if tag != 0x54:  # T
            raise EnvelopeError(f"recipient {len(recipients) + 1} starts with "
                                f"{data[pos:pos + 1]!r}, not T")
        pos, rcpt = _address(data, pos + 1, f"recipient {len(recipients) + 1}")
        recipients.append(rcpt)


def _address(data: bytes, pos: int, what: str) -> tuple[int, bytes]:
    nul = data.find(b"\0", pos, pos + MAX_ADDRESS + 1)
    if nul < 0:
        if len(data) - pos > MAX_ADDRESS:
            raise EnvelopeError(f"{what} longer than {MAX_ADDRESS} bytes")
        raise Incomplete(f"envelope ends inside the {what}")
    return nul + 1, data[pos:nul]


def encode(sender: bytes, recipients: list[bytes] | tuple[bytes, ...]) -> bytes:
    for address in (sender, *recipients):
        if b"\0" in address or len(address) > MAX_ADDRESS:
            raise EnvelopeError(f"address {address[:60]!r} cannot be put in an envelope")
    return b"".join([b"F", sender, b"\0", *(b"T" + r + b"\0" for r in recipients), b"\0"])


def text(address: bytes) -> str:
    """An address as text for the policy; bytes that are not UTF-8 survive the round trip."""
    return address.decode("utf-8", "surrogateescape")


def raw(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")
