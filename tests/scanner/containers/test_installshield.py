"""InstallShield setup executables are opened and the files they carry scanned: the
``InstallShield`` stream of Windows Installer setups (``setup.exe//installshield//…``), and the
older overlay of plain files with InstallShield cabinets described by data1.hdr
(``setup.exe//installshield/…``).

No Debian tool builds InstallShield setups; the samples follow the layouts InstallShield writes
(see lmsav/scanner/containers/installshield.py), appended to a PE stub; clamscan on the same
signatures is the oracle.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from lmsav.scanner.containers.installshield import MAGIC, InstallShieldHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_until, explode_with

THREAT = "Lmsav.Test.InstallShieldEicar"
README = b"Setup will install the product on your computer.\r\n" * 40
NAME_KEY = bytes((0xEC, 0xCA, 0x79, 0xF8))


def pe_stub() -> bytes:
    """A PE32 setup stub with two sections (.text, .rdata), headers per the PE/COFF
    specification. Two, because ClamAV only measures the overlay of a PE with more than one."""
    dos = bytearray(0x40)
    dos[0:2] = b"MZ"
    struct.pack_into("<I", dos, 0x3C, 0x40)
    coff = struct.pack("<4sHHIIIHH", b"PE\0\0", 0x14C, 2, 0, 0, 0, 0xE0, 0x0102)
    opt = bytearray(0xE0)
    struct.pack_into("<HBBIIIIII", opt, 0, 0x10B, 1, 0, 0x200, 0x200, 0, 0x1000, 0x1000, 0x2000)
    struct.pack_into("<IIIHHHHHHIIIIHH", opt, 28, 0x400000, 0x1000, 0x200, 4, 0, 0, 0, 4, 0, 0,
                     0x3000, 0x200, 0, 2, 0)
    struct.pack_into("<I", opt, 92, 16)
    text = struct.pack("<8sIIIIIIHHI", b".text", 0x200, 0x1000, 0x200, 0x200, 0, 0, 0, 0,
                       0x60000020)
    rdata = struct.pack("<8sIIIIIIHHI", b".rdata", 0x200, 0x2000, 0x200, 0x400, 0, 0, 0, 0,
                        0x40000040)
    head = (bytes(dos) + coff + bytes(opt) + text + rdata).ljust(0x200, b"\0")
    return head + b"\xc3".ljust(0x200, b"\x90") + b"InstallShield setup stub".ljust(0x200, b"\0")


# -- the InstallShield stream (Windows Installer setups) ------------------------------------------

def obfuscated(name: bytes, data: bytes) -> bytes:
    """zlib data XORed with the key made from the name, each byte's nibbles then swapped."""
    key = bytes(c ^ NAME_KEY[i % 4] for i, c in enumerate(name))
    packed = zlib.compress(data)
    out = bytearray()
    for i, b in enumerate(packed):
        b ^= key[(i & 0x3FF) % len(key)]
        out.append(((b << 4) | (b >> 4)) & 0xFF)
    return bytes(out)


def msi_stream(files: dict[str, bytes]) -> bytes:
    out = MAGIC + struct.pack("<I", len(files)) + bytes(28)
    for name, data in files.items():
        body = obfuscated(name.encode(), data)
        out += name.encode().ljust(260, b"\0") + struct.pack("<IIQII", 6, 0, len(body), 0, 1)
        out += bytes(28) + body
    return out


def msi_setup(files: dict[str, bytes]) -> bytes:
    """A stub, some bytes (the linker's debug directory in real setups), then the stream."""
    return pe_stub() + b"NB10\0\0\0\0" + bytes(97) + msi_stream(files)


# -- the older overlay, with cabinets -------------------------------------------------------------

def overlay(files: list[tuple[str, bytes]]) -> bytes:
    return b"".join(f"{name}\0Disk1\\{name}\0{'1.0.0.0'}\0{len(data)}\0".encode() + data
                    for name, data in files)


def cabinet(payloads: list[bytes]) -> tuple[bytes, list[tuple[int, int]]]:
    """A dataN.cab body: a header, then each file as raw deflate chunks after 16-bit sizes.
    Returns the bytes and (offset, packed size) of each file."""
    out = bytearray(b"ISc(" + bytes(508))
    where = []
    for data in payloads:
        start = len(out)
        for i in range(0, len(data), 40):
            chunk = zlib.compressobj(9, zlib.DEFLATED, -15)
            raw = chunk.compress(data[i:i + 40]) + chunk.flush()
            out += struct.pack("<H", len(raw)) + raw
        where.append((start, len(out) - start))
    return bytes(out), where


