"""LHA archives, .Z files and RPM packages built with the real tools are exploded into members."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.packages import CompressHandler, LhaHandler, RpmHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import (
    clamscan_found, explode_until, explode_with, from_bytes, from_file, run, tree,
)

FILES = {"a.txt": b"hello lha\n", "sub/b.bin": bytes(range(256)) * 20}
WORDS = b" ".join([b"alpha", b"beta", b"gamma", b"delta"] * 20000)

SPEC = """\
Name: eicartest
Version: 1
Release: 1
Summary: lmsav test package
License: none
BuildArch: noarch
%description
A package whose payload holds one test file.
%install
mkdir -p %{buildroot}/opt/t
cp %{_sourcedir}/eicar.com %{_sourcedir}/words.txt %{buildroot}/opt/t/
%files
/opt/t/eicar.com
/opt/t/words.txt
"""


def members(handler, obj: ScanObject) -> dict[str, bytes]:
    return {c.name: c.data for c in explode_with(handler, obj)}


def lha(tmp_path: Path, files: dict[str, bytes] = FILES, opts: str = "a") -> Path:
    src = tree(tmp_path, files)
    out = tmp_path / "x.lzh"
    run("lha", opts, str(out), *files, cwd=src)
    return out


def compress(tmp_path: Path, data: bytes, name: str = "eicar.com") -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    run("compress", "-f", str(src))
    return tmp_path / f"{name}.Z"


def rpm(tmp_path: Path, payload: str = "w9.gzdio") -> Path:
    """A one-package rpmbuild run (about 0.1 s) with the given payload compressor."""
    sources = tmp_path / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / "eicar.com").write_bytes(EICAR)
    (sources / "words.txt").write_bytes(WORDS)
    (tmp_path / "t.spec").write_text(SPEC)
    top = tmp_path / "rpmbuild"
    run(
        "rpmbuild", "-bb", "--quiet",
        "--define", f"_topdir {top}", "--define", f"_sourcedir {sources}",
        "--define", f"_binary_payload {payload}", "--define", "_build_id_links none",
        str(tmp_path / "t.spec"),
    )
    return top / "RPMS" / "noarch" / "eicartest-1-1.noarch.rpm"


# -- LHA ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", ["a", "ao0", "ao1", "ao2", "az"])  # header levels; -lh0- store
def test_lha_members(tmp_path, opts):
    path = lha(tmp_path, {**FILES, "words.txt": WORDS}, opts)
    assert sniff(path.read_bytes()) == "lha"
    want = {**FILES, "words.txt": WORDS}
    assert members(LhaHandler(), from_file(path)) == want
    assert members(LhaHandler(), from_bytes(path)) == want


def test_truncated_lha_is_corrupted_after_intact_members(tmp_path):
    data = lha(tmp_path, {"e.com": EICAR, "words.txt": WORDS}).read_bytes()
    got, _ = explode_until(Corrupted, LhaHandler(), ScanObject("t.lzh", data=data[:-40]))
    assert got[0].name == "e.com" and got[0].data == EICAR


def test_lha_names_are_labels_and_nothing_is_written(tmp_path, monkeypatch):
    path = lha(tmp_path, {"deep/er/x.txt": b"x"})
    scan_root = tmp_path / "scan"
    scan_root.mkdir()
    monkeypatch.chdir(scan_root)
    ctx = Context(Limits(), tmp_root=str(scan_root))
    got = {c.name: c.data for c in LhaHandler().explode(from_bytes(path), ctx)}
    assert got == {"deep/er/x.txt": b"x"}
    assert list(scan_root.iterdir()) == []


# -- compress (.Z) --------------------------------------------------------------------------------


def test_compress_member_is_named_after_the_file(tmp_path):
    path = compress(tmp_path, WORDS, "words.txt")
    assert sniff(path.read_bytes()) == "compress"
    assert members(CompressHandler(), from_file(path)) == {"words.txt": WORDS}
    assert members(CompressHandler(), ScanObject("mail//a.taz", data=path.read_bytes())) == {
        "a.tar": WORDS
    }
    assert members(CompressHandler(), ScanObject("blob", data=path.read_bytes())) == {"data": WORDS}


def test_truncated_compress_yields_the_readable_start(tmp_path):
    # .Z records neither a length nor an end code, so a cut stream is not detectably damaged
    # (compress -d is silent too); what decodes is still scanned.
    data = compress(tmp_path, WORDS, "words.txt").read_bytes()
    got = explode_with(CompressHandler(), ScanObject("w.Z", data=data[:-7]))
    assert len(got) == 1 and WORDS.startswith(got[0].data) and len(got[0].data) > 1000


def test_compress_bomb_hits_the_ratio_limit(tmp_path):
    path = compress(tmp_path, b"\0" * (16 << 20), "zeros")
    got = explode_with(CompressHandler(), from_file(path), Limits(max_compression_ratio=100))
    assert [(c.name, c.status, c.reason) for c in got] == [
        ("zeros", Status.ERROR, "limit: compression ratio 100")
    ]


# -- RPM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", ["w9.gzdio", "w2.xzdio", "w19.zstdio", "w9.bzdio", "w.ufdio"])
def test_rpm_payload_files(tmp_path, payload):
    path = rpm(tmp_path, payload)
    assert sniff(path.read_bytes()) == "rpm"
    want = {"./opt/t/eicar.com": EICAR, "./opt/t/words.txt": WORDS}
    assert members(RpmHandler(), from_file(path)) == want
    assert members(RpmHandler(), from_bytes(path)) == want


def test_truncated_rpm_is_corrupted(tmp_path):
    data = rpm(tmp_path, "w.ufdio").read_bytes()
    got, _ = explode_until(Corrupted, RpmHandler(), ScanObject("t.rpm", data=data[:-2000]))
    assert got[0].data == EICAR


def test_rpm_magic_with_garbage_is_corrupted():
    with pytest.raises(Corrupted):
        explode_with(RpmHandler(), ScanObject("x.rpm", data=b"\xed\xab\xee\xdb" + b"\x03" * 200))


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_in_lha_z_and_rpm(engine, tmp_path):
    a = lha(tmp_path / "l", {"docs/eicar.com": EICAR})
    z = compress(tmp_path, EICAR, "eicar.com")
    r = rpm(tmp_path / "r")
    found = {
        name: [(p, t.name) for p, t in engine.scan_path(path, name).threats]
        for name, path in (("x.lzh", a), ("eicar.com.Z", z), ("t.rpm", r))
    }
    assert found == {
        "x.lzh": [("x.lzh//docs/eicar.com", "Eicar-Test-Signature")],
        "eicar.com.Z": [("eicar.com.Z//eicar.com", "Eicar-Test-Signature")],
        "t.rpm": [("t.rpm//./opt/t/eicar.com", "Eicar-Test-Signature")],
    }


def test_engine_finds_eicar_in_tar_z(engine, tmp_path):
    src = tree(tmp_path, {"e.com": EICAR})
    run("tar", "-cf", str(tmp_path / "x.tar"), "e.com", cwd=src)
    run("compress", "-f", str(tmp_path / "x.tar"))
    verdict = engine.scan_path(tmp_path / "x.tar.Z", "x.tar.Z")
    assert [p for p, _ in verdict.threats] == ["x.tar.Z//x.tar//e.com"]


# -- the real clamscan agrees -------------------------------------------------------------------


@pytest.mark.integration
def test_clamscan_agrees_where_it_reads_the_format(engine, tmp_path):
    samples = tmp_path / "samples"
    samples.mkdir()
    lha(tmp_path / "l", {"eicar.com": EICAR}).rename(samples / "x.lzh")
    lha(tmp_path / "c", {"words.txt": WORDS}).rename(samples / "clean.lzh")
    files = sorted(samples.iterdir())
    ours = {p.name: engine.scan_path(p, p.name).status == Status.INFECTED for p in files}
    assert ours == clamscan_found(*files) == {"x.lzh": True, "clean.lzh": False}


@pytest.mark.integration
def test_clamscan_does_not_read_z_or_rpm_where_lmsav_does(engine, tmp_path):
    # ClamAV has no .Z (LZW) decoder and no RPM parser: lmsav finds more, never less.
    z = compress(tmp_path, EICAR, "eicar.com")
    r = rpm(tmp_path / "r", "w2.xzdio")
    ours = {p.name: engine.scan_path(p, p.name).status == Status.INFECTED for p in (z, r)}
    assert ours == {z.name: True, r.name: True}
    assert clamscan_found(z, r) == {z.name: False, r.name: False}


@pytest.mark.skipif(not shutil.which("dpkg-deb"), reason="dpkg-deb not installed")
def test_debian_package_members_are_reached(tmp_path):
    """A .deb is an ar archive holding data.tar.xz: ar → xz → tar → the packaged file."""
    import subprocess

    from lmsav import paths
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: lmsav-test\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: Test <t@example.org>\nDescription: test\n")
    (root / "usr" / "share" / "t").mkdir(parents=True)
    (root / "usr" / "share" / "t" / "eicar.com").write_bytes(EICAR)
    deb = tmp_path / "t.deb"
    subprocess.run(["dpkg-deb", "-Zxz", "--build", "--root-owner-group", str(root), str(deb)],
                   check=True, capture_output=True)
    verdict = Engine(Database.load(paths.bundled_database_dir())).scan_path(deb)
    assert verdict.status == Status.INFECTED
    [(where, _)] = verdict.threats
    assert where.startswith(f"{deb}//data.tar.xz//")
    assert where.endswith("usr/share/t/eicar.com")


def test_compress_magic_with_an_invalid_header_is_corrupted_not_nested():
    """1f 9d followed by flags libarchive refuses must not come back as an identical child."""
    import os

    from lmsav import paths
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.limits import Limits
    from lmsav.scanner.objects import Status
    from lmsav.scanner.signatures.database import Database

    engine = Engine(Database.load(paths.bundled_database_dir()), Limits())
    verdict = engine.scan_bytes(b"\x1f\x9d\xff" + os.urandom(4000), "random.bin")
    assert verdict.status is Status.CORRUPTED
    assert len(list(verdict.walk())) == 1
