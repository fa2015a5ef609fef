"""Executable headers (PE, ELF, Mach-O) read as ClamAV reads them, for offsets and section hashes.

Signature offsets (``EP+n``, ``Sx+n``, ``SL+n``, ``SEx``, ``VI``) and PE section hashes refer to
ClamAV's own view of a file: PE sections rounded to the file and section alignments and cut at
the end of the file, the entry point mapped through them or through the headers, ELF and Mach-O
values truncated to 32 bits, a Mach-O entry point only for PowerPC. A general-purpose parser
(pefile, pyelftools, macholib) gives other numbers for the same file and accepts or refuses
other files, so this module follows libclamav 1.4 (pe.c, elf.c, macho.c) field by field.

Every read is bounds-checked and every loop is bounded by the format's own limits: garbage
gives None, never an exception. Nothing here runs unless a loaded signature needs it.
"""

from __future__ import annotations

import hashlib
import re
import struct
from dataclasses import dataclass, field

from .pe_ordinals import ordinal_name

M32 = 0xFFFFFFFF
CLI_OFF_NONE = 0xFFFFFFFE  # ClamAV's "no such offset"; a computed offset equal to it is void

# Sniffed types whose signatures ClamAV resolves against a parsed executable (its PE, ELF and
# Mach-O targets). lmsav's "msdos" is an MZ file without a PE header near the start: ClamAV
# types it as a PE all the same and tries the PE parser on it.
EXE_KINDS = {"pe": "pe", "msdos": "pe", "elf": "elf", "macho": "macho"}


@dataclass(frozen=True, slots=True)
class Section:
    """ClamAV's exe_section: virtual address and size, raw file offset and size."""

    rva: int
    vsz: int
    raw: int
    rsz: int


@dataclass(slots=True)
class ExeInfo:
    """What ClamAV's target info knows of an executable: its entry point and sections."""

    kind: str  # "pe", "elf" or "macho"
    entry_point: int  # file offset, as ClamAV computes EP
    sections: list[Section]
    # File offsets of PE version-information string keys (the ``VI`` offset); empty elsewhere.
    version_info: frozenset[int] = frozenset()


def exe_kind(data, ftype: str) -> str | None:
    """"pe", "elf" or "macho" when ClamAV types ``data`` (sniffed as ``ftype``) as an
    executable it parses for offsets, else None."""
    kind = EXE_KINDS.get(ftype)
    if kind == "macho" and bytes(data[:4]) == b"\xca\xfe\xba\xbe":
        # 0xcafebabe is a universal binary only when its architecture count is small; ClamAV
        # types the rest as Java classes (or plain data), which have no executable target.
        return kind if bytes(data[4:7]) == b"\0\0\0" and data[7:8] < b"\x20" else None
    return kind


def parse(data, ftype: str) -> ExeInfo | None:
    """ClamAV's target info for ``data`` of sniffed type ``ftype``; None when not applicable
    (not an executable type) or when ClamAV's parser would fail on it."""
    kind = EXE_KINDS.get(ftype)
    if kind is None:
        return None
    try:
        if kind == "pe":
            pe = _parse_pe(data, remove_missing=False)
            if pe is None:
                return None
            return ExeInfo("pe", pe.ep, pe.sections, _version_info(data, pe))
        if kind == "elf":
            return _parse_elf(data)
        return _parse_macho(data)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None  # a read the checks above did not foresee: treat as unparsable


# -- offsets -----------------------------------------------------------------------------------

ANY = "*"
ABSOLUTE = "n"
EOF_MINUS = "EOF-"
EP_PLUS = "EP+"
EP_MINUS = "EP-"
SL_PLUS = "SL+"
SX_PLUS = "Sx+"
SE = "SE"
VERSION = "VI"
MACRO = "$"
RELATIVE = frozenset({EP_PLUS, EP_MINUS, SL_PLUS, SX_PLUS, SE, VERSION})  # need a PE/ELF/Mach-O
EXE_TARGETS = {1: "pe", 6: "elf", 9: "macho"}  # ClamAV targets applied to a parsed executable


