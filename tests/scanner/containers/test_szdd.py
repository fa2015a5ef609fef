"""MS compress.exe files (SZDD, KWAJ) expand into the file they hold, named as the user knew it."""

from __future__ import annotations

import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from lmsav.scanner.containers import Corrupted, Unsupported
from lmsav.scanner.containers.szdd import KWAJ_MAGIC, SZDD_MAGIC, SzddHandler
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import clamscan_found, explode_until, explode_with

PAYLOAD = EICAR + b"\r\n" + b"the quick brown fox jumps over the lazy dog. " * 40

needs_mscompress = pytest.mark.skipif(
    shutil.which("mscompress") is None, reason="Debian package mscompress not installed"
)


def szdd_literals(data: bytes, last_char: bytes = b"\0") -> bytes:
    """An SZDD file written the simplest valid way: every byte a literal (flag bytes 0xFF)."""
    body = bytearray()
    for pos in range(0, len(data), 8):
        group = data[pos:pos + 8]
        body += bytes([(1 << len(group)) - 1]) + group
    return SZDD_MAGIC + b"A" + last_char + len(data).to_bytes(4, "little") + bytes(body)


def szdd_spaces_bomb(groups: int) -> bytes:
    """Only matches: each group of 17 bytes expands to 8 x 18 spaces from the initial window."""
    group = b"\x00" + b"\x00\x0f" * 8
    size = groups * 8 * 18
    return SZDD_MAGIC + b"A\0" + size.to_bytes(4, "little") + group * groups


def kwaj(method: int, body: bytes, flags: int = 0, extra: bytes = b"") -> bytes:
    offset = 14 + len(extra)
    return KWAJ_MAGIC + method.to_bytes(2, "little") + offset.to_bytes(2, "little") + \
        flags.to_bytes(2, "little") + extra + body


def mscompress(tmp_path: Path, name: str, data: bytes) -> Path:
    src = tmp_path / name
    src.write_bytes(data)
    subprocess.run(["mscompress", str(src)], check=True, cwd=tmp_path)
    return tmp_path / f"{name}_"


def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(SzddHandler(), obj, limits)


@needs_mscompress
def test_mscompress_output_expands_to_the_original(tmp_path):
    data = PAYLOAD + bytes(range(256)) * 30
    packed = mscompress(tmp_path, "tool.exe", data)
    assert packed.stat().st_size < len(data)  # real matches, not just literals
    got = explode(ScanObject.from_path(packed, name="upload.zip//tool.exe_"))
    assert [(c.name, c.data) for c in got] == [("tool.exe", data)]


def test_literal_only_stream_and_the_stored_last_character():
    got = explode(ScanObject("SETUP.EX_", data=szdd_literals(PAYLOAD, b"E")))
    assert [(c.name, c.data) for c in got] == [("SETUP.EXE", PAYLOAD)]
    got = explode(ScanObject("dir/setup.ex_", data=szdd_literals(PAYLOAD, b"E")))
    assert got[0].name == "setup.exe"
    assert explode(ScanObject("stream", data=szdd_literals(PAYLOAD)))[0].name == "data"


def test_matches_copy_from_the_space_filled_window():
    # A 3-byte match at the window start (spaces), literals "ab", then a 4-byte match from
    # where "a" was written (4080 + 3 = 0xFF3) that overlaps its own output.
    body = bytes([0b0110]) + b"\x00\x00" + b"ab" + bytes([0xF3, 0xF1])
    data = SZDD_MAGIC + b"A\0" + (3 + 2 + 4).to_bytes(4, "little") + body
    assert explode(ScanObject("x", data=data))[0].data == b"   ab" + b"abab"


def test_truncated_file_yields_the_readable_part_then_corrupted():
    data = szdd_literals(PAYLOAD)
    got, reason = explode_until(Corrupted, SzddHandler(), ScanObject("e.co_", data=data[:-50]))
    assert got[0].data.startswith(EICAR)
    assert reason.startswith("truncated")


def test_bomb_stops_at_the_compression_ratio_limit():
    bomb = szdd_spaces_bomb(12_000)  # 204 KB packed, 1.7 MB of spaces
    got = explode(ScanObject("b.tx_", data=bomb), Limits(max_compression_ratio=2))
    assert [(c.status, c.reason) for c in got] == [(Status.ERROR, "limit: compression ratio 2")]
    assert got[0].size <= (1 << 20) + (64 << 10)


