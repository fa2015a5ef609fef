"""PDF streams are decoded through every standard filter; embedded files keep their names."""

from __future__ import annotations

import base64
import binascii
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest

from lmsav.scanner.containers import Corrupted
from lmsav.scanner.containers.pdf import PdfHandler
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR, md5_line
from tests.scanner.containers.helpers import explode_until, explode_with

CATALOG = b"<< /Type /Catalog /Pages 2 0 R >>"
PAGES = b"<< /Type /Pages /Kids [] /Count 0 >>"
TEXT = b"BT /F1 12 Tf 72 712 Td (Hello from a test PDF) Tj ET\n" * 20


# -- building PDFs by hand -----------------------------------------------------------------------


def build_pdf(*objects: bytes, catalog: bytes = CATALOG, trailer: bytes = b"",
              pages: bytes = PAGES) -> bytes:
    """A PDF with a catalog (1), a page tree (2) and ``objects`` numbered from 3, with an xref."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for num, body in enumerate((catalog, pages, *objects), 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (num, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(offsets) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(offsets) + 1, trailer, xref)
    return bytes(out)


def stream(data: bytes, entries: bytes = b"") -> bytes:
    return b"<< /Length %d %s>>\nstream\n%s\nendstream" % (len(data), entries, data)


def lzw_encode(data: bytes, early: int = 1) -> bytes:
    """LZW as PDF writes it: MSB-first codes, 9-12 bits, clear first, EOD last."""
    table = {bytes([i]): i for i in range(256)}
    next_code, width = 258, 9
    decoder_size = 258  # the reader's table lags one entry behind the writer's
    bits = nbits = 0
    out = bytearray()

    def emit(code: int) -> None:
        nonlocal bits, nbits
        bits = (bits << width) | code
        nbits += width
        while nbits >= 8:
            nbits -= 8
            out.append((bits >> nbits) & 0xFF)

    def grow(added: bool) -> None:
        nonlocal decoder_size, width
        if added:
            decoder_size += 1
        if decoder_size + early >= (1 << width) and width < 12:
            width += 1

    emit(256)
    w = b""
    first = True
    for byte in data:
        wc = w + bytes([byte])
        if wc in table:
            w = wc
            continue
        emit(table[w])
        grow(not first)
        first = False
        assert next_code < 4094, "test encoder has no table reset"
        table[wc] = next_code
        next_code += 1
        w = bytes([byte])
    if w:
        emit(table[w])
        grow(not first)
    emit(257)
    if nbits:
        out.append((bits << (8 - nbits)) & 0xFF)
    return bytes(out)


def run_length_encode(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        run = 1
        while i + run < len(data) and run < 128 and data[i + run] == data[i]:
            run += 1
        if run > 1:
            out += bytes([257 - run, data[i]])
            i += run
        else:
            j = i + 1
            while j < len(data) and j - i < 128 and (j + 1 >= len(data) or data[j + 1] != data[j]):
                j += 1
            out += bytes([j - i - 1]) + data[i:j]
            i = j
    return bytes(out + b"\x80")


def png_predict(data: bytes, columns: int, kinds: list[int], bpp: int = 1) -> bytes:
    """PNG row filtering (the writer's side) with the given filter type per row, cycled."""
    rows = [data[i:i + columns].ljust(columns, b"\0") for i in range(0, len(data), columns)]
    prior = bytes(columns)
    out = bytearray()
    for n, row in enumerate(rows):
        kind = kinds[n % len(kinds)]
        enc = bytearray()
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = a
            elif kind == 2:
                pred = b
            elif kind == 3:
                pred = (a + b) >> 1
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            enc.append((x - pred) & 0xFF)
        out += bytes([kind]) + enc
        prior = row
    return bytes(out)


def explode(data: bytes, limits: Limits = Limits(), name: str = "doc.pdf") -> list:
    return explode_with(PdfHandler(), ScanObject(name, data=data), limits)


def members(data: bytes) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data)}


def explode_until_error(data: bytes):
    return explode_until(Corrupted, PdfHandler(), ScanObject("doc.pdf", data=data))


# -- filters ---------------------------------------------------------------------------------------


def test_handles_pdf_type():
    assert "pdf" in PdfHandler.types


def test_unfiltered_and_flate_streams():
    pdf = build_pdf(stream(TEXT), stream(zlib.compress(EICAR), b"/Filter /FlateDecode"))
    assert members(pdf) == {"obj3": TEXT, "obj4": EICAR}


