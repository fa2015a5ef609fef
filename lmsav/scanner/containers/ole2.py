"""Explodes OLE2 compound files (.doc .xls .ppt .msi): every stream, OLE1 packages, VBA source.

Member names: a stream is named by its storage path joined with "/", control characters shown
as ``[n]`` (``ObjectPool/_1/[1]Ole10Native``); MSI stream names are unpacked (``Binary.x``,
``!_Tables``). An Ole10Native stream holding a Packager file is replaced by that file under
its original name (``clam.exe``). Each VBA module's source, decompressed, is added as
``<project storage>/<Module>.vba`` (``Macros/VBA/Module1.vba``), beside its raw stream.
"""

from __future__ import annotations

import io
import struct
from typing import Iterator

import olefile

from ..limits import Context
from ..objects import Child, ScanObject, Status
from .base import Corrupted

# What olefile raises on hostile input: its own OleFileError (an OSError), and plain Python
# errors from parsing code that trusts a field (a degenerate directory tree recurses deeply,
# a huge sector size overflows a read's length).
_OLE_ERRORS = (OSError, ValueError, IndexError, KeyError, struct.error, RecursionError,
               ArithmeticError, TypeError, AttributeError, MemoryError)

# MS-CFB 2.2: the mini sector shift MUST be 6 (64-byte mini sectors) in every version.
_MINI_SECTOR_SHIFT = 6

# Root CLSIDs of Windows Installer packages, patches and transforms: their stream names are
# packed two characters to one code point and read as CJK unless decoded.
_MSI_CLSIDS = frozenset({
    "000C1084-0000-0000-C000-000000000046",  # .msi
    "000C1086-0000-0000-C000-000000000046",  # .msp
    "000C1082-0000-0000-C000-000000000046",  # .mst
})
_MSI_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._"
_MSI_TABLE_MARK = "\u4840"

_WORD_FIB_MAGIC = 0xA5EC
_WORD_ENCRYPTED = 0x0100  # FibBase.fEncrypted
_WORD_OBFUSCATED = 0x8000  # FibBase.fObfuscated (XOR "encryption")
_XLS_BOF, _XLS_EOF, _XLS_FILEPASS = 0x0809, 0x000A, 0x002F
_XLS_RECORDS_BEFORE_FILEPASS = 64  # FILEPASS follows BOF within the first few records

_VBA_CHUNK = 4096


