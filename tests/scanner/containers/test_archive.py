"""Archives built with the real tools are exploded into their members, with their real names."""

from __future__ import annotations

import os
import struct
import zipfile
import zlib

import pytest

from lmsav.scanner.containers import Corrupted, Encrypted, handler_for
from lmsav.scanner.containers.archive import ArchiveHandler
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import (
    explode_with, from_bytes, from_file, run, tree, zip_bytes,
)

FILES = {"a.txt": b"hello archive\n", "sub/b.bin": bytes(range(256)) * 20}


def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(ArchiveHandler(), obj, limits)


def members(obj: ScanObject) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(obj)}


def rar4_stored(files: dict[str, bytes], encrypted: bool = False) -> bytes:
    """A RAR 4 archive with "store" members, built by hand (no rar tool in Debian)."""

    def block(head_type: int, flags: int, body: bytes, data: bytes = b"") -> bytes:
        header = struct.pack("<BHH", head_type, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(header) & 0xFFFF) + header + data

    out = b"Rar!\x1a\x07\x00" + block(0x73, 0, b"\x00" * 6)  # marker, main archive header
    for name, data in files.items():
        raw_name = name.encode()
        file_flags = 0x8000 | (0x0004 if encrypted else 0)  # LONG_BLOCK, PASSWORD
        body = struct.pack(
            "<IIBIIBBHI",
            len(data), len(data), 3, zlib.crc32(data), 0x5A210000, 20, 0x30, len(raw_name),
            0o100644,
        ) + raw_name
        out += block(0x74, file_flags, body, data)
    return out + block(0x7B, 0x4000, b"")


# -- formats -----------------------------------------------------------------------------------


def test_handler_is_registered_for_every_archive_type():
    for ftype in ("zip", "7z", "rar", "tar", "cpio", "cab", "iso9660", "ar"):
        assert isinstance(handler_for(ftype), ArchiveHandler)


def test_zip_from_python_zipfile(tmp_path):
    path = tmp_path / "x.zip"
    path.write_bytes(zip_bytes(FILES))
    assert members(from_file(path)) == FILES
    assert members(from_bytes(path)) == FILES


def test_7z(tmp_path):
    src = tree(tmp_path, FILES)
    run("7z", "a", "-bd", str(tmp_path / "x.7z"), ".", cwd=src)
    got = members(from_file(tmp_path / "x.7z"))
    assert got == FILES


def test_tar_ustar_skips_directories(tmp_path):
    src = tree(tmp_path, FILES)
    run("bsdtar", "-cf", str(tmp_path / "x.tar"), "--format=ustar", "a.txt", "sub", cwd=src)
    # "sub/" is listed as a directory entry; only the regular files come back.
    assert members(from_bytes(tmp_path / "x.tar")) == FILES


def test_tar_links_are_scanned_as_their_target_and_devices_listed(tmp_path):
    src = tree(tmp_path, FILES)
    (src / "link").symlink_to("/etc/passwd")
    os.mkfifo(src / "pipe")
    run("bsdtar", "-cf", str(tmp_path / "x.tar"), "a.txt", "link", "pipe", cwd=src)
    got = {c.name: c for c in explode(from_file(tmp_path / "x.tar"))}
    assert got["a.txt"].data == FILES["a.txt"]
    # The link's target is its only content, and is never opened.
    assert got["link"].data == b"/etc/passwd"
    # A fifo holds no data: it is listed, clean, with the reason it was not scanned.
    assert (got["pipe"].status, got["pipe"].reason) == (Status.CLEAN, "not scanned: fifo")


def test_cpio_newc(tmp_path):
    src = tree(tmp_path, FILES)
    run("bsdtar", "-cf", str(tmp_path / "x.cpio"), "--format=newc", "a.txt", "sub/b.bin", cwd=src)
    assert members(from_file(tmp_path / "x.cpio")) == FILES


def test_iso9660(tmp_path):
    src = tree(tmp_path, FILES)
    run("genisoimage", "-quiet", "-R", "-o", str(tmp_path / "x.iso"), str(src))
    got = members(from_file(tmp_path / "x.iso"))
    assert got == FILES


def test_ar(tmp_path):
    src = tree(tmp_path, {"one.o": b"first member", "two.o": b"second member\n"})
    run("ar", "rc", str(tmp_path / "x.a"), "one.o", "two.o", cwd=src)
    assert members(from_bytes(tmp_path / "x.a")) == {
        "one.o": b"first member", "two.o": b"second member\n"
    }


