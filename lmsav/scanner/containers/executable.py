"""Explodes what a Windows executable carries: its UPX-packed program, an NSIS installer, a
compiled AutoIt script, InstallShield setup files, and archives appended to it (self-extractors).

Each payload is found by a cheap look at the headers or a signature search in the bytes after
the image (the overlay) and the resource section; most executables have neither, and cost a
header parse. A payload becomes a member named for its route (``setup.exe//upx``,
``setup.exe//nsis//…``, ``setup.exe//autoit//…``, ``setup.exe//installshield//…``) whose sniffed
type picks its own handler, except the files of an older InstallShield setup, which the
overlay lists itself (``setup.exe//installshield/data1.cab``).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from . import installshield, nsis, upx
from .autoit import MARKER as AUTOIT_MARKER
from .base import Corrupted
from .pe_layout import PeLayout, overlay_start, rcdata, read_layout
from .sfx import SfxHandler
from .slices import slice_member

_AUTOIT_VERSIONS = (b"AU3!EA05", b"AU3!EA06")


class ExecutableHandler:
    """Yields the payloads found in a PE or MS-DOS executable."""

    types = frozenset({"pe", "msdos"})

    def __init__(self):
        self._sfx = SfxHandler()

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data, size = obj.data, obj.size
        layout = read_layout(data, size)
        damage: list[str] = []
        if layout is not None:
            found = upx.packed_sections(data, size, layout)
            if found is not None:
                upx0, certain = found
                child = upx.explode_upx(data, size, layout, upx0, ctx)
                if child is not None:
                    yield child
                elif certain:  # named UPX, yet not unpackable; other packers look alike
                    damage.append("UPX: no algorithm unpacks the image")
        overlay = overlay_start(data, size, layout)
        if overlay < size:
            yield from _overlay_payloads(data, overlay, size, ctx, damage)
        if layout is not None:
            yield from _resource_script(data, size, layout, ctx)
        yield from self._sfx.explode(obj, ctx)
        if damage:
            raise Corrupted("; ".join(damage))


def _overlay_payloads(data, start: int, size: int, ctx: Context,
                      damage: list[str]) -> Iterator[Child]:
    at = nsis.find_first_header(data, start, size)
    if at is not None:
        yield slice_member(ctx, "nsis", data, at, size)
    at = _find_autoit(data, start, size)
    if at is not None:
        yield slice_member(ctx, "autoit", data, at, size)
    at = data.find(installshield.MAGIC, start, size)
    while at >= 0:
        if installshield.is_msi_stream(data, at, size):
            yield slice_member(ctx, "installshield", data, at, size)
            break
        at = data.find(installshield.MAGIC, at + 1, size)
    files = installshield.overlay_files(data, start, size)
    if files:
        try:
            yield from installshield.explode_overlay(data, files, ctx, "installshield/")
        except Corrupted as err:
            damage.append(f"InstallShield: {err}")


def _resource_script(data, size: int, layout: PeLayout, ctx: Context) -> Iterator[Child]:
    """An AutoIt script kept as an RT_RCDATA resource (AutoIt 3.3 and later) rather than in
    the overlay: the resource starts with the script data."""
    for at, length in rcdata(data, size, layout):
        if _find_autoit(data, at, at + len(AUTOIT_MARKER) + 8) == at:
            yield slice_member(ctx, "autoit", data, at, at + length)


def _find_autoit(data, start: int, end: int) -> int | None:
    """Where compiled AutoIt script data (its marker and version) starts in the range."""
    at = data.find(AUTOIT_MARKER, start, end)
    while at >= 0:
        version = at + len(AUTOIT_MARKER)
        if bytes(data[version:version + 8]) in _AUTOIT_VERSIONS:
            return at
        at = data.find(AUTOIT_MARKER, at + 1, end)
    return None

