"""Explodes archives libarchive reads (zip, 7z, rar, tar, cpio, cab, iso9660, ar) into members.

Zip and tar members carry the number their rebuilders (zipedit, taredit) know them by.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import shutil
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterator

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError

from ..filetype import EMBEDDED_WINDOW
from ..limits import CHUNK, Context
from ..objects import Child, ScanObject, Status
from ..signatures.subject import MemberMeta
from .base import Corrupted, Encrypted, Rebuilder, Unsupported
from .sevenzip import explode_7z, zip_members, zip_needs_7z
from .sfx import explode_embedded
from .taredit import rebuild_tar
from .zipedit import rebuild_zip

# Each sniffed type opens with its own libarchive readers only. Never "all": the mtree reader
# would accept arbitrary text and open the files its lines name, outside the scan.
_FORMATS: dict[str, tuple[str, ...]] = {
    "zip": ("zip",),
    "7z": ("7zip",),
    "rar": ("rar", "rar5"),
    "tar": ("tar",),
    "cpio": ("cpio",),
    "cab": ("cab",),
    "iso9660": ("iso9660",),
    "ar": ("ar",),
}

# libarchive-c logs every ARCHIVE_WARN (e.g. a member name not in the locale's charset) to
# stderr; names are only labels here, so those warnings say nothing to an administrator.
logging.getLogger("libarchive").setLevel(logging.ERROR)

_lib = ffi.libarchive
_entry_is_data_encrypted = _lib.archive_entry_is_data_encrypted
_entry_is_data_encrypted.argtypes = [ctypes.c_void_p]
_entry_is_data_encrypted.restype = ctypes.c_int

_AE_IFMT = 0o170000
_AE_IFREG = 0o100000
_AE_IFLNK = 0o120000
_AE_IFDIR = 0o040000
# Entry types that hold no data of their own; anything else (a mode no file has, 0o170000 from
# external attributes 0xffffffff, or none at all) is read as a file.
_NO_DATA = {
    _AE_IFDIR: "directory",
    _AE_IFLNK: "symbolic link",
    0o020000: "character device",
    0o060000: "block device",
    0o010000: "fifo",
    0o140000: "socket",
}

# Damage that makes libarchive give up on a header is retried with the next one (tar skips to
# the next valid block, zip goes on with the central directory); this many failures in a row
# end the archive.
_MAX_HEADER_FAILURES = 4096


class ArchiveHandler:
    """Explodes archives through libarchive; encrypted members come back as PROTECTED children."""

    types = frozenset(_FORMATS)

    def rebuilder(self, file_type: str) -> Rebuilder | None:
        return _REBUILDERS.get(file_type)

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        ftype, offset = obj.type, obj.offset
        if ftype not in _FORMATS:
            raise Corrupted(f"not a readable archive (looks like {ftype})")
        if offset:
            # Behind other bytes: the archive is read on its own, from its first byte.
            yield from explode_embedded(obj, ctx, ftype, offset)
            return
        if ftype == "zip" and zip_needs_7z(obj):
            # libarchive cannot decode deflate64 (9) or implode (6) members; 7-Zip can.
            yield from explode_7z(obj, ctx, "zip")
            return
        listing = _Listing(ftype, obj)
        read: set[str] = set()
        try:
            damage = yield from read_members(
                obj, ctx, _FORMATS[ftype], packed=listing.packed, describe=listing.describe,
                unextracted=listing.zip_data if ftype == "zip" else None, read=read,
                place=listing.place)
            if damage:
                damage = yield from _recover(obj, ctx, ftype, listing, read, damage)
            yield from listing.unread()
        finally:
            listing.close()
        _raise_for(damage)


_REBUILDERS: dict[str, Rebuilder] = {"zip": rebuild_zip, "tar": rebuild_tar}


def _recover(obj: ScanObject, ctx: Context, ftype: str, listing: _Listing, read: set[str],
             damage: _Damage) -> Iterator[Child]:
    """The members libarchive did not reach because of damage, read another way; returns the
    damage that remains to report."""
    if ftype == "zip":
        # A header libarchive cannot get past (a long link target, a broken local header)
        # ends its reading; the central directory still lists what follows, and when
        # zipfile reads all of that with the right CRCs, the archive was not damaged.
        clean = yield from listing.zip_rest(ctx, read)
        return _Damage() if clean and not damage.data else damage
    if ftype in _RESCUED_BY_7Z:
        # libarchive stops at a damaged 7z folder or RAR block; 7-Zip goes on with the
        # members after it, as ClamAV does.
        yield from _rescue_with_7z(obj, ctx, ftype, read)
    elif ftype == "tar" and not read:
        # libarchive gives up on a tar whose first header is damaged; the members after it
        # are read from the next valid header, as tar and ClamAV read them.
        resync = _next_tar_header(obj.data, obj.size)
        if resync is not None:
            yield from explode_embedded(obj, ctx, "tar", resync)
    return damage


_RESCUED_BY_7Z = frozenset({"7z", "rar"})


def _rescue_with_7z(obj: ScanObject, ctx: Context, ftype: str, read: set[str]) -> Iterator[Child]:
    """The members 7-Zip extracts from a damaged archive that libarchive did not reach."""
    if shutil.which("7z") is None:
        return
    try:
        for child in explode_7z(obj, ctx, ftype):
            if child.name in read:
                _discard(child)
                continue
            read.add(child.name)
            yield child
    except (Corrupted, Encrypted, Unsupported):
        pass  # libarchive's account of the damage is the one reported


def explode_members(
    obj: ScanObject,
    ctx: Context,
    formats: tuple[str, ...],
    filters: tuple[str, ...] = (),
    name: str | None = None,
    packed: dict[str, int] | None = None,
) -> Iterator[Child]:
    """Yield every member libarchive reads with exactly these filters and formats, then raise
    Corrupted (or Encrypted, for encrypted headers) if any was damaged; see read_members."""
    damage = yield from read_members(obj, ctx, formats, filters, name, packed)
    _raise_for(damage)


class _Damage:
    """What libarchive reported while reading: at a header, or in a member's data."""

    def __init__(self):
        self.header: list[ArchiveError] = []
        self.data: list[ArchiveError] = []

    def __bool__(self) -> bool:
        return bool(self.header or self.data)

    def first(self) -> ArchiveError:
        return (self.data or self.header)[0]


