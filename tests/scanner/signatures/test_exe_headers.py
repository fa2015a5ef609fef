"""Executables read as ClamAV reads them: entry points, sections, version info, import tables.

The PE samples are real programs built with MinGW, the ELF one with gcc; big-endian ELF and the
Mach-O files are built byte by byte here. Other test modules import ``samples()``.
"""

from __future__ import annotations

import functools
import random
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from lmsav.scanner.signatures import exe_headers
from lmsav.scanner.signatures.exe_headers import (
    Offset,
    Section,
    parse,
    parse_offset,
    parse_pe_scan,
)

MINGW32, MINGW64 = "i686-w64-mingw32", "x86_64-w64-mingw32"

PROGRAM = r"""
#include <winsock2.h>
#include <windows.h>
#include <stdio.h>
int main(void) {
    WSADATA w;
    WSAStartup(0x202, &w);
    MessageBoxA(0, "lmsav", "sample", 0);
    printf("ticks %lu\n", GetTickCount());
    return 0;
}
"""

VERSION_RC = r"""
1 VERSIONINFO
FILEVERSION 1,2,3,4
PRODUCTVERSION 1,2,3,4
BEGIN
  BLOCK "StringFileInfo"
  BEGIN
    BLOCK "040904b0"
    BEGIN
      VALUE "CompanyName", "Lmsav Test Corp"
      VALUE "FileDescription", "Version resource sample"
      VALUE "Comments", ""
      VALUE "ProductName", "lmsav"
    END
  END
  BLOCK "VarFileInfo"
  BEGIN
    VALUE "Translation", 0x409, 1200
  END
END
"""


def have(tool: str) -> bool:
    return shutil.which(tool) is not None


needs_mingw = pytest.mark.skipif(
    not (have(f"{MINGW32}-gcc") and have(f"{MINGW64}-gcc") and have(f"{MINGW32}-windres")),
    reason="MinGW cross compilers not installed",
)
needs_gcc = pytest.mark.skipif(not have("gcc"), reason="gcc not installed")


def _run(*args: str, cwd: Path) -> None:
    subprocess.run(args, cwd=cwd, check=True, capture_output=True)


@functools.cache
def samples() -> dict[str, bytes]:
    """Every sample executable by name; compiled ones only when their compiler is installed."""
    out = {"elf32be": elf32_big_endian(), "macho_ppc": macho_ppc(), "macho_x64": macho_x86_64()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "p.c").write_text(PROGRAM)
        (work / "v.rc").write_text(VERSION_RC)
        if have(f"{MINGW32}-gcc") and have(f"{MINGW64}-gcc") and have(f"{MINGW32}-windres"):
            for bits, prefix in (("32", MINGW32), ("64", MINGW64)):
                _run(f"{prefix}-gcc", "-O1", "-o", f"pe{bits}.exe", "p.c", "-lws2_32", cwd=work)
                _run(f"{prefix}-windres", "v.rc", "-O", "coff", "-o", f"v{bits}.o", cwd=work)
                _run(f"{prefix}-gcc", "-O1", "-o", f"ver{bits}.exe", "p.c", f"v{bits}.o",
                     "-lws2_32", cwd=work)
                out[f"pe{bits}"] = (work / f"pe{bits}.exe").read_bytes()
                out[f"pe{bits}_version"] = (work / f"ver{bits}.exe").read_bytes()
            out["pe32_ordinals"] = import_by_ordinal(out["pe32"])
        if have("gcc"):
            (work / "e.c").write_text("int main(void) { return 42; }\n")
            _run("gcc", "-O1", "-o", "e.elf", "e.c", cwd=work)
            out["elf64"] = (work / "e.elf").read_bytes()
    return out


def sample(name: str) -> bytes:
    found = samples().get(name)
    if found is None:
        pytest.skip(f"sample {name} needs a compiler that is not installed")
    return found


# -- hand-made samples -------------------------------------------------------------------------

