"""lmsav behind a real Exim: `lmsav setup exim` on Debian's split and non-split configurations and
on a plain configuration file, then mail over SMTP to Maildirs.

Exim (exim4-daemon-heavy) is unpacked beside Postfix by scripts/mta/exim-unpack; the stack
(tests/mta/conftest.py) runs it with `-C` on a private configuration set up by `lmsav setup exim
--apply`, with lmsav's groups (drop.test drops, warn.test warns, cure.test cures, the rest
rejects) and a running `lmsav spool watch`, whose listener ([spool] listen) the smtp transport
delivers to, as setup makes it by default; the pipe stack (`--pipe`) runs `lmsav enqueue`
instead, and the tests of a spool that cannot be written use it.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from lmsav.spool import setup_exim
from tests.mta.conftest import (
    ADMIN,
    SENDER,
    assert_unchanged_but_av_headers,
    attachment_names,
    build_message,
    exim_root,
    full_spool,
    infected_message,
    lmsav_cli,
    parsed,
    run_setup,
    token,
    unpacked_exim,
    wait_port,
    zip_members,
)

PLAIN = """\
primary_hostname = mx.example
daemon_smtp_ports = <; 25 ; 587
begin acl
acl_check_rcpt:
  accept
begin routers
dnslookup:
  driver = dnslookup
  transport = remote_smtp
begin transports
remote_smtp:
  driver = smtp
