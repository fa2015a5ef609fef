"""ARJ, CHM and deflate64 zips built with real tools are exploded by 7z inside the scan's dir."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest

import lmsav.scanner.containers
from lmsav.scanner.containers import Corrupted, Encrypted, Unsupported
from lmsav.scanner.containers.archive import ArchiveHandler
from lmsav.scanner.containers.sevenzip import SevenZipHandler, explode_7z, zip_needs_7z
from lmsav.scanner.limits import Context, LimitExceeded, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import (
    clamscan_found, explode_with, from_bytes, from_file, run, tree,
)

FILES = {"a.txt": b"hello arj\n", "sub/b.bin": bytes(range(256)) * 20}
# Compressible text, so 7z really uses the method asked for instead of storing.
WORDS = b" ".join([b"alpha", b"beta", b"gamma", b"delta"] * 20000)


def arj(tmp_path: Path, files: dict[str, bytes] = FILES, *switches: str) -> Path:
    src = tree(tmp_path, files)
    out = tmp_path / "x.arj"
    run("arj", "a", "-r", *switches, str(out), cwd=src)
    return out


def explode(obj: ScanObject, limits: Limits = Limits(), tmp_root: str | None = None) -> list:
    return explode_with(SevenZipHandler(), obj, limits, tmp_root)


def members(obj: ScanObject) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(obj)}


def rename_arj_member(data: bytes, old: bytes, new: bytes) -> bytes:
    """Rename a member in place and fix its header CRC (ARJ: CRC-32 of the basic header)."""
    assert len(old) == len(new)
    out = bytearray(data)
    at = out.find(old)
    assert at > 0
    out[at:at + len(old)] = new
    start = out.rfind(b"\x60\xea", 0, at)
    size = int.from_bytes(out[start + 2:start + 4], "little")
    header = bytes(out[start + 4:start + 4 + size])
    out[start + 4 + size:start + 8 + size] = zlib.crc32(header).to_bytes(4, "little")
    return bytes(out)


# -- formats -----------------------------------------------------------------------------------


def test_arj_members_with_their_paths(tmp_path):
    path = arj(tmp_path)
    assert members(from_file(path)) == FILES
    assert members(from_bytes(path)) == FILES


@pytest.mark.parametrize("method", ["-m0", "-m1", "-m4"])
def test_arj_methods(tmp_path, method):
    files = {"words.txt": WORDS, "e.com": EICAR}
    assert members(from_file(arj(tmp_path, files, method))) == files


def test_in_memory_input_is_written_to_the_scan_dir_and_removed(tmp_path):
    path = arj(tmp_path)
    root = tmp_path / "scantmp"
    root.mkdir()
    ctx = Context(Limits(), tmp_root=str(root))
    got = {c.name: c.data for c in SevenZipHandler().explode(from_bytes(path), ctx)}
    assert got == FILES
    # The input copy, the extract dir and every extracted file are gone before cleanup.
    assert [p for p in Path(ctx.tmpdir).rglob("*")] == []
    ctx.cleanup()


def test_chm_from_chmcmd(tmp_path):
    if shutil.which("chmcmd") is None:
        pytest.skip("no CHM compiler: chmcmd comes with Debian's fp-utils (Free Pascal)")
    src = tmp_path / "chm"
    src.mkdir()
    (src / "index.html").write_text("<html><body>help</body></html>")
    (src / "eicar.com").write_bytes(EICAR)
    (src / "x.hhp").write_text(
        "[OPTIONS]\nCompiled file=x.chm\nDefault topic=index.html\n\n"
        "[FILES]\nindex.html\neicar.com\n"
    )
    run("chmcmd", "x.hhp", cwd=src)
    got = members(from_file(src / "x.chm"))
    assert got["index.html"].startswith(b"<html>")
    assert got["eicar.com"] == EICAR


def test_deflate64_zip_is_read_by_7z_and_flagged_for_it(tmp_path):
    src = tree(tmp_path, {"words.txt": WORDS, "e.com": EICAR})
    out = tmp_path / "d64.zip"
    run("7z", "a", "-bd", "-tzip", "-mm=Deflate64", str(out), ".", cwd=src)
    with zipfile.ZipFile(out) as zf:
        assert zf.getinfo("words.txt").compress_type == 9
    assert zip_needs_7z(from_file(out)) and zip_needs_7z(from_bytes(out))
    # libarchive refuses such members, so the archive handler hands the zip to 7z.
    ctx = Context(Limits())
    via_handler = {c.name: c.data for c in ArchiveHandler().explode(from_file(out), ctx)}
    ctx.cleanup()
    assert via_handler == {"words.txt": WORDS, "e.com": EICAR}
    ctx = Context(Limits())
    got = {c.name: c.data for c in explode_7z(from_file(out), ctx, "zip")}
    ctx.cleanup()
    assert got == {"words.txt": WORDS, "e.com": EICAR}


def test_implode_member_is_flagged_for_7z():
    # No Debian tool writes implode (PKZIP 1.x did); only the dispatch decision is testable.
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("old.txt", b"imploded long ago")
    data = bytearray(buf.getvalue())
    for sig, method_at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(sig)
        data[at + method_at:at + method_at + 2] = (6).to_bytes(2, "little")
    assert zip_needs_7z(ScanObject("old.zip", data=bytes(data)))


def test_ordinary_zip_is_left_to_libarchive():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.txt", b"a" * 1000)
    assert not zip_needs_7z(ScanObject("a.zip", data=buf.getvalue()))
    assert not zip_needs_7z(ScanObject("junk.zip", data=b"PK\x03\x04 not really"))


# -- encryption and damage ----------------------------------------------------------------------


def test_garbled_arj_members_are_protected(tmp_path):
    path = arj(tmp_path, FILES, "-gsecret")
    got = explode(from_file(path))
    assert sorted(c.name for c in got) == sorted(FILES)
    assert all(c.status == Status.PROTECTED and c.reason == "encrypted" for c in got)
    assert all(c.data is None for c in got)


def test_encrypted_zip_through_7z_is_protected(tmp_path):
    src = tree(tmp_path, {"words.txt": WORDS})
    out = tmp_path / "p.zip"
    run("7z", "a", "-bd", "-tzip", "-mm=Deflate64", "-psecret", str(out), ".", cwd=src)
    ctx = Context(Limits())
    got = [(c.name, c.status, c.reason) for c in explode_7z(from_file(out), ctx, "zip")]
    ctx.cleanup()
    assert got == [("words.txt", Status.PROTECTED, "encrypted")]


def test_header_encrypted_7z_raises_encrypted(tmp_path):
    src = tree(tmp_path, FILES)
    out = tmp_path / "h.7z"
    run("7z", "a", "-bd", "-psecret", "-mhe=on", str(out), ".", cwd=src)
    ctx = Context(Limits())
    with pytest.raises(Encrypted):
        list(explode_7z(from_file(out), ctx, "7z"))
    ctx.cleanup()


def test_truncated_arj_yields_what_it_can_then_corrupted(tmp_path):
    files = {"e.com": EICAR, "words.txt": WORDS}
    data = arj(tmp_path, files, "-m1").read_bytes()
    got = []
    ctx = Context(Limits())
    with pytest.raises(Corrupted) as err:
        cut = ScanObject("t.arj", data=data[: len(data) * 2 // 3])
        for child in SevenZipHandler().explode(cut, ctx):
            got.append(child)
    ctx.cleanup()
    assert got[0].name == "e.com" and got[0].data == EICAR
    assert "Unexpected end" in str(err.value)


def test_flipped_byte_in_arj_is_corrupted_after_intact_members(tmp_path):
    files = {"e.com": EICAR, "words.txt": WORDS}
    data = bytearray(arj(tmp_path, files, "-m1").read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside words.txt's compressed data
    got = []
    with pytest.raises(Corrupted) as err:
        flipped = ScanObject("f.arj", data=bytes(data))
        for child in SevenZipHandler().explode(flipped, Context(Limits())):
            got.append(child)
    assert [c.name for c in got][0] == "e.com" and got[0].data == EICAR
    assert "words.txt" in str(err.value)


def test_arj_magic_with_garbage_is_corrupted():
    with pytest.raises(Corrupted):
        explode(ScanObject("bad.arj", data=b"\x60\xea\x10\x00" + b"garbage" * 10))


def test_missing_7z_is_unsupported(tmp_path, monkeypatch):
    path = arj(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(Unsupported, match="arj: 7z not installed"):
        explode(from_file(path))


def test_7z_older_than_22_is_refused(tmp_path, monkeypatch):
    # p7zip 16.02 as first shipped would write members through archived symbolic links.
    path = arj(tmp_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "7z").write_text("#!/bin/sh\necho '7-Zip [64] 16.02 : Copyright (c) 1999-2016'\n")
    (fake / "7z").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    with pytest.raises(Unsupported, match="arj: 7z 16 writes through archive links"):
        explode(from_file(path))


# -- names and links never lead out of the extract dir -----------------------------------------


def _tar(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, link, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def test_links_and_traversal_names_never_write_outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"untouched\n")
    scan_root = tmp_path / "scan"
    scan_root.mkdir()
    data = _tar([
        ("evil", tarfile.SYMTYPE, str(outside), b""),
        ("evil/pwn.txt", tarfile.REGTYPE, "", b"through the link\n"),
        ("rel", tarfile.SYMTYPE, "../../../outside", b""),
        ("rel/pwn2.txt", tarfile.REGTYPE, "", b"through a relative link\n"),
        ("hard", tarfile.LNKTYPE, str(victim), b""),
        ("hard", tarfile.REGTYPE, "", b"overwritten\n"),
        ("../../up.txt", tarfile.REGTYPE, "", b"up\n"),
        (str(tmp_path / "abs.txt"), tarfile.REGTYPE, "", b"abs\n"),
        ("ok.txt", tarfile.REGTYPE, "", b"ok\n"),
    ])
    ctx = Context(Limits(), tmp_root=str(scan_root))
    got = {c.name: c.data for c in explode_7z(ScanObject("evil.tar", data=data), ctx, "tar")}
    ctx.cleanup()
    assert got["ok.txt"] == b"ok\n"
    assert b"up\n" in got.values() and b"abs\n" in got.values()  # scanned under a safe name
    assert all(not n.startswith(("/", "../")) and "/../" not in n for n in got)
    assert list(outside.iterdir()) == []
    assert victim.read_bytes() == b"untouched\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "scan", "victim.txt"]
    assert not (tmp_path.parent / "up.txt").exists()
    assert list(scan_root.iterdir()) == []


def test_arj_with_dotdot_names_stays_inside(tmp_path):
    data = arj(tmp_path, {"aaaeicar.com": EICAR}).read_bytes()
    data = rename_arj_member(data, b"aaaeicar.com", b"../eicar.com")
    scan_root = tmp_path / "scan"
    scan_root.mkdir()
    ctx = Context(Limits(), tmp_root=str(scan_root))
    got = {c.name: c.data for c in SevenZipHandler().explode(ScanObject("t.arj", data=data), ctx)}
    ctx.cleanup()
    assert list(got.values()) == [EICAR]
    assert not (tmp_path / "eicar.com").exists() and not (scan_root / "eicar.com").exists()


def test_duplicate_names_are_both_scanned():
    # With overwrite, a clean second "a.exe" would hide the first; 7z renames it instead.
    data = _tar([("a.exe", tarfile.REGTYPE, "", EICAR), ("a.exe", tarfile.REGTYPE, "", b"clean")])
    ctx = Context(Limits())
    got = sorted(c.data for c in explode_7z(ScanObject("d.tar", data=data), ctx, "tar"))
    ctx.cleanup()
    assert got == sorted([EICAR, b"clean"])


# -- limits -------------------------------------------------------------------------------------


def test_member_over_file_size_limit_is_cut_on_disk_and_refused(tmp_path):
    files = {"big.bin": b"\0" * (3 << 20), "fine.txt": b"fine"}
    limits = Limits(max_file_size=1 << 20)
    got = {c.name: c for c in explode(from_file(arj(tmp_path, files)), limits)}
    assert got["big.bin"].status == Status.ERROR
    assert got["big.bin"].reason == "limit: filesize 1048576"
    assert got["fine.txt"].data == b"fine"


def test_bomb_beyond_scan_size_stops_extraction(tmp_path):
    files = {f"z{i}.bin": b"\0" * (8 << 20) for i in range(8)}  # 64 MiB of zeros
    path = arj(tmp_path, files)
    limits = Limits(max_scan_size=4 << 20, max_compression_ratio=0)
    ctx = Context(limits)
    with pytest.raises(LimitExceeded, match="scansize"):
        list(SevenZipHandler().explode(from_file(path), ctx))
    ctx.cleanup()


# -- through the engine -------------------------------------------------------------------------


class _ZipWith7zFallback:
    """What ArchiveHandler does for zips once the proposed dispatch lands."""

    types = frozenset({"zip"})

    def explode(self, obj, ctx):
        if zip_needs_7z(obj):
            yield from explode_7z(obj, ctx, "zip")
        else:
            yield from ArchiveHandler().explode(obj, ctx)


def test_engine_finds_eicar_in_arj(engine, tmp_path):
    path = arj(tmp_path, {"docs/eicar.com": EICAR, "readme.txt": b"clean"})
    verdict = engine.scan_path(path, "x.arj")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("x.arj//docs/eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_finds_eicar_in_deflate64_zip(engine, monkeypatch, tmp_path):
    monkeypatch.setitem(lmsav.scanner.containers.HANDLERS, "zip", _ZipWith7zFallback())
    src = tree(tmp_path, {"words.txt": WORDS, "eicar.com": EICAR})
    run("7z", "a", "-bd", "-tzip", "-mm=Deflate64", str(tmp_path / "d.zip"), ".", cwd=src)
    verdict = engine.scan_bytes((tmp_path / "d.zip").read_bytes(), "d.zip")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("d.zip//eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_marks_garbled_arj_protected(engine, tmp_path):
    verdict = engine.scan_path(arj(tmp_path, {"eicar.com": EICAR}, "-gsecret"), "g.arj")
    assert verdict.status == Status.PROTECTED
    assert [(r.path, r.reason) for r in verdict.findings()] == [("g.arj//eicar.com", "encrypted")]


# -- the real clamscan agrees -------------------------------------------------------------------


@pytest.mark.integration
def test_clamscan_agrees_on_arj_and_deflate64(engine, monkeypatch, tmp_path):
    monkeypatch.setitem(lmsav.scanner.containers.HANDLERS, "zip", _ZipWith7zFallback())
    samples = tmp_path / "samples"
    samples.mkdir()
    a = arj(tmp_path / "a", {"eicar.com": EICAR, "words.txt": WORDS}, "-m1")
    shutil.copy(a, samples / "x.arj")
    src = tree(tmp_path / "d", {"words.txt": WORDS, "eicar.com": EICAR})
    run("7z", "a", "-bd", "-tzip", "-mm=Deflate64", str(samples / "d64.zip"), ".", cwd=src)
    clean = arj(tmp_path / "c", {"words.txt": WORDS})
    shutil.copy(clean, samples / "clean.arj")
    files = sorted(samples.iterdir())
    ours = {p.name: engine.scan_path(p, p.name).status == Status.INFECTED for p in files}
    assert ours == clamscan_found(*files) == {"x.arj": True, "d64.zip": True, "clean.arj": False}
