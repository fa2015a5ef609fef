"""lmsav-qmail-queue end to end: a qmail.c-like caller, the wrapper, the daemon (or not), and a
test qmail-queue that checks the protocol as qmail-queue does."""

from __future__ import annotations

import email
import grp
import os
import pwd
import shutil
import tempfile
import time
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path

import pytest

from lmsav.daemon.client import Client

from .conftest import EICAR, WRAPPER, FakeQueue, Setup, envelope, submit


def message(*attachments: tuple[str, bytes], subject: str = "report") -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@sender.example"
    msg["To"] = "bob@rcpt.example"
    msg["Subject"] = subject
    msg["Message-ID"] = "<t1@sender.example>"
    msg.set_content("see attached\n")
    for name, data in attachments:
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return msg.as_bytes()


CLEAN = message(("notes.txt", b"nothing to see\n"))
INFECTED = message(("eicar.com", EICAR), ("notes.txt", b"nothing to see\n"))


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=default_policy)


def body_of(record: dict) -> bytes:
    """The message as queued, without the Received line qmail-queue adds."""
    first, rest = record["message"].split(b"\n", 1)
    assert first.startswith(b"Received: (qmail ")
    return rest


# -- through the daemon ----------------------------------------------------------------------------

def test_clean_message_is_queued_once_with_headers_and_exit_0(served, queue):
    r = submit(CLEAN, envelope("alice@sender.example", "bob@rcpt.example"), served.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.records()
    assert rec["queued"] and rec["sender"] == "alice@sender.example"
    assert rec["recipients"] == ["bob@rcpt.example"]
    assert rec["envelope"] == envelope("alice@sender.example", "bob@rcpt.example")
    out = body_of(rec)
    assert parsed(out)["X-AV-Status"] == "clean"
    # Unchanged apart from the policy's headers: the original bytes follow the header block.
    assert out.endswith(CLEAN.split(b"\n\n", 1)[1])


def test_infected_rejected_with_31_and_nothing_queued(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"), served.env(queue))
    assert r.code == 31
    assert queue.records() == []
    assert "Virus found" in r.stderr


def test_infected_rejected_with_custom_error_on_descriptor_4(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"),
               served.env(queue, LMSAV_CUSTOM_ERROR="1"), custom_error=True)
    assert r.code == 82
    assert r.error.startswith(b"D554 5.7.1 Virus found: ")
    assert b"Eicar" in r.error
    assert queue.records() == []


def test_custom_error_without_descriptor_4_falls_back_to_31(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"),
               served.env(queue, LMSAV_CUSTOM_ERROR="1"))
    assert r.code == 31


def test_drop_exits_0_without_calling_qmail_queue(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "carol@drop.example"),
               served.env(queue))
    assert r.code == 0, r.stderr
    assert queue.records() == []


def test_cure_delivers_the_message_without_the_virus(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "dave@cure.example"),
               served.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.queued()
    assert rec["recipients"] == ["dave@cure.example"]
    out = body_of(rec)
    assert EICAR not in out
    assert b"nothing to see" in out or b"bm90aGluZyB0byBzZWU" in out
    assert parsed(out)["X-AV-Status"] == "infected"  # what was found; the part is replaced
    assert "Eicar-Test-Signature" in parsed(out)["X-AV-Threats"]


def test_multi_group_split_one_call_per_delivery(served, queue):
    # One recipient per group: cure gets a cured copy, drop gets nothing, the default group
    # rejects: as the other groups accept, the message is taken and bob gets nothing (no notice
    # to the sender either: Eicar is on the list of threats that forge their sender).
    env_bytes = envelope("alice@sender.example", "dave@cure.example", "carol@drop.example",
                         "bob@rcpt.example")
    r = submit(INFECTED, env_bytes, served.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.records()
    assert rec["recipients"] == ["dave@cure.example"]
    assert EICAR not in rec["message"]


def test_partial_reject_tells_the_sender_with_a_status_notice(served, queue, tmp_path):
    sig = b"lmsav-qmail-partial-reject-test-signature"
    (served.db / "partial.ndb").write_text(f"Partial.Reject.Test:0:*:{sig.hex()}\n")
    try:
        assert Client(served.sock, timeout=30).reload()
        deadline = time.monotonic() + 30
        raw = message(("x.bin", sig))
        while time.monotonic() < deadline:
            queue_dir = tmp_path / f"q{int(time.monotonic() * 1000)}"
            q = FakeQueue(queue_dir)
            r = submit(raw, envelope("alice@sender.example", "dave@cure.example",
                                     "bob@rcpt.example"), served.env(q))
            if any(rec["sender"] == "" for rec in q.records()):
                break  # the reloaded database is in use (before, the message was clean)
            time.sleep(0.2)
        assert r.code == 0, r.stderr
        dsn, cured = q.queued()  # the notice first, the message last
        assert dsn["sender"] == "" and dsn["recipients"] == ["alice@sender.example"]
        assert b"bob@rcpt.example" in dsn["message"] and sig not in dsn["message"]
        assert cured["recipients"] == ["dave@cure.example"] and sig not in cured["message"]
    finally:
        (served.db / "partial.ndb").unlink()
        Client(served.sock, timeout=30).reload()


def test_admin_notice_is_queued_through_qmail_queue_even_when_rejected(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "erin@notify.example"),
               served.env(queue))
    assert r.code == 31
    [notice] = queue.queued()
    assert notice["recipients"] == ["postmaster@mx.test"]
    assert notice["sender"] == ""
    assert EICAR not in notice["message"]


def test_group_forced_per_connection(served, queue):
    # LMSAV_GROUP=internal (warn) for this connection, whatever the recipients resolve to.
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"),
               served.env(queue, LMSAV_GROUP="internal"))
    assert r.code == 0, r.stderr
    [rec] = queue.queued()
    assert EICAR not in rec["message"]
    assert parsed(body_of(rec))["X-AV-Status"].startswith("infected")


