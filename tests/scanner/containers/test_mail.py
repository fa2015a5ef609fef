"""MIME messages explode into decoded parts, attached messages and uuencoded files."""

from __future__ import annotations

import base64
import binascii
import io
import zipfile
from email.message import EmailMessage

import pytest

from lmsav.scanner.containers import handler_for
from lmsav.scanner.containers.message import LINKS_MAX_SIZE, MailHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.subject import MAIL_LINKS, MAIL_LINKS_ONLY, MAIL_UNREAD
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with


def explode(data: bytes, limits: Limits = Limits()) -> list:
    return explode_with(MailHandler(), ScanObject("m.eml", data=data), limits)


def parts(data: bytes) -> dict[str, bytes]:
    return {c.name: c.data for c in explode(data)}


def message_with_attachment(name: str, payload: bytes, maintype="application", subtype="zip"):
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "report"
    msg.set_content("see attached\n")
    msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=name)
    return msg


def uuencode(name: str, data: bytes) -> bytes:
    lines = [f"begin 644 {name}\n".encode()]
    for i in range(0, len(data), 45):
        lines.append(binascii.b2a_uu(data[i:i + 45]))
    lines += [b"`\n", b"end\n"]
    return b"".join(lines)


def test_registered_for_mail():
    assert isinstance(handler_for("mail"), MailHandler)


def test_text_body_and_base64_attachment_are_decoded():
    zip_data = b"PK\x03\x04 pretend zip"
    data = message_with_attachment("invoice.zip", zip_data).as_bytes()
    assert sniff(data) == "mail"
    assert parts(data) == {"1:part1.plain": b"see attached\n", "2:invoice.zip": zip_data}


def test_quoted_printable_and_generated_names():
    raw = (
        b"From: a@example.org\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="XX"\r\n\r\n'
        b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"caf=C3=A9 =3D ok\r\n"
        b"--XX\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--XX--\r\n"
    )
    got = parts(raw)
    assert list(got) == ["1:part1.plain", "2:part2.html"]
    assert got["1:part1.plain"] == "café = ok".encode()  # the CRLF before "--XX" is the boundary's
    assert got["2:part2.html"] == b"<p>hi</p>"


def test_encoded_word_filename_is_decoded():
    raw = (
        b"From: a@example.org\nTo: b@example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n--B\nContent-Type: text/plain\n\nhi\n'
        b"--B\nContent-Type: application/octet-stream\n"
        b'Content-Disposition: attachment; filename="=?utf-8?b?ZmFjdHVyZS5leGU=?="\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"MZ payload") + b"--B--\n"
    )
    assert parts(raw)["2:facture.exe"] == b"MZ payload"


def test_attached_message_is_yielded_whole_and_sniffs_as_mail():
    inner = message_with_attachment("e.com", EICAR, "application", "octet-stream")
    outer = EmailMessage()
    outer["From"] = "fw@example.org"
    outer["To"] = "b@example.org"
    outer["Subject"] = "Fwd"
    outer.set_content("forwarding\n")
    outer.add_attachment(inner)
    got = explode(outer.as_bytes())
    assert [c.name for c in got] == ["1:part1.plain", "2:part2.rfc822"]
    attached = got[1].data
    assert sniff(attached) == "mail"
    # Exploding the attached message reaches the file inside it.
    assert parts(attached)["2:e.com"] == EICAR


def test_uuencoded_block_in_text_body_is_a_separate_member():
    body = b"Here is the file:\n\n" + uuencode("tool.com", EICAR) + b"\nbye\n"
    raw = b"From: a@example.org\nTo: b@example.org\nSubject: uu\n\n" + body
    got = parts(raw)
    assert list(got) == ["1:part1.plain", "1.1:tool.com"]
    assert got["1:part1.plain"] == body
    assert got["1.1:tool.com"] == EICAR


def test_x_uuencode_transfer_encoding_is_decoded():
    raw = (
        b"From: a@example.org\nTo: b@example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n--B\n'
        b'Content-Type: application/octet-stream; name="x.bin"\n'
        b"Content-Transfer-Encoding: x-uuencode\n\n" + uuencode("x.bin", b"binary\x00data") +
        b"--B--\n"
    )
    assert parts(raw)["1:x.bin"] == b"binary\x00data"