def test_ascii_hex_and_ascii85():
    hexed = binascii.hexlify(EICAR).upper()
    hexed = b"\n".join(hexed[i:i + 30] for i in range(0, len(hexed), 30)) + b">"
    a85 = base64.a85encode(EICAR + TEXT, wrapcol=60, adobe=True)[2:]  # PDF data has no "<~"
    pdf = build_pdf(stream(hexed, b"/Filter /ASCIIHexDecode"),
                    stream(a85, b"/Filter /ASCII85Decode"))
    assert members(pdf) == {"obj3": EICAR, "obj4": EICAR + TEXT}


def test_ascii85_with_z_groups_and_partial_final_group():
    data = b"\0" * 8 + EICAR + b"abc"  # zero groups become "z"; 71 bytes end in a partial group
    a85 = base64.a85encode(data, adobe=True)
    assert b"z" in a85
    assert members(build_pdf(stream(a85, b"/Filter /A85")))["obj3"] == data


@pytest.mark.parametrize("early", [1, 0])
def test_lzw_with_early_change(early):
    payload = EICAR + TEXT * 3 + bytes(range(256)) * 4  # long enough for 10- and 11-bit codes
    entries = b"/Filter /LZWDecode" + (b" /DecodeParms << /EarlyChange 0 >>" if not early else b"")
    assert members(build_pdf(stream(lzw_encode(payload, early), entries)))["obj3"] == payload


def test_run_length():
    payload = EICAR + b"\0" * 300 + TEXT
    assert members(build_pdf(stream(run_length_encode(payload), b"/Filter /RunLengthDecode")))[
        "obj3"] == payload


def test_filter_chain_ascii85_then_flate_with_array_parms():
    a85 = base64.a85encode(zlib.compress(EICAR), adobe=True)
    entries = b"/Filter [/ASCII85Decode /FlateDecode] /DecodeParms [null null]"
    assert members(build_pdf(stream(a85, entries)))["obj3"] == EICAR


@pytest.mark.parametrize("kinds", [[0], [1], [2], [3], [4], [0, 1, 2, 3, 4]])
def test_png_predictors_under_flate(kinds):
    payload = EICAR + bytes(range(256)) + TEXT[:500]
    predicted = png_predict(payload, columns=12, kinds=kinds, bpp=3)
    entries = (b"/Filter /FlateDecode /DecodeParms << /Predictor 12 /Colors 3 "
               b"/BitsPerComponent 8 /Columns 4 >>")
    got = members(build_pdf(stream(zlib.compress(predicted), entries)))["obj3"]
    assert got[: len(payload)] == payload


def test_png_predictor_under_lzw():
    payload = EICAR * 3
    predicted = png_predict(payload, columns=5, kinds=[2])
    entries = b"/Filter /LZWDecode /DecodeParms << /Predictor 15 /Columns 5 >>"
    assert members(build_pdf(stream(lzw_encode(predicted), entries)))["obj3"][:len(payload)] == (
        payload)


def test_tiff_predictor():
    payload = EICAR + bytes(range(32))
    colors, columns = 2, 5
    rowlen = colors * columns
    encoded = bytearray(payload)
    for base in range(0, len(payload) - len(payload) % rowlen, rowlen):
        for i in range(base + rowlen - 1, base + colors - 1, -1):
            encoded[i] = (payload[i] - payload[i - colors]) & 0xFF
    entries = (b"/Filter /FlateDecode /DecodeParms << /Predictor 2 /Colors 2 "
               b"/Columns 5 >>")
    assert members(build_pdf(stream(zlib.compress(bytes(encoded)), entries)))["obj3"] == payload


def test_image_streams_are_skipped_but_the_rest_is_read():
    pdf = build_pdf(
        stream(b"\xff\xd8\xff\xe0 not really a jpeg", b"/Type /XObject /Subtype /Image /Filter /DCTDecode"),
        stream(zlib.compress(EICAR), b"/Filter [/FlateDecode /JBIG2Decode]"),
        stream(zlib.compress(EICAR), b"/Filter /Fl"),
    )
    assert members(pdf) == {"obj5": EICAR}


def test_wrong_length_falls_back_to_endstream():
    body = zlib.compress(EICAR)
    pdf = build_pdf(b"<< /Length 9999 /Filter /FlateDecode >>\nstream\r\n" + body
                    + b"\r\nendstream", b"<< /Length 7 0 R >>\nstream\n" + TEXT + b"\nendstream",
                    b"%d" % len(TEXT))
    assert members(pdf) == {"obj3": EICAR, "obj4": TEXT}


