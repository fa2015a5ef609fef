"""Files embedded in a OneNote section (``notes.one//file-1``) are extracted and scanned. The
section is laid out per [MS-ONESTORE] (no Debian tool writes OneNote files): the 1024-byte
header, then FileDataStoreObjects; clamscan on the same signatures is the oracle."""

from __future__ import annotations

import hashlib
import struct
import uuid
from pathlib import Path

import pytest

from lmsav.scanner.containers.onenote import OneNoteHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_until, explode_with, zip_bytes

THREAT = "Lmsav.Test.OneNoteEicar"
ONE_FILE_TYPE = uuid.UUID("7B5C52E4-D88C-4DA7-AEB1-5378D02996D3")
FILE_FORMAT = uuid.UUID("109ADD3F-911B-49F5-A5D0-1791EDC8AED8")
DATA_HEADER = uuid.UUID("BDE316E7-2665-4511-A4C4-8D4D0B7A9EAC")
DATA_FOOTER = uuid.UUID("71FBA722-0F79-4A0B-BB13-899256426B24")


def file_data_store_object(data: bytes) -> bytes:
    """2.6.13: guidHeader, cbLength, unused, reserved, FileData padded to 8 bytes, guidFooter."""
    padded = data + bytes(-len(data) % 8)
    return (DATA_HEADER.bytes_le + struct.pack("<QIQ", len(data), 0, 0) + padded
            + DATA_FOOTER.bytes_le)


def section(*files: bytes) -> bytes:
    """A .one file: the 2.3.1 Header (file type and format GUIDs, the writer versions), then the
    file data objects."""
    body = b"".join(file_data_store_object(f) for f in files)
    header = bytearray(1024)
    header[0:16] = ONE_FILE_TYPE.bytes_le
    header[16:32] = uuid.UUID(int=0x1234).bytes_le  # guidFile
    header[48:64] = FILE_FORMAT.bytes_le
    struct.pack_into("<IIII", header, 64, 0x2A, 0x2A, 0x2A, 0x2A)  # ffv* fields
    struct.pack_into("<Q", header, 0x94, 1024 + len(body))  # cbExpectedFileLength (approximate)
    return bytes(header) + body


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    md5 = hashlib.md5(EICAR).hexdigest()
    return write_db(tmp_path_factory.mktemp("one-db"), {"t.hdb": f"{md5}:{len(EICAR)}:{THREAT}\n"})


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("one-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


@pytest.mark.integration
def test_embedded_file_is_found_as_clamscan_finds_it(engine, db_dir, tmp_path):
    data = section(b"a picture, say\n" * 20, EICAR)
    assert sniff(data) == "onenote"
    verdict = engine.scan(ScanObject("notes.one", data=data))
    assert [p for p, t in verdict.threats] == ["notes.one//file-2"]
    path = tmp_path / "notes.one"
    path.write_bytes(data)
    assert clamscan_found(db_dir, [path]) == {"notes.one": {THREAT}}


def test_each_file_comes_out_exactly():
    files = [b"first", b"", b"x" * 1000, EICAR]
    got = explode_with(OneNoteHandler(), ScanObject("n.one", data=section(*files)))
    assert [(c.name, c.data) for c in got] == [(f"file-{i}", f) for i, f in enumerate(files, 1)]


def test_file_longer_than_the_section_is_read_to_the_end_and_corrupted():
    data = section(EICAR)
    at = data.index(DATA_HEADER.bytes_le)
    broken = bytearray(data)
    struct.pack_into("<Q", broken, at + 16, 1 << 40)
    got, reason = explode_until(Exception, OneNoteHandler(), ScanObject("n.one", data=bytes(broken)))
    assert got[0].data.startswith(EICAR)
    assert "announced" in reason


def test_a_section_without_files_is_clean(engine):
    verdict = engine.scan(ScanObject("n.one", data=section()))
    assert verdict.status == Status.CLEAN and not verdict.root.children


def test_archive_outside_the_file_objects_is_still_found():
    """A section whose file objects were removed, with a zip left in its bytes: it is found as
    an archive in plain data is (ClamAV looks for one in every file)."""
    inner = zip_bytes({"eicar.com": EICAR})
    data = section() + b"\0" * 64 + inner
    got = explode_with(OneNoteHandler(), ScanObject("n.one", data=data))
    assert [(c.name, c.data) for c in got] == [("embedded.zip", inner)]
