"""UPX-packed executables are unpacked (``packed.exe//upx``) and the program inside is scanned.

Debian 12 has no UPX packer (upx-ucl left the archive), so the samples are packed here the way
UPX lays out a Windows program: a real program built by mingw-w64, its image compressed with
UCL's NRV2B, NRV2D or NRV2E into the second of two sections (UPX0 empty, UPX1 holding the data
and where execution starts), the original headers kept after the image. clamscan, which unpacks
UPX with its own decompressors, is the oracle on the same signatures.
"""

from __future__ import annotations

import lzma
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.containers import upx
from lmsav.scanner.containers.executable import ExecutableHandler
from lmsav.scanner.containers.pe_layout import read_layout
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_with

MINGW32 = "i686-w64-mingw32-gcc"  # ClamAV unpacks UPX in 32-bit programs only
needs_mingw = pytest.mark.skipif(shutil.which(MINGW32) is None, reason=f"{MINGW32} not installed")
THREAT = "Lmsav.Test.UpxEicar"
NRV2B, NRV2D, NRV2E, LZMA = 2, 5, 8, 14


# -- a UCL NRV encoder (the inverse of the decoder; greedy matches) --------------------------------

class _Bits:
    """UCL's 32-bit little-endian bit buffer: a word slot is reserved where it starts."""

    def __init__(self):
        self.out = bytearray()
        self.slot = -1
        self.word = 0
        self.left = 0

    def bit(self, b: int) -> None:
        if not self.left:
            self.flush()
            self.slot, self.word, self.left = len(self.out), 0, 32
            self.out += b"\0\0\0\0"
        self.left -= 1
        self.word |= b << self.left

    def byte(self, b: int) -> None:
        self.out.append(b)

    def flush(self) -> None:
        if self.slot >= 0:
            struct.pack_into("<I", self.out, self.slot, self.word)


def _gamma(bits: _Bits, value: int) -> None:
    """NRV2B's number code: the bits after the leading 1, each followed by "stop"."""
    digits = bin(value)[3:]
    for i, d in enumerate(digits):
        bits.bit(int(d))
        bits.bit(int(i == len(digits) - 1))


def _gamma_d(bits: _Bits, value: int) -> None:
    """NRV2D/2E's offset code, found by running its decoder backwards: each step reads a data
    bit and a stop bit, and when not stopping one more data bit (v = (v - 1) * 2 + bit)."""
    last, v = value & 1, value >> 1
    steps = []
    while v != 1:
        cont, u = v & 1, (v >> 1) + 1
        steps.append((u & 1, cont))
        v = u >> 1
    for data, cont in reversed(steps):
        bits.bit(data)
        bits.bit(0)
        bits.bit(cont)
    bits.bit(last)
    bits.bit(1)


def lzma_compress(data: bytes) -> bytes:
    """UPX's LZMA stream: its two bytes of properties (lc 3, lp 0, pb 2), then raw LZMA1."""
    raw = lzma.compress(data, format=lzma.FORMAT_RAW, filters=[
        {"id": lzma.FILTER_LZMA1, "lc": 3, "lp": 0, "pb": 2, "dict_size": 1 << 20}])
    return bytes([(3 + 0) << 3 | 2, 0 << 4 | 3]) + raw


def nrv_compress(data: bytes, method: int) -> bytes:
    if method == LZMA:
        return lzma_compress(data)
    bits = _Bits()
    pos = 0
    index: dict[bytes, int] = {}
    while pos < len(data):
        key = data[pos:pos + 3]
        prev = index.get(key) if len(key) == 3 else None
        length = 0
        if prev is not None and pos - prev <= 0x500:
            while pos + length < len(data) and data[prev + length] == data[pos + length] \
                    and length < 255:
                length += 1
        for k in range(pos, pos + max(length, 1)):
            index[data[k:k + 3]] = k
        if length >= 3:
            _match(bits, method, pos - prev, length)
            pos += length
        else:
            bits.bit(1)
            bits.byte(data[pos])
            pos += 1
    bits.bit(0)  # the end marker: offset code 0x1000002 and byte 0xFF
    if method == NRV2B:
        _gamma(bits, 0x1000002)
    else:
        _gamma_d(bits, 0x1000002)
    bits.byte(0xFF)
    bits.flush()
    return bytes(bits.out)


