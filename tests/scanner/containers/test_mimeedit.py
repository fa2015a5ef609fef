"""Messages edited by byte offsets: parts removed or replaced, warn texts, headers."""

from __future__ import annotations

import base64
import email
import email.policy
from email.message import EmailMessage

import pytest

from lmsav.scanner.containers.message import MailHandler
from lmsav.scanner.containers.mime import read_message
from lmsav.scanner.containers.mimeedit import (
    RebuildError,
    header_end,
    headers_of,
    mail_leaves,
    rebuild_mail,
    replace_header,
    replace_with_text,
)
from lmsav.scanner.objects import ScanObject
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with, names_and_data

ZIP = b"PK\x03\x04 pretend zip \x00\xff"
EXE = b"MZ\x90\x00 pretend exe \x00\x01\x02"
PDF = b"%PDF-1.4 pretend pdf\n"


# -- messages used throughout ----------------------------------------------------------------


def mixed(eol: str = "\n") -> bytes:
    """A text body and three attachments: leaves 1:part1.plain 2:a.zip 3:b.exe 4:c.pdf."""
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "files"
    msg.set_content("see attached\n")
    msg.add_attachment(ZIP, maintype="application", subtype="zip", filename="a.zip")
    msg.add_attachment(EXE, maintype="application", subtype="octet-stream", filename="b.exe")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="c.pdf")
    return msg.as_bytes(policy=email.policy.default.clone(linesep=eol))


def nested() -> bytes:
    """multipart/mixed holding multipart/alternative (text, html) and an attached message."""
    inner = EmailMessage()
    inner["From"] = "c@example.org"
    inner["Subject"] = "inner"
    inner.set_content("inner body\n")
    inner.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "fwd"
    msg.set_content("plain version\n")
    msg.add_alternative("<p>html version</p>\n", subtype="html")
    msg.make_mixed()
    msg.attach(_attachment(ZIP, "application/zip", "a.zip"))
    msg.add_attachment(inner)
    return msg.as_bytes()


def _attachment(data: bytes, ctype: str, name: str) -> EmailMessage:
    part = EmailMessage()
    maintype, subtype = ctype.split("/")
    part.set_content(data, maintype=maintype, subtype=subtype, filename=name)
    return part


PLAIN = b"From: a@example.org\nTo: b@example.org\nSubject: plain\n\nJust text.\n"
CRLF = (
    b"From: a@example.org\r\nTo: b@example.org\r\nMIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n\r\npreamble\r\n'
    b"--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    b"caf=C3=A9\r\n"
    b"--XX\r\nContent-Type: application/octet-stream; name=\"x.bin\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(EXE).replace(b"\n", b"\r\n")
    + b"--XX\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n--XX--\r\nepilogue\r\n"
)
UNCLOSED = (
    b"From: a@example.org\nMIME-Version: 1.0\n"
    b'Content-Type: multipart/mixed; boundary="B"\n\n'
    b"--B\nContent-Type: text/plain\n\nfirst\n"
    b"--B\nContent-Type: application/pdf\nContent-Disposition: attachment; filename=d.pdf\n\n"
    + PDF + b"--B\nContent-Type: text/plain\n\nlast, never closed\n"
)


def handler_children(raw: bytes) -> list[tuple[str, bytes]]:
    return names_and_data(explode_with(MailHandler(), ScanObject("m.eml", data=raw)))


def parsed(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def attachments(raw: bytes) -> dict[str, bytes]:
    """File name → decoded content, as a mail client would see the rebuilt message."""
    return {p.get_filename(): p.get_content() for p in parsed(raw).iter_attachments()
            if p.get_filename()}


def leaf_contents(raw: bytes) -> list[bytes]:
    return [leaf.decoded() for leaf in mail_leaves(raw)]


def head_of(raw: bytes) -> bytes:
    end = raw.find(b"\n\n") if b"\r\n\r\n" not in raw else raw.find(b"\r\n\r\n")
    return raw[:end]


# -- leaves ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [mixed(), mixed("\r\n"), nested(), PLAIN, CRLF, UNCLOSED],
                         ids=["mixed", "mixed-crlf", "nested", "plain", "crlf", "unclosed"])
def test_leaves_are_the_handlers_children(raw):
    children = [(name, data) for name, data in handler_children(raw)
                if "." not in name.split(":", 1)[0]]  # uuencoded blocks are not leaves
    leaves = mail_leaves(raw)
    assert [(leaf.name, leaf.decoded()) for leaf in leaves] == children
    assert [leaf.index for leaf in leaves] == list(range(1, len(leaves) + 1))
    assert all(leaf.size == len(leaf.decoded()) for leaf in leaves)


