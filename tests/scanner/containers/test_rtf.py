"""RTF documents give up their embedded OLE objects, packaged files and \\bin runs."""

from __future__ import annotations

import random
import shutil
import struct

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.rtf import RtfHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Context, Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR, md5_line, write_db
from tests.scanner.containers.helpers import clamscan_threats, explode_until, explode_with
from tests.scanner.containers.test_ole2 import build_cfb, ole10native, package_native, word_fib

# -- building documents ----------------------------------------------------------------------------


def _lpstr(text: bytes) -> bytes:
    """MS-OLEDS LengthPrefixedAnsiString: u32 length including the NUL, the bytes, NUL."""
    return struct.pack("<I", len(text) + 1) + text + b"\0"


def ole1_object(class_name: bytes, native: bytes, declared: int | None = None) -> bytes:
    """An OLE1 EmbeddedObject (MS-OLEDS 2.2.4): ObjectHeader then the native data.

    Topic and item names are empty, written as Word writes them: length 0, no NUL.
    """
    return (
        struct.pack("<II", 0x00000501, 2) + _lpstr(class_name) + struct.pack("<II", 0, 0)
        + struct.pack("<I", len(native) if declared is None else declared) + native
    )


def hex_lines(data: bytes, width: int = 128) -> bytes:
    text = data.hex().encode()
    return b"\r\n".join(text[i:i + width] for i in range(0, len(text), width))


def rtf_object(ole1: bytes, class_name: bytes = b"Package", hex_text: bytes | None = None) -> bytes:
    """An \\object group as Word writes it: class, size, \\objdata hex, then a result picture."""
    return (
        rb"{\object\objemb{\*\objclass " + class_name + rb"}\objw1440\objh720"
        + rb"{\*\objdata " + (hex_text if hex_text is not None else hex_lines(ole1)) + b"\r\n}"
        + rb"{\result{\pict\wmetafile8\picw100\pich100 0100090000}}}"
    )


def rtf_document(*body: bytes) -> bytes:
    return (
        rb"{\rtf1\ansi\ansicpg1252\deff0{\fonttbl{\f0\fswiss Arial;}}"
        + rb"{\info{\title invoice}}\pard\f0\fs20 Please see the attached file.\par "
        + b"".join(body) + rb"\par}"
    )


def package_rtf(filename: str = "clam.exe", payload: bytes = EICAR) -> bytes:
    return rtf_document(rtf_object(ole1_object(b"Package", package_native(filename, payload))))


# -- helpers ---------------------------------------------------------------------------------------


def explode(data: bytes, limits: Limits = Limits()) -> list:
    return explode_with(RtfHandler(), ScanObject("x.rtf", data=data), limits)


def members(data: bytes) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data)}


def explode_until_corrupted(data: bytes) -> tuple[dict[str, bytes], str]:
    got, reason = explode_until(Corrupted, RtfHandler(), ScanObject("x.rtf", data=data))
    return {c.name: c.data for c in got}, reason


# -- objects ---------------------------------------------------------------------------------------


def test_package_object_yields_the_packaged_file_under_its_name():
    data = package_rtf()
    assert sniff(data) == "rtf"
    assert members(data) == {"objdata//clam.exe": EICAR}


def test_embedded_ole2_object_yields_the_compound_file():
    doc = build_cfb({"WordDocument": word_fib(), "1Table": b"table"})
    ole1 = ole1_object(b"Word.Document.8", doc)
    got = members(rtf_document(rtf_object(ole1, b"Word.Document.8")))
    assert got == {"objdata": doc}
    assert sniff(got["objdata"]) == "ole2"


def test_several_objects_are_numbered_in_document_order():
    one = ole1_object(b"Package", package_native("one.txt", b"first"))
    two = ole1_object(b"Paint.Picture", b"BM raw picture data")
    three = ole1_object(b"Package", package_native("three.bat", b"@echo off\r\n"))
    got = members(rtf_document(rtf_object(one), b"text ", rtf_object(two, b"Paint.Picture"),
                               rtf_object(three)))
    assert got == {
        "objdata//one.txt": b"first",
        "objdata2": b"BM raw picture data",
        "objdata3//three.bat": b"@echo off\r\n",
    }


