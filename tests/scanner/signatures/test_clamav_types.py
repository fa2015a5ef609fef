"""ClamAV file types: the sniffed-type mapping, .ftm parsing and typing buffers as ClamAV does."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from lmsav.scanner import filetype
from lmsav.scanner.containers import load_all
from lmsav.scanner.signatures import clamav_types
from lmsav.scanner.signatures.clamav_types import (
    FtmMatcher,
    classify,
    compile_ftm,
    parse_ftm,
)
from lmsav.scanner.signatures.errors import SignatureError


def _matcher(text: str) -> FtmMatcher:
    sigs, _ = parse_ftm(text, "local.ftm")
    sections = compile_ftm(sigs)
    return FtmMatcher(lambda name: memoryview(sections.get(name, b"")))


def test_every_sniffed_and_container_type_has_a_clamav_name():
    sniffed = {t for _, _, t in filetype._MAGICS}
    sniffed |= {"arj", "lha", "pe", "msdos", "mbox", "mail", "lzma", "binhex", "html", "text",
                "binary"}
    sniffed |= set(load_all())
    for name in sniffed:
        assert clamav_types.clamav_type(name) in clamav_types.KNOWN_TYPES, name


@pytest.mark.parametrize("sniffed, clamav", [
    ("zip", "CL_TYPE_ZIP"), ("pe", "CL_TYPE_MSEXE"), ("mail", "CL_TYPE_MAIL"),
    ("html", "CL_TYPE_HTML"), ("text", "CL_TYPE_TEXT_ASCII"), ("binary", "CL_TYPE_BINARY_DATA"),
    ("7z", "CL_TYPE_7Z"), ("cab", "CL_TYPE_MSCAB"), ("tar", "CL_TYPE_POSIX_TAR"),
    ("ole2", "CL_TYPE_MSOLE2"), ("zstd", "CL_TYPE_BINARY_DATA"),
])
def test_sniffed_type_maps_to_what_clamav_calls_it(sniffed, clamav):
    assert clamav_types.clamav_type(sniffed) == clamav


def test_builtin_table_loads_as_many_entries_as_clamav_reports():
    # clamscan --debug says "Loaded 255 filetype definitions" for its built-in table; one of
    # them (an end-of-file offset) can never apply when typing a file, and is listed as such.
    sigs, skipped = parse_ftm(clamav_types.BUILTIN_FTM, "built-in")
    never = [s for s in skipped if "never applies" in s]
    assert len(sigs) + len(never) == 255


def test_ftm_lines_for_other_engine_levels_are_skipped_with_a_reason():
    sigs, skipped = parse_ftm(
        "0:0:aabb:New:CL_TYPE_ANY:CL_TYPE_ZIP:999\n"
        "0:0:aabb:Old:CL_TYPE_ANY:CL_TYPE_ZIP:1:20\n"
        "7:0:aabb:Odd:CL_TYPE_ANY:CL_TYPE_ZIP\n"
        "0:0:aabb:Kept:CL_TYPE_ANY:CL_TYPE_ZIP:\n", "x.ftm")
    assert [s.name for s in sigs] == ["Kept"]
    assert len(skipped) == 3 and all(s.startswith("x.ftm:") for s in skipped)


@pytest.mark.parametrize("line, message", [
    ("0:0:aabb:Name:CL_TYPE_ANY", "expected"),
    ("0:0:aabb:Name:CL_TYPE_ANY:CL_TYPE_NOPE", "unknown file type"),
    ("x:0:aabb:Name:CL_TYPE_ANY:CL_TYPE_ZIP", "bad magic type"),
    ("0:*:aabb:Name:CL_TYPE_ANY:CL_TYPE_ZIP", "bad offset"),
    ("0:0:aab:Name:CL_TYPE_ANY:CL_TYPE_ZIP", "bad magic"),
    ("1:0:zz:Name:CL_TYPE_ANY:CL_TYPE_ZIP", "unexpected character"),
    ("0:0:aabb:Name:CL_TYPE_ANY:CL_TYPE_ZIP:x", "functionality level"),
])
def test_malformed_ftm_lines_name_file_and_line(line, message):
    with pytest.raises(SignatureError) as err:
        parse_ftm("# comment\n" + line + "\n", "bad.ftm")
    assert err.value.file == "bad.ftm" and err.value.line == 2
    assert message in err.value.message


def _docx() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("[Content_Types].xml", "<Types/>")
        zf.writestr("_rels/.rels", "<Relationships/>")
        zf.writestr("docProps/app.xml", "<Properties/>")
        zf.writestr("word/document.xml", "<w:document/>")
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


@pytest.mark.parametrize("data, expected", [
    (b"just some words\n", "CL_TYPE_TEXT_ASCII"),
    ("caf\u00e9 au lait\n".encode(), "CL_TYPE_TEXT_ASCII"),  # ClamAV's ASCII test takes 8-bit
    (b"plain text then <script>alert(1)</script>", "CL_TYPE_HTML"),
    (b"Received: from x\nContent-Type: text/plain\n\nbody", "CL_TYPE_MAIL"),
    (b"MIME-Version: 1.0\nContent-Type: multipart/related\n\n", "CL_TYPE_MHTML"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "CL_TYPE_PNG"),
    (b"MZ" + b"\0" * 200, "CL_TYPE_MSEXE"),
    (b"\x01\x02" * 50 + b"MZ" + b"\0" * 60 + b"PE\0\0", "CL_TYPE_MSEXE"),
    (b"\x00\x01\x02\x03" * 40, "CL_TYPE_BINARY_DATA"),
    ("hello, world".encode("utf-16"), "CL_TYPE_TEXT_UTF16LE"),
    ("<html><body>hi</body></html>".encode("utf-16-le"), "CL_TYPE_HTML_UTF16"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x02" + b"\0" * 20, "CL_TYPE_MACHO_UNIBIN"),
    (b"\xca\xfe\xba\xbe\x00\x00\x00\x34" + b"\0" * 20, "CL_TYPE_JAVA"),
    (b"\x00\x00-lh5-" + b"\0" * 30, "CL_TYPE_LHA_LZH"),
    (b"ID3\x03" + b"\0" * 20, "CL_TYPE_IGNORED"),
    (b"070707" + b"0" * 70, "CL_TYPE_CPIO_ODC"),
])
def test_buffers_are_typed_as_clamav_types_them(data, expected):
    assert classify(data) == expected


def test_zip_with_word_members_is_an_ooxml_document():
    assert classify(_docx()) == "CL_TYPE_OOXML_WORD"
    assert clamav_types.container_type("zip", _docx()) == "CL_TYPE_OOXML_WORD"


def test_tar_is_posix_tar_and_cpio_variants_are_told_apart():
    assert classify(_tar()) == "CL_TYPE_POSIX_TAR"
    assert clamav_types.container_type("cpio", b"070701" + b"0" * 100) == "CL_TYPE_CPIO_NEWC"
    assert clamav_types.container_type("cpio", b"\xc7\x71" + b"\0" * 100) == "CL_TYPE_CPIO_OLD"


def test_database_magic_entries_replace_the_builtin_table():
    # As in ClamAV: one kind-0 entry in the database and the built-in magic is not loaded.
    matcher = _matcher("0:0:4c4d53:LMSAV test:CL_TYPE_ANY:CL_TYPE_SCRIPT\n")
    assert matcher.classify(b"LMS and more") == "CL_TYPE_SCRIPT"
    assert matcher.classify(_docx()) == "CL_TYPE_BINARY_DATA"


def test_database_body_entries_add_to_the_builtin_table():
    matcher = _matcher("1:*:4c4d534156:LMSAV marker:CL_TYPE_ANY:CL_TYPE_SCRIPT\n")
    assert matcher.classify(b"text with LMSAV inside\n") == "CL_TYPE_SCRIPT"
    assert matcher.classify(b"PK\x03\x04" + b"\0" * 100) == "CL_TYPE_ZIP"


def test_later_magic_entries_win_and_only_loaded_databases_cost_a_lookup():
    matcher = _matcher("0:0:4142:First:CL_TYPE_ANY:CL_TYPE_SCRIPT\n"
                       "0:0:414243:Second:CL_TYPE_ANY:CL_TYPE_RTF\n")
    assert matcher.classify(b"ABCD") == "CL_TYPE_RTF"
    assert matcher.classify(b"ABXX") == "CL_TYPE_SCRIPT"
    assert _matcher("").type_of(b"ABCD", "text") == "CL_TYPE_TEXT_ASCII"
    assert matcher.type_of(b"ABCD", "text") == "CL_TYPE_RTF"
    assert matcher.match(object()) == []


# -- against clamscan ----------------------------------------------------------------------------

_FRAGMENTS = (
    b"<html>", b"<script>", b"<IMG src=x>", b"<a href='x'>", b"MZ", b"\x90\x00" * 30 + b"PE\0\0",
    b"PK\x03\x04", b"Rar!\x1a\x07\x00", b"\nFrom: a@b\n", b"\nMIME-Version: 1.0\n",
    b"\nContent-Type: text/html\n", b"Received: x\n", b"\x00", b"\x01\x02\x03", b"\xff\xfe",
    b"plain words ", b"\r\n", b"\xe9\xe8", b"%PDF-1.", b"7z\xbc\xaf\x27\x1c", b"\x55\xaa",
    b"<?xml version=\"1.0\"", b"<Workbook", b"\x60\xea" + b"\0" * 7 + b"\x00\x02",
)


def _generated_samples(count: int) -> dict[str, bytes]:
    import random

    rnd = random.Random(20240601)
    samples = {}
    for n in range(count):
        parts = [rnd.choice(_FRAGMENTS) for _ in range(rnd.randint(1, 8))]
        if rnd.random() < 0.3:
            parts.insert(0, rnd.choice(_FRAGMENTS[:4]))
        if rnd.random() < 0.2:
            parts = ["".join(chr(b) for b in p).encode("utf-16-le", "replace") for p in parts]
        data = b"".join(parts) + bytes(rnd.randrange(256) for _ in range(
            rnd.choice([0, 0, 3, 600])))
        # clamscan passes over files of a few bytes without typing them.
        samples[f"s{n:03d}"] = data if len(data) >= 16 else data + b" plain words here"
    return samples


def _clamscan_types(tmp_path, samples: dict[str, bytes], ftm: str = "") -> dict[str, str]:
    import re
    import shutil
    import subprocess

    if shutil.which("clamscan") is None:
        pytest.skip("clamscan not installed")
    db = tmp_path / "db"
    db.mkdir()
    (db / "lmsav-test.ndb").write_text("Lmsav.Test.Never:0:*:deadbeefcafebabe0011deadbeef\n")
    if ftm:
        (db / "local.ftm").write_text(ftm)
    files = tmp_path / "files"
    files.mkdir()
    for name, data in samples.items():
        (files / name).write_bytes(data)
    proc = subprocess.run(
        ["clamscan", "--debug", "--gen-json", "--no-summary", "-d", str(db),
         *sorted(str(files / n) for n in samples)],
        capture_output=True, text=True, errors="replace",
    )
    found: dict[str, str] = {}
    for ftype, name in re.findall(r'"RootFileType":"([^"]+)",\s*"FileName":"([^"]+)"',
                                  proc.stderr + proc.stdout):
        found.setdefault(name, ftype)
    return found


@pytest.mark.integration
def test_generated_buffers_get_the_type_clamscan_gives_them(tmp_path):
    samples = _generated_samples(150)
    expected = _clamscan_types(tmp_path, samples)
    assert len(expected) == len(samples)
    mismatches = {n: (expected[n], classify(d)) for n, d in samples.items()
                  if classify(d) != expected[n]}
    assert mismatches == {}


@pytest.mark.integration
def test_database_ftm_changes_types_as_in_clamscan(tmp_path):
    samples = {"marked": b"xx LMSAV-TYPE marker\n", "docx": _docx(), "png": b"\x89PNG" + b"\0" * 9,
               "plain": b"nothing special\n"}
    ftm = ("0:0:89504e47:PNG as script:CL_TYPE_ANY:CL_TYPE_SCRIPT\n"
           "1:*:4c4d5341562d54595045:Marker:CL_TYPE_ANY:CL_TYPE_RTF\n")
    expected = _clamscan_types(tmp_path, samples, ftm)
    matcher = _matcher(ftm)
    assert {n: matcher.classify(d) for n, d in samples.items()} == expected


def test_container_types_follow_clamav_where_the_sniffed_type_does_not_tell():
    mhtml = b"MIME-Version: 1.0\nContent-Type: multipart/related; boundary=x\n\n--x\n"
    assert clamav_types.container_type("mail", mhtml) == "CL_TYPE_MHTML"
    assert clamav_types.container_type("mail", b"From: a@b\nTo: c@d\n\nhi\n") == "CL_TYPE_MAIL"
    assert clamav_types.container_type("7z", b"7z\xbc\xaf\x27\x1c") == "CL_TYPE_7Z"
    replaced = _matcher("0:0:4c4d53:LMSAV test:CL_TYPE_ANY:CL_TYPE_SCRIPT\n")
    assert replaced.container_type("zip", _docx()) == "CL_TYPE_BINARY_DATA"
    assert _matcher("").container_type("zip", _docx()) == "CL_TYPE_OOXML_WORD"