def test_unknown_forced_group_defers(served, queue):
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"),
               served.env(queue, LMSAV_GROUP="no-such-group"))
    assert r.code == 71
    assert "no-such-group" in r.stderr
    assert queue.records() == []


def test_bypass_hands_descriptors_to_qmail_queue_untouched(served, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"),
               served.env(queue, LMSAV_BYPASS="1"))
    assert r.code == 0
    [rec] = queue.queued()
    assert body_of(rec) == INFECTED  # not even headers: scanning was skipped
    assert rec["fd0"] == "pipe" and rec["fd1"] == "pipe"


@pytest.mark.parametrize("code", [53, 71, 81])
def test_real_queue_failure_code_is_passed_through(served, queue, code):
    queue.exits(code)
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"), served.env(queue))
    assert r.code == code


def test_second_delivery_failing_fails_the_message(served, queue):
    # The admin notice (notify group) is accepted, the cured message (cure group) is not.
    queue.exits(0, 53)
    env_bytes = envelope("alice@sender.example", "erin@notify.example", "dave@cure.example")
    r = submit(INFECTED, env_bytes, served.env(queue))
    assert r.code == 53  # never 0 unless every delivery was accepted
    assert [rec["exit"] for rec in queue.records()] == [0, 53]


def test_missing_qmail_queue_defers(served, queue):
    env = served.env(queue)
    env["LMSAV_QMAILQUEUE"] = "/nonexistent/qmail-queue"
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"), env)
    assert r.code == 71
    assert "/nonexistent/qmail-queue" in r.stderr