def test_leaf_fields():
    leaves = mail_leaves(nested())
    assert [leaf.name for leaf in leaves] == [
        "1:part1.plain", "2:part2.html", "3:a.zip", "4:part4.rfc822"]
    assert [leaf.content_type for leaf in leaves] == [
        "text/plain", "text/html", "application/zip", "message/rfc822"]
    assert [leaf.is_attachment for leaf in leaves] == [False, False, True, True]
    assert leaves[2].filename == "a.zip" and leaves[0].filename == ""
    assert leaves[2].decoded() == ZIP
    assert mail_leaves(PLAIN)[0].name == "1:part1.plain"


def test_members_are_leaf_numbers_and_uuencoded_files_go_with_their_part():
    uu = b"begin 644 x.bin\n" + b"%s\n" % b"#86)C\n`\nend"
    raw = (b"From: a@example.org\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="B"\n\n'
           b"--B\nContent-Type: text/plain\n\nsee below\n" + uu + b"\n"
           b"--B\nContent-Type: application/pdf; name=d.pdf\n\n" + PDF + b"--B--\n")
    ctx_children = explode_with(MailHandler(), ScanObject("m.eml", data=raw))
    assert [(c.name, c.member) for c in ctx_children] == [
        ("1:part1.plain", 1), ("1.1:x.bin", 1), ("2:d.pdf", 2)]
    assert [leaf.name for leaf in mail_leaves(raw)] == ["1:part1.plain", "2:d.pdf"]


def test_raw_reading_children_have_no_member():
    raw = (b"From: a@example.org\nMIME-Version: 1.0\n"
           b'Content-Type: multipart/mixed; boundary="B"\n\n'
           b"--B\nContent-Type: text/plain\n\nfirst\n--B--\n"
           b"--B\nContent-Type: application/octet-stream; name=after.exe\n\n" + EXE + b"\n")
    children = explode_with(MailHandler(), ScanObject("m.eml", data=raw))
    raw_children = [c for c in children if c.name.startswith("raw")]
    assert raw_children and all(c.member is None for c in raw_children)
    assert [c.member for c in children if not c.name.startswith("raw")] == [1]


# -- where the header ends -------------------------------------------------------------------


@pytest.mark.parametrize("raw, end", [
    (b"A: 1\nB: 2\n\nbody\n", 10),
    (b"A: 1\r\nB: 2\r\n\r\nbody\r\n", 12),
    (b"A: 1\r\nB: 2\n\nbody", 11),  # mixed endings: the first empty line still ends it
    (b"A: 1\nB: 2\n\r\nbody", 10),
    (b"A: 1\nB: 2\n", 10),  # no empty line: all headers
    (b"A: 1", 4),
    (b"\nbody", 0),  # an empty first line: no headers
    (b"\r\nbody", 0),
    (b"", 0),
])
def test_header_end(raw, end):
    assert header_end(raw) == end


def test_header_end_of_an_lf_message_whose_body_holds_crlf_crlf():
    raw = (b"From: a@example.org\nSubject: s\nContent-Type: text/plain\n\n"
           b"a body line\r\n\r\nwith a CRLF empty line in it\n")
    end = header_end(raw)
    assert raw[:end] == b"From: a@example.org\nSubject: s\nContent-Type: text/plain\n"
    # The parser agrees: the body starts right after that empty line.
    root = read_message(raw).root
    assert root.body_start == end + 1
    assert raw[root.body_start:].startswith(b"a body line")


def test_header_end_agrees_with_the_parser_everywhere():
    for raw in (mixed(), mixed("\r\n"), nested(), PLAIN, CRLF, UNCLOSED):
        root = read_message(raw).root
        end = header_end(raw)
        assert raw[end:root.body_start] in (b"\n", b"\r\n")
        assert raw[root.header_end:end] in (b"\n", b"\r\n")


# -- deleting parts --------------------------------------------------------------------------


@pytest.mark.parametrize("eol", ["\n", "\r\n"])
@pytest.mark.parametrize("index, left", [
    (2, {"b.exe": EXE, "c.pdf": PDF}),     # first attachment (a middle part)
    (3, {"a.zip": ZIP, "c.pdf": PDF}),     # middle
    (4, {"a.zip": ZIP, "b.exe": EXE}),     # last
])
def test_delete_one_part(eol, index, left):
    raw = mixed(eol)
    out = rebuild_mail(raw, {index: None})
    assert attachments(out) == left
    assert parsed(out).get_body(("plain",)).get_content() == \
        parsed(raw).get_body(("plain",)).get_content()
    assert head_of(out) == head_of(raw)  # top-level headers byte-identical
    assert not parsed(out).defects
    if eol == "\r\n":
        assert b"\n" not in out.replace(b"\r\n", b"")
    else:
        assert b"\r" not in out


