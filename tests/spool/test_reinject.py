"""Reinjection targets against real receivers: an SMTP server (aiosmtpd), a sendmail program,
a directory. Every failure must come back as a ReinjectError saying whether a retry can help."""

from __future__ import annotations

import itertools
import json
import socket
import stat
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from lmsav.spool.reinject import (
    MESSAGES_PER_CONNECTION,
    DirReinjector,
    ReinjectError,
    SendmailReinjector,
    SmtpReinjector,
    from_setting,
)

MESSAGE = (b"From: a@example.org\nTo: b@example.net\nSubject: hi\nMessage-ID: <r1@example.org>\n\n"
           b"line one\n.\n..two dots\nlast line\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """An aiosmtpd handler that keeps what it received and answers as told."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes, int]] = []
        self.rcpt_replies: dict[str, str] = {}  # address → reply instead of 250
        self.data_reply = "250 OK"
        self.mail_reply = None

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.mail_reply:
            return self.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_reply.startswith("250"):
            self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                                  envelope.original_content, id(session)))
        return self.data_reply


class Server:
    """A real SMTP server on 127.0.0.1 that can be stopped and started again on its port."""

    def __init__(self):
        self.handler = Recorder()
        self.port = free_port()
        self.controller = None

    def start(self):
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self):
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


@pytest.fixture
def smtp_server():
    server = Server()
    server.start()
    yield server, server.handler
    server.stop()


def test_smtp_delivers_with_envelope_and_keeps_one_connection(smtp_server):
    controller, handler = smtp_server
    r = SmtpReinjector("127.0.0.1", controller.port, "lmsav.test", timeout=5)
    r.deliver("a@example.org", ["b@example.net", "c@example.net"], MESSAGE)
    r.deliver("", ["postmaster@example.net"], MESSAGE)
    r.close()
    assert [(f, t) for f, t, _, _ in handler.received] == [
        ("a@example.org", ["b@example.net", "c@example.net"]),
        ("<>", ["postmaster@example.net"]),  # aiosmtpd's spelling of the null sender
    ]
    # Line ends become CRLF on the wire and dots are unstuffed again by the receiver.
    assert handler.received[0][2] == MESSAGE.replace(b"\n", b"\r\n")
    assert handler.received[0][3] == handler.received[1][3], "one connection for both"


def test_smtp_opens_a_new_connection_every_ten_messages_for_exims_sake(smtp_server):
    """Exim only queues the 11th and later messages of one connection (its
    smtp_accept_queue_per_connection): scanned mail would wait for its next queue run."""
    controller, handler = smtp_server
    r = SmtpReinjector("127.0.0.1", controller.port, timeout=5)
    for _ in range(25):
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    r.close()
    sessions = [session for _, _, _, session in handler.received]
    runs = [len(list(group)) for _, group in itertools.groupby(sessions)]
    assert runs == [MESSAGES_PER_CONNECTION, MESSAGES_PER_CONNECTION, 5]


def test_smtp_reconnects_after_the_server_went_away(smtp_server):
    controller, handler = smtp_server
    r = SmtpReinjector("127.0.0.1", controller.port, timeout=5)
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    controller.stop()
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert err.value.temporary
    controller.start()
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)  # a fresh connection, no error
    assert len(handler.received) == 2


def test_smtp_stale_connection_is_replaced_transparently(smtp_server):
    controller, handler = smtp_server
    r = SmtpReinjector("127.0.0.1", controller.port, timeout=5)
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    controller.stop()
    controller.start()  # the kept connection is dead now; nothing had been sent on it
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert len(handler.received) == 2
    assert handler.received[0][3] != handler.received[1][3]


