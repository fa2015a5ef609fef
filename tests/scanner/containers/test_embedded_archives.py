"""An archive behind junk or text (128 or 1,000 bytes put in front of a zip, 7z or ARJ made by the
real tools) is found as ClamAV finds it and unpacked; clamscan, on the same signatures, is the
oracle."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from lmsav.scanner import filetype
from lmsav.scanner.containers import handler_for
from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import write_db
from tests.scanner.containers.helpers import explode_with, run

MARKER = b"lmsav-embedded-archive-marker-7741"
SAMPLE = b"#!/bin/sh\n# " + MARKER + b"\n" + b"echo 'padding line for compression'\n" * 200
THREATS = {"Lmsav.Test.EmbeddedMarker", "Lmsav.Test.EmbeddedSample"}
TEXT = b"Dear customer, please find the attached document for your review.\n" * 40
TOOLS = {
    "zip": ["zip", "-q", "-9"],
    "7z": ["7z", "a", "-bso0", "-bsp0"],
    "arj": ["arj", "a", "-m1"],
}
FRONTS = {
    "text128": TEXT[:128],
    "text1000": TEXT[:1000],
    "junk128": b"\0" + os.urandom(127),  # binary data (a NUL near the start says so)
    "junk1000": b"\0" + os.urandom(999),
}


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("embedded-db"), {
        "t.ndb": f"Lmsav.Test.EmbeddedMarker:0:*:{MARKER.hex()}\n",
        "t.hdb": f"{hashlib.md5(SAMPLE).hexdigest()}:{len(SAMPLE)}:Lmsav.Test.EmbeddedSample\n",
    })


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("embedded-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """The sample (compressed, so only an unpacker sees it) in a zip, a 7z and an ARJ."""
    root = tmp_path_factory.mktemp("embedded-archives")
    (root / "sample.sh").write_bytes(SAMPLE)
    (root / "words.txt").write_bytes(b" ".join([b"alpha", b"beta", b"gamma"] * 3000))
    made = {}
    for kind, tool in TOOLS.items():
        if shutil.which(tool[0]) is None:
            continue
        run(*tool, str(root / f"a.{kind}"), "sample.sh", "words.txt", cwd=root)
        made[kind] = (root / f"a.{kind}").read_bytes()
        assert MARKER not in made[kind]
    return made


def archive(archives: dict[str, bytes], kind: str) -> bytes:
    if kind not in archives:
        pytest.skip(f"{TOOLS[kind][0]} not installed")
    return archives[kind]


# -- finding them ---------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("kind", TOOLS)
def test_archive_behind_junk_or_text_is_located(archives, kind, front):
    data = FRONTS[front] + archive(archives, kind)
    assert filetype.locate(data) == (kind, len(FRONTS[front]))
    assert filetype.sniff(data) == kind
    # Something after the archive (a mail's closing text) changes nothing.
    assert filetype.locate(data + TEXT[:300]) == (kind, len(FRONTS[front]))


def test_zip_is_found_by_its_directory_at_any_distance(archives):
    front = TEXT * (filetype.EMBEDDED_WINDOW // len(TEXT) + 10)  # beyond the search window
    assert len(front) > filetype.EMBEDDED_WINDOW
    assert filetype.locate(front + archive(archives, "zip")) == ("zip", len(front))


def test_archive_at_the_start_keeps_offset_zero(archives):
    for kind in archives:
        assert filetype.locate(archives[kind]) == (kind, 0)


def test_lookalike_signatures_are_not_archives():
    # Each signature with nothing valid after it: the text or data stays what it was.
    assert filetype.locate(TEXT + b"PK\x03\x04 is how a zip starts\n" + TEXT) == ("text", 0)
    assert filetype.locate(b"\0" * 100 + b"7z\xbc\xaf\x27\x1c" + os.urandom(64)) == ("binary", 0)
    assert filetype.locate(b"\0" * 100 + b"\x60\xea\x30\x00" + os.urandom(64)) == ("binary", 0)
    assert filetype.locate(b"\0" * 100 + b"Rar!\x1a\x07\x00" + os.urandom(64)) == ("binary", 0)
    assert filetype.locate(b"\0" * 100 + b"PK\x05\x06" + b"\0" * 18) == ("binary", 0)


def test_hex_dump_is_not_binary_noise():
    # A text hex dump of an archive holds no archive: nothing is unpacked from it.
    dump = binascii.hexlify(b"7z\xbc\xaf\x27\x1c" + b"\0" * 30) + b"\n"
    assert filetype.locate(TEXT + dump) == ("text", 0)


def test_a_flood_of_signatures_is_checked_only_so_far():
    # A file of little else than ARJ signatures: the search gives up after a bounded number
    # of them, and the file stays data.
    data = b"x" + (b"\x60\xea" + b"\0" * 7 + b"\x00\x02") * 100_000
    assert filetype.locate(data) == ("binary", 0)


# -- unpacking them -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", TOOLS)
def test_handler_yields_the_text_before_and_the_archive(archives, kind):
    arc = archive(archives, kind)
    data = TEXT[:1000] + arc
    handler = handler_for(kind)
    got = {c.name: c.data for c in explode_with(handler, ScanObject("x", data=data))}
    assert got == {"prefix": TEXT[:1000], f"embedded.{kind}": arc}


def test_junk_before_an_archive_is_not_a_member(archives):
    arc = archive(archives, "7z")
    got = explode_with(handler_for("7z"), ScanObject("x", data=FRONTS["junk128"] + arc))
    assert [c.name for c in got] == ["embedded.7z"]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("kind", TOOLS)
def test_engine_finds_the_sample_behind_junk_or_text(engine, archives, kind, front):
    data = FRONTS[front] + archive(archives, kind)
    verdict = engine.scan_bytes(data, f"{front}.{kind}")
    assert {t.name for _, t in verdict.threats} == THREATS
    assert (f"{front}.{kind}//embedded.{kind}//sample.sh", "Lmsav.Test.EmbeddedSample") in \
        {(p, t.name) for p, t in verdict.threats}
    assert verdict.status == Status.INFECTED
    assert all(r.status in (Status.CLEAN, Status.INFECTED) for r in verdict.walk())


def test_text_in_front_is_still_decoded(engine, archives):
    # Appending an archive must not turn off what the text itself carries (here base64).
    encoded = base64.encodebytes(SAMPLE)
    data = b"Here is the script, encoded:\n\n" + encoded + b"\n" + archive(archives, "zip")
    verdict = engine.scan_bytes(data, "mixed.txt")
    paths = {p for p, t in verdict.threats if t.name == "Lmsav.Test.EmbeddedSample"}
    assert "mixed.txt//embedded.zip//sample.sh" in paths
    assert any(p.startswith("mixed.txt//prefix//") for p in paths), paths


def test_file_on_disk_is_read_the_same_way(engine, archives, tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(FRONTS["junk1000"] + archive(archives, "arj"))
    assert {t.name for _, t in engine.scan_path(path, "t.bin").threats} == THREATS


# -- the same samples through the real clamscan -----------------------------------------------------


@pytest.mark.integration
def test_lmsav_finds_what_clamscan_finds_behind_junk(engine, db_dir, archives, tmp_path):
    if shutil.which("clamscan") is None:
        pytest.skip("clamscan not installed")
    files = tmp_path / "files"
    files.mkdir()
    for kind, arc in archives.items():
        (files / f"plain.{kind}").write_bytes(arc)
        for front, head in FRONTS.items():
            (files / f"{front}.{kind}").write_bytes(head + arc)
            (files / f"{front}-tail.{kind}").write_bytes(head + arc + TEXT[:300])
    clam = clamscan_found(db_dir, files.iterdir())
    assert clam
    for path in sorted(files.iterdir()):
        verdict = engine.scan_path(path, path.name)
        ours = {t.name.removesuffix(".UNOFFICIAL") for _, t in verdict.threats}
        assert clam.get(path.name, set()) <= ours, \
            f"{path.name}: clamscan found {clam.get(path.name)}, lmsav {ours}"
        assert ours == THREATS and verdict.status == Status.INFECTED, path.name