def test_delete_first_part_and_runs_of_parts():
    raw = mixed()
    out = rebuild_mail(raw, {1: None})
    assert leaf_contents(out) == [ZIP, EXE, PDF]
    assert not parsed(out).defects
    out = rebuild_mail(raw, {1: None, 2: None, 4: None})
    assert attachments(out) == {"b.exe": EXE}
    out = rebuild_mail(raw, {2: None, 3: None, 4: None})
    assert leaf_contents(out) == [b"see attached\n"]
    assert not parsed(out).defects


def test_untouched_parts_are_copied_byte_for_byte():
    raw = mixed()
    out = rebuild_mail(raw, {3: None})
    start = raw.index(b"Content-Type: application/pdf")
    assert raw[start:] in out  # the pdf part, its delimiter and the close, unchanged


def test_delete_in_nested_multipart_and_attached_message():
    raw = nested()
    out = rebuild_mail(raw, {2: None})
    assert [leaf.name for leaf in mail_leaves(out)] == [
        "1:part1.plain", "2:a.zip", "3:part3.rfc822"]
    assert parsed(out).get_body(("html",)) is None
    out = rebuild_mail(raw, {4: None})
    assert [leaf.content_type for leaf in mail_leaves(out)] == [
        "text/plain", "text/html", "application/zip"]
    assert not parsed(out).defects


def test_deleting_every_part_of_a_nested_multipart_removes_it():
    raw = nested()
    out = rebuild_mail(raw, {1: None, 2: None})
    assert b"multipart/alternative" not in out
    assert [leaf.content_type for leaf in mail_leaves(out)] == ["application/zip", "message/rfc822"]
    assert not parsed(out).defects


def test_deleting_every_part_leaves_one_empty_text_part():
    out = rebuild_mail(mixed(), {1: None, 2: None, 3: None, 4: None})
    leaves = mail_leaves(out)
    assert [(leaf.content_type, leaf.decoded()) for leaf in leaves] == [("text/plain", b"")]
    assert list(parsed(out).iter_attachments()) == []


def test_deleting_the_only_part_of_a_plain_message_empties_its_body():
    out = rebuild_mail(PLAIN, {1: None})
    msg = parsed(out)
    assert msg["Subject"] == "plain" and msg["To"] == "b@example.org"
    assert msg.get_content_type() == "text/plain" and msg.get_content() == ""
    assert out.startswith(b"From: a@example.org\nTo: b@example.org\nSubject: plain\n")


def test_delete_with_missing_closing_boundary():
    out = rebuild_mail(UNCLOSED, {3: None})
    # The line break before a delimiter is the delimiter's: the pdf part never had it.
    assert leaf_contents(out) == [b"first", PDF.rstrip(b"\n")] == leaf_contents(UNCLOSED)[:2]
    out = rebuild_mail(UNCLOSED, {2: None})
    assert leaf_contents(out) == [b"first", b"last, never closed\n"]


def test_crlf_message_keeps_preamble_epilogue_and_line_ends():
    out = rebuild_mail(CRLF, {2: None})
    assert b"preamble\r\n" in out and out.endswith(b"--XX--\r\nepilogue\r\n")
    assert leaf_contents(out) == ["café".encode(), b"<p>hi</p>"]
    assert b"\n" not in out.replace(b"\r\n", b"")


# -- new content -----------------------------------------------------------------------------


def test_new_content_is_base64_encoded_like_the_part_was():
    raw = mixed()
    new = bytes(range(256)) * 10
    out = rebuild_mail(raw, {2: new})
    assert attachments(out) == {"a.zip": new, "b.exe": EXE, "c.pdf": PDF}
    part = next(parsed(out).iter_attachments())
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_content_type() == "application/zip"
    body = out[out.index(base64.b64encode(new)[:76]):]
    assert all(len(line) <= 76 for line in body.split(b"\n")[:20])


def test_new_content_in_a_crlf_message_uses_crlf():
    out = rebuild_mail(CRLF, {2: b"\x00" * 300})
    assert leaf_contents(out)[1] == b"\x00" * 300
    assert b"\n" not in out.replace(b"\r\n", b"")


def test_binary_content_in_a_7bit_part_switches_to_base64():
    out = rebuild_mail(PLAIN, {1: b"\x00\xffbinary"})
    msg = parsed(out)
    assert msg["Content-Transfer-Encoding"] == "base64"
    assert mail_leaves(out)[0].decoded() == b"\x00\xffbinary"
    assert msg["Subject"] == "plain"


