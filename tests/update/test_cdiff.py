"""ClamAV's .cdiff files: genuine ones verify and apply step by step to exactly what ClamAV
published; damaged ones and scripts that do not fit are refused with the line that failed."""

from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from lmsav.scanner.signatures import cvd
from lmsav.update import tree
from lmsav.update.cdiff import CdiffError, apply_script, read_cdiff

from .conftest import GENUINE, SIGNED_AT, TEST_CERTS, copy_genuine, genuine

needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None,
                                   reason="the openssl program verifies .sign files")


def unpacked(tmp_path, version: int):
    source = copy_genuine(tmp_path / "src", version)
    work = tmp_path / "work"
    tree.unpack(cvd.read_container(source / "test.cvd"), work)
    return work


def cdiff_copy(tmp_path, version: int, sign: bool = False, data: bytes | None = None):
    path = tmp_path / f"test-{version}.cdiff"
    path.write_bytes(genuine(f"test-{version}.cdiff") if data is None else data)
    if sign:
        (tmp_path / f"test-{version}.cdiff.sign").write_bytes(genuine(f"test-{version}.cdiff.sign"))
    return path


# -- genuine diffs -----------------------------------------------------------------------------

def test_genuine_diffs_take_version_1_to_6_and_each_step_matches_clamav_s_own_container(tmp_path):
    work = unpacked(tmp_path, 1)
    for version in range(2, 7):
        diff = read_cdiff(cdiff_copy(tmp_path, version), version)
        assert diff.verified_by == "ClamAV key"
        apply_script(diff.script, work)
        header = tree.check(work, "test", version)
        assert header.version == version
        published = cvd.read_container(copy_genuine(tmp_path / f"v{version}", version) / "test.cvd")
        produced = {p.name: p.read_bytes() for p in work.iterdir()}
        assert produced == published.members  # byte for byte what ClamAV built
    tree.write_cld(work, "test", tmp_path / "test.cld")
    cld = cvd.read_container(tmp_path / "test.cld")
    assert (cld.kind, cld.header.version, cld.header.signatures) == ("cld", 6, 14)
    assert cld.signature_status == "not checked (.cld); .info verified (ClamAV key)"
    assert list(cld.members)[:3] == ["COPYING", "test.info", "test.cfg"]


@needs_openssl
def test_a_genuine_sign_file_is_checked_before_the_classic_signature(tmp_path):
    path = cdiff_copy(tmp_path, 4, sign=True)
    diff = read_cdiff(path, 4, [TEST_CERTS], check_time=SIGNED_AT)
    assert diff.verified_by == "test-4.cdiff.sign (ClamAV TEST CVD Signing Cert)"


@needs_openssl
def test_a_sign_file_that_does_not_verify_refuses_the_diff_without_falling_back(tmp_path):
    path = cdiff_copy(tmp_path, 4)
    (tmp_path / "test-4.cdiff.sign").write_bytes(genuine("test-5.cdiff.sign"))  # another file's
    with pytest.raises(CdiffError, match=r"^test-4.cdiff: test-4.cdiff.sign does not verify"):
        read_cdiff(path, 4, [TEST_CERTS], check_time=SIGNED_AT)


@needs_openssl
def test_a_sign_file_whose_root_is_not_trusted_refuses_the_diff(tmp_path):
    path = cdiff_copy(tmp_path, 4, sign=True)
    with pytest.raises(CdiffError, match="does not verify: unable to get local issuer"):
        read_cdiff(path, 4, (), check_time=SIGNED_AT)


# -- damaged diffs -----------------------------------------------------------------------------

