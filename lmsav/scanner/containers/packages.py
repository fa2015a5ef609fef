"""Explodes LHA/LZH archives, Unix compress (.Z) files and RPM packages through libarchive."""

from __future__ import annotations

import posixpath
from typing import Iterator

from ..limits import Context
from ..objects import PATH_SEP, Child, ScanObject
from .archive import explode_members
from .base import Corrupted

# An RPM is a lead and headers (libarchive's "rpm" filter skips them) before a compressed cpio
# payload; every payload compressor rpmbuild offers is listed. Debian's libarchive links all of
# them (bsdtar --version); were one missing, libarchive would run the external program instead.
_RPM_FILTERS = ("rpm", "gzip", "xz", "lzma", "zstd", "bzip2")


class LhaHandler:
    """Explodes LHA/LZH archives (-lh0- … -lh7-, -lzs-, -lz5-) into members."""

    types = frozenset({"lha"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from explode_members(obj, ctx, filters=(), formats=("lha",))


class CompressHandler:
    """Decompresses a Unix compress (.Z, LZW) stream into its one member."""

    types = frozenset({"compress"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        # libarchive's compress reader declines a header it does not accept, and the raw format
        # then hands back the input unchanged: a child identical to its parent, nested until
        # the depth limit. Check the header here (flags: no reserved bits, 9..16 code bits).
        head = obj.head(3)
        if len(head) < 3 or head[2] & 0x60 or not 9 <= head[2] & 0x1F <= 16:
            raise Corrupted("not a compress stream: invalid header")
        name = _decompressed_name(obj.name)
        yield from explode_members(obj, ctx, filters=("compress",), formats=("raw",), name=name)


class RpmHandler:
    """Explodes an RPM package's cpio payload into the files it installs."""

    types = frozenset({"rpm"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from explode_members(obj, ctx, filters=_RPM_FILTERS, formats=("cpio",))


def _decompressed_name(path: str) -> str:
    """``x.tar.Z`` holds ``x.tar``, ``x.taz`` holds ``x.tar``; anything else holds ``data``."""
    base = posixpath.basename(path.rsplit(PATH_SEP, 1)[-1])
    lower = base.lower()
    if lower.endswith(".taz"):
        return base[:-4] + ".tar"
    if lower.endswith(".z") and len(base) > 2:
        return base[:-2]
    return "data"
