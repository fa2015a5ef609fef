"""Compiled AutoIt scripts (EA05 and EA06) carried by an executable are opened
(``script.exe//autoit//…``) and their files decrypted, decompressed and scanned.

No Debian tool compiles AutoIt, so the script data is built here per its layout (see
lmsav/scanner/containers/autoit.py), with key streams written out independently of lmsav's and
an LZSS encoder, and appended to a PE stub as Aut2Exe appends it; clamscan on the same
signatures is the oracle.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.containers.autoit import MARKER, AutoitHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_until, explode_with
from tests.scanner.containers.test_sfx import pe_stub

THREAT = "Lmsav.Test.AutoitEicar"
SCRIPT = b'; installer\r\nFileInstall("eicar.com", @TempDir & "\\\\eicar.com")\r\n' * 30
KEY_MATERIAL = bytes(range(16))


# -- key streams, as the format defines them ----------------------------------------------------

def mt_bytes(seed: int, n: int) -> bytes:
    """MT19937 (init_genrand seeding), bits 1-8 of each tempered output."""
    mt = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        mt.append((0x6C078965 * (mt[-1] ^ (mt[-1] >> 30)) + i) & 0xFFFFFFFF)
    out, index = bytearray(), 624
    for _ in range(n):
        if index == 624:
            for i in range(624):
                y = (mt[i] & 0x80000000) | (mt[(i + 1) % 624] & 0x7FFFFFFF)
                mt[i] = mt[(i + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            index = 0
        y = mt[index]
        index += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        out.append((y >> 1) & 0xFF)
    return bytes(out)


def lame_bytes(seed: int, n: int) -> bytes:
    """EA06's generator: 17 words, each step word[c0] = rol(word[c0], 9) + rol(word[c1], 13)."""
    seed &= 0xFFFF
    words = []
    for _ in range(17):
        seed = (1 - seed * 0x53A9B4FB) & 0xFFFFFFFF
        words.append(seed)
    state = [0, 10]

    def rol(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF

    def step() -> int:
        c0, c1 = state
        words[c0] = (rol(words[c0], 9) + rol(words[c1], 13)) & 0xFFFFFFFF
        value = words[c0]
        state[0], state[1] = (c0 - 1) % 17, (c1 - 1) % 17
        return value

    for _ in range(9):
        step()
    out = bytearray()
    for _ in range(n):
        step()
        out.append(step() >> 24)  # the second word as a double in [0, 1), times 256
    return bytes(out)


def xor(data: bytes, stream: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, stream))


# -- the LZSS encoder -----------------------------------------------------------------------------

class _Writer:
    def __init__(self):
        self.bits: list[int] = []

    def put(self, value: int, width: int) -> None:
        self.bits.extend((value >> (width - 1 - i)) & 1 for i in range(width))

    def data(self) -> bytes:
        padded = self.bits + [0] * (-len(self.bits) % 16)
        return bytes(int("".join(map(str, padded[i:i + 8])), 2)
                     for i in range(0, len(padded), 8))


def lzss(data: bytes, literal_bit: int) -> bytes:
    w = _Writer()
    pos = 0
    while pos < len(data):
        best_len, best_dist = 0, 0
        for dist in range(1, min(pos, 4096) + 1):
            n = 0
            while pos + n < len(data) and data[pos + n - dist] == data[pos + n] and n < 600:
                n += 1
            if n > best_len:
                best_len, best_dist = n, dist
        if best_len >= 3:
            w.put(1 - literal_bit, 1)
            w.put(best_dist, 15)
            _put_length(w, best_len - 3)
            pos += best_len
        else:
            w.put(literal_bit, 1)
            w.put(data[pos], 8)
            pos += 1
    return w.data()


def _put_length(w: _Writer, rest: int) -> None:
    for width in (2, 3, 5):
        full = (1 << width) - 1
        if rest < full:
            w.put(rest, width)
            return
        w.put(full, width)
        rest -= full
    while rest >= 0xFF:
        w.put(0xFF, 8)
        rest -= 0xFF
    w.put(rest, 8)


# -- the script data -------------------------------------------------------------------------------

EA05 = {"version": b"5", "tag": 0xCEB06DFF, "kind": (0x29BC, 0xA25E), "path": (0x29AC, 0xF25E),
        "size": 0x45AA, "crc": 0xC3D2, "literal": 0, "wide": False}
EA06 = {"version": b"6", "tag": 0x52CA436B, "kind": (0xADBC, 0xB33F), "path": (0xF820, 0xF479),
        "size": 0x87BC, "crc": 0xA685, "literal": 1, "wide": True}


