"""Damaged archives and odd member attributes: everything readable is scanned, then the archive
is reported CORRUPTED. Archives are made with the real tools (zip, 7z, bsdtar) and then damaged
byte by byte the way an attacker would; clamscan, on the same signatures, is the oracle."""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.archive import ArchiveHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import write_db
from tests.scanner.containers.helpers import explode_until, explode_with, run

# The sample the private signatures name: a body signature on its marker (the member must be
# decompressed to show it) and a hash of the whole sample (the member must come out whole).
MARKER = b"lmsav-archive-damage-marker-5123"
SAMPLE = b"#!/bin/sh\n# " + MARKER + b"\n" + b"echo 'padding line for compression'\n" * 200
WORDS = b" ".join([b"alpha", b"beta", b"gamma", b"delta"] * 3000)
THREATS = {"Lmsav.Test.DamageMarker", "Lmsav.Test.DamageSample"}

# Offsets in zip records (APPNOTE 4.3.7 and 4.3.12).
LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"
LOCAL_CRC, CENTRAL_CRC, CENTRAL_MADE_BY, CENTRAL_ATTRS = 14, 16, 5, 38


def signatures(directory: Path) -> Path:
    return write_db(directory, {
        "t.ndb": f"Lmsav.Test.DamageMarker:0:*:{MARKER.hex()}\n",
        "t.hdb": f"{hashlib.md5(SAMPLE).hexdigest()}:{len(SAMPLE)}:Lmsav.Test.DamageSample\n",
    })


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    return signatures(tmp_path_factory.mktemp("damage-db"))


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory):
    cache = tmp_path_factory.mktemp("damage-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


def need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")


def made_with(tmp_path: Path, tool: list[str], out: str, files: dict[str, bytes]) -> bytearray:
    """An archive of ``files`` (in this order) written by the real ``tool`` command."""
    need(tool[0])
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name, data in files.items():
        (src / name).write_bytes(data)
    run(*tool, str(tmp_path / out), *files, cwd=src)
    return bytearray((tmp_path / out).read_bytes())


def zip_made(tmp_path: Path, files: dict[str, bytes]) -> bytearray:
    return made_with(tmp_path, ["zip", "-q", "-9"], "x.zip", files)


def record(data: bytearray, magic: bytes, name: bytes) -> int:
    """Where the zip record of ``magic`` naming ``name`` starts."""
    at = data.find(magic)
    while at >= 0:
        length = struct.unpack_from("<H", data, at + (26 if magic == LOCAL else 28))[0]
        start = at + (30 if magic == LOCAL else 46)
        if data[start:start + length] == name:
            return at
        at = data.find(magic, at + 1)
    raise AssertionError(f"no record for {name!r}")


def bad_crc(data: bytearray, name: bytes) -> bytearray:
    """The member's CRC-32 changed in both its local header and the central directory."""
    for magic, offset in ((LOCAL, LOCAL_CRC), (CENTRAL, CENTRAL_CRC)):
        at = record(data, magic, name) + offset
        data[at] ^= 0xFF
    return data


def damaged_data(data: bytearray, name: bytes, nbytes: int = 10) -> bytearray:
    """``nbytes`` of the member's compressed data overwritten, its headers left intact."""
    at = record(data, LOCAL, name)
    name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
    start = at + 30 + name_len + extra_len + 4
    data[start:start + nbytes] = b"\xff" * nbytes
    return data


def with_attributes(data: bytearray, name: bytes, attrs: int, made_by: int = 3) -> bytearray:
    """The member's central-directory external attributes (and "made by" system) replaced."""
    at = record(data, CENTRAL, name)
    data[at + CENTRAL_MADE_BY] = made_by
    struct.pack_into("<I", data, at + CENTRAL_ATTRS, attrs)
    return data


def explode(data: bytes, name: str = "x.zip") -> list:
    return explode_with(ArchiveHandler(), ScanObject(name, data=bytes(data)))


def threats(engine, data: bytes, name: str) -> set[str]:
    return {t.name for _, t in engine.scan_bytes(bytes(data), name).threats}


# -- a member with a wrong CRC --------------------------------------------------------------------


@pytest.mark.parametrize("size", [len(SAMPLE), 300_000])
def test_member_with_a_bad_crc_is_read_whole_before_corrupted(tmp_path, size):
    body = (SAMPLE * (size // len(SAMPLE) + 1))[:size]
    data = bad_crc(zip_made(tmp_path, {"sample.sh": body, "after.txt": b"after"}), b"sample.sh")
    got, message = explode_until(Corrupted, ArchiveHandler(), ScanObject("x.zip", data=bytes(data)))
    # libarchive reports the bad CRC together with the last block: that block is kept.
    assert {c.name: c.data for c in got} == {"sample.sh": body, "after.txt": b"after"}
    assert "CRC" in message


def test_engine_finds_the_member_with_a_bad_crc_and_reports_corrupted(engine, tmp_path):
    data = bad_crc(zip_made(tmp_path, {"sample.sh": SAMPLE}), b"sample.sh")
    verdict = engine.scan_bytes(bytes(data), "crc.zip")
    assert {t.name for _, t in verdict.threats} == THREATS
    assert verdict.root.status == Status.CORRUPTED and "CRC" in verdict.root.reason


# -- a damaged member does not end the archive ------------------------------------------------------


def test_damaged_first_zip_member_does_not_stop_the_others(engine, tmp_path):
    data = damaged_data(zip_made(tmp_path, {"first.txt": WORDS, "sample.sh": SAMPLE}),
                        b"first.txt")
    # The oracles: unzip and bsdtar still extract the member after the damaged one.
    (tmp_path / "d.zip").write_bytes(data)
    if shutil.which("unzip"):
        out = subprocess.run(["unzip", "-p", str(tmp_path / "d.zip"), "sample.sh"],
                             capture_output=True, check=False).stdout
        assert out == SAMPLE
    got, _ = explode_until(Corrupted, ArchiveHandler(), ScanObject("d.zip", data=bytes(data)))
    assert {c.name: c.data for c in got if c.data is not None}.get("sample.sh") == SAMPLE
    first = [c for c in got if c.name == "first.txt"]
    assert first and (first[0].status == Status.CORRUPTED or WORDS.startswith(first[0].data))
    verdict = engine.scan_bytes(bytes(data), "d.zip")
    assert {t.name for _, t in verdict.threats} == THREATS
    assert verdict.root.status == Status.CORRUPTED


def test_damaged_first_7z_folder_does_not_stop_the_others(engine, tmp_path):
    need("7z")
    # Non-solid, so each member is a folder of its own; "aaa.txt" sorts first.
    data = made_with(tmp_path, ["7z", "a", "-bso0", "-bsp0", "-ms=off"], "x.7z",
                     {"aaa.txt": WORDS, "zzz.sh": SAMPLE})
    data[40:50] = b"\xff" * 10  # inside the first folder's packed stream (it starts at 32)
    got, _ = explode_until(Corrupted, ArchiveHandler(), ScanObject("d.7z", data=bytes(data)))
    assert {c.name: c.data for c in got}.get("zzz.sh") == SAMPLE
    assert threats(engine, data, "d.7z") == THREATS


def test_tar_with_a_damaged_first_header_is_read_from_the_next(engine, tmp_path):
    need("bsdtar")
    data = made_with(tmp_path, ["bsdtar", "-cf"], "x.tar", {"words.txt": WORDS, "sample.sh": SAMPLE})
    data[100:108] = b"garbage!"  # the first header's mode field: its checksum fails
    got, _ = explode_until(Corrupted, ArchiveHandler(), ScanObject("d.tar", data=bytes(data)))
    assert [c.name for c in got] == ["embedded.tar"]
    verdict = engine.scan_bytes(bytes(data), "d.tar")
    assert {(p, t.name) for p, t in verdict.threats} >= {
        ("d.tar//embedded.tar//sample.sh", "Lmsav.Test.DamageSample")}
    assert verdict.root.status == Status.INFECTED  # raw match; the damage is still recorded
    assert verdict.root.reason.startswith("corrupted")


def test_tar_with_a_damaged_header_in_the_middle_goes_on(tmp_path):
    need("bsdtar")
    data = made_with(tmp_path, ["bsdtar", "-cf"], "x.tar",
                     {"a.txt": b"A" * 100, "words.txt": WORDS, "sample.sh": SAMPLE})
    at = data.find(b"words.txt")
    data[at + 100:at + 108] = b"garbage!"
    got, message = explode_until(Corrupted, ArchiveHandler(), ScanObject("d.tar", data=bytes(data)))
    assert {c.name: c.data for c in got} == {"a.txt": b"A" * 100, "sample.sh": SAMPLE}
    assert "Damaged tar archive" in message


# -- external attributes never hide a member --------------------------------------------------------


ATTRIBUTES = {
    "all bits set": (0xFFFFFFFF, 3),
    "all bits set, made on DOS": (0xFFFFFFFF, 0),
    "symbolic link": (0o120777 << 16, 3),
    "character device": (0o020644 << 16, 3),
    "fifo": (0o010644 << 16, 3),
    "directory": (0o040755 << 16 | 0x10, 3),
}


@pytest.mark.parametrize("attrs,made_by", ATTRIBUTES.values(), ids=list(ATTRIBUTES))
def test_member_data_is_scanned_whatever_its_attributes_say(engine, tmp_path, attrs, made_by):
    data = with_attributes(zip_made(tmp_path, {"sample.sh": SAMPLE, "b.txt": b"b"}),
                           b"sample.sh", attrs, made_by)
    assert {c.name: c.data for c in explode(data)} == {"sample.sh": SAMPLE, "b.txt": b"b"}
    verdict = engine.scan_bytes(bytes(data), "attrs.zip")
    assert {t.name for _, t in verdict.threats} == THREATS
    assert verdict.status == Status.INFECTED


def test_directory_entry_holding_data_is_scanned(engine, tmp_path):
    # A name ending in "/" makes every reader call the entry a directory; its data is scanned.
    data = zip_made(tmp_path, {"sample.sh": SAMPLE})
    for magic, name_at in ((LOCAL, 30), (CENTRAL, 46)):
        at = record(data, magic, b"sample.sh") + name_at
        data[at + 8] = ord("/")  # "sample.sh" -> "sample.s/"
    assert {c.name: c.data for c in explode(data)} == {"sample.s/": SAMPLE}
    assert threats(engine, data, "dir.zip") == THREATS


# -- the same samples through the real clamscan -----------------------------------------------------


def damaged_samples(tmp_path: Path) -> dict[str, tuple[bytes, bool]]:
    """name -> (archive, whether it is damaged)."""
    samples = {}

    def sub(name: str) -> Path:
        path = tmp_path / name
        path.mkdir()
        return path

    samples["badcrc.zip"] = bad_crc(zip_made(sub("a"), {"sample.sh": SAMPLE}), b"sample.sh"), True
    samples["damaged-first.zip"] = damaged_data(
        zip_made(sub("b"), {"first.txt": WORDS, "sample.sh": SAMPLE}), b"first.txt"), True
    for i, (label, (attrs, made_by)) in enumerate(ATTRIBUTES.items()):
        data = with_attributes(zip_made(sub(f"c{i}"), {"sample.sh": SAMPLE}), b"sample.sh",
                               attrs, made_by)
        samples[f"attrs-{label.replace(' ', '-').replace(',', '')}.zip"] = data, False
    seven = made_with(sub("d"), ["7z", "a", "-bso0", "-bsp0", "-ms=off"], "x.7z",
                      {"aaa.txt": WORDS, "zzz.sh": SAMPLE})
    seven[40:50] = b"\xff" * 10
    samples["damaged-first.7z"] = seven, True
    tar = made_with(sub("e"), ["bsdtar", "-cf"], "x.tar", {"words.txt": WORDS, "sample.sh": SAMPLE})
    tar[100:108] = b"garbage!"
    samples["damaged-first.tar"] = tar, True
    return samples


@pytest.mark.integration
def test_lmsav_finds_what_clamscan_finds_in_damaged_archives(engine, db_dir, tmp_path):
    need("clamscan", "zip", "7z", "bsdtar")
    files = tmp_path / "files"
    files.mkdir()
    samples = damaged_samples(tmp_path)
    for name, (data, _) in samples.items():
        (files / name).write_bytes(data)
    clam = clamscan_found(db_dir, files.iterdir())
    assert clam
    for name, (data, damaged) in samples.items():
        verdict = engine.scan_path(files / name, name)
        ours = {t.name.removesuffix(".UNOFFICIAL") for _, t in verdict.threats}
        assert clam.get(name, set()) <= ours, f"{name}: clamscan found {clam.get(name)}, lmsav {ours}"
        assert ours == THREATS, name
        assert ("corrupted" in verdict.root.reason) == damaged, (name, verdict.root.reason)
