"""Mail policy end to end: a corpus of messages through groups, actions, filters, notices and
backup; every result is parsed back with the stdlib email package and checked exactly."""

from __future__ import annotations

import email
import email.policy
import io
import zipfile
from email.message import EmailMessage

import pytest

from lmsav import paths
from lmsav.mail.backup import BackupStore
from lmsav.mail.groups import load_groups
from lmsav.mail.process import MailProcessor
from lmsav.scanner.limits import Limits
from lmsav.scanner.signatures.database import Database
from lmsav.stats.sqlite_store import FILE_NAME, SQLiteBackend
from lmsav.stats.store import Store
from tests.conftest import EICAR

GROUPS = {
    "strict.toml": """
priority = 20
recipients = ["*@strict.example"]
scan_policy = "combined"
infected_action = "cure"
uncurable_action = "reject"
protected_action = "warn"
corrupted_action = "delete"
filtered_action = "delete"
filter_names = ["*.exe", "*.pdf.*"]
filter_max_size = "200K"
backup = ["infected", "filtered"]
notify_admin = ["infected", "filtered"]
admin_addresses = ["postmaster@strict.example"]
subject_prefix = { infected = "[VIRUS] " }
""",
    "lax.toml": """
priority = 10
recipients = ["*@lax.example"]
infected_action = "warn"
notify_recipients = []
""",
}


@pytest.fixture(scope="module")
def db():
    return Database.load(paths.bundled_database_dir())