@dataclass(frozen=True, slots=True)
class Offset:
    """A parsed ClamAV offset: ``kind`` (ANY, ABSOLUTE, EOF_MINUS, EP_PLUS, EP_MINUS, SL_PLUS,
    SX_PLUS, SE, VERSION or MACRO), its number ``n``, the ``,m`` shift and, for ``Sx+n`` and
    ``SEx``, the section index (for ``$n$``, the macro group in ``n``)."""

    kind: str
    n: int = 0
    shift: int = 0
    section: int = 0


_S_PLUS = re.compile(r"S([0-9]+)\+([0-9]+)")


def _atoi(digits: str) -> int:
    """C's atoi on a digit string as glibc computes it, as the uint32 ClamAV stores."""
    return min(int(digits or "0"), 0x7FFFFFFFFFFFFFFF) & M32


def parse_offset(text: str, target: int) -> Offset:
    """Parse an offset field as ClamAV's cli_caloff does; ValueError when ClamAV refuses it
    (ClamAV then refuses the whole database file)."""
    if text == "*":
        return Offset(ANY)
    if len(text) > 64:
        raise ValueError(f"offset {text!r} is longer than 64 characters")
    base, comma, shift_text = text.partition(",")
    if comma and not _digits(shift_text):
        raise ValueError(f"bad offset shift in {text!r}: need digits after ','")
    shift = _atoi(shift_text)
    if base.startswith(("EP+", "EP-")):
        if not _digits(base[3:]):
            raise ValueError(f"bad offset {text!r}: need digits after {base[:3]!r}")
        found = Offset(EP_PLUS if base[2] == "+" else EP_MINUS, _atoi(base[3:]), shift)
    elif base.startswith("S"):
        if base.startswith("SE"):
            if not _digits(base[2:]):
                raise ValueError(f"bad section number in {text!r}")
            found = Offset(SE, 0, shift, _atoi(base[2:]))
        elif base.startswith("SL+"):
            if not _digits(base[3:]):
                raise ValueError(f"bad offset {text!r}: need digits after 'SL+'")
            found = Offset(SL_PLUS, _atoi(base[3:]), shift)
        else:
            # ClamAV reads "S%u+%u" and ignores whatever follows the second number.
            sx = _S_PLUS.match(base)
            if sx is None:
                raise ValueError(f"bad offset {text!r}: need Sx+n, SL+n or SEx")
            found = Offset(SX_PLUS, _atoi(sx[2]), shift, _atoi(sx[1]))
    elif base.startswith("EOF-"):
        if not _digits(base[4:]):
            raise ValueError(f"bad offset {text!r}: need digits after 'EOF-'")
        found = Offset(EOF_MINUS, _atoi(base[4:]), shift)
    elif base.startswith("VI"):
        found = Offset(VERSION, 0, shift)
    elif "$" in base:
        macro = re.match(r"\$([0-9]+)", base)  # ClamAV reads "$%u$", the closing $ optional
        if macro is None or int(macro[1]) >= 32:
            raise ValueError(f"bad macro offset {text!r}: need $n$ with n below 32")
        found = Offset(MACRO, int(macro[1]), shift)
    else:
        if not _digits(base):
            raise ValueError(f"bad offset {text!r}: need *, n, EOF-n, EP+n, EP-n, Sx+n, SL+n, "
                             "SEx or VI (each with an optional ,m)")
        found = Offset(ABSOLUTE, _atoi(base), shift)
    if found.kind in RELATIVE and target not in EXE_TARGETS:
        raise ValueError(f"offset {text!r} needs target type 1 (PE), 6 (ELF) or 9 (Mach-O), "
                         f"not {target}")
    return found


def _digits(text: str) -> bool:
    # ClamAV's cli_isnumber also accepts the empty string (read as 0).
    return text == "" or text.isdigit() and text.isascii()


