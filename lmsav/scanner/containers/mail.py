"""Explodes a MIME message into its decoded parts, attached messages and uuencoded files.

Each part also carries how ClamAV reads it (``MemberMeta``, from mail_clamav.ClamavReading): the
name and size .cdb rules see and whether its links are checked for phishing.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from ..signatures.subject import MAIL_UNREAD
from .base import Corrupted
from .mail_clamav import LINKS_MAX_SIZE, ClamavReading
from .mime import _decode, _maintype, _uudecode_blocks, leaf_entities, leaf_name, parse_entity

__all__ = ["LINKS_MAX_SIZE", "MailHandler"]


class MailHandler:
    """Yields every leaf part decoded, attached messages whole, and uuencoded blocks in text.

    Headers are parsed by the stdlib ``email`` package; bodies are split at MIME boundaries with
    ``bytes.find`` and decoded with ``binascii``. Feeding whole messages through the stdlib's
    line-by-line feed parser cost most of a mail scan's time on large attachments.
    """

    types = frozenset({"mail"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        raw = bytes(obj.data)
        try:
            root = parse_entity(raw)
            leaves = leaf_entities(root)
        except RecursionError:
            raise Corrupted("multipart nesting too deep") from None
        # An attached message ClamAV skips: nothing inside it is described or checked either.
        outer = obj.member
        unread = outer is not None and outer.mail_use == MAIL_UNREAD
        # ClamAV reads an attached message from its line-by-line copy of the part, unless it
        # saved the part decoded byte for byte (base64: the copy is as long as our bytes).
        attached = obj.ancestry[-1:] == ("mail",) and not (
            outer is not None and outer.size == obj.size)
        reading = ClamavReading(raw, root, unread, attached)
        for n, leaf in enumerate(leaves, 1):
            data = _decode(leaf.part, raw[leaf.body_start:leaf.end])
            child = ctx.member(leaf_name(leaf.part, n), [data], declared_size=len(data))
            child.meta = reading.meta(leaf)
            yield child
            if _maintype(leaf.part) == "text":
                for index, (uu_name, uu_data) in enumerate(_uudecode_blocks(data), 1):
                    yield ctx.member(f"{n}.{index}:{uu_name}", [uu_data])
