"""Releasing a kept message: the original, byte for byte, to its original recipients (or some of
them) with its original sender, through the reinjection target, received by a real SMTP server
(aiosmtpd) or a sendmail program; refused clearly when it cannot be done."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import stat
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from lmsav import paths
from lmsav.cli import main
from lmsav.mail.backup import BackupStore
from lmsav.mail.release import ReleaseError, release
from lmsav.quarantine.store import FileStore
from lmsav.spool.reinject import SendmailReinjector, SmtpReinjector
from tests.conftest import EICAR

MAN_PAGE = Path(__file__).resolve().parents[2] / "man" / "lmsav-backup.1"
# As it came over SMTP: CRLF line ends, a line that starts with a dot, 8-bit text.
ORIGINAL = (b"From: Alice <alice@example.org>\r\nTo: bob@example.net, carol@example.com\r\n"
            b"Subject: invoice\r\nMessage-ID: <k1@example.org>\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            b"caf\xc3\xa9\r\n.a line with a leading dot\r\n..two\r\nlast\r\n")
SENDER = "alice@example.org"
RECIPIENTS = ["bob@example.net", "carol@example.com", "dave@example.org"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """What a real SMTP server received, transaction by transaction."""

    def __init__(self):
        self.received: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos),
                              envelope.original_content))
        return "250 OK"


@pytest.fixture
def smtp():
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    sink.port = controller.port
    yield sink
    controller.stop()


@pytest.fixture
def store(tmp_path) -> BackupStore:
    return BackupStore(paths.backup_dir(tmp_path / "state"))


def keep(store: BackupStore, message: bytes = ORIGINAL, **record) -> str:
    return store.save(message, {"sender": SENDER, "recipients": RECIPIENTS, "status": "infected",
                                "subject": "invoice", **record})


def reinjector(sink: Sink) -> SmtpReinjector:
    return SmtpReinjector("127.0.0.1", sink.port, "lmsav.test", timeout=5)


def test_release_delivers_the_original_with_its_envelope(store, smtp):
    entry_id = keep(store)
    r = reinjector(smtp)
    done = release(store, entry_id, r)
    r.close()
    assert smtp.received == [(SENDER, RECIPIENTS, ORIGINAL)]
    assert (done.sender, done.recipients, done.size) == (SENDER, tuple(RECIPIENTS),
                                                         len(ORIGINAL))
    assert store.exists(entry_id), "releasing is not deleting"


def test_release_to_some_recipients_only(store, smtp):
    entry_id = keep(store)
    r = reinjector(smtp)
    done = release(store, entry_id, r, ["<CAROL@example.com>", "bob@example.net",
                                        "carol@example.com"])
    r.close()
    assert done.recipients == ("carol@example.com", "bob@example.net")
    assert smtp.received == [(SENDER, ["carol@example.com", "bob@example.net"], ORIGINAL)]


def test_an_address_the_message_was_not_for_is_refused_and_nothing_is_sent(store, smtp):
    entry_id = keep(store)
    with pytest.raises(ReleaseError, match=r"<mallory@example\.net> is not a recipient"):
        release(store, entry_id, reinjector(smtp), ["bob@example.net", "mallory@example.net"])
    assert smtp.received == []


def test_the_null_sender_and_a_nested_envelope(store, smtp):
    entry_id = store.save(ORIGINAL, {"envelope": {"sender": "", "recipients": ["x@example.org"]}})
    r = reinjector(smtp)
    release(store, entry_id, r)
    r.close()
    assert smtp.received == [("<>", ["x@example.org"], ORIGINAL)]


@pytest.mark.parametrize("record", [
    {"sender": None, "recipients": None},
    {"recipients": RECIPIENTS, "sender": None},
    {"sender": SENDER, "recipients": []},
    {"sender": SENDER, "recipients": "bob@example.net"},
    {"sender": SENDER, "recipients": ["", "bob@example.net"]},
])
def test_an_entry_without_an_envelope_is_refused_in_one_line(store, smtp, record):
    entry_id = store.save(ORIGINAL, {"status": "infected", **record})
    with pytest.raises(ReleaseError) as err:
        release(store, entry_id, reinjector(smtp))
    assert str(err.value) == (f"backup entry '{entry_id}' has no envelope (sender and "
                              f"recipients): it cannot be released; extract it instead")
    assert smtp.received == []


def test_a_damaged_message_is_not_released(store, smtp):
    entry_id = keep(store)
    message = store.root / entry_id / "message.eml"
    os.chmod(message, 0o600)
    message.write_bytes(ORIGINAL.replace(b"invoice", b"invoicf"))
    with pytest.raises(ReleaseError, match="does not match the recorded sha256"):
        release(store, entry_id, reinjector(smtp))
    assert smtp.received == []


def test_unknown_and_malformed_ids(store, smtp):
    with pytest.raises(ReleaseError, match="no backup entry"):
        release(store, "20261125T134501Z-0b3f2a9c41de", reinjector(smtp))
    with pytest.raises(ReleaseError, match="invalid backup id"):
        release(store, "../../etc", reinjector(smtp))


def test_recipients_the_mta_refused_are_named_with_those_it_took(store, smtp):
    entry_id = keep(store)
    smtp.refuse = {"carol@example.com"}
    with pytest.raises(ReleaseError) as err:
        release(store, entry_id, reinjector(smtp))
    assert err.value.delivered == ("bob@example.net", "dave@example.org")
    assert "delivered to bob@example.net, dave@example.org only" in str(err.value)
    assert "<carol@example.com>: 550 5.1.1 no such user" in str(err.value)
    assert "\n" not in str(err.value)
    assert smtp.received == [(SENDER, ["bob@example.net", "dave@example.org"], ORIGINAL)]


def test_nothing_listening_is_not_delivered(store):
    entry_id = keep(store)
    with pytest.raises(ReleaseError, match=f"backup entry '{entry_id}' not delivered: "
                                           f"127.0.0.1:\\d+: cannot connect"):
        release(store, entry_id, SmtpReinjector("127.0.0.1", free_port(), timeout=5))


def test_sendmail_gets_the_addresses_as_arguments_never_through_a_shell(store, tmp_path):
    """Recorded addresses are data: shell syntax in one reaches sendmail as it is."""
    log = tmp_path / "sendmail.json"
    program = tmp_path / "sendmail"
    program.write_text(f"#!{sys.executable}\nimport json, sys\n"
                       f"json.dump({{'argv': sys.argv[1:], 'stdin': sys.stdin.buffer.read()"
                       f".decode('latin-1')}}, open({str(log)!r}, 'w'))\n")
    program.chmod(0o755)
    odd = ["$(touch pwned)@example.net", "o'hara@example.net; touch pwned"]
    entry_id = store.save(ORIGINAL, {"sender": "`touch pwned`@example.org", "recipients": odd})
    os.chdir(tmp_path)
    release(store, entry_id, SendmailReinjector(program))
    seen = json.loads(log.read_text())
    assert seen["argv"] == ["-G", "-i", "-f", "`touch pwned`@example.org", "--", *odd]
    assert seen["stdin"].encode("latin-1") == ORIGINAL
    assert not (tmp_path / "pwned").exists()


# -- lmsav backup release ------------------------------------------------------------------------

class Cli:
    def __init__(self, tmp_path: Path, port: int):
        self.state = tmp_path / "state"
        self.config = tmp_path / "lmsav.toml"
        self.config.write_text(f'[paths]\nstate_dir = "{self.state}"\n\n'
                               f'[spool]\nreinject = "smtp:127.0.0.1:{port}"\n')
        self.runner = CliRunner()

    def lmsav(self, *args, input=None):
        return self.runner.invoke(main, [str(a) for a in args], input=input,
                                  catch_exceptions=False)


@pytest.fixture
def cli(tmp_path, monkeypatch, smtp) -> Cli:
    env = Cli(tmp_path, smtp.port)
    monkeypatch.setenv("LMSAV_CONFIG", str(env.config))
    monkeypatch.chdir(tmp_path)
    return env


def checked_mail(cli: Cli) -> tuple[bytes, str]:
    """A message `lmsav mail check --record` kept, and its backup id."""
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "invoice"
    msg.set_content("see attached")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    raw = msg.as_bytes()
    result = cli.lmsav("mail", "check", "--record", "--json", "-f", "alice@example.org",
                       "-r", "bob@example.net", "-r", "carol@example.com", "-", input=raw)
    assert result.exit_code == 1, result.output
    [entry_id] = set(re.findall(r'"backup": ?"([^"]+)"', result.output))
    return raw, entry_id


def test_cli_releases_what_mail_check_kept(cli, smtp):
    raw, entry_id = checked_mail(cli)
    result = cli.lmsav("backup", "release", entry_id)
    assert result.exit_code == 0, result.output
    assert result.output == (f"released {entry_id}: from <alice@example.org> to "
                             f"<bob@example.net>, <carol@example.com> via "
                             f"smtp:127.0.0.1:{smtp.port}\n")
    [(sender, recipients, data)] = smtp.received
    assert (sender, recipients) == ("alice@example.org", ["bob@example.net", "carol@example.com"])
    assert data == raw.replace(b"\n", b"\r\n")  # the wire's line ends, nothing else changed


def test_cli_release_to_one_and_its_errors(cli, smtp, tmp_path):
    _raw, entry_id = checked_mail(cli)
    result = cli.lmsav("backup", "release", entry_id, "--to", "carol@example.com")
    assert result.exit_code == 0 and [r[1] for r in smtp.received] == [["carol@example.com"]]
    result = cli.lmsav("backup", "release", entry_id, "--to", "eve@example.com")
    assert result.exit_code == 2
    assert result.output == (f"lmsav: error: <eve@example.com> is not a recipient of backup "
                             f"entry '{entry_id}' (its recipients: bob@example.net, "
                             f"carol@example.com)\n")
    file_id = FileStore(paths.backup_files_dir(cli.state), "backup").put(b"x", {})
    result = cli.lmsav("backup", "release", file_id)
    assert result.exit_code == 2 and "is a file, which has no recipients" in result.output
    result = cli.lmsav("backup", "release", "../x")
    assert result.exit_code == 2 and "invalid backup id" in result.output
    bare = BackupStore(paths.backup_dir(cli.state)).save(b"Subject: x\n\nx\n", {})
    result = cli.lmsav("backup", "release", bare)
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "has no envelope" in result.output
    assert len(smtp.received) == 1


def test_cli_release_with_nothing_listening(cli, smtp, tmp_path):
    _raw, entry_id = checked_mail(cli)
    cli.config.write_text(cli.config.read_text().replace(str(smtp.port), str(free_port())))
    result = cli.lmsav("backup", "release", entry_id)
    assert result.exit_code == 2
    assert result.output.startswith(f"lmsav: error: backup entry '{entry_id}' not delivered: ")


def test_the_man_page_release_examples_run_as_written(cli, smtp):
    text = MAN_PAGE.read_text()
    examples = text.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0]
    lines = [line.replace("\\-", "-") for block in examples.split(".nf\n")[1:]
             for line in block.split(".fi", 1)[0].splitlines() if " release " in line]
    assert len(lines) == 2, lines
    raw, entry_id = checked_mail(cli)
    for line in lines:
        words = [re.sub(r"\d{8}T\d{6}Z-[0-9a-f]{12}", entry_id, w) for w in shlex.split(line)]
        result = cli.lmsav(*words[1:])
        assert result.exit_code == 0, (line, result.output)
    assert [r[1] for r in smtp.received] == [["bob@example.net", "carol@example.com"],
                                             ["bob@example.net"]]
    assert all(r[2] == raw.replace(b"\n", b"\r\n") for r in smtp.received)


def test_the_released_entry_stays_private(store, smtp):
    entry_id = keep(store)
    r = reinjector(smtp)
    release(store, entry_id, r)
    r.close()
    assert stat.S_IMODE(os.stat(store.root / entry_id / "message.eml").st_mode) == 0o600