def _match(bits: _Bits, method: int, distance: int, count: int) -> None:
    """One back-reference of ``count`` bytes, ``distance`` back (count >= 3, distance <= 0x500)."""
    bits.bit(0)
    if method == NRV2B:
        code, low = ((distance - 1) >> 8) + 3, (distance - 1) & 0xFF
        _gamma(bits, code)
        bits.byte(low)
        length = count - 1
        if length <= 3:
            bits.bit(length >> 1)
            bits.bit(length & 1)
        else:
            bits.bit(0)
            bits.bit(0)
            _gamma(bits, length - 2)
        return
    length = count - 1
    if method == NRV2D:
        lbit = length >> 1 if length <= 3 else 0
    else:
        lbit = 1 if length <= 2 else 0
    combined = (distance - 1) * 2 + (1 - lbit)
    _gamma_d(bits, (combined >> 8) + 3)
    bits.byte(combined & 0xFF)
    if method == NRV2D:
        if length <= 3:
            bits.bit(length & 1)
        else:
            bits.bit(0)
            _gamma(bits, length - 2)
        return
    if length <= 2:
        bits.bit(length - 1)
    elif length <= 4:
        bits.bit(1)
        bits.bit(length - 3)
    else:
        bits.bit(0)
        _gamma(bits, length - 3)


# -- samples ------------------------------------------------------------------------------------

PROGRAM = """
#include <stdio.h>
__attribute__((used)) static const char marker[] = "%s";
int main(int argc, char **argv) { if (argc > 5) puts(marker); return 0; }
"""


@pytest.fixture(scope="module")
def program(tmp_path_factory) -> bytes:
    """A real 32-bit Windows program (mingw-w64) whose data holds the EICAR test string."""
    if shutil.which(MINGW32) is None:
        pytest.skip(f"{MINGW32} not installed")
    work = tmp_path_factory.mktemp("upx-program")
    (work / "p.c").write_text(PROGRAM % "".join(f"\\x{b:02x}" for b in EICAR))
    subprocess.run([MINGW32, "-O1", "-o", "p.exe", "p.c"], cwd=work, check=True,
                   capture_output=True)
    return (work / "p.exe").read_bytes()