def test_raw_deflate_without_zlib_header():
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = raw.compress(EICAR) + raw.flush()
    assert members(build_pdf(stream(body, b"/Filter /FlateDecode")))["obj3"] == EICAR


def test_object_stream_is_decoded():
    inner = b"5 0 << /Type /Annot /Contents (hello) >>"
    objstm = stream(zlib.compress(b"5 0 " + inner[4:]), b"/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode")
    got = members(build_pdf(objstm))
    assert got == {"obj3": b"5 0 " + inner[4:]}


# -- embedded files --------------------------------------------------------------------------------

NAMES = b"<< /Type /Catalog /Pages 2 0 R /Names << /EmbeddedFiles << /Names [(%s) 4 0 R] >> >> >>"


def test_embedded_file_takes_its_file_spec_name():
    pdf = build_pdf(
        stream(zlib.compress(EICAR), b"/Type /EmbeddedFile /Filter /FlateDecode"),
        b"<< /Type /Filespec /F (old\\\\eicar.com) /UF <FEFF00650069006300610072002E0063006F006D>"
        b" /EF << /F 3 0 R >> >>",
        catalog=NAMES % b"eicar.com",
    )
    assert members(pdf) == {"eicar.com": EICAR}


def test_embedded_file_without_file_spec_is_named_by_object():
    pdf = build_pdf(stream(EICAR, b"/Type /EmbeddedFile"))
    assert members(pdf) == {"obj3": EICAR}


def test_file_spec_inside_an_object_stream_names_the_file():
    spec = b"<< /Type /Filespec /F (../../etc/dropper.exe) /EF << /F 4 0 R >> >>"
    content = b"5 0 " + spec
    pdf = build_pdf(
        stream(zlib.compress(content), b"/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode"),
        stream(EICAR, b"/Type /EmbeddedFile"),
    )
    assert members(pdf) == {"obj3": content, "dropper.exe": EICAR}


