"""Container metadata signatures (.cdb): parsing, ClamAV's matching rules, and the member
metadata archive handlers record."""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
import tarfile
import zipfile
from dataclasses import dataclass

import pytest

from lmsav.scanner.containers import handler_for
from lmsav.scanner.containers.archive import _rar_members
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject
from lmsav.scanner.signatures.containermeta import (
    ContainerMetaMatcher, clamav_view, compile_cdb, parse_cdb, translate_regex,
)
from lmsav.scanner.signatures.errors import SignatureError
from lmsav.scanner.signatures.subject import MemberMeta


@dataclass
class Seen:
    """What the matcher reads of a Subject: the member's metadata and its container."""

    member: MemberMeta | None
    container: str = "CL_TYPE_ZIP"
    container_size: int | None = 1000


def _matcher(text: str) -> ContainerMetaMatcher:
    sigs, _ = parse_cdb(text, "local.cdb")
    sections = compile_cdb(sigs)
    return ContainerMetaMatcher(lambda name: memoryview(sections.get(name, b"")))


def _hits(text: str, seen: Seen) -> list[str]:
    return [name for name, _ in _matcher(text).match(seen)]


INVOICE = MemberMeta("docs/Invoice 2024.exe", index=2, packed_size=300, size=4096,
                     crc32=0x1234, encrypted=False)


# -- parsing -------------------------------------------------------------------------------------

def test_a_rule_reads_every_field():
    sigs, skipped = parse_cdb(
        "# comment\n"
        "Exe.In.Zip:CL_TYPE_ZIP:100-5000:(?i)\\.exe$:*:4096:0:2:*:*\n"
        "Any.Thing:*:*:*:*:*:*:*:*:*:73\n", "x.cdb")
    assert skipped == []
    first, second = sigs
    assert (first.name, first.container, first.container_size, first.size, first.encrypted,
            first.position, first.line) == ("Exe.In.Zip", "CL_TYPE_ZIP", (100, 5000),
                                            (4096, 4096), 0, (2, 2), 2)
    assert second.container == "CL_TYPE_ANY" and second.regex is None
    assert second.encrypted == 2 and second.size is None


@pytest.mark.parametrize("line, message", [
    ("Name:CL_TYPE_ZIP:*:*:*:*:*:*:*", "expected"),
    ("Name:CL_TYPE_ZIP:*:*:*:*:*:*:*:*:1:2:3", "expected"),
    ("Name:CL_TYPE_NOPE:*:*:*:*:*:*:*:*", "unknown container type"),
    ("Name:CL_TYPE_ZIP:*:*:*:*:2:*:*:*", "encryption flag"),
    ("Name:CL_TYPE_ZIP:5-:*:*:*:*:*:*:*", "bad range"),
    ("Name:CL_TYPE_ZIP:*:*:1k:*:*:*:*:*", "bad value"),
    ("Name:CL_TYPE_ZIP:*:a(b:*:*:*:*:*:*", "unmatched ("),
    ("Name:CL_TYPE_ZIP:*:*x:*:*:*:*:*:*", "repeats nothing"),
    ("Name:CL_TYPE_ZIP:*:a{1,300}:*:*:*:*:*:*", "repeat count"),
    ("Name:CL_TYPE_ZIP:*:[z-a]:*:*:*:*:*:*", "bad range"),
    ("Name:CL_TYPE_ZIP:*:*:*:*:*:*:*:*:x", "functionality level"),
])
def test_malformed_lines_name_file_and_line(line, message):
    with pytest.raises(SignatureError) as err:
        parse_cdb("\n" + line + "\n", "bad.cdb")
    assert (err.value.file, err.value.line) == ("bad.cdb", 2)
    assert message in err.value.message


