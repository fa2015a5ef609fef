"""Exim before the queue: the DATA ACL of `lmsav setup exim --pre-queue` asks a running lmsav
daemon (through `lmsav exim-acl`, lmsav/mail/acl.py) and applies the groups' decision.

The stack is the one of tests/mta/conftest.py (a private, unpacked Exim; lmsav's groups:
drop.test drops, warn.test warns, cure.test cures, the rest rejects), plus `lmsav daemon` and a
group for clean.test that prefixes the Subject of clean mail.
"""

from __future__ import annotations

import filecmp
import os
import re
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.daemon.client import Client as DaemonClient
from lmsav.mail import acl
from lmsav.spool import setup_exim, setup_exim_prequeue
from lmsav.spool.nqueue import SUBDIRS
from tests.conftest import EICAR
from tests.mta.conftest import (
    REPO,
    SENDER,
    Mailboxes,
    PrivateExim,
    WatcherProcess,
    _chown,
    _make_root,
    _need_root,
    build_message,
    free_port,
    infected_message,
    parsed,
    split_message,
    token,
    unpacked_exim,
    wait_port,
    write_lmsav_config,
    zip_members,
)
from tests.mta.test_exim import PLAIN, debian_config, exim_says, generate

REJECT_TEXT = "lmsav-prequeue refused"
PREFIX = "[VIRUS]"
EXTRA_GROUPS = {
    "clean.toml": f'priority = 10\nrecipients = ["clean.test"]\n'
                  f'reject_reply = "550 5.7.1 {REJECT_TEXT} ($threats)"\n',
    # carol@clean.test gets even infected mail, marked.
    "marked.toml": f'priority = 20\nrecipients = ["carol@clean.test"]\n'
                   f'infected_action = "skip"\nsubject_prefix = {{ infected = "{PREFIX} " }}\n',
}


# -- the answer's lines (no Exim needed) ---------------------------------------------------------

def scan_file(message: bytes, recipients=("bob@clean.test",), sender=SENDER) -> bytes:
    """As Exim writes it: no X-Envelope-From for a bounce."""
    return (b"From MAILER-DAEMON Fri Dec 04 17:55:03 2026\n"
            + (f"X-Envelope-From: <{sender}>\n" if sender else "").encode()
            + f"X-Envelope-To: {', '.join(recipients)}\n".encode() + message)


def test_the_scan_file_gives_the_envelope_and_the_message_as_received():
    message = b"Subject: hi\nX-Envelope-To: forged@x.test\n\nbody\n"
    sender, recipients, got = acl.parse_scan_file(
        scan_file(message, ("bob@clean.test", "carol@warn.test")))
    assert (sender, recipients, got) == (SENDER, ["bob@clean.test", "carol@warn.test"], message)
    assert acl.parse_scan_file(scan_file(b"\n", sender="")) == ("", ["bob@clean.test"], b"\n")
    with pytest.raises(acl.AclError):
        acl.parse_scan_file(b"Subject: no envelope\n\nbody\n")


def delivery(body: bytes, recipients=("bob@clean.test",), key="default:message"):
    return (key, SENDER.encode(), [r.encode() for r in recipients], body)


def test_plans_become_the_acls_lines():
    received = b"Subject: hi\nX-AV-Status: forged\nFrom: a@b.test\n\nbody\n"
    changed = (b"Subject: [AV ok] hi\nFrom: a@b.test\nX-AV-Checked: yes\n"
               b"X-AV-Status: clean\n\nbody\n")
    accept = {"result": "accept", "reply": ""}
    lines, _notices = acl.decision(accept, [delivery(changed)], received, ["bob@clean.test"])
    assert lines == ["accept", "-", "Subject:X-AV-Status", "Subject: [AV ok] hi",
                     "X-AV-Status: clean", "X-AV-Checked: yes"]
    reject = {"result": "reject", "reply": "550 5.7.1 no ($threats)"}
    notice = delivery(b"notice", ("admin@admin.test",), "notice:admin")
    assert acl.decision(reject, [notice], received, ["bob@clean.test"]) == \
        (["reject", "550 5.7.1 no ($threats)", "-"], [notice])
    assert acl.decision({"result": "reject", "reply": "250 ok"}, [], received, ["x@y"])[0][1] \
        == "550 5.7.1 250 ok"
    assert acl.decision(accept, [notice], received, ["bob@clean.test"])[0][0] == "discard"
    # What the ACL cannot do goes to the spool path after the queue, and no notice goes now.
    body_changed = changed.replace(b"body", b"cured")
    two = [delivery(changed), delivery(changed, ("carol@warn.test",), "warn:message")]
    for deliveries, recipients in (([delivery(body_changed), notice], ["bob@clean.test"]),
                                   (two, ["bob@clean.test", "carol@warn.test"]),
                                   ([delivery(changed)], ["bob@clean.test", "dave@clean.test"])):
        assert acl.decision(accept, deliveries, received, recipients) == (["spool", "-", "-"],
                                                                          [])


