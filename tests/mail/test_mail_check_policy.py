"""Mail policy as an administrator checks it: a groups.d configuration, `lmsav mail check -o DIR`
on a message, and what the notices, the backup store and the resulting messages say."""

from __future__ import annotations

import email
import email.policy
import io
import struct
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR
from tests.jsonlines import one_object, records
from tests.mail.test_process import tiny_pe


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
            # --record: the backup entry is written as the mail integrations write it.
            args = ["mail", "check", "--record", "--json", "-o", self.out, "-f", sender]
            for r in rcpts:
                args += ["-r", r]
            result = self.run(*args, path)
            assert result.exit_code in (0, 1), result.output
            return one_object(result.output)

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

    [entry] = records(admin.run("backup", "list", "--json").output)
    assert entry["kind"] == "mail"
    shown = one_object(admin.run("backup", "show", "--json", entry["id"]).output)
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


# -- cure follows the group's statuses, as the sweep does -----------------------------------------

def encrypted_zip() -> bytes:
    """A zip whose member is flagged encrypted (traditional PKWARE encryption)."""
    data = bytearray(zip_of({"secret.txt": b"flagged as encrypted"}))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature) + offset
        struct.pack_into("<H", data, at, struct.unpack_from("<H", data, at)[0] | 1)
    return bytes(data)


def attached(admin, name: str) -> bytes:
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    [att] = [p for p in delivered.iter_attachments() if p.get_filename() == name]
    return att.get_content()


