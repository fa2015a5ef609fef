"""Notices: who gets which, what they say, and that they are valid messages."""

from __future__ import annotations

import dataclasses
import email
import os
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import NonASCIILocalPartDefect, UndecodableBytesDefect
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest

from lmsav.mail.notify import (
    SHIPPED_TEMPLATES_DIR,
    Notice,
    NoticeInfo,
    TemplateError,
    Templates,
    notices_for_groups,
)


def one_group(group, info, templates=None, **kwargs):
    """The notices of a message whose recipients all fell into ``group``."""
    return notices_for_groups([(group, info)], lambda _group: templates, **kwargs)


@dataclass(frozen=True)
class Group:
    """The attributes of a group policy that notices read (stand-in for lmsav.mail.groups)."""

    name: str = "default"
    notify_sender: tuple[str, ...] = ("infected",)
    notify_recipients: tuple[str, ...] = ("infected", "filtered")
    notify_admin: tuple[str, ...] = ("infected", "suspicious", "filtered")
    admin_addresses: tuple[str, ...] = ("postmaster@example.org",)
    notice_from: str = "lmsav <lmsav@mx.example.org>"
    no_sender_notice: tuple[str, ...] = ("*Worm*", "re:Trojan\\.Fakesender\\..*")
    templates_dir: Path | None = None


INFO = NoticeInfo(
    sender="alice@example.com",
    recipients=("bob@example.org", "carol@example.org"),
    subject="Quarterly report",
    message_id="<abc123@example.com>",
    status="infected",
    action="reject",
    threats=(("mail.eml//2:report.zip//report.exe", "Eicar-Test-Signature"),),
    objects=(
        ("mail.eml//2:report.zip//report.exe", "infected", "Eicar-Test-Signature"),
        ("mail.eml//3:secret.zip", "protected", "encrypted archive"),
    ),
    group="default",
    date="Tue, 02 Jan 2024 10:11:12 +0100",
    database_version="lmsav-bundled 3",
    hostname="mx.example.org",
    reject_reply="554 5.7.1 Message infected",
)


def parse(notice: Notice, utf8: bool = False) -> email.message.EmailMessage:
    """The notice parsed back, asserting the parser found nothing wrong with it.

    With ``utf8`` (an RFC 6532 message), the email package's complaints about raw UTF-8 in
    addresses are expected: it parses them right but still flags them.
    """
    message = email.message_from_bytes(notice.message, policy=email_policy.default)
    assert not message.defects
    expected = (NonASCIILocalPartDefect, UndecodableBytesDefect) if utf8 else ()
    for name in ("From", "To", "Subject", "Date", "Message-ID"):
        assert all(isinstance(d, expected) for d in message[name].defects), name
    return message


def body(notice: Notice) -> str:
    message = parse(notice)
    part = message.get_body(preferencelist=("plain",))
    return part.get_content()


def kinds(notices: list[Notice]) -> list[str]:
    return [n.kind for n in notices]


# Who gets what


def test_all_three_kinds_with_their_envelopes():
    notices = one_group(Group(), INFO)
    assert kinds(notices) == ["sender", "recipients", "admin"]
    sender, recipients, admin = notices
    assert sender.envelope_to == ("alice@example.com",)
    assert recipients.envelope_to == ("bob@example.org", "carol@example.org")
    assert admin.envelope_to == ("postmaster@example.org",)
    for notice in notices:
        assert notice.envelope_from == ""
        message = parse(notice)
        assert message["From"] == "lmsav <lmsav@mx.example.org>"
        assert message["Auto-Submitted"] == "auto-generated"
        assert message["Message-ID"].endswith("@mx.example.org>")
        assert parsedate_to_datetime(message["Date"]) == parsedate_to_datetime(INFO.date)
        assert message.get_content_type() in ("text/plain", "multipart/mixed")
        assert b"\r\n" not in notice.message
    assert parse(recipients)["To"] == "bob@example.org, carol@example.org"
    assert parse(sender)["To"] == "alice@example.com"


def test_each_kind_only_for_its_statuses():
    group = Group(
        notify_sender=("infected",), notify_recipients=("filtered",), notify_admin=("error",)
    )
    assert kinds(one_group(group, INFO)) == ["sender"]
    assert kinds(one_group(group, dataclasses.replace(INFO, status="filtered"))) == [
        "recipients"
    ]
    assert kinds(one_group(group, dataclasses.replace(INFO, status="error"))) == ["admin"]
    assert one_group(group, dataclasses.replace(INFO, status="suspicious")) == []
    assert one_group(Group(notify_sender=(), notify_recipients=(), notify_admin=()), INFO) == []