def elf32_big_endian() -> bytes:
    """A 32-bit big-endian ELF: one PT_LOAD at 0x400000, entry 0x400120, three sections."""
    rnd = random.Random(7)
    body = bytearray(rnd.randbytes(0x800))
    header = b"\x7fELF\x01\x02\x01" + b"\0" * 9 + struct.pack(
        ">HHIIIIIHHHHHH", 2, 8, 1, 0x400120, 52, 0x600, 0, 52, 32, 1, 40, 3, 0)
    body[:52] = header
    body[52:84] = struct.pack(">8I", 1, 0, 0x400000, 0x400000, 0x800, 0x800, 5, 0x1000)
    sections = [(0, 0, 0, 0), (0x400100, 0x100, 0x200, 1), (0x400400, 0x400, 0x100, 1)]
    for i, (addr, off, size, kind) in enumerate(sections):
        body[0x600 + 40 * i:0x628 + 40 * i] = struct.pack(
            ">10I", 0, kind, 0, addr, off, size, 0, 0, 4, 0)
    return bytes(body)


def macho_ppc() -> bytes:
    """A 32-bit big-endian PowerPC Mach-O whose thread command starts at 0x1220 (file 0x220)."""
    rnd = random.Random(8)
    body = bytearray(rnd.randbytes(0x600))
    segment = struct.pack(">16sIIIIIIII", b"__TEXT", 0x1000, 0x2000, 0, 0x600, 7, 5, 2, 0)
    text = struct.pack(">16s16sIIIIIIIII", b"__text", b"__TEXT", 0x1200, 0x100, 0x200, 4,
                       0, 0, 0, 0, 0)
    data = struct.pack(">16s16sIIIIIIIII", b"__data", b"__TEXT", 0x1400, 0x83, 0x400, 3,
                       0, 0, 0, 0, 0)
    seg_cmd = struct.pack(">II", 1, 8 + len(segment) + 2 * 68) + segment + text + data
    state = struct.pack(">40I", 0x1220, *([0] * 39))
    thread = struct.pack(">IIII", 5, 16 + len(state), 1, 40) + state
    header = struct.pack(">IIIIIII", 0xFEEDFACE, 18, 0, 2, 2, len(seg_cmd) + len(thread), 0)
    commands = header + seg_cmd + thread
    body[:len(commands)] = commands
    return bytes(body)


def macho_x86_64() -> bytes:
    """A little-endian x86-64 Mach-O with LC_MAIN: ClamAV leaves its entry point at 0."""
    rnd = random.Random(9)
    body = bytearray(rnd.randbytes(0x900))
    segment = struct.pack("<16sQQQQIIII", b"__TEXT", 0x100000000, 0x1000, 0, 0x900, 7, 5, 2, 0)
    text = struct.pack("<16s16sQQIIIIIIII", b"__text", b"__TEXT", 0x100000300, 0x1F0, 0x300,
                       4, 0, 0, 0, 0, 0, 0)
    cstr = struct.pack("<16s16sQQIIIIIIII", b"__cstring", b"__TEXT", 0x100000500, 0x21, 0x500,
                       0, 0, 0, 0, 0, 0, 0)
    seg_cmd = struct.pack("<II", 0x19, 8 + len(segment) + 2 * 80) + segment + text + cstr
    main = struct.pack("<IIQQ", 0x80000028, 24, 0x300, 0)
    header = struct.pack("<IIIIIIII", 0xFEEDFACF, 0x01000007, 3, 2, 2,
                         len(seg_cmd) + len(main), 0, 0)
    commands = header + seg_cmd + main
    body[:len(commands)] = commands
    return bytes(body)


def import_by_ordinal(pe32: bytes) -> bytes:
    """``pe32`` with its WS2_32 and first KERNEL32 imports turned into imports by ordinal
    (WSAStartup is ordinal 115), in both thunk arrays."""
    import pefile

    pe = pefile.PE(data=pe32)
    data = bytearray(pe32)
    for entry in pe.DIRECTORY_ENTRY_IMPORT:
        dll = entry.dll.lower()
        if dll not in (b"ws2_32.dll", b"kernel32.dll"):
            continue
        for imp in entry.imports[:1]:
            ordinal = 115 if dll == b"ws2_32.dll" else 7
            for rva in (entry.struct.OriginalFirstThunk, entry.struct.FirstThunk):
                at = pe.get_offset_from_rva(rva)
                struct.pack_into("<I", data, at, 0x80000000 | ordinal)
            assert imp.name
    return bytes(data)