def resolve_offset(offset: Offset, size: int, exe: ExeInfo | None,
                   exe_failed: bool = False) -> tuple[int, int] | None:
    """The window ``(start, shift)`` — a match must start at ``start`` … ``start + shift`` — as
    ClamAV's cli_caloff computes it for a file of ``size`` bytes, or None when the signature
    cannot match this file.

    ``exe`` is the file's parsed executable (``parse``) and ``exe_failed`` is True when the file
    is of an executable type whose parse failed: ClamAV then drops every EOF-relative and
    executable-relative offset, even in signatures of target 0. ``ANY`` gives the whole file;
    ``VERSION`` and ``MACRO`` are not windows and give None (a ``VI`` signature matches where a
    position in ``exe.version_info`` starts it).
    """
    kind = offset.kind
    if kind == ANY:
        return 0, size
    if kind == ABSOLUTE:
        start = offset.n
    elif kind in (VERSION, MACRO) or exe_failed:
        return None
    elif kind == EOF_MINUS:
        start = (size - offset.n) & M32
    elif exe is None:
        return None
    elif kind == EP_PLUS:
        start = (exe.entry_point + offset.n) & M32
    elif kind == EP_MINUS:
        start = (exe.entry_point - offset.n) & M32
    elif kind == SL_PLUS:
        if not exe.sections:
            return None  # ClamAV would read before its section table here
        start = (exe.sections[-1].raw + offset.n) & M32
    elif offset.section >= len(exe.sections):
        return None
    elif kind == SX_PLUS:
        start = (exe.sections[offset.section].raw + offset.n) & M32
    else:  # SE: anywhere in the section, plus the shift past its end
        sect = exe.sections[offset.section]
        last = sect.raw + sect.rsz + offset.shift
        if sect.raw == CLI_OFF_NONE or last > M32:
            return None
        return sect.raw, sect.rsz + offset.shift
    if start == CLI_OFF_NONE or start >= size or start + offset.shift > M32:
        return None  # also what ClamAV's 32-bit arithmetic makes of a window wrapping around
    return start, offset.shift


# -- PE ----------------------------------------------------------------------------------------

def _u16(data, at: int) -> int | None:
    return struct.unpack_from("<H", data, at)[0] if 0 <= at and at + 2 <= len(data) else None


def _u32(data, at: int) -> int | None:
    return struct.unpack_from("<I", data, at)[0] if 0 <= at and at + 4 <= len(data) else None


def _align_down(value: int, align: int) -> int:
    return value // align * align if align else value


