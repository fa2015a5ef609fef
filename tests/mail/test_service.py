"""MailService.decide → Plan, what every front end reads, and the LMSAVMAIL files that carry a
plan to lmsav-qmail-queue."""

from __future__ import annotations

import email
import email.policy
import os
from email.message import EmailMessage

import pytest

from lmsav import paths
from lmsav.config import load_settings
from lmsav.mail import transfer
from lmsav.mail.envelope import Envelope
from lmsav.mail.service import MailService, MailServiceError
from tests.conftest import EICAR

GROUPS = {
    "strict.toml": 'priority = 20\nrecipients = ["*@strict.example"]\n'
                   'infected_action = "reject"\nnotify_admin = ["infected"]\n'
                   'admin_addresses = ["postmaster@strict.example"]\n'
                   # EICAR is on the default list of threats that forge their sender
                   'no_sender_notice = []\n',
    "lax.toml": 'priority = 10\nrecipients = ["*@lax.example"]\ninfected_action = "warn"\n',
}


@pytest.fixture
def service(tmp_path):
    config = tmp_path / "lmsav.toml"
    (tmp_path / "groups.d").mkdir()
    for name, text in GROUPS.items():
        (tmp_path / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    return MailService.from_settings(load_settings(config), config,
                                     database_dir=paths.bundled_database_dir(),
                                     backup=False, stats=False)


def message(attachment: bytes | None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "report"
    msg["Message-ID"] = "<m1@example.org>"
    msg.set_content("hello")
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                           filename="e.com")
    return msg.as_bytes()


def test_clean_message_is_accepted_and_delivered(service):
    plan = service.decide(message(None), Envelope("alice@example.org", ("bob@lax.example",)))
    assert (plan.result, plan.reply, plan.outcome.status) == ("accept", "", "clean")
    [d] = plan.deliveries
    assert (d.key, d.sender, d.recipients) == ("lax:message", "alice@example.org",
                                              ("bob@lax.example",))
    assert plan.before_queue_deliveries() == plan.deliveries


def test_every_group_rejecting_refuses_before_the_queue_and_notifies_after_it(service):
    plan = service.decide(message(EICAR), Envelope("alice@example.org", ["bob@strict.example"]))
    assert plan.result == "reject" and plan.rejected
    assert plan.reply.startswith("550 5.7.1") and "Eicar-Test-Signature" in plan.reply
    # After the queue (the spool) the sender hears of it by a status notice; notices first.
    assert [d.key for d in plan.deliveries] == ["notice1:recipients", "notice2:admin", "reject"]
    dsn = email.message_from_bytes(plan.deliveries[-1].message, policy=email.policy.default)
    assert plan.deliveries[-1].recipients == ("alice@example.org",)
    assert dsn.get_content_type() == "multipart/report"
    # Before the queue (qmail, the daemon, a milter) the SMTP reply says it instead.
    assert [d.key for d in plan.before_queue_deliveries()] == ["notice1:recipients",
                                                               "notice2:admin"]


def test_some_groups_rejecting_accepts_the_rest_and_notifies_the_sender(service):
    env = Envelope("alice@example.org", ("bob@strict.example", "carol@lax.example"))
    plan = service.decide(message(EICAR), env)
    assert (plan.result, plan.reply) == ("accept", "")
    keys = [d.key for d in plan.deliveries]
    # Notices first, messages last; one status notice for the refused recipient.
    assert keys == ["notice1:recipients", "notice2:recipients", "notice3:admin", "reject",
                    "lax:message"]
    assert plan.before_queue_deliveries() == plan.deliveries
    assert b"<bob@strict.example>" in plan.deliveries[3].message
    assert b"carol@lax.example" not in plan.deliveries[3].message


def test_forced_group(service):
    plan = service.decide(message(EICAR), Envelope("a@b.example", ("bob@strict.example",),
                                                   group="lax"))
    assert [g.group for g in plan.outcome.groups] == ["lax"]
    with pytest.raises(MailServiceError, match="no recipient group named 'nope'"):
        service.decide(message(None), Envelope("a@b.example", ("x@y.example",), group="nope"))


def test_unusable_groups_or_database_are_one_line_errors(tmp_path):
    (tmp_path / "groups.d").mkdir()
    (tmp_path / "groups.d" / "bad.toml").write_text('infected_action = "explode"\n')
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    with pytest.raises(MailServiceError, match="bad.toml"):
        MailService.from_settings(load_settings(config), config)
    with pytest.raises(MailServiceError, match="signature database"):
        MailService.from_settings(load_settings(config), None,
                                  database_dir=tmp_path / "missing")


def test_plan_through_the_lmsavmail_files(service):
    request = transfer.encode_request(b"alice@example.org",
                                      [b"bob@strict.example", b"carol@lax.example"], "", "local")
    env = transfer.decode_request(request)
    assert env == Envelope("alice@example.org", ("bob@strict.example", "carol@lax.example"),
                           arrived=env.arrived, client="local", group="")
    plan = service.decide(message(EICAR), env)
    fd = os.memfd_create("plan")
    try:
        transfer.write_plan(fd, plan)
        header, deliveries = transfer.read_plan(fd)
    finally:
        os.close(fd)
    assert (header["result"], header["status"], header["threats"]) == (
        "accept", "infected", ["Eicar-Test-Signature"])
    assert [(k, s, r) for k, s, r, _body in deliveries] == [
        (d.key, d.sender.encode(), [r.encode() for r in d.recipients])
        for d in plan.before_queue_deliveries()]
    assert deliveries[-1][3] == plan.deliveries[-1].message


def test_rejected_plan_through_the_files_has_no_status_notice(service):
    plan = service.decide(message(EICAR), Envelope("alice@example.org", ("bob@strict.example",)))
    fd = os.memfd_create("plan")
    try:
        transfer.write_plan(fd, plan)
        header, deliveries = transfer.read_plan(fd)
    finally:
        os.close(fd)
    assert (header["result"], header["reply"]) == ("reject", plan.reply)
    assert [k for k, *_ in deliveries] == ["notice1:recipients", "notice2:admin"]


def test_the_wrapper_imports_neither_dataclasses_nor_the_daemon():
    """lmsav-qmail-queue runs once per message: its path through the daemon stays cheap."""
    import subprocess
    import sys

    code = ("import sys, lmsav.qmail.queue, lmsav.qmail.daemon_client; "
            "bad = [m for m in sys.modules if m == 'dataclasses' or m.startswith('lmsav.daemon')"
            " or m in ('json', 're', 'socket', 'tomllib')]; print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
