"""Explodes a MIME message into its decoded parts, attached messages and uuencoded files.

Each part also carries how ClamAV reads it (``MemberMeta``, from mail_clamav.ClamavReading): the
name and size .cdb rules see and whether its links are checked for phishing. Leaf part ``n``,
and each uuencoded file found in its text, is member ``n`` of the message: what
mimeedit.rebuild_mail removes or replaces.

A message that can be read more than one way is read every way: the parts its structure gives
(``n:name``), and, where that structure is in doubt or stopped at MAX_MIME_PARTS, the parts
found by cutting the text at every delimiter-like line (``raw<k>:name``, mime.raw_parts; no
rebuild can place those). What one reading finds infected stays infected whatever the other
makes of the message.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import MAX_MIME_PARTS, Context
from ..objects import Child, ScanObject
from ..signatures.subject import MAIL_UNREAD
from . import uu
from .base import Corrupted, Rebuilder
from .mail_clamav import LINKS_MAX_SIZE, ClamavReading
from .mime import (
    Reading,
    _decode,
    _maintype,
    _transfer_encoding,
    base64_readings,
    decode_body,
    leaf_name,
    raw_parts,
    read_message,
)
from .mimeedit import rebuild_mail

__all__ = ["LINKS_MAX_SIZE", "MailHandler"]


class MailHandler:
    """Yields every leaf part decoded, attached messages whole, and uuencoded blocks in text.

    Headers are parsed by the stdlib ``email`` package; bodies are split at MIME boundaries with
    ``bytes.find`` and decoded with ``binascii``. Feeding whole messages through the stdlib's
    line-by-line feed parser cost most of a mail scan's time on large attachments.
    """

    types = frozenset({"mail"})

    def rebuilder(self, file_type: str) -> Rebuilder | None:
        """Leaves removed or given new decoded content, by leaf number (mimeedit)."""
        return rebuild_mail if file_type in self.types else None

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        raw = bytes(obj.data)
        try:
            reading = read_message(raw, ctx.check_time)
        except RecursionError:
            raise Corrupted("multipart nesting too deep") from None
        # An attached message ClamAV skips: nothing inside it is described or checked either.
        outer = obj.member
        unread = outer is not None and outer.mail_use == MAIL_UNREAD
        # ClamAV reads an attached message from its line-by-line copy of the part, unless it
        # saved the part decoded byte for byte (base64: the copy is as long as our bytes).
        attached = obj.ancestry[-1:] == ("mail",) and not (
            outer is not None and outer.size == obj.size)
        clamav = ClamavReading(raw, reading.root, unread, attached, ctx.check_time)
        for n, leaf in enumerate(reading.leaves, 1):
            data = _decode(leaf.part, raw[leaf.body_start:leaf.end])
            meta = clamav.meta(leaf)
            if not data and meta is None:
                continue  # an empty part: nothing to scan, nothing ClamAV describes
            child = ctx.member(leaf_name(leaf.part, n), [data], declared_size=len(data))
            child.meta = meta
            child.member = n
            yield child
            if _maintype(leaf.part) == "text":
                for index, block in enumerate(uu.blocks(data), 1):
                    name = block.name.decode("latin-1")
                    block_child = ctx.member(f"{n}.{index}:{name}", [block.data])
                    block_child.member = n  # it goes with the part it was found in
                    yield block_child
        if reading.overflow:
            yield Child("more-parts", status=ctx.limits.limit_status,
                        reason=f"limit: mime parts {MAX_MIME_PARTS}")
        yield from _raw_reading(raw, reading, ctx)


def _raw_reading(raw: bytes, reading: Reading, ctx: Context) -> Iterator[Child]:
    """The parts the structure did not give: those past the part limit, and — when the
    structure is in doubt — every part found by delimiter lines, decoded by each transfer
    encoding its headers name."""
    regions = list(reading.overflow)
    if reading.doubts:
        # The whole body, up to the first overflow region (read already, part by part).
        end = regions[0][0] if regions else len(raw)
        regions.insert(0, (reading.root.body_start, end))
    if not regions:
        return
    given = {(leaf.body_start, leaf.end, _transfer_encoding(leaf.part))
             for leaf in reading.leaves}
    seq = 0
    for start, end in regions:
        for part in raw_parts(raw, start, end, ctx.check_time):
            outputs: list[bytes] = []
            for cte in part.encodings or [""]:
                if (part.body_start, part.end, cte) in given:
                    continue  # the structure gave this very part
                body = raw[part.body_start:part.end]
                for data in base64_readings(body) if cte == "base64" else [decode_body(cte, body)]:
                    if data and data not in outputs:
                        outputs.append(data)
            for data in outputs:
                seq += 1
                name = part.name or f"part{seq}.{part.subtype}"
                yield ctx.member(f"raw{seq}:{name}", [data], declared_size=len(data))