@pytest.fixture
def processor(db, tmp_path):
    gdir = tmp_path / "groups.d"
    gdir.mkdir()
    for name, text in GROUPS.items():
        (gdir / name).write_text(text)
    return MailProcessor(db, load_groups(gdir), Limits(),
                         backup_store=BackupStore(tmp_path / "backup"),
                         stats=Store(SQLiteBackend(tmp_path / "stats" / FILE_NAME), "mx.test"),
                         hostname="mx.test")


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def message(*attachments, subject="report", text="see attached\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@strict.example"
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@example.org>"
    msg.set_content(text)
    for name, data, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes()


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def attachment_names(raw: bytes) -> list[str]:
    return [p.get_filename() for p in parsed(raw).walk() if p.get_filename()]


def run(processor, raw, *rcpts, sender="alice@example.org"):
    return processor.process(raw, sender, list(rcpts))


def test_clean_message_is_delivered_with_headers(processor):
    raw = message(("a.txt", b"fine", "text/plain"))
    out = run(processor, raw, "bob@strict.example")
    [g] = out.groups
    assert (out.status, g.group, g.action, g.notices, g.backup_id) == (
        "clean", "strict", "skip", [], None)
    m = parsed(g.message)
    assert m["X-AV-Status"] == "clean"
    assert m["X-AV-Checked"].startswith("lmsav ")
    assert attachment_names(g.message) == ["a.txt"]


def test_forged_av_headers_are_replaced(processor):
    raw = b"X-AV-Status: clean\nX-AV-Threats: none\n" + message(("e.com", EICAR, "application/octet-stream"))
    g = run(processor, raw, "bob@lax.example").groups[0]
    m = parsed(g.message)
    assert m.get_all("X-AV-Status") == ["infected"]
    assert m.get_all("X-AV-Threats") == ["Eicar-Test-Signature"]


def test_plain_infected_attachment_is_not_curable_in_strict_and_warned_in_lax(processor, tmp_path):
    """Under "combined" the object is the part: a part that is itself the threat is not
    curable, so strict's uncurable_action (reject) applies, as `lmsav scan` calls it."""
    raw = message(("doc.txt", b"hello", "text/plain"),
                  ("e.com", EICAR, "application/octet-stream"))
    out = run(processor, raw, "bob@strict.example", "carol@lax.example")
    strict, lax = out.groups
    assert (strict.group, strict.recipients, strict.action) == ("strict", ["bob@strict.example"],
                                                                "reject")
    assert strict.message is None and "Eicar-Test-Signature" in strict.reject_reply
    [obj] = strict.objects
    assert (obj.object, obj.action) == ("message//3:e.com", "reject")
    assert obj.reason == "uncurable: the whole file is the threat"
    assert (lax.group, lax.action) == ("lax", "warn")
    lax_msg = parsed(lax.message)
    assert lax_msg.get_content_type() == "text/plain"
    assert "Eicar-Test-Signature" in lax_msg.get_content()
    assert EICAR not in lax.message
    # One backup of the original, shared; admin notice for strict, none for lax.
    assert strict.backup_id and strict.backup_id == lax.backup_id
    assert BackupStore(tmp_path / "backup").extract(strict.backup_id) == raw
    assert [n.kind for n in strict.notices] == ["recipients", "admin"]
    assert strict.notices[0].envelope_to == ("bob@strict.example",)
    assert strict.notices[1].envelope_to == ("postmaster@strict.example",)
    assert lax.notices == []
    processor.stats.flush()
    [record] = processor.stats.messages()
    assert record["status"] == "infected" and record["outcomes"] == {
        "strict": {"status": "infected", "action": "reject"},
        "lax": {"status": "infected", "action": "warn"}}


def test_infected_inside_zip_inside_forwarded_message(processor):
    inner = EmailMessage()
    inner["From"] = "eve@example.net"
    inner["Subject"] = "fwd"
    inner.set_content("inner")
    inner.add_attachment(zip_of({"clean.txt": b"ok", "bad.com": EICAR}), maintype="application",
                         subtype="zip", filename="files.zip")
    outer = EmailMessage()
    outer["From"] = "alice@example.org"
    outer["Subject"] = "forwarded"
    outer.set_content("see below")
    outer.add_attachment(inner)
    g = run(processor, outer.as_bytes(), "bob@strict.example").groups[0]
    assert (g.status, g.action) == ("infected", "cure")
    # The zip inside the attached message is rebuilt without its infected member.
    [attached] = list(parsed(g.message).iter_attachments())
    [inner_zip] = list(attached.get_content().iter_attachments())
    with zipfile.ZipFile(io.BytesIO(inner_zip.get_content())) as zf:
        assert zf.namelist() == ["clean.txt"]
    assert EICAR not in g.message


def test_infected_member_of_attached_zip_is_cut_out(processor):
    raw = message(("files.zip", zip_of({"clean.txt": b"ok", "bad.com": EICAR}), "application/zip"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert g.action == "cure" and g.message is not None
    assert parsed(g.message)["Subject"] == "[VIRUS] report"
    [att] = list(parsed(g.message).iter_attachments())
    with zipfile.ZipFile(io.BytesIO(att.get_content())) as zf:
        assert zf.namelist() == ["clean.txt"]


def test_encrypted_zip_is_protected_and_warned(processor, tmp_path):
    import subprocess

    src = tmp_path / "s.txt"
    src.write_text("secret")
    out = tmp_path / "enc.zip"
    subprocess.run(["7z", "a", "-tzip", "-psecret", "-bso0", str(out), str(src)], check=True)
    raw = message(("enc.zip", out.read_bytes(), "application/zip"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert (g.status, g.action) == ("protected", "warn")
    parts = list(parsed(g.message).walk())
    texts = [p.get_content() for p in parts if p.get_content_type() == "text/plain"]
    assert any("protected" in t for t in texts)
    assert attachment_names(g.message) == []


def test_corrupt_zip_is_deleted(processor):
    good = zip_of({"a.bin": bytes(range(256)) * 7 + __import__("os").urandom(5000)})
    raw = message(("broken.zip", good[: len(good) // 2], "application/zip"),
                  ("keep.txt", b"keep", "text/plain"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert (g.status, g.action) == ("corrupted", "delete")
    assert attachment_names(g.message) == ["keep.txt"]


@pytest.mark.parametrize("name", ["setup.exe", "invoice.pdf.exe", "invoice.pdf.scr"])
def test_filtered_names_are_deleted(processor, name):
    raw = message((name, b"MZ not really", "application/octet-stream"),
                  ("keep.txt", b"keep", "text/plain"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert (g.status, g.action) == ("filtered", "delete")
    assert attachment_names(g.message) == ["keep.txt"]
    assert [n.kind for n in g.notices] == ["admin"]


def test_exe_inside_zip_is_filtered_by_name(processor):
    raw = message(("a.zip", zip_of({"readme.txt": b"x", "run.exe": b"MZ"}), "application/zip"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert g.status == "filtered"
    assert [o.object for o in g.objects] == ["message//2:a.zip//run.exe"]


def test_oversized_attachment_is_filtered(processor):
    raw = message(("big.bin", bytes(300 * 1024), "application/octet-stream"))
    g = run(processor, raw, "bob@strict.example").groups[0]
    assert (g.status, g.action) == ("filtered", "delete")
    assert "size" in g.objects[0].reason


def test_non_ascii_subject_and_names(processor):
    raw = message(("résumé €.com", EICAR, "application/octet-stream"), subject="Grüße – Rechnung")
    out = run(processor, raw, "bob@strict.example")
    g = out.groups[0]
    assert out.subject == "Grüße – Rechnung"
    assert g.objects[0].object == "message//2:résumé €.com"
    notice = parsed(g.notices[-1].message)
    assert "résumé €.com" in notice.get_body(preferencelist=("plain",)).get_content()


def test_default_group_rejects(processor):
    g = run(processor, message(("e.com", EICAR, "application/octet-stream")),
            "someone@else.example").groups[0]
    assert (g.group, g.action, g.message) == ("default", "reject", None)


@pytest.mark.parametrize("raw", [
    b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\nno close",
    b"Content-Type: multipart/mixed\n\nno boundary parameter at all",
    b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\n!!!not base64@@@",
    b"",
    b"\x00\x01 binary junk \xff",
    b"Content-Type: multipart/mixed; boundary=a\n\n"
    + b"".join(b"--a\nContent-Type: text/plain\n\npart %d\n" % i for i in range(1000)) + b"--a--\n",
    b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i) for i in range(300)),
])
def test_malformed_mime_always_gives_an_outcome(processor, raw):
    for rcpt in ("bob@strict.example", "x@lax.example"):
        out = run(processor, raw, rcpt)
        assert len(out.groups) == 1
        assert out.groups[0].action in ("skip", "warn", "drop", "reject", "cure", "delete")


def test_virus_name_list_overrides_infected_action(db, tmp_path):
    gdir = tmp_path / "g"
    gdir.mkdir()
    (gdir / "named.toml").write_text(
        'recipients = ["*"]\npriority = 1\ninfected_action = "warn"\n'
        'virus_name_list = ["Eicar-*"]\nvirus_name_action = "drop"\n')
    proc = MailProcessor(db, load_groups(gdir), Limits())
    g = proc.process(message(("e.com", EICAR, "application/octet-stream")), "a@b.c",
                     ["x@y.z"]).groups[0]
    assert (g.group, g.action, g.message) == ("named", "drop", None)


def test_part_too_deep_gives_the_error_action_for_the_whole_message(db, tmp_path):
    gdir = tmp_path / "g"
    gdir.mkdir()
    (gdir / "deep.toml").write_text(
        'recipients = ["*"]\npriority = 1\nscan_policy = "combined"\nmax_scan_depth = 2\n'
        'error_action = "reject"\n')
    nested = b"payload"
    for i in range(4):
        nested = zip_of({f"l{i}.zip" if i else "f.txt": nested})
    proc = MailProcessor(db, load_groups(gdir), Limits())
    g = proc.process(message(("n.zip", nested, "application/zip")), "a@b.c", ["x@y.z"]).groups[0]
    assert (g.status, g.action, g.message) == ("error", "reject", None)
    assert g.objects[0].reason == "limit: depth"


def test_whole_message_match_without_part_match_acts_on_the_message(db, tmp_path):
    gdir = tmp_path / "g"
    gdir.mkdir()
    (gdir / "c.toml").write_text(
        'recipients = ["*"]\npriority = 1\nscan_policy = "combined"\ninfected_action = "drop"\n')
    (tmp_path / "db").mkdir()
    from tests.conftest import md5_line

    raw = message(("a.txt", b"fine", "text/plain"))
    (tmp_path / "db" / "m.hdb").write_text(md5_line(raw, "Whole.Message.Test"))
    proc = MailProcessor(Database.load(tmp_path / "db"), load_groups(gdir), Limits())
    g = proc.process(raw, "a@b.c", ["x@y.z"]).groups[0]
    assert (g.status, g.action, g.message) == ("infected", "drop", None)
    assert g.objects[0].object == "message"


def test_unprotected_domains_pass_unscanned(db, tmp_path):
    gdir = tmp_path / "g"
    gdir.mkdir()
    (gdir / "default.toml").write_text('protected_domains = ["example.net"]\n')
    proc = MailProcessor(db, load_groups(gdir), Limits())
    raw = message(("e.com", EICAR, "application/octet-stream"))
    passed = proc.process(raw, "a@other.org", ["x@elsewhere.org"]).groups[0]
    assert (passed.status, passed.action, passed.message) == ("unscanned", "skip", raw)
    scanned = proc.process(raw, "a@other.org", ["x@example.net"]).groups[0]
    assert scanned.status == "infected"


def tiny_pe() -> bytes:
    import struct

    mz = bytearray(b"MZ" + b"\x90\x00" * 29)
    mz[0x3C:0x40] = struct.pack("<I", 0x80)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    return bytes(mz).ljust(0x80, b"\0") + b"PE\0\0" + coff + \
        struct.pack("<H", 0x10B).ljust(0xE0, b"\0") + bytes(512)


def filter_processor(db, tmp_path, settings: str) -> MailProcessor:
    gdir = tmp_path / "g"
    gdir.mkdir(exist_ok=True)
    (gdir / "f.toml").write_text('recipients = ["*"]\npriority = 1\nscan_policy = "combined"\n'
                                 'filtered_action = "delete"\n' + settings)
    return MailProcessor(db, load_groups(gdir), Limits())


def test_disguised_executable_is_filtered_as_a_type_mismatch(db, tmp_path):
    proc = filter_processor(db, tmp_path, "filter_type_mismatch = true\n")
    raw = message(("invoice.pdf", tiny_pe(), "application/pdf"),
                  ("notes.txt", b"hello", "text/plain"))
    g = proc.process(raw, "a@b.c", ["x@y.z"]).groups[0]
    assert (g.status, g.action) == ("filtered", "delete")
    assert "type mismatch" in g.objects[0].reason
    assert attachment_names(g.message) == ["notes.txt"]
    # An executable sent as one is not disguised.
    honest = message(("tool.exe", tiny_pe(), "application/x-msdownload"))
    assert proc.process(honest, "a@b.c", ["x@y.z"]).groups[0].status == "clean"


def test_filter_by_real_type_and_exclusions(db, tmp_path):
    proc = filter_processor(db, tmp_path, 'filter_types = ["application/*portable-executable", '
                            '"application/x-dosexec"]\nfilter_names = ["*.bat"]\n'
                            'filter_names_exclude = ["allowed.bat"]\n')
    raw = message(("notes.txt", tiny_pe(), "text/plain"), ("allowed.bat", b"echo", "text/plain"),
                  ("keep.txt", b"fine", "text/plain"))
    g = proc.process(raw, "a@b.c", ["x@y.z"]).groups[0]
    assert [o.reason.split()[0] for o in g.objects] == ["type"]
    assert attachment_names(g.message) == ["allowed.bat", "keep.txt"]


def test_threat_only_the_raw_reading_finds_is_not_delivered(processor):
    """A combined-policy group cures part by part; a threat found outside every numbered part
    (here base64 after the closing delimiter, which the raw reading decodes) has no part to cure,
    so the message is judged whole and never delivered unchanged."""
    import base64

    raw = message(("a.txt", b"fine", "text/plain"))
    tail = (b"\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="late.com"\r\n\r\n'
            + base64.encodebytes(EICAR) + b"\r\n")
    out = run(processor, raw + tail, "bob@strict.example")
    [g] = out.groups
    assert out.status == "infected"
    assert g.action != "skip"
    assert g.message is None or b"X-AV-Status: infected" in g.message


def test_name_filter_sees_parts_only_the_raw_reading_finds(processor):
    """An .exe behind a boundary the message never declared is filtered like any attachment."""
    import base64

    raw = message(("a.txt", b"fine", "text/plain"))
    tail = (b"\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: base64\r\n"
            b'Content-Disposition: attachment; filename="setup.exe"\r\n\r\n'
            + base64.encodebytes(b"MZ harmless test program body\n" * 4) + b"\r\n")
    out = run(processor, raw + tail, "bob@strict.example")
    [g] = out.groups
    assert out.status == "filtered", [(o.object, o.status) for o in g.objects]
    assert g.action != "skip"


def test_warning_of_an_lf_message_with_crlf_in_its_body_keeps_headers_apart(processor):
    """The headers end at the first empty line whatever the line ends: a CRLF CRLF later in
    the body of an LF message must not pull the new Content-Type into the body."""
    raw = (b"From: a@b.example\nSubject: lf\nContent-Type: application/octet-stream\n"
           b"Content-Transfer-Encoding: 8bit\n\n" + EICAR + b"\nmore\r\n\r\ntext\n")
    g = run(processor, raw, "x@lax.example").groups[0]
    assert g.action == "warn"
    m = parsed(g.message)
    assert m.get_content_type() == "text/plain" and m["Subject"] == "lf"
    assert "Eicar-Test-Signature" in m.get_content()
    assert EICAR not in g.message
