"""Unpacks UPX-compressed Windows executables into the program they hold (member ``upx``).

A UPX-packed PE has an empty first section (UPX0: virtual size only, no file data) followed by
one holding the compressed image and the decompressor (UPX1), where execution starts. The image
is compressed with one of the UCL algorithms NRV2B, NRV2D or NRV2E (32-bit little-endian bit
buffer) or with LZMA (two bytes of properties, then a raw LZMA1 stream); the ``UPX!`` header
names the method when it is still there. Packers and malware often strip or damage that header
and rename the sections, so the layout alone is enough to try each algorithm, as ClamAV does.
The unpacked image is rebuilt into a PE: with the original headers UPX keeps at the end of the
image when they are there, else with a plain header of one section, so signatures for PE files
apply to it. Call and jump filters UPX applied to the code are not undone (ClamAV does not
either: its signatures are written against the same bytes).
"""

from __future__ import annotations

import lzma
import struct

from ..limits import Context
from ..objects import Child
from .pe_layout import PeLayout, PeSection

# UPX's pack header: "UPX!", version, format, method, level, adler32 of the unpacked and the
# packed data, their sizes, ... (UPX's packhead.cpp). The methods: NRV2B/2D/2E (32-bit bit
# buffer) and LZMA.
_MAGIC = b"UPX!"
_NRV2B, _NRV2D, _NRV2E, _LZMA = 2, 5, 8, 14
_METHODS = (_NRV2B, _NRV2D, _NRV2E, _LZMA)

# "pushad; mov esi, imm32" at the entry point: where the stub reads the compressed data from
# when it does not start at UPX1's first byte.
_STUB_START = b"\x60\xbe"
_MAX_SKEW = 0xFFF

# Work between two clock checks of the decompressor, in output bytes.
_CLOCK_EVERY = 1 << 16

_FILE_ALIGN = 0x200
_MAX_SECTIONS = 96
_PE_SIGNATURE_TRIES = 64  # candidate "PE\0\0" headers looked at in an unpacked image


class Damaged(Exception):
    """The compressed stream ended or pointed outside what was produced."""


def packed_sections(data, size: int, layout: PeLayout) -> tuple[int, bool] | None:
    """(index of UPX0, the empty section UPX1 follows; whether UPX's names or header say it is
    UPX) when ``layout`` looks UPX-packed, else None."""
    sections = layout.sections
    for i in range(len(sections) - 1):
        empty, packed = sections[i], sections[i + 1]
        if empty.rsz or not empty.vsz or not packed.rsz or not packed.vsz:
            continue
        if packed.raw >= size:
            return None
        certain = empty.name.startswith(b"UPX") or packed.name.startswith(b"UPX") or \
            _pack_header(data, layout) is not None
        if certain or layout.section_at(layout.entry_rva) == i + 1:
            return i, certain
        return None
    return None


def explode_upx(data, size: int, layout: PeLayout, upx0: int, ctx: Context) -> Child | None:
    """The unpacked program as member ``upx``, or None when no algorithm unpacks it."""
    empty, packed = layout.sections[upx0], layout.sections[upx0 + 1]
    src = bytes(data[packed.raw:min(packed.raw + packed.rsz, size)])
    # The image fills at most the two sections; past a size or ratio limit the context
    # reports the member as over it, so the decompressor stops one byte beyond.
    lim = ctx.limits
    limit = None
    if lim.max_file_size:
        limit = lim.max_file_size + 1
    if lim.max_compression_ratio:
        ratio = max(len(src) * lim.max_compression_ratio, 1 << 20) + 1
        limit = ratio if limit is None else min(limit, ratio)
    room = empty.vsz + packed.vsz
    cap = room if limit is None else min(room, limit)
    header = _pack_header(data, layout)
    methods = _METHODS
    if header is not None and header[0] in _METHODS:
        methods = (header[0],) + tuple(m for m in _METHODS if m != header[0])
    for start in _source_starts(data, size, layout, packed):
        for method in methods:
            try:
                if method == _LZMA:
                    image = unpack_lzma(src, start, cap)
                else:
                    image = unpack_nrv(src, start, method, cap, ctx)
            except Damaged:
                continue
            if not image:
                continue
            over = limit is not None and len(image) >= limit
            program = image if over else rebuild_pe(image, empty.rva)
            return ctx.member("upx", [program], declared_size=len(program),
                              packed_size=len(src))
    return None


