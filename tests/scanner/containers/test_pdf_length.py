"""A stream's /Length given as an indirect reference is read from the object it names; a missing
or wrong one falls back to the ``endstream`` keyword."""

from __future__ import annotations

import random
import zlib

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.pdf.document import scan_objects
from lmsav.scanner.containers.pdf.lengths import LengthResolver
from lmsav.scanner.containers.pdf.syntax import Ref
from lmsav.scanner.objects import Status
from tests.conftest import EICAR
from tests.scanner.containers.test_pdf import TEXT, build_pdf, explode, members


def flate_ending_in_cr(content: bytes) -> tuple[bytes, bytes]:
    """``content`` plus one byte chosen so its zlib data ends in CR: before the writer's newline
    and ``endstream`` that reads as a CRLF, which the keyword fallback would cut off."""
    for extra in range(256):
        plain = content + bytes([extra])
        packed = zlib.compress(plain)
        if packed.endswith(b"\r"):
            return plain, packed
    raise AssertionError("no byte gives a CR-ending zlib stream")


def indirect_stream(body: bytes, length_ref: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %s %s>>\nstream\n%s\nendstream" % (length_ref, entries, body)


# -- the handler -----------------------------------------------------------------------------------


def test_length_from_a_later_object_keeps_the_last_byte_of_flate_data():
    plain, packed = flate_ending_in_cr(TEXT)
    pdf = build_pdf(indirect_stream(packed, b"4 0 R", b"/Filter /FlateDecode"), b"%d" % len(packed))
    assert members(pdf) == {"obj3": plain}


def test_length_from_an_earlier_object():
    plain, packed = flate_ending_in_cr(TEXT)
    pdf = build_pdf(b"%d" % len(packed), indirect_stream(packed, b"3 0 R", b"/Filter /FlateDecode"))
    assert members(pdf) == {"obj4": plain}


def test_endstream_inside_the_data_does_not_end_the_stream():
    content = b"(endstream) Tj\n" + EICAR
    pdf = build_pdf(indirect_stream(content, b"4 0 R"), b"%d" % len(content))
    assert members(pdf) == {"obj3": content}


def test_last_definition_of_the_length_object_is_tried_first():
    head = b"q 1 0 0 1 0 0 cm Q\nendstream\n"  # an older length points at this inner keyword
    content = head + TEXT
    pdf = build_pdf(indirect_stream(content, b"5 0 R"), b"%d" % (len(head) - 11),
                    b"%d" % len(content))
    pdf = pdf.replace(b"4 0 obj", b"5 0 obj", 1)  # two definitions of 5: the later one counts
    assert members(pdf) == {"obj3": content}


@pytest.mark.parametrize("length_object", [
    b"(not a number)",
    b"-5",
    b"99999999",  # past the end of the file
    b"7",  # an integer that does not land on endstream
    b"3 0 R",  # a reference: never followed further
    b"<< /Length 4 0 R >>",
])
def test_wrong_length_object_falls_back_to_endstream(length_object):
    pdf = build_pdf(indirect_stream(TEXT, b"4 0 R"), length_object)
    assert members(pdf) == {"obj3": TEXT}


@pytest.mark.parametrize("length_ref", [b"9 0 R", b"4 1 R", b"3 0 R"])
def test_missing_or_self_length_object_falls_back_to_endstream(length_ref):
    pdf = build_pdf(indirect_stream(TEXT, length_ref), b"%d" % len(TEXT))
    assert members(pdf) == {"obj3": TEXT}


def test_length_object_cut_off_at_the_end_of_the_file():
    pdf = build_pdf(indirect_stream(TEXT, b"9 0 R"))
    pdf += b"9 0 obj\n12345"
    assert members(pdf) == {"obj3": TEXT}


def test_mutated_indirect_lengths_never_raise_anything_but_corrupted():
    rnd = random.Random(17)
    _plain, packed = flate_ending_in_cr(TEXT)
    seed = build_pdf(indirect_stream(packed, b"4 0 R", b"/Filter /FlateDecode"),
                     b"%d" % len(packed), indirect_stream(b"(endstream)" + TEXT, b"6 0 R"),
                     b"%d" % (len(TEXT) + 11))
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rnd.randint(1, 10)):
            at = rnd.randrange(len(data))
            op = rnd.random()
            if op < 0.4:
                data[at] = rnd.randrange(256)
            elif op < 0.7:
                del data[at:at + rnd.randint(1, 40)]
            else:
                data[at:at] = rnd.choice([b" 4 0 R", b"6 0 obj ", b"4 0 obj 99999999 ", b"endstream",
                                          b"4 0 obj 4 0 R endobj", b"-1"])
        try:
            explode(bytes(data))
        except Corrupted:
            pass


# -- the resolver ----------------------------------------------------------------------------------


def test_resolver_lists_integer_definitions_last_first_and_nothing_else():
    data = b"4 0 obj 10 endobj 4 0 obj 12 endobj 5 0 obj 4 0 R endobj 6 0 obj true endobj"
    resolver = LengthResolver(data)
    assert resolver.candidates(Ref(4, 0)) == [12, 10]
    assert resolver.candidates(Ref(5, 0)) == []
    assert resolver.candidates(Ref(6, 0)) == []
    assert resolver.candidates(Ref(4, 1)) == []
    assert resolver.candidates(Ref(7, 0)) == []


def test_resolver_tries_a_bounded_number_of_definitions():
    data = b"".join(b"4 0 obj %d endobj\n" % n for n in range(100))
    assert LengthResolver(data).candidates(Ref(4, 0)) == list(range(99, 91, -1))


def test_scan_objects_takes_the_indirect_length():
    content = b"(endstream)" + TEXT
    streams, _trailers, _objects, damage = scan_objects(
        build_pdf(indirect_stream(content, b"4 0 R"), b"%d" % len(content)))
    assert [(s.num, s.raw, s.truncated) for s in streams] == [(3, content, False)]
    assert damage.reasons == []


# -- through the engine ----------------------------------------------------------------------------


def test_engine_clean_pdf_with_indirect_length_is_clean(engine):
    _plain, packed = flate_ending_in_cr(TEXT)
    pdf = build_pdf(indirect_stream(packed, b"4 0 R", b"/Filter /FlateDecode"), b"%d" % len(packed))
    verdict = engine.scan_bytes(pdf, "manual.pdf")
    assert verdict.root.status != Status.CORRUPTED
    assert verdict.status == Status.CLEAN
    assert verdict.findings() == []


def test_engine_finds_eicar_in_a_flate_stream_with_indirect_length(engine):
    _plain, packed = flate_ending_in_cr(EICAR + b"\n")
    pdf = build_pdf(indirect_stream(packed, b"4 0 R", b"/Filter /FlateDecode"), b"%d" % len(packed))
    verdict = engine.scan_bytes(pdf, "doc.pdf")
    assert verdict.root.status != Status.CORRUPTED
    assert [(p, t.name) for p, t in verdict.threats] == [("doc.pdf//obj3", "Eicar-Test-Signature")]


def test_engine_wrong_length_object_is_not_a_crash(engine):
    pdf = build_pdf(indirect_stream(zlib.compress(EICAR), b"4 0 R", b"/Filter /FlateDecode"),
                    b"(junk)")
    verdict = engine.scan_bytes(pdf, "doc.pdf")
    assert [(p, t.name) for p, t in verdict.threats] == [("doc.pdf//obj3", "Eicar-Test-Signature")]