def test_no_admin_notice_without_admin_addresses():
    assert kinds(one_group(Group(admin_addresses=()), INFO)) == ["sender", "recipients"]


@pytest.mark.parametrize("threat", ["W32.Worm.Mydoom", "trojan.fakesender.a", "NET-WORM-X"])
def test_threats_known_to_forge_senders_get_no_sender_notice(threat):
    info = dataclasses.replace(
        INFO,
        threats=(("mail.eml//2:a.zip//a.exe", "Eicar-Test-Signature"), ("mail.eml//3", threat)),
    )
    assert kinds(one_group(Group(), info)) == ["recipients", "admin"]


def test_other_threats_still_notify_the_sender():
    info = dataclasses.replace(INFO, threats=(("mail.eml//2", "Trojan.Other.A"),))
    assert kinds(one_group(Group(), info))[0] == "sender"


@pytest.mark.parametrize("sender", ["", "<>", " <> ", "  "])
def test_null_sender_never_gets_a_notice(sender):
    assert kinds(one_group(Group(), dataclasses.replace(INFO, sender=sender))) == [
        "recipients",
        "admin",
    ]


def test_sender_in_angle_brackets_is_unwrapped():
    notices = one_group(Group(), dataclasses.replace(INFO, sender="<alice@example.com>"))
    assert notices[0].envelope_to == ("alice@example.com",)


def test_with_the_real_group_policy():
    from lmsav.mail.groups import GroupPolicy

    group = GroupPolicy(
        name="default", notify_sender=("infected",), admin_addresses=("postmaster@example.org",)
    )
    # The shipped list of sender-forging threats includes the EICAR test file.
    assert kinds(one_group(group, INFO)) == ["recipients", "admin"]
    info = dataclasses.replace(INFO, threats=(("mail.eml//2", "Win.Trojan.Agent-1"),))
    assert kinds(one_group(group, info)) == ["sender", "recipients", "admin"]
    assert kinds(one_group(group, dataclasses.replace(INFO, status="filtered"))) == []


# Content


def test_macros_are_filled():
    sender, _recipients, admin = one_group(Group(), INFO)
    assert parse(sender)["Subject"] == 'Your message "Quarterly report" was rejected'
    text = body(sender)
    assert "Result: infected. It was rejected" in text
    assert "  From:        alice@example.com\n" in text
    assert "  To:          bob@example.org, carol@example.org\n" in text
    assert "  Message-ID:  <abc123@example.com>\n" in text
    assert "  Checked:     Tue, 02 Jan 2024 10:11:12 +0100\n" in text
    assert "  Reply:       554 5.7.1 Message infected\n" in text
    assert "It was rejected:\n  bob@example.org, carol@example.org: rejected\n" in text
    assert "\n  mail.eml//2:report.zip//report.exe: infected (Eicar-Test-Signature)\n" in text
    assert "\n  mail.eml//3:secret.zip: encrypted or password-protected (encrypted archive)\n" \
        in text
    assert "Your computer may be infected." in text
    assert "${" not in text

    assert parse(admin)["Subject"] == (
        '[lmsav] infected: "Quarterly report" from alice@example.com (rejected)'
    )
    text = body(admin)
    assert "  Group:       default\n" in text
    assert "  Database:    lmsav-bundled 3\n" in text
    assert "  mail.eml//2:report.zip//report.exe: INFECTED Eicar-Test-Signature\n" in text
    assert "  mail.eml//3:secret.zip: PROTECTED encrypted archive\n" in text
    assert "Anti-virus report from mx.example.org." in text
    assert "${" not in text


def test_empty_lists_and_subject_have_placeholders():
    info = dataclasses.replace(INFO, status="filtered", threats=(), subject="")
    admin = one_group(Group(), info)[-1]
    assert parse(admin)["Subject"].startswith(
        '[lmsav] blocked by the content filter: "(no subject)"'
    )
    assert "Threats:\n  (none)\n" in body(admin)