def _align_up(value: int, align: int) -> int:
    if not align:
        return value
    return (value // align + (value % align != 0)) * align & M32


@dataclass(slots=True)
class _Pe:
    ep: int
    sections: list[Section]
    hdr_size: int
    dirs: list[tuple[int, int]]  # the 16 data directories (rva, size), zero when absent
    pe32plus: bool


def _pe_rawaddr(rva: int, sections: list[Section], size: int, hdr_size: int) -> int | None:
    """File offset of ``rva`` as ClamAV maps it (headers first, then the last section holding
    it), or None."""
    if rva < hdr_size:
        return None if rva >= size else rva
    for sect in reversed(sections):
        if sect.rsz and sect.rva <= rva and sect.rsz > rva - sect.rva:
            return (rva - sect.rva + sect.raw) & M32
    return None


def _parse_pe(data, remove_missing: bool) -> _Pe | None:
    """ClamAV's cli_peheader: ``remove_missing`` drops sections wholly past the end of the file
    (how the PE scanner sees the file for .mdb/.imp); otherwise their raw size becomes 0 (how
    offsets see it)."""
    size = len(data)
    if data[:2] not in (b"MZ", b"ZM"):
        return None
    e_lfanew = _u32(data, 0x3C)
    if not e_lfanew or e_lfanew + 24 > size:
        return None
    if data[e_lfanew:e_lfanew + 4] != b"PE\0\0":
        return None
    nsections, = struct.unpack_from("<H", data, e_lfanew + 6)
    opt_size, = struct.unpack_from("<H", data, e_lfanew + 20)
    if nsections == 0 or opt_size < 96:
        return None
    at = e_lfanew + 24
    if at + 96 > size:
        return None
    pe32plus = _u16(data, at) == 0x20B
    stored = 112 if pe32plus else 96
    if pe32plus and (opt_size < 112 or at + 112 > size):
        return None
    vep = _u32(data, at + 16)
    salign = _u32(data, at + 32)
    falign = _u32(data, at + 36)
    hdr_size = _u32(data, at + 60)
    ndirs = min(_u32(data, at + stored - 4), 16)
    if opt_size < stored + 8 * ndirs or at + stored + 8 * ndirs > size:
        return None
    dirs = [struct.unpack_from("<II", data, at + stored + 8 * i) for i in range(ndirs)]
    dirs += [(0, 0)] * (16 - ndirs)
    hdr_size = _align_up(hdr_size, salign)
    table = e_lfanew + 24 + opt_size
    if table + 40 * nsections > size:
        return None
    headers = [struct.unpack_from("<8xIIII12xI", data, table + 40 * i) for i in range(nsections)]
    if falign != 0x200:
        for _vsz, _va, raw_size, raw_ptr, _chr in headers:
            # ClamAV's fallback: sections laid out on 512 bytes despite the declared alignment.
            if falign and raw_size and raw_ptr % falign and not raw_ptr % 0x200:
                falign = 0x200
                break
    sections: list[Section] = []
    left = nsections
    for uvsz, urva, ursz, uraw, _chr in headers:
        rva, vsz = _align_down(urva, salign), _align_up(uvsz, salign)
        raw, rsz = _align_down(uraw, falign), _align_up(ursz, falign)
        if rsz:
            if raw >= size or uraw >= size:
                if remove_missing:
                    if left == 1:
                        return None
                    left -= 1
                    continue
                rsz = ursz = 0
            else:
                if raw + rsz > size:
                    rsz = size - raw
                if not ursz or uraw + ursz > size:
                    ursz = size - uraw
        if not vsz and rsz:
            vsz = _align_up(ursz, salign)
        if urva >> 31 or uvsz >> 31 or (rsz and uraw >> 31) or ursz >> 31:
            return None
        sections.append(Section(rva, vsz, raw, rsz))
    if vep is None:
        return None
    ep = _pe_rawaddr(vep, sections, size, hdr_size)
    if ep is None:
        return None
    return _Pe(ep, sections, hdr_size, dirs, pe32plus)


_VS_VERSION_INFO = "VS_VERSION_INFO\0".encode("utf-16-le")
_VAR_FILE_INFO = "VarFileInfo\0".encode("utf-16-le")
_STRING_FILE_INFO = "StringFileInfo\0".encode("utf-16-le")
_MAX_VERSION_RESOURCES = 16
# Directory entries visited looking for them: ClamAV's walk is quadratic in hostile counts.
_MAX_RESOURCE_ENTRIES = 1 << 16


def _version_info(data, pe: _Pe) -> frozenset[int]:
    """File offsets of the version-information string keys (ClamAV's ``VI`` positions)."""
    size = len(data)
    res_rva, res_size = pe.dirs[2]
    if not res_size:
        return frozenset()
    found: set[int] = set()
    for rva in _version_resources(data, pe, res_rva)[:_MAX_VERSION_RESOURCES]:
        entry = _pe_rawaddr(rva, pe.sections, size, pe.hdr_size)
        if entry is None or entry + 16 > size:
            continue
        data_rva, res_sz = struct.unpack_from("<II", data, entry)
        where = _pe_rawaddr(data_rva, pe.sections, size, pe.hdr_size)
        if where is None or not res_sz or where + res_sz > size:
            continue
        _version_strings(data, where, res_sz, found)
    return frozenset(found)


def _version_resources(data, pe: _Pe, res_rva: int) -> list[int]:
    """RVAs of the RT_VERSION (type 16) resource data entries, in ClamAV's walk order."""
    size = len(data)

    def directory(rva: int) -> int | None:
        off = _pe_rawaddr(rva & M32, pe.sections, size, pe.hdr_size)
        return off if off is not None and off + 16 <= size else None

    out: list[int] = []
    budget = _MAX_RESOURCE_ENTRIES
    root = directory(res_rva)
    if root is None:
        return out
    named, ids = struct.unpack_from("<HH", data, root + 12)
    entry = root + 16 + 8 * named  # ids follow the named entries
    for _ in range(ids):
        if entry + 8 > size:
            return out
        rtype, offs = struct.unpack_from("<II", data, entry)
        if rtype == 16 and offs >> 31:
            names = directory(res_rva + (offs & 0x7FFFFFFF))
            if names is None:
                return out
            count = sum(struct.unpack_from("<HH", data, names + 12)) & 0xFFFF
            name_entry = names + 16
            for _ in range(count):
                if name_entry + 8 > size or budget <= 0:
                    return out
                budget -= 1
                _name, name_offs = struct.unpack_from("<II", data, name_entry)
                if name_offs >> 31:
                    langs = directory(res_rva + (name_offs & 0x7FFFFFFF))
                    if langs is None:
                        return out
                    lang_count = sum(struct.unpack_from("<HH", data, langs + 12)) & 0xFFFF
                    lang_entry = langs + 16
                    for _ in range(lang_count):
                        if lang_entry + 8 > size or budget <= 0:
                            return out
                        budget -= 1
                        _lang, lang_offs = struct.unpack_from("<II", data, lang_entry)
                        if not lang_offs >> 31:
                            out.append((res_rva + lang_offs) & M32)
                            if len(out) == _MAX_VERSION_RESOURCES:
                                return out
                        lang_entry += 8
                name_entry += 8
            return out  # ClamAV stops after the first RT_VERSION type entry
        entry += 8
    return out


def _dword(data, at: int) -> int:
    return struct.unpack_from("<I", data, at)[0] if 0 <= at and at + 4 <= len(data) else 0


def _version_strings(data, at: int, res_sz: int, found: set[int]) -> None:
    """Walk VS_VERSIONINFO → StringFileInfo → string tables → strings as ClamAV does, adding
    the file offset of each string's key that has a value."""
    while res_sz > 4:
        head = _dword(data, at)
        vinfo_sz, val_sz = head & 0xFFFF, head >> 16
        if vinfo_sz > res_sz:
            return
        if (vinfo_sz <= 92 or val_sz != 0x34
                or data[at + 6:at + 0x26] != _VS_VERSION_INFO
                or _dword(data, at + 0x28) != 0xFEEF04BD):
            return
        at += 92
        vinfo_sz -= 92
        got_var = False
        while vinfo_sz > 6:
            sfi_sz = _dword(data, at) & 0xFFFF
            if sfi_sz > vinfo_sz:
                return
            if not got_var and sfi_sz > 6 + 0x18 and data[at + 6:at + 6 + 0x18] == _VAR_FILE_INFO:
                at += sfi_sz
                vinfo_sz -= sfi_sz
                got_var = True
                continue
            if sfi_sz <= 6 + 0x1E or data[at + 6:at + 6 + 0x1E] != _STRING_FILE_INFO:
                return
            at += 36
            sfi_sz -= 36
            while sfi_sz > 6:
                st_sz = _dword(data, at) & 0xFFFF
                next_at, next_sfi = at + st_sz, (sfi_sz - st_sz) & M32
                if st_sz > sfi_sz or st_sz <= 24:
                    break
                at += 24
                st_sz -= 24
                while st_sz > 6:
                    s_sz = ((_dword(data, at) & 0xFFFF) + 3) & ~3
                    if s_sz > st_sz or s_sz <= 16:
                        st_sz = sfi_sz = 0
                        break
                    key = 6
                    while key + 1 < s_sz:  # the key is a NUL-terminated UTF-16 string
                        if data[at + key:at + key + 2] == b"\0\0":
                            key += 2
                            break
                        key += 2
                    key = (key + 3) & ~3
                    if key < s_sz and s_sz - key > 2:
                        found.add(at + 6)
                    at += s_sz
                    st_sz -= s_sz
                at = next_at
                sfi_sz = next_sfi if sfi_sz else 0
            return
        return


# -- PE as the scanner sees it: section and import hashes --------------------------------------

_NAME_MAX = 256
_MAX_DESCRIPTORS = 1024
# ClamAV walks each thunk array to its zero entry; a hostile file can make that millions of
# entries, each descriptor pointing at the same array. Past this many thunks in all, the
# import hash is not computed (no .imp match) where ClamAV would go on.
_MAX_THUNKS = 1 << 20
_IMPORT_NAME = re.compile(rb"[0-9A-Za-z_.]*")
_HASH_SIZE_LIMIT = 1 << 30  # ClamAV does not hash sections above 1 GiB


@dataclass(slots=True)
class PeScan:
    """A PE as ClamAV's PE scanner sees it (sections wholly past the end of the file removed):
    the sections whose raw bytes .mdb/.msb hash, and the import table .imp hashes."""

    data: object
    sections: list[Section]
    pe32plus: bool
    _pe: _Pe
    _digests: dict = field(default_factory=dict)
    _imports: tuple | None = None

    def hashed_sizes(self) -> list[tuple[int, int]]:
        """(section index, raw size) of the sections ClamAV hashes for .mdb: those with raw
        data, up to 1 GiB."""
        return [(i, s.rsz) for i, s in enumerate(self.sections)
                if s.rsz and s.rsz <= _HASH_SIZE_LIMIT]

    def section_digest(self, index: int, algo: str) -> bytes:
        """``algo`` digest ("md5", "sha1", "sha256") of section ``index``'s raw bytes."""
        key = (index, algo)
        if key not in self._digests:
            sect = self.sections[index]
            # Views are released at once: an mmap with live views cannot be closed.
            with memoryview(self.data) as whole, whole[sect.raw:sect.raw + sect.rsz] as part:
                self._digests[key] = hashlib.new(algo, part).digest()
        return self._digests[key]

    def import_table(self) -> bytes | None:
        """The string ClamAV hashes for .imp (``dll.function`` names, lower case, comma
        separated; its length is the signature's size), or None when ClamAV computes no hash:
        PE32+ files (ClamAV 1.4 stops scanning those before the import table), no import
        directory, or a table ClamAV gives up on."""
        if self._imports is None:
            table = None if self.pe32plus else _import_string(self.data, self._pe)
            self._imports = (table,)
        return self._imports[0]


def parse_pe_scan(data) -> PeScan | None:
    """The PE scanner's view of ``data`` (for .mdb and .imp), or None when ClamAV's PE scanner
    would give up on the header."""
    try:
        pe = _parse_pe(data, remove_missing=True)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None
    if pe is None:
        return None
    return PeScan(data, pe.sections, pe.pe32plus, pe)


def _import_string(data, pe: _Pe) -> bytes | None:
    """ClamAV's import-table hash input, or None when it gives up on the table."""
    try:
        return _walk_imports(data, pe)
    except (struct.error, IndexError, ValueError, OverflowError):
        return None


def _walk_imports(data, pe: _Pe) -> bytes | None:
    size = len(data)
    imp_rva, imp_size = pe.dirs[1]
    if not imp_rva or not imp_size:
        return None
    table = _pe_rawaddr(imp_rva, pe.sections, size, pe.hdr_size)
    if table is None or table + imp_size > size:
        return None
    names: list[bytes] = []
    budget = [_MAX_THUNKS]
    left, count, at = imp_size, 0, table
    while left > 20 and count < _MAX_DESCRIPTORS:
        oft, _time, _chain, name_rva, first_thunk = struct.unpack_from("<5I", data, at)
        if not name_rva:
            break
        left -= 20
        count += 1
        at += 20
        where = _pe_rawaddr(name_rva, pe.sections, size, pe.hdr_size)
        if where is None or where >= size:
            return None  # ClamAV also fails on a name right at the end of the file
        dll = _c_string(data, where, min(_NAME_MAX, size - where))
        if not _thunk_names(data, pe, dll, oft, first_thunk, names, budget):
            return None
    return b",".join(names)


def _c_string(data, at: int, limit: int) -> bytes:
    raw = bytes(data[at:at + limit])
    end = raw.find(b"\0")
    return raw if end < 0 else raw[:end]


def _thunk_names(data, pe: _Pe, dll: bytes, oft: int, first_thunk: int,
                 names: list[bytes], budget: list[int]) -> bool:
    """Append ``dll.function`` for each thunk of one descriptor; False when ClamAV gives up
    (or the thunk budget runs out)."""
    size = len(data)
    thunks = _pe_rawaddr(oft, pe.sections, size, pe.hdr_size) if oft else None
    if not thunks:  # no OriginalFirstThunk, or it maps to nothing (or to offset 0)
        thunks = _pe_rawaddr(first_thunk, pe.sections, size, pe.hdr_size)
        if thunks is None:
            return False
    dot = dll.find(b".")
    if dot >= 0 and dll[dot:dot + 4].lower() in (b".ocx", b".sys", b".dll"):
        stem = dll[:dot].lower()
    else:
        stem = dll.lower()
    while budget[0] > 0:
        budget[0] -= 1
        if thunks + 4 > size:
            return True  # the array runs into the end of the file: stop, as ClamAV does
        thunk, = struct.unpack_from("<I", data, thunks)
        if not thunk:
            return True
        thunks += 4
        if thunk & 0x80000000:
            function = ordinal_name(dll, thunk & 0xFFFF)
        else:
            # ClamAV ignores a failed mapping here and reads the name at file offset 2.
            where = _pe_rawaddr(thunk, pe.sections, size, pe.hdr_size) or 0
            if where + 2 + _NAME_MAX > size:
                continue  # ClamAV skips a name this close to the end of the file
            function = _c_string(data, where + 2, _NAME_MAX)
        if _IMPORT_NAME.fullmatch(function) is None:
            return False
        names.append(stem + b"." + function.lower())
    return False


# -- ELF ---------------------------------------------------------------------------------------

def _parse_elf(data) -> ExeInfo | None:
    """ClamAV's cli_elfheader: entry point through the program headers, section table."""
    size = len(data)
    if size < 52 or data[:4] != b"\x7fELF":
        return None
    klass = data[4]
    if klass not in (1, 2):
        return None
    end = "<" if data[5] == 1 else ">"
    is64 = klass == 2
    if is64:
        if size < 64:
            return None
        entry, phoff, shoff = struct.unpack_from(end + "QQQ", data, 24)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 54)
        ph_size, sh_size = 56, 64
    else:
        entry, phoff, shoff = struct.unpack_from(end + "III", data, 24)
        phentsize, phnum, shentsize, shnum = struct.unpack_from(end + "HHHH", data, 42)
        ph_size, sh_size = 32, 40
    width = 0xFFFFFFFFFFFFFFFF if is64 else M32
    if phnum > 128:
        return None
    ep = 0
    if phnum and entry:
        if phentsize != ph_size:
            return None
        segments = []
        for i in range(phnum):
            at = phoff + i * ph_size
            if at + ph_size > size:
                return None
            if is64:
                _t, _f, offset, vaddr, _p, _fs, memsz = struct.unpack_from(
                    end + "IIQQQQQ", data, at)
            else:
                _t, offset, vaddr, _p, _fs, memsz = struct.unpack_from(end + "IIIIII", data, at)
            segments.append((vaddr, memsz, offset))
        for vaddr, memsz, offset in segments:
            if vaddr <= entry and (vaddr + memsz) & width > entry:
                ep = (entry - vaddr + offset) & width & M32
                break
        else:
            return None
    if shnum > 256 or shentsize != sh_size:
        return None
    sections = []
    for i in range(shnum):
        at = shoff + i * sh_size
        if at + sh_size > size:
            return None
        if is64:
            _n, _t, _f, addr, offset, length = struct.unpack_from(end + "IIQQQQ", data, at)
        else:
            _n, _t, _f, addr, offset, length = struct.unpack_from(end + "IIIIII", data, at)
        sections.append(Section(addr & M32, 0, offset & M32, length & M32))
    return ExeInfo("elf", ep, sections)


