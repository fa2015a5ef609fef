"""`lmsav spool listen`, the spool's SMTP/LMTP front door, driven as an MTA's content filter
transport drives it (smtplib, raw sockets) and as a misbehaving client would."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.spool.listener import Address, ListenError, parse_listen
from lmsav.spool.nqueue import Spool

MESSAGE = b"From: ann@example.org\r\nSubject: hello\r\n\r\n.leading dot\r\nbody\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Listener:
    """One `lmsav spool listen` process with its own configuration and spool."""

    def __init__(self, tmp_path: Path, extra: str = "", listen: list[str] | None = None):
        self.spool_dir = tmp_path / "spool"
        self.port = free_port()
        self.listen = listen or [f"smtp:127.0.0.1:{self.port}"]
        self.config = tmp_path / "lmsav.toml"
        self.config.write_text(f'[spool]\ndir = "{self.spool_dir}"\n{extra}')
        self.log = tmp_path / "listen.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Listener:
        args = [sys.executable, "-m", "lmsav", "--config", str(self.config), "spool", "listen"]
        for address in self.listen:
            args += ["--listen", address]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            if "listening on" in self.log.read_text().split("stopped:")[-1] and self._ready():
                return self
            time.sleep(0.05)
        raise AssertionError(f"listener did not start: {self.log.read_text()}")

    def _ready(self) -> bool:
        first = parse_listen(self.listen[0])
        if first.path:
            return Path(first.path).is_socket()
        try:
            socket.create_connection((first.host, first.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self, sig=signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def entries(self) -> list:
        spool = Spool(self.spool_dir)
        return [spool.get(entry_id) for entry_id in spool.pending(now=1e12)]

    def message(self, entry) -> bytes:
        return Spool(self.spool_dir).message(entry)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@pytest.fixture
def listener(tmp_path):
    running = Listener(tmp_path).start()
    yield running
    running.stop()


def smtp(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, timeout=30)
    client.ehlo("mta.example.org")
    return client


def raw(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    assert sock.recv(4096).startswith(b"220 ")
    return sock


def read_replies(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` complete replies (a multi-line reply counts once)."""
    data, replies = b"", []
    while len(replies) < count:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {replies}"
        data += chunk
        while b"\r\n" in data:
            line, data = data.split(b"\r\n", 1)
            if line[3:4] != b"-":
                replies.append(line)
    return replies


# -- what an MTA does ----------------------------------------------------------------------------

def test_a_message_is_on_disk_in_new_with_its_envelope_before_250(listener):
    client = smtp(listener.port)
    code, reply = client.ehlo("mta.example.org")
    assert b"PIPELINING" in reply and b"SIZE 104857600" in reply and b"8BITMIME" in reply
    assert not reply.startswith(socket.gethostname().encode())  # Postfix's loop check
    client.mail("ann@example.org")
    client.rcpt("bob@example.org")
    client.rcpt("carl@example.org")
    code, reply = client.data(MESSAGE)
    assert code == 250
    entry_id = reply.decode().rsplit(" ", 1)[1]
    [entry] = listener.entries()
    assert entry.id == entry_id
    assert entry.envelope.sender == "ann@example.org"
    assert entry.envelope.recipients == ("bob@example.org", "carl@example.org")
    # Stored as the pipe gives it: LF line ends, the doubled leading dot undone.
    assert listener.message(entry) == (b"From: ann@example.org\nSubject: hello\n\n"
                                       b".leading dot\nbody\n")
    client.quit()
    assert not os.listdir(listener.spool_dir / "tmp")


def test_many_messages_on_one_connection_and_a_bounce_sender(listener):
    client = smtp(listener.port)
    for n in range(5):
        client.sendmail("" if n == 0 else f"s{n}@example.org", [f"r{n}@example.org"],
                        b"Subject: %d\r\n\r\nbody\r\n" % n)
    client.quit()
    entries = sorted(listener.entries(), key=lambda e: e.id)
    assert [e.envelope.sender for e in entries] == ["", "s1@example.org", "s2@example.org",
                                                    "s3@example.org", "s4@example.org"]


