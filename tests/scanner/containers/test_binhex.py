"""BinHex 4.0 decodes into its data fork (the stored name) and its resource fork (name.rsrc)."""

from __future__ import annotations

import binascii
import random

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.binhex import BinhexHandler
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import clamscan_found, explode_until, explode_with

HQX = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
BANNER = b"(This file must be converted with BinHex 4.0)"
# Runs, a literal 0x90, a run of 0x90 and a long zero run exercise the run-length coding.
PAYLOAD = EICAR + b"\0" * 300 + b"\x90" + b"\x90" * 7 + b"abc" * 50 + bytes(range(256))


def crc(data: bytes) -> bytes:
    return binascii.crc_hqx(data, 0).to_bytes(2, "big")


def run_length_encode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        byte = data[i]
        if byte == 0x90:
            out += b"\x90\x00"
            i += 1
            continue
        n = 1
        while i + n < len(data) and data[i + n] == byte and n < 255:
            n += 1
        out += bytes([byte, 0x90, n]) if n >= 3 else bytes([byte]) * n
        i += n
    return bytes(out)


def binhex_stream(name: bytes, data: bytes, rsrc: bytes = b"") -> bytes:
    """The 8-bit stream before run-length coding: header, forks, each followed by its CRC."""
    header = (bytes([len(name)]) + name + b"\0" + b"TEXT" + b"ttxt" + b"\0\0"
              + len(data).to_bytes(4, "big") + len(rsrc).to_bytes(4, "big"))
    return header + crc(header) + data + crc(data) + rsrc + crc(rsrc)


def hqx_text(stream: bytes, line: int = 64) -> bytes:
    text = binascii.b2a_base64(stream, newline=False).rstrip(b"=")
    text = text.translate(bytes.maketrans(B64, HQX))
    lines = [text[i:i + line] for i in range(0, len(text), line)]
    return BANNER + b"\r\n\r\n:" + b"\r\n".join(lines) + b":\r\n"


def binhex(name: bytes, data: bytes, rsrc: bytes = b"") -> bytes:
    return hqx_text(run_length_encode(binhex_stream(name, data, rsrc)))


def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(BinhexHandler(), obj, limits)


def explode_until_error(obj: ScanObject):
    return explode_until(Corrupted, BinhexHandler(), obj)


def test_data_fork_under_the_stored_name():
    data = b"Subject: see attachment\n\n" + binhex(b"eicar.com", PAYLOAD)  # text around it
    got = explode(ScanObject("mail.eml//1:eicar.hqx", data=data))
    assert [(c.name, c.data) for c in got] == [("eicar.com", PAYLOAD)]


def test_non_empty_resource_fork_is_a_second_member():
    got = explode(ScanObject("a.hqx", data=binhex(b"Read Me", b"hello", rsrc=PAYLOAD)))
    assert [(c.name, c.data) for c in got] == [("Read Me", b"hello"), ("Read Me.rsrc", PAYLOAD)]


def test_mac_names_are_decoded_and_cannot_add_path_levels():
    got = explode(ScanObject("a.hqx", data=binhex("Caf\u00e9 1/2".encode("mac_roman"), b"x")))
    assert got[0].name == "Caf\u00e9 1_2"


def test_data_crc_mismatch_is_corrupted_after_the_data_was_yielded():
    stream = bytearray(binhex_stream(b"eicar.com", PAYLOAD))
    stream[-4] ^= 0xFF  # the data fork's CRC (the empty resource fork's CRC follows)
    data = hqx_text(run_length_encode(bytes(stream)))
    got, reason = explode_until_error(ScanObject("c.hqx", data=data))
    assert [(c.name, c.data) for c in got] == [("eicar.com", PAYLOAD)]
    assert reason == "data fork CRC mismatch"


