"""Rebuilds a zip with members removed or replaced: the zip's rebuilder in the handlers' registry.

Members are numbered from 0 in central-directory order (zipfile's ``infolist``), the number
the archive handler gives each member it reads (``Child.member``). Every member kept is copied
as stored — nothing is recompressed, so methods, dates, comments, attributes and encryption
stay as they were — and only offsets are rewritten. A replaced member keeps its name, dates,
attributes and comment, and is deflated (stored if it was stored).

The rebuilt zip holds nothing but the listed members — each one's local header, stored data
and data descriptor — then a fresh central directory and the archive comment. Whatever else
the original held (bytes before the first member, an entry the central directory does not
list hidden between members, data before the directory or after its end) is dropped: the scan
never read it as a member, so a cure must not let it through.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

from .base import RebuildError, check_indexes, rebuild_errors

__all__ = ["rebuild_zip"]

_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_DESCRIPTOR = b"PK\x07\x08"

_DATA_DESCRIPTOR = 0x08
_ENCRYPTED = 0x01
_STRONG_ENCRYPTION = 0x40
_ZIP64_EXTRA = 0x0001
_AES_EXTRA = 0x9901
_MAX32 = 0xFFFFFFFF


def rebuild_zip(data: bytes, edits: dict[int, bytes | None]) -> bytes:
    """``data`` with member ``k`` removed (``edits[k]`` None) or holding ``edits[k]``."""
    data = bytes(data)
    with rebuild_errors("cannot rebuild the zip"):
        return _Zip(data).rebuild(edits)


class _Zip:
    """A zip read for rebuilding: its members' stored spans and raw central records."""

    def __init__(self, data: bytes):
        self.data = data
        try:
            zf = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as err:
            raise RebuildError(f"damaged zip: {err}") from None
        self.infos = zf.infolist()
        self.start_dir = zf.start_dir
        eocd = data.rfind(_EOCD, max(0, len(data) - 22 - 65535))
        if eocd < 0:
            raise RebuildError("damaged zip: no end of central directory")
        disk, cd_disk = struct.unpack_from("<2H", data, eocd + 4)
        if disk or cd_disk:
            raise RebuildError("cannot rebuild multi-volume zips")
        self.comment = data[eocd + 22:eocd + 22 + struct.unpack_from("<H", data, eocd + 20)[0]]
        self.zip64 = eocd >= 20 and data[eocd - 20:eocd - 16] == _EOCD64_LOCATOR
        self.centrals = _central_records(data, self.start_dir, len(self.infos))
        offsets = sorted(info.header_offset for info in self.infos)
        if len(set(offsets)) != len(offsets) or any(o >= self.start_dir for o in offsets):
            raise RebuildError("damaged zip: members overlap or follow the central directory")
        limits = dict(zip(offsets, offsets[1:] + [self.start_dir], strict=True))
        # Where each member's own bytes end: nothing after that is copied.
        self.ends = {}
        for info in self.infos:
            end = _member_end(data, info)
            if end > limits[info.header_offset]:
                raise RebuildError(f"damaged zip: {info.filename!r} overlaps what follows it")
            self.ends[info.header_offset] = end

    def rebuild(self, edits: dict[int, bytes | None]) -> bytes:
        check_indexes(edits, len(self.infos), "zip")
        data = self.data
        kept = [k for k in range(len(self.infos)) if not (k in edits and edits[k] is None)]
        out = io.BytesIO()
        centrals: dict[int, bytes] = {}
        for k in sorted(kept, key=lambda k: self.infos[k].header_offset):
            info = self.infos[k]
            offset = out.tell()
            record, _ = self.centrals[k]
            if edits.get(k) is not None:
                local, central = _replaced(data, info, record, bytes(edits[k]), offset)
                out.write(local)
                centrals[k] = central
            else:
                out.write(data[info.header_offset:self.ends[info.header_offset]])
                centrals[k] = _move_central(record, offset)
        cd_start = out.tell()
        for k in kept:
            out.write(centrals[k])
        self._write_end(out, len(kept), cd_start, out.tell() - cd_start)
        return out.getvalue()

    def _write_end(self, out: io.BytesIO, count: int, cd_start: int, cd_size: int) -> None:
        # Nothing precedes the first member any more: offsets count from the file's start
        # (zipfile's header_offset already counts from there whatever the original recorded).
        if self.zip64:
            end64 = out.tell()
            out.write(struct.pack("<4sQ2H2L4Q", _EOCD64, 44, 45, 45, 0, 0, count, count,
                                  cd_size, cd_start))
            out.write(struct.pack("<4sLQL", _EOCD64_LOCATOR, 0, end64, 1))
        elif count > 0xFFFF or cd_size >= _MAX32 or cd_start >= _MAX32:
            raise RebuildError("the rebuilt zip would need zip64 records")
        out.write(struct.pack("<4s4H2LH", _EOCD, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                              min(cd_size, _MAX32), min(cd_start, _MAX32),
                              len(self.comment)))
        out.write(self.comment)


def _central_records(data: bytes, start: int, count: int) -> list[tuple[bytes, bytes]]:
    """The raw central directory records (and raw names), in zipfile's infolist order."""
    out = []
    pos = start
    for _ in range(count):
        if data[pos:pos + 4] != _CENTRAL:
            raise RebuildError("damaged zip: broken central directory")
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        end = pos + 46 + n + m + k
        out.append((data[pos:end], data[pos + 46:pos + 46 + n]))
        pos = end
    return out