def test_pipelined_commands_are_answered_in_order(listener):
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\n")
    read_replies(sock, 1)
    batch = b"".join(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                     b"Subject: p\r\n\r\nx\r\n.\r\n" for _ in range(20))
    sock.sendall(batch + b"QUIT\r\n")
    replies = read_replies(sock, 20 * 4 + 1)
    assert [r[:3] for r in replies] == [b"250", b"250", b"354", b"250"] * 20 + [b"221"]
    sock.close()
    assert len(listener.entries()) == 20


def test_postfix_xforward_gives_the_entry_its_queue_id_and_client(listener):
    client = smtp(listener.port)
    code, reply = client.ehlo("mta")
    assert b"XFORWARD NAME ADDR IDENT" in reply
    assert client.docmd("XFORWARD", "NAME=mx.example.org ADDR=192.0.2.7 PROTO=ESMTP")[0] == 250
    assert client.docmd("XFORWARD", "IDENT=4Xy+2B1 HELO=[UNAVAILABLE]")[0] == 250
    client.sendmail("a@example.org", ["b@example.org"], MESSAGE)
    client.sendmail("a@example.org", ["c@example.org"], MESSAGE)  # attributes do not carry over
    client.mail("a@example.org")
    assert client.docmd("XFORWARD", "ADDR=192.0.2.8")[0] == 503
    client.rset()
    assert client.docmd("XFORWARD", "COLOR=blue")[0] == 501
    client.quit()
    first, second = sorted(listener.entries(), key=lambda e: e.id)
    assert (first.queue_id, first.envelope.client) == ("4Xy+1", "192.0.2.7 mx.example.org")
    assert (second.queue_id, second.envelope.client) == ("", "")


def test_lmtp_answers_once_per_recipient_over_a_unix_socket(tmp_path):
    path = tmp_path / "lmtp.sock"
    running = Listener(tmp_path, listen=[f"lmtp:unix:{path}"]).start()
    try:
        assert path.is_socket() and path.stat().st_mode & 0o777 == 0o666
        client = smtplib.LMTP(str(path), timeout=30)
        assert client.docmd("EHLO", "mta")[0] == 500  # LMTP has LHLO only
        assert client.ehlo("mta")[0] == 250  # smtplib's LMTP sends LHLO
        client.mail("ann@example.org")
        client.rcpt("bob@example.org")
        client.rcpt("carl@example.org")
        client.rcpt("dora@example.org")
        code, _ = client.data(MESSAGE)
        assert code == 250
        # The two further replies the LMTP client reads after the first.
        assert client.getreply()[0] == 250 and client.getreply()[0] == 250
        client.quit()
        [entry] = running.entries()
        assert len(entry.envelope.recipients) == 3
    finally:
        running.stop()
    assert not path.exists()