def test_lines_for_other_engine_levels_and_named_collating_elements_are_skipped():
    sigs, skipped = parse_cdb(
        "Future:*:*:*:*:*:*:*:*:*:999\n"
        "Past:*:*:*:*:*:*:*:*:*:1:100\n"
        "Named:*:*:[[.space.]]:*:*:*:*:*:*\n"
        "Kept:*:*:*:*:*:*:*:*:*:1:999\n", "x.cdb")
    assert [s.name for s in sigs] == ["Kept"]
    assert [s.split(": ")[1] for s in skipped] == ["Future", "Past", "Named"]


@pytest.mark.parametrize("pattern, names, matches", [
    (r"\.exe$", [b"a.exe", b"a.exe.txt", b"A.EXE"], [True, False, False]),
    (r"(?i)\.exe$", [b"A.EXE", b"a.ExE"], [True, True]),
    (r"\d", [b"123", b"d"], [False, True]),  # a backslash only makes the next character literal
    (r"[[:digit:]]{3}", [b"a123", b"a12"], [True, False]),
    (r"[\.]x", [b"\\x", b".x"], [True, True]),  # backslash is literal inside brackets
    (r"{x}", [b"{x}"], [True]),
    (r"^inv|pay$", [b"invoice", b"to pay", b"xinv"], [True, True, False]),
    (r"\<doc\>", [b"a doc.txt", b"adoc"], [True, False]),
    (r"[^a-z]", [b"abc", b"ab1"], [False, True]),
    (r"a)", [b"xa)"], [True]),
])
def test_name_patterns_follow_posix_extended_syntax(pattern, names, matches):
    import re

    compiled = re.compile(translate_regex(pattern).encode("latin-1"), re.S)
    assert [compiled.search(n) is not None for n in names] == matches


# -- matching ------------------------------------------------------------------------------------

def test_container_type_name_sizes_and_position_must_all_agree():
    rules = ("T.Exact:CL_TYPE_ZIP:1000:Invoice:300:4096:0:2:*:*\n"
             "T.WrongType:CL_TYPE_RAR:*:*:*:*:*:*:*:*\n"
             "T.Any:*:*:\\.exe$:*:*:*:*:*:*\n"
             "T.WrongName:CL_TYPE_ZIP:*:\\.scr$:*:*:*:*:*:*\n"
             "T.WrongPos:CL_TYPE_ZIP:*:*:*:*:*:1:*:*\n"
             "T.Encrypted:CL_TYPE_ZIP:*:*:*:*:1:*:*:*\n")
    # ClamAV tries the rule loaded last first.
    assert _hits(rules, Seen(INVOICE)) == ["T.Any", "T.Exact"]


@pytest.mark.parametrize("bounds, matched", [
    ("4096", True), ("4095", False), ("4000-5000", True), ("5000-6000", False),
    ("0-4096", True), ("0-100", False), ("4000-0", True), ("5000-0", False), ("4096-4096", True),
    ("", False), ("4294967295", True),
])
def test_size_ranges_leave_a_side_open_with_zero(bounds, matched):
    assert bool(_hits(f"T:*:*:*:*:{bounds}:*:*:*:*\n", Seen(INVOICE))) is matched


def test_container_size_and_encryption_flag():
    rule = "T:CL_TYPE_ZIP:900-1100:*:*:*:1:*:*:*\n"
    locked = MemberMeta("a.txt", 1, 10, 10, None, encrypted=True)
    assert _hits(rule, Seen(locked, container_size=1000)) == ["T"]
    assert _hits(rule, Seen(locked, container_size=2000)) == []
    assert _hits(rule, Seen(INVOICE, container_size=1000)) == []


def test_objects_that_are_not_archive_members_are_never_checked():
    matcher = _matcher("T:*:*:*:*:*:*:*:*:*\n")
    assert matcher.count == 1
    assert matcher.match(Seen(None)) == []
    assert _matcher("").count == 0


