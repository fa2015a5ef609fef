"""Mail policy as an administrator checks it: a groups.d configuration, `lmsav mail check -o DIR`
on a message, and what the notices, the backup store and the resulting messages say."""

from __future__ import annotations

import email
import email.policy
import io
import json
import struct
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR


@pytest.fixture
def admin(tmp_path, monkeypatch):
    """Writes groups.d files and runs `lmsav mail check` against them."""
    cfg = tmp_path / "etc" / "lmsav.toml"
    (cfg.parent / "groups.d").mkdir(parents=True)
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(cfg))
    runner = CliRunner()

    class Admin:
        out = tmp_path / "out"

        def group(self, name: str, text: str) -> None:
            (cfg.parent / "groups.d" / f"{name}.toml").write_text(text)

        def run(self, *args):
            return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

        def check(self, raw: bytes, sender: str, *rcpts: str) -> dict:
            path = tmp_path / "m.eml"
            path.write_bytes(raw)
            args = ["mail", "check", "--json", "-o", self.out, "-f", sender]
            for r in rcpts:
                args += ["-r", r]
            result = self.run(*args, path)
            assert result.exit_code in (0, 1), result.output
            return json.loads(result.output)

        def notices(self, kind: str) -> list[email.message.EmailMessage]:
            return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                    for p in sorted(self.out.glob(f"notice*-{kind}.eml"))]

    return Admin()


def message(*attachments: tuple[str, bytes, str]) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "report"
    msg["Message-ID"] = "<m1@example.org>"
    msg.set_content("see attached")
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes()


def text_of(notice: email.message.EmailMessage) -> str:
    return notice.get_body(preferencelist=("plain",)).get_content()


def tiny_pe() -> bytes:
    mz = bytearray(b"MZ" + b"\x90\x00" * 29)
    mz[0x3C:0x40] = struct.pack("<I", 0x80)
    coff = struct.pack("<HHIIIHH", 0x14C, 1, 0, 0, 0, 0xE0, 0x102)
    return bytes(mz).ljust(0x80, b"\0") + b"PE\0\0" + coff + \
        struct.pack("<H", 0x10B).ljust(0xE0, b"\0") + bytes(512)


def tiny_elf() -> bytes:
    return b"\x7fELF\x02\x01\x01" + bytes(9) + struct.pack("<HHI", 2, 0x3E, 1) + bytes(200)


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


# -- filtered_action = "delete" under scan_policy = "message" --------------------------------------

def test_filtered_message_deleted_whole_says_so(admin):
    admin.group("default", 'filter_names = ["*.exe"]\nfiltered_action = "delete"\n'
                           'notify_sender = ["filtered"]\nnotify_recipients = ["filtered"]\n')
    data = admin.check(message(("setup.exe", b"MZ harmless", "application/octet-stream")),
                       "alice@example.org", "bob@example.net")
    [g] = data["groups"]
    assert (g["status"], g["action"], g["delivered"]) == ("filtered", "delete", False)
    assert not (admin.out / "default.eml").exists()
    [sender] = admin.notices("sender")
    assert sender["Subject"] == 'Your message "report" was deleted and not delivered'
    text = text_of(sender)
    assert "It was deleted and not delivered:" in text
    assert "delivered without" not in text
    assert "message//2:setup.exe: blocked by the content filter (name *.exe)" in text
    assert "(none)" not in text
    assert "infected" not in text.lower()
    [rcpt] = admin.notices("recipients")
    assert "setup.exe" in text_of(rcpt) and "infected" not in text_of(rcpt).lower()


def test_filtered_part_deleted_under_combined_is_delivered_without_it(admin):
    admin.group("default", 'scan_policy = "combined"\nfilter_names = ["*.exe"]\n'
                           'filtered_action = "delete"\nnotify_sender = ["filtered"]\n')
    data = admin.check(message(("setup.exe", b"MZ harmless", "application/octet-stream"),
                               ("notes.txt", b"keep", "text/plain")),
                       "alice@example.org", "bob@example.net")
    assert data["groups"][0]["delivered"]
    [sender] = admin.notices("sender")
    assert sender["Subject"] == 'Your message "report" was delivered without the affected parts'