def _member_end(data: bytes, info: zipfile.ZipInfo) -> int:
    """Just past member ``info``'s bytes: its local header, stored data and data descriptor."""
    at = info.header_offset
    if data[at:at + 4] != _LOCAL or len(data) < at + 30:
        raise RebuildError(f"damaged zip: no local header for {info.filename!r}")
    flags = struct.unpack_from("<H", data, at + 6)[0]
    n, m = struct.unpack_from("<2H", data, at + 26)
    end = at + 30 + n + m + info.compress_size
    if not (flags | info.flag_bits) & _DATA_DESCRIPTOR:
        return end
    # The descriptor may start with a signature and hold 4- or 8-byte sizes (zip64); the one
    # kept is the one that says what the central directory says.
    extra = data[at + 30 + n:at + 30 + n + m]
    wide = [True, False] if _has_record(extra, _ZIP64_EXTRA) else [False, True]
    for signed in (True, False):
        for is_wide in wide:
            size = 8 if is_wide else 4
            pos = end + 4 * signed
            if signed and data[end:end + 4] != _DESCRIPTOR:
                continue
            if len(data) < pos + 4 + 2 * size:
                continue
            fmt = "<LQQ" if is_wide else "<LLL"
            if struct.unpack_from(fmt, data, pos) == (info.CRC, info.compress_size,
                                                      info.file_size):
                return pos + 4 + 2 * size
    raise RebuildError(f"damaged zip: no data descriptor matching {info.filename!r}")


def _has_record(extra: bytes, wanted: int) -> bool:
    pos = 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        if tag == wanted:
            return True
        pos += 4 + size
    return False


def _move_central(record: bytes, offset: int) -> bytes:
    """The central record pointing at its local header's new ``offset``."""
    stored = struct.unpack_from("<L", record, 42)[0]
    if stored != _MAX32:
        if offset >= _MAX32:
            raise RebuildError("the rebuilt zip would need zip64 offsets")
        return record[:42] + struct.pack("<L", offset) + record[46:]
    # The offset lives in the zip64 extra field, after the sizes that overflowed.
    usize, csize = struct.unpack_from("<2L", record, 20)[::-1]
    n, m = struct.unpack_from("<2H", record, 28)
    extra_at = 46 + n
    pos = extra_at
    while pos + 4 <= extra_at + m:
        tag, size = struct.unpack_from("<2H", record, pos)
        if tag == _ZIP64_EXTRA:
            at = pos + 4 + 8 * ((usize == _MAX32) + (csize == _MAX32))
            return record[:at] + struct.pack("<Q", offset) + record[at + 8:]
        pos += 4 + size
    raise RebuildError("damaged zip: zip64 offset without its extra field")


def _replaced(data: bytes, info: zipfile.ZipInfo, central: bytes, content: bytes,
              offset: int) -> tuple[bytes, bytes]:
    """The local record and central record of member ``info`` holding ``content`` instead."""
    flags, method = struct.unpack_from("<2H", central, 8)
    if flags & (_ENCRYPTED | _STRONG_ENCRYPTION):
        raise RebuildError(f"cannot replace the encrypted member {info.filename!r}")
    if method == zipfile.ZIP_STORED:
        packed = content
    else:
        method = zipfile.ZIP_DEFLATED
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        packed = deflate.compress(content) + deflate.flush()
    if len(content) >= _MAX32 or len(packed) >= _MAX32 or offset >= _MAX32:
        raise RebuildError(f"the new {info.filename!r} would need zip64 records")
    crc = zlib.crc32(content)
    flags &= ~_DATA_DESCRIPTOR  # sizes and CRC go in the headers now
    version = 20 if method == zipfile.ZIP_DEFLATED else 10
    n, m, k = struct.unpack_from("<3H", central, 28)
    name = central[46:46 + n]
    comment = central[46 + n + m:46 + n + m + k]
    local_at = info.header_offset
    ln, lm = struct.unpack_from("<2H", data, local_at + 26)
    local_extra = _plain_extra(data[local_at + 30 + ln:local_at + 30 + ln + lm])
    central_extra = _plain_extra(central[46 + n:46 + n + m])
    mtime, mdate = struct.unpack_from("<2H", central, 12)
    local = struct.pack("<4s5H3L2H", _LOCAL, version, flags, method, mtime, mdate, crc,
                        len(packed), len(content), len(name), len(local_extra))
    made_by = struct.unpack_from("<H", central, 4)[0]
    internal, external = struct.unpack_from("<HL", central, 36)
    record = struct.pack("<4s6H3L5HLL", _CENTRAL, made_by, version, flags, method, mtime, mdate,
                         crc, len(packed), len(content), len(name), len(central_extra),
                         len(comment), 0, internal, external, offset)
    return (local + name + local_extra + packed,
            record + name + central_extra + comment)


def _plain_extra(extra: bytes) -> bytes:
    """An extra field without the records that describe the old data (zip64 sizes, AES)."""
    out, pos = [], 0
    while pos + 4 <= len(extra):
        tag, size = struct.unpack_from("<2H", extra, pos)
        end = pos + 4 + size
        if end > len(extra):
            break  # a damaged tail is dropped rather than copied
        if tag not in (_ZIP64_EXTRA, _AES_EXTRA):
            out.append(extra[pos:end])
        pos = end
    return b"".join(out)
