"""Explodes archives libarchive reads (zip, 7z, rar, tar, cpio, cab, iso9660, ar) into members."""

from __future__ import annotations

import ctypes
import io
import logging
from contextlib import contextmanager
from typing import Iterator

import libarchive.read
from libarchive import ffi
from libarchive.exception import ArchiveError

from ..filetype import sniff
from ..limits import CHUNK, Context
from ..objects import Child, ScanObject, Status
from ..signatures.subject import MemberMeta
from .base import Corrupted, Encrypted
from .sevenzip import explode_7z, zip_members, zip_needs_7z

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


class ArchiveHandler:
    """Explodes archives through libarchive; encrypted members come back as PROTECTED children."""

    types = frozenset(_FORMATS)

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        ftype = sniff(obj.data, obj.size)
        if ftype not in _FORMATS:
            raise Corrupted(f"not a readable archive (looks like {ftype})")
        if ftype == "zip" and zip_needs_7z(obj):
            # libarchive cannot decode deflate64 (9) or implode (6) members; 7-Zip can.
            yield from explode_7z(obj, ctx, "zip")
            return
        listing = _Listing(ftype, obj)
        try:
            yield from explode_members(obj, ctx, _FORMATS[ftype], packed=listing.packed,
                                       describe=listing.describe)
        except Corrupted:
            yield from listing.unread()
            raise
        yield from listing.unread()


def explode_members(
    obj: ScanObject,
    ctx: Context,
    formats: tuple[str, ...],
    filters: tuple[str, ...] = (),
    name: str | None = None,
    packed: dict[str, int] | None = None,
    describe=None,
) -> Iterator[Child]:
    """Yield each regular member libarchive reads with exactly these filters and formats.

    ``name`` labels every member (a single-stream format stores none); ``packed`` gives the
    compressed size of members the format records; ``describe(entry)``, called for every entry
    in order, gives a member's MemberMeta. Encrypted members come back PROTECTED and encrypted
    headers raise Encrypted; of libarchive's readers only zip, 7z and rar report either.
    """
    # Most formats record no member's compressed size where libarchive shows it; the whole
    # archive's size bounds every member's, so the ratio limit still stops bombs.
    whole = obj.size or None
    packed = packed or {}
    failure: ArchiveError | None = None
    try:
        with _reader(obj, filters, formats) as archive:
            for entry in archive:
                meta = describe(entry) if describe is not None else None
                if not _is_regular(entry):
                    continue
                member = name or _entry_name(entry)
                if _entry_is_data_encrypted(entry._entry_p) > 0:
                    yield Child(
                        member, status=Status.PROTECTED, reason="encrypted", size=entry.size,
                        meta=meta,
                    )
                    continue
                reader = _DataReader(archive._pointer)
                child = ctx.member(
                    member,
                    reader.blocks(),
                    declared_size=entry.size,
                    packed_size=packed.get(member, whole),
                )
                child.meta = meta
                if reader.error is not None:
                    if _mentions_encryption(reader.error) and not reader.produced:
                        yield Child(member, status=Status.PROTECTED, reason="encrypted",
                                    meta=meta)
                        continue
                    if reader.produced:
                        yield child  # the readable part may still hold a detection
                    failure = reader.error
                    break
                yield child
    except ArchiveError as err:
        failure = err
    if failure is not None:
        if _mentions_encryption(failure) and "header" in _message(failure).lower():
            raise Encrypted(_message(failure) or "encrypted headers")
        raise Corrupted(_message(failure) or "damaged archive")


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

    libarchive-c's ``get_blocks`` would slice a buffer with a negative ARCHIVE_WARN count; this
    loop treats any negative return as damage and stops the member where the damage starts.
    """

    def __init__(self, archive_p):
        self.archive_p = archive_p
        self.error: ArchiveError | None = None
        self.produced = 0

    def blocks(self) -> Iterator[bytes]:
        buf = _read_buffer()
        while True:
            try:
                n = ffi.read_data(self.archive_p, buf, CHUNK)
            except ArchiveError as err:
                self.error = err
                return
            if n == 0:
                return
            if n < 0:
                self.error = ArchiveError(ffi._error_string(self.archive_p), retcode=n)
                return
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
        yield libarchive.read.ArchiveRead(archive_p)
    finally:
        ffi.read_free(archive_p)


def _is_regular(entry) -> bool:
    ftype = entry.filetype & _AE_IFMT
    if ftype == 0:
        # ar (and some zips) store no file type; anything that is not a link is a file there.
        return not entry.issym and not (entry.islnk and not entry.size)
    if ftype != _AE_IFREG:
        return False
    # A hard link entry carries no data of its own (the data is under the first name).
    return not (entry.islnk and not entry.size)


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
    """

    def __init__(self, ftype: str, obj: ScanObject):
        self.ftype = ftype
        self.position = 0
        self.encrypted = False
        recorded = zip_members(obj) if ftype == "zip" else _rar_members(obj) if ftype == "rar" \
            else []
        self.recorded: dict[str, list[MemberMeta]] = {}
        self.packed: dict[str, int] = {}  # compressed sizes for the ratio limit
        for meta in reversed(recorded):
            # Keyed as libarchive shows names: bytes that are not UTF-8 become U+FFFD.
            label = meta.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            self.recorded.setdefault(label, []).append(meta)
            if meta.packed_size is not None:
                self.packed[label] = meta.packed_size
        self.describe = self._by_name if ftype in ("zip", "rar") else \
            None if ftype == "ar" else self._by_order

    def unread(self) -> Iterator[Child]:
        """Directory records (and members libarchive never reached): metadata only, which
        ClamAV checks against .cdb rules like any member's."""
        for metas in self.recorded.values():
            for meta in reversed(metas):
                yield Child(meta.name, meta=meta, meta_only=True)
        self.recorded = {}

    def _by_name(self, entry) -> MemberMeta | None:
        if not _is_regular(entry):
            return None
        same = self.recorded.get(_entry_name(entry))
        return same.pop() if same else None

    def _by_order(self, entry) -> MemberMeta | None:
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