# -- a message split over three groups -------------------------------------------------------------

THREE_GROUPS = {
    "sales": 'priority = 30\nrecipients = ["*@sales.example"]\ninfected_action = "reject"\n',
    "board": 'priority = 20\nrecipients = ["*@board.example"]\ninfected_action = "warn"\n',
    "staff": 'priority = 10\nrecipients = ["*@staff.example"]\ninfected_action = "drop"\n',
}
COMMON = ('notify_sender = ["infected"]\nno_sender_notice = []\nnotify_admin = ["infected"]\n'
          'admin_addresses = ["postmaster@example.com"]\nbackup = ["infected"]\n')


def test_three_groups_one_backup_entry_and_one_notice_per_person(admin):
    for name, text in THREE_GROUPS.items():
        admin.group(name, text + COMMON)
    rcpts = ("bob@sales.example", "ceo@board.example", "eve@staff.example")
    data = admin.check(message(("e.com", EICAR, "application/octet-stream")),
                       "alice@example.org", *rcpts)
    assert [(g["group"], g["action"]) for g in data["groups"]] == [
        ("sales", "reject"), ("board", "warn"), ("staff", "drop")]

    [entry] = json.loads(admin.run("backup", "list", "--json").output)
    shown = json.loads(admin.run("backup", "show", entry["id"]).output)
    assert shown["recipients"] == list(rcpts)
    assert shown["groups"] == [
        {"group": "sales", "recipients": ["bob@sales.example"], "status": "infected",
         "action": "reject"},
        {"group": "board", "recipients": ["ceo@board.example"], "status": "infected",
         "action": "warn"},
        {"group": "staff", "recipients": ["eve@staff.example"], "status": "infected",
         "action": "drop"},
    ]
    assert {g["backup"] for g in data["groups"]} == {entry["id"]}

    [sender] = admin.notices("sender")
    assert sender["To"] == "alice@example.org"
    text = text_of(sender)
    assert "  bob@sales.example: rejected\n" in text
    assert "  ceo@board.example: delivered with the affected parts replaced by a warning\n" in text
    assert "  eve@staff.example: discarded\n" in text
    [report] = admin.notices("admin")
    assert report["To"] == "postmaster@example.com"
    kinds = [(n["kind"], n["to"]) for n in data["notices"]]
    assert kinds == [("sender", ["alice@example.org"]),
                     ("recipients", ["bob@sales.example"]), ("recipients", ["ceo@board.example"]),
                     ("recipients", ["eve@staff.example"]), ("admin", ["postmaster@example.com"])]
    assert data["notices"][0]["groups"] == ["sales", "board", "staff"]


# -- filter_types families and filter_type_mismatch ------------------------------------------------