"""


def text_of(raw: bytes) -> str:
    return parsed(raw).get_body(("plain",)).get_content()


def by_subject(messages: list[bytes], start: str) -> bytes:
    [found] = [m for m in messages if str(parsed(m)["Subject"]).startswith(start)]
    return found


# -- editing configuration text (no Exim needed) -------------------------------------------------

def test_by_default_an_smtp_transport_goes_to_the_listener_and_comes_out_byte_for_byte():
    options = setup_exim.Options("/usr/bin/lmsav", port=10026, transport="smtp")
    added = setup_exim.add_lmsav(PLAIN, options)
    lines = added.splitlines()
    assert "  transport = lmsav_smtp" in lines and "lmsav_pipe:" not in lines
    start = lines.index("lmsav_smtp:")
    assert lines[start:lines.index("# lmsav: end", start)] == [
        "lmsav_smtp:", "  driver = smtp", "  hosts = 127.0.0.1", "  port = 10025",
        "  hosts_override", "  allow_localhost", "  protocol = smtp", "  hosts_avoid_tls = *",
        "  connect_timeout = 10s"]
    # The reinjection port and the loop condition are the pipe's.
    assert "daemon_smtp_ports = <; 25 ; 587 ; 10026" in lines
    assert any("{!eq{$received_port}{10026}}" in line for line in lines)
    assert setup_exim.strip_lmsav(added) == PLAIN
    lmtp = setup_exim.add_lmsav(PLAIN, setup_exim.Options(
        "/usr/bin/lmsav", transport="lmtp", listen_port=10030))
    assert "  protocol = lmtp" in lmtp and "  port = 10030" in lmtp
    # Switching transports replaces lmsav's blocks: nothing of the other stays.
    switched = setup_exim.add_lmsav(setup_exim.strip_lmsav(added), setup_exim.Options(
        "/usr/bin/lmsav", port=10026))
    assert "lmsav_smtp" not in switched and "  transport = lmsav_pipe" in switched


def test_router_transport_and_port_go_in_and_come_out_byte_for_byte():
    options = setup_exim.Options("/usr/bin/lmsav", "lmsav", 10026)  # the pipe
    added = setup_exim.add_lmsav(PLAIN, options)
    lines = added.splitlines()
    # The router comes first after "begin routers", the transport first after "begin transports".
    assert lines[lines.index("begin routers") + 3] == "lmsav_scan:"
    assert lines[lines.index("begin transports") + 1].startswith("# lmsav: begin")
    assert lines[lines.index("begin transports") + 2] == "lmsav_pipe:"
    # The administrator's port list is kept, commented out, and extended in its own syntax.
    assert "#lmsav-was# daemon_smtp_ports = <; 25 ; 587" in lines
    assert "daemon_smtp_ports = <; 25 ; 587 ; 10026" in lines
    assert ("  command = /bin/sh -c 'exec /usr/bin/lmsav enqueue -f \"\\$SENDER\" -q "
            "\"\\$MESSAGE_ID\" -- \"\\$@\"' lmsav $pipe_addresses") in lines
    assert setup_exim.strip_lmsav(added) == PLAIN
    assert setup_exim.add_lmsav(setup_exim.strip_lmsav(added), options) == added


def test_a_configuration_without_ports_gets_smtp_and_the_reinjection_port():
    text = PLAIN.replace("daemon_smtp_ports = <; 25 ; 587\n", "")
    added = setup_exim.add_lmsav(text, setup_exim.Options("/usr/bin/lmsav", port=10030))
    main = added.split("begin acl")[0]
    assert "daemon_smtp_ports = smtp : 10030" in main
    assert setup_exim.strip_lmsav(added) == text


def test_a_port_already_listed_is_left_alone():
    text = PLAIN.replace("<; 25 ; 587", "25 : 10026")
    added = setup_exim.add_lmsav(text, setup_exim.Options("/usr/bin/lmsav"))
    assert "#lmsav-was#" not in added and "daemon_smtp_ports = 25 : 10026\n" in added


def test_setup_refuses_a_path_the_command_cannot_hold(tmp_path):
    conf = tmp_path / "configure"
    conf.write_text(PLAIN)
    from click.testing import CliRunner

    result = CliRunner().invoke(lmsav_cli(), ["setup", "exim", "--config-file", str(conf),
                                              "--pipe", "--lmsav", "/opt/my lmsav/bin/lmsav"])
    assert result.exit_code == 2 and "must be one word" in result.output
    assert conf.read_text() == PLAIN
    # The listener's transport runs nothing of lmsav's: the path does not matter to it.
    result = CliRunner().invoke(lmsav_cli(), ["setup", "exim", "--config-file", str(conf),
                                              "--lmsav", "/opt/my lmsav/bin/lmsav"])
    assert result.exit_code == 0 and "lmsav_smtp:" in result.output, result.output


# -- Debian's configurations, checked with the real Exim -----------------------------------------

@pytest.fixture(scope="module")
def exim() -> str:
    if os.geteuid() != 0:
        pytest.skip("the Exim tests need root (Exim is unpacked and run as Debian-exim)")
    return unpacked_exim()


def debian_config(exim: str, directory: Path, split: bool) -> Path:
    """A copy of Debian's /etc/exim4 from the unpacked exim4-config, with its debconf answers."""
    shutil.copytree(exim_root(exim) / "etc" / "exim4", directory)
    (directory / "update-exim4.conf.conf").write_text(f"""\
dc_eximconfig_configtype='local'
dc_other_hostnames='example.org'
dc_local_interfaces='127.0.0.1 ; ::1'
dc_readhost=''
dc_relay_domains=''
dc_minimaldns='false'
dc_relay_nets=''
dc_smarthost=''
CFILEMODE='644'
dc_use_split_config='{"true" if split else "false"}'
dc_hide_mailname=''
dc_mailname_in_oh='true'
dc_localdelivery='mail_spool'
""")
    return directory


def generate(exim: str, directory: Path, out: Path) -> Path:
    """What update-exim4.conf makes of the directory: the configuration Exim runs."""
    out.unlink(missing_ok=True)
    script = exim_root(exim) / "usr" / "sbin" / "update-exim4.conf"
    subprocess.run(["sh", str(script), "-d", str(directory), "-o", str(out)], check=True,
                   capture_output=True)
    return out


