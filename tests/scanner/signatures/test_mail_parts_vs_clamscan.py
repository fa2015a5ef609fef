"""Differential test: which mail parts clamscan and lmsav check for phishing and describe to .cdb.

ClamAV checks the links of some parts of a message only (a message that is text only, text
shown inline, up to 100 KiB; not attachments, not what an attached archive holds, not an
attached message it does not open) and describes the parts it saves to container-metadata
rules by file name and decoded size. Mails of every such kind go through ``clamscan -d DIR`` and
through lmsav's whole engine (``Engine(Database.load(DIR)).scan_path``); each mail must get the
same verdict.
"""

from __future__ import annotations

import base64
import io
import quopri
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.signatures.database import Database

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

SPOOF = '<a href="http://evil.example.net/login">www.paypal.com</a>'
HTML = f"<html><body><p>Your account</p>{SPOOF}</body></html>"
HEAD = "From: a@example.org\nTo: d@example.org\nSubject: t\n"
SPOOFED = "Heuristics.Phishing.Email.SpoofedDomain"


def single(headers: str, body: str) -> str:
    return f"{HEAD}MIME-Version: 1.0\n{headers}\n{body}\n"


def multipart(subtype: str, *parts: str, boundary: str = "BB", epilogue: str = "") -> str:
    body = "".join(f"--{boundary}\n{part}\n" for part in parts)
    return (f'{HEAD}MIME-Version: 1.0\nContent-Type: multipart/{subtype}; '
            f'boundary="{boundary}"\n\nThis is a MIME message.\n{body}--{boundary}--\n'
            f"{epilogue}")


def part(headers: str, body: str) -> str:
    return f"{headers}\n{body}"


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.encodebytes(raw).decode().rstrip("\n")


def qp(text: str) -> str:
    return quopri.encodestring(text.encode()).decode().rstrip("\n")


def forwarded(inner_headers: str, inner_body: str) -> str:
    return f"{HEAD}MIME-Version: 1.0\n{inner_headers}\n{inner_body}"


def zipped(name: str, data: str) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(name, data)
    return out.getvalue()


