"""Rebuilds a tar with members removed or replaced: the tar's rebuilder in the handlers' registry.

Members are numbered from 0 in the order libarchive reads their headers — every entry,
directories and links included; long-name and pax records belong to the entry they describe —
the number the archive handler gives each member it reads (``Child.member``): both read the
same bytes with the same reader, so the numbers agree. Where each entry lies comes from
libarchive too (where its header starts, where its data starts and ends). Every member kept is
copied block for block, so the format (ustar, GNU, pax) stays as it was; a replaced one keeps
its header blocks with the new size and checksum. A tar libarchive reports damage in is refused.

The rebuilt tar holds nothing but the members' header blocks and the data libarchive reads:
the padding after each member's data is written as zeros and a fresh end-of-archive follows,
so bytes the scan never read as a member (in the padding, after the end-of-archive blocks)
do not survive. A member followed by more than its padding before the next header is refused.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from libarchive import ffi
from libarchive.entry import ArchiveEntry
from libarchive.exception import ArchiveError

from .base import RebuildError, check_indexes, rebuild_errors

__all__ = ["rebuild_tar"]

_BLOCK = 512
_RECORD = 20 * _BLOCK  # what tar programs pad an archive to
_SIZE = slice(124, 136)
_CHECKSUM = slice(148, 156)
_MAX_OCTAL_SIZE = 8 ** 11  # what the 12-byte size field holds in octal
_AE_IFMT = 0o170000
_AE_IFREG = 0o100000

_lib = ffi.libarchive
_header_position = _lib.archive_read_header_position
_header_position.argtypes = [ctypes.c_void_p]
_header_position.restype = ctypes.c_int64
_filter_bytes = _lib.archive_filter_bytes
_filter_bytes.argtypes = [ctypes.c_void_p, ctypes.c_int]
_filter_bytes.restype = ctypes.c_int64
_sparse_count = _lib.archive_entry_sparse_count
_sparse_count.argtypes = [ctypes.c_void_p]
_sparse_count.restype = ctypes.c_int


@dataclass(frozen=True, slots=True)
class _Entry:
    start: int  # its first header block (a long-name or pax record, or its own header)
    data: int  # just past its own header block
    data_end: int  # just past the last byte of data libarchive reads for it
    name: bytes
    hardlink: bytes | None  # the name a hard link points to
    regular: bool
    size: int


def rebuild_tar(data: bytes, edits: dict[int, bytes | None]) -> bytes:
    """``data`` with member ``k`` removed (``edits[k]`` None) or holding ``edits[k]``.

    A hard link to a removed file goes too: it carries no data and would dangle.
    """
    data = bytes(data)
    with rebuild_errors("cannot rebuild the tar"):
        entries, end = _entries(data)
        check_indexes(edits, len(entries), "tar")
        gone = {entries[k].name for k, new in edits.items() if new is None}
        out = []
        for k, entry in enumerate(entries):
            stop = entries[k + 1].start if k + 1 < len(entries) else end
            if not 0 <= stop - entry.data_end < _BLOCK:
                name = entry.name.decode("utf-8", "replace")
                raise RebuildError(f"damaged tar: bytes no reader shows after {name!r}")
            if k in edits and edits[k] is None:
                continue
            if entry.hardlink is not None and entry.hardlink in gone:
                continue
            if edits.get(k) is not None:
                out.append(_replaced(data, entry, bytes(edits[k])))
            else:
                out.append(data[entry.start:entry.data_end] + bytes(stop - entry.data_end))
        size = sum(map(len, out)) + 2 * _BLOCK
        out.append(bytes(2 * _BLOCK + -size % _RECORD))  # end-of-archive, record padding
        return b"".join(out)


def _entries(data: bytes) -> tuple[list[_Entry], int]:
    """Every entry as libarchive reads it, and where the end-of-archive blocks start."""
    archive_p = ffi.read_new()
    try:
        ffi.get_read_filter_function("none")(archive_p)
        ffi.get_read_format_function("tar")(archive_p)
        base = ctypes.cast(data, ctypes.c_void_p).value
        ffi.read_open_memory(archive_p, base, len(data))
        out = []
        while True:
            entry = ArchiveEntry(archive_p)
            try:
                done = ffi.read_next_header2(archive_p, entry._entry_p) == ffi.ARCHIVE_EOF
            except ArchiveError as err:
                raise RebuildError(f"damaged tar: {_message(err)}") from None
            if done:
                return out, _header_position(archive_p)
            entry_p = entry._entry_p
            start, data_start = _header_position(archive_p), _filter_bytes(archive_p, 0)
            out.append(_Entry(
                start=start,
                data=data_start,
                data_end=_data_end(archive_p, base, len(data), data_start),
                name=ffi.entry_pathname(entry_p) or b"",
                hardlink=ffi.entry_hardlink(entry_p),
                regular=(entry.filetype & _AE_IFMT) == _AE_IFREG and not _sparse_count(entry_p),
                size=entry.size,
            ))
    finally:
        ffi.read_free(archive_p)


def _data_end(archive_p, base: int, size: int, data_start: int) -> int:
    """Just past the last byte of the current entry's data, read through libarchive: read from
    memory with no filter, each block it hands out lies in the archive's own bytes."""
    block, length, offset = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_longlong()
    end = data_start
    while True:
        try:
            done = ffi.read_data_block(archive_p, ctypes.byref(block), ctypes.byref(length),
                                       ctypes.byref(offset)) == ffi.ARCHIVE_EOF
        except ArchiveError as err:
            raise RebuildError(f"damaged tar: {_message(err)}") from None
        if done:
            return end
        if length.value:
            at = (block.value or 0) - base
            if not data_start <= at <= size - length.value:
                raise RebuildError("cannot tell where a tar member's data lies")
            end = at + length.value


def _replaced(data: bytes, entry: _Entry, content: bytes) -> bytes:
    """The entry's header blocks, with the new size and checksum, then ``content``."""
    name = entry.name.decode("utf-8", "replace")
    if not entry.regular or entry.hardlink is not None:
        raise RebuildError(f"cannot replace {name!r}: not a plain file")
    header_at = entry.data - _BLOCK
    if b" size=" in data[entry.start:header_at] or len(content) >= _MAX_OCTAL_SIZE:
        raise RebuildError(f"cannot replace {name!r}: its size needs a pax record")
    header = bytearray(data[header_at:entry.data])
    header[_SIZE] = b"%011o\0" % len(content)
    header[_CHECKSUM] = b" " * 8
    header[_CHECKSUM] = b"%06o\0 " % sum(header)
    padding = -len(content) % _BLOCK
    return data[entry.start:header_at] + bytes(header) + content + b"\0" * padding


def _message(err: ArchiveError) -> str:
    msg = err.msg
    return msg.decode("utf-8", "replace") if isinstance(msg, bytes) else str(msg or "unreadable")
