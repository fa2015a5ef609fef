"""A real Exim (exim4-daemon-heavy, unpacked by scripts/mta/exim-unpack) whose DATA ACL asks the
daemon through its built-in clamd scanner — ``av_scanner = clamd:…`` and ``deny malware = *`` —
rejects an infected message at DATA with 550 and accepts a clean one."""

from __future__ import annotations

import shutil
import smtplib

import pytest

from tests.daemon_clients.conftest import give_to, EICAR_NAME, make_root, need_root
from tests.mta.conftest import (
    EXIM_CONFIG, SENDER, Mailboxes, PrivateExim, build_message, free_port, infected_message,
    token, unpacked_exim,
)

pytestmark = pytest.mark.integration

DATA_ACL = """\
acl_check_data:
  deny   malware = *
         message = This message contains malware ($malware_name)
  accept

"""


class ScanningExim(PrivateExim):
    """The tests/mta Exim, with a malware scan at DATA through ``av_scanner``."""

    def __init__(self, exim, root, smtp_port, mailboxes, av_scanner: str):
        super().__init__(exim, root, smtp_port, mailboxes)
        self.av_scanner = av_scanner

    def configure(self) -> None:
        super().configure()
        text = self.config.read_text()
        text = text.replace("acl_smtp_rcpt = acl_check_rcpt\n",
                            "acl_smtp_rcpt = acl_check_rcpt\nacl_smtp_data = acl_check_data\n"
                            f"av_scanner = {self.av_scanner}\n", 1)
        text = text.replace("begin acl\n\n", "begin acl\n\n" + DATA_ACL, 1)
        assert "acl_check_data:" in text and "av_scanner" in text, EXIM_CONFIG
        self.config.write_text(text)


@pytest.fixture(scope="module", params=["unix", "tcp"])
def exim(request, daemon):
    """Exim pointed at the daemon's unix socket (clamd:/path) or its TCP port (clamd:host port)."""
    need_root()
    binary = unpacked_exim()
    root = make_root("exim-acl")
    mailboxes = root / "mail"
    mailboxes.mkdir()
    scanner = (f"clamd:{daemon.socket}" if request.param == "unix"
               else f"clamd:127.0.0.1 {daemon.tcp_port}")
    mta = ScanningExim(binary, root, free_port(), mailboxes, scanner)
    try:
        give_to(mailboxes, mta.user)
        mta.configure()
        mta.start()
        yield mta
    finally:
        mta.stop()
        shutil.rmtree(root, ignore_errors=True)


def send(exim: ScanningExim, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", exim.smtp_port, local_hostname="client.test",
                      timeout=60) as smtp:
        smtp.sendmail(SENDER, ["bob@clean.test"], message)


def test_infected_message_is_rejected_at_data(exim, daemon):
    tok = token()
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(exim, infected_message(tok))
    code, text = refused.value.smtp_code, refused.value.smtp_error.decode(errors="replace")
    assert code == 550, (code, text, exim.log()[-2000:], daemon.log_tail())
    assert "malware" in text and EICAR_NAME in text
    assert exim.queue() == []


def test_clean_message_is_accepted_and_delivered(exim, daemon):
    tok = token()
    send(exim, build_message(tok, ("notes.txt", b"harmless notes\n", "text/plain")))
    [delivered] = Mailboxes(exim.mailboxes).wait("bob@clean.test", tok)
    assert f"X-Test-Token: {tok}".encode() in delivered
    # A scanner failure would also let mail through when the ACL said "defer_ok".
    assert "malware acl condition" not in exim.log()