def test_cab_from_gcab(tmp_path):
    src = tree(tmp_path, FILES)
    run("gcab", "-c", "-z", str(tmp_path / "x.cab"), "a.txt", "sub/b.bin", cwd=src)
    got = members(from_file(tmp_path / "x.cab"))
    # cab stores DOS-style paths; libarchive gives them back with "/".
    assert got == FILES


def test_rar4_stored_members():
    data = rar4_stored({"readme.txt": b"plain rar text\n", "dir/e.com": EICAR})
    assert members(ScanObject("x.rar", data=data)) == {
        "readme.txt": b"plain rar text\n", "dir/e.com": EICAR
    }


# -- names are labels ---------------------------------------------------------------------------


def test_traversal_names_are_labels_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = zip_bytes({"../../etc/passwd": b"not really", "/abs/evil.sh": b"#!/bin/sh\n"})
    ctx = Context(Limits(), tmp_root=str(tmp_path))
    got = {c.name: c.data for c in ArchiveHandler().explode(ScanObject("t.zip", data=data), ctx)}
    assert got == {"../../etc/passwd": b"not really", "/abs/evil.sh": b"#!/bin/sh\n"}
    # Small members stay in memory: nothing appeared in the cwd, above it, or in the temp root.
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    assert not (tmp_path.parent / "etc").exists()


# -- encryption ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["7z", "zipcrypto", "zipaes"])
def test_encrypted_members_are_protected_and_listed(tmp_path, kind):
    src = tree(tmp_path, FILES)
    out = tmp_path / ("x.7z" if kind == "7z" else "x.zip")
    extra = {"7z": [], "zipcrypto": ["-tzip"], "zipaes": ["-tzip", "-mem=AES256"]}[kind]
    run("7z", "a", "-bd", "-psecret", *extra, str(out), ".", cwd=src)
    got = explode(from_file(out))
    assert sorted(c.name for c in got) == sorted(FILES)
    assert all(c.status == Status.PROTECTED and c.reason == "encrypted" for c in got)
    assert all(c.data is None for c in got)


def test_zip_with_one_encrypted_member_still_yields_the_others(tmp_path):
    src = tree(tmp_path, {"secret.txt": b"hidden"})
    out = tmp_path / "mixed.zip"
    run("7z", "a", "-bd", "-tzip", "-psecret", str(out), "secret.txt", cwd=src)
    with zipfile.ZipFile(out, "a") as zf:
        zf.writestr("plain.txt", b"visible")
    got = {c.name: c for c in explode(from_file(out))}
    assert got["secret.txt"].status == Status.PROTECTED
    assert got["plain.txt"].status is None and got["plain.txt"].data == b"visible"


def test_7z_with_encrypted_headers_raises_encrypted(tmp_path):
    src = tree(tmp_path, FILES)
    out = tmp_path / "hdr.7z"
    run("7z", "a", "-bd", "-psecret", "-mhe=on", str(out), ".", cwd=src)
    with pytest.raises(Encrypted):
        explode(from_file(out))


def test_rar4_encrypted_member_is_protected():
    data = rar4_stored({"locked.bin": b"x" * 32}, encrypted=True)
    got = explode(ScanObject("x.rar", data=data))
    assert [(c.name, c.status, c.reason) for c in got] == [
        ("locked.bin", Status.PROTECTED, "encrypted")
    ]


# -- damage -------------------------------------------------------------------------------------


def test_truncated_zip_yields_what_it_can_then_corrupted(tmp_path):
    files = {"first.txt": b"first" * 10, "second.bin": bytes(range(256)) * 400}
    data = zip_bytes(files)
    cut = data[: data.index(b"second.bin") + 200]  # inside the second member's data
    ctx = Context(Limits())
    got = []
    with pytest.raises(Corrupted) as err:
        for child in ArchiveHandler().explode(ScanObject("t.zip", data=cut), ctx):
            got.append(child)
    assert got[0].name == "first.txt" and got[0].data == files["first.txt"]
    # What was read of the cut member is yielded (and scanned) before the Corrupted; a member
    # of which nothing could be read comes back CORRUPTED itself.
    assert all(files[c.name].startswith(c.data) if c.data else c.status == Status.CORRUPTED
               for c in got)
    assert str(err.value)  # libarchive's own words, e.g. "ZIP decompression failed (-5)"