def test_bad_base64_decodes_what_it_can():
    good = base64.b64encode(b"recoverable content here!")
    raw = (
        b"From: a@example.org\nTo: b@example.org\nMIME-Version: 1.0\n"
        b'Content-Type: multipart/mixed; boundary="B"\n\n--B\n'
        b'Content-Type: application/octet-stream; name="bad.bin"\n'
        b"Content-Transfer-Encoding: base64\n\n" + good + b"!!!*** not base64 ***\n--B--\n"
    )
    got = parts(raw)
    assert got["1:bad.bin"].startswith(b"recoverable content here!")


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b\nTo: c@d\nContent-Type: multipart/mixed; boundary=\"Q\"\n\nno boundary ever\n",
        b"From: a@b\nTo: c@d\nContent-Type: multipart/mixed\n\n--\n--\n",
        b"From: a@b\nTo: c@d\nContent-Type: text/plain; charset=\"\xff\xfe\"\n"
        b"Content-Transfer-Encoding: base64\n\n\xff\xfe\x00===\n",
        b"From: a@b\nTo: c@d\nContent-Type: message/rfc822\n\n",
        b"From: a@b\nTo: c@d\nContent-Type: multipart/mixed; boundary=\"A\"\n\n--A\n"
        b"Content-Type: multipart/mixed; boundary=\"A\"\n\n--A\n--A--\n",
        b"From: a@b\nTo: c@d\n" + b"Content-Type: multipart/mixed; boundary=\"Z\"\n\n--Z\n" * 200,
    ],
)
def test_malformed_mime_never_crashes(raw):
    got = explode(raw)
    assert all(c.status is None and isinstance(c.data, bytes) for c in got)


def test_part_over_file_size_limit_is_reported_not_read():
    data = message_with_attachment("big.bin", b"x" * 10_000, "application", "octet-stream")
    got = {c.name: c for c in explode(data.as_bytes(), Limits(max_file_size=4096))}
    assert got["2:big.bin"].status == Status.ERROR
    assert got["2:big.bin"].reason == "limit: filesize 4096"
    assert got["1:part1.plain"].data == b"see attached\n"


# -- how ClamAV reads each part (its .cdb record and whether its links are checked) ----------

HEAD = b"From: a@example.org\nTo: b@example.org\nSubject: t\nMIME-Version: 1.0\n"


def mixed(*parts: bytes) -> bytes:
    body = b"".join(b"--B\n" + p + b"\n" for p in parts)
    return HEAD + b'Content-Type: multipart/mixed; boundary="B"\n\n' + body + b"--B--\n"


def metas(data: bytes) -> dict[str, tuple | None]:
    """name -> (ClamAV's file name, size, link use) of each part, None when ClamAV skips it."""
    return {c.name: c.meta and (c.meta.name, c.meta.size, c.meta.mail_use)
            for c in explode(data)}


def test_attachments_are_described_by_sanitised_name_and_decoded_size():
    got = metas(mixed(
        b"Content-Type: text/plain\n\nsee attached",
        b'Content-Type: application/octet-stream; name="Invoice 2024.exe"\n'
        b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(b"MZ" + bytes(98)),
        b"Content-Type: application/pdf\nContent-Disposition: attachment; "
        b"filename*=utf-8''r%C3%A9sum%C3%A9.pdf\nContent-Transfer-Encoding: base64\n\nJVBERg==",
        b"Content-Type: application/pdf\nContent-Disposition: attachment\n"
        b"Content-Transfer-Encoding: base64\n\nJVBERg=="))
    assert got == {
        # Text shown inline without an encoding is saved under a made-up name, with a line end.
        "1:part1.plain": ("attachment", 13, ""),
        "2:Invoice 2024.exe": ("Invoice_2024.exe", 100, ""),
        "3:résumé.pdf": ("r__sum__.pdf", 4, ""),  # each byte of a non-ASCII letter is a '_'
        "4:part4.pdf": ("unknown", 4, ""),  # an attachment without a name
    }


def test_clamav_keeps_the_first_argument_of_a_disposition_only():
    got = metas(mixed(b"Content-Type: application/octet-stream\nContent-Disposition: "
                      b"attachment; size=5; filename=x.exe\nContent-Transfer-Encoding: base64"
                      b"\n\naGVsbG8="))
    assert got == {"1:x.exe": ("unknown", 5, "")}


