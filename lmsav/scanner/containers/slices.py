"""Members cut out of a container's bytes: a byte range, or an archive found inside."""

from __future__ import annotations

import zlib
from collections.abc import Iterator

from ..filetype import embedded_archive
from ..limits import CHUNK, Context
from ..objects import Child, ScanObject
from .sfx import explode_embedded


def slice_member(ctx: Context, name: str, data, start: int, stop: int) -> Child:
    """``data[start:stop]`` as member ``name``, read block by block (the container may be a
    large mmap) and charged to the scan's limits like any other member."""
    with memoryview(data) as view:
        blocks = (bytes(view[i:min(i + CHUNK, stop)]) for i in range(start, stop, CHUNK))
        return ctx.member(name, blocks, declared_size=stop - start)


def inflated_blocks(data, start: int, stop: int, name: str,
                    damage: list[str]) -> Iterator[bytes]:
    """The zlib stream in ``data[start:stop]``, decompressed block by block (what comes out is
    bounded per call; the member's limits judge the total); a damaged or cut-short stream ends
    the blocks and is appended to ``damage``."""
    inflater = zlib.decompressobj()
    try:
        for i in range(start, stop, CHUNK):
            yield inflater.decompress(bytes(data[i:min(i + CHUNK, stop)]), CHUNK * 4)
            while inflater.unconsumed_tail:
                yield inflater.decompress(inflater.unconsumed_tail, CHUNK * 4)
            if inflater.eof:
                return
        damage.append(f"{name}: compressed data cut short")
    except zlib.error as err:
        damage.append(f"{name}: {err}")


def archive_inside(obj: ScanObject, ctx: Context) -> Iterator[Child]:
    """An archive within a format whose own handler does not reach it, found as it is found in
    plain data (``filetype.embedded_archive``): ClamAV looks for one in every file."""
    found = embedded_archive(obj.data, obj.size)
    if found is not None:
        yield from explode_embedded(obj, ctx, *found)