def test_header_crc_mismatch_still_yields_the_forks():
    stream = bytearray(binhex_stream(b"eicar.com", PAYLOAD))
    stream[1] ^= 0x20  # "Eicar.com"
    data = hqx_text(run_length_encode(bytes(stream)))
    got, reason = explode_until_error(ScanObject("c.hqx", data=data))
    assert [(c.name, c.data) for c in got] == [("Eicar.com", PAYLOAD)]
    assert reason == "header CRC mismatch"


def test_truncated_file_yields_the_readable_part_then_corrupted():
    data = binhex(b"eicar.com", PAYLOAD)
    got, reason = explode_until_error(ScanObject("t.hqx", data=data[: len(data) // 2]))
    assert got[0].name == "eicar.com" and got[0].data.startswith(EICAR)
    assert PAYLOAD.startswith(got[0].data)
    assert reason == "truncated: no closing colon"


def test_invalid_character_stops_decoding():
    data = bytearray(binhex(b"eicar.com", PAYLOAD))
    data[len(data) - 30] = ord("O")  # not in the BinHex alphabet
    got, reason = explode_until_error(ScanObject("t.hqx", data=bytes(data)))
    assert got[0].data.startswith(EICAR)
    assert reason == "invalid character b'O'"


def test_garbage_never_raises_anything_but_corrupted():
    rng = random.Random(11)
    for _ in range(300):
        body = bytes(rng.choice(HQX + b"\n") for _ in range(rng.randrange(0, 400)))
        try:
            explode(ScanObject("g.hqx", data=BANNER + b"\n:" + body + b":"))
        except Corrupted:
            pass


def run_bomb(runs: int) -> bytes:
    # Each 3 bytes "x 0x90 0xff" expand to 255 bytes; the header claims them all.
    size = runs * 255
    header = (b"\x08bomb.txt\0TEXTttxt\0\0" + size.to_bytes(4, "big") + b"\0\0\0\0")
    return hqx_text(header + crc(header) + b"x\x90\xff" * runs)


def test_run_length_bomb_stops_at_the_compression_ratio_limit():
    bomb = run_bomb(60_000)  # about 240 KB of text, 15 MB of "x"
    got = explode(ScanObject("b.hqx", data=bomb), Limits(max_compression_ratio=10))
    assert [(c.name, c.status, c.reason) for c in got] == [
        ("bomb.txt", Status.ERROR, "limit: compression ratio 10")
    ]


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_in_either_fork(engine):
    verdict = engine.scan_bytes(binhex(b"eicar.com", EICAR), "eicar.hqx")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("eicar.hqx//eicar.com", "Eicar-Test-Signature")
    ]
    verdict = engine.scan_bytes(binhex(b"notes", b"clean", rsrc=EICAR), "notes.hqx")
    assert [p for p, _ in verdict.threats] == ["notes.hqx//notes.rsrc"]


def test_engine_damaged_crc_is_corrupted_and_the_data_scanned(engine):
    stream = bytearray(binhex_stream(b"eicar.com", EICAR))
    stream[-4] ^= 0xFF
    verdict = engine.scan_bytes(hqx_text(run_length_encode(bytes(stream))), "c.hqx")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


def test_engine_reports_the_bomb_as_a_limit(engine):
    from lmsav.scanner.engine import Engine

    strict = Engine(engine.db, Limits(max_compression_ratio=10))
    verdict = strict.scan_bytes(run_bomb(60_000), "bomb.hqx")
    assert verdict.status == Status.ERROR
    assert [r.reason for r in verdict.findings()] == ["limit: compression ratio 10"]


@pytest.mark.integration
def test_same_verdict_as_clamscan(engine, tmp_path):
    samples = {
        "data.hqx": binhex(b"eicar.com", EICAR),
        "rsrc.hqx": binhex(b"notes", b"clean", rsrc=EICAR),
        "clean.hqx": binhex(b"notes", PAYLOAD[len(EICAR):]),
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        ours = engine.scan_bytes(data, name).status == Status.INFECTED
        assert ours == clamscan_found(tmp_path / name)[name], name