def test_long_lines_and_8bit_and_utf8_addresses_are_kept(listener):
    long_line = b"x" * 300_000
    body = b"Subject: \xc3\xbc\r\n\r\n" + long_line + b"\r\n\xff\xfe end\r\n"
    client = smtp(listener.port)
    client.sendmail("jos\u00e9@example.org", ["m\u00fcller@example.org"], body,
                    mail_options=["SMTPUTF8", "BODY=8BITMIME"])
    client.quit()
    [entry] = listener.entries()
    assert entry.envelope.recipients == ("m\u00fcller@example.org",)
    assert listener.message(entry) == body.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("data, stored", [
    (b".\r\n", b""),  # an empty message
    (b"..\r\n.\r\n", b".\n"),
    (b"\r\n.\r\n", b"\n"),
    (b"\r\n\r\n.\r\n", b"\n\n"),
    (b".x\r\n.\r\n", b"x\n"),
    (b"...\r\n..\r\n.\r\n", b"..\n.\n"),
    (b"a\r\n.\r\n", b"a\n"),
    (b"a\rb\nc\r\n.\r\n", b"a\rb\nc\n"),  # bare CR and LF are data
    (b"no final newline.\r\n", None),  # not the end: the "." must start a line
])
def test_where_the_data_ends_and_what_is_unstuffed(listener, data, stored):
    sock = raw(listener.port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    read_replies(sock, 4)
    for byte in data:  # one byte per segment where the network allows
        sock.send(bytes([byte]))
    if stored is None:
        sock.settimeout(1)
        with pytest.raises(TimeoutError):
            sock.recv(100)
        sock.sendall(b"\r\n.\r\n")
        sock.settimeout(30)
        stored = b"no final newline.\n\n"  # the line, then an empty one
    [reply] = read_replies(sock, 1)
    assert reply.startswith(b"250 ")
    sock.close()
    [entry] = listener.entries()
    assert listener.message(entry) == stored


def test_dot_lines_across_the_read_pieces_of_a_large_message(listener):
    import random

    rng = random.Random(5)
    lines = []
    while sum(len(line) + 2 for line in lines) < 600_000:  # many 64 KiB pieces
        kind = rng.randrange(6)
        if kind == 0:
            lines.append(b"." * rng.randrange(1, 4) + b"x" * rng.randrange(0, 3))
        elif kind == 1:
            lines.append(b"")
        else:
            lines.append(b"y" * rng.randrange(1, 3000))
    body = b"".join(line + b"\r\n" for line in lines)
    client = smtp(listener.port)
    client.sendmail("a@example.org", ["b@example.org"], body)  # smtplib doubles the dots
    client.quit()
    [entry] = listener.entries()
    assert listener.message(entry) == body.replace(b"\r\n", b"\n")


# -- refusals ------------------------------------------------------------------------------------

def test_over_the_size_limit_is_deferred_by_default_and_memory_stays_bounded(tmp_path):
    running = Listener(tmp_path, 'max_message_size = "1M"\n').start()
    try:
        before = running.rss_kib()
        sock = raw(running.port)
        sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n"
                     b"DATA\r\n")
        assert [r[:3] for r in read_replies(sock, 4)] == [b"250", b"250", b"250", b"354"]
        line = b"y" * 998 + b"\r\n"
        chunk = line * 1000  # 1 MB
        for _ in range(100):  # 100 MB
            sock.sendall(chunk)
        sock.sendall(b".\r\n")
        [reply] = read_replies(sock, 1)
        assert reply.startswith(b"452 4.3.4")
        grown = running.rss_kib() - before
        assert grown < 20 * 1024, f"listener grew by {grown} KiB"
        # The connection stays usable for the next message.
        sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                     b"small\r\n.\r\n")
        assert [r[:3] for r in read_replies(sock, 4)] == [b"250", b"250", b"354", b"250"]
        sock.close()
        assert len(running.entries()) == 1
        assert not os.listdir(running.spool_dir / "tmp")
    finally:
        running.stop()


def test_oversize_reject_and_a_declared_size_refused_at_mail(tmp_path):
    running = Listener(tmp_path, 'max_message_size = "10K"\noversize = "reject"\n').start()
    try:
        client = smtp(running.port)
        assert client.mail("a@example.org", ["SIZE=20000"])[0] == 552
        client.rset()
        client.mail("a@example.org")
        client.rcpt("b@example.org")
        code, reply = client.data(b"Subject: big\r\n\r\n" + b"z" * 20_000 + b"\r\n")
        assert (code, reply[:5]) == (552, b"5.3.4")
        client.quit()
        assert running.entries() == []
    finally:
        running.stop()


def test_a_spool_that_cannot_be_written_gets_4xx_and_keeps_nothing(listener):
    tmp_dir = listener.spool_dir / "tmp"
    os.rmdir(tmp_dir)
    tmp_dir.write_text("not a directory")  # every new entry fails, for root too
    try:
        client = smtp(listener.port)
        client.mail("a@example.org")
        client.rcpt("b@example.org")
        code, reply = client.data(MESSAGE)
        assert code == 451 and reply.startswith(b"4.3.0") and b"spool" in reply
        client.quit()
    finally:
        tmp_dir.unlink()
        tmp_dir.mkdir()
    assert listener.entries() == []


