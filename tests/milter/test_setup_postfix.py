"""`lmsav setup postfix --milter`: the main.cf and master.cf lines on the configuration a fresh
installation has, beside other milters and after the content_filter mode; then a private Postfix
set up by it, with `lmsav milter` running, refusing EICAR and delivering clean mail and the
notices; `--remove` gives the files back byte for byte."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.milter.conftest import ADMIN, build, infected, write_config
from tests.mta.conftest import (
    Mailboxes,
    PrivatePostfix,
    _chown,
    _make_root,
    free_port,
    have_postfix,
    lmsav_cli,
    parsed,
    program,
    run_setup,
    token,
    wait_port,
    write_stock_postfix_config,
)

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_postfix(),
                                 reason="Postfix is not installed (Debian package postfix)")]

SENDER = "alice@senders.test"
FILES = ("main.cf", "master.cf")


@pytest.fixture
def etc(tmp_path) -> Path:
    etc = tmp_path / "postfix"
    write_stock_postfix_config(etc)
    return etc


def postconf(etc: Path, *args: str) -> str:
    return subprocess.run([program("postconf"), "-c", str(etc), *args], check=True,
                          capture_output=True, text=True).stdout


def files(etc: Path) -> dict[str, bytes]:
    return {name: (etc / name).read_bytes() for name in FILES}


def setup(etc: Path, *args) -> str:
    return run_setup("postfix", "--config-dir", etc, *args)


def test_milter_lines_are_printed_applied_once_and_removed_to_the_original_files(etc):
    original = files(etc)
    shown = setup(etc, "--milter")
    for line in ("+smtpd_milters = inet:127.0.0.1:8894", "+milter_protocol = 6",
                 "+milter_default_action = tempfail", "+127.0.0.1:10026 inet",
                 "-o smtpd_milters=", "-o content_filter="):
        assert line in shown
    assert "non_smtpd_milters" not in shown and "pipe" not in shown
    assert files(etc) == original  # only printed

    done = setup(etc, "--milter", "--apply")
    assert "listening on inet:8894@127.0.0.1" in done
    assert postconf(etc, "-h", "smtpd_milters").strip() == "inet:127.0.0.1:8894"
    assert sorted(postconf(etc, "-n", "milter_protocol", "milter_default_action").splitlines()) \
        == ["milter_default_action = tempfail", "milter_protocol = 6"]
    assert not postconf(etc, "-n", "content_filter").strip()
    assert not postconf(etc, "-M", "lmsav/unix").strip()
    reinject = postconf(etc, "-P", "127.0.0.1:10026/inet").splitlines()
    assert "127.0.0.1:10026/inet/smtpd_milters =" in reinject
    assert "127.0.0.1:10026/inet/content_filter =" in reinject
    assert ("127.0.0.1:10026/inet/receive_override_options = "
            "no_unknown_recipient_checks,no_header_body_checks,no_milters") in reinject

    assert "already set up for lmsav; nothing to change" in setup(etc, "--milter", "--apply")

    removal = setup(etc, "--remove")
    assert "-smtpd_milters = inet:127.0.0.1:8894" in removal
    setup(etc, "--milter", "--remove", "--apply")
    assert files(etc) == original
    assert "has no lmsav settings" in setup(etc, "--remove", "--apply")


def test_non_smtpd_milters_come_with_the_flag_and_go_without_it(etc):
    original = files(etc)
    setup(etc, "--milter", "--non-smtpd-milters", "--apply")
    assert postconf(etc, "-h", "non_smtpd_milters").strip() == "inet:127.0.0.1:8894"
    shown = setup(etc, "--milter", "--apply")
    assert "-non_smtpd_milters = inet:127.0.0.1:8894" in shown
    assert not postconf(etc, "-n", "non_smtpd_milters").strip()
    setup(etc, "--milter", "--non-smtpd-milters", "--apply")
    setup(etc, "--remove", "--apply")
    assert files(etc) == original


def test_other_milters_are_kept_and_so_are_the_settings_they_share(etc):
    postconf(etc, "-e", "smtpd_milters = unix:opendkim/opendkim.sock",
             "milter_default_action = tempfail")
    shown = setup(etc, "--milter", "--apply")
    assert "+smtpd_milters = unix:opendkim/opendkim.sock, inet:127.0.0.1:8894" in shown
    assert "milter_default_action" not in shown  # already as wanted
    assert "+milter_protocol = 6" in shown
    removal = setup(etc, "--remove", "--apply")
    assert "+smtpd_milters = unix:opendkim/opendkim.sock" in removal
    # The other milter may rely on them: they stay, and the listing says so.
    assert "note: milter_protocol = 6 left as it is: other milters remain" in removal
    assert postconf(etc, "-h", "smtpd_milters").strip() == "unix:opendkim/opendkim.sock"
    assert postconf(etc, "-h", "milter_default_action").strip() == "tempfail"


def test_a_milter_default_action_of_accept_is_made_tempfail_with_a_note(etc):
    postconf(etc, "-e", "milter_default_action = accept")
    shown = setup(etc, "--milter", "--apply")
    assert "-milter_default_action = accept" in shown
    assert "+milter_default_action = tempfail" in shown
    assert "note: milter_default_action was accept" in shown


@pytest.mark.parametrize("transport", ["smtp", "pipe"])
def test_each_mode_takes_the_other_out(etc, transport):
    original = files(etc)
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    after_queue = ["--pipe", "--user", "nobody", "--lmsav", lmsav] if transport == "pipe" else []
    content_filter = "lmsav:dummy" if transport == "pipe" else "lmsav:[127.0.0.1]:10025"
    setup(etc, "--apply", *after_queue)
    switched = setup(etc, "--milter", "--apply")
    assert f"-content_filter = {content_filter}" in switched and "-lmsav      unix" in switched
    assert not postconf(etc, "-n", "content_filter").strip()
    assert not postconf(etc, "-M", "lmsav/unix").strip()
    # The SMTP client's limits in main.cf go with it.
    assert "lmsav_destination" not in postconf(etc, "-n")
    back = setup(etc, "--apply", *after_queue)
    assert "-smtpd_milters = inet:127.0.0.1:8894" in back
    assert f"+content_filter = {content_filter}" in back
    assert not postconf(etc, "-n", "smtpd_milters").strip()
    setup(etc, "--remove", "--apply")
    assert files(etc) == original


def test_a_unix_socket_is_placed_where_a_chrooted_smtpd_sees_it(etc):
    queue = postconf(etc, "-h", "queue_directory").strip()
    # Debian's smtpd runs chrooted in the queue directory: an absolute path is looked up in it.
    shown = setup(etc, "--milter", "--milter-socket", "unix:/lmsav/milter.sock")
    assert "+smtpd_milters = unix:/lmsav/milter.sock" in shown
    assert f"listen = \"unix:{queue}/lmsav/milter.sock\"" in shown
    # A relative path is taken from the queue directory, chrooted or not.
    shown = setup(etc, "--milter", "--milter-socket", "unix:lmsav/milter.sock")
    assert f"at {queue}/lmsav/milter.sock" in shown


def test_bad_milter_socket_and_flag_without_milter_are_one_line_errors(etc):
    original = files(etc)
    for args, words in ((["--milter", "--milter-socket", "tcp:1"], "expected inet:HOST:PORT"),
                        (["--non-smtpd-milters"], "--non-smtpd-milters goes with --milter")):
        result = CliRunner().invoke(lmsav_cli(), ["setup", "postfix", "--apply",
                                                  "--config-dir", str(etc), *args])
        assert result.exit_code == 2, result.output
        assert words in result.output and "Traceback" not in result.output
    assert files(etc) == original


# -- a private Postfix set up by `lmsav setup postfix --milter --apply` -------------------------

@pytest.fixture(scope="module")
def stack():
    if os.geteuid() != 0:
        pytest.skip("the Postfix tests run a real Postfix and need root")
    root = _make_root("milter-setup")
    mailboxes = root / "mail"
    mailboxes.mkdir()
    smtp_port, milter_port, reinject_port = free_port(), free_port(), free_port()
    postfix = PrivatePostfix(root, smtp_port, mailboxes)
    _chown(mailboxes, postfix.user)
    postfix.configure()
    original = files(postfix.etc)
    config = write_config(root / "lmsav", root / "unused-notices")
    # Where the milter listens and where its notices go come from [milter] and [spool].
    config.write_text(config.read_text().replace(
        '[spool]\nreinject = "dir:', f'[spool]\nreinject = "smtp:127.0.0.1:{reinject_port}"\n#')
        + f'\n[milter]\nlisten = "inet:{milter_port}@127.0.0.1"\n')
    output = run_setup("postfix", "--milter", "--apply", "--config-dir", postfix.etc,
                       "--milter-socket", f"inet:127.0.0.1:{milter_port}",
                       "--port", reinject_port, config=config)
    log = open(root / "milter.log", "ab")  # noqa: SIM115 - closed at teardown
    milter = subprocess.Popen(
        [sys.executable, "-c", "from lmsav.milter.commands import milter; milter()"],
        env=dict(os.environ, LMSAV_CONFIG=str(config)), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_port(milter_port, timeout=60)
        postfix.start()
        wait_port(reinject_port)
        yield postfix, Mailboxes(mailboxes), root, original, output, config
    finally:
        postfix.stop()
        milter.terminate()
        try:
            milter.wait(20)
        except subprocess.TimeoutExpired:
            milter.kill()
            milter.wait(10)
        log.close()
        if os.environ.get("LMSAV_KEEP_MTA") != "1":
            shutil.rmtree(root, ignore_errors=True)


def debug(root: Path) -> str:
    parts = []
    for name in ("milter.log", "maillog"):
        path = root / name
        parts.append(f"--- {name}\n" + (path.read_text(errors="replace")[-4000:]
                                        if path.exists() else "(none)"))
    return "\n".join(parts)


def test_setup_found_lmsavs_own_configuration_fitting(stack):
    *_rest, output, _config = stack
    assert "note:" not in output, output


def test_eicar_is_refused_with_the_groups_text_and_the_notices_delivered(stack):
    postfix, boxes, root, *_ = stack
    tok = token()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client, \
            pytest.raises(smtplib.SMTPDataError) as refused:
        client.ehlo("client.test")
        client.sendmail(SENDER, ["bob@clean.test"], infected(subject=tok))
    assert refused.value.smtp_code == 550, debug(root)
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 Refused here: ") and "Eicar-Test-Signature" in text
    # The admin's notice came back through the reinjection listener, not scanned again.
    [notice] = boxes.wait(ADMIN, tok)
    assert "Eicar-Test-Signature" in notice.decode(errors="replace"), debug(root)
    assert b"postfix/lmsav-reinject" in (root / "maillog").read_bytes()
    # The recipient gets the group's notice, never the message.
    for got in boxes.messages("bob@clean.test", tok):
        assert parsed(got)["Auto-Submitted"] == "auto-generated" and b"EICAR" not in got


def test_clean_mail_is_delivered_with_av_headers(stack):
    postfix, boxes, root, *_ = stack
    tok = token()
    with smtplib.SMTP("127.0.0.1", postfix.smtp_port, timeout=60) as client:
        client.ehlo("client.test")
        assert client.sendmail(SENDER, ["bob@clean.test"], build(subject=tok)) == {}
    [delivered] = boxes.wait("bob@clean.test", tok)
    msg = parsed(delivered)
    assert msg["X-AV-Status"] == "clean", debug(root)
    assert msg["X-AV-Checked"].startswith("lmsav ")


def test_remove_gives_back_the_files_byte_for_byte(stack):
    """Runs last: it takes lmsav out of the running instance's configuration."""
    postfix, _boxes, _root, original, _output, config = stack
    run_setup("postfix", "--milter", "--remove", "--apply", "--config-dir", postfix.etc,
              "--milter-socket", postconf(postfix.etc, "-h", "smtpd_milters").strip(),
              config=config)
    assert files(postfix.etc) == original
