"""The milter over its socket, driven packet by packet as an MTA drives it: negotiation, the
policy's answers (accept with headers, reject with the group's text, discard, warn, cure),
recipients of a second group deferred at RCPT, and abuse (malformed packets, a connection
dropped mid-body) that closes one connection and nothing else."""

from __future__ import annotations

import email
import email.policy
import io
import os
import socket
import struct
import threading
import zipfile

from lmsav.milter import protocol
from lmsav.milter.policy import MIXED_GROUPS_REPLY
from tests.conftest import EICAR
from tests.milter.conftest import (
    ADMIN,
    Client,
    added_headers,
    build,
    infected,
    modifications,
)

SENDER = "alice@senders.test"


def transaction(milter, recipients, raw, chunk=65535):
    client = milter.client()
    try:
        client.connect()
        assert client.mail(SENDER).command == b"c"
        for r in recipients:
            assert client.rcpt(r).command == b"c"
        return client.message(raw, chunk)
    finally:
        client.close()


def test_negotiation_asks_for_header_body_and_recipient_changes_and_skips_nothing(milter):
    client = milter.client()
    try:
        version, actions, steps = client.negotiate()
    finally:
        client.close()
    assert version == 6
    wanted = (protocol.ADD_HEADERS | protocol.CHANGE_HEADERS | protocol.CHANGE_BODY
              | protocol.DEL_RCPT | protocol.QUARANTINE_ACTION)
    assert actions == wanted
    assert steps == 0  # every step is answered: headers and body always reach the milter


def test_negotiation_never_asks_for_more_than_the_mta_offers(milter):
    client = milter.client()
    try:
        reply = client.ask(protocol.OPTNEG, struct.pack("!III", 6, protocol.ADD_HEADERS, 0))
    finally:
        client.close()
    assert struct.unpack("!III", reply.data)[1] == protocol.ADD_HEADERS


def test_a_change_the_mta_did_not_allow_defers_the_message_instead_of_breaking_it(milter):
    """An MTA that offers only ADD_HEADERS: a clean message still gets its headers, but the
    warn group's new body cannot be applied, so the message waits (451), never passes as
    received."""
    def offering_headers_only(recipient, raw):
        client = milter.client()
        try:
            client.ask(protocol.OPTNEG, struct.pack("!III", 6, protocol.ADD_HEADERS, 0))
            assert client.ask(protocol.CONNECT, b"c.test\x004\x30\x39127.0.0.1\x00").command \
                == b"c"
            assert client.mail(SENDER).command == b"c"
            assert client.rcpt(recipient).command == b"c"
            return client.message(raw)
        finally:
            client.close()

    clean = offering_headers_only("bob@clean.test", build())
    assert clean[-1].command == protocol.ACCEPT and "X-AV-Status" in added_headers(clean)
    warned = offering_headers_only("dave@warn.test", infected(to="dave@warn.test"))
    [reply] = warned
    assert reply.command == protocol.REPLYCODE and reply.data.startswith(b"451 ")


def test_clean_message_is_accepted_with_av_headers_and_body_untouched(milter):
    answers = transaction(milter, ["bob@clean.test"], build())
    assert answers[-1].command == protocol.ACCEPT
    headers = added_headers(answers)
    assert headers["X-AV-Status"] == "clean"
    assert "X-AV-Checked" in headers
    assert protocol.REPLBODY not in modifications(answers)


def test_eicar_is_rejected_with_the_groups_reply_and_its_threat(milter):
    answers = transaction(milter, ["bob@clean.test"], infected())
    [reply] = answers
    assert reply.command == protocol.REPLYCODE
    text = reply.data.rstrip(b"\0").decode()
    assert text.startswith("550 5.7.1 Refused here: ")
    assert "Eicar-Test-Signature" in text
    # The administrator's notice went out; no status notice to the sender (the reply says it).
    notices = milter.notice_files()
    assert any(ADMIN.encode() in n for n in notices)
    assert not any(b"multipart/report" in n for n in notices)


def test_dropped_mail_is_discarded(milter):
    answers = transaction(milter, ["carol@drop.test"], infected(to="carol@drop.test"))
    assert [p.command for p in answers] == [protocol.DISCARD]