class Ole2Handler:
    """Yields every stream, the files inside Ole10Native packages and decompressed VBA modules."""

    types = frozenset({"ole2"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        # Never hand olefile bytes: it takes short bytes for a file name and would open it.
        source = open(obj.path, "rb") if obj.path is not None else io.BytesIO(obj.data)
        with source:
            try:
                ole = olefile.OleFileIO(source)
            except _OLE_ERRORS as err:
                raise Corrupted(f"unreadable OLE2: {err}") from None
            try:
                try:
                    explosion = _Explosion(ole, obj.size, ctx)
                except _OLE_ERRORS as err:
                    raise Corrupted(f"unreadable OLE2 directory: {err}") from None
                yield from explosion.members()
            finally:
                ole.close()


class _Explosion:
    """One OLE2 file being exploded; remembers damage so readable streams are scanned first."""

    def __init__(self, ole: olefile.OleFileIO, file_size: int, ctx: Context):
        self.ole = ole
        self.file_size = file_size
        self.ctx = ctx
        self.damage: list[str] = []
        if ole.mini_sector_shift != _MINI_SECTOR_SHIFT:
            # Any other value is damage (one flipped bit makes the sectors exabytes long);
            # read with the only size the format allows, so the small streams still come out.
            self.damage.append(f"mini sector shift {ole.mini_sector_shift}, read as 6")
            ole.mini_sector_shift = _MINI_SECTOR_SHIFT
            ole.mini_sector_size = ole.minisectorsize = 1 << _MINI_SECTOR_SHIFT
        try:
            clsid = ole.root.clsid or ""
        except AttributeError:
            clsid = ""
        self.paths = ole.listdir(streams=True, storages=False)
        self.is_msi = clsid.upper() in _MSI_CLSIDS or any(
            p[0].startswith(_MSI_TABLE_MARK) for p in self.paths
        )
        roots = {p[0] for p in self.paths if len(p) == 1}
        self.office_encrypted = "EncryptionInfo" in roots and "EncryptedPackage" in roots
        self.ppt_encrypted = "EncryptedSummary" in roots

    def members(self) -> Iterator[Child]:
        vba_storages = []
        for path in self.paths:
            name = self.label(path)
            if path[-1].lower() == "dir" and len(path) >= 2 and path[-2].upper() == "VBA":
                vba_storages.append(path[:-1])
            if self.office_encrypted and path == ["EncryptedPackage"]:
                yield Child(name, status=Status.PROTECTED, reason="encrypted")
                continue
            if self.ppt_encrypted and path == ["PowerPoint Document"]:
                yield Child(name, status=Status.PROTECTED, reason="encrypted")
                continue
            data = self.read(path)
            if data is None:
                continue
            if _is_encrypted_stream(path, data):
                yield Child(name, status=Status.PROTECTED, reason="encrypted", size=len(data))
                continue
            if path[-1] == "\x01Ole10Native":
                package = unpack_package(data[4:])
                if package is not None:
                    filename, payload = package
                    yield self.ctx.member(filename, [payload], declared_size=len(payload))
                    continue
            yield self.ctx.member(name, [data], declared_size=len(data))
        for storage in vba_storages:
            yield from self.vba_sources(storage)
        if self.damage:
            raise Corrupted("; ".join(dict.fromkeys(self.damage)))

    def read(self, path: list[str]) -> bytes | None:
        """A stream's bytes, or as much of them as the file holds (damage is remembered)."""
        try:
            size = self.ole.get_size(path)
            if size > self.file_size:
                # No stream is larger than its file; a FAT loop would repeat sectors up to it.
                self.damage.append(f"{self.label(path)}: stream larger than the file")
                return None
            issues = len(self.ole.parsing_issues)
            data = self.ole.openstream(path).read()
        except _OLE_ERRORS as err:
            # One stream's damage: the others are still read.
            self.damage.append(f"{self.label(path)}: {type(err).__name__}: {err}")
            return None
        for _, message in self.ole.parsing_issues[issues:]:
            self.damage.append(f"{self.label(path)}: {message}")
        return data

    def vba_sources(self, storage: list[str]) -> Iterator[Child]:
        """Each module of a VBA project decompressed to its source text, as ``<Module>.vba``."""
        dir_data = self.read(storage + ["dir"])
        if dir_data is None:
            return
        try:
            modules = _vba_modules(b"".join(decompress_vba(dir_data)))
        except ValueError as err:
            self.damage.append(f"{self.label(storage + ['dir'])}: {err}")
            return
        prefix = self.label(storage)
        for module_name, stream_name, offset in modules:
            stream = self.find(storage, stream_name)
            if stream is None:
                self.damage.append(f"{prefix}: module stream {stream_name!r} missing")
                continue
            data = self.read(stream)
            if data is None:
                continue
            if data[offset:offset + 1] != b"\x01":
                self.damage.append(f"{self.label(stream)}: no compressed source at {offset}")
                continue
            chunks = decompress_vba(data[offset:], damage=self.damage)
            yield self.ctx.member(f"{prefix}/{module_name}.vba", chunks, packed_size=len(data))

    def find(self, storage: list[str], name: str) -> list[str] | None:
        for path in self.paths:
            if len(path) == len(storage) + 1 and path[:-1] == storage:
                if path[-1].lower() == name.lower():
                    return path
        return None

    def label(self, path: list[str]) -> str:
        """The stream's path with "/" between storages, printable (``[1]Ole10Native``)."""
        parts = (_msi_name(p) if self.is_msi else p for p in path)
        return "/".join(_printable(p) for p in parts)


def _printable(name: str) -> str:
    return "".join(c if c.isprintable() else f"[{ord(c)}]" for c in name) or "[unnamed]"


def _msi_name(name: str) -> str:
    """Undo MSI's stream name packing (two base-64 characters per code point 0x3800-0x47FF)."""
    out = []
    for ch in name:
        code = ord(ch)
        if 0x3800 <= code < 0x4800:
            code -= 0x3800
            out.append(_MSI_ALPHABET[code & 0x3F])
            out.append(_MSI_ALPHABET[(code >> 6) & 0x3F])
        elif 0x4800 <= code < 0x4840:
            out.append(_MSI_ALPHABET[code - 0x4800])
        elif ch == _MSI_TABLE_MARK:
            out.append("!")
        else:
            out.append(ch)
    return "".join(out)


def _is_encrypted_stream(path: list[str], data: bytes) -> bool:
    """Word's FIB flags or Excel's FILEPASS record say this document stream is encrypted."""
    if path == ["WordDocument"] and len(data) >= 12:
        ident, flags = struct.unpack_from("<H", data, 0)[0], struct.unpack_from("<H", data, 10)[0]
        return ident == _WORD_FIB_MAGIC and bool(flags & (_WORD_ENCRYPTED | _WORD_OBFUSCATED))
    if path in (["Workbook"], ["Book"]) and len(data) >= 4:
        pos = 0
        for _ in range(_XLS_RECORDS_BEFORE_FILEPASS):
            if pos + 4 > len(data):
                return False
            rtype, length = struct.unpack_from("<HH", data, pos)
            if pos == 0 and rtype != _XLS_BOF:
                return False
            if rtype == _XLS_FILEPASS:
                return True
            if rtype == _XLS_EOF:
                return False
            pos += 4 + length
    return False


def unpack_package(data: bytes) -> tuple[str, bytes] | None:
    """The file inside an OLE1 "Package" object's native data, or None if it holds none.

    Layout (the Packager's, undocumented by MS-OLEDS but stable since Windows 3.1): u16 2, label
    and source path as NUL-terminated ANSI strings, u16 0, u16 3 (an embedded file, not a link),
    u32 length + temp path, u32 size + the file's bytes. The Ole10Native stream adds a u32 total
    size in front, which callers strip.
    """
    try:
        pos = 2
        if struct.unpack_from("<H", data, 0)[0] != 2:
            return None
        label, pos = _cstring(data, pos)
        source, pos = _cstring(data, pos)
        _, kind = struct.unpack_from("<HH", data, pos)
        if kind != 3:
            return None  # 1 is a link to a file elsewhere: nothing embedded
        (temp_len,) = struct.unpack_from("<I", data, pos + 4)
        pos += 8
        temp = data[pos:pos + temp_len].split(b"\0", 1)[0]
        pos += temp_len
        (size,) = struct.unpack_from("<I", data, pos)
    except struct.error:
        return None
    payload = data[pos + 4:pos + 4 + size]  # a short payload is still scanned
    for candidate in (source, label, temp):
        name = candidate.decode("latin-1").replace("\\", "/").rsplit("/", 1)[-1]
        name = _printable(name.strip())
        if name and name != "[unnamed]":
            return name, payload
    return "package", payload


def _cstring(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise struct.error("unterminated string")
    return data[pos:end], end + 1


def decompress_vba(data: bytes, damage: list[str] | None = None) -> Iterator[bytes]:
    """MS-OVBA 2.4.1 decompression, one 4096-byte chunk at a time.

    A container that does not start with the signature byte raises ValueError; damage inside
    one (a bad copy token, a cut chunk) ends it, and is appended to ``damage`` when given.
    """
    if not data or data[0] != 1:
        raise ValueError("not a compressed VBA container")
    pos, end = 1, len(data)
    while pos + 2 <= end:
        header = data[pos] | data[pos + 1] << 8
        chunk_end = min(pos + (header & 0x0FFF) + 3, end)
        pos += 2
        if not header & 0x8000:
            yield bytes(data[pos:pos + _VBA_CHUNK])  # stored raw
            pos += _VBA_CHUNK
            continue
        out = bytearray()
        try:
            while pos < chunk_end and len(out) < _VBA_CHUNK:
                flags = data[pos]
                pos += 1
                for bit in range(8):
                    if pos >= chunk_end:
                        break
                    if not flags >> bit & 1:
                        out.append(data[pos])
                        pos += 1
                        continue
                    if pos + 2 > chunk_end:
                        raise ValueError("copy token cut short")
                    token = data[pos] | data[pos + 1] << 8
                    pos += 2
                    bits = max((len(out) - 1).bit_length(), 4)
                    offset = (token >> (16 - bits)) + 1
                    length = (token & (0xFFFF >> bits)) + 3
                    if offset > len(out):
                        raise ValueError("copy token points before the chunk")
                    for _ in range(length):  # byte by byte: the copy may overlap itself
                        out.append(out[-offset])
        except ValueError as err:
            if damage is not None:
                damage.append(f"VBA: {err}")
            yield bytes(out[:_VBA_CHUNK])
            return
        yield bytes(out[:_VBA_CHUNK])
        pos = chunk_end


def _vba_modules(dir_data: bytes) -> list[tuple[str, str, int]]:
    """(module name, stream name, source offset) of each module in a decompressed "dir" stream."""
    modules = []
    name = stream = None
    offset = 0
    pos = 0
    while pos + 6 <= len(dir_data):
        rid, size = struct.unpack_from("<HI", dir_data, pos)
        pos += 6
        if rid == 0x0009:
            size = 6  # PROJECTVERSION's size field says 4 but 6 bytes follow
        value = dir_data[pos:pos + size]
        pos += size
        if rid == 0x0019:  # MODULENAME
            name, stream, offset = value.decode("latin-1"), None, 0
        elif rid == 0x0047 and name is not None:  # MODULENAMEUNICODE
            name = value.decode("utf-16-le", "replace") or name
        elif rid == 0x001A:  # MODULESTREAMNAME
            stream = value.decode("latin-1")
        elif rid == 0x0032 and name is not None:  # MODULESTREAMNAMEUNICODE
            stream = value.decode("utf-16-le", "replace") or stream
        elif rid == 0x0031 and len(value) >= 4:  # MODULEOFFSET
            offset = struct.unpack_from("<I", value)[0]
        elif rid == 0x002B and name is not None:  # end of a module
            modules.append((_printable(name), stream or name, offset))
            name = None
        elif rid == 0x0010:  # end of the dir stream
            break
    return modules
