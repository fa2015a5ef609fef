"""lmsav behind a real Postfix through its SMTP/LMTP front door: `lmsav setup postfix` with the
smtp (default) or lmtp transport to `lmsav spool listen`, then mail over SMTP to Maildirs.

Each stack is the one tests/mta/conftest.py builds, but set up for the listener on a free port:
with the smtp transport the listener runs inside `lmsav spool watch` (``[spool] listen``, the
normal service), with the lmtp transport as a separate `lmsav spool listen` beside a watcher
that only drains the spool. The crash tests SIGKILL the listener while Postfix is sending it a
message body: Postfix keeps the message, and delivers it once the listener is back.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import smtplib
import threading
import time
import warnings

import pytest

from lmsav.spool.nqueue import SUBDIRS
from tests.mta.conftest import (
    ADMIN,
    SENDER,
    ListenerStack,
    PrivatePostfix,
    Stack,
    _need_root,
    assert_unchanged_but_av_headers,
    attachment_names,
    build_listener_stack,
    build_message,
    have_postfix,
    infected_message,
    parsed,
    token,
    wait_port,
    zip_members,
)

pytestmark = pytest.mark.integration

MAX_KILLS = 4


# -- the stack, set up for the listener ---------------------------------------------------------

@pytest.fixture(scope="module", params=["smtp", "lmtp"])
def stack(request):
    """A private Postfix handing mail to lmsav's listener: over SMTP to the listener the
    watcher runs, or over LMTP to a separate `lmsav spool listen`."""
    _need_root()
    if not have_postfix():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    transport = request.param
    built = build_listener_stack("postfix", PrivatePostfix, transport,
                                 separate_listener=transport == "lmtp")
    try:
        built.start()
        yield built
    finally:
        built.stop()


# -- killing the listener in the middle of a message --------------------------------------------

def _tcp_sockets() -> list[tuple[int, int, str, int, int]]:
    """(local port, remote port, state, receive queue bytes, inode) of every IPv4 TCP socket."""
    out = []
    with open("/proc/net/tcp") as fp:
        next(fp)
        for line in fp:
            fields = line.split()
            local, remote, state, queues, inode = fields[1], fields[2], fields[3], fields[4], \
                fields[9]
            out.append((int(local.split(":")[1], 16), int(remote.split(":")[1], 16), state,
                        int(queues.split(":")[1], 16), int(inode)))
    return out


def unread_bytes(port: int) -> list[int]:
    """What each established connection to ``port`` has received and the server not read."""
    return [rx for local, _remote, state, rx, _inode in _tcp_sockets()
            if local == port and state == "01"]


def listening_pids(port: int) -> list[int]:
    """The processes holding the socket that listens on 127.0.0.1:``port``."""
    inodes = {inode for local, _r, state, _rx, inode in _tcp_sockets()
              if local == port and state == "0A"}
    targets = {f"socket:[{inode}]" for inode in inodes}
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{entry}/fd")
            if any(os.readlink(f"/proc/{entry}/fd/{fd}") in targets for fd in fds):
                pids.append(int(entry))
        except OSError:
            continue
    return pids


def listener_pid(stack: ListenerStack, timeout: float = 20.0) -> int:
    """The process that serves the listener: the separate `lmsav spool listen`, or the one
    holding the listening socket other than the watcher itself."""
    if stack.listener is not None:
        return stack.listener.proc.pid
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [pid for pid in listening_pids(stack.listen_port) if pid != stack.watcher.proc.pid]
        if len(pids) == 1:
            return pids[0]
        time.sleep(0.1)
    raise AssertionError(f"no single listener process on {stack.listen_port}: "
                         f"{listening_pids(stack.listen_port)}\n{stack.debug()}")


def kill_in_the_middle_of_data(pid: int, port: int, send, timeout: float = 60.0) -> int:
    """Stop the listener, ``send()`` the message to the MTA (in a thread), and run the listener
    in short steps (SIGCONT, SIGSTOP, look) until a connection to ``port`` holds more unread
    bytes than any command could make — the MTA is sending a message body the listener has not
    finished reading, so it cannot have answered it — then SIGKILL it. Stopped from the start,
    the listener cannot take a fast MTA's whole transfer between two looks. Returns the unread
    bytes seen."""
    failures: list[BaseException] = []

    def sender():
        try:
            send()
        except BaseException as err:  # noqa: BLE001 - raised by the caller's thread
            failures.append(err)

    os.kill(pid, signal.SIGSTOP)
    thread = threading.Thread(target=sender, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            time.sleep(0.02)  # the MTA fills the socket meanwhile
            unread = max(unread_bytes(port), default=0)
            if unread > 16384:
                os.kill(pid, signal.SIGKILL)
                thread.join(30)
                if failures:
                    raise failures[0]
                return unread
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.003)
            os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        raise AssertionError(f"the listener {pid} exited on its own") from None
    os.kill(pid, signal.SIGCONT)
    thread.join(30)
    raise AssertionError(f"no message body in flight to port {port} after {timeout} s")


def big_message(tok: str, to: str, megabytes: int = 6) -> bytes:
    """A message too big to cross the socket in one step of the listener (still under
    Postfix's default message_size_limit once encoded)."""
    return build_message(tok, ("big.bin", random.Random(tok).randbytes(megabytes << 20),
                               "application/octet-stream"), to=to)


def spool_holds(stack: Stack, tok: str) -> list[str]:
    """Spool files (any sub-directory) holding ``tok``."""
    found = []
    for sub in SUBDIRS:
        folder = stack.spool / sub
        if folder.is_dir():
            for path in folder.iterdir():
                try:
                    if path.is_file() and tok.encode() in path.read_bytes():
                        found.append(f"{sub}/{path.name}")
                except OSError:
                    continue
    return found


def postfix_queue_id(stack: Stack, tok: str, timeout: float = 30.0) -> str:
    """The queue id cleanup(8) gave the message with ``tok`` in its Message-ID."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in stack.mta.log().splitlines():
            if f"message-id=<{tok}@senders.test>" in line and "/cleanup[" in line:
                return line.split(": ")[1] if ": " in line else ""
        time.sleep(0.1)
    raise AssertionError(f"Postfix logged no message-id <{tok}@senders.test>\n{stack.debug()}")


# -- mail through Postfix and the listener ------------------------------------------------------

def text_of(raw: bytes) -> str:
    return parsed(raw).get_body(("plain",)).get_content()


def by_subject(messages: list[bytes], start: str) -> bytes:
    [found] = [m for m in messages if str(parsed(m)["Subject"]).startswith(start)]
    return found


def test_setup_hands_mail_to_the_listener(stack):
    """main.cf and master.cf point Postfix's content filter at the listener's port."""
    content_filter = stack.mta.postconf("-h", "content_filter").strip()
    # lmtp(8) takes its next hop as inet:host:port.
    prefix = "inet:" if stack.transport == "lmtp" else ""
    assert content_filter == f"lmsav:{prefix}[127.0.0.1]:{stack.listen_port}"
    service = stack.mta.postconf("-M", "lmsav/unix").split()
    assert service[:8] == ["lmsav", "unix", "-", "-", "n", "-", "10", stack.transport]


def test_clean_mail_arrives_unchanged_but_for_the_av_headers(stack):
    tok = token()
    sent = build_message(tok, ("data.bin", bytes(range(256)) * 40, "application/octet-stream"),
                         text="Line one.\n.leading dot\n..two dots\n\nLast line, no more.\n")
    stack.send(sent, ["bob@clean.test"])
    [got] = stack.wait("bob@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    assert parsed(got)["Return-Path"] == f"<{SENDER}>"
    # It went through the listener at the first attempt (the transport logged the listener
    # as its relay), and arrived once.
    queue_id = postfix_queue_id(stack, tok)
    stack.log_lines(queue_id, f"relay=127.0.0.1[127.0.0.1]:{stack.listen_port}",
                      "status=sent")
    assert not [line for line in stack.mta.log().splitlines()
                if queue_id in line and "status=deferred" in line], stack.debug()
    time.sleep(2)
    assert len(stack.mail.messages("bob@clean.test", tok)) == 1, stack.debug()


def test_a_bounce_keeps_its_empty_sender(stack):
    tok = token()
    sent = build_message(tok, subject="Undelivered Mail Returned to Sender")
    stack.send(sent, ["carol@clean.test"], sender="")
    [got] = stack.wait("carol@clean.test", tok)
    assert parsed(got)["Return-Path"] == "<>"
    assert_unchanged_but_av_headers(sent, got)


def test_every_recipient_of_one_message_gets_it_once(stack):
    tok = token()
    rcpts = [f"{local}@{domain}" for local in ("alice", "bob", "carol")
             for domain in ("clean.test", "senders.test")]
    sent = build_message(tok, to=", ".join(rcpts))
    stack.send(sent, rcpts)
    for rcpt in rcpts:
        [got] = stack.wait(rcpt, tok)
        assert_unchanged_but_av_headers(sent, got)


def test_infected_mail_is_handled_by_each_groups_policy(stack):
    tok = token()
    rcpts = ["bob@drop.test", "carol@warn.test", "dave@cure.test", "alice@reject.test",
             "alice@clean.test"]
    stack.send(infected_message(tok, ", ".join(rcpts)), rcpts)
    # One admin notice about every group the message met.
    [admin] = stack.wait(ADMIN, tok)
    assert "Eicar-Test-Signature" in text_of(admin)
    [line] = [ln for ln in text_of(admin).splitlines() if ln.strip().startswith("Group:")]
    assert sorted(line.split(":", 1)[1].replace(",", " ").split()) == \
        ["cure", "default", "drop", "warn"]
    # drop: the recipient is told, and gets nothing of the message.
    [notice] = stack.wait("bob@drop.test", tok)
    assert str(parsed(notice)["Subject"]).startswith("A message to you")
    assert b"EICAR" not in notice and attachment_names(notice) == []
    # warn: the message is replaced by a warning.
    warned = by_subject(stack.wait("carol@warn.test", tok, count=2), "report")
    assert parsed(warned)["X-AV-Status"] == "infected"
    assert parsed(warned)["X-AV-Threats"] == "Eicar-Test-Signature"
    assert b"EICAR" not in warned and "Eicar-Test-Signature" in text_of(warned)
    # cure: the infected member is cut out of the zip.
    cured = by_subject(stack.wait("dave@cure.test", tok, count=2), "report")
    assert attachment_names(cured) == ["notes.txt", "files.zip"]
    assert zip_members(cured, "files.zip") == ["clean.txt"]
    assert b"EICAR" not in cured
    # The default group rejects: after the queue, a notice to the sender for both recipients.
    [dsn] = stack.wait(SENDER, tok)
    assert parsed(dsn)["Return-Path"] == "<>"
    assert parsed(dsn).get_content_type() == "multipart/report"
    assert "<alice@reject.test>: 550" in dsn.decode() and "<alice@clean.test>: 550" in dsn.decode()
    for rcpt in rcpts:
        assert all(b"EICAR" not in m for m in stack.mail.messages(rcpt, tok))


def test_sigkill_of_the_listener_mid_message_loses_nothing(stack):
    """The listener dies while Postfix sends it a body: Postfix logs the lost connection,
    keeps the message in its queue and delivers it, once, when the listener is back."""
    tok = token()
    pid = listener_pid(stack)
    sent = big_message(tok, "dave@clean.test")
    unread = kill_in_the_middle_of_data(pid, stack.listen_port,
                                        lambda: stack.send(sent, ["dave@clean.test"]))
    queue_id = postfix_queue_id(stack, tok)
    [deferred, *_] = stack.log_lines(queue_id, "status=deferred")
    assert f"relay=127.0.0.1[127.0.0.1]:{stack.listen_port}" in deferred, deferred
    assert "lost connection" in deferred and "while sending message body" in deferred, deferred
    print(f"killed listener {pid} with {unread} bytes unread; Postfix: "
          f"{deferred.split('status=deferred', 1)[1].strip()}")
    # The half-received message left nothing the watcher could deliver.
    assert [name for name in spool_holds(stack, tok) if not name.startswith("tmp/")] == []
    assert stack.mail.messages("dave@clean.test", tok) == []
    if stack.listener is not None:  # a separate `lmsav spool listen`: start it again
        stack.listener.proc.wait(10)
        stack.listener.proc = None
        stack.listener.start()
    # else the watcher starts its listener again by itself.
    wait_port(stack.listen_port, timeout=30)
    stack.mta.flush()
    [got] = stack.wait("dave@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    stack.log_lines(queue_id, "status=sent",
                      f"relay=127.0.0.1[127.0.0.1]:{stack.listen_port}")


def test_sigkill_of_the_listener_while_messages_flow_loses_none(stack):
    """Repeated SIGKILLs of the listener while a client sends a stream of messages: every one
    arrives; a kill between the listener's fsync and its reply may make one duplicate."""
    flood_with_kills(stack)


def flood_with_kills(stack: ListenerStack) -> None:
    """Send a stream of messages (LMSAV_MTA_FLOOD, 200) to one mailbox while the listener is
    SIGKILLed a few times; every message must arrive, with at most one duplicate per message."""
    count = int(os.environ.get("LMSAV_MTA_FLOOD", "200"))
    tok = token()
    ids = [f"<{tok}.{n}@senders.test>" for n in range(count)]
    rcpt = "carol@senders.test"
    kills = 0
    stop = threading.Event()

    def killer():
        # The watcher restarts a listener that dies young after 2, 4, 8 … s: a few kills,
        # each some time after the listener is back, while Postfix delivers to it.
        nonlocal kills
        rng = random.Random(tok)
        while kills < MAX_KILLS and not stop.is_set():
            try:
                wait_port(stack.listen_port, timeout=70)
                pid = listener_pid(stack, timeout=10)
            except (AssertionError, TimeoutError):
                continue
            if stop.wait(rng.uniform(0.2, 1.0)):
                break
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            kills += 1
            if stack.listener is not None:
                stack.listener.proc.wait(10)
                stack.listener.proc = None
                stack.listener.start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=60) as smtp:
            for n in range(count):
                assert not smtp.sendmail(SENDER, [rcpt], build_message(f"{tok}.{n}", to=rcpt))
        deadline = time.monotonic() + max(120.0, count * 0.5)
        while time.monotonic() < deadline:
            if len(stack.mail.messages(rcpt, tok)) >= count:
                break
            if time.monotonic() > deadline - 60:
                stop.set()  # stop killing near the end, let the rest through
            stack.mta.flush()
            time.sleep(1)
    finally:
        stop.set()
        thread.join(15)
        if stack.listener is not None and (stack.listener.proc is None
                                           or stack.listener.proc.poll() is not None):
            stack.listener.proc = None
            stack.listener.start()
    time.sleep(2)
    got = [str(parsed(m)["Message-ID"]) for m in stack.mail.messages(rcpt, tok)]
    missing = sorted(set(ids) - set(got))
    duplicates = len(got) - len(set(got))
    print(f"{count} messages over {stack.transport}, {kills} SIGKILLs of the listener: "
          f"{len(missing)} lost, {duplicates} duplicates")
    assert kills >= 1
    assert not missing, f"{len(missing)} of {count} lost after {kills} kills\n{stack.debug()}"
    # A kill can catch every session the MTA has open (lmsav_destination_concurrency_limit)
    # between the fsync and the 250: each such message comes again once.
    copies = collections.Counter(got)
    assert max(copies.values()) <= 2, f"a message arrived {max(copies.values())} times"
    assert duplicates <= kills * 10, f"{duplicates} duplicates after {kills} kills"
    if duplicates:
        warnings.warn(f"{duplicates} duplicate(s) of {count} messages after {kills} SIGKILLs "
                      "of the listener")