@pytest.mark.parametrize("scan_policy", ["combined", "message"])
def test_cure_removes_what_protected_action_cure_names(admin, scan_policy):
    # The engine finds the encrypted member protected: cure takes it out of its archive, as
    # `lmsav scan --action cure` does, instead of delivering it unchanged as "cured".
    admin.group("default", f'scan_policy = "{scan_policy}"\nprotected_action = "cure"\n')
    out = admin.check(message(("secret.zip", encrypted_zip(), "application/zip"),
                              ("notes.txt", b"keep", "text/plain")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"], g["delivered"]) == ("protected", "cure", True)
    with zipfile.ZipFile(io.BytesIO(attached(admin, "secret.zip"))) as zf:
        assert zf.namelist() == []
    assert attached(admin, "notes.txt").strip() == "keep"


def test_combined_cure_of_an_encrypted_file_is_uncurable(admin):
    # An encrypted PDF is itself the protected object: nothing to cut out of it.
    admin.group("default", 'scan_policy = "combined"\nprotected_action = "cure"\n'
                           'uncurable_action = "delete"\n')
    pdf = (b"%PDF-1.4\n1 0 obj<</Filter/Standard/V 1/R 2/O(x)/U(x)/P -4>>endobj\n"
           b"trailer<</Encrypt 1 0 R/Root 2 0 R>>\n%%EOF\n")
    out = admin.check(message(("secret.pdf", pdf, "application/pdf"),
                              ("notes.txt", b"keep", "text/plain")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"], g["delivered"]) == ("protected", "delete", True)
    [obj] = g["objects"]
    assert obj["reason"].startswith("uncurable: ")
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    assert [p.get_filename() for p in delivered.iter_attachments()] == ["notes.txt"]


def test_protected_skipped_is_kept_when_infected_parts_are_cured(admin):
    admin.group("default", 'infected_action = "cure"\n')  # protected_action stays "skip"
    out = admin.check(message(("secret.zip", encrypted_zip(), "application/zip"),
                              ("e.com", EICAR, "application/octet-stream")),
                      "alice@example.org", "bob@example.net")
    assert out["groups"][0]["action"] == "cure"
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    assert [p.get_filename() for p in delivered.iter_attachments()] == ["secret.zip"]


# -- a filtered attachment is the object itself ----------------------------------------------------

def test_combined_cure_of_a_filtered_attachment_says_why_and_names_no_virus(admin):
    admin.group("default", 'scan_policy = "combined"\nfilter_names = ["*.exe"]\n'
                           'filtered_action = "cure"\nnotify_sender = ["filtered"]\n'
                           'reject_reply = "550 5.7.1 Rejected ($threats)"\n')
    out = admin.check(message(("setup.exe", b"MZ harmless", "application/octet-stream")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"]) == ("filtered", "reject")
    [obj] = g["objects"]
    assert obj["reason"] == ("uncurable: the content filter blocks the part itself "
                             "(name *.exe); cure cannot keep it")
    assert g["reject_reply"] == "550 5.7.1 Rejected (filtered: setup.exe (name *.exe))"
    [sender] = admin.notices("sender")
    text = text_of(sender)
    assert "virus (" not in text and "filtered: setup.exe (name *.exe)" in text


def test_message_cure_of_a_filtered_attachment_removes_it(admin):
    admin.group("default", 'filter_names = ["*.exe"]\nfiltered_action = "cure"\n')
    out = admin.check(message(("setup.exe", b"MZ harmless", "application/octet-stream"),
                              ("notes.txt", b"keep", "text/plain")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"], g["delivered"]) == ("filtered", "cure", True)
    delivered = email.message_from_bytes((admin.out / "default.eml").read_bytes(),
                                         policy=email.policy.default)
    assert [p.get_filename() for p in delivered.iter_attachments()] == ["notes.txt"]


def test_reject_reply_of_a_limit_names_the_limit(admin):
    admin.group("default", 'max_file_size = 10\nreject_reply = "550 5.7.1 Rejected ($threats)"\n')
    out = admin.check(message(("big.bin", bytes(range(256)) * 4, "application/octet-stream")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    assert (g["status"], g["action"]) == ("error", "reject")
    assert g["reject_reply"] == "550 5.7.1 Rejected (error: limit: filesize 10)"


def test_default_reject_reply_claims_no_virus():
    from lmsav.mail.groups import GroupPolicy

    assert "virus (" not in GroupPolicy("g").reject_reply


# -- threat names once -----------------------------------------------------------------------------

def test_threat_names_are_listed_once(admin):
    admin.group("default", 'notify_recipients = ["infected"]\n')
    out = admin.check(message(("a.com", EICAR, "application/octet-stream"),
                              ("b.com", EICAR, "application/octet-stream")),
                      "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    [obj] = g["objects"]
    assert obj["threats"] == ["Eicar-Test-Signature"]
    assert g["reject_reply"].count("Eicar-Test-Signature") == 1
    printed = admin.run("mail", "check", "-f", "alice@example.org", "-r", "bob@example.net",
                        admin.out.parent / "m.eml").output
    assert "Eicar-Test-Signature, Eicar-Test-Signature" not in printed
    [rcpt] = admin.notices("recipients")
    assert "Eicar-Test-Signature, Eicar-Test-Signature" not in text_of(rcpt)


# -- the plan: what `lmsav mail check` says the MTA is handed ---------------------------------------

STRICT_AND_SALES = {
    "strict": 'priority = 20\nrecipients = ["*@strict.example"]\ninfected_action = "reject"\n'
              "notify_sender = []\nnotify_recipients = []\nnotify_admin = []\n"
              "no_sender_notice = []\n",
    "sales": 'priority = 10\nrecipients = ["*@sales.example"]\nscan_policy = "combined"\n'
             'infected_action = "cure"\nnotify_sender = ["infected"]\nno_sender_notice = []\n'
             "notify_recipients = []\n",
}


def test_plan_lists_every_delivery_and_the_sender_gets_one_notice(admin):
    for name, text in STRICT_AND_SALES.items():
        admin.group(name, text)
    raw = message(("files.zip", zip_of({"ok.txt": b"ok", "bad.com": EICAR}), "application/zip"))
    out = admin.check(raw, "alice@example.org", "ann@strict.example", "bob@sales.example")
    plan = out["plan"]
    assert plan["result"] == "accept" and plan["reply"] == ""
    assert [(d["key"], d["from"], d["to"]) for d in plan["deliveries"]] == [
        ("notice1:sender", "", ["alice@example.org"]),
        ("sales:message", "alice@example.org", ["bob@sales.example"]),
    ]
    # -o writes every delivery of the plan, and nothing else.
    assert sorted(p.name for p in admin.out.iterdir()) == sorted(
        d["file"] for d in plan["deliveries"])
    [notice] = admin.notices("sender")
    text = text_of(notice)
    # One notice tells the sender both: the refusal (with its reply) and the cure.
    assert "  ann@strict.example: rejected\n" in text
    assert "  bob@sales.example: cured\n" in text
    assert "Reply:       550 5.7.1 " in text and "Eicar-Test-Signature" in text
    assert out["notices"][0]["groups"] == ["strict", "sales"]


def test_plan_sends_a_status_notice_when_no_group_notice_goes(admin):
    admin.group("strict", STRICT_AND_SALES["strict"].replace("*@strict.example", "*@strict.ex"))
    raw = message(("e.com", EICAR, "application/octet-stream"))
    out = admin.check(raw, "alice@example.org", "ann@strict.ex", "carl@other.example")
    plan = out["plan"]
    keys = [d["key"] for d in plan["deliveries"]]
    assert "reject" in keys  # the sender's delivery status notice is part of the plan
    dsn = (admin.out / "reject-notice.eml").read_bytes()
    assert b"Final-Recipient: rfc822; ann@strict.ex" in dsn
    assert not admin.notices("sender")


def test_plan_of_a_rejected_message_is_printed(admin):
    admin.group("default", "no_sender_notice = []\n")
    path = admin.out.parent / "m.eml"
    path.write_bytes(message(("e.com", EICAR, "application/octet-stream")))
    result = admin.run("mail", "check", "-f", "alice@example.org", "-r", "bob@example.net",
                       path)
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    plan = lines.index(next(ln for ln in lines if ln.startswith("plan: ")))
    assert lines[plan].startswith("plan: reject (550 5.7.1 ")
    assert "Eicar-Test-Signature" in lines[plan]
    assert any(ln.startswith("  reject: from <> to alice@example.org, ")
               for ln in lines[plan + 1:])


def test_bad_database_is_one_line_exit_2(admin, tmp_path):
    result = admin.run("mail", "check", "-d", tmp_path / "missing", "-r", "bob@example.net",
                       tmp_path / "nothing.eml")
    assert result.exit_code == 2
    assert "signature database" in result.output or "database" in result.output
    assert "Traceback" not in result.output


# -- notice wording ---------------------------------------------------------------------------------

def test_notice_without_a_rejection_has_no_reply_line(admin):
    admin.group("default", 'filter_names = ["*.exe"]\nfiltered_action = "delete"\n'
                           'notify_sender = ["filtered"]\nadmin_addresses = ["pm@example.net"]\n'
                           'notify_admin = ["filtered"]\n')
    admin.check(message(("setup.exe", b"MZ harmless", "application/octet-stream")),
                "alice@example.org", "bob@example.net")
    [sender] = admin.notices("sender")
    [adm] = admin.notices("admin")
    for notice in (sender, adm):
        text = text_of(notice)
        assert "Reply:" not in text
        assert "found to be" not in text
    assert "Result: blocked by the content filter." in text_of(sender)


def test_object_filtered_by_two_groups_is_found_once_with_both_reasons(admin):
    admin.group("names", 'priority = 2\nrecipients = ["*@names.example"]\n'
                         'filter_names = ["*.exe"]\nnotify_sender = ["filtered"]\n')
    admin.group("types", 'priority = 1\nrecipients = ["*@types.example"]\n'
                         'filter_types = ["executable"]\nnotify_sender = ["filtered"]\n')
    admin.check(message(("setup.exe", tiny_pe(), "application/octet-stream")),
                "alice@example.org", "ann@names.example", "bob@types.example")
    [sender] = admin.notices("sender")
    found = text_of(sender).split("Found:\n", 1)[1]
    lines = [ln for ln in found.splitlines() if "setup.exe" in ln]
    assert len(lines) == 1
    assert "name *.exe" in lines[0] and "type " in lines[0]


# -- content filter names: the attachment's file name, the names found inside ----------------------

def test_filter_names_use_file_names_not_part_numbers(admin):
    import binascii

    admin.group("default", 'filter_names = ["part*", "*.bat"]\nfiltered_action = "delete"\n')
    data = b"echo hello\r\n"
    uu = b"begin 644 run.bat\n" + binascii.b2a_uu(data) + b"`\nend\n"
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "uu"
    msg.set_content(b"see below\n" + uu, maintype="text", subtype="plain", cte="7bit")
    out = admin.check(msg.as_bytes(), "alice@example.org", "bob@example.net")
    [g] = out["groups"]
    # The text part has no file name ("1:part1.plain" is the handler's numbering): only the
    # uuencoded run.bat inside it is caught.
    assert g["status"] == "filtered"
    [obj] = g["objects"]
    assert obj["reason"] == "name *.bat"