# -- PE ----------------------------------------------------------------------------------------

@needs_mingw
@pytest.mark.parametrize("name", ["pe32", "pe64", "pe32_version", "pe64_version"])
def test_pe_entry_point_and_sections_agree_with_pefile(name):
    import pefile

    data = sample(name)
    exe = parse(data, "pe")
    pe = pefile.PE(data=data, fast_load=True)
    assert exe.kind == "pe"
    assert exe.entry_point == pe.get_offset_from_rva(pe.OPTIONAL_HEADER.AddressOfEntryPoint)
    falign = pe.OPTIONAL_HEADER.FileAlignment
    expected = []
    for s in pe.sections:
        rsz = -(-s.SizeOfRawData // falign) * falign
        rsz = min(rsz, len(data) - s.PointerToRawData) if s.SizeOfRawData else 0
        expected.append((s.VirtualAddress, s.PointerToRawData, rsz))
    assert [(s.rva, s.raw, s.rsz) for s in exe.sections] == expected


@needs_mingw
def test_msdos_type_is_parsed_as_pe_too():
    data = sample("pe32")
    assert parse(data, "msdos") == parse(data, "pe")
    assert parse(data, "binary") is None


@needs_mingw
def test_version_info_positions_are_the_string_keys_with_values():
    data = sample("pe64_version")
    exe = parse(data, "pe")
    keys = {bytes(data[p:p + 40]).decode("utf-16-le").split("\0")[0] for p in exe.version_info}
    # windres pads the empty "Comments" value, so ClamAV counts it as a value too.
    assert keys == {"CompanyName", "FileDescription", "Comments", "ProductName"}
    assert parse(sample("pe64"), "pe").version_info == frozenset()


@needs_mingw
def test_import_table_string_of_a_pe32():
    pe = parse_pe_scan(sample("pe32"))
    table = pe.import_table()
    names = table.split(b",")
    assert b"ws2_32.wsastartup" in names and b"user32.messageboxa" in names
    assert b"kernel32.gettickcount" in names
    assert table == table.lower() and not table.startswith(b",")


@needs_mingw
def test_import_by_ordinal_is_named_from_clamav_tables():
    names = parse_pe_scan(sample("pe32_ordinals")).import_table().split(b",")
    assert b"ws2_32.wsastartup" in names  # ordinal 115 of ws2_32.dll
    assert any(n.startswith(b"kernel32.ord7") for n in names)


@needs_mingw
def test_pe32_plus_has_no_import_hash():
    # ClamAV 1.4's PE scanner returns before the import table for PE32+ files.
    assert parse_pe_scan(sample("pe64")).import_table() is None


@needs_mingw
def test_section_digests_are_of_the_raw_bytes():
    import hashlib

    data = sample("pe32")
    pe = parse_pe_scan(data)
    for index, size in pe.hashed_sizes():
        sect = pe.sections[index]
        raw = data[sect.raw:sect.raw + size]
        assert pe.section_digest(index, "sha1") == hashlib.sha1(raw).digest()


def test_sections_past_the_end_of_file_lose_their_size_or_are_removed():
    data = bytearray(_minimal_pe(nsections=3))
    # Section 2 starts past the end of the file.
    struct.pack_into("<I", data, 0x178 + 40 * 2 + 20, 0x10000)
    data = bytes(data)
    assert [s.rsz for s in parse(data, "pe").sections] == [0x200, 0x200, 0]
    assert len(parse_pe_scan(data).sections) == 2


def test_truncated_last_section_is_cut_at_the_end_of_file():
    data = _minimal_pe(nsections=2)[:0x500]
    assert [(s.raw, s.rsz) for s in parse(data, "pe").sections] == [(0x200, 0x200), (0x400, 0x100)]


def test_entry_point_in_the_headers_maps_to_itself():
    data = bytearray(_minimal_pe(nsections=1))
    struct.pack_into("<I", data, 0x98 + 16, 0x80)  # AddressOfEntryPoint inside the headers
    assert parse(bytes(data), "pe").entry_point == 0x80


def test_entry_point_outside_every_section_fails_like_clamav():
    data = bytearray(_minimal_pe(nsections=1))
    struct.pack_into("<I", data, 0x98 + 16, 0x9000)
    assert parse(bytes(data), "pe") is None


def _minimal_pe(nsections: int) -> bytes:
    """A PE32 with ``nsections`` 0x200-byte sections at file 0x200, 0x400 … (RVA 0x1000 …)."""
    size = 0x200 * (nsections + 1)
    data = bytearray(size)
    data[:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    struct.pack_into("<4sHHIIIHH", data, 0x80, b"PE\0\0", 0x14C, nsections, 0, 0, 0, 0xE0, 0x102)
    opt = 0x98
    struct.pack_into("<H", data, opt, 0x10B)
    struct.pack_into("<I", data, opt + 16, 0x1010)  # entry point RVA
    struct.pack_into("<II", data, opt + 32, 0x1000, 0x200)  # section / file alignment
    struct.pack_into("<I", data, opt + 60, 0x200)  # SizeOfHeaders
    struct.pack_into("<I", data, opt + 92, 16)  # NumberOfRvaAndSizes
    for i in range(nsections):
        struct.pack_into("<8sIIII12xI", data, 0x178 + 40 * i, b".s%d" % i, 0x1000,
                         0x1000 * (i + 1), 0x200, 0x200 * (i + 1), 0x60000020)
    return bytes(data)


def test_minimal_pe_entry_point():
    exe = parse(_minimal_pe(nsections=2), "pe")
    assert exe.entry_point == 0x210
    assert exe.sections == [Section(0x1000, 0x1000, 0x200, 0x200),
                            Section(0x2000, 0x1000, 0x400, 0x200)]


# -- ELF ---------------------------------------------------------------------------------------

@needs_gcc
def test_elf64_entry_point_and_sections_agree_with_pyelftools():
    import io

    from elftools.elf.elffile import ELFFile

    data = sample("elf64")
    exe = parse(data, "elf")
    elf = ELFFile(io.BytesIO(data))
    entry = elf.header.e_entry
    load = next(s for s in elf.iter_segments()
                if s["p_vaddr"] <= entry < s["p_vaddr"] + s["p_memsz"])
    assert exe.entry_point == entry - load["p_vaddr"] + load["p_offset"]
    assert [(s.rva, s.raw, s.rsz) for s in exe.sections] == [
        (s["sh_addr"], s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()]


def test_big_endian_elf32():
    exe = parse(elf32_big_endian(), "elf")
    assert exe.entry_point == 0x120
    assert exe.sections == [Section(0, 0, 0, 0), Section(0x400100, 0, 0x100, 0x200),
                            Section(0x400400, 0, 0x400, 0x100)]


def test_elf_with_too_many_sections_fails_like_clamav():
    data = bytearray(elf32_big_endian())
    struct.pack_into(">H", data, 48, 257)
    assert parse(bytes(data), "elf") is None


# -- Mach-O ------------------------------------------------------------------------------------

def test_macho_ppc_entry_point_from_its_thread_command():
    exe = parse(macho_ppc(), "macho")
    assert exe.entry_point == 0x220
    # Raw sizes are the section sizes rounded up to their alignment (2^4, 2^3).
    assert exe.sections == [Section(0x1200, 0x100, 0x200, 0x100),
                            Section(0x1400, 0x83, 0x400, 0x88)]


def test_macho_x86_64_keeps_entry_point_zero():
    exe = parse(macho_x86_64(), "macho")
    assert exe.entry_point == 0
    assert [(s.raw, s.rsz) for s in exe.sections] == [(0x300, 0x1F0), (0x500, 0x21)]


def test_universal_binary_and_java_class_are_not_parsed():
    fat = b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + bytes(64)
    java = b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + bytes(64)
    assert parse(fat, "macho") is None and exe_headers.exe_kind(fat, "macho") == "macho"
    assert parse(java, "macho") is None and exe_headers.exe_kind(java, "macho") is None


# -- offsets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, target, expect", [
    ("*", 0, Offset("*")),
    ("12", 0, Offset("n", 12)),
    ("12,5", 0, Offset("n", 12, 5)),
    ("", 0, Offset("n", 0)),  # ClamAV reads an empty offset as 0
    ("EOF-10,3", 0, Offset("EOF-", 10, 3)),
    ("EP+4", 1, Offset("EP+", 4)),
    ("EP-4,9", 6, Offset("EP-", 4, 9)),
    ("S2+16,4", 9, Offset("Sx+", 16, 4, 2)),
    ("SL+0", 1, Offset("SL+", 0)),
    ("SE3,100", 1, Offset("SE", 0, 100, 3)),
    ("VI", 1, Offset("VI")),
    ("$3$", 0, Offset("$", 3)),
])
def test_parse_offset(text, target, expect):
    assert parse_offset(text, target) == expect


@pytest.mark.parametrize("text, target, message", [
    ("EP+4", 0, "needs target type 1 (PE), 6 (ELF) or 9 (Mach-O)"),
    ("VI", 3, "needs target type"),
    ("EP+x", 1, "bad offset"),
    ("S1-4", 1, "bad offset"),
    ("SEx", 1, "bad section number"),
    ("10,x", 0, "bad offset shift"),
    ("$40$", 0, "bad macro offset"),
    ("EOF+4", 0, "bad offset"),
    ("1" * 65, 0, "longer than 64"),
])
def test_offsets_clamav_refuses(text, target, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_offset(text, target)


def test_resolve_offset_windows():
    exe = exe_headers.ExeInfo("pe", 0x400, [Section(0x1000, 0x1000, 0x400, 0x200),
                                           Section(0x2000, 0x1000, 0x600, 0x300)])
    resolve = exe_headers.resolve_offset
    size = 0x1000
    assert resolve(parse_offset("EP+16,4", 1), size, exe) == (0x410, 4)
    assert resolve(parse_offset("EP-16", 1), size, exe) == (0x3F0, 0)
    assert resolve(parse_offset("EP-2000", 1), size, exe) is None  # before the file
    assert resolve(parse_offset("S1+8", 1), size, exe) == (0x608, 0)
    assert resolve(parse_offset("S2+8", 1), size, exe) is None  # no such section
    assert resolve(parse_offset("SL+1,2", 1), size, exe) == (0x601, 2)
    assert resolve(parse_offset("SE0", 1), size, exe) == (0x400, 0x200)
    assert resolve(parse_offset("SE1,10", 1), size, exe) == (0x600, 0x30A)
    assert resolve(parse_offset("EOF-16,2", 0), size, exe) == (0xFF0, 2)
    assert resolve(parse_offset("EOF-16", 0), size, None, exe_failed=True) is None
    assert resolve(parse_offset("EP+0", 1), size, None) is None
    assert resolve(parse_offset("EP+5000", 1), size, exe) is None  # past the end of file


# -- garbage -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pe32", "pe64_version", "elf64", "elf32be", "macho_ppc",
                                  "macho_x64", "pe32_ordinals"])