def flipped(data: bytes, offset: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("offset", [13, 40, 200, -5])
def test_any_changed_byte_breaks_the_classic_signature(tmp_path, offset):
    path = cdiff_copy(tmp_path, 5, data=flipped(genuine("test-5.cdiff"), offset))
    with pytest.raises(CdiffError, match=r"^test-5.cdiff: bad digital signature"):
        read_cdiff(path, 5)


def test_a_truncated_diff_is_refused(tmp_path):
    data = genuine("test-5.cdiff")
    for size in (0, 20, len(data) // 2, len(data) - 1):
        path = cdiff_copy(tmp_path, 5, data=data[:size])
        with pytest.raises(CdiffError) as caught:
            read_cdiff(path, 5)
        assert str(caught.value).startswith("test-5.cdiff: ")
        assert "\n" not in str(caught.value)


def test_a_genuine_diff_under_another_version_s_name_is_refused(tmp_path):
    path = cdiff_copy(tmp_path, 3, data=genuine("test-4.cdiff"))
    with pytest.raises(CdiffError, match="its header says version 4, expected 3"):
        read_cdiff(path, 3)


def test_a_diff_without_the_header_is_refused(tmp_path):
    path = cdiff_copy(tmp_path, 3, data=b"<html>" + b"x" * 600)
    with pytest.raises(CdiffError):
        read_cdiff(path, 3)


# -- the script language -----------------------------------------------------------------------

@pytest.fixture
def db(tmp_path):
    directory = tmp_path / "db"
    directory.mkdir()
    (directory / "a.ndb").write_bytes(b"one:0:*:01\ntwo:0:*:02\nthree:0:*:03\nfour:0:*:04\n")
    (directory / "b.ndb").write_bytes(b"bee:0:*:0b\n")
    return directory


def run(directory, *lines: str) -> None:
    apply_script(("\n".join(lines) + "\n").encode(), directory)


def test_open_add_del_xchg_close(db):
    run(db, "# a comment", "OPEN a.ndb", "DEL 2 two:0", "XCHG 3 three:0:*:03 THREE:0:*:33",
        "ADD five:0:*:05", "CLOSE")
    assert (db / "a.ndb").read_bytes() == b"one:0:*:01\nTHREE:0:*:33\nfour:0:*:04\nfive:0:*:05\n"


def test_add_creates_a_new_member(db):
    run(db, "OPEN c.hdb", "ADD x:1:y", "ADD z:2:w", "CLOSE")
    assert (db / "c.hdb").read_bytes() == b"x:1:y\nz:2:w\n"


def test_move_and_unlink(db):
    run(db, "MOVE a.ndb b.ndb 2 two 3 three")
    assert (db / "a.ndb").read_bytes() == b"one:0:*:01\nfour:0:*:04\n"
    assert (db / "b.ndb").read_bytes() == b"bee:0:*:0b\ntwo:0:*:02\nthree:0:*:03\n"
    run(db, "UNLINK b.ndb")
    assert not (db / "b.ndb").exists()


@pytest.mark.parametrize("lines, message", [
    (["OPEN a.ndb", "DEL 2 one", "CLOSE"], "line 3: DEL: line 2 of a.ndb does not start with"),
    (["OPEN a.ndb", "XCHG 9 nine new", "CLOSE"], "line 3: CLOSE: a.ndb has no line 9"),
    (["OPEN ../etc/passwd"], "line 1: OPEN: '../etc/passwd' is not a plain member name"),
    (["OPEN .."], "is not a plain member name"),
    (["UNLINK /etc/hosts"], "is not a plain member name"),
    (["MOVE a.ndb ../x 1 one 1 one"], "is not a plain member name"),
    (["ADD stray"], "line 1: ADD with no member open"),
    (["OPEN a.ndb", "OPEN b.ndb"], "line 2: OPEN b.ndb while a.ndb is still open"),
    (["OPEN a.ndb", "ADD x"], "the script ends with a.ndb still open"),
    (["FROB a.ndb"], "line 1: unknown command 'FROB'"),
    ([""], "line 1: unknown command 'an empty line'"),
    (["DEL x y"], "line 1: DEL with no member open"),
    (["OPEN a.ndb", "DEL zero one", "CLOSE"], "line 2: DEL: 'zero' is not a line number"),
    (["MOVE a.ndb b.ndb 2 two 3 nope"], "MOVE: line 3 of a.ndb does not start with 'nope'"),
    (["MOVE a.ndb b.ndb 3 three 9 x"], "MOVE: a.ndb has fewer than 9 lines"),
    (["MOVE a.ndb missing.ndb 1 one 1 one"], "MOVE into missing.ndb, which does not exist"),
    (["UNLINK missing.ndb"], "UNLINK missing.ndb: no such member"),
    (["OPEN missing.ndb", "DEL 1 x", "CLOSE"], "CLOSE: missing.ndb does not exist"),
])
def test_scripts_that_do_not_fit_are_refused_with_the_line(db, lines, message):
    with pytest.raises(CdiffError) as caught:
        run(db, *lines)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not list(db.glob(".cdiff-*"))  # no temporary file left behind


def test_a_member_without_a_final_newline_cannot_be_edited(db):
    (db / "a.ndb").write_bytes(b"one\ntwo")
    with pytest.raises(CdiffError, match="the last line of a.ndb has no newline"):
        run(db, "OPEN a.ndb", "DEL 1 one", "CLOSE")


def test_a_decompression_bomb_is_refused(tmp_path, monkeypatch):
    from lmsav.update import cdiff

    monkeypatch.setattr(cdiff, "MAX_SCRIPT_BYTES", 1 << 16)
    script = gzip.compress(b"ADD " + b"A" * (1 << 20) + b"\n")
    body = b"ClamAV-Diff:7:%d:" % (1 << 20) + script
    with pytest.raises(CdiffError, match="script larger than"):
        cdiff._decompress(body[body.index(b"\x1f\x8b"):])


# -- ClamAV reads the .cld lmsav builds --------------------------------------------------------

@pytest.mark.integration
@pytest.mark.skipif(shutil.which("clamscan") is None, reason="ClamAV's clamscan is not installed")
def test_clamscan_loads_the_cld_built_from_the_diffs_and_detects_with_it(tmp_path, eicar):
    work = unpacked(tmp_path, 2)
    for version in range(3, 7):
        apply_script(read_cdiff(cdiff_copy(tmp_path, version), version).script, work)
    database = tmp_path / "database"
    database.mkdir()
    tree.write_cld(work, "test", database / "test.cld")
    sample = tmp_path / "eicar.txt"
    sample.write_bytes(eicar)
    result = subprocess.run(["clamscan", "--no-summary", "-d", str(database), str(sample)],
                            check=False, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr
    assert f"{sample}: Eicar-Test-Signature FOUND" in result.stdout


def test_genuine_files_are_the_ones_the_readme_cites():
    assert sorted(p.name for p in GENUINE.iterdir()) == sorted(
        [f"test-{n}.cvd" for n in range(1, 7)] + [f"test-{n}.cvd.sign" for n in range(1, 7)]
        + [f"test-{n}.cdiff" for n in range(2, 7)] + [f"test-{n}.cdiff.sign" for n in range(2, 7)])