def test_warned_mail_gets_its_new_body_content_type_and_subject_prefix(milter):
    raw = infected(to="dave@warn.test", subject="invoice")
    answers = transaction(milter, ["dave@warn.test"], raw)
    assert answers[-1].command == protocol.ACCEPT
    headers = added_headers(answers)
    assert headers["Subject"] == "[VIRUS] invoice"
    assert headers["X-AV-Status"] == "infected"
    body = b"".join(p.data for p in answers if p.command == protocol.REPLBODY)
    assert body and b"EICAR" not in body
    # With the MTA's changes applied the message is the warning, and its MIME headers say so:
    # the multipart Content-Type and the old transfer encoding were replaced too.
    rebuilt = apply(raw, answers)
    msg = email.message_from_bytes(rebuilt, policy=email.policy.default)
    assert msg.get_content_type() == "text/plain"
    assert msg["Content-Transfer-Encoding"] == "8bit"
    assert "replaced by lmsav" in msg.get_content()
    assert "e.com: infected (Eicar-Test-Signature)" in msg.get_content()
    assert b"EICAR" not in rebuilt


def test_cured_mail_loses_the_infected_member_only(milter):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "keep me\n")
        archive.writestr("eicar.com", EICAR)
    raw = build(buffer.getvalue(), to="erin@cure.test")
    answers = transaction(milter, ["erin@cure.test"], raw)
    assert answers[-1].command == protocol.ACCEPT
    rebuilt = apply(raw, answers)
    msg = email.message_from_bytes(rebuilt, policy=email.policy.default)
    assert msg.get_body(("plain",)).get_content().startswith("Hello.")
    [attachment] = list(msg.iter_attachments())
    members = zipfile.ZipFile(io.BytesIO(attachment.get_content())).namelist()
    assert members == ["notes.txt"]


def test_a_large_body_spills_and_is_still_scanned(milter):
    # The fixture keeps 4 KiB in memory; this body is sent in 1 KiB chunks and spills.
    text = "Hello.\n" + ("x" * 70 + "\n") * 1500
    raw = build(text=text)
    answers = transaction(milter, ["bob@clean.test"], raw, chunk=1024)
    assert answers[-1].command == protocol.ACCEPT
    raw = build(EICAR, text=text)
    answers = transaction(milter, ["bob@clean.test"], raw, chunk=1024)
    assert answers[-1].command == protocol.REPLYCODE


def test_recipients_of_a_second_group_are_deferred_at_rcpt(milter):
    client = milter.client()
    try:
        client.connect()
        client.mail(SENDER)
        assert client.rcpt("bob@clean.test").command == b"c"
        assert client.rcpt("carl@clean.test").command == b"c"  # same group: taken
        deferred = client.rcpt("dave@warn.test")
        assert deferred.command == protocol.REPLYCODE
        assert deferred.data.rstrip(b"\0").decode() == MIXED_GROUPS_REPLY
        assert deferred.data.startswith(b"451 4.7.1 ")
        answers = client.message(build())
        assert answers[-1].command == protocol.ACCEPT
        # The next transaction on the same connection starts afresh: the other group is taken.
        client.mail(SENDER)
        assert client.rcpt("dave@warn.test").command == b"c"
    finally:
        client.close()


def test_two_messages_on_one_connection_and_abort_in_between(milter):
    client = milter.client()
    try:
        client.connect()
        client.mail(SENDER)
        client.rcpt("bob@clean.test")
        assert client.ask(protocol.DATA).command == b"c"
        client.send(protocol.ABORT)
        client.mail(SENDER)
        client.rcpt("bob@clean.test")
        assert client.message(infected())[-1].command == protocol.REPLYCODE
        client.mail(SENDER)
        client.rcpt("bob@clean.test")
        assert client.message(build())[-1].command == protocol.ACCEPT
    finally:
        client.close()


def test_an_internal_error_tempfails(milter, monkeypatch):
    def broken(*_args, **_kw):
        raise RuntimeError("database gone")

    monkeypatch.setattr(milter.backend, "decide", broken)
    answers = transaction(milter, ["bob@clean.test"], build())
    [reply] = answers
    assert reply.command == protocol.REPLYCODE and reply.data.startswith(b"451 4.3.0 ")


def test_a_notice_that_cannot_be_sent_tempfails(milter, monkeypatch):
    def failing(_deliveries):
        raise OSError("reinjection refused")

    monkeypatch.setattr(milter.backend, "send", failing)
    [reply] = transaction(milter, ["bob@clean.test"], infected())
    assert reply.data.startswith(b"451 ")