def _pack_header(data, layout: PeLayout) -> tuple[int, int, int] | None:
    """(method, unpacked size, packed size) from the UPX! header in the headers' padding."""
    first_raw = min((s.raw for s in layout.sections if s.rsz), default=layout.headers_end)
    head = bytes(data[:min(max(first_raw, layout.headers_end), 0x1000)])
    at = head.find(_MAGIC, layout.headers_end)
    if at < 0 or at + 24 > len(head):
        return None
    method = head[at + 6]
    u_len, c_len = struct.unpack_from("<II", head, at + 16)
    return method, u_len, c_len


def _source_starts(data, size: int, layout: PeLayout, packed: PeSection) -> list[int]:
    """Where in UPX1's data the compressed stream may start: where the stub says, then 0."""
    starts = []
    ep_index = layout.section_at(layout.entry_rva)
    if ep_index is not None:
        s = layout.sections[ep_index]
        ep = s.raw + layout.entry_rva - s.rva
        if 0 <= ep and ep + 6 <= size and bytes(data[ep:ep + 2]) == _STUB_START:
            address, = struct.unpack_from("<I", data, ep + 2)
            skew = address - layout.image_base - packed.rva
            if 0 < skew <= min(_MAX_SKEW, packed.rsz):
                starts.append(skew)
    starts.append(0)
    return starts


def unpack_nrv(src: bytes, pos: int, method: int, cap: int, ctx: Context) -> bytes:
    """Decompress a UCL NRV2B/2D/2E stream (32-bit LE bit buffer) from ``src[pos:]``.

    Stops at the end marker, or at ``cap`` bytes (the caller then reports the size limit).
    Raises Damaged when the stream runs out or refers back before its output.
    """
    out = bytearray()
    n = len(src)
    bb = bc = 0
    last_off = 1
    next_clock = _CLOCK_EVERY

    def bit() -> int:
        nonlocal bb, bc, pos
        if not bc:
            if pos + 4 > n:
                raise Damaged("stream ends inside a bit buffer")
            bb = src[pos] | src[pos + 1] << 8 | src[pos + 2] << 16 | src[pos + 3] << 24
            pos += 4
            bc = 32
        bc -= 1
        return bb >> bc & 1

    def gamma(value: int) -> int:
        while True:
            value = value * 2 + bit()
            if bit():
                return value
            if value > 0xFFFFFF:
                raise Damaged("number too long")

    while True:
        while bit():
            if pos >= n:
                raise Damaged("stream ends inside a literal")
            out.append(src[pos])
            pos += 1
        if method == _NRV2B:
            off = gamma(1)
        else:
            off = 1
            while True:
                off = off * 2 + bit()
                if bit():
                    break
                off = (off - 1) * 2 + bit()
                if off > 0xFFFFFF:
                    raise Damaged("number too long")
        if off == 2:
            off = last_off
            length = 0 if method == _NRV2B else bit()
        else:
            if pos >= n:
                raise Damaged("stream ends inside an offset")
            off = (off - 3) * 256 + src[pos]
            pos += 1
            if off == 0xFFFFFFFF:
                return bytes(out)  # the end marker
            if method == _NRV2B:
                length = 0
            else:
                length = (off ^ 0xFFFFFFFF) & 1
                off >>= 1
            off += 1
            last_off = off
        if method == _NRV2B:
            length = bit() * 2
            length += bit()
            if not length:
                length = gamma(1) + 2
            length += off > 0xD00
        elif method == _NRV2D:
            length = length * 2 + bit()
            if not length:
                length = gamma(1) + 2
            length += off > 0x500
        else:  # NRV2E
            if length:
                length = 1 + bit()
            elif bit():
                length = 3 + bit()
            else:
                length = gamma(1) + 3
            length += off > 0x500
        length += 1
        if off > len(out):
            raise Damaged("match before the start of the output")
        if off >= length:
            start = len(out) - off
            out += out[start:start + length]
        else:  # an overlapping copy repeats the last ``off`` bytes
            for _ in range(length):
                out.append(out[-off])
        if len(out) >= cap:
            return bytes(out[:cap])
        if len(out) >= next_clock:
            ctx.check_time()
            next_clock += _CLOCK_EVERY


