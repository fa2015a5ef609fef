"""lmsav behind a real Postfix: `lmsav setup postfix`, then mail over SMTP to Maildirs.

The stack (tests/mta/conftest.py) is a private Postfix configured by `lmsav setup postfix
--apply`, lmsav's groups (drop.test drops, warn.test warns, cure.test cures, the rest rejects)
and a running `lmsav spool watch`, which takes the mail over SMTP on its listener ([spool]
listen), as setup makes it by default; the pipe stack (`--pipe`) hands each message to `lmsav
enqueue` instead, and the tests of a spool that cannot be written use it.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import smtplib
import subprocess
import threading
import time
import warnings
from pathlib import Path

import pytest

from tests.mta.conftest import (
    ADMIN,
    SENDER,
    assert_unchanged_but_av_headers,
    attachment_names,
    build_message,
    full_spool,
    have_postfix,
    infected_message,
    lmsav_cli,
    parsed,
    program,
    run_setup,
    token,
    wait_port,
    write_stock_postfix_config,
    zip_members,
)

pytestmark = pytest.mark.integration

needs_postfix = pytest.mark.skipif(not have_postfix(),
                                   reason="Postfix is not installed (Debian package postfix)")


def subjects(messages: list[bytes]) -> list[str]:
    return sorted(str(parsed(m)["Subject"]) for m in messages)


def text_of(raw: bytes) -> str:
    return parsed(raw).get_body(("plain",)).get_content()


def by_subject(messages: list[bytes], start: str) -> bytes:
    [found] = [m for m in messages if str(parsed(m)["Subject"]).startswith(start)]
    return found


# -- lmsav setup postfix, on the configuration a fresh installation has ------------------------

@pytest.fixture
def postfix_copy(tmp_path) -> Path:
    etc = tmp_path / "postfix"
    write_stock_postfix_config(etc)
    return etc


def postconf(etc: Path, *args: str) -> str:
    return subprocess.run([program("postconf"), "-c", str(etc), *args], check=True,
                          capture_output=True, text=True).stdout


def backups(etc: Path) -> list[str]:
    return sorted(p.name for p in etc.iterdir() if ".lmsav-" in p.name)


def files(etc: Path) -> dict[str, bytes]:
    return {name: (etc / name).read_bytes() for name in ("main.cf", "master.cf")}


CLIENT_OPTIONS = ["smtp_send_xforward_command=yes", "disable_mime_output_conversion=yes",
                  "smtp_generic_maps=", "smtp_tls_security_level=none",
                  "smtp_connect_timeout=10s"]
LIMITS = ["lmsav_destination_concurrency_limit = 10", "lmsav_destination_recipient_limit = 100"]


def lmsav_settings(etc: Path) -> list[str]:
    """main.cf's lmsav settings and master.cf's lmsav service, as postconf lists them."""
    main = [line for line in postconf(etc, "-n").splitlines()
            if line.startswith(("content_filter", "lmsav_"))]
    return main + postconf(etc, "-M", "lmsav/unix").splitlines()


@needs_postfix
def test_setup_by_default_hands_mail_to_the_listener_over_smtp(postfix_copy):
    etc = postfix_copy
    original = files(etc)
    common = ["--config-dir", etc]

    shown = run_setup("postfix", *common)
    assert "+content_filter = lmsav:[127.0.0.1]:10025" in shown
    assert "+lmsav      unix  -       -       n       -       10      smtp" in shown
    for option in CLIENT_OPTIONS:
        assert f"+    -o {option}" in shown
    assert all(f"+{line}" in shown for line in LIMITS)
    assert "+127.0.0.1:10026 inet" in shown and "pipe" not in shown
    assert "Nothing changed" in shown and files(etc) == original  # only printed

    done = run_setup("postfix", "--apply", *common)
    assert 'with [spool] listen = ["smtp:127.0.0.1:10025"]' in done
    assert postconf(etc, "-h", "content_filter").strip() == "lmsav:[127.0.0.1]:10025"
    service = postconf(etc, "-M", "lmsav/unix").split()
    assert service[:8] == ["lmsav", "unix", "-", "-", "n", "-", "10", "smtp"]
    assert service[8:] == [word for option in CLIENT_OPTIONS for word in ("-o", option)]
    assert sorted(postconf(etc, "-n", "lmsav_destination_concurrency_limit",
                           "lmsav_destination_recipient_limit").splitlines()) == LIMITS
    assert "127.0.0.1:10026/inet/content_filter =" in postconf(
        etc, "-P", "127.0.0.1:10026/inet").splitlines()
    assert "already set up for lmsav" in run_setup("postfix", "--apply", *common)

    # LMTP on another port: the lmtp client with its own parameters, the same limits.
    lmtp = run_setup("postfix", "--apply", "--lmtp", "--listen-port", "10030", *common)
    assert "-content_filter = lmsav:[127.0.0.1]:10025" in lmtp
    assert "+content_filter = lmsav:inet:[127.0.0.1]:10030" in lmtp
    assert postconf(etc, "-M", "lmsav/unix").split()[7:10] == [
        "lmtp", "-o", "lmtp_send_xforward_command=yes"]
    assert "lmsav_destination_recipient_limit" not in lmtp  # unchanged

    # Over to the pipe: the client's limits go with it.
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    piped = run_setup("postfix", "--apply", "--pipe", "--user", "nobody", "--lmsav", lmsav,
                      *common)
    assert all(f"-{line}" in piped for line in LIMITS)
    assert lmsav_settings(etc)[0] == "content_filter = lmsav:dummy"
    assert "lmsav_destination" not in postconf(etc, "-n")
    assert postconf(etc, "-M", "lmsav/unix").split()[7] == "pipe"

    # An installation of the pipe's days is lmsav's: switched to the listener, then removed.
    back = run_setup("postfix", "--apply", *common)
    assert "-content_filter = lmsav:dummy" in back and "-lmsav      unix  -       n" in back
    removal = run_setup("postfix", "--remove", "--apply", *common)
    assert all(f"-{line}" in removal for line in LIMITS)
    assert files(etc) == original
    assert lmsav_settings(etc) == []


@needs_postfix
def test_setup_prints_applies_once_and_removes_to_the_original_files(postfix_copy):
    etc = postfix_copy
    original = {name: (etc / name).read_bytes() for name in ("main.cf", "master.cf")}
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    common = ["--config-dir", etc, "--pipe", "--user", "nobody", "--lmsav", lmsav, "--port",
              "10026"]

    shown = run_setup("postfix", *common)
    assert "+content_filter = lmsav:dummy" in shown
    assert "+lmsav      unix  -       n       n       -       -       pipe" in shown
    assert (f"flags=q null_sender= user=nobody argv={lmsav} enqueue -f ${{sender}} "
            "-q ${queue_id} -- ${recipient}") in shown
    assert "+127.0.0.1:10026 inet" in shown and "-o content_filter=" in shown
    assert "--apply" in shown
    assert {name: (etc / name).read_bytes() for name in original} == original  # only printed

    run_setup("postfix", "--apply", *common)
    assert postconf(etc, "-h", "content_filter").strip() == "lmsav:dummy"
    pipe = postconf(etc, "-M", "lmsav/unix").split()
    assert pipe[:8] == ["lmsav", "unix", "-", "n", "n", "-", "-", "pipe"]
    assert pipe[8:] == ["flags=q", "null_sender=", "user=nobody", f"argv={lmsav}", "enqueue",
                        "-f", "${sender}", "-q", "${queue_id}", "--", "${recipient}"]
    reinject = postconf(etc, "-P", "127.0.0.1:10026/inet")
    assert "127.0.0.1:10026/inet/content_filter =" in reinject.splitlines()
    assert ("127.0.0.1:10026/inet/receive_override_options = "
            "no_unknown_recipient_checks,no_header_body_checks,no_milters") in reinject
    assert "127.0.0.1:10026/inet/mynetworks = 127.0.0.0/8" in reinject
    made = backups(etc)
    assert len(made) == 2
    assert [(etc / name).read_bytes() for name in made] == [original["main.cf"],
                                                            original["master.cf"]]

    again = run_setup("postfix", "--apply", *common)
    assert "already set up for lmsav; nothing to change" in again
    assert backups(etc) == made

    # Another reinjection port replaces the first one.
    moved = run_setup("postfix", "--apply", *common[:-1], "10099")
    assert "-127.0.0.1:10026 inet" in moved and "+127.0.0.1:10099 inet" in moved
    assert not postconf(etc, "-M", "127.0.0.1:10026/inet").strip()

    removal = run_setup("postfix", "--remove", "--config-dir", etc)
    assert "-content_filter = lmsav:dummy" in removal
    assert postconf(etc, "-h", "content_filter").strip() == "lmsav:dummy"  # only printed
    run_setup("postfix", "--remove", "--apply", "--config-dir", etc)
    assert {name: (etc / name).read_bytes() for name in original} == original
    assert "has no lmsav settings; nothing to change" in run_setup(
        "postfix", "--remove", "--apply", "--config-dir", etc)


@needs_postfix
def test_setup_notes_when_lmsavs_configuration_does_not_listen_where_postfix_sends(
        postfix_copy, tmp_path):
    config = tmp_path / "lmsav.toml"
    config.write_text('[spool]\nreinject = "smtp:127.0.0.1:10026"\n')
    shown = run_setup("postfix", "--config-dir", postfix_copy, config=config)
    assert ('note: [spool] listen = [] in ' + str(config)) in shown
    assert 'set listen = ["smtp:127.0.0.1:10025"] in [spool] there' in shown
    assert "lmsav enqueue" not in shown  # no pipe, no note about its user and spool
    shown = run_setup("postfix", "--config-dir", postfix_copy, "--lmtp", "--listen-port",
                      "2424", config=config)
    assert 'set listen = ["lmtp:127.0.0.1:2424"]' in shown
    config.write_text('[spool]\nreinject = "smtp:127.0.0.1:10026"\n'
                      'listen = ["smtp:localhost:10025", "lmtp:127.0.0.1:2424"]\n')
    for args in ([], ["--lmtp", "--listen-port", "2424"]):
        shown = run_setup("postfix", "--config-dir", postfix_copy, *args, config=config)
        assert "note:" not in shown, shown


@needs_postfix
def test_setup_refuses_a_listen_port_postfix_uses_and_options_of_the_pipe(postfix_copy):
    from click.testing import CliRunner

    etc = postfix_copy

    def setup(*args):
        return CliRunner().invoke(lmsav_cli(), ["setup", "postfix", "--apply", "--config-dir",
                                                str(etc), *args])

    # An amavis-style reinjection smtpd on 10025: lmsav's listener cannot have that port.
    postconf(etc, "-M", "127.0.0.1:10025/inet=127.0.0.1:10025 inet n - n - - smtpd")
    result = setup()
    assert result.exit_code == 2, result.output
    assert "master.cf service 127.0.0.1:10025/inet listens on port 10025" in result.output
    assert "--listen-port" in result.output
    postconf(etc, "-MX", "127.0.0.1:10025/inet")
    original = files(etc)
    for args, words in ((["--spool", "/var/spool/x"], "--spool goes with --pipe"),
                        (["--pipe", "--lmtp"], "--pipe and --lmtp exclude each other"),
                        (["--milter", "--lmtp"], "--milter asks before the queue"),
                        (["--listen-port", "10026"], "cannot be both lmsav's listener")):
        result = setup(*args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert files(etc) == original and backups(etc) == []


@needs_postfix
def test_setup_refuses_another_content_filter_a_missing_user_and_a_taken_port(postfix_copy):
    from click.testing import CliRunner

    etc = postfix_copy
    lmsav = shutil.which("lmsav") or "/usr/bin/true"

    def setup(*args):
        return CliRunner().invoke(lmsav_cli(), ["setup", "postfix", "--apply", "--config-dir",
                                                str(etc), "--pipe", "--lmsav", lmsav, *args])

    postconf(etc, "-e", "content_filter = smtp-amavis:[127.0.0.1]:10024")
    result = setup("--user", "nobody")
    assert result.exit_code == 2
    assert "content_filter = smtp-amavis:[127.0.0.1]:10024 is already set" in result.output
    postconf(etc, "-X", "content_filter")

    result = setup("--user", "no-such-user-lmsav")
    assert result.exit_code == 2 and "user no-such-user-lmsav does not exist" in result.output

    postconf(etc, "-M", "127.0.0.1:10026/inet=127.0.0.1:10026 inet n - n - - spawn "
                        "user=nobody argv=/bin/true")
    result = setup("--user", "nobody")
    assert result.exit_code == 2 and "is not an smtpd; choose another port" in result.output
    assert backups(etc) == []  # nothing was touched


# -- mail through Postfix and lmsav --------------------------------------------------------------

def test_clean_mail_arrives_unchanged_but_for_the_av_headers(postfix_stack):
    tok = token()
    sent = build_message(tok, ("data.bin", bytes(range(256)) * 40, "application/octet-stream"),
                         text="Line one.\n.leading dot\n\nLast line, no more.\n")
    postfix_stack.send(sent, ["bob@clean.test"])
    [got] = postfix_stack.wait("bob@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    assert parsed(got)["Return-Path"] == f"<{SENDER}>"


def test_a_bounce_keeps_its_empty_sender(postfix_stack):
    tok = token()
    sent = build_message(tok, subject="Undelivered Mail Returned to Sender")
    postfix_stack.send(sent, ["carol@clean.test"], sender="")
    [got] = postfix_stack.wait("carol@clean.test", tok)
    assert parsed(got)["Return-Path"] == "<>"
    assert_unchanged_but_av_headers(sent, got)


def test_infected_mail_is_dropped_for_the_drop_group(postfix_stack):
    tok = token()
    postfix_stack.send(infected_message(tok, "bob@drop.test"), ["bob@drop.test"])
    [admin] = postfix_stack.wait(ADMIN, tok)
    assert "(discarded)" in str(parsed(admin)["Subject"])
    assert "Eicar-Test-Signature" in text_of(admin)
    # The recipient is told, but gets nothing of the message.
    [notice] = postfix_stack.wait("bob@drop.test", tok)
    assert str(parsed(notice)["Subject"]).startswith("A message to you")
    assert parsed(notice)["Auto-Submitted"] == "auto-generated"
    assert b"EICAR" not in notice and attachment_names(notice) == []


def test_infected_mail_is_replaced_by_a_warning_for_the_warn_group(postfix_stack):
    tok = token()
    postfix_stack.send(infected_message(tok, "bob@warn.test"), ["bob@warn.test"])
    got = postfix_stack.wait("bob@warn.test", tok, count=2)
    warned = by_subject(got, "report")
    assert parsed(warned)["X-AV-Status"] == "infected"
    assert parsed(warned)["X-AV-Threats"] == "Eicar-Test-Signature"
    assert b"EICAR" not in warned
    assert "Eicar-Test-Signature" in parsed(warned).get_body(("plain",)).get_content()
    by_subject(got, "A message to you")
    postfix_stack.wait(ADMIN, tok)


def test_infected_member_is_cut_out_for_the_cure_group(postfix_stack):
    tok = token()
    postfix_stack.send(infected_message(tok, "bob@cure.test"), ["bob@cure.test"])
    got = postfix_stack.wait("bob@cure.test", tok, count=2)
    cured = by_subject(got, "report")
    assert attachment_names(cured) == ["notes.txt", "files.zip"]
    assert zip_members(cured, "files.zip") == ["clean.txt"]
    assert b"EICAR" not in cured
    assert parsed(cured)["X-AV-Status"] == "infected"


def test_rejected_after_the_queue_becomes_a_notice_to_the_sender(postfix_stack):
    tok = token()
    postfix_stack.send(infected_message(tok, "bob@reject.test"), ["bob@reject.test"])
    [dsn] = postfix_stack.wait(SENDER, tok)
    message = parsed(dsn)
    assert message["Return-Path"] == "<>"  # a notice about a refusal is itself a bounce
    assert message.get_content_type() == "multipart/report"
    assert "<bob@reject.test>: 550 5.7.1" in dsn.decode()
    assert b"EICAR" not in dsn
    [notice] = postfix_stack.wait("bob@reject.test", tok)
    assert str(parsed(notice)["Subject"]).startswith("A message to you")


def test_a_message_to_several_groups_is_split_by_group(postfix_stack):
    tok = token()
    rcpts = ["bob@drop.test", "carol@warn.test", "dave@cure.test", "alice@reject.test",
             "alice@clean.test"]
    postfix_stack.send(infected_message(tok, ", ".join(rcpts)), rcpts)
    # One admin notice about every group the message met: drop, warn, cure and the default
    # (reject), not one per group.
    [admin] = postfix_stack.wait(ADMIN, tok)
    [line] = [ln for ln in text_of(admin).splitlines() if ln.strip().startswith("Group:")]
    assert sorted(line.split(":", 1)[1].replace(",", " ").split()) == \
        ["cure", "default", "drop", "warn"]
    assert subjects(postfix_stack.wait("bob@drop.test", tok))[0].startswith("A message to you")
    warned = by_subject(postfix_stack.wait("carol@warn.test", tok, count=2), "report")
    assert b"EICAR" not in warned and parsed(warned).get_content_type() == "text/plain"
    cured = by_subject(postfix_stack.wait("dave@cure.test", tok, count=2), "report")
    assert zip_members(cured, "files.zip") == ["clean.txt"]
    # The default group rejects: both of its recipients in one notice to the sender.
    [dsn] = postfix_stack.wait(SENDER, tok)
    assert "<alice@reject.test>: 550" in dsn.decode() and "<alice@clean.test>: 550" in dsn.decode()
    for rcpt in rcpts:
        assert all(b"EICAR" not in m for m in postfix_stack.mail.messages(rcpt, tok))


# -- failures: the MTA keeps the mail ------------------------------------------------------------

def wait_deferred(stack, tok: str, timeout: float = 30.0) -> list[str]:
    """Wait until Postfix holds a deferred message; return its delay reasons."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reasons = [r for r in stack.mta.deferred_reasons() if r]
        if reasons:
            return reasons
        time.sleep(0.2)
    raise AssertionError(f"no deferred message after {timeout} s\n{stack.debug()}")