def _raise_for(damage: _Damage) -> None:
    if not damage:
        return
    first = damage.first()
    if _mentions_encryption(first) and "header" in _message(first).lower():
        raise Encrypted(_message(first) or "encrypted headers")
    raise Corrupted(_message(first) or "damaged archive")


def read_members(
    obj: ScanObject,
    ctx: Context,
    formats: tuple[str, ...],
    filters: tuple[str, ...] = (),
    name: str | None = None,
    packed: dict[str, int] | None = None,
    describe=None,
    unextracted=None,
    read: set[str] | None = None,
    place=None,
) -> Iterator[Child]:
    """Yield every member libarchive reads with exactly these filters and formats.

    ``name`` labels every member (a single-stream format stores none); ``packed`` gives the
    compressed size of members the format records; ``describe(entry, member)``, called for
    every entry in order, gives a member's MemberMeta; ``unextracted(ctx, label)`` reads the
    data of an entry libarchive gives none for although the archive stores some (a zip member
    its external attributes call a directory, link or device): None, or the member and what
    damage reading it found; ``place(number, meta)`` gives the member of the ``number``-th entry
    (from 0, every header read counted) its number for the format's rebuilder
    (``Child.member``), None when it has none.

    Damage never ends the reading early: what was read of a damaged member is yielded, the
    next member is tried, and what libarchive reported comes back as the generator's value
    (a _Damage), once everything readable has been yielded; ``read`` collects the names. A link
    is scanned as its target; a device, fifo or data-less hard link comes back as a clean
    member whose reason says it was not scanned. Encrypted members come back PROTECTED and
    encrypted headers raise Encrypted; of libarchive's readers only zip, 7z and rar report
    either.
    """
    damage = _Damage()
    read = set() if read is None else read
    members = _Members(obj, ctx, name, packed or {}, describe, unextracted, damage, place)
    try:
        with _reader(obj, filters, formats) as archive_p:
            for number, entry in enumerate(_entries(archive_p, damage.header, ctx)):
                child = members.read(archive_p, entry, number)
                if child is not None:
                    read.add(child.name)
                    yield child
    except ArchiveError as err:  # the archive could not even be opened
        damage.header.append(err)
    return damage