def test_kwaj_stored_xor_lzss_and_mszip():
    name_extra = b"EICAR\0COM\0"
    inverted = bytes(b ^ 0xFF for b in PAYLOAD)
    lzss = szdd_literals(PAYLOAD)[14:]
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflate.compress(PAYLOAD) + deflate.flush()
    # The second block refers back into the first one's output (a preset dictionary).
    deflate2 = zlib.compressobj(9, zlib.DEFLATED, -15, zdict=PAYLOAD)
    second = deflate2.compress(PAYLOAD) + deflate2.flush()
    mszip = b"".join(len(b"CK" + b).to_bytes(2, "little") + b"CK" + b for b in (first, second))
    cases = [(0, PAYLOAD, PAYLOAD), (1, inverted, PAYLOAD), (2, lzss, PAYLOAD),
             (4, mszip + b"\0\0", PAYLOAD * 2)]
    for method, body, expected in cases:
        got = explode(ScanObject("x.co_", data=kwaj(method, body, 0x18, name_extra)))
        assert [(c.name, c.data) for c in got] == [("EICAR.COM", expected)], method


def test_kwaj_lzh_is_unsupported():
    with pytest.raises(Unsupported, match="kwaj lzh"):
        explode(ScanObject("x", data=kwaj(3, b"\x00" * 40)))


def test_kwaj_declared_length_longer_than_the_data_is_corrupted():
    data = kwaj(0, PAYLOAD[:100], 0x01, (len(PAYLOAD)).to_bytes(4, "little"))
    got, reason = explode_until(Corrupted, SzddHandler(), ScanObject("x", data=data))
    assert got[0].data == PAYLOAD[:100] and "truncated" in reason


@pytest.mark.parametrize("magic", [SZDD_MAGIC + b"A\0", KWAJ_MAGIC])
def test_garbage_never_raises_anything_but_a_container_error(magic):
    rng = random.Random(7)
    for _ in range(200):
        data = magic + rng.randbytes(rng.randrange(0, 300))
        try:
            explode(ScanObject("g", data=data))
        except (Corrupted, Unsupported):
            pass


# -- through the engine -------------------------------------------------------------------------


@needs_mscompress
def test_engine_finds_eicar_in_mscompress_output(engine, tmp_path):
    packed = mscompress(tmp_path, "eicar.com", EICAR)
    verdict = engine.scan_path(packed, name="eicar.com_")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("eicar.com_//eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_truncated_is_corrupted_and_the_readable_part_scanned(engine):
    verdict = engine.scan_bytes(szdd_literals(EICAR + b" " * 500)[:-40], "e.co_")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


def test_engine_reports_the_bomb_as_a_limit(engine):
    from lmsav.scanner.engine import Engine

    strict = Engine(engine.db, Limits(max_compression_ratio=2))
    verdict = strict.scan_bytes(szdd_spaces_bomb(12_000), "bomb.tx_")
    assert verdict.status == Status.ERROR
    assert [r.reason for r in verdict.findings()] == ["limit: compression ratio 2"]


def test_engine_unsupported_kwaj_is_an_error(engine):
    verdict = engine.scan_bytes(kwaj(3, b"\x00" * 40), "x.ex_")
    assert verdict.status == Status.ERROR
    assert verdict.root.reason == "unsupported: kwaj lzh"


@pytest.mark.integration
@needs_mscompress
def test_same_verdict_as_clamscan(engine, tmp_path):
    samples = {
        "tool.ex_": mscompress(tmp_path, "tool.exe", EICAR).read_bytes(),
        "clean.tx_": mscompress(tmp_path, "clean.txt", PAYLOAD[len(EICAR):]).read_bytes(),
        # Not "M": ClamAV 1.4 refuses SZDD headers that keep the hidden last character
        # (compress.exe -r writes them); lmsav expands those too.
        "literal.co_": szdd_literals(EICAR),
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        ours = engine.scan_bytes(data, name).status == Status.INFECTED
        assert ours == clamscan_found(tmp_path / name)[name], name