def test_bad_envelopes_and_garbage_get_errors_not_a_crash(listener):
    sock = raw(listener.port)
    sock.sendall(b"\x00\xff garbage\r\nDATA\r\nEHLO mta\r\nRCPT TO:<b@example.org>\r\n"
                 b"MAIL FROM:<a@example.org>\r\nDATA\r\n")
    replies = read_replies(sock, 6)
    assert [r[:1] for r in replies] == [b"5", b"5", b"2", b"5", b"2", b"5"]
    too_many = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % n for n in range(1001))
    sock.sendall(too_many)
    replies = read_replies(sock, 1001)
    assert replies[999][:3] == b"250" and replies[1000].startswith(b"452 4.5.3")
    sock.close()
    assert listener.proc.poll() is None
    assert listener.entries() == []


@pytest.mark.integration  # some seconds: 100,000 commands
def test_a_pipelining_flood_from_a_client_that_never_reads_stays_bounded(listener):
    """EHLO answers with ten times its own size: a listener that kept reading commands while
    its replies were not read would hold megabytes; aiosmtpd waits for the client instead."""
    import threading

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
    sock.connect(("127.0.0.1", listener.port))
    assert sock.recv(4096).startswith(b"220 ")
    sock.sendall(b"EHLO mta\r\n")
    [_] = read_replies(sock, 1)
    sock.sendall(b"EHLO mta\r\n")
    reply = b""
    while not reply.endswith(b"250 HELP\r\n"):
        reply += sock.recv(4096)
    count = 100_000
    before = listener.rss_kib()
    sender = threading.Thread(target=sock.sendall, args=(b"EHLO mta\r\n" * count,),
                              daemon=True)
    sender.start()
    time.sleep(2)
    grown = listener.rss_kib() - before
    assert grown < 4 * 1024, f"listener grew by {grown} KiB while its replies were not read"
    expected, seen = len(reply) * count, 0
    while seen < expected:
        chunk = sock.recv(1 << 20)
        assert chunk
        seen += len(chunk)
    sender.join(30)
    assert seen == expected
    sock.close()
    assert listener.proc.poll() is None


def test_exim_style_end_of_data_quit_and_half_close_still_get_their_replies(listener):
    """Exim's smtp transport pipelines the final "." with QUIT and shuts down its sending side
    before it reads the replies: the 250 must still come, exactly once, and be true."""
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    read_replies(sock, 4)
    sock.sendall(b"Subject: exim\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    sock.shutdown(socket.SHUT_WR)
    replies = read_replies(sock, 2)
    assert replies[0].startswith(b"250 2.0.0 Ok: queued as ") and replies[1].startswith(b"221")
    assert sock.recv(100) == b""
    sock.close()
    [entry] = listener.entries()
    assert replies[0].endswith(entry.id.encode())
    assert listener.message(entry) == b"Subject: exim\n\nbody\n"


@pytest.mark.parametrize("where", ["idle", "after-354", "mid-data"])
def test_a_half_close_without_quit_ends_the_session_cleanly(listener, where):
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\n")
    read_replies(sock, 1)
    if where == "after-354":
        sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        read_replies(sock, 3)
    elif where == "mid-data":
        sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
                     b"Subject: cut\r\n\r\nhalf a message")
        read_replies(sock, 3)
    sock.shutdown(socket.SHUT_WR)
    sock.settimeout(10)
    rest = b""
    while chunk := sock.recv(4096):  # the listener closes its side too, and does not spin
        rest += chunk
    sock.close()
    assert b"250 2.0.0" not in rest
    assert listener.entries() == []
    assert not os.listdir(listener.spool_dir / "tmp")
    stat = Path(f"/proc/{listener.proc.pid}/stat").read_text().split()
    ticks = int(stat[13]) + int(stat[14])
    time.sleep(1)
    stat = Path(f"/proc/{listener.proc.pid}/stat").read_text().split()
    assert int(stat[13]) + int(stat[14]) - ticks < 20  # < 0.2 s of CPU in a quiet second
    assert listener.proc.poll() is None


