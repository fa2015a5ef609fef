"""`lmsav setup` on a qmail server, end to end: setup finds qmail and puts lmsav-qmail-queue into
tcpserver's rules, and qmail-smtpd's submissions, made as qmaild with the HOME=/root tcpserver
leaves, are scanned: without the daemon (in-process), then with `lmsav daemon --detach` started
as setup prints it. `lmsav setup --remove` gives the rules back byte for byte.

qmail is not packaged: inside the tests.sysroot namespace the server has the account qmaild,
/var/qmail/control/rcpthosts, /etc/tcp.smtp compiled with tcprules, and a qmail-queue that
records what it would queue (tests/qmail/fake_qmail_queue.py) where qmail's own would be.
"""

from __future__ import annotations

import email
import json
import shlex
import shutil

import pytest

from tests.conftest import EICAR
from tests.qmail.conftest import envelope, submit
from tests.setup.conftest import REPO, TESTS_DIR, leftovers, start_commands
from tests.sysroot import file_state

pytestmark = pytest.mark.integration

RULES = '127.:allow,RELAYCLIENT=""\n:allow\n'
RECORDS = "/var/qmail/records"


def qmail_server(server, rules: str = RULES) -> None:
    """What installing qmail (netqmail, Life with qmail) leaves; Postfix is not there."""
    if shutil.which("tcprules") is None:
        pytest.skip("tcprules is not installed (Debian package ucspi-tcp)")
    fake = shlex.quote(str(REPO / "tests" / "qmail" / "fake_qmail_queue.py"))
    server.write("/var/qmail/bin/qmail-queue",
                 "#!/bin/sh\n# Records what it would queue under /var/qmail/records/<n>/.\n"
                 f"FAKE_QMAILQUEUE_DIR={RECORDS} exec /usr/bin/python3 -S {fake}\n", mode=0o755)
    server.write("/var/qmail/control/rcpthosts", "example.org\n")
    server.write("/etc/tcp.smtp", rules)
    server.sh(f"""set -e
        useradd --system --no-create-home --home-dir /var/qmail --shell /usr/sbin/nologin qmaild
        install -d -m 1777 {RECORDS}
        tcprules /etc/tcp.smtp.cdb /etc/tcp.smtp.tmp </etc/tcp.smtp""")


def remove_postfix(server) -> None:
    server.sh("rm -rf /etc/postfix")


class Smtpd:
    """qmail-smtpd's hand-over: tcpserver's environment for 127.0.0.1 from /etc/tcp.smtp.cdb,
    qmaild's uid, HOME=/root, and the program QMAILQUEUE names."""

    def __init__(self, server):
        self.server = server

    def environment(self) -> dict[str, str]:
        out = self.server.sh("TCPREMOTEIP=127.0.0.1 tcprulescheck /etc/tcp.smtp.cdb").stdout
        prefix = "set environment variable "
        env = dict(line[len(prefix):].split("=", 1) for line in out.splitlines()
                   if line.startswith(prefix))
        env.update(HOME="/root", PATH="/usr/bin:/bin", PROTO="TCP", TCPREMOTEIP="127.0.0.1",
                   TCPLOCALIP="127.0.0.1", TCPLOCALPORT="25")
        return env

    def send(self, message: bytes, sender: str, recipient: str):
        env = self.environment()
        assert "QMAILQUEUE" in env, "setup did not put QMAILQUEUE into /etc/tcp.smtp"
        command = self.server.root.command(
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), env["QMAILQUEUE"],
            user="qmaild")
        script = self.server.path(f"{TESTS_DIR}/as-qmail-smtpd")
        script.write_text(f"#!/bin/sh\nexec {shlex.join(command)}\n")
        script.chmod(0o755)
        return submit(message, envelope(sender, recipient), {}, program=str(script))


def records(server) -> list[dict]:
    top = server.path(RECORDS)
    out = []
    for folder in sorted((p for p in top.iterdir() if p.is_dir()), key=lambda p: int(p.name)):
        info = json.loads((folder / "info.json").read_text())
        info["message"] = (folder / "message").read_bytes()
        out.append(info)
    return out