def _align(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def image_of(program: bytes) -> bytes:
    """The program as the loader maps it (from its first section on), then its headers, which
    UPX keeps after the image for unpacking."""
    layout = read_layout(program, len(program))
    base = layout.sections[0].rva
    size_of_image, = struct.unpack_from("<I", program, _opt(program) + 56)
    image = bytearray(size_of_image - base)
    for s in layout.sections:
        chunk = program[s.raw:s.raw + min(s.rsz, s.vsz or s.rsz)]
        image[s.rva - base:s.rva - base + len(chunk)] = chunk
    return bytes(image) + program[:layout.headers_end]


def _opt(program: bytes) -> int:
    return struct.unpack_from("<I", program, 0x3C)[0] + 24


def pack(program: bytes, method: int = NRV2B, names=(b"UPX0", b"UPX1"),
         pack_header: bool = True, cut: int = 0) -> bytes:
    """``program`` packed as UPX lays out a win32 program (see the module docstring)."""
    return pack_image(image_of(program), len(program), method, names, pack_header, cut)


def pack_image(payload: bytes, original_size: int, method: int = NRV2B,
               names=(b"UPX0", b"UPX1"), pack_header: bool = True, cut: int = 0) -> bytes:
    packed = nrv_compress(payload, method)
    if cut:
        packed = packed[:-cut]
    stub = b"\x90" * 0x1FF + b"\xc3"  # stands for the decompressor UPX puts after the data
    upx1_data = (packed + stub).ljust(_align(len(packed) + len(stub), 0x200), b"\0")
    upx0_rva, upx0_vsz = 0x1000, _align(len(payload), 0x1000)
    upx1_rva, upx1_vsz = upx0_rva + upx0_vsz, _align(len(upx1_data), 0x1000)
    head = bytearray(0x400)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x80)
    struct.pack_into("<4sHHIIIHH", head, 0x80, b"PE\0\0", 0x14C, 2, 0, 0, 0, 0xE0, 0x0102)
    opt = 0x98
    struct.pack_into("<HBBIIIIII", head, opt, 0x10B, 2, 0, len(upx1_data), 0, upx0_vsz,
                     upx1_rva + len(packed), upx1_rva, upx1_rva + upx1_vsz)
    struct.pack_into("<IIIHHHHHHIIIIHH", head, opt + 28, 0x400000, 0x1000, 0x200, 4, 0, 0, 0,
                     4, 0, 0, upx1_rva + upx1_vsz, 0x400, 0, 3, 0)
    struct.pack_into("<I", head, opt + 92, 16)
    table = opt + 0xE0
    struct.pack_into("<8sIIIIIIHHI", head, table, names[0], upx0_vsz, upx0_rva, 0, 0x400,
                     0, 0, 0, 0, 0xE0000080)
    struct.pack_into("<8sIIIIIIHHI", head, table + 40, names[1], upx1_vsz, upx1_rva,
                     len(upx1_data), 0x400, 0, 0, 0, 0, 0xE0000040)
    if pack_header:
        struct.pack_into("<4sBBBBIIIIIBBBB", head, 0x3E0, b"UPX!", 13, 9, method, 8, 0, 0,
                         len(payload), len(packed), original_size, 0, 0, 0, 0)
    return bytes(head) + upx1_data


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("upx-db"), {
        "t.ndb": f"{THREAT}:0:*:{EICAR.hex()}\n",
    })


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("upx-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


def found_paths(engine: Engine, data: bytes, name: str = "packed.exe") -> dict[str, set[str]]:
    verdict = engine.scan(ScanObject(name, data=data))
    return {path: {t.name for t in r.threats} for r in verdict.walk() for path in [r.path]
            if r.threats}


# -- tests --------------------------------------------------------------------------------------


def test_the_encoder_and_decoder_agree_for_every_algorithm():
    data = b"".join(bytes([i % 7]) * (i % 13) + b"lmsav upx test %d " % i for i in range(400))
    for method in (NRV2B, NRV2D, NRV2E):
        packed = nrv_compress(data, method)
        assert len(packed) < len(data)
        assert upx.unpack_nrv(packed, 0, method, 1 << 20, Context(Limits())) == data


@pytest.mark.integration
@needs_mingw
@pytest.mark.parametrize("method", [NRV2B, NRV2D, NRV2E])
def test_packed_program_is_unpacked_and_scanned_as_clamscan_does(program, method, engine,
                                                                 db_dir, tmp_path):
    sample = pack(program, method)
    assert EICAR not in sample  # only an unpacker sees it
    assert found_paths(engine, sample) == {"packed.exe//upx": {THREAT}}
    path = tmp_path / "packed.exe"
    path.write_bytes(sample)
    assert clamscan_found(db_dir, [path]) == {"packed.exe": {THREAT}}


@pytest.mark.integration
@needs_mingw
def test_unpacked_program_is_rebuilt_with_its_own_sections(program):
    got = explode_with(ExecutableHandler(), ScanObject("packed.exe", data=pack(program)))
    assert [c.name for c in got] == ["upx"]
    unpacked = got[0].data
    assert sniff(unpacked) == "pe"
    original = [s.name for s in read_layout(program, len(program)).sections]
    assert [s.name for s in read_layout(unpacked, len(unpacked)).sections] == original
    assert EICAR in unpacked


@pytest.mark.integration
@needs_mingw
def test_renamed_sections_without_the_upx_header_are_still_unpacked(program, engine):
    """Packers and malware rename UPX's sections and wipe its header: the layout (an empty
    section, then the one execution starts in) is enough, and each algorithm is tried."""
    sample = pack(program, NRV2E, names=(b".text", b".data"), pack_header=False)
    assert found_paths(engine, sample) == {"packed.exe//upx": {THREAT}}


@pytest.mark.integration
@needs_mingw
def test_cut_stream_is_reported_corrupted(program, engine):
    verdict = engine.scan(ScanObject("packed.exe", data=pack(program, cut=200)))
    assert verdict.root.status == Status.CORRUPTED
    assert "UPX" in verdict.root.reason


@pytest.mark.integration
@needs_mingw
def test_an_ordinary_program_is_left_alone(program):
    """mingw's own programs have an empty .bss section too; execution starts in .text."""
    layout = read_layout(program, len(program))
    assert upx.packed_sections(program, len(program), layout) is None
    assert explode_with(ExecutableHandler(), ScanObject("p.exe", data=program)) == []


def test_an_unpacking_bomb_stops_at_the_size_limit():
    """A small file whose image unpacks to 4 MiB of zeros: reported over max_file_size, and the
    decompressor stops one byte past it instead of filling the whole image."""
    sample = pack_image(bytes(4 << 20), 1 << 20)
    assert len(sample) < 64 << 10
    limits = Limits(max_file_size=1 << 16)
    got = explode_with(ExecutableHandler(), ScanObject("bomb.exe", data=sample), limits)
    assert [(c.name, c.status, c.reason) for c in got] == \
        [("upx", Status.ERROR, "limit: filesize 65536")]


@pytest.mark.integration
@needs_mingw
def test_lookalike_of_another_packer_is_not_called_damaged(program, engine):
    """Other packers (FSG, MEW …) share the layout without UPX's names or header: when no
    algorithm unpacks such a file it is just a program, not a damaged UPX one."""
    sample = pack(program, names=(b".text", b".data"), pack_header=False, cut=200)
    verdict = engine.scan(ScanObject("packed.exe", data=sample))
    assert verdict.status == Status.CLEAN and not verdict.root.children


@pytest.mark.integration
@needs_mingw
def test_lzma_packed_program_is_unpacked(program, engine):
    """UPX --lzma. (clamscan recognises LZMA only by UPX's own decompressor code at the entry
    point, which this sample's stand-in stub does not have: lmsav alone is asserted.)"""
    assert found_paths(engine, pack(program, LZMA)) == {"packed.exe//upx": {THREAT}}
    assert found_paths(engine, pack(program, LZMA, pack_header=False)) == \
        {"packed.exe//upx": {THREAT}}
