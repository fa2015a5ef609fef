"""The few facts of a Windows executable's headers the executable handlers need: sections,
entry point, image base, where the image ends and appended data (the overlay) begins.

Every read is bounds-checked; a header that does not parse gives None, never an exception.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_DOS_HEADER = 0x40
_SECTION = 40
_MAX_SECTIONS = 96  # the PE loader's own limit
_PE32, _PE32_PLUS = 0x10B, 0x20B
_RESOURCE_DIRECTORY = 2  # index in the optional header's data directories
_RT_RCDATA = 10
_SUBDIRECTORY = 0x80000000  # an entry's offset points at a directory, not a data entry
_MAX_RESOURCES = 4096  # entries looked at in one resource tree


@dataclass(frozen=True, slots=True)
class PeSection:
    name: bytes
    rva: int
    vsz: int
    raw: int
    rsz: int


@dataclass(frozen=True, slots=True)
class PeLayout:
    sections: tuple[PeSection, ...]
    entry_rva: int
    image_base: int
    pe32_plus: bool
    headers_end: int  # where the section table ends
    overlay: int  # first byte after the image (the file's size when nothing is appended)
    resources: int = 0  # RVA of the resource directory (0: none)

    def section_at(self, rva: int) -> int | None:
        """Index of the section whose virtual range holds ``rva``."""
        for i, s in enumerate(self.sections):
            if s.rva <= rva < s.rva + max(s.vsz, s.rsz):
                return i
        return None

    def offset_of(self, rva: int) -> int | None:
        """The file offset holding ``rva``, when a section's file data holds it."""
        for s in self.sections:
            if s.rva <= rva < s.rva + s.rsz:
                return s.raw + rva - s.rva
        return None


def read_layout(data, size: int) -> PeLayout | None:
    """The PE headers of ``data``, or None when it is not a PE whose section table parses."""
    if size < _DOS_HEADER or bytes(data[:2]) != b"MZ":
        return None
    e_lfanew, = struct.unpack_from("<I", data, 0x3C)
    if e_lfanew + 24 > size or bytes(data[e_lfanew:e_lfanew + 4]) != b"PE\0\0":
        return None
    nsections, = struct.unpack_from("<H", data, e_lfanew + 6)
    opt_size, = struct.unpack_from("<H", data, e_lfanew + 20)
    opt = e_lfanew + 24
    table = opt + opt_size
    if not 0 < nsections <= _MAX_SECTIONS or table + nsections * _SECTION > size or \
            opt_size < 28 + 4:
        return None
    magic, = struct.unpack_from("<H", data, opt)
    if magic not in (_PE32, _PE32_PLUS):
        return None
    entry, = struct.unpack_from("<I", data, opt + 16)
    if magic == _PE32:
        image_base, = struct.unpack_from("<I", data, opt + 28)
        directories = opt + 96
    else:
        image_base, = struct.unpack_from("<Q", data, opt + 24)
        directories = opt + 112
    resources = 0
    count_at = directories - 4
    if directories + (_RESOURCE_DIRECTORY + 1) * 8 <= table and \
            struct.unpack_from("<I", data, count_at)[0] > _RESOURCE_DIRECTORY:
        resources, = struct.unpack_from("<I", data, directories + _RESOURCE_DIRECTORY * 8)
    sections = []
    end = table + nsections * _SECTION
    for i in range(nsections):
        at = table + i * _SECTION
        name = bytes(data[at:at + 8]).rstrip(b"\0")
        vsz, rva, rsz, raw = struct.unpack_from("<IIII", data, at + 8)
        sections.append(PeSection(name, rva, vsz, raw, rsz))
        if rsz:
            end = max(end, raw + rsz)
    return PeLayout(tuple(sections), entry, image_base, magic == _PE32_PLUS, table + nsections *
                    _SECTION, min(end, size), resources)


def rcdata(data, size: int, layout: PeLayout) -> list[tuple[int, int]]:
    """(file offset, size) of each RT_RCDATA resource: the resource tree's type level, then
    each name and language below RCDATA, down to the data entries."""
    root = layout.offset_of(layout.resources) if layout.resources else None
    if root is None:
        return []
    found: list[tuple[int, int]] = []
    seen = 0

    def entries(directory: int) -> list[tuple[int, int]]:
        nonlocal seen
        if directory + 16 > size:
            return []
        named, ids = struct.unpack_from("<HH", data, directory + 12)
        count = min(named + ids, _MAX_RESOURCES - seen, (size - directory - 16) // 8)
        seen += max(count, 0)
        return [struct.unpack_from("<II", data, directory + 16 + 8 * i) for i in range(count)]

    for ident, names in entries(root):
        if ident != _RT_RCDATA or not names & _SUBDIRECTORY:
            continue
        for _name, languages in entries(root + (names & ~_SUBDIRECTORY)):
            if not languages & _SUBDIRECTORY:
                continue
            for _language, leaf in entries(root + (languages & ~_SUBDIRECTORY)):
                if leaf & _SUBDIRECTORY or root + leaf + 8 > size:
                    continue
                rva, length = struct.unpack_from("<II", data, root + leaf)
                at = layout.offset_of(rva)
                if at is not None:
                    found.append((at, min(length, size - at)))
    return found


def overlay_start(data, size: int, layout: PeLayout | None) -> int:
    """Where the bytes appended to the executable begin: after the PE's last section, or after
    the MS-DOS image its header declares (the DOS header's end when that is not credible)."""
    if layout is not None:
        return layout.overlay
    if size < _DOS_HEADER:
        return size
    last_page, pages = struct.unpack_from("<HH", data, 2)
    if pages:
        image = (pages - 1) * 512 + (last_page or 512)
        if _DOS_HEADER <= image:
            return min(image, size)
    return _DOS_HEADER