def test_hex_is_read_through_whitespace_junk_and_control_words():
    ole1 = ole1_object(b"Package", package_native("clam.exe", EICAR))
    text = ole1.hex()
    # Upper case, tabs, stray punctuation, a control word and an ignorable group between digits:
    # the tricks exploit documents use to hide an object from naive decoders.
    cut = len(text) // 3
    noisy = (
        text[:cut].upper().encode() + b" \t\r\n.;" + rb"\par " + text[cut:2 * cut].encode()
        + rb"{\*\junk 4142434445}" + b"\n" + text[2 * cut:].encode()
    )
    assert members(rtf_document(rtf_object(ole1, hex_text=noisy))) == {"objdata//clam.exe": EICAR}


def test_hex_glued_to_the_control_word_is_not_lost():
    ole1 = ole1_object(b"Package", package_native("clam.exe", EICAR))
    data = b"{\\rtf1{\\object{\\*\\objdata" + ole1.hex().encode() + b"}}}"
    assert members(data) == {"objdata//clam.exe": EICAR}


def test_bin_run_inside_objdata_adds_raw_bytes():
    ole1 = ole1_object(b"Package", package_native("clam.exe", EICAR))
    head, tail = ole1[:40], ole1[40:]
    mixed = head.hex().encode() + rb"\bin" + str(len(tail)).encode() + b" " + tail
    assert members(rtf_document(rtf_object(ole1, hex_text=mixed))) == {"objdata//clam.exe": EICAR}


def test_bin_runs_outside_objects_are_members():
    raw = bytes(range(256))
    data = rtf_document(rb"{\pict\pngblip\bin256 " + raw + b"}", rb"{\pict\bin3 abc}")
    assert members(data) == {"bin1": raw, "bin2": b"abc"}


def test_objdata_that_is_not_ole1_is_yielded_decoded():
    payload = b"MZ not an OLE1 header at all"
    assert members(rtf_document(rtf_object(b"", hex_text=payload.hex().encode()))) == {
        "objdata": payload
    }


def test_native_size_that_lies_gives_what_is_there():
    native = package_native("clam.exe", EICAR)
    ole1 = ole1_object(b"Package", native, declared=0x7FFFFFFF)
    assert members(rtf_document(rtf_object(ole1))) == {"objdata//clam.exe": EICAR}


def test_document_without_objects_has_no_members():
    assert members(rtf_document(rb"{\b bold} plain \'e9t\'e9 text")) == {}


def test_large_file_on_disk_is_read_mapped(tmp_path):
    padding = rb"{\pict " + b"0a" * (1 << 20) + b"}"
    path = tmp_path / "big.rtf"
    path.write_bytes(rtf_document(padding, rtf_object(ole1_object(
        b"Package", package_native("clam.exe", EICAR)))))
    obj = ScanObject.from_path(path, "big.rtf")
    ctx = Context(Limits())
    try:
        assert {c.name: c.data for c in RtfHandler().explode(obj, ctx)} == {
            "objdata//clam.exe": EICAR
        }
    finally:
        obj.close()
        ctx.cleanup()


def test_a_flood_of_control_words_stops_at_the_time_limit():
    from lmsav.scanner.limits import LimitExceeded

    data = b"{\\rtf1{\\*\\objdata " + b"\\par 41 " * (1 << 19) + b"}}"
    ctx = Context(Limits(max_scan_time=0.001))
    with pytest.raises(LimitExceeded):
        list(RtfHandler().explode(ScanObject("f.rtf", data=data), ctx))


# -- damage ----------------------------------------------------------------------------------------


def test_unterminated_objdata_is_yielded_then_corrupted():
    data = package_rtf()
    cut = data[: data.index(rb"{\result")]  # the object's closing braces never come
    got, err = explode_until_corrupted(cut)
    assert got == {"objdata//clam.exe": EICAR}
    assert "unterminated" in str(err)