def test_text_shown_inline_is_checked_for_links_attachments_are_not():
    html = b"<a href='http://evil.example.net/'>www.paypal.com</a>"
    got = metas(mixed(
        b"Content-Type: text/html\n\n" + html,
        b"Content-Type: text/html\nContent-Disposition: inline\n\n" + html,
        b"Content-Type: text/html\nContent-Disposition: attachment; filename=o.html\n\n"
        + html,
        b"Content-Type: text/html\nContent-Disposition: form-data\n\n" + html,
        b'Content-Type: text/html; name="n.html"\n\n' + html))
    size = len(html) + 1
    assert got == {
        "1:part1.html": ("mixedtextportion", size, MAIL_LINKS),
        "2:part2.html": ("unknown", size, MAIL_LINKS),
        "3:o.html": ("o.html", size, ""),
        "4:part4.html": None,  # a disposition ClamAV does not know: left alone
        # Named text without an encoding is read as base64 by ClamAV (up to the first '='):
        # no links to check.
        "5:n.html": ("mixedtextportion", 4, ""),
    }


def test_a_message_that_is_text_only_has_its_links_checked_without_a_cdb_record():
    got = metas(HEAD + b"Content-Type: text/html\n\n<p>offer</p>\n")
    assert got == {"1:part1.html": ("textportion", 13, MAIL_LINKS_ONLY)}
    got = metas(HEAD + b"Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
                + base64.encodebytes(b"<p>offer</p>\n"))
    assert got == {"1:part1.html": ("textportion", 13, MAIL_LINKS)}


def test_links_are_checked_up_to_100_kib_as_clamav_reads_the_part():
    line = b"x" * 99 + b"\r\n"
    lines = LINKS_MAX_SIZE // 100
    fits = HEAD.replace(b"\n", b"\r\n") + b"Content-Type: text/html\r\n\r\n" + line * lines
    # More bytes than the limit, but ClamAV counts one byte for each line end.
    assert len(fits) > LINKS_MAX_SIZE
    assert metas(fits)["1:part1.html"][1:] == (lines * 100, MAIL_LINKS_ONLY)
    too_big = HEAD + b"Content-Type: text/html\n\n" + b"x" * LINKS_MAX_SIZE
    assert metas(too_big) == {"1:part1.html": None}


def test_attached_message_without_encoded_parts_is_not_read():
    inner = HEAD + b"Content-Type: text/html\n\n<a href='http://e.example/'>x</a>"
    got = explode(mixed(b"Content-Type: message/rfc822\n\n" + inner))
    assert got[0].meta.mail_use == MAIL_UNREAD
    attached = ScanObject("m.eml//1:part1.rfc822", data=got[0].data)
    attached.member, attached.ancestry = got[0].meta, ("mail",)
    assert [c.meta for c in explode_with(MailHandler(), attached)] == [None]
    # With a transfer encoding inside, ClamAV reads it as a message of its own.
    inner = inner.replace(b"\n\n", b"\nContent-Transfer-Encoding: quoted-printable\n\n", 1)
    got = explode(mixed(b"Content-Type: message/rfc822\n\n" + inner))
    assert got[0].meta is None
    attached = ScanObject("m.eml//1:part1.rfc822", data=got[0].data)
    attached.ancestry = ("mail",)
    assert [c.meta.mail_use for c in explode_with(MailHandler(), attached)] == [MAIL_LINKS]


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_in_zip_attached_to_mail(engine):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("clam.exe", EICAR)
    msg = message_with_attachment("invoice.zip", buf.getvalue())
    verdict = engine.scan_bytes(msg.as_bytes(), "mail.eml")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("mail.eml//2:invoice.zip//clam.exe", "Eicar-Test-Signature")
    ]


def test_engine_finds_uuencoded_eicar_in_forwarded_message(engine):
    inner = EmailMessage()
    inner["From"] = "x@example.org"
    inner["To"] = "y@example.org"
    inner.set_content(("text\n" + uuencode("e.com", EICAR).decode() + "\n"))
    outer = EmailMessage()
    outer["From"] = "fw@example.org"
    outer["To"] = "b@example.org"
    outer.set_content("fwd\n")
    outer.add_attachment(inner)
    verdict = engine.scan_bytes(outer.as_bytes(), "fwd.eml")
    paths = [p for p, t in verdict.threats if t.name == "Eicar-Test-Signature"]
    assert "fwd.eml//2:part2.rfc822//1.1:e.com" in paths
