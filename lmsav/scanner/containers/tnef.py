"""Extracts the attachments of an MS TNEF stream (winmail.dat), embedded messages included."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Iterator

from ..limits import CHUNK, Context
from ..objects import Child, ScanObject
from .base import Corrupted

TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"  # 0x223E9F78, little endian

# Attribute levels and the attribute ids (low 16 bits of the attribute field) used here
# (MS-OXTNEF 2.1.3.2-2.1.3.3).
_LVL_MESSAGE, _LVL_ATTACHMENT = 1, 2
_ATT_ATTACH_DATA = 0x800F
_ATT_ATTACH_TITLE = 0x8010
_ATT_ATTACH_REND_DATA = 0x9002  # starts every attachment
_ATT_ATTACHMENT = 0x9005  # the attachment's MAPI properties
_ATT_OEM_CODEPAGE = 0x9007

# MAPI property ids and types (MS-OXPROPS, MS-OXTNEF 2.1.3.4).
_PR_DISPLAY_NAME = 0x3001
_PR_ATTACH_DATA_OBJ = 0x3701
_PR_ATTACH_FILENAME = 0x3704
_PR_ATTACH_LONG_FILENAME = 0x3707
_PT_OBJECT, _PT_STRING8, _PT_UNICODE, _PT_BINARY = 0x000D, 0x001E, 0x001F, 0x0102
_VARIABLE_TYPES = frozenset({_PT_OBJECT, _PT_STRING8, _PT_UNICODE, _PT_BINARY, 0x00FB})
_FIXED_SIZES = {
    0x0001: 4, 0x0002: 4, 0x0003: 4, 0x0004: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8, 0x000A: 4,
    0x000B: 4, 0x0014: 8, 0x0040: 8, 0x0048: 16,
}
_MULTI_VALUED = 0x1000
_NAMED_PROPERTIES = 0x8000
_IID_SIZE = 16  # a PtypObject value starts with the interface id of the object

# Attribute header (level, id, length), then the data and a 16-bit checksum after it.
_ATTR_HEADER = 9
_ATTR_TRAILER = 2


class TnefHandler:
    """Yields each attachment under its file name; an embedded message is yielded as TNEF again."""

    types = frozenset({"tnef"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        size = obj.size
        if size < 6 or bytes(data[:4]) != TNEF_SIGNATURE:
            raise Corrupted("not a TNEF stream")
        codec = "cp1252"
        problems: list[str] = []
        current: _Attachment | None = None
        count = 0
        pos = 6
        while pos < size:
            level = data[pos]
            if level == 0 or (size - pos <= 2 and not bytes(data[pos:]).strip(b"\r\n")):
                break  # end marker or padding, or a stray newline from a careless MIME encoder
            end = pos + _ATTR_HEADER
            if end > size:
                problems.append("truncated attribute header")
                break
            attr_id = int.from_bytes(bytes(data[pos + 1:pos + 3]), "little")
            length = int.from_bytes(bytes(data[pos + 5:pos + 9]), "little")
            if end + length + _ATTR_TRAILER > size:
                problems.append("truncated attribute")
                break
            if level == _LVL_ATTACHMENT:
                if attr_id == _ATT_ATTACH_REND_DATA or current is None:
                    if current is not None:
                        count = yield from _emit(current, count, ctx, data)
                    current = _Attachment()
                _attachment_attribute(current, attr_id, data, end, length, codec, problems)
            elif level == _LVL_MESSAGE:
                if attr_id == _ATT_OEM_CODEPAGE and length >= 4:
                    codec = _codec(int.from_bytes(bytes(data[end:end + 4]), "little"))
            else:
                problems.append(f"unknown attribute level {level}")
                break
            # The checksum after the data is not verified: writers get it wrong, readers ignore it.
            pos = end + length + _ATTR_TRAILER
        if current is not None:
            yield from _emit(current, count, ctx, data)
        if problems:
            raise Corrupted("; ".join(dict.fromkeys(problems)))


@dataclass
class _Attachment:
    """What one attachment's attributes said, in whatever order they came."""

    title: str = ""
    data: tuple[int, int] | None = None  # (offset, length) of attAttachData in the stream
    data_obj: bytes | None = None
    long_filename: str = ""
    filename: str = ""
    display_name: str = ""

    def name(self, index: int) -> str:
        for candidate in (self.long_filename, self.title, self.filename, self.display_name):
            cleaned = candidate.replace("\x00", "").replace("/", "_").strip()
            if cleaned:
                return cleaned
        return f"attachment{index}"