def test_subject_cannot_inject_headers():
    info = dataclasses.replace(INFO, subject="hi\r\nBcc: victim@example.net\n\tmore")
    for notice in one_group(Group(), info):
        message = parse(notice)
        assert message["Bcc"] is None
        assert "hi Bcc: victim@example.net more" in message["Subject"]


def test_unknown_macros_are_left_as_written(tmp_path):
    template = "Subject: ${status} $nothing ${unknown}\n\n$$ ${group} ${x\n"
    (tmp_path / "admin.txt").write_text(template)
    admin = one_group(Group(templates_dir=tmp_path), INFO)[-1]
    assert parse(admin)["Subject"] == "infected $nothing ${unknown}"
    assert body(admin) == "$ default ${x\n"


# Encoding


def test_non_ascii_subject_and_names_are_encoded_and_decode_back():
    group = Group(notice_from="Антивирус Müller <av@example.org>")
    info = dataclasses.replace(
        INFO, subject="Grüße aus Köln — 報告", sender="jörg@example.com"
    )
    notices = one_group(group, info)
    assert len(notices) == 3
    for notice in notices[1:]:  # ASCII envelopes: RFC 2047 encoded words, 7-bit clean
        assert notice.message.isascii()
        assert b"=?utf-8?" in notice.message
        message = parse(notice)
        assert message["From"] == "Антивирус Müller <av@example.org>"
        assert message["From"].addresses[0].display_name == "Антивирус Müller"
        assert "Grüße aus Köln — 報告" in message["Subject"]
        assert "From:        jörg@example.com" in body(notice)
        assert "Subject:     Grüße aus Köln — 報告" in body(notice)
    assert parse(notices[2])["Subject"] == (
        '[lmsav] infected: "Grüße aus Köln — 報告" from jörg@example.com (rejected)'
    )


def test_non_ascii_address_notice_is_utf8_message():
    info = dataclasses.replace(INFO, sender="jörg@exämple.de", subject="Grüße")
    sender = one_group(Group(), info)[0]
    assert sender.envelope_to == ("jörg@exämple.de",)
    header = sender.message.split(b"\n\n", 1)[0].decode("utf-8")  # raw UTF-8, not encoded words
    assert "To: jörg@exämple.de\n" in header and "=?" not in header
    message = parse(sender, utf8=True)
    assert message["To"] == "jörg@exämple.de"
    assert message["Subject"] == 'Your message "Grüße" was rejected'


def test_admin_notice_attaches_original_headers():
    original = b"From: alice@example.com\r\nSubject: Quarterly report\r\n\r\nbody text\r\n"
    notices = one_group(Group(), INFO, original_headers=original)
    message = parse(notices[-1])
    assert message.get_content_type() == "multipart/mixed"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/rfc822-headers"]
    assert parts[1].get_content() == "From: alice@example.com\nSubject: Quarterly report\n"
    assert "body text" not in notices[-1].message.decode()
    assert parse(notices[0]).get_content_type() == "text/plain"  # only the admin gets them


def test_huge_header_block_is_cut():
    original = b"".join(b"X-Filler-%d: %s\n" % (i, b"a" * 60) for i in range(10_000))
    admin = one_group(Group(), INFO, original_headers=original)[-1]
    assert len(admin.message) < 120_000
    headers = list(parse(admin).iter_parts())[1].get_content()
    assert headers.startswith("X-Filler-0: ") and headers.endswith("a\n")


# Templates


def test_shipped_templates_are_complete():
    templates = Templates.load()
    assert set(templates.notices) == {"sender", "recipients", "admin"}
    for name in ("sender.txt", "recipients.txt", "admin.txt", "strings.toml", "strings.de.toml"):
        assert (SHIPPED_TEMPLATES_DIR / name).is_file()
    assert templates.word("status", "infected") == "infected"
    assert templates.word("action", "reject") == "rejected"
    assert templates.word("action", "no-such-action") == "no-such-action"


def test_group_override_replaces_one_template_only(tmp_path):
    (tmp_path / "sender.txt").write_text(
        "Subject: Blocked: ${subject}\n\n"
        "Dear ${sender}, your mail to ${recipients} was ${action}.\n"
    )
    notices = one_group(Group(templates_dir=tmp_path), INFO)
    sender, recipients, admin = notices
    assert parse(sender)["Subject"] == "Blocked: Quarterly report"
    assert body(sender) == (
        "Dear alice@example.com, your mail to bob@example.org, carol@example.org was rejected.\n"
    )
    default = one_group(Group(), INFO)
    assert body(recipients) == body(default[1])
    assert body(admin) == body(default[2])