def test_text_content_in_a_7bit_part_stays_unencoded():
    out = rebuild_mail(PLAIN, {1: b"other text\n"})
    assert out == PLAIN.replace(b"Just text.\n", b"other text\n")


def test_quoted_printable_part_stays_quoted_printable():
    out = rebuild_mail(CRLF, {1: "déjà vu\r\n".encode()})
    assert leaf_contents(out)[0] == "déjà vu\r\n".encode()
    assert b"d=C3=A9j=C3=A0 vu" in out


def test_new_content_that_would_look_like_a_boundary_is_encoded():
    out = rebuild_mail(CRLF, {3: b"--XX--\r\n"})
    assert leaf_contents(out) == ["café".encode(), EXE, b"--XX--\r\n"]


def test_delete_and_replace_together_and_unknown_index():
    out = rebuild_mail(mixed(), {1: None, 2: b"cured zip", 4: None})
    assert attachments(out) == {"a.zip": b"cured zip", "b.exe": EXE}
    with pytest.raises(RebuildError):
        rebuild_mail(mixed(), {5: None})


# -- warn: a part becomes a text ---------------------------------------------------------------


def test_replace_with_text_turns_an_attachment_into_an_inline_text():
    raw = mixed()
    text = "The attachment b.exe was removed: it contained Eicar-Test-Signature.\n"
    out = replace_with_text(raw, 3, text)
    msg = parsed(out)
    parts = list(msg.iter_parts())
    warning = parts[2]
    assert warning.get_content_type() == "text/plain"
    assert warning.get_content_charset() == "utf-8"
    assert warning.get_content_disposition() == "inline"
    assert warning.get_filename() is None
    assert warning.get_content() == text
    assert attachments(out) == {"a.zip": ZIP, "c.pdf": PDF}
    assert head_of(out) == head_of(raw)


def test_replace_with_text_non_ascii_and_crlf():
    text = "Pièce jointe supprimée : virus détecté.\nDeuxième ligne.\n"
    out = replace_with_text(CRLF, 2, text)
    assert parsed(out).get_payload()[1].get_content() == text.replace("\n", "\r\n")
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert leaf_contents(out)[0] == "café".encode()


def test_replace_with_text_on_a_whole_plain_message():
    out = replace_with_text(PLAIN, 1, "warning")
    msg = parsed(out)
    assert msg.get_content() == "warning"
    assert msg["Subject"] == "plain" and msg["MIME-Version"] == "1.0"
    assert out.startswith(b"From: a@example.org\nTo: b@example.org\nSubject: plain\n")


def test_replace_with_text_of_an_attached_message():
    out = replace_with_text(nested(), 4, "removed")
    assert [leaf.content_type for leaf in mail_leaves(out)][-1] == "text/plain"
    assert leaf_contents(out)[-1] == b"removed"
    assert EICAR not in out


# -- top-level headers -------------------------------------------------------------------------

FORGED = (
    b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\n"
    b"X-AV-Status: clean\n"
    b"From: a@example.org\n"
    b"X-AV-Status: clean,\n\tfolded and forged\n"
    b"Subject: hello\n"
    b"x-av-status: clean\n"
    b"\n"
    b"X-AV-Status: this is body text\n"
)


def test_replace_header_replaces_every_forged_copy():
    out = replace_header(FORGED, "X-AV-Status", "infected")
    msg = parsed(out)
    assert msg.get_all("X-AV-Status") == ["infected"]
    assert out.endswith(b"\n\nX-AV-Status: this is body text\n")  # the body is not headers
    assert b"folded and forged" not in out
    assert out.startswith(FORGED.split(b"X-AV-Status")[0])
    assert headers_of(out) == [
        ("Received", "from x by y; Mon, 1 Jan 2024 00:00:00 +0000"),
        ("X-AV-Status", "infected"),
        ("From", "a@example.org"),
        ("Subject", "hello"),
    ]


def test_replace_header_removes_and_adds():
    out = replace_header(FORGED, "X-AV-Status", None)
    assert parsed(out).get_all("X-AV-Status") is None
    assert out == (b"Received: from x by y; Mon, 1 Jan 2024 00:00:00 +0000\n"
                   b"From: a@example.org\nSubject: hello\n\nX-AV-Status: this is body text\n")
    added = replace_header(out, "X-AV-Checked", "lmsav 0.1, database 42")
    assert added == out.replace(b"hello\n\n", b"hello\nX-AV-Checked: lmsav 0.1, database 42\n\n")