def closed(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_malformed_packets_close_the_connection_and_the_server_lives_on(milter):
    bad = [
        struct.pack("!I", 0),  # zero length
        struct.pack("!I", 1 << 30) + b"B",  # absurd length
        protocol.encode(b"Z", b"what"),  # unknown command
        protocol.encode(protocol.OPTNEG, b"\0\0"),  # short negotiation
        protocol.encode(protocol.RCPT, b"<x@y>\0"),  # RCPT before MAIL
        protocol.encode(protocol.HEADER, b"Subject"),  # no NUL terminators
        protocol.encode(protocol.CONNECT, b"host"),  # no family
    ]
    for data in bad:
        sock = socket.create_connection(milter.address, timeout=10)
        try:
            sock.sendall(data)
            assert closed(sock), data
        finally:
            sock.close()
    assert transaction(milter, ["bob@clean.test"], build())[-1].command == protocol.ACCEPT


def spill_files(directory) -> list[str]:
    """Files under ``directory`` this process holds open (the server runs in it): a spilled
    message is an unnamed file there (O_TMPFILE), seen only through its descriptor."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory) + "/"):
            out.append(target)
    return out


def test_a_connection_dropped_mid_body_leaves_nothing_and_breaks_nothing(milter, tmp_path):
    client = milter.client()
    client.connect()
    client.mail(SENDER)
    client.rcpt("bob@clean.test")
    client.ask(protocol.DATA)
    client.ask(protocol.HEADER, b"Subject\0x\0")
    client.ask(protocol.EOH)
    client.ask(protocol.BODY, b"a" * 2000)
    assert spill_files(tmp_path) == []  # within the fixture's spill size: in memory
    client.ask(protocol.BODY, b"a" * 20000)
    assert len(spill_files(tmp_path)) == 1  # past it: a private file
    assert list(tmp_path.iterdir()) == []  # that no other process can open by name
    client.sock.sendall(struct.pack("!I", 60000) + b"B" + b"b" * 100)  # and half a packet
    client.close()
    # The session's file is closed once the server notices the end of the stream.
    for _ in range(100):
        if not spill_files(tmp_path):
            break
        threading.Event().wait(0.05)
    assert spill_files(tmp_path) == []
    assert transaction(milter, ["bob@clean.test"], infected())[-1].command == b"y"


def test_concurrent_connections_each_get_their_own_answer(milter):
    results: dict[int, bytes] = {}

    def one(i: int) -> None:
        raw = infected() if i % 2 else build()
        results[i] = transaction(milter, ["bob@clean.test"], raw)[-1].command

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert results == {i: (protocol.REPLYCODE if i % 2 else protocol.ACCEPT) for i in range(20)}


def apply(raw: bytes, answers: list[protocol.Packet]) -> bytes:
    """The message as the MTA writes it after applying the milter's changes."""
    from lmsav.milter.policy import parse_headers
    from lmsav.scanner.containers.mimeedit import header_end

    headers = parse_headers(raw)
    body = raw[header_end(raw):].lstrip(b"\r\n")
    new_body = None
    for p in answers:
        if p.command == protocol.ADDHEADER:
            name, value, _ = p.data.split(b"\0")
            headers.append((name.decode(), value.decode()))
        elif p.command == protocol.CHGHEADER:
            (index,) = struct.unpack("!I", p.data[:4])
            name, value, _ = p.data[4:].split(b"\0")
            seen = 0
            for i, (n, _v) in enumerate(headers):
                if n.lower() == name.decode().lower():
                    seen += 1
                    if seen == index:
                        headers[i] = (n, value.decode())
            headers = [(n, v) for n, v in headers if v != ""]
        elif p.command == protocol.REPLBODY:
            new_body = (new_body or b"") + p.data
    head = "".join(f"{n}: {v}\r\n" for n, v in headers).encode()
    return head + b"\r\n" + (new_body if new_body is not None else body)


__all__ = ["Client"]


def test_a_forged_av_header_is_replaced_not_duplicated(milter):
    raw = infected(to="dave@warn.test").replace(b"Subject:", b"X-AV-Status: clean\r\nSubject:", 1)
    answers = transaction(milter, ["dave@warn.test"], raw)
    changed = [p.data for p in answers if p.command == protocol.CHGHEADER]
    assert struct.pack("!I", 1) + b"X-AV-Status\0infected\0" in changed
    added = [p.data.split(b"\0")[0] for p in answers if p.command == protocol.ADDHEADER]
    assert b"X-AV-Status" not in added
    assert email.message_from_bytes(apply(raw, answers)).get_all("X-AV-Status") == ["infected"]


def test_a_message_over_the_size_limit_is_deferred_unscanned(milter):
    raw = build(text="Hello.\n" + ("y" * 70 + "\n") * 20000)  # 1.4 MB, the fixture's limit 1 MiB
    [reply] = transaction(milter, ["bob@clean.test"], raw)
    assert reply.command == protocol.REPLYCODE and reply.data.startswith(b"452 4.3.4 ")
