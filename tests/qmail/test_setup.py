"""`lmsav setup qmail`: the tcpserver rules, checked with the real tcprules, tcprulescheck and
tcpserver (ucspi-tcp), and the per-connection settings they carry."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main as cli
from lmsav.qmail import setup as qsetup

from .conftest import EICAR, WRAPPER, envelope
from .test_queue import INFECTED

TOOLS = all(shutil.which(t) for t in ("tcprules", "tcprulescheck", "tcpserver"))
need_tools = pytest.mark.skipif(not TOOLS, reason="ucspi-tcp not installed")
W = "/usr/local/bin/lmsav-qmail-queue"


def test_plan_adds_qmailqueue_to_allow_rules_and_a_catch_all_then_removes_exactly_that(tmp_path):
    rules = tmp_path / "tcp.smtp"
    original = '# relay for us\n127.:allow,RELAYCLIENT=""\n10.9.:deny\n=.example.org:allow,X=\'a\'\n'
    rules.write_text(original)
    p = qsetup.plan(rules, W, None, remove=False)
    assert p.after == [
        "# relay for us",
        f'127.:allow,RELAYCLIENT="",QMAILQUEUE="{W}"',
        "10.9.:deny",
        f"=.example.org:allow,X='a',QMAILQUEUE=\"{W}\"",
        qsetup.MARK,
        f':allow,QMAILQUEUE="{W}"',
    ]
    qsetup.apply(p)
    assert not qsetup.plan(rules, W, None, remove=False).changed  # idempotent
    qsetup.apply(qsetup.plan(rules, W, None, remove=True))
    assert rules.read_text() == original
    assert len(list(tmp_path.glob("tcp.smtp.lmsav-*"))) >= 1  # copies kept


def test_other_filters_are_left_alone_and_config_is_passed_when_not_the_system_one(tmp_path):
    rules = tmp_path / "tcp.smtp"
    rules.write_text(':allow,QMAILQUEUE="/var/qmail/bin/simscan"\n')
    p = qsetup.plan(rules, W, "/srv/lmsav/lmsav.toml", remove=False)
    assert p.after == [':allow,QMAILQUEUE="/var/qmail/bin/simscan"']
    assert any("simscan" in n and "left alone" in n for n in p.notes)
    rules.write_text("127.:allow\n:allow\n")
    p = qsetup.plan(rules, W, "/srv/lmsav/lmsav.toml", remove=False)
    assert p.after[1] == f':allow,QMAILQUEUE="{W}",LMSAV_CONFIG="/srv/lmsav/lmsav.toml"'


@pytest.mark.parametrize("line", ["127.:maybe", "no colon here", '127.:allow,X="open'])
def test_malformed_rules_give_one_line_errors(tmp_path, line):
    rules = tmp_path / "tcp.smtp"
    rules.write_text(line + "\n")
    result = CliRunner().invoke(cli, ["setup", "qmail", "--rules", str(rules), "--apply",
                                      "--wrapper", W])
    assert result.exit_code == 2
    assert f"{rules}:1:" in result.output
    assert rules.read_text() == line + "\n"


def test_without_apply_nothing_changes(tmp_path):
    rules = tmp_path / "tcp.smtp"
    rules.write_text("127.:allow\n")
    result = CliRunner().invoke(cli, ["setup", "qmail", "--rules", str(rules), "--wrapper", W])
    assert result.exit_code == 0, result.output
    assert f'+127.:allow,QMAILQUEUE="{W}"' in result.output
    assert "--apply" in result.output
    assert rules.read_text() == "127.:allow\n"


@need_tools
def test_applied_rules_compile_and_set_the_variables_per_client(tmp_path):
    rules = tmp_path / "tcp.smtp"
    rules.write_text('127.:allow,RELAYCLIENT="",LMSAV_GROUP="internal"\n192.0.2.:deny\n')
    result = CliRunner().invoke(cli, ["setup", "qmail", "--rules", str(rules), "--apply",
                                      "--wrapper", W])
    assert result.exit_code == 0, result.output
    assert "Compiled: tcprules" in result.output
    cdb = tmp_path / "tcp.smtp.cdb"

    def check(ip):
        return subprocess.run(["tcprulescheck", str(cdb)], env={"TCPREMOTEIP": ip},
                              capture_output=True, text=True, cwd=tmp_path).stdout

    local = check("127.0.0.1")
    assert f"QMAILQUEUE={W}" in local and "LMSAV_GROUP=internal" in local
    other = check("198.51.100.7")
    assert f"QMAILQUEUE={W}" in other and "LMSAV_GROUP" not in other
    assert "deny" in check("192.0.2.5")


@need_tools
def test_tcpserver_rules_choose_the_group_per_connection(served, queue, tmp_path):
    """tcpserver → a qmail-smtpd stand-in → $QMAILQUEUE from the rules → lmsav-qmail-queue."""
    rules = tmp_path / "tcp.smtp"
    rules.write_text('127.0.0.1:allow,LMSAV_GROUP="internal"\n')
    assert CliRunner().invoke(cli, ["setup", "qmail", "--rules", str(rules), "--apply",
                                    "--wrapper", WRAPPER]).exit_code == 0
    env = served.env(queue)
    env.pop("QMAILQUEUE", None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stand_in = Path(__file__).with_name("smtpd_stand_in.py")
    server = subprocess.Popen(["tcpserver", "-q", "-x", str(tmp_path / "tcp.smtp.cdb"),
                               "127.0.0.1", str(port), sys.executable, str(stand_in)],
                              env=env, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def send(raw: bytes, env_bytes: bytes) -> str:
            deadline = time.monotonic() + 20
            while True:
                try:
                    conn = socket.create_connection(("127.0.0.1", port), timeout=60)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with conn:
                conn.sendall(len(env_bytes).to_bytes(4, "big") + env_bytes + raw)
                conn.shutdown(socket.SHUT_WR)
                out = b""
                while chunk := conn.recv(4096):
                    out += chunk
            return out.decode()

        # 127.0.0.1 is forced into the "internal" group (warn): accepted, virus replaced.
        reply = send(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"))
        assert reply.startswith("exit 0"), reply
        [rec] = queue.queued()
        assert EICAR not in rec["message"]
        # Without the group setting the default group rejects.
        rules.write_text("127.0.0.1:allow\n")
        assert CliRunner().invoke(cli, ["setup", "qmail", "--rules", str(rules), "--apply",
                                        "--wrapper", WRAPPER]).exit_code == 0
        reply = send(INFECTED, envelope("alice@sender.example", "bob@rcpt.example"))
        assert reply.startswith("exit 31"), reply
    finally:
        os.killpg(server.pid, 15)
        server.wait(10)


def test_config_file_is_passed_only_when_given_or_present(tmp_path):
    rules = tmp_path / "tcp.smtp"
    rules.write_text(":allow\n")
    conf = tmp_path / "lmsav.toml"
    absent = CliRunner().invoke(cli, ["--config", str(conf), "setup", "qmail", "--rules",
                                      str(rules), "--wrapper", W])
    assert f'LMSAV_CONFIG="{conf}"' in absent.output  # asked for explicitly
    env = {"LMSAV_CONFIG": "", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "x")}
    default = CliRunner(env=env).invoke(cli, ["setup", "qmail", "--rules", str(rules),
                                              "--wrapper", W])
    assert default.exit_code == 0, default.output
    assert "LMSAV_CONFIG" not in default.output  # a default that does not exist: not passed