def test_mutated_headers_never_raise(name):
    data = sample(name)
    rnd = random.Random(name)
    for _ in range(300):
        buf = bytearray(data[:rnd.choice([64, 300, 1500, len(data)])])
        for _ in range(rnd.randint(1, 8)):
            at = rnd.randrange(min(len(buf), 1024))
            buf[at] = rnd.randrange(256)
        for kind in ("pe", "elf", "macho", "msdos"):
            exe = parse(bytes(buf), kind)
            assert exe is None or isinstance(exe.sections, list)
        scan = parse_pe_scan(bytes(buf))
        if scan is not None:
            scan.import_table()
            for index, _size in scan.hashed_sizes():
                scan.section_digest(index, "md5")


def test_hostile_counts_finish():
    data = bytearray(_minimal_pe(nsections=1)) + bytes(65535 * 40)
    struct.pack_into("<H", data, 0x86, 0xFFFF)  # 65535 section headers, all empty
    exe = parse(bytes(data), "pe")
    assert exe is not None and len(exe.sections) == 65535
    assert parse(b"MZ" + b"\xff" * 100, "pe") is None
    assert parse(b"\x7fELF\x02\x01" + b"\xff" * 58, "elf") is None
    assert parse(b"\xcf\xfa\xed\xfe" + b"\xff" * 60, "macho") is None