def _attachment_attribute(att: _Attachment, attr_id: int, data, start: int, length: int,
                          codec: str, problems: list[str]) -> None:
    if attr_id == _ATT_ATTACH_DATA:
        att.data = (start, length)
    elif attr_id == _ATT_ATTACH_TITLE:
        att.title = _decode_8bit(bytes(data[start:start + length]), codec)
    elif attr_id == _ATT_ATTACHMENT:
        try:
            _read_attachment_properties(att, bytes(data[start:start + length]), codec)
        except _Damaged as err:
            problems.append(f"damaged MAPI properties: {err}")


def _emit(att: _Attachment, count: int, ctx: Context, data) -> Iterator[Child]:
    """Yields the attachment's contents; returns the running attachment count."""
    count += 1
    name = att.name(count)
    legacy = b""
    if att.data is not None:
        start, length = att.data
        yield ctx.member(name, _chunks(data, start, length), declared_size=length)
        legacy = bytes(data[start:start + length]) if att.data_obj is not None else b""
    obj = att.data_obj
    if obj is not None and obj != legacy:
        # An object attAttachData did not already carry: an embedded message, an OLE storage.
        yield ctx.member(f"{name}.obj" if att.data is not None else name,
                         _chunks(obj, 0, len(obj)), declared_size=len(obj))
    return count


def _chunks(data, start: int, length: int) -> Iterator[bytes]:
    for at in range(start, start + length, CHUNK):
        yield bytes(data[at:min(at + CHUNK, start + length)])


class _Damaged(Exception):
    pass


class _Props:
    """A bounds-checked little-endian reader over one attribute's MAPI property block."""

    def __init__(self, raw: bytes):
        self.raw = raw
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise _Damaged("runs past its attribute")
        self.pos += n
        return self.raw[self.pos - n:self.pos]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "little")

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "little")

    def padded(self, n: int) -> bytes:
        value = self.take(n)
        self.take(-n % 4)
        return value

    def left(self) -> int:
        return len(self.raw) - self.pos


def _read_attachment_properties(att: _Attachment, raw: bytes, codec: str) -> None:
    props = _Props(raw)
    for _ in range(props.u32()):
        ptype = props.u16()
        pid = props.u16()
        if pid >= _NAMED_PROPERTIES:
            props.take(16)  # property set GUID
            if props.u32() == 0:
                props.take(4)  # numeric name
            else:
                props.padded(props.u32())  # string name
        base = ptype & ~_MULTI_VALUED
        if base in _VARIABLE_TYPES or ptype & _MULTI_VALUED:
            count = props.u32()
            if count * 4 > props.left():
                raise _Damaged(f"{count} values cannot fit")
        else:
            count = 1
        values = []
        for _ in range(count):
            if base in _VARIABLE_TYPES:
                values.append(props.padded(props.u32()))
            elif base in _FIXED_SIZES:
                props.take(_FIXED_SIZES[base])
            else:
                raise _Damaged(f"unknown property type {ptype:#06x}")
        if not values:
            continue
        value = values[0]
        if pid == _PR_ATTACH_DATA_OBJ and base in (_PT_BINARY, _PT_OBJECT):
            att.data_obj = value[_IID_SIZE:] if base == _PT_OBJECT else value
        elif pid in (_PR_ATTACH_LONG_FILENAME, _PR_ATTACH_FILENAME, _PR_DISPLAY_NAME):
            if base == _PT_UNICODE:
                text = value.decode("utf-16-le", "replace")
            elif base == _PT_STRING8:
                text = _decode_8bit(value, codec)
            else:
                continue
            field = {_PR_ATTACH_LONG_FILENAME: "long_filename", _PR_ATTACH_FILENAME: "filename",
                     _PR_DISPLAY_NAME: "display_name"}[pid]
            setattr(att, field, text.split("\x00", 1)[0])


def _decode_8bit(raw: bytes, codec: str) -> str:
    return raw.split(b"\x00", 1)[0].decode(codec, "replace")


def _codec(codepage: int) -> str:
    try:
        return codecs.lookup(f"cp{codepage}").name
    except LookupError:
        return "cp1252"