def one_page(contents: bytes) -> bytes:
    """A PDF whose page shows ``contents``: qpdf drops objects no page refers to."""
    return build_pdf(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
                     contents, pages=b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>")


needs_qpdf = pytest.mark.skipif(shutil.which("qpdf") is None, reason="qpdf (Debian) not installed")


@needs_qpdf
def test_attachment_added_by_qpdf_with_object_streams(tmp_path):
    (tmp_path / "eicar.com").write_bytes(EICAR)
    (tmp_path / "base.pdf").write_bytes(one_page(stream(TEXT)))
    subprocess.run(["qpdf", "--object-streams=generate", str(tmp_path / "base.pdf"),
                    "--add-attachment", str(tmp_path / "eicar.com"), "--",
                    str(tmp_path / "out.pdf")], check=True)
    got = members((tmp_path / "out.pdf").read_bytes())
    assert got["eicar.com"] == EICAR
    assert TEXT in got.values()


# -- encryption ------------------------------------------------------------------------------------


def qpdf_encrypt(tmp_path: Path, user: str, bits: str, *extra: str) -> bytes:
    (tmp_path / "eicar.com").write_bytes(EICAR)
    (tmp_path / "plain.pdf").write_bytes(one_page(stream(zlib.compress(TEXT), b"/Filter /FlateDecode")))
    subprocess.run(["qpdf", "--allow-weak-crypto", str(tmp_path / "plain.pdf"), "--add-attachment",
                    str(tmp_path / "eicar.com"), "--", "--encrypt", user, "owner-secret", bits,
                    *extra, "--", str(tmp_path / "enc.pdf")], check=True)
    return (tmp_path / "enc.pdf").read_bytes()


@needs_qpdf
@pytest.mark.parametrize("bits, extra", [("256", []), ("128", ["--use-aes=y"]),
                                         ("128", ["--use-aes=n"]), ("40", [])])
def test_encrypted_with_a_user_password_is_protected(tmp_path, bits, extra):
    got = explode(qpdf_encrypt(tmp_path, "user-secret", bits, *extra))
    assert [(c.name, c.status, c.reason) for c in got] == [
        ("encrypted", Status.PROTECTED, "encrypted")]


@needs_qpdf
@pytest.mark.parametrize("bits, extra", [("128", ["--use-aes=n"]), ("40", [])])
def test_rc4_with_empty_user_password_is_decrypted(tmp_path, bits, extra):
    got = members(qpdf_encrypt(tmp_path, "", bits, *extra))
    assert got["eicar.com"] == EICAR
    assert TEXT in got.values()


@needs_qpdf
def test_aes_with_empty_user_password_is_protected(tmp_path):
    got = explode(qpdf_encrypt(tmp_path, "", "256"))
    assert [(c.name, c.status) for c in got] == [("encrypted", Status.PROTECTED)]


# -- damage and bombs ------------------------------------------------------------------------------


def test_truncated_pdf_yields_the_readable_part_then_corrupted():
    payload = EICAR + bytes(random.Random(1).randbytes(20000))
    pdf = build_pdf(stream(TEXT), stream(zlib.compress(payload), b"/Filter /FlateDecode"))
    cut = pdf.index(b"endstream", pdf.index(b"/FlateDecode")) - 3000
    got, reason = explode_until_error(pdf[:cut])
    assert got[0].name == "obj3" and got[0].data == TEXT
    assert got[1].name == "obj4" and got[1].data.startswith(EICAR)
    assert "truncated" in reason


def test_missing_eof_after_last_object_is_corrupted():
    pdf = build_pdf(stream(TEXT))
    got, reason = explode_until_error(pdf[: pdf.index(b"endobj", pdf.index(b"endstream"))])
    assert [c.name for c in got] == ["obj3"]
    assert "%%EOF" in reason


def test_damaged_flate_yields_what_decoded():
    body = bytearray(zlib.compress(EICAR + TEXT * 20))
    body[100:130] = b"\xff" * 30
    got, reason = explode_until_error(build_pdf(stream(bytes(body), b"/Filter /FlateDecode")))
    assert got[0].data.startswith(EICAR[:20])
    assert reason.startswith("obj3: FlateDecode")


def test_no_objects_is_corrupted():
    with pytest.raises(Corrupted, match="no PDF objects"):
        explode(b"%PDF-1.4\nnothing here\n%%EOF\n")


def flate_bomb(mib: int) -> bytes:
    comp = zlib.compressobj(9)
    zeros = b"\0" * (1 << 20)
    return b"".join([comp.compress(zeros) for _ in range(mib)] + [comp.flush()])


def test_flate_bomb_stops_at_the_compression_ratio_limit():
    body = flate_bomb(200)
    got = explode(build_pdf(stream(body, b"/Filter /FlateDecode"), stream(EICAR)))
    assert [(c.name, c.status, c.reason) for c in got[:1]] == [
        ("obj3", Status.ERROR, "limit: compression ratio 250")]
    assert got[0].size <= max(len(body) * 250, 1 << 20) + (64 << 10)
    assert got[1].data == EICAR  # the next stream is still read


def test_garbage_and_mutations_never_raise_anything_but_corrupted():
    rnd = random.Random(7)
    spec = b"<< /Type /Filespec /F (a.exe) /EF << /F 3 0 R >> >>"
    seeds = [
        build_pdf(stream(zlib.compress(EICAR), b"/Type /EmbeddedFile /Filter /FlateDecode"), spec),
        build_pdf(stream(lzw_encode(TEXT), b"/Filter /LZWDecode /DecodeParms << /Predictor 12 /Columns 3 >>")),
        build_pdf(stream(base64.a85encode(TEXT), b"/Filter [/A85 /RL]")),
    ]
    for _ in range(300):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 20)):
            op = rnd.random()
            at = rnd.randrange(len(data))
            if op < 0.5:
                data[at] = rnd.randrange(256)
            elif op < 0.75:
                del data[at:at + rnd.randint(1, 40)]
            else:
                data[at:at] = rnd.choice([b"<<", b">>", b"(", b"[", b"stream\n", b"endstream",
                                          b" 9 0 R", b"/Filter /LZWDecode", b"\\"])
        try:
            explode(bytes(data))
        except Corrupted:
            pass
    for blob in (b"%PDF-", b"%PDF-1.7\n1 0 obj << /Length 5 >> stream\n",
                 b"%PDF-1.7\n1 0 obj\n" + b"<<" * 5000 + b">>\nstream\nx\nendstream\n",
                 b"%PDF-1.7\n1 0 obj\n" + b"[" * 5000 + b"\nendobj\ntrailer << /Encrypt 1 0 R >>"):
        try:
            explode(blob)
        except Corrupted:
            pass


# -- through the engine ----------------------------------------------------------------------------


def test_engine_finds_eicar_in_a_flate_stream(engine):
    pdf = build_pdf(stream(TEXT), stream(zlib.compress(EICAR), b"/Filter /FlateDecode"))
    verdict = engine.scan_bytes(pdf, "doc.pdf")
    assert [(p, t.name) for p, t in verdict.threats] == [("doc.pdf//obj4", "Eicar-Test-Signature")]


