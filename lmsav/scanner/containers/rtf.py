"""Explodes RTF documents: embedded OLE objects (``\\objdata``) and ``\\bin`` binary runs.

Members are named ``objdata`` (then ``objdata2``, ``objdata3`` … in document order) for each
embedded object's native data, which recurses when it is an OLE2 compound file (Word, Excel,
Equation objects). An OLE1 "Package" object (a file dropped into the document) is not a type
the engine can sniff, so its file is yielded through it: ``objdata//clam.exe``, which reads as
the route ``outer.rtf//objdata//clam.exe``. Runs of ``\\bin N`` raw data outside objects are
``bin1``, ``bin2`` ….
"""

from __future__ import annotations

import binascii
import re
import struct
from typing import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .base import Corrupted
from .ole2 import unpack_package

# One RTF token: a control word with its optional numeric parameter (one trailing space is
# part of it), a control symbol, a brace, or a run of plain text.
_TOKEN = re.compile(
    rb"\\([a-zA-Z]{1,32})(-?[0-9]{1,10})? ?|\\(.)|([{}])|([^\\{}]+)|(\\)$", re.S
)
_NOT_HEX = re.compile(rb"[^0-9A-Fa-f]+")
_OLE1_EMBEDDED = 2  # ObjectHeader.FormatID of an embedded (not linked) object
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_MAX_NAME = 256  # OLE1 class/topic/item names are short; longer means junk


class RtfHandler:
    """Yields each ``\\objdata`` object's native data (or packaged file) and ``\\bin`` runs."""

    types = frozenset({"rtf"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        objects = 0
        bins = 0
        for kind, data in _payloads(obj.data, ctx):
            if kind == "bin":
                bins += 1
                yield ctx.member(f"bin{bins}", [data], declared_size=len(data))
                continue
            objects += 1
            name = "objdata" if objects == 1 else f"objdata{objects}"
            yield _object_member(name, data, ctx)
        # _payloads raises Corrupted only at the end, after every payload was yielded.


def _object_member(name: str, data: bytes, ctx: Context) -> Child:
    native = _ole1_native(data)
    if native is None:
        # Not an OLE1 object (or a damaged header): scan what was encoded as it is.
        return ctx.member(name, [data], declared_size=len(data))
    class_name, native_data = native
    if class_name.lower() == "package" and not native_data.startswith(_OLE2_MAGIC):
        package = unpack_package(native_data)
        if package is not None:
            filename, payload = package
            return ctx.member(f"{name}//{filename}", [payload], declared_size=len(payload))
    return ctx.member(name, [native_data], declared_size=len(native_data))


def _ole1_native(data: bytes) -> tuple[str, bytes] | None:
    """(class name, native data) of an OLE1 embedded object (MS-OLEDS 2.2.4), or None."""
    try:
        _version, format_id = struct.unpack_from("<II", data, 0)
        if format_id != _OLE1_EMBEDDED:
            return None
        pos = 8
        strings = []
        for _ in range(3):  # class name, topic name, item name
            (length,) = struct.unpack_from("<I", data, pos)
            if length > _MAX_NAME:
                return None
            strings.append(data[pos + 4:pos + 4 + length].split(b"\0", 1)[0])
            pos += 4 + length
        (size,) = struct.unpack_from("<I", data, pos)
    except struct.error:
        return None
    # Exploit documents often lie about the size; what is there is what gets scanned.
    native = data[pos + 4:pos + 4 + size]
    return strings[0].decode("latin-1"), native


def _payloads(data, ctx: Context) -> Iterator[tuple[str, bytes]]:
    """("objdata", decoded bytes) and ("bin", raw bytes) in document order.

    Hex in ``\\objdata`` is read the way Word reads it: whitespace, other characters and
    control words in between are skipped, groups starting with ``\\*`` inside it are ignored,
    a ``\\bin`` run inside it adds its bytes as they are. Raises Corrupted at the end when a
    group is left open (the last object is still yielded first).
    """
    depth = 0
    obj_depth = None  # depth of the open \objdata group, if any
    skip_depth = None  # depth of an ignorable group inside it
    hex_parts: list[bytes] = []
    pieces: list[bytes] = []
    pending_group = False  # a "{" was just seen: a following "\*" makes the group ignorable
    pos, end = 0, len(data)
    tokens = 0
    while pos < end:
        tokens += 1
        if not tokens & 0xFFFF:
            ctx.check_time()  # a document of millions of control words must not outlive the scan
        m = _TOKEN.match(data, pos)
        if m is None:  # cannot happen with the catch-all alternatives; be safe anyway
            pos += 1
            continue
        pos = m.end()
        word, param, symbol, brace, text = m.group(1, 2, 3, 4, 5)
        if brace == b"{":
            depth += 1
            pending_group = True
            continue
        starts_group, pending_group = pending_group, False
        if brace == b"}":
            if skip_depth is not None and depth == skip_depth:
                skip_depth = None
            if obj_depth is not None and depth == obj_depth:
                yield "objdata", _join(pieces, hex_parts)
                obj_depth = None
            depth = max(depth - 1, 0)
            continue
        if symbol == b"*" and starts_group and obj_depth is not None and skip_depth is None:
            skip_depth = depth
            continue
        if word == b"bin":
            size = max(int(param or 0), 0)
            raw = bytes(data[pos:pos + size])
            pos += size
            if obj_depth is not None:
                if skip_depth is None:
                    pieces.append(_unhex(hex_parts))
                    pieces.append(raw)
            elif raw:
                yield "bin", raw
            continue
        if word == b"objdata" and obj_depth is None:
            obj_depth = depth
            if param is not None:  # "\objdata0105…": leading digits parse as a parameter
                hex_parts.append(param)
            continue
        if text is not None and obj_depth is not None and skip_depth is None:
            hex_parts.append(text)
    if obj_depth is not None:
        yield "objdata", _join(pieces, hex_parts)
    if depth > 0:
        raise Corrupted(f"unterminated group ({depth} open at end)")


def _unhex(hex_parts: list[bytes]) -> bytes:
    """Decode the hex collected so far (an odd last digit is dropped) and clear it."""
    digits = _NOT_HEX.sub(b"", b"".join(hex_parts))
    hex_parts.clear()
    return binascii.unhexlify(digits[: len(digits) & ~1])


def _join(pieces: list[bytes], hex_parts: list[bytes]) -> bytes:
    pieces.append(_unhex(hex_parts))
    out = b"".join(pieces)
    pieces.clear()
    return out