# -- Mach-O ------------------------------------------------------------------------------------

_MACHO_MAGIC = {
    b"\xce\xfa\xed\xfe": ("<", False), b"\xcf\xfa\xed\xfe": ("<", True),
    b"\xfe\xed\xfa\xce": (">", False), b"\xfe\xed\xfa\xcf": (">", True),
}
_CPU_X86, _CPU_PPC, _CPU_PPC64 = 7, 18, 18 | 0x1000000
# Bytes of thread state ClamAV reads (its C structs, with natural padding) per CPU.
_THREAD_STATE = {_CPU_X86: 64, _CPU_PPC: 160, _CPU_PPC64: 312}


def _parse_macho(data) -> ExeInfo | None:
    """ClamAV's cli_scanmacho header pass: sections from the segments; an entry point only
    from a PowerPC thread command (x86, x86-64 and ARM files keep entry point 0)."""
    size = len(data)
    if size < 28 or bytes(data[:4]) not in _MACHO_MAGIC:
        return None
    end, is64 = _MACHO_MAGIC[bytes(data[:4])]
    cpu, = struct.unpack_from(end + "I", data, 4)
    ncmds, = struct.unpack_from(end + "I", data, 16)
    if not ncmds or ncmds > 1024:
        return None
    at = 32 if is64 else 28
    ep = 0
    sections: list[Section] = []
    state = _THREAD_STATE.get(cpu)
    for _ in range(ncmds):
        if at + 8 > size:
            return None
        cmd, cmdsize = struct.unpack_from(end + "II", data, at)
        at += 8
        if cmd == (0x19 if is64 else 0x01):  # LC_SEGMENT(_64)
            seg_size = 64 if is64 else 48
            if at + seg_size > size:
                return None
            nsects, = struct.unpack_from(end + "I", data, at + seg_size - 8)
            at += seg_size
            if nsects > 255:
                return None
            for _ in range(nsects):
                if is64:
                    if at + 80 > size:
                        return None
                    addr, length, offset, align = struct.unpack_from(end + "QQII", data, at + 32)
                    at += 80
                    align = 1 << (align & 31)  # the C shift as x86 performs it
                else:
                    if at + 68 > size:
                        return None
                    addr, length, offset, align = struct.unpack_from(end + "IIII", data, at + 32)
                    at += 68
                    if align >= 32:
                        return None
                    align = 1 << align
                vsz = length & M32
                rsz = (vsz + (align - vsz % align) % align) & M32
                sections.append(Section(addr & M32, vsz, offset, rsz))
        elif state is not None and cmd in (0x4, 0x5):  # LC_THREAD, LC_UNIXTHREAD
            at += 8
            if at + state > size:
                return None
            if cpu == _CPU_PPC:
                ep, = struct.unpack_from(end + "I", data, at)
            elif cpu == _CPU_PPC64:
                ep = struct.unpack_from(end + "Q", data, at)[0] & M32
            at += state
        elif cmdsize > 8:
            at += cmdsize - 8
    if ep and sections:
        for sect in sections:
            if sect.rva <= ep and (sect.rva + sect.vsz) & M32 > ep:
                ep = (ep - sect.rva + sect.raw) & M32
                break
        else:
            return None
    return ExeInfo("macho", ep, sections[:len(sections) & 0xFFFF])


__all__ = [
    "EXE_KINDS",
    "ExeInfo",
    "Offset",
    "PeScan",
    "Section",
    "exe_kind",
    "parse",
    "parse_offset",
    "parse_pe_scan",
    "resolve_offset",
]
