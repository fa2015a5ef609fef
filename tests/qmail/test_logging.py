"""The one log line per message on the qmail path: the wrapper deciding in its own process
logs it on its standard error (qmail-smtpd's log), the daemon in its log."""

from __future__ import annotations

import re
import time

import pytest

from tests.qmail.conftest import EICAR, envelope, submit

pytestmark = pytest.mark.integration

MESSAGE = (b"From: alice@sender.example\nTo: bob@rcpt.example\nSubject: hi\n"
           b"Message-ID: <q1@sender.example>\n\n" + EICAR + b"\n")
LINE = (r"lmsav-mail\[(\d+)\]: info: queue=- msgid=<q1@sender\.example> "
        r"from=<alice@sender\.example> to=<bob@rcpt\.example> group=default status=infected "
        r"action=reject threats=Eicar-Test-Signature size=" + str(len(MESSAGE)) + r" time=\d+ms")


@pytest.fixture(scope="module")
def unserved(tmp_path_factory):
    from tests.qmail.conftest import Setup

    return Setup(tmp_path_factory.mktemp("qmail-log"), daemon=False)


def test_in_process_the_wrapper_logs_the_message_line(unserved, queue):
    r = submit(MESSAGE, envelope("alice@sender.example", "bob@rcpt.example"),
               unserved.env(queue))
    assert r.code == 31, r.stderr
    assert re.search(LINE, r.stderr), r.stderr


def test_through_the_daemon_the_daemon_logs_it(served, queue):
    r = submit(MESSAGE, envelope("alice@sender.example", "bob@rcpt.example"), served.env(queue))
    assert r.code == 31, r.stderr
    assert "lmsav-mail[" not in r.stderr  # the wrapper only asked
    log = served.root / "daemon.log"
    deadline = time.monotonic() + 10
    while not re.search(LINE, log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(LINE, log.read_text()), log.read_text()[-2000:]
