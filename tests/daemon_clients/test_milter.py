"""The milter route (Postfix before its queue, Sendmail): a real Postfix (the private instance of
tests/mta) with ``smtpd_milters`` pointing at Debian's clamav-milter, whose ``ClamdSocket`` is
the daemon's socket. An infected message is rejected during the SMTP dialogue; a clean one is
delivered with clamav-milter's X-Virus-Scanned header."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import time
from pathlib import Path

import pytest

from tests.daemon_clients.conftest import give_to, make_root, need_root
from tests.mta.conftest import (
    stop_process_group,
    SENDER, Mailboxes, PrivatePostfix, build_message, free_port, have_postfix, infected_message,
    token, wait_port,
)

pytestmark = pytest.mark.integration

CLAMAV_MILTER = shutil.which("clamav-milter") or "/usr/sbin/clamav-milter"

MILTER_CONF = """\
Foreground yes
MilterSocket {milter}
MilterSocketMode 666
FixStaleSocket yes
PidFile {root}/clamav-milter.pid
TemporaryDirectory {root}/tmp
ClamdSocket {clamd}
OnClean Accept
OnInfected Reject
OnFail Defer
RejectMsg Rejected: malware %v found
AddHeader Replace
ReadTimeout 60
MaxFileSize 25M
LogFile {root}/clamav-milter.log
LogTime yes
LogInfected Full
LogClean Full
"""


class Milter:
    """clamav-milter with a private configuration (--config-file), running as root."""

    def __init__(self, root: Path, clamd_socket: str):
        self.root = root
        self.socket = root / "clamav-milter.sock"
        self.config = root / "clamav-milter.conf"
        self.log = root / "clamav-milter.log"
        (root / "tmp").mkdir(exist_ok=True)
        self.config.write_text(MILTER_CONF.format(milter=f"unix:{self.socket}", root=root,
                                                  clamd=clamd_socket))
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([CLAMAV_MILTER, f"--config-file={self.config}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"clamav-milter did not start:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process_group(self.proc)

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-20:])


@pytest.fixture(scope="module", params=["unix", "tcp"])
def postfix(request, daemon):
    """Postfix → clamav-milter → the daemon (over its unix socket or its TCP port)."""
    need_root()
    if not os.path.exists(CLAMAV_MILTER):
        pytest.skip("clamav-milter is not installed (Debian package clamav-milter)")
    if not have_postfix():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    root = make_root("milter")
    clamd = (f"unix:{daemon.socket}" if request.param == "unix"
             else f"tcp:127.0.0.1:{daemon.tcp_port}")
    milter = Milter(root, clamd)
    mailboxes = root / "mail"
    mailboxes.mkdir()
    mta = PrivatePostfix(root, free_port(), mailboxes)
    try:
        give_to(mailboxes, mta.user)
        mta.configure()
        mta.postconf("-e", f"smtpd_milters = unix:{milter.socket}",
                     "milter_default_action = tempfail", "milter_protocol = 6")
        milter.start()
        mta.start()
        wait_port(mta.smtp_port)
        mta.milter = milter
        yield mta
    finally:
        mta.stop()
        milter.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_infected_message_is_rejected_in_smtp(postfix, daemon):
    tok = token()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, local_hostname="client.test",
                      timeout=60) as smtp:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtp.sendmail(SENDER, ["bob@clean.test"], infected_message(tok))
    code, text = refused.value.smtp_code, refused.value.smtp_error.decode(errors="replace")
    detail = (code, text, postfix.log()[-1500:], postfix.milter.log_tail(), daemon.log_tail())
    assert code == 550, detail
    assert "Eicar-Test-Signature" in text, detail
    assert postfix.queue() == []


def test_clean_message_is_delivered(postfix, daemon):
    tok = token()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, local_hostname="client.test",
                      timeout=60) as smtp:
        smtp.sendmail(SENDER, ["bob@clean.test"],
                      build_message(tok, ("notes.txt", b"harmless notes\n", "text/plain")))
    [delivered] = Mailboxes(postfix.mailboxes).wait("bob@clean.test", tok)
    assert b"X-Virus-Status: Clean" in delivered, (delivered[:800], postfix.milter.log_tail())