def header(files: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """data1.hdr: the ISc( header, the object table and its file items (name, data, cabinet
    number, offset and packed size in that cabinet)."""
    data_off, dirs_off = 0x200, 0x100
    table = data_off + dirs_off
    items = bytearray()
    names = bytearray()
    item_size = 87
    names_at = 4 + item_size * len(files)  # after the one-entry directory table and the items
    for name, data, cab, offset, packed in files:
        name_off = names_at + len(names)
        names += name.encode() + b"\0"
        item = struct.pack("<HQQQ", 4, len(data), packed, offset) + hashlib.md5(data).digest()
        item += struct.pack("<QIIIHIIIIIBH", 0, 0, 0, name_off, 0, 0, 0, 0, 0, 0, 0, cab)
        assert len(item) == item_size
        items += item
    hdr = bytearray(table)
    struct.pack_into("<IIIII", hdr, 0, 0x28635349, 0, 0, data_off, 0)
    struct.pack_into("<I", hdr, data_off + 12, dirs_off)
    struct.pack_into("<II", hdr, data_off + 40, len(files), 4)  # file count, directory table size
    dir_table = struct.pack("<I", names_at + len(names))
    names += b"Program Files\0"
    return bytes(hdr) + dir_table + bytes(items) + bytes(names)


def cab_setup(plain: bytes) -> bytes:
    cab1, where1 = cabinet([README])
    cab2, where2 = cabinet([plain])
    hdr = header([("readme.txt", README, 1, *where1[0]), ("eicar.com", plain, 2, *where2[0])])
    return pe_stub() + overlay([("data1.cab", cab1), ("data1.hdr", hdr), ("data2.cab", cab2),
                                ("setup.ini", b"[Startup]\r\n")])


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    md5 = hashlib.md5(EICAR).hexdigest()
    return write_db(tmp_path_factory.mktemp("is-db"), {"t.hdb": f"{md5}:{len(EICAR)}:{THREAT}\n"})


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("is-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


SAMPLES = {
    "msi": (lambda: msi_setup({"Setup.ini": b"[Startup]\r\n", "eicar.com": EICAR}),
            "setup.exe//installshield//eicar.com"),
    # (ClamAV reads a file only when more bytes follow it: the threat is not the last file.)
    "plain": (lambda: pe_stub() + overlay([("eicar.com", EICAR), ("setup.ini", b"[Startup]\r\n")]),
              "setup.exe//installshield/eicar.com"),
    "cabinet": (lambda: cab_setup(EICAR), "setup.exe//installshield/data2.cab/eicar.com"),
}


@pytest.mark.integration
@pytest.mark.parametrize("kind", SAMPLES)
def test_setup_files_are_found_as_clamscan_finds_them(kind, engine, db_dir, tmp_path):
    build, expected = SAMPLES[kind]
    data = build()
    verdict = engine.scan(ScanObject("setup.exe", data=data))
    assert [p for p, t in verdict.threats] == [expected]
    path = tmp_path / "setup.exe"
    path.write_bytes(data)
    assert clamscan_found(db_dir, [path]) == {"setup.exe": {THREAT}}


def test_stream_files_come_out_exactly():
    files = {"a.ini": b"[a]\r\n", "big.bin": bytes(range(256)) * 600, "eicar.com": EICAR}
    stream = msi_stream(files)
    assert sniff(stream) == "installshield"
    got = explode_with(InstallShieldHandler(), ScanObject("installshield", data=stream))
    assert [(c.name, c.data) for c in got] == list(files.items())


def test_cut_stream_keeps_the_files_before_the_cut():
    stream = msi_stream({"eicar.com": EICAR, "big.bin": bytes(50000)})
    got, reason = explode_until(Exception, InstallShieldHandler(),
                                ScanObject("s", data=stream[:-20]))
    assert [(c.name, c.data) for c in got] == [("eicar.com", EICAR)]
    assert "big.bin" in reason


def test_cabinet_file_outside_its_cabinet_is_corrupted(engine):
    data = bytearray(cab_setup(EICAR))
    at = data.index(b"data2.cab\0") + len("data2.cab\0Disk1\\data2.cab\0")
    data[at:at + 8] = b"1.0.0.0\0"  # same length: the cabinet is still where it was …
    size_at = at + 8
    end = data.index(b"\0", size_at)
    data[size_at:end] = b"5".rjust(end - size_at, b"0")  # … but declared 5 bytes long
    verdict = engine.scan(ScanObject("setup.exe", data=bytes(data)))
    member = next(r for r in verdict.walk()
                  if r.path == "setup.exe//installshield/data2.cab/eicar.com")
    assert member.status == Status.CORRUPTED
