"""Explodes LHA/LZH archives, Unix compress (.Z) files and RPM packages through libarchive."""

from __future__ import annotations

import ctypes
import posixpath
from contextlib import contextmanager
from typing import Iterator

import libarchive.read
from libarchive import ffi
from libarchive.exception import ArchiveError

from ..limits import CHUNK, Context
from ..objects import PATH_SEP, Child, ScanObject, Status
from .archive import _DataReader, _entry_is_data_encrypted, _entry_name, _is_regular, _message
from .base import Corrupted

# An RPM is a lead and headers (libarchive's "rpm" filter skips them) before a compressed cpio
# payload; every payload compressor rpmbuild offers is listed. Debian's libarchive links all of
# them (bsdtar --version); were one missing, libarchive would run the external program instead.
_RPM_FILTERS = ("rpm", "gzip", "xz", "lzma", "zstd", "bzip2")


class LhaHandler:
    """Explodes LHA/LZH archives (-lh0- … -lh7-, -lzs-, -lz5-) into members."""

    types = frozenset({"lha"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from _explode(obj, ctx, filters=(), formats=("lha",))


class CompressHandler:
    """Decompresses a Unix compress (.Z, LZW) stream into its one member."""

    types = frozenset({"compress"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        name = _decompressed_name(obj.name)
        yield from _explode(obj, ctx, filters=("compress",), formats=("raw",), name=name)


class RpmHandler:
    """Explodes an RPM package's cpio payload into the files it installs."""

    types = frozenset({"rpm"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from _explode(obj, ctx, filters=_RPM_FILTERS, formats=("cpio",))


def _explode(
    obj: ScanObject,
    ctx: Context,
    filters: tuple[str, ...],
    formats: tuple[str, ...],
    name: str | None = None,
) -> Iterator[Child]:
    """Yield each regular member libarchive reads with exactly these filters and formats."""
    whole = obj.size or None  # bounds every member's packed size for the ratio limit
    failure: ArchiveError | None = None
    try:
        with _reader(obj, filters, formats) as archive:
            for entry in archive:
                if not _is_regular(entry):
                    continue
                member = name or _entry_name(entry)
                if _entry_is_data_encrypted(entry._entry_p) > 0:
                    yield Child(member, status=Status.PROTECTED, reason="encrypted")
                    continue
                reader = _DataReader(archive._pointer)
                child = ctx.member(
                    member, reader.blocks(), declared_size=entry.size, packed_size=whole
                )
                if reader.error is not None:
                    if reader.produced:
                        yield child  # the readable part may still hold a detection
                    failure = reader.error
                    break
                yield child
    except ArchiveError as err:
        failure = err
    if failure is not None:
        raise Corrupted(_message(failure) or "damaged archive")


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


def _decompressed_name(path: str) -> str:
    """``x.tar.Z`` holds ``x.tar``, ``x.taz`` holds ``x.tar``; anything else holds ``data``."""
    base = posixpath.basename(path.rsplit(PATH_SEP, 1)[-1])
    lower = base.lower()
    if lower.endswith(".taz"):
        return base[:-4] + ".tar"
    if lower.endswith(".z") and len(base) > 2:
        return base[:-2]
    return "data"
