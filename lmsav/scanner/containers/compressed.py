"""Decompresses single-stream compressors (gzip, bzip2, xz, lzma, zstd) into their one member,
and compresses a new content for it (the rebuilder: member 0, replaced, never removed)."""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import posixpath
import zlib
from typing import BinaryIO, Callable, Iterator

import zstandard

from ..limits import Context
from ..objects import PATH_SEP, Child, ScanObject
from .base import Corrupted, Rebuilder, RebuildError, check_indexes, rebuild_errors

# Suffix → what the decompressed file is called ("x.tgz" holds "x.tar").
_SUFFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "gzip": ((".tgz", ".tar"), (".taz", ".tar"), (".gz", ""), (".z", ""), ("-gz", "")),
    "bzip2": ((".tbz2", ".tar"), (".tbz", ".tar"), (".bz2", ""), (".bz", "")),
    "xz": ((".txz", ".tar"), (".xz", "")),
    "lzma": ((".tlz", ".tar"), (".lzma", "")),
    "zstd": ((".tzst", ".tar"), (".zst", ""), (".zstd", "")),
}

# zstd can expand a few input bytes into a 128 KiB block; feeding it this little at a time
# bounds one call's output (about 32 MiB) before the context's ratio limit can look at it.
_ZSTD_FEED = 1024

_ERRORS = (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


class CompressedHandler:
    """Streams the decompressed member through the context, so size and ratio limits stop bombs."""

    types = frozenset(_SUFFIXES)

    def rebuilder(self, file_type: str) -> Rebuilder | None:
        return functools.partial(recompress, file_type) if file_type in _SUFFIXES else None

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        ftype = obj.type
        if ftype not in _SUFFIXES:
            raise Corrupted(f"not a compressed stream (looks like {ftype})")
        name = _member_name(obj, ftype)
        with _open_raw(obj) as raw:
            reader = _Reader(_read_function(ftype, raw))
            child = ctx.member(name, reader.read, packed_size=obj.size)
        child.member = 0
        if reader.error is None:
            yield child
            return
        if reader.produced:
            yield child  # a detection in the readable part still counts
        raise Corrupted(_describe(reader.error))


class _Reader:
    """Wraps a ``read(n)`` that may fail mid-stream; remembers the failure and ends the data."""

    def __init__(self, read: Callable[[int], bytes]):
        self._read = read
        self.error: Exception | None = None
        self.produced = 0

    def read(self, n: int) -> bytes:
        if self.error is not None:
            return b""
        try:
            block = self._read(n)
        except _ERRORS as err:
            self.error = err
            return b""
        self.produced += len(block)
        return block


def _open_raw(obj: ScanObject) -> BinaryIO:
    if obj.path is not None:
        return open(obj.path, "rb")
    return io.BytesIO(obj.data)


def _read_function(ftype: str, raw: BinaryIO) -> Callable[[int], bytes]:
    # read1, not read: read() loops over decompressor calls and drops what it already had
    # when a later call fails, losing the readable part of a damaged stream.
    if ftype == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb").read1
    if ftype == "bzip2":
        return bz2.BZ2File(raw, "rb").read1
    if ftype == "xz":
        return lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_XZ).read1
    if ftype == "lzma":
        return lzma.LZMAFile(raw, "rb", format=lzma.FORMAT_ALONE).read1
    return _zstd_read_function(raw)


def _zstd_read_function(raw: BinaryIO) -> Callable[[int], bytes]:
    # zstandard's stream readers stop quietly at a truncated frame. One decompressobj per frame
    # tells whether each frame ended, so a cut stream is reported as damage.
    new = zstandard.ZstdDecompressor().decompressobj
    dobj = new()
    pending = b""
    in_frame = False

    def read(_n: int) -> bytes:
        nonlocal dobj, pending, in_frame
        while True:
            if pending:
                chunk, pending = pending[:_ZSTD_FEED], pending[_ZSTD_FEED:]
            else:
                chunk = raw.read(_ZSTD_FEED)
            if not chunk:
                if in_frame:
                    raise EOFError("compressed data ends before the end of the frame")
                return b""
            in_frame = True
            out = dobj.decompress(chunk)
            if dobj.eof:
                pending = dobj.unused_data + pending
                dobj = new()
                in_frame = False
            if out:
                return out

    return read


def _member_name(obj: ScanObject, ftype: str) -> str:
    if ftype == "gzip":
        stored = _gzip_fname(obj.head(4096))
        if stored:
            return stored
    base = posixpath.basename(obj.name.rsplit(PATH_SEP, 1)[-1])
    lower = base.lower()
    for suffix, replacement in _SUFFIXES[ftype]:
        if lower.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + replacement
    return "data"


def _gzip_fname(head: bytes) -> str | None:
    """The original file name from a gzip header's FNAME field (RFC 1952), if present."""
    if len(head) < 10 or head[:2] != b"\x1f\x8b":
        return None
    flags = head[3]
    pos = 10
    if flags & 0x04:  # FEXTRA
        if len(head) < pos + 2:
            return None
        pos += 2 + int.from_bytes(head[pos:pos + 2], "little")
    if not flags & 0x08:  # FNAME
        return None
    end = head.find(b"\x00", pos)
    if end <= pos:
        return None
    return head[pos:end].decode("latin-1")


def recompress(ftype: str, data: bytes, edits: dict[int, bytes | None]) -> bytes:
    """The ``ftype`` stream ``data`` holding ``edits[0]`` instead (one stream, however many
    members the original had); a gzip stream keeps its file name and time. The only member
    cannot be removed: that would leave no file."""
    check_indexes(edits, 1, f"{ftype} stream")
    if not edits:
        return bytes(data)
    new = edits[0]
    if new is None:
        raise RebuildError(f"cannot remove the only member of a {ftype} stream")
    with rebuild_errors(f"cannot compress a new {ftype} stream"):
        return _compress(ftype, bytes(new), data)


def _compress(ftype: str, content: bytes, original: bytes) -> bytes:
    if ftype == "gzip":
        name, mtime = _gzip_header(original)
        buf = io.BytesIO()
        with gzip.GzipFile(filename=name, mode="wb", fileobj=buf, mtime=mtime) as gz:
            gz.write(content)
        return buf.getvalue()
    if ftype == "bzip2":
        return bz2.compress(content)
    if ftype in ("xz", "lzma"):
        return lzma.compress(content, format=lzma.FORMAT_XZ if ftype == "xz"
                             else lzma.FORMAT_ALONE)
    return zstandard.ZstdCompressor().compress(content)


def _gzip_header(data: bytes) -> tuple[str, int]:
    """The gzip header's file name (FNAME, "" when none) and time, for the new stream."""
    mtime = int.from_bytes(data[4:8], "little") if len(data) >= 8 else 0
    return _gzip_fname(bytes(data[:4096])) or "", mtime


def _describe(err: Exception) -> str:
    if isinstance(err, EOFError):
        return "truncated compressed stream"
    text = str(err) or type(err).__name__
    return text[:120]