def test_unterminated_document_after_a_complete_object_is_corrupted():
    data = package_rtf()
    got, _ = explode_until_corrupted(data[:-1])
    assert got == {"objdata//clam.exe": EICAR}


def test_odd_hex_digit_and_lone_backslash_do_not_crash():
    assert members(b"{\\rtf1{\\*\\objdata 414}}\\") == {"objdata": b"A"}


@pytest.mark.parametrize("seed", range(40))
def test_garbage_never_raises_anything_but_corrupted(seed):
    rnd = random.Random(seed)
    data = bytearray(package_rtf() + rtf_document(rb"{\pict\bin20 " + b"x" * 20 + b"}"))
    alphabet = b"{}\\*0123456789abcdefbinobjdata \r\n\xff"
    for _ in range(rnd.randint(1, 60)):
        data[rnd.randrange(len(data))] = rnd.choice(alphabet)
    try:
        explode(bytes(data))
    except Corrupted:
        pass


def test_deeply_nested_groups_are_cheap():
    data = b"{\\rtf1" + b"{" * 200000 + b"\\objdata 41" + b"}" * 200000 + b"}"
    assert members(data) == {"objdata": b"A"}


# -- through the engine ----------------------------------------------------------------------------


def test_engine_finds_eicar_in_a_package_object(engine):
    verdict = engine.scan_bytes(package_rtf(), "outer.rtf")
    assert verdict.status == Status.INFECTED
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("outer.rtf//objdata//clam.exe", "Eicar-Test-Signature")
    ]


def test_engine_recurses_into_an_embedded_ole2_object(engine):
    doc = build_cfb({"WordDocument": word_fib(),
                     "ObjectPool/_1/\x01Ole10Native": ole10native("clam.exe", EICAR)})
    rtf = rtf_document(rtf_object(ole1_object(b"Word.Document.8", doc), b"Word.Document.8"))
    verdict = engine.scan_bytes(rtf, "outer.rtf")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("outer.rtf//objdata//clam.exe", "Eicar-Test-Signature")
    ]
    objdata = verdict.root.children[0]
    assert (objdata.path, objdata.type) == ("outer.rtf//objdata", "ole2")


def test_engine_reports_truncated_rtf_corrupted_and_still_detects(engine):
    data = package_rtf()
    verdict = engine.scan_bytes(data[: data.index(rb"{\result")], "cut.rtf")
    assert verdict.status == Status.INFECTED
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.root.reason.startswith("corrupted: unterminated")


def test_engine_on_rtf_garbage_is_not_an_error(engine):
    verdict = engine.scan_bytes(b"{\\rtf1 \\objdata zz\\bin99999999 }}}}" + b"\xff" * 100, "g.rtf")
    assert verdict.status in (Status.CLEAN, Status.CORRUPTED)


# -- the same samples through the real clamscan ----------------------------------------------------


@pytest.mark.integration
def test_clamscan_agrees_on_the_same_samples(tmp_path):
    if shutil.which("clamscan") is None:
        pytest.skip("clamscan not installed")
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    inner = b"MZ lmsav rtf differential payload \x01\x02\x03"
    db = write_db(tmp_path / "db", {"t.hdb": md5_line(inner, "Lmsav.Test.RtfObject")})
    in_ole2 = build_cfb({"WordDocument": word_fib(),
                         "ObjectPool/_1/\x01Ole10Native": ole10native("a.exe", inner)})
    samples = {
        "package.rtf": (package_rtf("a.exe", inner), {"Lmsav.Test.RtfObject"}),
        "ole2.rtf": (rtf_document(rtf_object(ole1_object(b"Word.Document.8", in_ole2),
                                             b"Word.Document.8")), {"Lmsav.Test.RtfObject"}),
        "clean.rtf": (package_rtf("a.exe", inner + b"!"), set()),
    }
    engine = Engine(Database.load(db, cache_path=tmp_path / "c.lmsavc"))
    for name, (data, expected) in samples.items():
        path = tmp_path / name
        path.write_bytes(data)
        ours = {t.name for _, t in engine.scan_path(path, name).threats}
        assert ours == expected, name
        assert clamscan_threats(db, path) == expected, name