class _Members:
    """Turns each entry libarchive reads into the member it gives (see read_members)."""

    def __init__(self, obj: ScanObject, ctx: Context, name: str | None, packed: dict[str, int],
                 describe, unextracted, damage: _Damage, place=None):
        self.ctx = ctx
        self.name = name
        self.packed = packed
        # Most formats record no member's compressed size where libarchive shows it; the
        # whole archive's size bounds every member's, so the ratio limit still stops bombs.
        self.whole = obj.size or None
        self.describe = describe
        self.unextracted = unextracted
        self.damage = damage
        self.place = place

    def read(self, archive_p, entry, number: int) -> Child | None:
        """The member entry ``number`` (counting every header read, from 0) gives."""
        child = self._read(archive_p, entry)
        if child is not None and child.member is None and self.place is not None:
            child.member = self.place(number, child.meta)
        return child

    def _read(self, archive_p, entry) -> Child | None:
        member = self.name or _entry_name(entry)
        mode = entry.filetype & _AE_IFMT
        kind = _NO_DATA.get(mode)
        if kind is None and entry.islnk and not entry.size:
            kind = "hard link"  # its data is under the first name
        elif kind is None and self.unextracted is not None and mode != _AE_IFREG:
            kind = "file"  # a type libarchive reads no data for (attributes 0xffffffff)
        if kind is not None:
            child = _without_data(entry, kind, member, self.ctx, self.unextracted,
                                  self.damage.data)
            meta = self._meta(entry, child is not None)
            if child is not None:
                child.meta = meta
            return child
        meta = self._meta(entry, True)
        if _entry_is_data_encrypted(entry._entry_p) > 0:
            return Child(member, status=Status.PROTECTED, reason="encrypted", size=entry.size,
                         meta=meta)
        reader = _DataReader(archive_p)
        child = self.ctx.member(member, reader.blocks(), declared_size=entry.size,
                                packed_size=self.packed.get(member, self.whole))
        child.meta = meta
        if reader.error is None:
            return child
        if _mentions_encryption(reader.error) and not reader.produced:
            return Child(member, status=Status.PROTECTED, reason="encrypted", meta=meta)
        self.damage.data.append(reader.error)
        if self.unextracted is not None and child.status is None:
            child = self._salvage(child, member, meta)
        if not child.size and child.status is None:
            reason = _message(reader.error) or "unreadable"
            child = Child(member, status=Status.CORRUPTED, reason=f"corrupted: {reason}",
                          meta=meta)
        return child  # all that was read: a damaged member may still hold a detection

    def _meta(self, entry, member: bool) -> MemberMeta | None:
        return self.describe(entry, member) if self.describe is not None else None

    def _salvage(self, child: Child, member: str, meta) -> Child:
        """zipfile hands out a damaged member's readable start in smaller pieces than
        libarchive: the longer reading is kept."""
        found = self.unextracted(self.ctx, member)
        if found is None:
            return child
        if (found[0].size or 0) > (child.size or 0):
            _discard(child)
            found[0].meta = meta
            return found[0]
        _discard(found[0])
        return child


def _entries(archive_p, damage: list[ArchiveError], ctx: Context) -> Iterator[ArchiveEntry]:
    """Each entry's header; a header libarchive cannot read is noted in ``damage`` and the
    next one tried, until libarchive says the archive cannot go on (ARCHIVE_FATAL)."""
    failures = 0
    while True:
        entry = ArchiveEntry(archive_p)
        try:
            if ffi.read_next_header2(archive_p, entry._entry_p) == ffi.ARCHIVE_EOF:
                return
        except ArchiveError as err:
            damage.append(err)
            failures += 1
            if err.retcode == ffi.ARCHIVE_FATAL or failures >= _MAX_HEADER_FAILURES:
                return
            ctx.check_time()
            continue
        failures = 0
        yield entry


def _discard(child: Child) -> None:
    """Delete a member's spill file now (the scan's temp dir is removed at the end anyway)."""
    if child.path is not None:
        try:
            os.unlink(child.path)
        except OSError:
            pass