def exim_says(exim: str, config: Path, *args: str) -> str:
    proc = subprocess.run([exim, "-C", str(config), *args], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.integration
@pytest.mark.parametrize("split", [True, False], ids=["split", "template"])
def test_setup_on_debian_configurations_routes_everything_through_lmsav(exim, tmp_path, split):
    original = debian_config(exim, tmp_path / "pristine", split)
    etc = debian_config(exim, tmp_path / "exim4", split)
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    common = ["--config-dir", etc, "--pipe", "--user", "nobody", "--lmsav", lmsav]

    shown = run_setup("exim", *common)
    layout = "split configuration (conf.d/)" if split else "non-split configuration"
    assert layout in shown and "update-exim4.conf" in shown
    if split:
        assert "+++ " + str(etc / "conf.d/router/050_lmsav") in shown
    assert not filecmp.dircmp(original, etc).diff_files  # only printed

    run_setup("exim", "--apply", *common)
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    assert "daemon_smtp_ports = smtp : 10026" in exim_says(exim, config, "-bP",
                                                            "daemon_smtp_ports")
    transport = exim_says(exim, config, "-bP", "transport", "lmsav_pipe")
    assert "batch_max = 1000" in transport and "temp_errors = *" in transport
    # Mail from outside, and mail submitted locally, goes to lmsav first ...
    for extra in ([], ["-oMi", "192.0.2.1.25"], ["-oMi", "127.0.0.1.25"]):
        routed = exim_says(exim, config, *extra, "-bt", "root@localhost", "someone@example.net")
        assert routed.count("router = lmsav_scan, transport = lmsav_pipe") == 2, routed
    # ... what lmsav sends back to 127.0.0.1:10026 takes the ordinary routes.
    routed = exim_says(exim, config, "-oMi", "127.0.0.1.10026", "-bt", "root@localhost")
    assert "lmsav" not in routed and "transport = address_file" in routed
    # Recipient verification at SMTP time does not stop at lmsav's router: an unknown local
    # user is still refused.
    assert "root@localhost verified" in exim_says(exim, config, "-bv", "root@localhost")
    unknown = subprocess.run([exim, "-C", str(config), "-bv", "nosuchuser@localhost"],
                             capture_output=True, text=True)
    assert unknown.returncode == 2 and "Unrouteable address" in unknown.stdout

    assert "is already set up for lmsav" in run_setup("exim", "--apply", *common)
    run_setup("exim", "--remove", "--apply", "--config-dir", etc)
    compare = filecmp.dircmp(original, etc, ignore=[])
    assert not compare.diff_files and not compare.left_only
    assert all(".lmsav-" in name for name in compare.right_only)
    for sub in ("main", "router", "transport"):
        if (etc / "conf.d" / sub).is_dir():
            extra = filecmp.dircmp(original / "conf.d" / sub, etc / "conf.d" / sub).right_only
            assert all(".lmsav-" in name for name in extra), extra
    removed = generate(exim, etc, tmp_path / "config.removed")
    assert "lmsav" not in removed.read_text()


@pytest.mark.integration
@pytest.mark.parametrize("split", [True, False], ids=["split", "template"])
def test_the_default_smtp_transport_on_debian_configurations_and_back_to_the_pipe(exim, tmp_path,
                                                                                  split):
    original = debian_config(exim, tmp_path / "pristine", split)
    etc = debian_config(exim, tmp_path / "exim4", split)
    shown = run_setup("exim", "--apply", "--config-dir", etc)
    assert "lmsav_smtp:" in shown and "Once Exim runs the new configuration" in shown
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    transport = exim_says(exim, config, "-bP", "transport", "lmsav_smtp")
    for line in ("driver = smtp", "hosts = 127.0.0.1", "port = 10025", "hosts_override",
                 "allow_localhost", "protocol = smtp"):
        assert line in transport.splitlines(), transport
    for extra in ([], ["-oMi", "192.0.2.1.25"]):
        routed = exim_says(exim, config, *extra, "-bt", "root@localhost", "someone@example.net")
        assert routed.count("router = lmsav_scan, transport = lmsav_smtp") == 2, routed
    routed = exim_says(exim, config, "-oMi", "127.0.0.1.10026", "-bt", "root@localhost")
    assert "lmsav" not in routed

    # LMTP, then the pipe: each replaces the other, nothing of it stays.
    run_setup("exim", "--apply", "--lmtp", "--listen-port", "10030", "--config-dir", etc)
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    transport = exim_says(exim, config, "-bP", "transport", "lmsav_smtp").splitlines()
    assert "protocol = lmtp" in transport and "port = 10030" in transport
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    run_setup("exim", "--apply", "--pipe", "--user", "nobody", "--lmsav", lmsav,
              "--config-dir", etc)
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    assert "lmsav_smtp" not in config.read_text() and "lmsav_pipe:" in config.read_text()
    run_setup("exim", "--remove", "--apply", "--config-dir", etc)
    compare = filecmp.dircmp(original, etc, ignore=[])
    assert not compare.diff_files and not compare.left_only
    assert "lmsav" not in generate(exim, etc, tmp_path / "config.removed").read_text()


@pytest.mark.integration
def test_an_older_split_setup_with_the_pipe_file_is_switched_and_removed(exim, tmp_path):
    etc = debian_config(exim, tmp_path / "exim4", split=True)
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    run_setup("exim", "--apply", "--pipe", "--user", "nobody", "--lmsav", lmsav,
              "--config-dir", etc)
    # Where the pipe transport was before the transport could be chosen.
    (etc / setup_exim.SPLIT_TRANSPORT).rename(etc / setup_exim.OLD_SPLIT_TRANSPORT)
    run_setup("exim", "--apply", "--config-dir", etc)
    assert not (etc / setup_exim.OLD_SPLIT_TRANSPORT).exists()
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    assert "lmsav_pipe" not in config.read_text()
    run_setup("exim", "--remove", "--apply", "--config-dir", etc)
    assert not (etc / setup_exim.SPLIT_TRANSPORT).exists()


@pytest.mark.integration
def test_split_setup_extends_the_administrators_own_port_setting(exim, tmp_path):
    etc = debian_config(exim, tmp_path / "exim4", split=True)
    own = etc / "conf.d" / "main" / "04_local_ports"
    own.write_text("daemon_smtp_ports = 25 : 465 : 587\n")
    lmsav = shutil.which("lmsav") or "/usr/bin/true"
    run_setup("exim", "--apply", "--config-dir", etc, "--user", "nobody", "--lmsav", lmsav)
    assert not (etc / setup_exim.SPLIT_MAIN).exists()  # Exim refuses an option set twice
    config = generate(exim, etc, tmp_path / "config.autogenerated")
    assert exim_says(exim, config, "-bP", "daemon_smtp_ports").strip() == (
        "daemon_smtp_ports = 25 : 465 : 587 : 10026")
    run_setup("exim", "--remove", "--apply", "--config-dir", etc)
    assert own.read_text() == "daemon_smtp_ports = 25 : 465 : 587\n"


# -- mail through Exim and lmsav ------------------------------------------------------------------

@pytest.mark.integration
def test_clean_mail_arrives_unchanged_but_for_the_av_headers(exim_stack):
    tok = token()
    sent = build_message(tok, ("data.bin", bytes(range(256)) * 40, "application/octet-stream"),
                         text="Line one.\n.leading dot\nFrom the start of a line\n")
    exim_stack.send(sent, ["bob@clean.test"])
    [got] = exim_stack.wait("bob@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
    assert parsed(got)["Return-path"] == f"<{SENDER}>"


@pytest.mark.integration
def test_a_bounce_keeps_its_empty_sender(exim_stack):
    tok = token()
    sent = build_message(tok, subject="Mail delivery failed")
    exim_stack.send(sent, ["carol@clean.test"], sender="")
    [got] = exim_stack.wait("carol@clean.test", tok)
    assert parsed(got)["Return-path"] == "<>"
    assert_unchanged_but_av_headers(sent, got)


@pytest.mark.integration
def test_infected_mail_is_handled_per_group(exim_stack):
    toks = {domain: token() for domain in ("drop.test", "warn.test", "cure.test", "reject.test")}
    for domain, tok in toks.items():
        exim_stack.send(infected_message(tok, f"bob@{domain}"), [f"bob@{domain}"])

    [notice] = exim_stack.wait("bob@drop.test", toks["drop.test"])
    assert str(parsed(notice)["Subject"]).startswith("A message to you")
    assert b"EICAR" not in notice and attachment_names(notice) == []

    warned = by_subject(exim_stack.wait("bob@warn.test", toks["warn.test"], count=2), "report")
    assert parsed(warned)["X-AV-Status"] == "infected" and b"EICAR" not in warned
    assert "Eicar-Test-Signature" in text_of(warned)

    cured = by_subject(exim_stack.wait("bob@cure.test", toks["cure.test"], count=2), "report")
    assert attachment_names(cured) == ["notes.txt", "files.zip"]
    assert zip_members(cured, "files.zip") == ["clean.txt"]

    [dsn] = exim_stack.wait(SENDER, toks["reject.test"])
    assert parsed(dsn)["Return-path"] == "<>"
    assert "<bob@reject.test>: 550 5.7.1" in dsn.decode() and b"EICAR" not in dsn

    for domain, tok in toks.items():
        [admin] = exim_stack.wait(ADMIN, tok)
        assert "Eicar-Test-Signature" in text_of(admin)


@pytest.mark.integration
def test_a_message_to_several_groups_goes_to_lmsav_once_and_is_split(exim_stack):
    tok = token()
    rcpts = ["bob@drop.test", "carol@warn.test", "dave@cure.test", "alice@reject.test"]
    exim_stack.send(infected_message(tok, ", ".join(rcpts)), rcpts)
    # One admin notice about every group, not one per group.
    [admin] = exim_stack.wait(ADMIN, tok)
    [line] = [ln for ln in text_of(admin).splitlines() if ln.strip().startswith("Group:")]
    assert sorted(line.split(":", 1)[1].replace(",", " ").split()) == \
        ["cure", "default", "drop", "warn"]
    warned = by_subject(exim_stack.wait("carol@warn.test", tok, count=2), "report")
    assert b"EICAR" not in warned
    cured = by_subject(exim_stack.wait("dave@cure.test", tok, count=2), "report")
    assert zip_members(cured, "files.zip") == ["clean.txt"]
    exim_stack.wait(SENDER, tok)
    # The smtp transport handed all four recipients over in one transaction.
    lines = [line for line in (exim_stack.root / "watch.log").read_text().splitlines()
             if f"message_id=<{tok}@senders.test>" in line]
    assert len(lines) == 1 and all(r in lines[0] for r in rcpts), lines


@pytest.mark.integration
def test_a_read_only_spool_makes_exim_defer_and_deliver_later(exim_pipe_stack):
    stack = exim_pipe_stack
    tmp = stack.spool / "tmp"
    tok = token()
    os.chmod(tmp, 0o550)  # `lmsav enqueue` runs as Debian-exim, the owner: it cannot write now
    try:
        sent = build_message(tok)
        stack.send(sent, ["dave@clean.test"])
        [received] = stack.log_lines("<= alice@senders.test", f"id={tok}@senders.test")
        exim_id = received.split()[2]
        stack.log_lines(exim_id, "lmsav enqueue: cannot write", "Permission denied")
        deferred = stack.log_lines(exim_id, "T=lmsav_pipe defer")
        assert "returned 75" in deferred[0]
        assert stack.mail.messages("dave@clean.test", tok) == []
        assert any(exim_id in block for block in stack.mta.queue())
    finally:
        os.chmod(tmp, 0o750)
    stack.mta.flush()
    [got] = stack.wait("dave@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)


@pytest.mark.integration
def test_reinjection_failing_for_a_while_delays_but_loses_nothing(exim_stack):
    stack = exim_stack
    stack.mta.stop()
    stack.mta.start(ports=str(stack.smtp_port))  # without the reinjection port
    wait_port(stack.reinject_port, up=False)
    tok = token()
    try:
        sent = build_message(tok)
        stack.send(sent, ["alice@clean.test"])
        path = stack.root / "watch.log"
        deadline = time.monotonic() + 30
        retries = []
        while time.monotonic() < deadline and len(retries) < 2:
            retries = [line for line in path.read_text().splitlines()
                       if f"message_id=<{tok}@senders.test>" in line and "result=retry" in line]
            time.sleep(0.2)
        assert len(retries) >= 2, stack.debug()
        assert stack.spool_entries() and stack.mail.messages("alice@clean.test", tok) == []
    finally:
        stack.mta.stop()
        stack.mta.start()
    wait_port(stack.reinject_port)
    [got] = stack.wait("alice@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)


@pytest.mark.integration
def test_a_full_spool_makes_exim_defer_and_deliver_later(exim_pipe_stack):
    stack = exim_pipe_stack
    setup = ["exim", "--apply", "--config-dir", stack.mta.root, "--port", stack.reinject_port,
             "--pipe", "--user", stack.mta.user, "--lmsav", stack.enqueue_path]
    tok = token()
    with full_spool(stack, setup):
        sent = build_message(tok, ("big.bin", os.urandom(20000), "application/octet-stream"))
        stack.send(sent, ["carol@clean.test"])
        [received] = stack.log_lines("<= alice@senders.test", f"id={tok}@senders.test")
        exim_id = received.split()[2]
        stack.log_lines(exim_id, "lmsav enqueue", "No space left on device")
        stack.log_lines(exim_id, "T=lmsav_pipe defer")
        assert stack.mail.messages("carol@clean.test", tok) == []
    stack.mta.flush()
    [got] = stack.wait("carol@clean.test", tok)
    assert_unchanged_but_av_headers(sent, got)