def test_replace_header_in_a_crlf_message_with_long_and_non_ascii_values():
    threats = ", ".join(f"Threat.Name-{i}" for i in range(20))
    out = replace_header(CRLF, "X-AV-Threats", threats)
    out = replace_header(out, "Subject", "[VIRUS] Résumé")
    msg = parsed(out)
    assert msg["X-AV-Threats"] == threats
    assert msg["Subject"] == "[VIRUS] Résumé"
    assert b"\n" not in out.replace(b"\r\n", b"")
    assert all(len(line) <= 78 for line in out.split(b"\r\n\r\n")[0].split(b"\r\n"))
    assert out.split(b"\r\n\r\n", 1)[1] == CRLF.split(b"\r\n\r\n", 1)[1]


def test_replace_header_value_cannot_inject_lines():
    out = replace_header(PLAIN, "X-AV-Status", "clean\r\nX-Evil: yes\n\nbody")
    msg = parsed(out)
    assert msg["X-Evil"] is None
    assert msg.get_content() == "Just text.\n"
    with pytest.raises(RebuildError):
        replace_header(PLAIN, "Bad Name", "x")


def test_headers_of_unfolds_and_keeps_encoded_words():
    raw = (b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?=\n folded\nTo: a@example.org,\n\tb@example.org\n"
           b"\nbody\n")
    assert headers_of(raw) == [("Subject", "=?utf-8?q?R=C3=A9sum=C3=A9?= folded"),
                               ("To", "a@example.org,\tb@example.org")]
    # A value read here goes back unchanged.
    assert replace_header(raw, "Subject", headers_of(raw)[0][1]).startswith(
        b"Subject: =?utf-8?q?R=C3=A9sum=C3=A9?= folded\n")


# -- big and malformed messages ----------------------------------------------------------------


def test_thousand_part_message():
    parts = b"".join(
        b"--B\nContent-Type: application/octet-stream; name=f%d.bin\n"
        b"Content-Transfer-Encoding: base64\n\n%s" % (i, base64.encodebytes(b"part %d" % i))
        for i in range(1000))
    raw = (b"From: a@example.org\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=B\n\n"
           + parts + b"--B--\n")
    leaves = mail_leaves(raw)
    assert len(leaves) == 1000 and leaves[999].name == "1000:f999.bin"
    out = rebuild_mail(raw, {i: None for i in range(1, 1001, 2)} | {2: b"new"})
    got = leaf_contents(out)
    assert len(got) == 500 and got[0] == b"new" and got[-1] == b"part 999"
    assert len(list(parsed(out).iter_attachments())) == 500


MALFORMED = [
    b"",
    b"\n\n",
    b"From: a\n",
    b"From: a",
    b"Content-Type: multipart/mixed\n\nno boundary parameter\n",
    b"Content-Type: multipart/mixed; boundary=B\n\nno delimiter at all\n",
    b"Content-Type: multipart/mixed; boundary=B\n\n--B--\n",
    b"Content-Type: multipart/mixed; boundary=B\n\n--B\n--B\n--B\n",
    b"Content-Type: multipart/mixed; boundary=B\n\n--B",
    b"Content-Type: multipart/mixed; boundary=B\r\n\n--B\r\n\rX\n--B\n\n--B--",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not base64==",
    b"Content-Type: multipart/mixed; boundary=\"\"\n\n--\n\n----\n",
    b"Conten\r\nt-Type: multipart/mixed; boundary=Q\n\n--Q\n--Q\nA: b\n\nz\n--Q",
    b"Content-Type: multipart/mixed; boundary=A\n\n"
    + b"--A\nContent-Type: multipart/mixed; boundary=A\n\n" * 300,  # nested past the limit
    b"\xff\xfe\x00garbage\r\r\n\n\x00--B",
    b" leading continuation\nContent-Type: text/plain\n\nbody",
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages_never_raise_anything_but_rebuild_error(raw):
    def attempt(fn, *args):
        try:
            out = fn(*args)
        except RebuildError:
            return None
        if isinstance(out, bytes):
            parsed(out)
        return out

    leaves = attempt(mail_leaves, raw) or []
    n = len(leaves)
    for changes in ({}, {1: None}, {1: b"\x00new"}, {n: None}, {i: None for i in range(1, n + 1)}):
        out = attempt(rebuild_mail, raw, changes)
        if out is not None and changes and n:
            expected = [changes.get(leaf.index, leaf.decoded()) for leaf in leaves
                        if changes.get(leaf.index, 0) is not None]
            assert leaf_contents(out) == (expected or [b""])
    for index in (1, n):
        attempt(replace_with_text, raw, index, "warning")
    attempt(replace_header, raw, "X-AV-Status", "clean")
    attempt(headers_of, raw)