def _without_data(entry, kind: str, member: str, ctx: Context, unextracted,
                  damage: list[ArchiveError]) -> Child | None:
    """The member an entry of a type without data gives, or None for a directory."""
    found = unextracted(ctx, member) if unextracted is not None else None
    if found is not None:
        child, problem = found  # the archive stores data for it: scanned like any file
        if problem:
            damage.append(ArchiveError(f"{problem}: {member}"))
        return child
    if kind == "symbolic link":
        target = ffi.entry_symlink(entry._entry_p) or b""
        return ctx.member(member, [target], declared_size=len(target))
    if kind == "directory":
        return None
    if kind == "file":
        return ctx.member(member, [], declared_size=0)  # it stores no data: an empty file
    return Child(member, status=Status.CLEAN, reason=f"not scanned: {kind}")


_buffer = None


def _read_buffer():
    """One read buffer per process: a member is always read to its end before the next one
    starts (Context.member consumes it whole), so sharing it is safe, and allocating a zeroed
    64 KiB buffer per member was a measurable share of scanning small members."""
    global _buffer
    if _buffer is None:
        _buffer = ctypes.create_string_buffer(CHUNK)
    return _buffer


class _DataReader:
    """Reads the current entry's data in blocks, keeping the error instead of raising it.

    An ARCHIVE_WARN (a zip member's bad CRC) comes before the block it was found with, which
    the next read still returns: reading goes on, so a damaged member is read to its end. An
    ARCHIVE_FAILED or ARCHIVE_FATAL stops the member where the damage starts.
    """

    def __init__(self, archive_p):
        self.archive_p = archive_p
        self.error: ArchiveError | None = None
        self.produced = 0

    def blocks(self) -> Iterator[bytes]:
        buf = _read_buffer()
        warnings = 0
        while True:
            try:
                n = ffi.read_data(self.archive_p, buf, CHUNK)
            except ArchiveError as err:
                self.error = self.error or err
                return
            if n == 0:
                return
            if n < 0:
                if self.error is None:
                    self.error = ArchiveError(ffi._error_string(self.archive_p), retcode=n)
                warnings += 1
                if warnings > 2:
                    return  # warnings without data between them: nothing more will come
                continue
            warnings = 0
            self.produced += n
            yield ctypes.string_at(buf, n)


@contextmanager
def _reader(obj: ScanObject, filters: tuple[str, ...], formats: tuple[str, ...]):
    archive_p = ffi.read_new()
    try:
        # Named filters only, never "all": each one listed is a decoder this type needs.
        for name in filters or ("none",):
            ffi.get_read_filter_function(name)(archive_p)
        for fmt in formats:
            ffi.get_read_format_function(fmt)(archive_p)
        if obj.path is not None:
            ffi.read_open_filename_w(archive_p, obj.path, CHUNK)
        else:
            buf = obj.data
            ffi.read_open_memory(archive_p, ctypes.cast(buf, ctypes.c_void_p), len(buf))
        yield archive_p
    finally:
        ffi.read_free(archive_p)


def _is_regular(entry) -> bool:
    """A file as ClamAV counts members: not a directory, link or device."""
    return _NO_DATA.get(entry.filetype & _AE_IFMT) is None and not (entry.islnk and not entry.size)


_TAR_BLOCK = 512
_USTAR_AT = 257  # where a POSIX or GNU tar header holds its "ustar" magic


def _next_tar_header(data, size: int) -> int | None:
    """The offset of the first tar header after the first block whose checksum is right,
    looked for within the first EMBEDDED_WINDOW bytes."""
    end = min(size, EMBEDDED_WINDOW)
    at = data.find(b"ustar", _TAR_BLOCK + _USTAR_AT, end)
    while at >= 0:
        start = at - _USTAR_AT
        if start % _TAR_BLOCK == 0 and start + _TAR_BLOCK <= size and \
                _tar_checksum_ok(bytes(data[start:start + _TAR_BLOCK])):
            return start
        at = data.find(b"ustar", at + 1, end)
    return None


def _tar_checksum_ok(header: bytes) -> bool:
    """The header's checksum field (octal) is the sum of its bytes, the field read as spaces."""
    field = header[148:156].split(b"\0", 1)[0].strip()
    try:
        recorded = int(field, 8)
    except ValueError:
        return False
    return recorded == sum(header[:148]) + 8 * 0x20 + sum(header[156:])