def test_large_message_is_read_before_the_envelope(served, queue):
    # 3 MB: far past a pipe's buffer, so a wrapper that read the envelope first would hang.
    big = message(("data.bin", os.urandom(3 << 20)))
    r = submit(big, envelope("a@b.example", "c@d.example"), served.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.queued()
    assert body_of(rec).endswith(big.split(b"\n\n", 1)[1])


def test_no_recipients_queues_nothing_and_succeeds(served, queue):
    r = submit(CLEAN, b"Fa@b.example\0\0", served.env(queue))
    assert r.code == 0
    assert queue.records() == []


def test_addresses_with_non_utf8_bytes_survive(served, queue):
    sender = b"j\xf6rg@sender.example"
    r = submit(CLEAN, envelope(sender, b"b\xe9a@rcpt.example"), served.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.queued()
    assert rec["envelope"] == envelope(sender, b"b\xe9a@rcpt.example")


# -- malformed input -------------------------------------------------------------------------------

@pytest.mark.parametrize("env_bytes", [
    b"Fa@b.example\0Tc@d.example\0",  # missing final NUL
    b"a@b.example\0Tc@d.example\0\0",  # no F
    b"Fa@b.example\0Xc@d.example\0\0",  # a recipient not starting with T
    b"",  # no envelope at all (the caller went away)
    b"F" + b"x" * 5000 + b"\0Tc@d.example\0\0",  # an address longer than qmail allows
    b"Fa@b.example\0" + b"T" + b"y" * 2000,  # huge and unterminated
], ids=["no-final-nul", "no-F", "bad-tag", "empty", "long-address", "huge"])
def test_malformed_envelope_exits_91_and_queues_nothing(served, queue, env_bytes):
    r = submit(CLEAN, env_bytes, served.env(queue))
    assert r.code == 91
    assert "malformed envelope" in r.stderr
    assert queue.records() == []


def test_truncated_message_is_still_processed(served, queue):
    cut = INFECTED[: INFECTED.index(b"filename=\"notes.txt\"")]  # ends inside the MIME structure
    r = submit(cut, envelope("a@b.example", "c@d.example"), served.env(queue))
    assert r.code in (0, 31)  # an outcome, not a crash or a hang
    assert "internal error" not in r.stderr


def test_garbage_message_is_processed(served, queue):
    junk = bytes(range(256)) * 50
    r = submit(junk, envelope("a@b.example", "c@d.example"), served.env(queue))
    assert r.code == 0, r.stderr
    assert len(queue.queued()) == 1


def test_bad_configuration_defers(served, queue, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[qmail]\nfallback = "sometimes"\n')
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"),
               served.env(queue, LMSAV_CONFIG=str(bad)))
    assert r.code == 71
    assert "qmail.fallback" in r.stderr


# -- without the daemon ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unserved(tmp_path_factory):
    return Setup(tmp_path_factory.mktemp("qmail-nodaemon"), daemon=False)


def test_without_daemon_policy_runs_in_process(unserved, queue):
    r = submit(INFECTED, envelope("alice@sender.example", "dave@cure.example"),
               unserved.env(queue))
    assert r.code == 0, r.stderr
    [rec] = queue.queued()
    assert EICAR not in rec["message"]
    r = submit(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"),
               unserved.env(queue))
    assert r.code == 31


def test_without_daemon_and_fallback_off_defers(unserved, queue):
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"),
               unserved.env(queue, LMSAV_FALLBACK="0"))
    assert r.code == 71
    assert "unavailable" in r.stderr
    assert queue.records() == []


def test_missing_database_defers(unserved, queue, tmp_path):
    conf = tmp_path / "lmsav.toml"
    conf.write_text(f'[paths]\nbases = "{tmp_path / "nothing"}"\n'
                    f'state_dir = "{tmp_path / "state"}"\n'
                    f'[daemon]\nsocket = "{tmp_path / "none.sock"}"\n')
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"),
               unserved.env(queue, LMSAV_CONFIG=str(conf)))
    assert r.code == 71
    assert queue.records() == []


# -- as qmail's unprivileged users -----------------------------------------------------------------

@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to run the wrapper as another user")
def test_runs_as_an_unprivileged_user_through_the_socket_group(tmp_path_factory):
    """Like qmaild: not root, no access to lmsav's state; only the daemon socket's group."""
    root = Path(tempfile.mkdtemp(prefix="lmsav-qmail-user-"))
    root.chmod(0o755)
    setup = Setup(root / "conf", daemon=False)
    try:
        for d in (root / "conf", root / "conf" / "etc", root / "conf" / "etc" / "groups.d"):
            d.chmod(0o755)
        setup.config.write_text(setup.config.read_text()
                                .replace("[qmail]\n", "[qmail]\nfallback = false\n")
                                .replace("[daemon]\n", '[daemon]\nsocket_group = "nogroup"\n'
                                                        'socket_mode = "0660"\n'))
        setup.start_daemon()
        queue = FakeQueue(root / "q")
        for p in (root / "q", queue.program):
            p.chmod(0o755)
        queue.dir.chmod(0o777)

        def as_user(group: str) -> str:
            script = root / f"as-{group}"
            script.write_text(f"#!/bin/sh\nexec setpriv --reuid=nobody --regid={group} "
                              f"--clear-groups {WRAPPER}\n")
            script.chmod(0o755)
            return str(script)

        env = setup.env(queue)
        r = submit(INFECTED, envelope("alice@sender.example", "dave@cure.example"), env,
                   program=as_user("nogroup"))
        assert r.code == 0, r.stderr
        [rec] = queue.queued()
        assert rec["uid"] == pwd.getpwnam("nobody").pw_uid
        assert EICAR not in rec["message"]
        # Without the socket's group the daemon cannot be reached, and with fallback off
        # (nobody could not write lmsav's state anyway) the message is deferred, not passed.
        other = grp.getgrgid(os.getgid()).gr_name if os.getgid() != 0 else "daemon"
        r = submit(CLEAN, envelope("a@b.example", "c@d.example"), env, program=as_user(other))
        assert r.code == 71, r.stderr
        assert "Permission denied" in r.stderr
    finally:
        setup.stop_daemon()
        shutil.rmtree(root, ignore_errors=True)


def test_help_and_version_for_a_person_at_a_terminal():
    import subprocess

    out = subprocess.run([WRAPPER, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "qmail-queue" in out.stdout and "lmsav setup qmail" in out.stdout
    out = subprocess.run([WRAPPER, "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lmsav-qmail-queue (lmsav) ")
    out = subprocess.run([WRAPPER, "--bogus"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 71 and "unexpected argument" in out.stderr