def compiled(fmt: dict, files: list[tuple[str, str, bytes, bool]]) -> bytes:
    """The data Aut2Exe appends: marker, version, key material, then per file (kind, source
    path, data, compressed) one obfuscated entry."""
    stream = lame_bytes if fmt["wide"] else mt_bytes
    out = MARKER + b"AU3!EA0" + fmt["version"] + KEY_MATERIAL
    for kind, path, data, compress in files:
        out += struct.pack("<I", fmt["tag"])
        for text, (len_xor, seed) in ((kind, fmt["kind"]), (path, fmt["path"])):
            raw = text.encode("utf-16-le" if fmt["wide"] else "latin-1")
            out += struct.pack("<I", len(text) ^ len_xor) + xor(raw, stream(len(text) + seed,
                                                                             len(raw)))
        body = data
        if compress:
            body = b"EA0" + fmt["version"] + struct.pack(">I", len(data)) + lzss(
                data, fmt["literal"])
        data_seed = 0x2477 if fmt["wide"] else 0x22AF + sum(KEY_MATERIAL)
        out += bytes([1 if compress else 0]) + struct.pack(
            "<III", len(body) ^ fmt["size"], len(data) ^ fmt["size"], 0x1234 ^ fmt["crc"])
        out += bytes(16) + xor(body, stream(data_seed, len(body)))
    return out


def script_exe(fmt: dict, compress: bool = True) -> bytes:
    files = [(">>>AUTOIT SCRIPT<<<", "C:\\build\\setup.au3", SCRIPT, compress),
             (">>>AUTOIT NO CMDEXECUTE<<<", "C:\\build\\eicar.com", EICAR, compress)]
    return pe_stub() + compiled(fmt, files)


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    md5 = hashlib.md5(EICAR).hexdigest()
    return write_db(tmp_path_factory.mktemp("au3-db"), {"t.hdb": f"{md5}:{len(EICAR)}:{THREAT}\n"})


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("au3-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


@pytest.mark.integration
@pytest.mark.parametrize("fmt", [EA05, EA06], ids=["EA05", "EA06"])
@pytest.mark.parametrize("compress", [True, False], ids=["compressed", "stored"])
def test_installed_file_is_found_as_clamscan_finds_it(fmt, compress, engine, db_dir, tmp_path):
    data = script_exe(fmt, compress)
    verdict = engine.scan(ScanObject("script.exe", data=data))
    assert [p for p, t in verdict.threats] == ["script.exe//autoit//eicar.com"]
    path = tmp_path / "script.exe"
    path.write_bytes(data)
    assert clamscan_found(db_dir, [path]) == {"script.exe": {THREAT}}


@pytest.mark.parametrize("fmt", [EA05, EA06], ids=["EA05", "EA06"])
def test_every_file_comes_out_exactly(fmt):
    blob = compiled(fmt, [(">>>AUTOIT SCRIPT<<<", "s.au3", SCRIPT, True),
                          (">>>AUTOIT NO CMDEXECUTE<<<", "C:\\x\\data.bin", bytes(3000), True),
                          (">>>AUTOIT NO CMDEXECUTE<<<", "C:\\x\\raw.txt", b"raw", False)])
    assert sniff(blob) == "autoit"
    got = explode_with(AutoitHandler(), ScanObject("autoit", data=blob))
    assert [(c.name, c.data) for c in got] == [
        ("script.au3", SCRIPT), ("data.bin", bytes(3000)), ("raw.txt", b"raw")]


def test_cut_script_data_keeps_the_files_before_the_cut():
    blob = compiled(EA05, [(">>>AUTOIT NO CMDEXECUTE<<<", "a.com", EICAR, False),
                           (">>>AUTOIT NO CMDEXECUTE<<<", "b.com", SCRIPT, True)])
    got, reason = explode_until(Exception, AutoitHandler(), ScanObject("a", data=blob[:-10]))
    assert [(c.name, c.data) for c in got] == [("a.com", EICAR)]
    assert "announced" in reason


def test_marker_without_entries_is_corrupted_not_clean(engine):
    fake = MARKER + b"AU3!EA05" + bytes(16) + b"\xff" * 64
    verdict = engine.scan(ScanObject("s.exe", data=pe_stub() + fake))
    autoit = next(r for r in verdict.walk() if r.path == "s.exe//autoit")
    assert autoit.status == Status.CORRUPTED


MINGW = "i686-w64-mingw32"


@pytest.mark.integration
@pytest.mark.skipif(shutil.which(f"{MINGW}-windres") is None, reason="mingw-w64 not installed")
def test_script_kept_as_a_resource_is_found(engine, tmp_path):
    """AutoIt 3.3 keeps the script data in an RT_RCDATA resource named SCRIPT, not the overlay:
    a real program linked by mingw-w64 with such a resource. (clamscan 1.4 misses this one: it
    keeps the first ten embedded-type matches of a file, and the MZ-like bytes of mingw's
    runtime use them up before the script's marker.)"""
    (tmp_path / "script.bin").write_bytes(compiled(EA06, [
        (">>>AUTOIT NO CMDEXECUTE<<<", "C:\\build\\eicar.com", EICAR, True)]))
    (tmp_path / "r.rc").write_text('SCRIPT RCDATA "script.bin"\n')
    (tmp_path / "p.c").write_text("int main(void) { return 0; }\n")
    for cmd in ([f"{MINGW}-windres", "r.rc", "-O", "coff", "-o", "r.o"],
                [f"{MINGW}-gcc", "-O1", "-o", "script.exe", "p.c", "r.o"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    path = tmp_path / "script.exe"
    verdict = engine.scan_path(path, name="script.exe")
    assert [p for p, t in verdict.threats] == ["script.exe//autoit//eicar.com"]
