"""Archive members named `../…`, absolute names and links: nothing is written outside the scan's
private temp dir, and no link is followed to a file outside the archive."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import zipfile

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from tests.conftest import EICAR


@pytest.fixture(scope="module")
def bundled():
    from lmsav import paths

    return Database.load(paths.bundled_database_dir())


@pytest.fixture
def canary(tmp_path):
    """A detectable file outside every archive: reaching it through a link would be a bug."""
    path = tmp_path / "outside" / "canary.com"
    path.parent.mkdir()
    path.write_bytes(EICAR)
    return path


def scan_in_jail(bundled, tmp_path, data: bytes, name: str):
    jail = tmp_path / "jail"
    jail.mkdir()
    cwd = os.getcwd()
    os.chdir(jail)  # a member extracted relative to the cwd would land here
    try:
        verdict = Engine(bundled, tmp_root=str(jail)).scan_bytes(data, name)
    finally:
        os.chdir(cwd)
    assert os.listdir(jail) == []
    assert not (tmp_path / "escaped.txt").exists()
    return verdict


def tar_with_links(canary) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name in ("../escaped.txt", "/tmp/escaped-abs.txt", "ok.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tf.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("sym.com")
        link.type, link.linkname = tarfile.SYMTYPE, str(canary)
        tf.addfile(link)
        hard = tarfile.TarInfo("hard.com")
        hard.type, hard.linkname = tarfile.LNKTYPE, str(canary)
        tf.addfile(hard)
    return buf.getvalue()


def test_tar_names_and_links(bundled, tmp_path, canary):
    verdict = scan_in_jail(bundled, tmp_path, tar_with_links(canary), "t.tar")
    assert verdict.status == Status.CLEAN
    got = {c.path.split("//", 1)[1]: c for c in verdict.root.children}
    assert set(got) == {"../escaped.txt", "/tmp/escaped-abs.txt", "ok.txt", "sym.com",
                        "hard.com"}
    # Links are never followed: a symbolic link is scanned as its target's name, a hard link
    # to a file outside the archive is listed as not scanned.
    assert got["sym.com"].size == len(str(canary))
    assert got["hard.com"].reason == "not scanned: hard link"
    assert not os.path.exists("/tmp/escaped-abs.txt")


def test_zip_symlink_entry_is_not_followed(bundled, tmp_path, canary):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.com")
        info.create_system = 3
        info.external_attr = 0o120777 << 16  # a Unix symlink whose target is the data
        zf.writestr(info, str(canary))
        zf.writestr("../escaped.txt", "abc")
    verdict = scan_in_jail(bundled, tmp_path, buf.getvalue(), "l.zip")
    assert verdict.status == Status.CLEAN


@pytest.mark.skipif(not shutil.which("bsdtar"), reason="bsdtar (libarchive-tools) not installed")
@pytest.mark.parametrize("fmt", ["cpio", "newc", "pax", "ar"])
def test_bsdtar_formats_with_links(bundled, tmp_path, canary, fmt):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    if fmt != "ar":  # ar holds no links
        os.symlink(canary, src / "sym.com")
    out = tmp_path / f"a.{fmt}"
    subprocess.run(["bsdtar", "--format", fmt, "-cf", str(out), "-C", str(src), "."],
                   check=True)
    verdict = scan_in_jail(bundled, tmp_path, out.read_bytes(), out.name)
    assert verdict.status == Status.CLEAN
    assert any(c.path.endswith("ok.txt") for c in verdict.root.children)


@pytest.mark.skipif(not shutil.which("7z"), reason="7z (p7zip-full) not installed")
def test_7z_with_stored_symlink(bundled, tmp_path, canary):
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    os.symlink(canary, src / "sym.com")
    out = tmp_path / "l.7z"
    subprocess.run(["7z", "a", "-snl", "-bso0", "-bsp0", str(out), "."], cwd=src, check=True)
    verdict = scan_in_jail(bundled, tmp_path, out.read_bytes(), "l.7z")
    assert verdict.status == Status.CLEAN