def test_override_strings_replace_words_key_by_key(tmp_path):
    (tmp_path / "strings.toml").write_text('[action]\nreject = "refused at the door"\n')
    templates = Templates.load(tmp_path)
    assert templates.word("action", "reject") == "refused at the door"
    assert templates.word("action", "drop") == "discarded"
    assert templates.word("status", "infected") == "infected"


def test_german_strings():
    info = dataclasses.replace(INFO, threats=())
    templates = Templates.load(language="de")
    sender = one_group(Group(), info, templates)[0]
    assert parse(sender)["Subject"] == 'Your message "Quarterly report" was abgewiesen'
    text = body(sender)
    assert "Result: infiziert. It was abgewiesen" in text
    assert "Found:\n  mail.eml//2:report.zip//report.exe: infiziert (Eicar-Test-Signature)\n" \
        in text
    assert "Ihr Computer ist möglicherweise infiziert." in text
    assert templates.word("status", "suspicious") == "verdächtig"


def test_language_templates_and_group_language(tmp_path):
    (tmp_path / "sender.de.txt").write_text(
        "Subject: Ihre Nachricht „${subject}“ wurde ${action}\n\nStatus: ${status}\n",
        encoding="utf-8",
    )

    @dataclass(frozen=True)
    class GermanGroup(Group):
        language: str = "de"

    sender, recipients, _ = one_group(GermanGroup(templates_dir=tmp_path), INFO)
    assert parse(sender)["Subject"] == "Ihre Nachricht „Quarterly report“ wurde abgewiesen"
    assert body(sender) == "Status: infiziert\n"
    assert "Result: infiziert." in body(recipients)  # no recipients.de.txt: shipped one


def test_unknown_language_is_an_error():
    with pytest.raises(TemplateError, match="strings.xx.toml: no strings file for language 'xx'"):
        Templates.load(language="xx")
    with pytest.raises(TemplateError, match="language '../de'"):
        Templates.load(language="../de")


# Template problems


def test_missing_override_dir_is_an_error(tmp_path):
    with pytest.raises(TemplateError, match="templates directory does not exist"):
        Templates.load(tmp_path / "nowhere")


def test_bad_utf8_template(tmp_path):
    (tmp_path / "admin.txt").write_bytes(b"Subject: x\n\nGr\xfc\xdfe\n")
    with pytest.raises(TemplateError) as raised:
        Templates.load(tmp_path)
    assert str(raised.value).startswith(f"{tmp_path / 'admin.txt'}: not valid UTF-8")


def test_unreadable_template(tmp_path, monkeypatch):
    path = tmp_path / "recipients.txt"
    path.write_text("Subject: x\n\nbody\n")
    path.chmod(0)
    if os.geteuid() == 0:  # root reads any file: fail the read the way it fails for others
        real_read_bytes = Path.read_bytes

        def read_bytes(self):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return real_read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", read_bytes)
    with pytest.raises(TemplateError, match=f"^{path}: cannot read: Permission denied"):
        Templates.load(tmp_path)


def test_template_as_directory_is_an_error(tmp_path):
    (tmp_path / "sender.txt").mkdir()
    with pytest.raises(TemplateError, match=f"^{tmp_path / 'sender.txt'}: cannot read"):
        Templates.load(tmp_path)


@pytest.mark.parametrize(
    "text, problem",
    [
        ("Hello\n\nbody\n", "the first line must be 'Subject: …'"),
        ("Subject: x\nbody\n", "the Subject line must be followed by an empty line"),
    ],
)
def test_malformed_template(tmp_path, text, problem):
    (tmp_path / "sender.txt").write_text(text)
    with pytest.raises(TemplateError, match=f"^{tmp_path / 'sender.txt'}: {problem}"):
        Templates.load(tmp_path)


def test_template_with_crlf_and_bom(tmp_path):
    (tmp_path / "sender.txt").write_bytes(b"\xef\xbb\xbfsubject: S ${group}\r\n\r\nB\r\n")
    templates = Templates.load(tmp_path)
    assert templates.render("sender", INFO) == ("S default", "B\n")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[status\n", "invalid TOML"),
        ("[colour]\nred = 'rot'\n", "unknown entry 'colour'"),
        ("[status]\ninfected = 1\n", r"\[status\] infected must be a string"),
    ],
)
def test_bad_strings_file(tmp_path, text, problem):
    (tmp_path / "strings.toml").write_text(text)
    with pytest.raises(TemplateError, match=f"^{tmp_path / 'strings.toml'}: {problem}"):
        Templates.load(tmp_path)