def _entry_name(entry) -> str:
    """The member path exactly as stored: a label, never opened as a path."""
    name = entry.pathname
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if not name:
        raw = ffi.entry_pathname(entry._entry_p)
        name = raw.decode("utf-8", "replace") if raw else ""
    return name or "unnamed"


class _Listing:
    """How the archive lists its members, as ClamAV reads them for .cdb rules.

    Zip and RAR members come from the format's own directory (zipfile, rarfile: packed sizes,
    CRCs, encryption flags), matched to libarchive's entries by name. For the others the
    entries libarchive reads in order are counted the way ClamAV counts them: 7z, cpio and cab
    count every entry, tar only regular files. ar is no container ClamAV reads.

    It also numbers zip and tar members for their rebuilders (``place``).
    """

    def __init__(self, ftype: str, obj: ScanObject):
        self.ftype = ftype
        self.obj = obj
        self.position = 0
        self.encrypted = False
        recorded = zip_members(obj) if ftype == "zip" else _rar_members(obj) if ftype == "rar" \
            else []
        self.recorded: dict[str, list[MemberMeta]] = {}
        self.packed: dict[str, int] = {}  # compressed sizes for the ratio limit
        for meta in reversed(recorded):
            label = _label(meta.name)
            self.recorded.setdefault(label, []).append(meta)
            if meta.packed_size is not None:
                self.packed[label] = meta.packed_size
        self.describe = self._by_name if ftype in ("zip", "rar") else \
            None if ftype == "ar" else self._by_order
        self._zip: zipfile.ZipFile | None = None
        self._zip_infos: dict[str, list[zipfile.ZipInfo]] | None = None
        self._zip_numbers: dict[int, int] = {}  # id(ZipInfo) → its number

    def place(self, number: int, meta: MemberMeta | None) -> int | None:
        """The member's number for its format's rebuilder: its position in the central
        directory of a zip (from 0); for a tar, ``number``, the entry's position in
        libarchive's reading (taredit reads the same way); None for other formats and for a
        zip member the directory does not list."""
        if self.ftype == "zip":
            return meta.index - 1 if meta is not None else None
        if self.ftype == "tar":
            return number
        return None

    def unread(self) -> Iterator[Child]:
        """Directory records (and members libarchive never reached): metadata only, which
        ClamAV checks against .cdb rules like any member's."""
        for metas in self.recorded.values():
            for meta in reversed(metas):
                number = meta.index - 1 if self.ftype == "zip" else None
                yield Child(meta.name, meta=meta, meta_only=True, member=number)
        self.recorded = {}

    def zip_data(self, ctx: Context, label: str) -> tuple[Child, str | None] | None:
        """A zip member libarchive passed over, read through zipfile, which ignores external
        attributes as ClamAV does: (member, damage found) or None when it stores no data."""
        if self._zip_infos is None:
            self._open_zip()
        # libarchive adds a "/" to the name of what it takes for a directory.
        same = self._zip_infos.get(label) or self._zip_infos.get(label.removesuffix("/"))
        if not same:
            return None
        info = same.pop()
        return self._read_zip(ctx, info) if info.compress_size else None

    def zip_rest(self, ctx: Context, read: set[str]) -> Iterator[Child]:
        """The members holding data that libarchive never reached, in directory order;
        returns whether the directory was read and all of them came out undamaged."""
        if self._zip_infos is None:
            self._open_zip()
        clean = self._zip is not None
        for label, infos in self._zip_infos.items():
            for info in reversed(infos):
                if label in read or not info.compress_size:
                    continue
                read.add(label)
                child, problem = self._read_zip(ctx, info)
                clean = clean and problem is None and child.status is None
                same = self.recorded.get(label)
                child.meta = same.pop() if same else None
                yield child
        self._zip_infos = {}
        return clean

    def _read_zip(self, ctx: Context, info: zipfile.ZipInfo) -> tuple[Child, str | None]:
        label = _zip_label(info)
        number = self._zip_numbers.get(id(info))
        if info.flag_bits & _ZIP_ENCRYPTED:
            return Child(label, status=Status.PROTECTED, reason="encrypted", member=number), None
        problem: list[str] = []
        child = ctx.member(label, _zip_blocks(self._zip, info, problem),
                           declared_size=info.file_size, packed_size=info.compress_size)
        child.member = number
        return child, (problem[0] if problem else None)

    def _open_zip(self) -> None:
        self._zip_infos = {}
        try:
            source = self.obj.path if self.obj.path is not None else io.BytesIO(self.obj.data)
            self._zip = zipfile.ZipFile(source)
        except Exception:  # an unreadable directory: libarchive's reading stands alone
            return
        infos = self._zip.infolist()
        self._zip_numbers = {id(info): number for number, info in enumerate(infos)}
        for info in reversed(infos):
            self._zip_infos.setdefault(_zip_label(info), []).append(info)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def _by_name(self, entry, member: bool) -> MemberMeta | None:
        if not member:
            return None  # left for unread(): a directory record
        name = _entry_name(entry)
        same = self.recorded.get(name) or self.recorded.get(name.removesuffix("/"))
        return same.pop() if same else None

    def _by_order(self, entry, member: bool) -> MemberMeta | None:
        regular = _is_regular(entry)
        if regular or self.ftype != "tar":
            self.position += 1
        if not regular:
            return None
        encrypted = _entry_is_data_encrypted(entry._entry_p) > 0
        if self.ftype == "7z":
            # ClamAV's 7z reader flags every member after the first encrypted one encrypted.
            self.encrypted = encrypted = self.encrypted or encrypted
        elif self.ftype == "cpio" and not entry.size:
            return None  # ClamAV looks only at cpio members with data
        name = _entry_name(entry)
        if self.ftype == "cab":
            name = name.replace("/", "\\")  # as stored; libarchive turns it into a path
        elif self.ftype == "iso9660":
            name = name.rsplit("/", 1)[-1]  # ClamAV names ISO 9660 files without their folder
        return MemberMeta(name, self.position, None, entry.size, None, encrypted)


