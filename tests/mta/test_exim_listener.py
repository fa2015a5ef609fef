"""lmsav behind a real Exim through its SMTP/LMTP front door: `lmsav setup exim` with the smtp
transport (default) or ``protocol = lmtp`` to lmsav's listener, then mail over SMTP to Maildirs.

Exim (exim4-daemon-heavy) is unpacked beside Postfix by scripts/mta/exim-unpack; the stack is
the one tests/mta/conftest.py builds, set up for the listener on a free port as
tests/mta/test_postfix_listener.py does it: over SMTP the listener runs inside `lmsav spool
watch` (``[spool] listen``), over LMTP as a separate `lmsav spool listen`. The crash test
SIGKILLs the listener while Exim's transport is sending it a message body.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.mta.conftest import (
    ADMIN,
    SENDER,
    PrivateExim,
    _need_root,
    assert_unchanged_but_av_headers,
    attachment_names,
    build_listener_stack,
    build_message,
    infected_message,
    parsed,
    token,
    unpacked_exim,
    wait_port,
    zip_members,
)
from tests.mta.test_postfix_listener import (
    big_message,
    by_subject,
    flood_with_kills,
    kill_in_the_middle_of_data,
    listener_pid,
    spool_holds,
    text_of,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=["smtp", "lmtp"])
def stack(request):
    """A private Exim handing mail to lmsav's listener: over SMTP to the listener the watcher
    runs, or over LMTP to a separate `lmsav spool listen`."""
    _need_root()
    exim = unpacked_exim()
    transport = request.param
    built = build_listener_stack(
        "exim", lambda root, port, mail: PrivateExim(exim, root, port, mail), transport,
        separate_listener=transport == "lmtp")
    try:
        built.start()
        yield built
    finally:
        built.stop()


def exim_id(stack, tok: str) -> str:
    """The id Exim gave the message with ``tok`` in its Message-ID when it first took it."""
    [received, *_] = stack.log_lines("<= alice@senders.test", f"id={tok}@senders.test")
    return received.split()[2]


def test_setup_routes_mail_to_the_listener(stack):
    """Exim's configuration sends everything to lmsav's smtp transport on the listener's port."""
    shown = subprocess.run(stack.mta.command("-bP", "transport", "lmsav_smtp"),
                           capture_output=True, text=True, check=True).stdout
    assert "driver = smtp" in shown
    assert f"port = {stack.listen_port}" in shown
    assert f"protocol = {stack.transport}" in shown
    routed = subprocess.run(stack.mta.command("-bt", "bob@clean.test"), capture_output=True,
                            text=True).stdout
    assert "router = lmsav_scan, transport = lmsav_smtp" in routed, routed


def test_clean_mail_arrives_unchanged_but_for_the_av_headers(stack):
    tok = token()
    sent = build_message(tok, ("data.bin", bytes(range(256)) * 40, "application/octet-stream"),
                         text="Line one.\n.leading dot\n..two dots\nFrom the start of a line\n")
    stack.send(sent, ["bob@clean.test"])
    [got] = stack.wait("bob@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    assert parsed(got)["Return-path"] == f"<{SENDER}>"
    # It went through the listener's transport at the first attempt, and arrived once.
    message = exim_id(stack, tok)
    stack.log_lines(message, "=> bob@clean.test", "T=lmsav_smtp", 'C="250 ')
    assert not [line for line in stack.mta.log().splitlines()
                if message in line and "==" in line], stack.debug()
    time.sleep(2)
    assert len(stack.mail.messages("bob@clean.test", tok)) == 1, stack.debug()


def test_a_bounce_keeps_its_empty_sender(stack):
    tok = token()
    sent = build_message(tok, subject="Mail delivery failed")
    stack.send(sent, ["carol@clean.test"], sender="")
    [got] = stack.wait("carol@clean.test", tok)
    assert parsed(got)["Return-path"] == "<>"
    assert_unchanged_but_av_headers(sent, got)


def test_infected_mail_is_handled_by_each_groups_policy(stack):
    tok = token()
    rcpts = ["bob@drop.test", "carol@warn.test", "dave@cure.test", "alice@reject.test",
             "alice@clean.test"]
    stack.send(infected_message(tok, ", ".join(rcpts)), rcpts)
    [admin] = stack.wait(ADMIN, tok)
    [line] = [ln for ln in text_of(admin).splitlines() if ln.strip().startswith("Group:")]
    assert sorted(line.split(":", 1)[1].replace(",", " ").split()) == \
        ["cure", "default", "drop", "warn"]
    [notice] = stack.wait("bob@drop.test", tok)
    assert str(parsed(notice)["Subject"]).startswith("A message to you")
    assert b"EICAR" not in notice and attachment_names(notice) == []
    warned = by_subject(stack.wait("carol@warn.test", tok, count=2), "report")
    assert parsed(warned)["X-AV-Status"] == "infected" and b"EICAR" not in warned
    assert "Eicar-Test-Signature" in text_of(warned)
    cured = by_subject(stack.wait("dave@cure.test", tok, count=2), "report")
    assert attachment_names(cured) == ["notes.txt", "files.zip"]
    assert zip_members(cured, "files.zip") == ["clean.txt"]
    [dsn] = stack.wait(SENDER, tok)
    assert parsed(dsn)["Return-path"] == "<>"
    assert "<alice@reject.test>: 550" in dsn.decode() and "<alice@clean.test>: 550" in dsn.decode()
    for rcpt in rcpts:
        assert all(b"EICAR" not in m for m in stack.mail.messages(rcpt, tok))
    # Exim batched the five recipients: the message reached the spool once.
    lines = [line for line in (stack.root / "watch.log").read_text().splitlines()
             if f"message_id=<{tok}@senders.test>" in line]
    assert len(lines) == 1 and all(r in lines[0] for r in rcpts), lines


def test_sigkill_of_the_listener_mid_message_loses_nothing(stack):
    """The listener dies while Exim's transport sends it a body: Exim defers the message,
    keeps it queued and delivers it, once, when the listener is back."""
    tok = token()
    pid = listener_pid(stack)
    sent = big_message(tok, "dave@clean.test")
    unread = kill_in_the_middle_of_data(pid, stack.listen_port,
                                        lambda: stack.send(sent, ["dave@clean.test"]))
    message = exim_id(stack, tok)
    [deferred, *_] = stack.log_lines(message, "== dave@clean.test", "T=lmsav_smtp",
                                    "defer")
    print(f"killed listener {pid} with {unread} bytes unread; Exim: {deferred}")
    assert "Remote host closed connection" in deferred or "Connection reset" in deferred, \
        deferred
    assert [name for name in spool_holds(stack, tok) if not name.startswith("tmp/")] == []
    assert stack.mail.messages("dave@clean.test", tok) == []
    if stack.listener is not None:  # a separate `lmsav spool listen`: start it again
        stack.listener.proc.wait(10)
        stack.listener.proc = None
        stack.listener.start()
    wait_port(stack.listen_port, timeout=30)
    [got] = stack.wait("dave@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    stack.log_lines(message, "=> dave@clean.test", "T=lmsav_smtp")
    stack.log_lines(message, "Completed")


def test_sigkill_of_the_listener_while_messages_flow_loses_none(stack):
    """Repeated SIGKILLs of the listener while a client sends a stream of messages: every one
    arrives; a kill between the listener's fsync and its reply may make one duplicate."""
    flood_with_kills(stack)