def test_engine_names_the_embedded_file(engine):
    pdf = build_pdf(
        stream(base64.a85encode(zlib.compress(EICAR), adobe=True),
               b"/Type /EmbeddedFile /Filter [/A85 /FlateDecode]"),
        b"<< /Type /Filespec /F (eicar.com) /EF << /F 3 0 R >> >>",
        catalog=NAMES % b"eicar.com",
    )
    verdict = engine.scan_bytes(pdf, "mail.eml//2:invoice.pdf")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("mail.eml//2:invoice.pdf//eicar.com", "Eicar-Test-Signature")]


def test_engine_truncated_pdf_is_corrupted_and_infected(engine):
    pdf = build_pdf(stream(zlib.compress(EICAR + bytes(range(256)) * 40), b"/Filter /FlateDecode"))
    verdict = engine.scan_bytes(pdf[: pdf.index(b"endstream") - 100], "cut.pdf")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


def test_engine_flate_bomb_is_a_limit(engine):
    verdict = engine.scan_bytes(build_pdf(stream(flate_bomb(200), b"/Filter /FlateDecode")),
                                "bomb.pdf")
    assert verdict.status == Status.ERROR
    assert [r.reason for r in verdict.findings()] == ["limit: compression ratio 250"]


@needs_qpdf
def test_engine_encrypted_pdf_is_protected(engine, tmp_path):
    verdict = engine.scan_bytes(qpdf_encrypt(tmp_path, "user-secret", "256"), "locked.pdf")
    assert verdict.status == Status.PROTECTED
    assert [r.path for r in verdict.findings()] == ["locked.pdf//encrypted"]


# -- against clamscan ------------------------------------------------------------------------------


def differential_samples(tmp_path: Path) -> dict[str, bytes]:
    spec = b"<< /Type /Filespec /F (eicar.com) /EF << /F 3 0 R >> >>"
    samples = {
        "flate.pdf": build_pdf(stream(zlib.compress(EICAR), b"/Filter /FlateDecode")),
        "hex.pdf": build_pdf(stream(binascii.hexlify(EICAR) + b">", b"/Filter /ASCIIHexDecode")),
        "a85.pdf": build_pdf(stream(base64.a85encode(EICAR, adobe=True)[2:], b"/Filter /ASCII85Decode")),
        "lzw.pdf": build_pdf(stream(lzw_encode(EICAR), b"/Filter /LZWDecode")),
        "rl.pdf": build_pdf(stream(run_length_encode(EICAR), b"/Filter /RunLengthDecode")),
        "chain.pdf": build_pdf(stream(base64.a85encode(zlib.compress(EICAR), adobe=True)[2:],
                                      b"/Filter [/ASCII85Decode /FlateDecode]")),
        "png.pdf": build_pdf(stream(zlib.compress(png_predict(EICAR, 4, [2])),
                                    b"/Filter /FlateDecode /DecodeParms << /Predictor 12 /Columns 4 >>")),
        "embedded.pdf": build_pdf(stream(zlib.compress(EICAR), b"/Type /EmbeddedFile /Filter /FlateDecode"),
                                  spec, catalog=NAMES % b"eicar.com"),
        "clean.pdf": build_pdf(stream(zlib.compress(TEXT), b"/Filter /FlateDecode")),
    }
    if shutil.which("qpdf"):
        samples["rc4-empty.pdf"] = qpdf_encrypt(tmp_path / "q", "", "128", "--use-aes=n")
    return samples


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed")
def test_lmsav_finds_what_clamscan_finds_in_pdfs(tmp_path):
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    (tmp_path / "q").mkdir()
    db = tmp_path / "db"
    db.mkdir()
    (db / "inner.hdb").write_text(md5_line(EICAR, "Lmsav.Test.PdfInner"))
    files = tmp_path / "files"
    files.mkdir()
    for name, data in differential_samples(tmp_path).items():
        (files / name).write_bytes(data)
    proc = subprocess.run(["clamscan", "--no-summary", "-d", str(db), str(files)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    clam = {Path(line.rpartition(": ")[0]).name for line in proc.stdout.splitlines()
            if line.endswith(" FOUND")}
    engine = Engine(Database.load(str(db), cache_path=tmp_path / "c.lmsavc"))
    ours = {p.name for p in files.iterdir() if engine.scan_path(p, p.name).status == Status.INFECTED}
    assert clam, proc.stdout
    assert clam <= ours, f"clamscan found, lmsav did not: {sorted(clam - ours)}"
    assert "clean.pdf" not in ours