def test_smtp_refusals_temporary_and_permanent(smtp_server):
    controller, handler = smtp_server
    r = SmtpReinjector("127.0.0.1", controller.port, timeout=5)

    handler.rcpt_replies = {"x@example.net": "450 4.2.0 try later",
                            "y@example.net": "550 5.1.1 no such user"}
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["x@example.net", "y@example.net"], MESSAGE)
    assert err.value.temporary and not err.value.delivered
    assert set(err.value.refused) == {"x@example.net", "y@example.net"}

    handler.rcpt_replies = {"y@example.net": "550 5.1.1 no such user"}
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["y@example.net"], MESSAGE)
    assert not err.value.temporary

    # Partial: the others got it, and the error says so.
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net", "y@example.net"], MESSAGE)
    assert err.value.delivered == ("b@example.net",)
    assert list(err.value.refused) == ["y@example.net"] and not err.value.temporary
    assert handler.received[-1][1] == ["b@example.net"]

    handler.rcpt_replies = {}
    handler.data_reply = "451 4.3.0 queue full"
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert err.value.temporary
    handler.data_reply = "554 5.6.0 no"
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert not err.value.temporary
    handler.data_reply = "250 OK"
    handler.mail_reply = "553 5.1.8 bad sender"
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert not err.value.temporary
    handler.mail_reply = None
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)  # the connection still works
    assert handler.received[-1][1] == ["b@example.net"]


def test_smtp_nothing_listening_is_temporary():
    r = SmtpReinjector("127.0.0.1", free_port(), timeout=2)
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert err.value.temporary


def fake_sendmail(tmp_path: Path, code: int = 0) -> Path:
    script = tmp_path / "sendmail"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > "{tmp_path}/argv"
cat > "{tmp_path}/stdin"
exit {code}
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_sendmail_arguments_and_message(tmp_path):
    r = SendmailReinjector(fake_sendmail(tmp_path))
    r.deliver("a@example.org", ["b@example.net", "-oi@example.net"], MESSAGE)
    assert (tmp_path / "argv").read_text().split("\n")[:-1] == [
        "-G", "-i", "-f", "a@example.org", "--", "b@example.net", "-oi@example.net"]
    assert (tmp_path / "stdin").read_bytes() == MESSAGE
    r.deliver("", ["b@example.net"], MESSAGE)
    assert (tmp_path / "argv").read_text().split("\n")[3] == "<>"


@pytest.mark.parametrize("code,temporary", [(75, True), (1, False), (69, False)])
def test_sendmail_exit_codes(tmp_path, code, temporary):
    r = SendmailReinjector(fake_sendmail(tmp_path, code))
    with pytest.raises(ReinjectError) as err:
        r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    assert err.value.temporary is temporary
    assert f"exit {code}" in str(err.value)


def test_sendmail_missing_program_is_temporary(tmp_path):
    with pytest.raises(ReinjectError) as err:
        SendmailReinjector(tmp_path / "nothing").deliver("a@x", ["b@y"], MESSAGE)
    assert err.value.temporary


def test_dir_sink_writes_message_and_envelope(tmp_path):
    r = DirReinjector(tmp_path / "sink")
    r.deliver("a@example.org", ["b@example.net"], MESSAGE)
    r.deliver("", ["c@example.net", "d@example.net"], b"x")
    envs = sorted((tmp_path / "sink").glob("*.env"))
    assert len(envs) == 2 and not list((tmp_path / "sink").glob(".*"))
    assert json.loads(envs[0].read_text()) == {"sender": "a@example.org",
                                               "recipients": ["b@example.net"]}
    assert envs[0].with_suffix(".eml").read_bytes() == MESSAGE
    assert json.loads(envs[1].read_text())["recipients"] == ["c@example.net", "d@example.net"]


def test_dir_sink_unwritable_is_temporary(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ReinjectError) as err:
        DirReinjector(tmp_path / "file" / "sink").deliver("a@x", ["b@y"], b"x")
    assert err.value.temporary


def test_from_setting():
    smtp = from_setting("smtp:127.0.0.1:10026")
    assert isinstance(smtp, SmtpReinjector) and (smtp.host, smtp.port) == ("127.0.0.1", 10026)
    v6 = from_setting("smtp:[::1]:25")
    assert (v6.host, v6.port) == ("::1", 25)
    assert isinstance(from_setting("sendmail:/usr/sbin/sendmail"), SendmailReinjector)
    assert isinstance(from_setting("dir:/tmp/x"), DirReinjector)
    with pytest.raises(ValueError):
        from_setting("lmtp:/x")