def test_a_read_only_spool_makes_postfix_defer_and_deliver_later(postfix_pipe_stack):
    stack = postfix_pipe_stack
    tmp = stack.spool / "tmp"
    tok = token()
    os.chmod(tmp, 0o550)  # `lmsav enqueue` runs as nobody, the owner: it cannot write now
    try:
        sent = build_message(tok)
        stack.send(sent, ["dave@clean.test"])
        reasons = wait_deferred(stack, tok)
        assert any("lmsav enqueue" in r and "ermission denied" in r for r in reasons), reasons
        time.sleep(2)
        assert stack.mail.messages("dave@clean.test", tok) == []
    finally:
        os.chmod(tmp, 0o750)
    stack.mta.flush()
    [got] = stack.wait("dave@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)


def test_a_full_spool_makes_postfix_defer_and_deliver_later(postfix_pipe_stack, tmp_path):
    stack = postfix_pipe_stack
    setup = ["postfix", "--apply", "--config-dir", stack.mta.etc, "--port", stack.reinject_port,
             "--pipe", "--user", stack.mta.user, "--lmsav", stack.enqueue_path]
    tok = token()
    with full_spool(stack, setup):
        sent = build_message(tok, ("big.bin", os.urandom(20000), "application/octet-stream"))
        stack.send(sent, ["carol@clean.test"])
        reasons = wait_deferred(stack, tok)
        assert any("lmsav enqueue" in r and "No space left" in r for r in reasons), reasons
        assert stack.mail.messages("carol@clean.test", tok) == []
    time.sleep(1)  # let the reload take effect before the queue is flushed
    stack.mta.flush()
    [got] = stack.wait("carol@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)


def test_reinjection_failing_for_a_while_delays_but_loses_nothing(postfix_stack):
    stack = postfix_stack
    # Postfix restarted without its reinjection service: the watcher's open connection is gone
    # too, and every new one is refused.
    service = f"127.0.0.1:{stack.reinject_port}/inet"
    stack.mta.stop()
    stack.mta.postconf("-M#", service)
    stack.mta.start()
    wait_port(stack.reinject_port, up=False)
    tok = token()
    try:
        sent = build_message(tok)
        stack.send(sent, ["alice@clean.test"])
        # lmsav has the message and keeps trying to hand it back.
        failures = wait_log(stack, f"message_id=<{tok}@senders.test>", "result=retry", count=2)
        assert all("Connection refused" in line for line in failures), failures
        assert stack.spool_entries(), stack.debug()
        assert stack.mail.messages("alice@clean.test", tok) == []
    finally:
        # `lmsav setup postfix --apply` puts the missing service back.
        run_setup(*stack.setup_args, config=stack.lmsav_config)
        stack.mta.reload()
    [got] = stack.wait("alice@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    deadline = time.monotonic() + 10
    while stack.spool_entries() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack.spool_entries() == []


def wait_log(stack, *words: str, count: int = 1, timeout: float = 30.0) -> list[str]:
    """Wait until ``count`` lines of the watcher's log hold all of ``words``; return them."""
    path = stack.root / "watch.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for line in path.read_text(errors="replace").splitlines()
                 if all(word in line for word in words)]
        if len(lines) >= count:
            return lines
        time.sleep(0.2)
    raise AssertionError(f"no {count} log lines with {words} after {timeout} s\n{stack.debug()}")


def test_kill_9_of_the_watcher_while_500_messages_flow_loses_none(postfix_stack):
    stack = postfix_stack
    count = int(os.environ.get("LMSAV_MTA_FLOOD", "500"))
    tok = token()
    ids = [f"<{tok}.{n}@senders.test>" for n in range(count)]
    rcpts = ["bob@clean.test"]
    kills = 0
    stop = threading.Event()

    def killer():
        nonlocal kills
        rng = random.Random(tok)
        while not stop.wait(rng.uniform(0.5, 2.5)):
            proc = stack.watcher.proc
            if proc is None or proc.poll() is not None:
                continue
            os.kill(proc.pid, signal.SIGKILL)  # the watcher this fixture started
            proc.wait()
            kills += 1
            stack.watcher.proc = None
            stack.watcher.start()

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=60) as smtp:
            for n, message_id in enumerate(ids):
                raw = build_message(f"{tok}.{n}", to=rcpts[0])
                assert message_id.encode() in raw
                assert not smtp.sendmail(SENDER, rcpts, raw)
        deadline = time.monotonic() + max(120.0, count * 0.5)
        while time.monotonic() < deadline:
            if len(stack.mail.messages("bob@clean.test", tok)) >= count:
                break
            if time.monotonic() > deadline - 60:
                stop.set()  # stop killing near the end, let the rest through
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(10)
        if stack.watcher.proc is None or stack.watcher.proc.poll() is not None:
            stack.watcher.proc = None
            stack.watcher.start()
    time.sleep(2)
    got = [str(parsed(m)["Message-ID"]) for m in stack.mail.messages("bob@clean.test", tok)]
    missing = sorted(set(ids) - set(got))
    duplicates = len(got) - len(set(got))
    print(f"{count} messages, {kills} kill -9 of the watcher: {len(missing)} lost, "
          f"{duplicates} duplicates")
    assert kills >= 1
    assert not missing, f"{len(missing)} of {count} lost after {kills} kills\n{stack.debug()}"
    if duplicates:
        warnings.warn(f"{duplicates} duplicate(s) of {count} messages after {kills} kill -9 "
                      "of the watcher (target 0)")