def test_clamav_view_per_container_type():
    member = MemberMeta("dir/caf\u00e9 %1.txt", index=1, packed_size=7, size=12)
    assert clamav_view("CL_TYPE_ZIP", member) == ("dir/café %1.txt".encode(), 7, 12, 1, 0)
    # 7z: numbered from 0, no packed size, one byte per UTF-16 unit of the name
    assert clamav_view("CL_TYPE_7Z", member) == (b"dir/caf\xe9 %1.txt", 0, 12, 0, 0)
    assert clamav_view("CL_TYPE_MSCAB", member)[1:4] == (0, 12, 0)
    # tar and cpio report the real size as the packed one; cpio masks unusual characters
    assert clamav_view("CL_TYPE_POSIX_TAR", member)[1:4] == (12, 12, 1)
    assert clamav_view("CL_TYPE_CPIO_NEWC", member)[0] == b"dir/caf__ _1.txt"
    # mail attachments are always at position 0, with only [0-9A-Za-z._] kept in names
    assert clamav_view("CL_TYPE_MAIL", member) == (b"dir_caf____1.txt", 12, 12, 0, 0)
    assert clamav_view("CL_TYPE_ISO9660", member)[3] == 0
    long_name = MemberMeta("x" * 300 + ".exe", 1, 1, 1)
    assert clamav_view("CL_TYPE_ZIP", long_name)[0] == b"x" * 255
    assert clamav_view("CL_TYPE_POSIX_TAR", long_name)[0] == b"x" * 100


# -- what the archive handlers record ------------------------------------------------------------

def _members(path) -> list[tuple[str, MemberMeta | None]]:
    obj = ScanObject(str(path), path=path)
    ctx = Context(Limits())
    try:
        return [(child.name, child.meta) for child in handler_for(sniff(obj.data)).explode(obj, ctx)
                if not child.meta_only]
    finally:
        obj.close()
        ctx.cleanup()


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed")


