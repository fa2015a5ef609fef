"""Explodes archives libarchive reads (zip, 7z, rar, tar, cpio, cab, iso9660, ar) into members."""

from __future__ import annotations

import ctypes
import io
import logging
import zipfile
from contextlib import contextmanager
from typing import Iterator

import libarchive.read
from libarchive import ffi
from libarchive.exception import ArchiveError

from ..filetype import sniff
from ..limits import CHUNK, Context
from ..objects import Child, ScanObject, Status
from .base import Corrupted, Encrypted
from .sevenzip import explode_7z, zip_needs_7z

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
        packed = _zip_packed_sizes(obj) if ftype == "zip" else {}
        yield from explode_members(obj, ctx, _FORMATS[ftype], packed=packed)


def explode_members(
    obj: ScanObject,
    ctx: Context,
    formats: tuple[str, ...],
    filters: tuple[str, ...] = (),
    name: str | None = None,
    packed: dict[str, int] | None = None,
) -> Iterator[Child]:
    """Yield each regular member libarchive reads with exactly these filters and formats.

    ``name`` labels every member (a single-stream format stores none); ``packed`` gives the
    compressed size of members the format records. Encrypted members come back PROTECTED and
    encrypted headers raise Encrypted; of libarchive's readers only zip, 7z and rar report either.
    """
    # Most formats record no member's compressed size where libarchive shows it; the whole
    # archive's size bounds every member's, so the ratio limit still stops bombs.
    whole = obj.size or None
    packed = packed or {}
    failure: ArchiveError | None = None
    try:
        with _reader(obj, filters, formats) as archive:
            for entry in archive:
                if not _is_regular(entry):
                    continue
                member = name or _entry_name(entry)
                if _entry_is_data_encrypted(entry._entry_p) > 0:
                    yield Child(
                        member, status=Status.PROTECTED, reason="encrypted", size=entry.size
                    )
                    continue
                reader = _DataReader(archive._pointer)
                child = ctx.member(
                    member,
                    reader.blocks(),
                    declared_size=entry.size,
                    packed_size=packed.get(member, whole),
                )
                if reader.error is not None:
                    if _mentions_encryption(reader.error) and not reader.produced:
                        yield Child(member, status=Status.PROTECTED, reason="encrypted")
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


def _zip_packed_sizes(obj: ScanObject) -> dict[str, int]:
    """Compressed size of each zip member, from the central directory (libarchive hides it)."""
    try:
        source = open(obj.path, "rb") if obj.path is not None else io.BytesIO(obj.data)
        with source, zipfile.ZipFile(source) as zf:
            return {info.filename: info.compress_size for info in zf.infolist()}
    except Exception:  # a damaged directory only costs the exact ratio; libarchive reports damage
        return {}


def _message(err: ArchiveError) -> str:
    msg = err.msg
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return msg or ""


def _mentions_encryption(err: ArchiveError) -> bool:
    msg = _message(err).lower()
    return "encrypt" in msg or "passphrase" in msg or "password" in msg
