"""Archives appended to an executable stub (self-extractors) are found and scanned as archives."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lmsav.scanner.containers.sfx import SfxHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import clamscan_found, explode_with, run, zip_bytes
from tests.scanner.containers.test_archive import rar4_stored


def pe_stub(code: bytes = b"\xc3" * 0x200) -> bytes:
    """A minimal PE32 console program: DOS header, PE headers, one .text section of ``code``.

    Layout per the Microsoft PE/COFF specification: e_lfanew at 0x3C, COFF header, a 0xE0-byte
    optional header, one 40-byte section header; headers padded to FileAlignment (0x200).
    """
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<HH", dos, 2, 0x90, 3)
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, 1, 0, 0, 0, 0xE0, 0x0102)
    opt = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", opt, 0, 0x10B, 1, 0, len(code), 0, 0, 0x1000, 0x1000, 0x1000)
    struct.pack_into(
        "<IIIHHHHHHIIIIHH", opt, 28,
        0x400000, 0x1000, 0x200, 4, 0, 0, 0, 4, 0, 0, 0x2000, 0x200, 0, 3, 0,
    )
    struct.pack_into("<I", opt, 92, 16)  # NumberOfRvaAndSizes
    section = struct.pack(
        "<8sIIIIIIHHI", b".text", len(code), 0x1000, len(code), 0x200, 0, 0, 0, 0, 0x60000020
    )
    return (bytes(dos) + coff + bytes(opt) + section).ljust(0x200, b"\0") + code


def dos_stub(image: int = 1000) -> bytes:
    """An MS-DOS MZ program whose header says its image is ``image`` bytes (pages + last page)."""
    head = bytearray(0x40)
    head[0:2] = b"MZ"
    struct.pack_into("<HH", head, 2, image % 512, (image + 511) // 512)
    struct.pack_into("<H", head, 8, 4)  # header paragraphs
    return bytes(head) + b"\x90" * (image - 0x40)


def archive(tmp_path: Path, kind: str, files: dict[str, bytes]) -> bytes:
    """An archive of ``files`` made by the real tool for ``kind``."""
    if kind == "rar":
        return rar4_stored(files)  # no RAR writer in Debian; test_archive builds one by hand
    src = tmp_path / f"src-{kind}"
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    out = tmp_path / f"a.{kind}"
    if kind == "zip":
        run("zip", "-q", "-r", str(out), ".", cwd=src)
    elif kind == "7z":
        run("7z", "a", "-bd", str(out), ".", cwd=src)
    elif kind == "cab":
        run("gcab", "-c", "-z", str(out), *files, cwd=src)
    return out.read_bytes()


def explode(data: bytes, name: str = "setup.exe") -> list:
    return explode_with(SfxHandler(), ScanObject(name, data=data))


# -- finding the archive ------------------------------------------------------------------------


def test_stub_is_a_pe():
    assert sniff(pe_stub()) == "pe" and sniff(dos_stub()) == "msdos"


@pytest.mark.parametrize("kind", ["zip", "rar", "7z", "cab"])
def test_archive_after_pe_is_yielded_from_its_start(tmp_path, kind):
    arc = archive(tmp_path, kind, {"eicar.com": EICAR})
    got = explode(pe_stub() + arc)
    assert [(c.name, c.data) for c in got] == [(f"sfx.{kind}", arc)]


def test_archive_after_dos_program_is_found():
    arc = zip_bytes({"eicar.com": EICAR})
    assert [(c.name, c.data) for c in explode(dos_stub() + arc)] == [("sfx.zip", arc)]


def test_executables_without_an_appended_archive_have_no_members():
    assert explode(pe_stub()) == []
    assert explode(pe_stub() + b"\0" * 4096 + b"just a resource blob") == []
    assert explode(dos_stub()) == []


def test_archive_magic_inside_the_image_is_not_an_sfx():
    # A zip header inside .text is code or data of the program, not an appended archive.
    code = (b"PK\x03\x04" + b"\0" * 60).ljust(0x200, b"\xc3")
    assert explode(pe_stub(code)) == []


def test_unparseable_pe_headers_fall_back_to_searching_after_the_dos_header():
    broken = bytearray(pe_stub())
    struct.pack_into("<H", broken, 0x40 + 6, 0xFFFF)  # 65535 sections: table beyond the file
    arc = zip_bytes({"a.txt": b"a"})
    assert [c.name for c in explode(bytes(broken) + arc)] == ["sfx.zip"]


def test_sfx_from_a_file_on_disk(tmp_path):
    arc = zip_bytes({"eicar.com": EICAR})
    path = tmp_path / "setup.exe"
    path.write_bytes(pe_stub() + arc)
    ctx = Context(Limits())
    got = list(SfxHandler().explode(ScanObject.from_path(path), ctx))
    ctx.cleanup()
    assert [(c.name, c.data) for c in got] == [("sfx.zip", arc)]


# -- through the engine -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["zip", "rar", "7z", "cab"])
def test_engine_finds_eicar_in_sfx(engine, tmp_path, kind):
    exe = pe_stub() + archive(tmp_path, kind, {"eicar.com": EICAR, "readme.txt": b"clean"})
    verdict = engine.scan_bytes(exe, "setup.exe")
    assert [(p, t.name) for p, t in verdict.threats] == [
        (f"setup.exe//sfx.{kind}//eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_reads_zip_sfx_with_offsets_adjusted_by_zip_A(engine, tmp_path):
    # `zip -A` rewrites the central directory's offsets relative to the start of the .exe.
    path = tmp_path / "setup.exe"
    path.write_bytes(pe_stub() + archive(tmp_path, "zip", {"eicar.com": EICAR, "b.txt": b"b"}))
    run("zip", "-q", "-A", str(path))
    verdict = engine.scan_path(path, "setup.exe")
    assert [p for p, _ in verdict.threats] == ["setup.exe//sfx.zip//eicar.com"]
    assert verdict.root.children[0].status == Status.CLEAN


def test_engine_on_a_plain_pe_is_clean_with_no_children(engine):
    verdict = engine.scan_bytes(pe_stub(), "plain.exe")
    assert verdict.status == Status.CLEAN and verdict.root.children == []


# -- the real clamscan agrees -------------------------------------------------------------------


@pytest.mark.integration
def test_clamscan_agrees_on_sfx(engine, tmp_path):
    # RAR is left out: Debian's clamscan has no unrar (libclamunrar is not packaged), so it
    # reports every RAR, SFX or not, as OK.
    samples = tmp_path / "samples"
    samples.mkdir()
    for kind in ("zip", "7z", "cab"):
        arc = archive(tmp_path, kind, {"eicar.com": EICAR})
        (samples / f"{kind}-sfx.exe").write_bytes(pe_stub() + arc)
    (samples / "dos-sfx.exe").write_bytes(dos_stub() + zip_bytes({"eicar.com": EICAR}))
    (samples / "plain.exe").write_bytes(pe_stub() + b"\0" * 1000)
    files = sorted(samples.iterdir())
    ours = {p.name: engine.scan_path(p, p.name).status == Status.INFECTED for p in files}
    assert ours == clamscan_found(*files)
    assert ours == {p.name: p.name != "plain.exe" for p in files}