def test_zip_members_carry_central_directory_metadata(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("dir/", "")
        zf.writestr("dir/note.txt", "hello " * 100)
        zf.writestr("run.exe", b"MZ" + bytes(200))
    found = dict(_members(path))
    note, run = found["dir/note.txt"], found["run.exe"]
    assert (note.index, note.size, note.encrypted) == (2, 600, False)
    assert note.packed_size < 600 and note.crc32 == zipfile.crc32(b"hello " * 100)
    assert run.index == 3  # the directory entry counts, as in ClamAV


def test_encrypted_zip_members_are_described_too(tmp_path):
    _need("zip")
    (tmp_path / "a.txt").write_text("secret text\n")
    subprocess.run(["zip", "-q", "-P", "pw", "x.zip", "a.txt"], cwd=tmp_path, check=True)
    [(name, meta)] = _members(tmp_path / "x.zip")
    assert (name, meta.encrypted, meta.size, meta.packed_size) == ("a.txt", True, 12, 24)


def test_zip_names_keep_their_stored_bytes(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("plain.txt", "x")
    data = buf.getvalue().replace(b"plain", b"pl\x82in")  # a code page 437 name
    (tmp_path / "n.zip").write_bytes(data)
    [(_, meta)] = _members(tmp_path / "n.zip")
    assert clamav_view("CL_TYPE_ZIP", meta)[0] == b"pl\x82in.txt"


def test_7z_members_count_directories_and_stay_encrypted_after_the_first(tmp_path):
    _need("7z")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("first\n")
    (tmp_path / "sub" / "b.txt").write_text("second\n")
    subprocess.run(["7z", "a", "-bd", "-bso0", "x.7z", "a.txt", "sub"], cwd=tmp_path, check=True)
    found = dict(_members(tmp_path / "x.7z"))
    # 7-Zip stores the directory first; ClamAV numbers 7z entries from 0.
    assert clamav_view("CL_TYPE_7Z", found["a.txt"])[3] == 1
    assert clamav_view("CL_TYPE_7Z", found["sub/b.txt"])[1:] == (0, 7, 2, 0)
    subprocess.run(["7z", "a", "-bd", "-bso0", "-ppw", "e.7z", "a.txt"], cwd=tmp_path, check=True)
    [(_, meta)] = _members(tmp_path / "e.7z")
    assert meta.encrypted


def test_tar_counts_regular_files_and_cpio_every_entry(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in (("d/", None), ("d/a.txt", b"alpha"), ("b.txt", b"beta!")):
            info = tarfile.TarInfo(name.rstrip("/"))
            if data is None:
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            else:
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    (tmp_path / "x.tar").write_bytes(buf.getvalue())
    assert [(n, m.index) for n, m in _members(tmp_path / "x.tar")] == [("d/a.txt", 1), ("b.txt", 2)]
    _need("cpio")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.txt").write_text("alpha")
    (tmp_path / "empty").write_text("")
    listing = "d\nd/a.txt\nempty\n"
    with open(tmp_path / "x.cpio", "wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=tmp_path, input=listing.encode(),
                       stdout=out, check=True)
    found = dict(_members(tmp_path / "x.cpio"))
    assert found["d/a.txt"].index == 2
    assert found["empty"] is None  # ClamAV looks only at cpio members with data


def test_cab_names_keep_backslashes_and_arj_members_come_from_the_listing(tmp_path):
    _need("gcab")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.exe").write_bytes(b"MZ" + bytes(40))
    (tmp_path / "a.txt").write_text("cab text\n")
    subprocess.run(["gcab", "-c", "x.cab", "a.txt", "sub/b.exe"], cwd=tmp_path, check=True)
    found = dict(_members(tmp_path / "x.cab"))
    assert clamav_view("CL_TYPE_MSCAB", found["sub/b.exe"]) == (b"sub\\b.exe", 0, 42, 1, 0)
    _need("arj")
    _need("7z")
    subprocess.run(["arj", "a", "x.arj", "a.txt", "sub/b.exe"], cwd=tmp_path, check=True,
                   stdout=subprocess.DEVNULL)
    found = dict(_members(tmp_path / "x.arj"))
    assert (found["sub/b.exe"].index, found["sub/b.exe"].size) == (2, 42)
    assert found["a.txt"].packed_size is not None


# RAR archives from the test files of the rarfile project (github.com/markokr/rarfile,
# test/files/rar5-subdirs.rar, rar3-solid.rar and rar3-comment-psw.rar, commit 36ecdb7).
RAR5_SUBDIRS = base64.b64decode(
    "UmFyIRoHAQDz4YLrCwEFBwAGAQGAgIAAWyrxsjACAwuGAASGAKSDAsekBMmAAAESc3ViL2RpcjIvZmlsZTIudHh0CgMTCNwV"
    "X4XkBhNmaWxlMgokNHkgOAIDC4gABIgApIMCfSS3cYAAARpzdWIvd2l0aCBzcGFjZS9sb25nIGZuLnR4dAoDEyncFV9mv8sd"
    "bG9uZyBmbgoOjzxzOAIDC4UABIUApIMCwYnsL4AAARpzdWIvw7zItcSpw7bhuIvDqC9maWxlLnR4dAoDE0TdFV+dEHMIZmls"
    "ZQqvrxG4MAIDC4YABIYApIMCBPcp4oAAARJzdWIvZGlyMS9maWxlMS50eHQKAxP92xVfHJEnNGZpbGUxCtVl6Z4kAgMLAAUA"
    "7YMBAAAAAIAAAQhzdWIvZGlyMgoDEwjcFV/ICfsT1nxQqSoCAwsABQDtgwEAAAAAgAABDnN1Yi93aXRoIHNwYWNlCgMTKdwV"
    "X1vbgh6UOOweJQIDCwAFAO2DAQAAAACAAAEJc3ViL2VtcHR5CgMT5dsVX/bv4ArIG6fPLQIDCwAFAO2DAQAAAACAAAERc3Vi"
    "L8O8yLXEqcO24biLw6gKAxNE3RVfmSwqCYEdQEkkAgMLAAUA7YMBAAAAAIAAAQhzdWIvZGlyMQoDE/3bFV8Nrd40msCgER8C"
    "AwsABQDtgwEAAAAAgAABA3N1YgoDEzLdFV+8OWMOHXdWUQMFBAA=")
RAR3_SOLID = base64.b64decode(
    "UmFyIRoHADvQcwgADQAAAAAAAAArNHSAkCwAXAAAAAAIAAADoua3xbBmzD4dMwoApIEAAHN0ZXN0MS50eHQAwBEMzP6MnrD+"
    "MYGrrLG7QHeoCmTWSzeDwQe8AeCFku77th0ACCAACIjpeAzSDAdhOkF4S7Nun1IK2sonQLrnC2SKYnH7uACRnlAv2FX/+sZY"
    "6+vE14h+VJaHH03s2RZ0kJAsAA4AAAAACAAAA6Lmt8WwZsw+HTMKAKSBAABzdGVzdDIudHh0AMCxIACIB+vyCmn6/JTe0MQ9"
    "ewBABwA=")
RAR3_PASSWORD = base64.b64decode(
    "UmFyIRoHAM+QcwAADQAAAAAAAADSmXoAgCMAFgAAAAsAAAADvFDsdQAAAAAdMwMAAAAAAENNVAwAi+zL9lbBSCmPAOW/5v/w"
    "0Gtqdnpt1nQklDMAEAAAAAAAAAADAAAAAGxQYj0dMwkApIEAAGZpbGUxLnR4dLMOLwEQH2W9AMDh8N4nMZ14bG1Nam0XgByn"
    "QZl6EIAjABYAAAALAAAAA0g/bxAAAAAAHTMDAAAAAIBDTVQMAIvsy/Y2kFYseA8mb83/7NSLl8K9FLx0JJQzABAAAAAAAAAA"
    "AwAAAABsUGI9HTMJAKSBAABmaWxlMi50eHSzDi8BEB9lvQDA4fDeJzGdeGxtTWptF4Acp3ygehCAIwAWAAAACwAAAAOmkNoC"
    "AAAAAB0zAwAAAACAQ01UEBDL7Inkc0FIsM/ZJxfi/uuBj1cq9MQ9ewBABwA=")


def test_rar_members_carry_their_file_headers(tmp_path):
    (tmp_path / "subdirs.rar").write_bytes(RAR5_SUBDIRS)
    found = dict(_members(tmp_path / "subdirs.rar"))
    assert [(m.index, m.size) for m in found.values()] == [(1, 6), (2, 8), (3, 5), (4, 6)]
    assert "sub/üȵĩöḋè/file.txt" in found


def test_directory_records_come_as_metadata_only_children(tmp_path):
    (tmp_path / "subdirs.rar").write_bytes(RAR5_SUBDIRS)
    obj = ScanObject("subdirs.rar", path=tmp_path / "subdirs.rar")
    ctx = Context(Limits())
    try:
        records = [c for c in handler_for("rar").explode(obj, ctx) if c.meta_only]
    finally:
        obj.close()
        ctx.cleanup()
    assert "sub/dir1" in {c.meta.name for c in records}
    assert all(c.data is None and c.path is None for c in records)


def test_rar_headers_give_packed_sizes_and_encryption():
    # Read from the headers alone: libarchive cannot extract these two archives' data.
    solid = {m.name: m for m in _rar_members(ScanObject("solid.rar", data=RAR3_SOLID))}
    assert [(m.packed_size, m.size) for m in solid.values()] == [(92, 2048), (14, 2048)]
    rules = "Big.Ratio:CL_TYPE_RAR:*:^stest2\\.txt$:0-20:2048:0:2:*:*\n"
    assert _hits(rules, Seen(solid["stest2.txt"], "CL_TYPE_RAR")) == ["Big.Ratio"]
    locked = _rar_members(ScanObject("psw.rar", data=RAR3_PASSWORD))
    assert [(m.name, m.index, m.encrypted) for m in locked] == [("file1.txt", 1, True),
                                                                ("file2.txt", 2, True)]