BIG = HTML + "\n" + ("x" * 70 + "\n") * 1500  # over 100 KiB
# 100 KiB as ClamAV reads it (lines end in LF), more than that as bytes with CRLF line ends.
NEAR = HTML + "\n" + ("y" * 99 + "\n") * ((100 * 1024 - len(HTML) - 1) // 100)

PHISHING_MAILS = {
    # A message that is text only: ClamAV checks it whatever its text type or disposition.
    "plain_no_mime.eml": f"{HEAD}\n{HTML}\n",
    "plain.eml": single("Content-Type: text/plain\n", HTML),
    "html.eml": single("Content-Type: text/html\n", HTML),
    "html_base64.eml": single("Content-Type: text/html\nContent-Transfer-Encoding: base64\n",
                              b64(HTML)),
    "html_qp.eml": single("Content-Type: text/html\n"
                          "Content-Transfer-Encoding: quoted-printable\n", qp(HTML)),
    "html_7bit.eml": single("Content-Type: text/html\nContent-Transfer-Encoding: 7bit\n", HTML),
    "html_as_attachment.eml": single(
        "Content-Type: text/html\nContent-Disposition: attachment; filename=a.html\n", HTML),
    # With only a name and no encoding, ClamAV decodes the text as base64: no links left.
    "html_named.eml": single('Content-Type: text/html; name="a.html"\n', HTML),
    "html_big.eml": single("Content-Type: text/html\n", BIG),
    "application.eml": single("Content-Type: application/octet-stream\n", HTML),
    "image_base64.eml": single("Content-Type: image/png\nContent-Transfer-Encoding: base64\n",
                               b64(HTML)),
    # Parts of a multipart message: text shown inline is checked, attachments are not.
    "alternative.eml": multipart("alternative", part("Content-Type: text/plain\n", "Hello"),
                                 part("Content-Type: text/html\n", HTML)),
    "alternative_qp.eml": multipart(
        "alternative", part("Content-Type: text/plain\n", "Hello"),
        part("Content-Type: text/html; charset=utf-8\n"
             "Content-Transfer-Encoding: quoted-printable\n", qp(HTML))),
    "plain_part.eml": multipart("mixed", part("Content-Type: text/plain\n", HTML)),
    "plain_part_8bit.eml": multipart(
        "mixed", part("Content-Type: text/plain\nContent-Transfer-Encoding: 8bit\n", HTML)),
    "inline_html.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "See below"),
        part("Content-Type: text/html\nContent-Disposition: inline\n", HTML)),
    "inline_html_named.eml": multipart(
        "mixed", part('Content-Type: text/html\nContent-Disposition: inline; '
                      'filename="page.html"\n', HTML)),
    "inline_html_7bit.eml": multipart(
        "mixed", part("Content-Type: text/html\nContent-Transfer-Encoding: 7bit\n"
                      "Content-Disposition: inline\n", HTML)),
    "html_part_7bit.eml": multipart(
        "mixed", part("Content-Type: text/html\nContent-Transfer-Encoding: 7bit\n", HTML)),
    "html_part_named.eml": multipart("mixed", part('Content-Type: text/html; name="p.html"\n',
                                                   HTML)),
    "html_attachment.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "See attached"),
        part('Content-Type: text/html; name="offer.html"\n'
             'Content-Disposition: attachment; filename="offer.html"\n', HTML)),
    "html_attachment_base64.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "See attached"),
        part("Content-Type: text/html\nContent-Transfer-Encoding: base64\n"
             'Content-Disposition: attachment; filename="offer.html"\n', b64(HTML))),
    "html_other_disposition.eml": multipart(
        "mixed", part("Content-Type: text/html\nContent-Disposition: form-data\n", HTML)),
    "html_enriched.eml": multipart("mixed", part("Content-Type: text/enriched\n", HTML)),
    "no_content_type_part.eml": multipart("mixed", part("X-Note: none\n", HTML)),
    "octet_stream_part.eml": multipart(
        "mixed", part("Content-Type: application/octet-stream\n", HTML)),
    "big_part.eml": multipart("mixed", part("Content-Type: text/html\n", BIG)),
    "near_limit_crlf.eml": multipart("mixed", part("Content-Type: text/html\n", NEAR)
                                     ).replace("\n", "\r\n"),
    "zipped_html.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "See attached"),
        part('Content-Type: application/zip; name="a.zip"\nContent-Transfer-Encoding: base64\n',
             b64(zipped("page.html", HTML)))),
    "related.eml": multipart(
        "related", part("Content-Type: text/html\n", HTML),
        part('Content-Type: image/png; name="logo.png"\nContent-Transfer-Encoding: base64\n',
             "iVBORw0KGgo=")),
    "signed.eml": multipart(
        "signed", part("Content-Type: text/plain\n", HTML),
        part("Content-Type: application/pgp-signature\n", "sig")),
    "signed_second.eml": multipart(
        "signed", part("Content-Type: application/octet-stream\n", "data"),
        part("Content-Type: application/pgp-signature\n", HTML)),
    "fax.eml": multipart("fax-message", part("Content-Type: text/html\n", HTML)),
    # Attached messages: ClamAV opens one only when its text declares a transfer encoding.
    "forwarded_plain.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\n",
             forwarded("Content-Type: text/html\n", HTML))),
    "forwarded_7bit.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\n",
             forwarded("Content-Type: text/html\nContent-Transfer-Encoding: 7bit\n", HTML))),
    "forwarded_qp.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\n",
             forwarded("Content-Type: text/html\n"
                       "Content-Transfer-Encoding: quoted-printable\n", qp(HTML)))),
    "forwarded_8bit.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n",
             forwarded("Content-Type: text/html\nContent-Transfer-Encoding: 8bit\n", HTML))),
    "forwarded_attachment.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\n",
             forwarded('Content-Type: multipart/mixed; boundary="CC"\n',
                       "\n--CC\nContent-Type: text/plain\n\nsee\n--CC\n"
                       "Content-Type: text/html\nContent-Transfer-Encoding: base64\n"
                       'Content-Disposition: attachment; filename="x.html"\n\n'
                       f"{b64(HTML)}\n--CC--"))),
    "forwarded_inline_base64.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Forwarded"),
        part("Content-Type: message/rfc822\n",
             forwarded('Content-Type: multipart/alternative; boundary="CC"\n',
                       "\n--CC\nContent-Type: text/plain\n\nsee\n--CC\n"
                       "Content-Type: text/html\nContent-Transfer-Encoding: base64\n\n"
                       f"{b64(HTML)}\n--CC--"))),
    "report.eml": multipart(
        "report", part("Content-Type: text/plain\n", "Delivery failed"),
        part("Content-Type: message/delivery-status\n", "Status: 5.0.0"),
        part("Content-Type: message/rfc822\n",
             forwarded("Content-Type: text/html\nContent-Transfer-Encoding: base64\n",
                       b64(HTML)))),
}


def _write(directory: Path, mails: dict[str, str]) -> list[Path]:
    paths = []
    for name, text in mails.items():
        path = directory / name
        path.write_bytes(text.encode())
        paths.append(path)
    return paths