_ZIP_UTF8 = 0x800  # general purpose flag: the name is UTF-8 (else code page 437)
_ZIP_ENCRYPTED = 0x1


def _label(name: str) -> str:
    """A recorded name (bytes kept through surrogate escapes) as libarchive shows it: bytes
    that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _zip_label(info: zipfile.ZipInfo) -> str:
    """The member's stored name as libarchive shows it."""
    encoding = "utf-8" if info.flag_bits & _ZIP_UTF8 else "cp437"
    return _label(info.orig_filename.encode(encoding, "surrogateescape").decode(
        "utf-8", "surrogateescape"))


def _zip_blocks(zf: zipfile.ZipFile, info: zipfile.ZipInfo, problem: list[str]):
    """The member's data in blocks; damage goes to ``problem`` after all readable data."""
    crc = 0
    try:
        with zf.open(info) as fh:
            # zipfile checks the CRC while returning the last block and would drop that block
            # on a mismatch; it is checked here instead, once everything was handed out.
            fh._expected_crc = None
            while block := fh.read(CHUNK):
                crc = zlib.crc32(block, crc)
                yield block
    except Exception as err:  # zlib, bz2, lzma and zipfile each raise their own on damage
        problem.append(f"{type(err).__name__}: {err}")
        return
    if crc != info.CRC:
        problem.append(f"bad CRC {crc:#010x}, should be {info.CRC:#010x}")


def _rar_members(obj: ScanObject) -> list[MemberMeta]:
    """Every file header of a RAR archive, directories included, numbered from 1."""
    import rarfile  # only RAR archives need it

    try:
        source = obj.path if obj.path is not None else io.BytesIO(obj.data)
        infos = rarfile.RarFile(source).infolist()
    except Exception:  # damaged or header-encrypted: libarchive reports it
        return []
    return [
        MemberMeta(info.filename.rstrip("/"), position, info.compress_size, info.file_size,
                   info.CRC, info.needs_password(), info.compress_type)
        for position, info in enumerate(infos, 1)
    ]


def _message(err: ArchiveError) -> str:
    msg = err.msg
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return msg or ""


def _mentions_encryption(err: ArchiveError) -> bool:
    msg = _message(err).lower()
    return "encrypt" in msg or "passphrase" in msg or "password" in msg
