"""The PDF handler: every decoded stream and embedded file of a document as a member."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ...limits import Context
from ...objects import Child, ScanObject, Status
from ..base import Corrupted
from .crypt import encryption, is_identity_crypt, rc4_decryptor
from .damage import Damage
from .document import scan_objects, stream_filters, type_of
from .embedded import embedded_names, names_in
from .filters import decode_chain

log = logging.getLogger(__name__)

# Image codecs: their output is pixels, never a file a signature targets, so they are skipped.
_IMAGE_FILTERS = frozenset({"DCTDecode", "JPXDecode", "JBIG2Decode", "CCITTFaxDecode"})


class PdfHandler:
    """Yields each decoded stream as ``obj<N>`` and embedded files under their own names."""

    types = frozenset({"pdf"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = bytes(obj.data)
        streams, trailers, objects, damage = scan_objects(data)
        if not streams and not objects:
            raise Corrupted("no PDF objects")
        decrypt = None
        encrypt = encryption(trailers, objects, data)
        if encrypt is not None:
            decrypt = rc4_decryptor(encrypt, trailers, objects, data)
            if decrypt is None:
                yield Child("encrypted", status=Status.PROTECTED, reason="encrypted")
                return
        names = embedded_names(data, objects, decrypt)
        skipped_images = 0
        # Object streams first: filespecs inside them name the embedded files yielded after.
        ordered = sorted(streams, key=lambda s: type_of(s.info) != "ObjStm")
        for stream in ordered:
            ctype = type_of(stream.info)
            if ctype == "XRef":
                continue  # cross-reference data: offsets, never content
            filters, parms = stream_filters(stream.info)
            if filters and filters[-1] in _IMAGE_FILTERS:
                skipped_images += 1
                continue
            raw = stream.raw
            if decrypt is not None and not is_identity_crypt(filters):
                raw = decrypt(stream.num, stream.gen, raw)
            name = names.get(stream.num) or f"obj{stream.num}"
            errors = Damage()
            blocks = decode_chain(raw, filters, parms, errors)
            child = ctx.member(name, blocks, packed_size=max(len(raw), 1))
            if stream.truncated:
                errors.add("stream truncated")
            if child.status is not None or child.size:
                yield child
            for reason in errors.reasons:
                damage.add(f"obj{stream.num}: {reason}")
            if ctype == "ObjStm" and child.data:
                names.update(names_in(child.data, None))
        if skipped_images:
            log.debug("%s: %d image streams not decoded", obj.name, skipped_images)
        if damage.reasons:
            raise Corrupted("; ".join(damage.reasons[:3]))