def test_a_client_gone_mid_data_leaves_nothing(listener):
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    read_replies(sock, 4)
    sock.sendall(b"Subject: half\r\n\r\n" + b"x" * 100_000)
    time.sleep(0.3)
    sock.close()
    deadline = time.monotonic() + 10
    while os.listdir(listener.spool_dir / "tmp") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.listdir(listener.spool_dir / "tmp")
    assert listener.entries() == []
    assert listener.proc.poll() is None


def test_sigterm_lets_a_transfer_in_progress_finish(listener):
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    read_replies(sock, 4)
    sock.sendall(b"Subject: slow\r\n\r\nfirst half\r\n")
    time.sleep(0.3)
    listener.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert listener.proc.poll() is None  # waiting for this transfer
    sock.sendall(b"second half\r\n.\r\n")
    [reply] = read_replies(sock, 1)
    assert reply.startswith(b"250 2.0.0")
    assert listener.proc.wait(30) == 0
    [entry] = listener.entries()
    assert listener.message(entry) == b"Subject: slow\n\nfirst half\nsecond half\n"
    # No new connection is taken any more.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", listener.port), timeout=2)


def test_sigkill_mid_message_the_client_sees_the_loss_and_a_resend_is_taken(listener, tmp_path):
    sock = raw(listener.port)
    sock.sendall(b"EHLO mta\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
    read_replies(sock, 4)
    sock.sendall(b"Subject: killed\r\n\r\n" + b"x\r\n" * 50_000)
    time.sleep(0.3)
    listener.stop(signal.SIGKILL)
    with pytest.raises(OSError):  # what the MTA sees: no 250, so it keeps the message
        sock.sendall(b".\r\n")
        if not sock.recv(100):
            raise ConnectionResetError("closed")
    sock.close()
    assert listener.entries() == []
    listener.start()  # the leftover in tmp/ is no entry; recover() removes it when stale
    client = smtp(listener.port)
    client.sendmail("a@example.org", ["b@example.org"], b"Subject: killed\r\n\r\nagain\r\n")
    client.quit()
    assert len(listener.entries()) == 1


# -- addresses and start-up errors ---------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("smtp:127.0.0.1:10025", Address("smtp", "127.0.0.1", 10025)),
    ("lmtp:[::1]:24", Address("lmtp", "::1", 24)),
    ("smtp:localhost:2525", Address("smtp", "localhost", 2525)),
    ("lmtp:unix:/run/lmsav/lmtp.sock", Address("lmtp", path="/run/lmsav/lmtp.sock")),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected
    assert str(parse_listen(text)) == text.replace("localhost", "localhost")


@pytest.mark.parametrize("text", ["127.0.0.1:10025", "smtp:127.0.0.1", "http:1.2.3.4:80",
                                  "smtp:unix:relative", "smtp:127.0.0.1:70000"])
def test_bad_listen_addresses(text):
    with pytest.raises(ListenError):
        parse_listen(text)


def run_lmsav(tmp_path, *args):
    config = tmp_path / "c.toml"
    config.write_text(f'[spool]\ndir = "{tmp_path / "spool"}"\n')
    return subprocess.run([sys.executable, "-m", "lmsav", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60)


def test_a_bad_address_and_a_busy_port_are_one_line_errors(tmp_path):
    bad = run_lmsav(tmp_path, "spool", "listen", "--listen", "smtp:nowhere")
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0 and "smtp:HOST:PORT" in bad.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_lmsav(tmp_path, "spool", "listen", "--listen", f"smtp:127.0.0.1:{port}")
    assert taken.returncode == 2
    assert f"smtp:127.0.0.1:{port}: cannot listen" in taken.stderr
    assert "Traceback" not in taken.stderr


def test_a_bad_listen_setting_names_the_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[spool]\nlisten = "smtp:127.0.0.1:10025"\n')
    done = subprocess.run([sys.executable, "-m", "lmsav", "--config", str(config), "spool",
                           "listen"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "spool.listen" in done.stderr and "expected a list" in done.stderr