def test_a_missing_file_or_daemon_prints_defer(tmp_path, capsys):
    assert acl.main(["--socket", str(tmp_path / "none.sock"), str(tmp_path / "none.eml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "defer" and out[1].startswith("451 4.3.0")
    (tmp_path / "m.eml").write_bytes(scan_file(b"Subject: x\n\nbody\n"))
    assert acl.main(["--socket", str(tmp_path / "none.sock"), str(tmp_path / "m.eml")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "defer" and "none.sock" in out[1]
    assert acl.main([]) == 2


# -- the configuration text ------------------------------------------------------------------------

def options(**kw) -> setup_exim_prequeue.Options:
    return setup_exim_prequeue.Options("/usr/bin/lmsav", "root", 10026, None,
                                       "/run/lmsav/clamd.sock", 30, **kw)


def test_a_plain_configuration_gets_the_acl_and_loses_it_byte_for_byte(tmp_path):
    conf = tmp_path / "exim4.conf"
    conf.write_text(PLAIN)
    plan = setup_exim_prequeue.plan_setup(setup_exim.Layout.SINGLE, conf, options())
    new = plan.files[0].new
    assert "acl_smtp_data = lmsav_data" in new.split("begin acl")[0]
    assert "exim-acl --socket /run/lmsav/clamd.sock --timeout 30" in new
    assert "lmsav_discard:" in new and "!eq{$acl_m_lmsav}{done}" in new
    assert setup_exim.strip_lmsav(new) == PLAIN


def test_an_existing_data_acl_calls_lmsavs_first(tmp_path):
    text = PLAIN.replace("begin acl\n", "acl_smtp_data = check_data\nbegin acl\n"
                         "check_data:\n  deny message = spam\n       condition = false\n"
                         "  accept\n")
    conf = tmp_path / "exim4.conf"
    conf.write_text(text)
    new = setup_exim_prequeue.plan_setup(setup_exim.Layout.SINGLE, conf, options()).files[0].new
    lines = new.splitlines()
    at = lines.index("check_data:")
    assert lines[at + 2] == "  require acl = lmsav_data"
    assert "acl_smtp_data = lmsav_data" not in new
    assert setup_exim.strip_lmsav(new) == text
    conf.write_text(text.replace("= check_data", "= ${if true{check_data}}"))
    with pytest.raises(setup_exim.SetupError, match="by hand"):
        setup_exim_prequeue.plan_setup(setup_exim.Layout.SINGLE, conf, options())


@pytest.fixture(scope="module")
def exim() -> str:
    _need_root()
    return unpacked_exim()


@pytest.mark.integration
@pytest.mark.parametrize("split", [True, False], ids=["split", "template"])
def test_debian_configurations_get_the_acl_and_give_it_back(exim, tmp_path, split):
    original = debian_config(exim, tmp_path / "pristine", split)
    etc = debian_config(exim, tmp_path / "exim4", split)
    layout, where = setup_exim.locate(etc)
    opts = setup_exim_prequeue.Options("/usr/bin/true", "nobody", 10026)
    setup_exim.apply(setup_exim_prequeue.plan_setup(layout, where, opts))
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    assert "acl_smtp_data = acl_check_data" in exim_says(exim, config, "-bP", "acl_smtp_data")
    text = config.read_text()
    # update-exim4.conf drops comments, lmsav's markers with them.
    check = text.split("\nacl_check_data:\n", 1)[1]
    assert check.splitlines()[0] == "  require acl = lmsav_data"
    assert "\nlmsav_data:\n" in text and "exim-acl --socket" in text
    routed = exim_says(exim, config, "-bt", "root@localhost")  # no ACL ran: after the queue
    assert "router = lmsav_scan, transport = lmsav_pipe" in routed
    # Back to after the queue only, and before the queue again.
    base = opts.base()
    setup_exim.apply(setup_exim_prequeue.plan_after_queue(layout, where, base))
    text = generate(exim, etc, tmp_path / "config.after").read_text()
    assert "lmsav_data" not in text and "lmsav_pipe" in text
    setup_exim.apply(setup_exim_prequeue.plan_setup(layout, where, opts))
    assert generate(exim, etc, tmp_path / "config.again").read_text() == config.read_text()
    setup_exim.apply(setup_exim_prequeue.plan_remove(*setup_exim.locate(etc)))
    compare = filecmp.dircmp(original, etc, ignore=[])
    assert not compare.diff_files and not compare.left_only
    assert "lmsav" not in generate(exim, etc, tmp_path / "config.removed").read_text()


# -- a real Exim before the queue ----------------------------------------------------------------

class Stack:
    def __init__(self, root: Path, exim: PrivateExim, mail: Mailboxes, socket: Path,
                 spool: Path, watcher: WatcherProcess, config: Path):
        self.root, self.mta, self.mail, self.socket = root, exim, mail, socket
        self.spool, self.watcher, self.config = spool, watcher, config
        self.daemon: subprocess.Popen | None = None

    def start_daemon(self) -> None:
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - the child holds it
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "lmsav.launcher", "daemon", "--workers", "2"], stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, LMSAV_CONFIG=str(self.config)))
        log.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if DaemonClient(self.socket, timeout=10).ping():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.1)
            assert self.daemon.poll() is None, (self.root / "daemon.log").read_text()
        raise AssertionError("the daemon did not come up")

    def stop_daemon(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.send_signal(signal.SIGTERM)
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        self.daemon = None

    def send(self, message: bytes, recipients, sender: str = SENDER):
        with smtplib.SMTP("127.0.0.1", self.mta.smtp_port, local_hostname="client.test",
                          timeout=60) as smtp:
            return smtp.sendmail(sender, list(recipients), message)

    def refused(self, message: bytes, recipients) -> smtplib.SMTPDataError:
        with pytest.raises(smtplib.SMTPDataError) as caught:
            self.send(message, recipients)
        return caught.value

    def debug(self) -> str:
        tail = "\n".join(self.mta.log().splitlines()[-20:])
        return f"--- exim\n{tail}\n--- daemon\n{(self.root / 'daemon.log').read_text()[-2000:]}"


def the_message(stack: Stack, address: str, tok: str) -> bytes:
    """The one message sent with ``tok`` delivered to ``address`` (not the notices about it)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = [m for m in stack.mail.messages(address, tok) if parsed(m)["X-Test-Token"] == tok]
        if found:
            time.sleep(0.5)
            [message] = [m for m in stack.mail.messages(address, tok)
                         if parsed(m)["X-Test-Token"] == tok]
            return message
        time.sleep(0.1)
    raise AssertionError(f"{address}: no message {tok}\n{stack.debug()}")


def assert_went_through_the_spool_path(stack: Stack, message: bytes, address: str) -> None:
    """Exim handed the message as it first received it to lmsav's pipe (after the queue)."""
    first = parsed(message).get_all("Received")[-1]
    exim_id = re.search(r"\bid (\S+?);", " ".join(first.split()))[1]
    local = address.split("@")[0]
    assert f"{exim_id} => {local} <{address}> R=lmsav_scan T=lmsav_pipe" in stack.mta.log() or \
        f"{exim_id} -> {local} <{address}> R=lmsav_scan T=lmsav_pipe" in stack.mta.log()


def acl_wrapper(root: Path) -> str:
    """An lmsav Debian-exim can run, with `exim-acl` going straight to lmsav/mail/acl.py."""
    wrapper = root / "bin" / "lmsav"
    wrapper.parent.mkdir()
    wrapper.write_text(f"""#!/bin/sh
if [ "$1" = exim-acl ]; then
    shift
    PYTHONPATH={REPO} exec /usr/bin/python3 -m lmsav.mail.acl "$@"
fi
PYTHONPATH={REPO} exec /usr/bin/python3 -m lmsav.launcher "$@"
""")
    os.chmod(wrapper.parent, 0o755)
    os.chmod(wrapper, 0o755)
    return str(wrapper)


@pytest.fixture(scope="module", params=["own", "nested"])
def stack(exim, request):
    """``own``: Exim had no DATA ACL, lmsav_data is it; ``nested``: the administrator's DATA ACL
    calls it first (``require acl = lmsav_data``), as on Debian."""
    root = _make_root("exim-prequeue")
    smtp_port, reinject_port = free_port(), free_port()
    mailboxes = root / "mail"
    mailboxes.mkdir()
    mta = PrivateExim(exim, root, smtp_port, mailboxes)
    _chown(mailboxes, mta.user)
    spool = root / "spool"
    for path in (spool, *(spool / sub for sub in SUBDIRS)):
        path.mkdir(mode=0o750)
        _chown(path, mta.user)
    config = write_lmsav_config(root, spool, reinject_port)
    for name, text in EXTRA_GROUPS.items():
        (config.parent / "groups.d" / name).write_text(text)
    socket = root / "run" / "clamd.sock"
    (root / "run").mkdir(mode=0o755)
    with open(config, "a") as out:
        out.write(f'\n[daemon]\nsocket = "{socket}"\nsocket_mode = "0666"\n')
    mta.configure()
    if request.param == "nested":
        text = mta.config.read_text()
        text = text.replace("acl_smtp_rcpt = acl_check_rcpt\n",
                            "acl_smtp_rcpt = acl_check_rcpt\nacl_smtp_data = acl_check_data\n")
        text = text.replace("begin acl\n", "begin acl\n\nacl_check_data:\n  accept\n")
        mta.config.write_text(text)
    opts = setup_exim_prequeue.Options(acl_wrapper(root), mta.user, reinject_port, str(spool),
                                       str(socket), 60)
    setup_exim.apply(setup_exim_prequeue.plan_setup(setup_exim.Layout.SINGLE, mta.config, opts))
    assert ("require acl = lmsav_data" in mta.config.read_text()) == (request.param == "nested")
    stack = Stack(root, mta, Mailboxes(mailboxes), socket, spool,
                  WatcherProcess(config, root / "watch.log"), config)
    try:
        stack.start_daemon()
        mta.start()
        wait_port(reinject_port)
        stack.watcher.start()
        yield stack
    finally:
        stack.watcher.stop()
        mta.stop()
        stack.stop_daemon()
        if os.environ.get("LMSAV_KEEP_MTA") != "1":
            import shutil

            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.integration
def test_infected_mail_is_refused_at_data_with_the_groups_text_and_nothing_queued(stack):
    tok = token()
    error = stack.refused(infected_message(tok, to="bob@clean.test"), ["bob@clean.test"])
    assert error.smtp_code == 550, stack.debug()
    text = error.smtp_error.decode()
    assert REJECT_TEXT in text and "Eicar" in text
    assert not [p for sub in ("new", "work") for p in (stack.spool / sub).iterdir()]
    # The recipient hears of it by the group's notice (sent before the reply), never gets it.
    [notice] = stack.mail.wait("bob@clean.test", tok)
    assert parsed(notice)["X-Test-Token"] is None and notice.startswith(b"Return-path: <>")
    assert stack.mta.queue() == []


@pytest.mark.integration
def test_clean_mail_is_delivered_with_the_av_headers(stack):
    tok = token()
    sent = build_message(tok, ("notes.txt", b"harmless notes\n", "text/plain"))
    assert stack.send(sent, ["bob@clean.test"]) == {}
    [got] = stack.mail.wait("bob@clean.test", tok)
    headers = parsed(got)
    assert headers["X-AV-Status"] == "clean" and headers["X-AV-Checked"]
    assert str(headers["Subject"]) == f"report {tok}"
    assert split_message(got)[1] == split_message(sent)[1]
    # Decided before the queue: received once, never sent back by lmsav's spool path.
    assert len(headers.get_all("Received")) == 1


@pytest.mark.integration
def test_mail_a_group_lets_through_gets_the_subject_prefix_and_loses_forged_headers(stack):
    tok = token()
    sent = infected_message(tok, to="carol@clean.test").replace(
        b"X-Test-Token:", b"X-AV-Status: clean\r\nX-Test-Token:")
    assert stack.send(sent, ["carol@clean.test"]) == {}
    got = the_message(stack, "carol@clean.test", tok)
    headers = parsed(got)
    assert str(headers["Subject"]) == f"{PREFIX} report {tok}"
    assert headers.get_all("X-AV-Status") == ["infected"]
    assert "Eicar" in str(headers["X-AV-Threats"])
    assert split_message(got)[1] == split_message(sent)[1]
    assert len(headers.get_all("Received")) == 1


@pytest.mark.integration
def test_mail_every_group_drops_is_accepted_and_thrown_away(stack):
    tok = token()
    assert stack.send(infected_message(tok, to="bob@drop.test"), ["bob@drop.test"]) == {}
    stack.mail.wait("bob@drop.test", tok)  # the group's notice
    time.sleep(2)
    assert not [m for m in stack.mail.messages("bob@drop.test", tok)
                if parsed(m)["X-Test-Token"] == tok]
    assert ":blackhole:" in stack.mta.log()


@pytest.mark.integration
def test_a_cured_body_and_a_second_group_go_through_the_spool_path(stack):
    tok = token()
    message = infected_message(tok, to="dave@cure.test, carol@warn.test")
    assert stack.send(message, ["dave@cure.test", "carol@warn.test"]) == {}
    cured = the_message(stack, "dave@cure.test", tok)
    assert "eicar.com" not in zip_members(cured, "files.zip")
    assert parsed(cured)["X-AV-Status"]
    warned = the_message(stack, "carol@warn.test", tok)
    assert parsed(warned)["X-AV-Status"] == "infected"
    assert "replaced by lmsav" in parsed(warned).get_content()
    # Each recipient got its own group's message, through lmsav enqueue after the queue.
    assert_went_through_the_spool_path(stack, cured, "dave@cure.test")
    assert_went_through_the_spool_path(stack, warned, "carol@warn.test")


@pytest.mark.integration
def test_without_the_daemon_exim_defers_and_nothing_is_accepted(stack):
    tok = token()
    stack.socket.rename(stack.socket.with_name("moved.sock"))
    try:
        error = stack.refused(build_message(tok), ["bob@clean.test"])
    finally:
        stack.socket.with_name("moved.sock").rename(stack.socket)
    assert error.smtp_code == 451 and b"4.3.0" in error.smtp_error
    assert stack.mta.queue() == []
    # Back again: the client's retry goes through.
    assert stack.send(build_message(tok), ["bob@clean.test"]) == {}
    assert stack.mail.wait("bob@clean.test", tok)


@pytest.mark.integration
def test_an_eicar_file_body_is_refused_as_well(stack):
    error = stack.refused(build_message(token(), ("eicar.com", EICAR, "application/octet-stream")),
                          ["dave@clean.test"])
    assert error.smtp_code == 550 and REJECT_TEXT.encode() in error.smtp_error


@pytest.mark.integration
def test_clean_mail_to_two_groups_reaches_each_recipient_once(stack):
    tok = token()
    sent = build_message(tok, to="bob@clean.test, carol@warn.test")
    assert stack.send(sent, ["bob@clean.test", "carol@warn.test"]) == {}
    for address in ("bob@clean.test", "carol@warn.test"):
        got = the_message(stack, address, tok)
        assert parsed(got)["X-AV-Status"] == "clean"
        assert split_message(got)[1] == split_message(sent)[1]
        assert_went_through_the_spool_path(stack, got, address)


@pytest.mark.integration
def test_a_failing_acl_command_makes_exim_defer(stack):
    wrapper = stack.root / "bin" / "lmsav"
    working = wrapper.read_text()
    wrapper.write_text("#!/bin/sh\necho broken >&2\nexit 70\n")
    try:
        error = stack.refused(build_message(token()), ["bob@clean.test"])
    finally:
        wrapper.write_text(working)
    assert error.smtp_code == 451 and b"4.3.0" in error.smtp_error
    assert stack.mta.queue() == []


@pytest.mark.integration
def test_a_bounce_is_decided_before_the_queue_too(stack):
    tok = token()
    sent = build_message(tok)
    assert stack.send(sent, ["bob@clean.test"], sender="") == {}
    got = the_message(stack, "bob@clean.test", tok)
    assert got.startswith(b"Return-path: <>") and parsed(got)["X-AV-Status"] == "clean"
    assert len(parsed(got).get_all("Received")) == 1


def test_the_hot_path_and_the_setup_agree_on_the_daemons_socket():
    assert acl.DEFAULT_SOCKET == setup_exim_prequeue.DEFAULT_SOCKET