def _clamscan(db: Path, paths: list[Path], *options: str) -> dict[str, set[str]]:
    run = subprocess.run(["clamscan", "--no-summary", *options, "-d", str(db),
                          *map(str, paths)], capture_output=True, text=True, check=False)
    assert run.returncode in (0, 1), run.stderr
    found: dict[str, set[str]] = {path.name: set() for path in paths}
    for line in run.stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND"):  # a plain signature directory in lmsav: no suffix
            found[Path(path).name].add(verdict.removesuffix(" FOUND").removesuffix(".UNOFFICIAL"))
    return found


def _lmsav(db: Path, paths: list[Path], cache: Path) -> dict[str, set[str]]:
    engine = Engine(Database.load(db, cache_path=cache))
    return {path.name: {threat.name for _, threat in engine.scan_path(path).threats}
            for path in paths}


def test_phishing_is_checked_in_the_parts_clamav_checks(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "t.pdb").write_text("H:paypal.com\n")
    samples = tmp_path / "samples"
    samples.mkdir()
    paths = _write(samples, PHISHING_MAILS)
    theirs = _clamscan(db, paths)
    ours = _lmsav(db, paths, tmp_path / "c.lmsavc")
    # clamscan names one detection per file; lmsav may name more, never other ones.
    differences = {name: (theirs[name], ours[name]) for name in theirs
                   if bool(theirs[name]) != bool(ours[name]) or not theirs[name] <= ours[name]}
    assert not differences, differences
    detected = {name for name, names in theirs.items() if names}
    # The corpus holds both verdicts of each kind of part.
    assert {"plain.eml", "html.eml", "alternative.eml", "inline_html.eml", "related.eml",
            "near_limit_crlf.eml", "forwarded_qp.eml", "forwarded_inline_base64.eml"} <= detected
    assert not detected & {"html_attachment.eml", "big_part.eml", "zipped_html.eml",
                           "forwarded_plain.eml", "html_named.eml", "inline_html_7bit.eml"}


# -- .cdb rules on mail attachments ------------------------------------------------------------

def attachment(name_headers: str, data: bytes, encoding: str = "base64") -> str:
    body = b64(data) if encoding == "base64" else data.decode()
    return part(f"Content-Type: application/octet-stream{name_headers}\n"
                f"Content-Transfer-Encoding: {encoding}\n", body)


CDB_MAILS = {
    "exe.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "Invoice attached\n"),
        attachment('; name="Invoice 2024.exe"', b"MZ" + bytes(200))),
    "names.eml": multipart(
        "mixed", part("Content-Type: text/html\n", "<p>hi</p>"),
        attachment('\nContent-Disposition: attachment; filename="my report.pdf"', b"%PDF-1.4"),
        attachment("\nContent-Disposition: attachment; filename*=utf-8''r%C3%A9sum%C3%A9.doc",
                   b"DOC" * 10),
        attachment('; name="=?utf-8?B?Y2Fmw6kuemlw?="', b"PK\x05\x06" + bytes(18)),
        attachment("\nContent-Disposition: attachment", b"no name")),
    "sizes.eml": multipart(
        "mixed", *(attachment(f'; name="s{size}.bin"', bytes(range(256)) * 4 + b"x" * size)
                   for size in (0, 1, 2, 3, 61, 1000))),
    "unpadded.eml": multipart(
        "mixed", part('Content-Type: application/octet-stream; name="u.bin"\n'
                      "Content-Transfer-Encoding: base64\n", "YWJjZGU")),
    "text_attachments.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "line one\n\n\n\nline two\n"),
        part("Content-Type: text/csv\nContent-Disposition: attachment; filename=data.csv\n",
             "a,b\r\n1,2\r\n"),
        part('Content-Type: text/plain; name="notes.txt"\nContent-Transfer-Encoding: 7bit\n',
             "seven bit text with a name\n"),
        part("Content-Type: text/html\nContent-Transfer-Encoding: quoted-printable\n",
             "caf=C3=A9 =\nsoft break\n")),
    "nested.eml": multipart(
        "mixed", part("Content-Type: text/plain\n", "outer"),
        part('Content-Type: multipart/alternative; boundary="CC"\n',
             "--CC\nContent-Type: text/plain\n\ninner text\n--CC\n"
             "Content-Type: text/html\n\n<b>inner</b>\n--CC--"),
        attachment('; name="payload.scr"', b"MZ" * 300)),
}