# Every notice is a valid message


STATUSES = ["infected", "suspicious", "protected", "corrupted", "error", "filtered"]


@pytest.mark.parametrize("status", STATUSES)
@pytest.mark.parametrize("action", ["skip", "warn", "drop", "reject", "cure", "delete"])
def test_every_notice_parses_back(status, action):
    everything = (status,)
    group = Group(notify_sender=everything, notify_recipients=everything, notify_admin=everything)
    info = dataclasses.replace(INFO, status=status, action=action, subject="Ünïcödé " * 30)
    notices = one_group(group, info, original_headers=b"Subject: x\n\n")
    assert kinds(notices) == ["sender", "recipients", "admin"]
    for notice in notices:
        message = parse(notice)
        assert message["Subject"].count("Ünïcödé") == 30
        assert all(len(line) <= 78 for line in notice.message.split(b"\n"))
        assert "${" not in body(notice)


def test_filtered_notice_names_the_file_and_why_without_infection_wording():
    info = dataclasses.replace(
        INFO, status="filtered", action="delete", threats=(), delivered=False, reject_reply="",
        objects=(("message//2:setup.exe", "filtered", "name *.exe"),))
    group = Group(notify_sender=("filtered",))
    sender = one_group(group, info)[0]
    assert parse(sender)["Subject"] == 'Your message "Quarterly report" was deleted and not delivered'
    text = body(sender)
    assert "  message//2:setup.exe: blocked by the content filter (name *.exe)\n" in text
    assert "infected" not in text and "(none)" not in text
    assert "does not accept files like the one named" in text


def test_one_notice_per_person_for_several_groups():
    strict = dataclasses.replace(INFO, recipients=("bob@example.org",), group="strict")
    lax = dataclasses.replace(INFO, recipients=("carol@example.org",), group="lax",
                              action="warn")
    notices = notices_for_groups([(Group(), strict), (Group(name="lax"), lax)],
                                 lambda _group: None)
    assert [(n.kind, n.envelope_to, n.groups) for n in notices] == [
        ("sender", ("alice@example.com",), ("strict", "lax")),
        ("recipients", ("bob@example.org",), ("strict",)),
        ("recipients", ("carol@example.org",), ("lax",)),
        ("admin", ("postmaster@example.org",), ("strict", "lax")),
    ]
    sender = notices[0]
    assert parse(sender)["Subject"] == 'Your message "Quarterly report" was handled as follows'
    text = body(sender)
    assert "  bob@example.org: rejected\n" in text
    assert "  carol@example.org: delivered with the affected parts replaced by a warning\n" in text


def test_lines_whose_macros_are_all_empty_are_left_out():
    info = dataclasses.replace(INFO, reject_reply="", message_id="", action="cure")
    sender, recipients, admin = one_group(Group(), info)
    for notice in (sender, recipients, admin):
        text = body(notice)
        assert "Reply:" not in text and "Message-ID:" not in text
        assert "=20" not in notice.message.decode()
        assert "  From:        alice@example.com\n" in text
    assert "Reply:       554 5.7.1 Message infected\n" in body(one_group(Group(), INFO)[0])


def test_admin_notice_has_no_advice_to_the_sender():
    _sender, _recipients, admin = one_group(Group(), INFO)
    assert "Your computer may be infected" not in body(admin)


def test_same_object_of_two_groups_is_found_once_with_both_reasons():
    obj = "m//2:setup.exe"
    names = dataclasses.replace(INFO, status="filtered", threats=(), group="names",
                                objects=((obj, "filtered", "name *.exe"),))
    types = dataclasses.replace(names, group="types",
                                objects=((obj, "filtered", "type application/x-dosexec"),))
    [sender, *_] = notices_for_groups([(Group(notify_sender=("filtered",)), names),
                                       (Group(name="t", notify_sender=("filtered",)), types)],
                                      lambda _group: None)
    found = [ln for ln in body(sender).splitlines() if obj in ln]
    expected = f"  {obj}: blocked by the content filter (name *.exe, type application/x-dosexec)"
    assert found == [expected]
