"""TNEF (winmail.dat) yields every attachment under its file name, embedded messages included."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.tnef import TnefHandler
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import (
    clamscan_found, explode_until, explode_with, names_and_data,
)

IID_IMESSAGE = bytes.fromhex("0703020000000000c000000000000046")

needs_tnef_tool = pytest.mark.skipif(shutil.which("tnef") is None,
                                     reason="Debian package tnef not installed")


# -- a TNEF writer following MS-OXTNEF ----------------------------------------------------------

def u16(n: int) -> bytes:
    return n.to_bytes(2, "little")


def u32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def attribute(level: int, attr_id: int, atp: int, value: bytes,
              checksum: int | None = None) -> bytes:
    """Level, attribute (type << 16 | id), length, data, 16-bit sum of the data."""
    total = sum(value) & 0xFFFF if checksum is None else checksum
    return bytes([level]) + u32(atp << 16 | attr_id) + u32(len(value)) + value + u16(total)


def padded(raw: bytes) -> bytes:
    return raw + b"\0" * (-len(raw) % 4)


def prop_unicode(pid: int, text: str) -> bytes:
    raw = (text + "\0").encode("utf-16-le")
    return u16(0x001F) + u16(pid) + u32(1) + u32(len(raw)) + padded(raw)


def prop_long(pid: int, value: int) -> bytes:
    return u16(0x0003) + u16(pid) + u32(value)


def prop_binary(pid: int, raw: bytes, ptype: int = 0x0102) -> bytes:
    return u16(ptype) + u16(pid) + u32(1) + u32(len(raw)) + padded(raw)


def prop_named_long(value: int) -> bytes:
    # A named property (id >= 0x8000): property set GUID, kind 1 (string name), then the value.
    name = "x-test\0".encode("utf-16-le")
    return (u16(0x0003) + u16(0x8001) + bytes(16) + u32(1) + u32(len(name)) + padded(name)
            + u32(value))


def attachment(title: str | None, data: bytes | None, *props: bytes) -> bytes:
    rend = u16(1) + u32(0xFFFFFFFF) + u16(0xFFFF) + u16(0xFFFF) + u32(0)
    out = attribute(2, 0x9002, 6, rend)  # attAttachRendData starts the attachment
    if title is not None:
        out += attribute(2, 0x8010, 1, title.encode("cp1252") + b"\0")  # attAttachTitle
    if data is not None:
        out += attribute(2, 0x800F, 6, data)  # attAttachData
    all_props = (prop_long(0x3705, 1),) + props  # PR_ATTACH_METHOD = by value
    return out + attribute(2, 0x9005, 6, u32(len(all_props)) + b"".join(all_props))


def tnef(*attachments: bytes) -> bytes:
    return (
        b"\x78\x9f\x3e\x22" + u16(0x0101)
        + attribute(1, 0x9006, 8, u32(0x00010000))  # attTnefVersion
        + attribute(1, 0x9007, 6, u32(1252) + u32(0))  # attOemCodepage
        + attribute(1, 0x8008, 7, b"IPM.Microsoft Mail.Note\0")  # attMessageClass
        + attribute(1, 0x800C, 2, b"see the attachment\0")  # attBody
        + b"".join(attachments)
    )


def long_name(name: str) -> bytes:
    return prop_unicode(0x3707, name)  # PR_ATTACH_LONG_FILENAME


def with_eicar() -> bytes:
    return tnef(attachment("EICAR.COM", EICAR, long_name("eicar.com")),
                attachment("NOTES.TXT", b"hello\n", long_name("notes.txt")))


# -- helpers ------------------------------------------------------------------------------------

def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(TnefHandler(), obj, limits)


def explode_until_error(obj: ScanObject):
    return explode_until(Corrupted, TnefHandler(), obj)


# -- tests --------------------------------------------------------------------------------------

@needs_tnef_tool
def test_the_construction_is_valid_for_the_tnef_tool(tmp_path):
    sample = tmp_path / "winmail.dat"
    sample.write_bytes(with_eicar())
    listing = subprocess.run(["tnef", "-t", str(sample)], capture_output=True, text=True,
                             check=True).stdout
    assert [line.split("|")[0].strip() for line in listing.splitlines()] == [
        "eicar.com", "notes.txt"
    ]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["tnef", "-C", str(out), str(sample)], check=True)
    assert (out / "eicar.com").read_bytes() == EICAR


def test_attachments_under_their_long_file_names():
    got = explode(ScanObject("mail.eml//2:winmail.dat", data=with_eicar()))
    assert names_and_data(got) == [("eicar.com", EICAR), ("notes.txt", b"hello\n")]


def test_names_fall_back_to_the_title_then_a_number():
    data = tnef(attachment("REPORT.DOC", b"one"), attachment(None, b"two"),
                attachment("A/B.TXT", b"three", prop_named_long(5)))
    assert [c.name for c in explode(ScanObject("w.dat", data=data))] == [
        "REPORT.DOC", "attachment2", "A_B.TXT"
    ]


def test_data_object_without_legacy_data_is_the_attachment():
    data = tnef(attachment(None, None, long_name("payload.bin"), prop_binary(0x3701, EICAR)))
    assert names_and_data(explode(ScanObject("w.dat", data=data))) == [("payload.bin", EICAR)]


def test_embedded_message_is_yielded_as_tnef_for_the_engine_to_open():
    inner = with_eicar()
    data = tnef(attachment(None, None, prop_unicode(0x3001, "Fwd: invoice"),
                           prop_binary(0x3701, IID_IMESSAGE + inner, ptype=0x000D)))
    assert names_and_data(explode(ScanObject("w.dat", data=data))) == [("Fwd: invoice", inner)]


def test_checksum_mismatches_are_ignored():
    data = tnef(attachment("EICAR.COM", None)
                + attribute(2, 0x800F, 6, EICAR, checksum=0xBEEF))
    assert names_and_data(explode(ScanObject("w.dat", data=data))) == [("EICAR.COM", EICAR)]


def test_trailing_newline_from_mime_decoding_is_tolerated():
    assert len(explode(ScanObject("w.dat", data=with_eicar() + b"\r\n"))) == 2


def test_truncated_stream_yields_complete_attachments_then_corrupted():
    data = with_eicar()
    cut = data.index(b"hello\n") + 3  # inside the second attachment's data
    got, reason = explode_until_error(ScanObject("w.dat", data=data[:cut]))
    assert names_and_data(got) == [("eicar.com", EICAR)]
    assert reason == "truncated attribute"


def test_cut_after_the_data_still_yields_it_under_the_title():
    data = tnef(attachment("EICAR.COM", EICAR, long_name("eicar.com")))
    got, reason = explode_until_error(ScanObject("w.dat", data=data[:-20]))
    assert names_and_data(got) == [("EICAR.COM", EICAR)]
    assert reason == "truncated attribute"


def test_damaged_properties_are_corrupted_but_the_data_is_yielded():
    bad_props = u32(1) + u16(0x0102) + u16(0x3701) + u32(1) + u32(10_000)  # runs past the end
    data = tnef(attachment("EICAR.COM", EICAR) + attribute(2, 0x9005, 6, bad_props))
    got, reason = explode_until_error(ScanObject("w.dat", data=data))
    assert names_and_data(got) == [("EICAR.COM", EICAR)]
    assert reason.startswith("damaged MAPI properties")


def test_garbage_never_raises_anything_but_corrupted():
    rng = random.Random(3)
    base = bytearray(with_eicar())
    for _ in range(400):
        data = bytearray(base)
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(6, len(data))] = rng.randrange(256)
        data = data[: rng.randrange(6, len(data) + 1)]
        try:
            explode(ScanObject("g.dat", data=bytes(data)))
        except Corrupted:
            pass


# -- through the engine -------------------------------------------------------------------------


def test_engine_names_the_route(engine):
    verdict = engine.scan_bytes(with_eicar(), "winmail.dat")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("winmail.dat//eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_opens_embedded_messages(engine):
    data = tnef(attachment(None, None, prop_unicode(0x3001, "Fwd"),
                           prop_binary(0x3701, IID_IMESSAGE + with_eicar(), ptype=0x000D)))
    verdict = engine.scan_bytes(data, "winmail.dat")
    assert [p for p, _ in verdict.threats] == ["winmail.dat//Fwd//eicar.com"]


def test_engine_truncated_is_corrupted_with_the_readable_part_scanned(engine):
    data = with_eicar()
    verdict = engine.scan_bytes(data[: data.index(b"hello\n")], "winmail.dat")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


@pytest.mark.integration
def test_same_verdict_as_clamscan(engine, tmp_path):
    samples = {
        "infected.dat": tnef(attachment("EICAR.COM", EICAR, long_name("eicar.com"))),
        "clean.dat": tnef(attachment("NOTES.TXT", b"hello\n", long_name("notes.txt"))),
    }
    for name, data in samples.items():
        (tmp_path / name).write_bytes(data)
        ours = engine.scan_bytes(data, name).status == Status.INFECTED
        assert ours == clamscan_found(tmp_path / name)[name], name