CDB = r"""
Mail.Exe:CL_TYPE_MAIL:*:\.exe$:*:*:*:*:*:*
Mail.Scr:CL_TYPE_MAIL:*:(?i)\.SCR$:*:*:*:0:*:*
Mail.Invoice:CL_TYPE_MAIL:*:^Invoice_2024\.exe$:*:*:0:*:*:*
Mail.Report:*:*:^my_report\.pdf$:8:8:*:*:*:*
Mail.Resume:CL_TYPE_MAIL:*:^r__sum__\.doc$:30:*:*:*:*:*
Mail.Cafe:CL_TYPE_MAIL:*:^caf.*\.zip$:*:*:*:*:*:*
Mail.Unknown:CL_TYPE_MAIL:*:^unknown$:7:7:*:*:*:*
Mail.Size1:CL_TYPE_MAIL:*:^s1\.bin$:1025:1025:*:*:*:*
Mail.Size61:CL_TYPE_MAIL:*:^s61\.bin$:1085:*:*:*:*:*
Mail.SizeRange:CL_TYPE_MAIL:*:^s[0-9]+\.bin$:1024-1026:*:*:*:*:*
Mail.Unpadded:CL_TYPE_MAIL:*:^u\.bin$:5:5:*:*:*:*
Mail.TextPart:CL_TYPE_MAIL:*:^attachment$:20:*:*:*:*:*
Mail.Csv:CL_TYPE_MAIL:*:^data\.csv$:9:9:*:*:*:*
Mail.SevenBitNamed:CL_TYPE_MAIL:*:^notes\.txt$:16:16:*:*:*:*
Mail.Inline:CL_TYPE_MAIL:*:^mixedtextportion$:18:18:*:*:*:*
Mail.InnerHtml:CL_TYPE_MAIL:*:^mixedtextportion$:13:13:*:*:*:*
Mail.InnerText:CL_TYPE_MAIL:*:^attachment$:11:11:*:*:*:*
Mail.Small:CL_TYPE_MAIL:*:*:1-9:*:*:*:*:*
Mail.Big:CL_TYPE_MAIL:*:*:1000-0:*:*:*:*:*
Zip.NotMail:CL_TYPE_ZIP:*:.*:*:*:*:*:*:*
Mail.ContainerSize:CL_TYPE_MAIL:0-100000:\.scr$:*:*:*:*:*:*
""".lstrip()


def test_cdb_rules_see_mail_attachments_as_in_clamav(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "mail.cdb").write_text(CDB)
    samples = tmp_path / "samples"
    samples.mkdir()
    paths = _write(samples, CDB_MAILS)
    theirs = _clamscan(db, paths, "--allmatch")
    ours = _lmsav(db, paths, tmp_path / "c.lmsavc")
    assert ours == theirs
    fired = set().union(*theirs.values())
    rules = {line.split(":", 1)[0] for line in CDB.splitlines()}
    assert rules - fired == {"Zip.NotMail"}  # every mail rule is seen at work


# Parts ClamAV checks for links without describing them to .cdb rules (a message that is text
# only, the text part of multipart/related) and attached messages it never opens.
HIDDEN_MAILS = {
    "plain.eml": single("Content-Type: text/plain\n", "Hello"),
    "related.eml": multipart("related", part("Content-Type: text/plain\n", "Hello")),
    "forwarded.eml": multipart("mixed", part("Content-Type: message/rfc822\n",
                                             forwarded("Content-Type: text/plain\n", "Hi"))),
}


def test_parts_clamav_describes_to_no_cdb_rule(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "mail.cdb").write_text("Mail.Any:CL_TYPE_MAIL:*:*:*:*:*:*:*:*\n")
    samples = tmp_path / "samples"
    samples.mkdir()
    paths = _write(samples, HIDDEN_MAILS)
    theirs = _clamscan(db, paths, "--allmatch")
    assert theirs == {name: set() for name in HIDDEN_MAILS}
    assert _lmsav(db, paths, tmp_path / "c.lmsavc") == theirs


def test_cdb_rules_see_html_attachments(tmp_path):
    db = tmp_path / "db"
    db.mkdir()
    (db / "mail.cdb").write_text("Mail.Page:CL_TYPE_MAIL:*:^offer\\.html$:*:*:*:*:*:*\n")
    samples = tmp_path / "samples"
    samples.mkdir()
    paths = _write(samples, {"page.eml": PHISHING_MAILS["html_attachment_base64.eml"]})
    theirs = _clamscan(db, paths, "--allmatch")
    assert theirs == {"page.eml": {"Mail.Page"}}
    assert _lmsav(db, paths, tmp_path / "c.lmsavc") == theirs
