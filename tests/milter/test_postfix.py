"""`lmsav milter` behind a real Postfix (smtpd_milters on loopback), mail over SMTP to Maildirs:
EICAR refused with the group's text, clean mail delivered with X-AV headers, warned mail
rewritten, and a second group's recipients deferred at RCPT then delivered in a transaction of
their own."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys

import pytest

from tests.milter.conftest import build, infected, write_config
from tests.mta.conftest import (
    Mailboxes,
    PrivatePostfix,
    _chown,
    _make_root,
    free_port,
    have_postfix,
    parsed,
    token,
    wait_port,
)

pytestmark = pytest.mark.integration

SENDER = "alice@senders.test"


@pytest.fixture(scope="module")
def stack():
    if os.geteuid() != 0:
        pytest.skip("the Postfix tests run a real Postfix and need root")
    if not have_postfix():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    root = _make_root("milter")
    mailboxes = root / "mail"
    mailboxes.mkdir()
    smtp_port, milter_port = free_port(), free_port()
    postfix = PrivatePostfix(root, smtp_port, mailboxes)
    _chown(mailboxes, postfix.user)
    postfix.configure()
    # The lines lmsav-milter(8) gives, with the loopback port of this run.
    postfix.postconf("-e", f"smtpd_milters = inet:127.0.0.1:{milter_port}",
                     "milter_protocol = 6", "milter_default_action = tempfail")
    config = write_config(root / "lmsav", root / "notices")
    log = open(root / "milter.log", "ab")  # noqa: SIM115 - closed at teardown
    milter = subprocess.Popen(
        [sys.executable, "-c", "from lmsav.milter.commands import milter; milter()",
         "--listen", f"inet:{milter_port}@127.0.0.1"],
        env=dict(os.environ, LMSAV_CONFIG=str(config)), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(milter_port, timeout=60)
        postfix.milter = milter  # the last test stops it
        postfix.start()
        yield postfix, Mailboxes(mailboxes), smtp_port, root
    finally:
        postfix.stop()
        milter.terminate()
        try:
            milter.wait(20)
        except subprocess.TimeoutExpired:
            milter.kill()
            milter.wait(10)
        log.close()
        if os.environ.get("LMSAV_KEEP_MTA") != "1":
            shutil.rmtree(root, ignore_errors=True)


def debug(root) -> str:
    parts = []
    for name in ("milter.log", "maillog"):
        path = root / name
        parts.append(f"--- {name}\n" + (path.read_text(errors="replace")[-4000:]
                                        if path.exists() else "(none)"))
    return "\n".join(parts)


def smtp(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    client.ehlo("client.test")
    return client


def test_eicar_is_refused_with_the_groups_text(stack):
    postfix, _boxes, port, root = stack
    with smtp(port) as client, pytest.raises(smtplib.SMTPDataError) as refused:
        client.sendmail(SENDER, ["bob@clean.test"], infected())
    assert refused.value.smtp_code == 550, debug(root)
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 Refused here: ") and "Eicar-Test-Signature" in text
    assert postfix.queue() == []  # nothing was queued


def test_clean_mail_arrives_with_av_headers(stack):
    _postfix, boxes, port, root = stack
    tok = token()
    with smtp(port) as client:
        assert client.sendmail(SENDER, ["bob@clean.test"], build(subject=tok)) == {}
    [delivered] = boxes.wait("bob@clean.test", tok)
    msg = parsed(delivered)
    assert msg["X-AV-Status"] == "clean", debug(root)
    assert msg["X-AV-Checked"].startswith("lmsav ")
    assert msg.get_body(("plain",)).get_content().startswith("Hello.")


def test_warned_mail_arrives_rewritten(stack):
    _postfix, boxes, port, _root = stack
    tok = token()
    with smtp(port) as client:
        client.sendmail(SENDER, ["dave@warn.test"], infected(subject=tok, to="dave@warn.test"))
    [delivered] = boxes.wait("dave@warn.test", tok)
    msg = parsed(delivered)
    assert str(msg["Subject"]) == f"[VIRUS] {tok}"
    assert msg.get_content_type() == "text/plain"
    assert "replaced by lmsav" in msg.get_content()
    assert b"EICAR" not in delivered


def test_second_groups_recipients_are_deferred_then_delivered_on_their_own(stack):
    _postfix, boxes, port, root = stack
    tok = token()
    raw = infected(subject=tok, to="bob@clean.test, dave@warn.test")
    with smtp(port) as client:
        client.mail(SENDER)
        assert client.rcpt("bob@clean.test")[0] == 250
        code, reply = client.rcpt("dave@warn.test")
        assert (code, reply.decode()[:5]) == (451, "4.7.1"), debug(root)
        code, reply = client.data(raw)
        # The first group (the default) rejects EICAR: the transaction is refused ...
        assert code == 550 and b"Refused here" in reply
        # ... and the deferred recipient, retried alone as a client does, gets its own group's
        # result: the warning.
        assert client.sendmail(SENDER, ["dave@warn.test"], raw) == {}
    [delivered] = boxes.wait("dave@warn.test", tok)
    assert str(parsed(delivered)["Subject"]) == f"[VIRUS] {tok}"
    assert boxes.messages("bob@clean.test", tok) == []


def test_concurrent_sessions_each_get_their_own_answer_and_nothing_passes_unscanned(stack):
    import threading

    _postfix, boxes, port, root = stack
    tok = token()
    outcome: dict[int, object] = {}

    def one(i: int) -> None:
        subject = f"{tok}-{i}"
        raw = infected(subject=subject) if i % 2 else build(subject=subject)
        try:
            with smtp(port) as client:
                outcome[i] = client.sendmail(SENDER, ["bob@clean.test"], raw)
        except smtplib.SMTPDataError as err:
            outcome[i] = err.smtp_code
        except Exception as err:  # noqa: BLE001 - recorded and asserted below
            outcome[i] = repr(err)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert outcome == {i: (550 if i % 2 else {}) for i in range(100)}, debug(root)
    delivered = boxes.wait("bob@clean.test", tok, count=50)
    assert len(delivered) == 50
    assert all(parsed(m)["X-AV-Status"] == "clean" for m in delivered)


def test_cured_mail_arrives_without_the_infected_member(stack):
    import io
    import zipfile

    from tests.conftest import EICAR

    _postfix, boxes, port, root = stack
    tok = token()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "keep me\n")
        archive.writestr("eicar.com", EICAR)
    raw = build(buffer.getvalue(), subject=tok, to="carol@cure.test")
    with smtp(port) as client:
        assert client.sendmail(SENDER, ["carol@cure.test"], raw) == {}
    [delivered] = boxes.wait("carol@cure.test", tok)
    msg = parsed(delivered)
    [attachment] = list(msg.iter_attachments())
    assert zipfile.ZipFile(io.BytesIO(attachment.get_content())).namelist() == ["notes.txt"], \
        debug(root)
    assert msg.get_body(("plain",)).get_content().startswith("Hello.")
    assert msg["X-AV-Threats"] and "Eicar" in msg["X-AV-Threats"]


def test_without_the_milter_postfix_defers_and_accepts_nothing_unscanned(stack):
    """Runs last: it stops the milter."""
    postfix, boxes, port, _root = stack
    postfix.milter.terminate()
    assert postfix.milter.wait(30) == 0
    tok = token()
    with smtp(port) as client:
        # Postfix answers the first command of the transaction with its default action.
        code, reply = client.mail(SENDER)
        if code == 250:
            code, reply = client.rcpt("bob@clean.test")
        if code == 250:
            code, reply = client.data(build(subject=tok))
    assert 400 <= code < 500, reply
    assert postfix.queue() == []
    assert boxes.messages("bob@clean.test", tok) == []