def unpack_lzma(src: bytes, pos: int, cap: int) -> bytes:
    """UPX's LZMA stream: ((lc + lp) << 3 | pb, lp << 4 | lc), then raw LZMA1 data (no size,
    usually no end marker), decompressed to at most ``cap`` bytes."""
    if pos + 3 > len(src):
        raise Damaged("no LZMA properties")
    pb, lp, lc = src[pos] & 7, src[pos + 1] >> 4, src[pos + 1] & 15
    if pb > 4 or lp > 4 or lc > 8 or src[pos] >> 3 != lc + lp:
        raise Damaged("not UPX's LZMA properties")
    dict_size = max(1 << 12, min(cap, 1 << 25))
    decoder = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[{
        "id": lzma.FILTER_LZMA1, "lc": lc, "lp": lp, "pb": pb, "dict_size": dict_size}])
    try:
        image = decoder.decompress(src[pos + 2:], max_length=cap)
    except lzma.LZMAError as err:
        raise Damaged(f"LZMA: {err}") from None
    if not image:
        raise Damaged("LZMA stream gave nothing")
    return image


def rebuild_pe(image: bytes, base_rva: int) -> bytes:
    """A PE file of the unpacked ``image`` (loaded at ``base_rva``): the original headers when
    UPX kept them after the image, else a header of one section covering it all."""
    found = _original_headers(image, base_rva)
    if found is not None:
        return found
    return _wrap(image, base_rva)


def _original_headers(image: bytes, base_rva: int) -> bytes | None:
    at = len(image)
    for _ in range(_PE_SIGNATURE_TRIES):
        at = image.rfind(b"PE\0\0", 0, at)
        if at < 0:
            return None
        rebuilt = _relaid(image, at, base_rva)
        if rebuilt is not None:
            return rebuilt
    return None


def _relaid(image: bytes, pe: int, base_rva: int) -> bytes | None:
    """The file the headers at ``image[pe:]`` describe, its sections cut from the image."""
    if pe + 24 > len(image):
        return None
    nsections, = struct.unpack_from("<H", image, pe + 6)
    opt_size, = struct.unpack_from("<H", image, pe + 20)
    table = pe + 24 + opt_size
    if not 0 < nsections <= _MAX_SECTIONS or opt_size < 0x60 or \
            table + nsections * 40 > len(image):
        return None
    if struct.unpack_from("<H", image, pe + 24)[0] not in (0x10B, 0x20B):
        return None
    headers = bytearray(image[pe:table + nsections * 40])
    rows = []
    for i in range(nsections):
        _name, vsz, rva = struct.unpack_from("<8sII", headers, 24 + opt_size + i * 40)
        if rva < base_rva or rva - base_rva > len(image) or vsz > len(image):
            return None
        rows.append((rva - base_rva, vsz))
    dos = bytearray(0x40)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    offset = _align(0x40 + len(headers))
    body = []
    for i, (start, vsz) in enumerate(rows):
        chunk = image[start:start + vsz]
        struct.pack_into("<II", headers, 24 + opt_size + i * 40 + 16, len(chunk), offset)
        body.append(chunk.ljust(_align(len(chunk)), b"\0"))
        offset += len(body[-1])
    head = bytes(dos) + bytes(headers)
    return head.ljust(_align(len(head)), b"\0") + b"".join(body)


def _wrap(image: bytes, base_rva: int) -> bytes:
    """A PE32 header with one section holding ``image`` at ``base_rva``."""
    dos = bytearray(0x40)
    dos[:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    opt = bytearray(0xE0)
    size_of_image = base_rva + _align(len(image), 0x1000)
    struct.pack_into("<HBBIII", opt, 0, 0x10B, 0, 0, len(image), 0, 0)
    struct.pack_into("<III", opt, 16, base_rva, base_rva, 0)
    struct.pack_into("<III", opt, 28, 0x400000, 0x1000, _FILE_ALIGN)
    struct.pack_into("<HH", opt, 48, 4, 0)  # subsystem version 4.0
    struct.pack_into("<II", opt, 56, size_of_image, _FILE_ALIGN)
    struct.pack_into("<H", opt, 68, 2)  # Windows GUI
    struct.pack_into("<I", opt, 92, 16)
    section = struct.pack("<8sIIIIIIHHI", b"UPX", len(image), base_rva, len(image), _FILE_ALIGN,
                          0, 0, 0, 0, 0xE0000060)
    head = bytes(dos) + coff + bytes(opt) + section
    return head.ljust(_FILE_ALIGN, b"\0") + image


def _align(n: int, to: int = _FILE_ALIGN) -> int:
    return (n + to - 1) // to * to