def test_truncated_tar_is_corrupted_after_its_intact_members(tmp_path):
    src = tree(tmp_path, {"a.txt": b"A" * 100, "big.bin": b"B" * 10000})
    run("bsdtar", "-cf", str(tmp_path / "x.tar"), "a.txt", "big.bin", cwd=src)
    data = (tmp_path / "x.tar").read_bytes()[:3000]
    got = []
    with pytest.raises(Corrupted):
        for child in ArchiveHandler().explode(ScanObject("x.tar", data=data), Context(Limits())):
            got.append(child)
    assert got[0].name == "a.txt" and got[0].data == b"A" * 100
    assert all((b"B" * 10000).startswith(c.data) if c.data else c.status == Status.CORRUPTED
               for c in got[1:])


def test_truncated_7z_is_corrupted(tmp_path):
    src = tree(tmp_path, FILES)
    run("7z", "a", "-bd", str(tmp_path / "x.7z"), ".", cwd=src)
    data = (tmp_path / "x.7z").read_bytes()
    with pytest.raises(Corrupted):
        explode(ScanObject("x.7z", data=data[: len(data) // 2]))


def test_archive_magic_with_garbage_is_corrupted():
    with pytest.raises(Corrupted):
        explode(ScanObject("bad.7z", data=b"7z\xbc\xaf\x27\x1c" + b"\x00\x04" + b"\xff" * 200))


def test_text_is_not_opened_as_an_archive():
    # Never libarchive's "all": mtree would read arbitrary text and open the files it names.
    with pytest.raises(Corrupted):
        explode(ScanObject("x.zip", data=b"/etc/passwd type=file contents=/etc/passwd\n"))


# -- limits through the context -----------------------------------------------------------------


def test_zip_bomb_member_hits_compression_ratio_limit():
    data = zip_bytes({"zeros.bin": b"\0" * (20 << 20), "small.txt": b"ok"})
    got = {c.name: c for c in explode(ScanObject("bomb.zip", data=data),
                                      Limits(max_compression_ratio=100))}
    assert got["zeros.bin"].status == Status.ERROR
    assert got["zeros.bin"].reason == "limit: compression ratio 100"
    assert got["small.txt"].data == b"ok"


def test_member_over_file_size_limit_is_refused_by_declared_size():
    data = zip_bytes({"big.bin": b"x" * 5000, "fine.txt": b"fine"})
    got = {c.name: c for c in explode(ScanObject("z.zip", data=data), Limits(max_file_size=4096))}
    assert got["big.bin"].reason == "limit: filesize 4096"
    assert got["fine.txt"].data == b"fine"


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_in_7z_inside_zip(engine, tmp_path):
    src = tree(tmp_path, {"docs/eicar.com": EICAR, "readme.txt": b"clean"})
    run("7z", "a", "-bd", str(tmp_path / "inner.7z"), ".", cwd=src)
    outer = zip_bytes({"inner.7z": (tmp_path / "inner.7z").read_bytes()})
    verdict = engine.scan_bytes(outer, "outer.zip")
    assert verdict.status == Status.INFECTED
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("outer.zip//inner.7z//docs/eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_marks_encrypted_zip_protected(engine, tmp_path):
    src = tree(tmp_path, {"eicar.com": EICAR})
    run("7z", "a", "-bd", "-tzip", "-psecret", str(tmp_path / "p.zip"), ".", cwd=src)
    verdict = engine.scan_path(tmp_path / "p.zip", "p.zip")
    assert verdict.status == Status.PROTECTED
    finding = [r for r in verdict.findings() if r.path == "p.zip//eicar.com"]
    assert finding and finding[0].reason == "encrypted"


def test_engine_marks_header_encrypted_7z_protected(engine, tmp_path):
    src = tree(tmp_path, {"eicar.com": EICAR})
    run("7z", "a", "-bd", "-psecret", "-mhe=on", str(tmp_path / "h.7z"), ".", cwd=src)
    verdict = engine.scan_path(tmp_path / "h.7z", "h.7z")
    assert verdict.status == Status.PROTECTED
    assert verdict.root.reason.startswith("encrypted")


def test_engine_reports_truncated_archive_corrupted_and_still_detects(engine):
    data = zip_bytes({"eicar.com": EICAR, "pad.bin": bytes(range(256)) * 400})
    cut = data[: data.index(b"pad.bin") + 100]
    verdict = engine.scan_bytes(cut, "cut.zip")
    assert verdict.status == Status.INFECTED  # worst wins; the damage is still recorded
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.root.reason.startswith("corrupted")
    assert [p for p, _ in verdict.threats] == ["cut.zip//eicar.com"]


def test_engine_finds_eicar_in_rar(engine):
    verdict = engine.scan_bytes(rar4_stored({"e.com": EICAR}), "x.rar")
    assert [(p, t.name) for p, t in verdict.threats] == [("x.rar//e.com", "Eicar-Test-Signature")]