def message(tok: str, attachment: bytes | None = None) -> bytes:
    head = (f"From: bob@example.net\r\nTo: alice@example.org\r\nSubject: test {tok}\r\n"
            f"Message-ID: <{tok}@example.net>\r\nMIME-Version: 1.0\r\n")
    if attachment is None:
        return (head + "Content-Type: text/plain\r\n\r\nLunch at noon?\r\n").encode()
    return (head + 'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
            "Content-Type: text/plain\r\n\r\nSee attached.\r\n--b\r\n"
            "Content-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="eicar.com"\r\n\r\n').encode() \
        + attachment + b"\r\n--b--\r\n"


def rules_state(server) -> tuple[str, str]:
    """/etc/tcp.smtp and its compiled form: mode, owner and the bytes' sha256."""
    return (file_state(server.path("/etc/tcp.smtp")),
            file_state(server.path("/etc/tcp.smtp.cdb")))


def daemon_requests(server) -> int:
    status = server.sh(f"{shlex.quote(server.lmsav)} ctl status --json").stdout
    return json.loads(status)["daemon"]["status"]["requests"]


def test_qmail_server_with_and_without_the_daemon(server):
    qmail_server(server)
    remove_postfix(server)
    rules = rules_state(server)
    before = server.root.changes()

    setup = server.setup("--yes")
    out = setup.stdout
    assert "protected: example.org; administrator: postmaster@example.org" in out
    assert "added qmaild to group lmsav" in out
    assert "qmail: configured" in out and "qmail: compiled: tcprules" in out
    # Setup's own self-test went through the wrapper as qmaild, before any service runs.
    assert "qmail clean: ok: accepted and queued" in out
    assert "qmail eicar: ok: rejected (policy)" in out
    assert "lmsav is set up." in out

    smtpd = Smtpd(server)
    uid = int(server.sh("id -u qmaild").stdout)
    for round_, with_daemon in (("nodaemon", False), ("daemon", True)):
        if with_daemon:
            daemon = next(c for c in start_commands(out) if "daemon --detach" in c)
            server.sh(daemon)
            server.wait_for(lambda: server.sh(f"{shlex.quote(server.lmsav)} ctl ping",
                                              check=False).returncode == 0, "the daemon")
            served = daemon_requests(server)
        queued = len(records(server))
        clean = f"clean-{round_}"
        result = smtpd.send(message(clean), "bob@example.net", "alice@example.org")
        assert result.code == 0, result.stderr
        record = records(server)[-1]
        assert len(records(server)) == queued + 1
        assert record["queued"] and record["uid"] == uid
        assert record["recipients"] == ["alice@example.org"]
        assert f"Subject: test {clean}".encode() in record["message"]
        assert b"X-AV-Status: clean" in record["message"]

        infected = f"eicar-{round_}"
        result = smtpd.send(message(infected, EICAR), "bob@example.net", "alice@example.org")
        assert result.code == 31, result.stderr  # qmail-smtpd answers 554
        # Not queued; what is (the Default group's notices) does not carry it.
        for r in records(server)[queued + 1:]:
            assert EICAR not in r["message"]
            assert infected not in email.message_from_bytes(r["message"])["Message-ID"]
        if with_daemon:
            assert daemon_requests(server) == served + 2  # both went through the daemon

    self_test = server.setup("--self-test")
    assert "qmail clean: ok" in self_test.stdout and "qmail eicar: ok" in self_test.stdout

    removal = server.setup("--remove", "--purge", "--yes")
    assert "qmail: restored /etc/tcp.smtp, /etc/tcp.smtp.cdb byte for byte" in removal.stdout
    assert "took qmaild out of group lmsav" in removal.stdout
    assert rules_state(server) == rules
    assert server.lmsav_processes() == []
    assert not server.account_exists("lmsav")
    assert leftovers(server, before, ignore=(RECORDS + "/",)) == []