@pytest.mark.parametrize("name,data", [("tool.exe", tiny_pe()), ("tool", tiny_elf())])
def test_executable_family_catches_programs_whatever_libmagic_calls_them(admin, name, data):
    admin.group("default", 'scan_policy = "combined"\nfilter_types = ["executable"]\n'
                           'filtered_action = "delete"\n')
    out = admin.check(message((name, data, "application/octet-stream"),
                              ("notes.txt", b"keep", "text/plain")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"]) == ("filtered", "delete")
    assert g["objects"][0]["reason"].endswith("(executable)")
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    assert [p.get_filename() for p in delivered.iter_attachments()] == ["notes.txt"]


def test_script_archive_and_office_macro_families(admin):
    admin.group("default", 'scan_policy = "combined"\n'
                           'filter_types = ["script", "archive", "office-macro"]\n'
                           'filtered_action = "delete"\n')
    corpus = Path(__file__).parent.parent / "fuzz" / "corpus" / "ole2"
    ole_with_vba = (corpus / "macro.doc").read_bytes()  # a Word document with a VBA project
    out = admin.check(message(("run.sh", b"#!/bin/sh\necho hi\n", "text/plain"),
                              ("a.zip", zip_of({"x.txt": b"x"}), "application/zip"),
                              ("macro.doc", ole_with_vba, "application/msword"),
                              ("plain.doc", (corpus / "package.doc").read_bytes(),
                               "application/msword"),
                              ("notes.txt", b"just text", "text/plain")),
                      "alice@example.org", "bob@example.net")
    reasons = [o["reason"] for o in out["groups"][0]["objects"]]
    assert [r.rsplit(" ", 1)[-1] for r in reasons] == ["(script)", "(archive)", "(office-macro)"]


def test_man_page_partners_example(admin):
    """The partners group of lmsav-groups(5), as written there."""
    admin.group("partners", """
priority = 10
senders = ["*.partner.net", 're:.*@(eu|us)\\.supplier\\.com']
recipients = ["*@sales.example.com"]
max_file_size = "200M"
filter_names = ["*.exe", "*.scr", "*.js", "*.vbs"]
filter_types = ["executable", "script"]
filter_type_mismatch = true
filtered_action = "delete"
""")
    out = admin.check(message(("report.dat", tiny_pe(), "application/octet-stream")),
                      "joe@eu.supplier.com", "ann@sales.example.com")
    [g] = out["groups"]
    assert (g["group"], g["status"], g["action"]) == ("partners", "filtered", "delete")
    assert g["objects"][0]["reason"] == (
        "type application/vnd.microsoft.portable-executable (executable)")


def test_exe_sent_as_octet_stream_is_no_type_mismatch(admin):
    admin.group("default", 'scan_policy = "combined"\nfilter_type_mismatch = true\n'
                           'filtered_action = "delete"\n')
    honest = admin.check(message(("tool.exe", tiny_pe(), "application/octet-stream")),
                         "alice@example.org", "bob@example.net")
    assert honest["status"] == "clean"
    disguised = admin.check(message(("invoice.pdf", tiny_pe(), "application/pdf")),
                            "alice@example.org", "bob@example.net")
    assert disguised["status"] == "filtered"
    assert "type mismatch" in disguised["groups"][0]["objects"][0]["reason"]


# -- cure: the object is the part (combined) or the message ----------------------------------------

def test_combined_cure_of_a_plain_infected_attachment_is_uncurable(admin):
    admin.group("default", 'scan_policy = "combined"\ninfected_action = "cure"\n'
                           'uncurable_action = "warn"\n')
    out = admin.check(message(("e.com", EICAR, "application/octet-stream"),
                              ("notes.txt", b"keep", "text/plain")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"]) == ("infected", "warn")
    [obj] = g["objects"]
    assert (obj["action"], obj["reason"]) == ("warn", "uncurable: the whole file is the threat")
    delivered = (admin.out / "default.eml").read_bytes()
    assert EICAR not in delivered and b"removed by lmsav" in delivered


def test_combined_cure_rebuilds_an_attached_zip_without_its_infected_member(admin):
    admin.group("default", 'scan_policy = "combined"\ninfected_action = "cure"\n')
    out = admin.check(message(("files.zip", zip_of({"ok.txt": b"ok", "bad.com": EICAR}),
                               "application/zip")),
                      "alice@example.org", "bob@example.net")
    assert out["groups"][0]["action"] == "cure"
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    [att] = list(delivered.iter_attachments())
    with zipfile.ZipFile(io.BytesIO(att.get_content())) as zf:
        assert zf.namelist() == ["ok.txt"]


def test_message_cure_removes_the_infected_part_as_scan_does_for_an_eml(admin, tmp_path):
    admin.group("default", 'infected_action = "cure"\n')
    raw = message(("e.com", EICAR, "application/octet-stream"),
                  ("notes.txt", b"keep", "text/plain"))
    out = admin.check(raw, "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"], g["delivered"]) == ("infected", "cure", True)
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    assert [p.get_filename() for p in delivered.iter_attachments()] == ["notes.txt"]
    # `lmsav scan --action cure` on the same message as a file cuts the same part out.
    eml = tmp_path / "same.eml"
    eml.write_bytes(raw)
    scanned = admin.run("scan", "--action", "cure", eml)
    assert scanned.exit_code in (0, 1), scanned.output
    cured = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert [p.get_filename() for p in cured.iter_attachments()] == ["notes.txt"]
