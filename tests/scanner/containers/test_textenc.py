"""Text files carrying uuencoded, yEnc or base64 payloads: each payload is decoded and scanned."""

from __future__ import annotations

import base64
import binascii
import random
import subprocess
import shutil
import time

import pytest

from lmsav.scanner.containers.textenc import TextEncodedHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with

BINARY = bytes(range(256)) * 3 + EICAR
PROSE = b"Hello,\n\nplease find the files below.\n\n"


def explode(data: bytes, name: str = "notes.txt") -> list:
    return explode_with(TextEncodedHandler(), ScanObject(name, data=data))


def members(data: bytes, name: str = "notes.txt") -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data, name)}


def uuencode(name: str, data: bytes) -> bytes:
    lines = [f"begin 644 {name}\n".encode()]
    lines += [binascii.b2a_uu(data[i:i + 45]) for i in range(0, len(data), 45)]
    return b"".join(lines + [b"`\n", b"end\n"])


def yencode(name: str, data: bytes, line: int = 128) -> bytes:
    out, row = [], bytearray()
    for byte in data:
        c = (byte + 42) & 0xFF
        if c in (0, 10, 13, 61) or (c in (9, 32, 46) and not row):
            row += bytes([61, (c + 64) & 0xFF])
        else:
            row.append(c)
        if len(row) >= line:
            out.append(bytes(row))
            row = bytearray()
    if row:
        out.append(bytes(row))
    head = f"=ybegin line={line} size={len(data)} name={name}\n".encode()
    return head + b"\n".join(out) + f"\n=yend size={len(data)}\n".encode()


def base64_block(data: bytes, width: int = 76) -> bytes:
    text = base64.b64encode(data)
    return b"\n".join(text[i:i + width] for i in range(0, len(text), width)) + b"\n"


def test_sniffed_as_text_and_handled():
    assert sniff(PROSE + uuencode("a.bin", BINARY)) == "text"
    assert "text" in TextEncodedHandler.types


def test_plain_text_yields_nothing():
    assert members(PROSE * 50) == {}
    assert members(b"begin the work at 9\nend\n=ybegin? no\n") == {}


def test_uuencode_block_and_block_at_offset_zero():
    assert members(PROSE + uuencode("dir/tool.exe", BINARY) + PROSE) == {"uu:tool.exe": BINARY}
    assert members(uuencode("eicar.com", EICAR)) == {"uu:eicar.com": EICAR}


def test_uuencode_from_the_real_tool(tmp_path):
    if shutil.which("uuencode") is None:
        pytest.skip("uuencode (Debian sharutils) not installed")
    (tmp_path / "payload.bin").write_bytes(BINARY)
    for extra in ([], ["-m"]):
        text = subprocess.run(["uuencode", *extra, str(tmp_path / "payload.bin"), "payload.bin"],
                              capture_output=True, check=True).stdout
        assert members(PROSE + text) == {"uu:payload.bin": BINARY}


def test_yenc_block():
    assert members(PROSE + yencode("eicar.com", EICAR) + PROSE) == {"yenc:eicar.com": EICAR}
    assert members(yencode("all.bin", BINARY, line=64)) == {"yenc:all.bin": BINARY}


def test_yenc_multipart_header():
    text = yencode("part.bin", BINARY).replace(b"\n", b"\n=ypart begin=1 end=%d\n" % len(BINARY), 1)
    assert members(text) == {"yenc:part.bin": BINARY}


@pytest.mark.parametrize("width", [76, 64])
def test_base64_blocks_are_numbered(width):
    text = PROSE + base64_block(BINARY, width) + PROSE + base64_block(EICAR * 5, width)
    assert members(text) == {"base64.1": BINARY, "base64.2": EICAR * 5}


def test_short_base64_is_not_a_block():
    # Three full lines are not enough: a block needs four.
    assert members(PROSE + base64_block(bytes(range(170)))) == {}


def test_all_three_in_one_file():
    text = (PROSE + uuencode("u.bin", BINARY) + PROSE + yencode("y.bin", BINARY) + PROSE
            + base64_block(BINARY) + PROSE)
    assert members(text) == {"uu:u.bin": BINARY, "yenc:y.bin": BINARY, "base64.1": BINARY}


def test_uuencode_in_a_mail_text_part_is_reported_once():
    """The mail handler decodes uuencode in text parts; textenc leaves those parts' uuencode."""
    text = PROSE + uuencode("e.com", EICAR) + yencode("y.com", EICAR)
    assert members(text, name="m.eml//1:part1.plain") == {"yenc:y.com": EICAR}
    assert members(text, name="archive.zip//notes.txt") == {"uu:e.com": EICAR, "yenc:y.com": EICAR}


def test_truncated_and_garbage_blocks_never_raise():
    rnd = random.Random(5)
    seeds = [uuencode("a", BINARY), yencode("b", BINARY), base64_block(BINARY)]
    for _ in range(300):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 10)):
            at = rnd.randrange(len(data))
            if rnd.random() < 0.5:
                del data[at:at + rnd.randint(1, 80)]
            else:
                data[at:at] = rnd.choice([b"\n", b"=", b"begin 644 x\n", b"=ybegin name=z\n",
                                          b"end\n", b"=yend\n", b"`"])
        explode(bytes(data))


def test_pathological_text_stays_linear():
    for text in (b"\nbegin 644 " * 30000, b"\n=ybegin " * 30000,
                 (b"A" * 76 + b"\n") * 3 + b"!\n" * 30000, (b"A" * 76 + b"\n") * 40000):
        started = time.perf_counter()
        explode(text)
        assert time.perf_counter() - started < 2.0


# -- through the engine ------------------------------------------------------------------------


def test_engine_finds_each_encoding(engine):
    text = PROSE + uuencode("e.com", EICAR) + yencode("y.com", EICAR) + base64_block(EICAR * 4)
    verdict = engine.scan_bytes(text, "notes.txt")
    assert sorted(p for p, _ in verdict.threats) == [
        "notes.txt//base64.1", "notes.txt//uu:e.com", "notes.txt//yenc:y.com"]
    assert verdict.status == Status.INFECTED
    verdict = engine.scan_bytes(PROSE + base64_block(EICAR), "short.txt")
    assert verdict.status == Status.CLEAN  # 68 bytes of base64 are one line, not a block
    verdict = engine.scan_bytes(PROSE + base64_block(EICAR, width=16), "narrow.txt")
    assert verdict.status == Status.CLEAN  # 16-character lines are not full-length lines


def test_engine_base64_block(engine):
    text = b"-----BEGIN PAYLOAD-----\n" + base64_block(EICAR + b"\0" * 300, width=64)
    verdict = engine.scan_bytes(text, "key.pem")
    assert [p for p, _ in verdict.threats] == ["key.pem//base64.1"]


def test_engine_mail_with_uuencode_reports_it_once(engine):
    msg = (b"From: a@example.org\nTo: b@example.org\nSubject: files\n\n" + PROSE
           + uuencode("e.com", EICAR))
    verdict = engine.scan_bytes(msg, "m.eml")
    assert [p for p, _ in verdict.threats] == ["m.eml//1.1:e.com"]
