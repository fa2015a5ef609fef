"""Objects embedded in a PowerPoint 97-2003 deck (ExOleObjStg records, zlib-compressed, in the
"PowerPoint Document" stream) are extracted (``deck.ppt//PowerPoint Document//ExOleObjStg-1//…``)
and scanned. The deck is built per [MS-PPT] (no Debian tool writes .ppt with an embedded object
from a script); clamscan on the same signatures is the oracle."""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from lmsav.scanner.containers.powerpoint import PowerPointHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_until, explode_with, zip_bytes
from tests.scanner.containers.test_ole2 import build_cfb, ole10native

THREAT = "Lmsav.Test.PptEicar"
RT_DOCUMENT, RT_DOCUMENT_ATOM, RT_EX_OLE_OBJ_STG = 0x03E8, 0x03E9, 0x1011
RT_USER_EDIT, RT_PERSIST_DIRECTORY = 0x0FF5, 0x1772


def record(rec_type: int, body: bytes, version: int = 0, instance: int = 0) -> bytes:
    """[MS-PPT] 2.3.1 RecordHeader (recVer 4 bits, recInstance 12 bits, recType, recLen)."""
    return struct.pack("<HHI", version | instance << 4, rec_type, len(body)) + body


def ex_ole_obj_stg(storage: bytes, compressed: bool = True) -> bytes:
    """2.10.34 ExOleObjStg: instance 1 = decompressed size and a zlib stream of the storage."""
    if compressed:
        body = struct.pack("<I", len(storage)) + zlib.compress(storage)
        return record(RT_EX_OLE_OBJ_STG, body, instance=1)
    return record(RT_EX_OLE_OBJ_STG, storage)


def document_stream(*objects: bytes) -> bytes:
    """A DocumentContainer (with its DocumentAtom), the object storages, a persist directory
    and a UserEditAtom, in the order PowerPoint writes them."""
    atom = record(RT_DOCUMENT_ATOM, struct.pack("<IIII", 5760, 4320, 10000, 7500) + bytes(24),
                  version=1)
    stream = record(RT_DOCUMENT, atom, version=0xF)
    offsets = []
    for obj in objects:
        offsets.append(len(stream))
        stream += obj
    persist = struct.pack("<I", 1 | len(offsets) + 1 << 20) + struct.pack(
        f"<{len(offsets) + 1}I", 0, *offsets)
    directory_at = len(stream)
    stream += record(RT_PERSIST_DIRECTORY, persist)
    stream += record(RT_USER_EDIT, struct.pack("<IIHHIII", 0, 0, 0, 0x0003, 0,
                                               directory_at, 1) + bytes(4))
    return stream


def deck(*objects: bytes) -> bytes:
    """A .ppt: "PowerPoint Document" and "Current User" streams in a compound file."""
    current_user = struct.pack("<IIIHHBBH", 20, 0xE391C05F, 0, 8, 0x03F4, 3, 0, 0) + b"lmsav\0\0\0"
    return build_cfb({
        "PowerPoint Document": document_stream(*objects),
        "Current User": record(0x0FF6, current_user),
    })


def embedded_package(filename: str, payload: bytes) -> bytes:
    """The storage of an embedded OLE1 Package object holding ``payload``."""
    return build_cfb({"\x01Ole10Native": ole10native(filename, payload), "\x03ObjInfo": b"\0" * 6})


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    md5 = hashlib.md5(EICAR).hexdigest()
    return write_db(tmp_path_factory.mktemp("ppt-db"), {"t.hdb": f"{md5}:{len(EICAR)}:{THREAT}\n"})


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("ppt-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


@pytest.mark.integration
def test_embedded_object_is_found_as_clamscan_finds_it(engine, db_dir, tmp_path):
    data = deck(ex_ole_obj_stg(embedded_package("invoice.exe", EICAR)))
    verdict = engine.scan(ScanObject("deck.ppt", data=data))
    assert [p for p, t in verdict.threats] == \
        ["deck.ppt//PowerPoint Document//ExOleObjStg-1//invoice.exe"]
    path = tmp_path / "deck.ppt"
    path.write_bytes(data)
    assert clamscan_found(db_dir, [path]) == {"deck.ppt": {THREAT}}


def test_every_object_is_extracted_compressed_or_not():
    first, second = embedded_package("a.txt", b"first"), embedded_package("b.txt", b"second")
    stream = document_stream(ex_ole_obj_stg(first), ex_ole_obj_stg(second, compressed=False))
    assert sniff(stream) == "powerpoint"
    got = explode_with(PowerPointHandler(), ScanObject("PowerPoint Document", data=stream))
    assert [(c.name, c.data) for c in got] == [("ExOleObjStg-1", first), ("ExOleObjStg-2", second)]


def test_damaged_object_keeps_what_was_read_and_reports_corrupted():
    storage = embedded_package("a.exe", EICAR * 50)
    broken = bytearray(ex_ole_obj_stg(storage))
    cut = len(broken) - 40
    broken[cut:] = b"\xff" * 40
    stream = document_stream(bytes(broken))
    got, reason = explode_until(Exception, PowerPointHandler(), ScanObject("s", data=stream))
    assert "ExOleObjStg-1" in reason
    assert [c.name for c in got] == ["ExOleObjStg-1"]
    assert got[0].data[:1024] == storage[:1024]  # what came before the damage


def test_record_running_past_the_stream_is_corrupted(engine):
    stream = document_stream(ex_ole_obj_stg(embedded_package("a.exe", EICAR)))[:-60]
    verdict = engine.scan(ScanObject("PowerPoint Document", data=stream))
    assert verdict.status == Status.INFECTED  # the object before the cut is still scanned
    assert verdict.root.reason.startswith("corrupted")


def test_archive_stored_in_the_stream_is_still_found():
    inner = zip_bytes({"eicar.com": EICAR})
    stream = document_stream(record(0x0FBA, inner))  # an unrelated atom carrying a zip
    got = explode_with(PowerPointHandler(), ScanObject("PowerPoint Document", data=stream))
    assert [(c.name, c.data[:len(inner)]) for c in got] == [("embedded.zip", inner)]
