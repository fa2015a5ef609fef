"""Members cut out of a container's bytes: a byte range, or an archive found inside."""

from __future__ import annotations

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


def archive_inside(obj: ScanObject, ctx: Context) -> Iterator[Child]:
    """An archive within a format whose own handler does not reach it, found as it is found in
    plain data (``filetype.embedded_archive``): ClamAV looks for one in every file."""
    found = embedded_archive(obj.data, obj.size)
    if found is not None:
        yield from explode_embedded(obj, ctx, *found)
