"""A running milter server (threads, real mail service on the bundled database) and a raw milter
client that speaks the protocol as Postfix does, packet by packet."""

from __future__ import annotations

import socket
import struct
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.config import load_settings
from lmsav.mail.service import MailService
from lmsav.milter import protocol
from lmsav.milter.server import Backend, make_server
from lmsav.milter.session import Limits
from lmsav.spool.reinject import DirReinjector
from tests.conftest import EICAR

ADMIN = "admin@admin.test"
REJECT_TEXT = "550 5.7.1 Refused here: $threats"
GROUPS = {
    "default.toml": f'admin_addresses = ["{ADMIN}"]\nnotice_from = "lmsav@mta.test"\n'
                    f'reject_reply = "{REJECT_TEXT}"\nno_sender_notice = []\n',
    "drop.toml": 'priority = 10\nrecipients = ["drop.test"]\ninfected_action = "drop"\n',
    "warn.toml": 'priority = 10\nrecipients = ["warn.test"]\ninfected_action = "warn"\n'
                 'subject_prefix = { infected = "[VIRUS] " }\n',
    "cure.toml": 'priority = 10\nrecipients = ["cure.test"]\nscan_policy = "combined"\n'
                 'infected_action = "cure"\nuncurable_action = "drop"\n',
    # admin@clean.test: a mailbox of the Postfix tests (tests/mta) that holds infected mail.
    "hold.toml": 'priority = 10\nrecipients = ["hold.test", "admin@clean.test"]\n'
                 'infected_action = "hold"\n',
}

# Every action and step Postfix 3 offers in its negotiation.
MTA_ACTIONS = 0x1FF
MTA_STEPS = 0x1FFFFF


def write_config(root: Path, notices: Path) -> Path:
    config = root / "lmsav.toml"
    (root / "groups.d").mkdir(parents=True)
    for name, text in GROUPS.items():
        (root / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{root / "state"}"\n\n'
                      f'[spool]\nreinject = "dir:{notices}"\n')
    return config


class Milter:
    """The server under test: address, notices directory, and the service's backend."""

    def __init__(self, server, notices: Path, backend: Backend):
        self.server = server
        self.notices = notices
        self.backend = backend
        self.address = server.server_address

    def client(self) -> Client:
        return Client(socket.create_connection(self.address, timeout=30))

    def notice_files(self) -> list[bytes]:
        if not self.notices.is_dir():
            return []
        return [p.read_bytes() for p in sorted(self.notices.glob("*.eml"))]


@pytest.fixture(scope="module")
def milter_service(tmp_path_factory):
    root = tmp_path_factory.mktemp("milter")
    notices = root / "notices"
    config = write_config(root, notices)
    service = MailService.from_settings(load_settings(config), config,
                                        database_dir=paths.bundled_database_dir(),
                                        backup=False, stats=False)
    # One backend for the module, as one per process in production: its deciding thread owns
    # the engine's per-thread state for the service's whole life.
    backend = Backend(service, lambda: DirReinjector(notices))
    yield backend, notices
    backend.close()


@pytest.fixture
def milter(milter_service, tmp_path, monkeypatch):
    backend, notices = milter_service
    server = make_server("inet:0@127.0.0.1", backend,
                         Limits(spill=4096, max_message=1 << 20, tmp_dir=str(tmp_path)), 10)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield Milter(server, notices, backend)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


class Client:
    """The MTA's side of the protocol."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, command: bytes, data: bytes = b"") -> None:
        self.sock.sendall(protocol.encode(command, data))

    def receive(self) -> protocol.Packet | None:
        return protocol.read_packet(self.reader.read)

    def ask(self, command: bytes, data: bytes = b"") -> protocol.Packet:
        self.send(command, data)
        packet = self.receive()
        assert packet is not None, f"connection closed after {command!r}"
        return packet

    def negotiate(self) -> tuple[int, int, int]:
        reply = self.ask(protocol.OPTNEG, struct.pack("!III", 6, MTA_ACTIONS, MTA_STEPS))
        assert reply.command == protocol.OPTNEG
        return struct.unpack("!III", reply.data)

    def connect(self) -> None:
        self.negotiate()
        assert self.ask(protocol.CONNECT, b"client.test\x004\x30\x39127.0.0.1\x00").command == b"c"
        assert self.ask(protocol.HELO, b"client.test\x00").command == b"c"

    def mail(self, sender: str) -> protocol.Packet:
        return self.ask(protocol.MAIL, f"<{sender}>\0".encode())

    def rcpt(self, recipient: str) -> protocol.Packet:
        return self.ask(protocol.RCPT, f"<{recipient}>\0".encode())

    def message(self, raw: bytes, chunk: int = 65535) -> list[protocol.Packet]:
        """DATA, each header, EOH, the body in chunks, end of body; the final answers (every
        packet up to and including the final reply)."""
        head, _, body = raw.replace(b"\r\n", b"\n").partition(b"\n\n")
        assert self.ask(protocol.DATA).command == b"c"
        for name, value in header_lines(head):
            assert self.ask(protocol.HEADER, name + b"\0" + value + b"\0").command == b"c"
        assert self.ask(protocol.EOH).command == b"c"
        body = body.replace(b"\n", b"\r\n")
        for i in range(0, len(body), chunk):
            assert self.ask(protocol.BODY, body[i:i + chunk]).command == b"c"
        self.send(protocol.BODYEOB)
        return self.final()

    def final(self) -> list[protocol.Packet]:
        out = []
        while True:
            packet = self.receive()
            assert packet is not None, f"connection closed after {out}"
            out.append(packet)
            if packet.command in (b"a", b"d", b"r", b"t", b"y"):
                return out


def header_lines(head: bytes) -> list[tuple[bytes, bytes]]:
    """(name, value) as Postfix sends them: the space after the colon removed, folds kept."""
    out: list[tuple[bytes, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            out.append((name, value.removeprefix(b" ")))
    return out


def build(attachment: bytes | None = None, subject: str = "report",
          to: str = "bob@clean.test", text: str = "Hello.\n") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@senders.test"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@senders.test>"
    msg.set_content(text)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                           filename="e.com")
    return msg.as_bytes().replace(b"\n", b"\r\n")


def infected(**kw) -> bytes:
    return build(EICAR, **kw)


def modifications(packets: list[protocol.Packet]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for p in packets:
        out.setdefault(p.command, []).append(p.data)
    return out


def added_headers(packets: list[protocol.Packet]) -> dict[str, str]:
    out = {}
    for p in packets:
        if p.command == protocol.ADDHEADER:
            name, value, _ = p.data.split(b"\0")
            out[name.decode()] = value.decode()
        elif p.command == protocol.CHGHEADER:
            name, value, _ = p.data[4:].split(b"\0")
            out[name.decode()] = value.decode()
    return out
