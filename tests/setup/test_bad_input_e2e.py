"""`lmsav setup` when things go wrong or are done twice, on a server in a tests.sysroot namespace
(the host's Postfix, and a qmail stand-in where a test needs two MTAs): a setup killed halfway
completes when run again, a failing step is finished by the next run, a second run changes
nothing, and `--remove` keeps what the administrator edited until `--remove --purge`. After
each removal nothing of lmsav's is left on the server.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from lmsav.setup import mta as mta_mod
from tests.setup.conftest import environment, leftovers
from tests.setup.test_qmail_e2e import qmail_server
from tests.sysroot import file_state

pytestmark = pytest.mark.integration

MANIFEST = "/var/lib/lmsav/setup/manifest.json"


@pytest.fixture
def postfix_server(server):
    if mta_mod.program("postconf") is None or not server.path("/etc/postfix/main.cf").is_file():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    return server


def manifest_kinds(server) -> set[str]:
    import json

    return {entry["kind"] for entry in json.loads(server.read(MANIFEST))["entries"]}


def test_setup_killed_halfway_completes_when_run_again(postfix_server):
    server = postfix_server
    etc_postfix = server.tree("/etc/postfix")
    before = server.root.changes()

    # Killed as the database step begins (steps 1 to 3 are done).
    command = server.root.command(server.lmsav, "setup", "--yes", "--lmsav", server.lmsav)
    proc = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("[4/9]"):
            # lmsav itself (nsenter forked it into the PID namespace), as kill -9 would.
            [pid] = [pid for pid, args in server.processes()
                     if " setup --yes" in args and "nsenter" not in args]
            os.kill(pid, signal.SIGKILL)
            break
    proc.stdout.close()
    assert proc.wait() == -9, "".join(seen)
    assert {"user", "group", "dir", "file"} <= manifest_kinds(server)
    assert "mta" not in manifest_kinds(server)
    assert server.tree("/etc/postfix") == etc_postfix

    again = server.setup("--yes").stdout
    assert "system user lmsav exists" in again
    assert "/etc/lmsav/lmsav.toml is up to date" in again
    assert "postfix: configured" in again and "lmsav is set up." in again

    removal = server.setup("--remove", "--yes").stdout
    assert "kept" not in removal
    assert server.tree("/etc/postfix") == etc_postfix
    assert not server.account_exists("lmsav")
    assert leftovers(server, before) == []


def test_two_mtas_and_a_step_that_fails_until_the_administrator_fixes_it(postfix_server):
    server = postfix_server
    # A qmail beside Postfix, whose rules file the administrator is editing: it has a
    # mistake (tcprules refuses it, so the compiled rules are the previous ones).
    qmail_server(server)
    server.write("/etc/tcp.smtp", '127.:allow,RELAYCLIENT=""\n:alow\n')
    etc_postfix = server.tree("/etc/postfix")
    before = server.root.changes()

    failed = server.setup("--yes", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "postfix: configured" in failed.stdout
    assert "qmail: FAILED: /etc/tcp.smtp:2:" in failed.stdout
    assert "Set up, except: qmail: /etc/tcp.smtp:2:" in failed.stdout

    # The administrator corrects the rules (and compiles them), then runs setup again.
    server.write("/etc/tcp.smtp", '127.:allow,RELAYCLIENT=""\n:allow\n')
    server.sh("tcprules /etc/tcp.smtp.cdb /etc/tcp.smtp.tmp </etc/tcp.smtp")
    fixed = {name: file_state(server.path(f"/etc/{name}")) for name in ("tcp.smtp",
                                                                          "tcp.smtp.cdb")}
    again = server.setup("--yes").stdout
    assert "postfix: already set up" in again
    assert "qmail: configured" in again
    assert "qmail clean: ok" in again and "qmail eicar: ok" in again

    # --purge: setup's self-test left its EICAR message in the backup store.
    removal = server.setup("--remove", "--purge", "--yes").stdout
    assert "postfix: restored /etc/postfix/main.cf, /etc/postfix/master.cf byte for byte" \
        in removal
    assert "qmail: restored /etc/tcp.smtp, /etc/tcp.smtp.cdb byte for byte" in removal
    assert server.tree("/etc/postfix") == etc_postfix
    # The rules as the administrator left them before the second run, not the broken ones.
    assert {name: file_state(server.path(f"/etc/{name}")) for name in fixed} == fixed
    assert server.sh("id -nG qmaild").stdout.split() == ["qmaild"]
    assert not server.account_exists("lmsav")
    assert leftovers(server, before, ignore=("/var/qmail/records/", "/etc/tcp.smtp")) == []


def test_second_run_changes_nothing(postfix_server):
    server = postfix_server
    server.setup("--yes")
    manifest = server.path(MANIFEST).read_bytes()
    state = server.root.changes()

    again = server.setup("--yes").stdout
    assert server.path(MANIFEST).read_bytes() == manifest
    assert server.root.changes() == state
    for unchanged in ("system user lmsav exists", "directories exist",
                      "/etc/lmsav/lmsav.toml is up to date",
                      "/etc/lmsav/groups.d/default.toml is up to date", "up to date",
                      "/etc/systemd/system/lmsav-daemon.service is up to date",
                      "/etc/logrotate.d/lmsav is up to date", "postfix: already set up"):
        assert unchanged in again, again
    for change in ("created ", "wrote ", "configured", "reloaded"):
        assert change not in again, again


def test_edited_configuration_is_kept_until_purge(postfix_server):
    server = postfix_server
    before = server.root.changes()
    server.setup("--yes")
    config = server.path("/etc/lmsav/lmsav.toml")
    edited = config.read_text() + "\n# Edited by the administrator.\n"
    config.write_text(edited)

    removal = server.setup("--remove", "--yes").stdout
    kept = [line for line in removal.splitlines() if line.startswith("kept: ")]
    assert "kept: /etc/lmsav/lmsav.toml (edited since setup; --purge deletes it)" in kept
    assert config.read_text() == edited
    assert not server.path("/etc/lmsav/groups.d").exists()
    assert not server.path("/etc/logrotate.d/lmsav").exists()

    # Listed again by a second --remove; gone with --remove --purge, and lmsav with it.
    again = server.setup("--remove", "--yes").stdout
    assert "kept: /etc/lmsav/lmsav.toml (edited since setup; --purge deletes it)" in again
    purge = server.setup("--remove", "--purge", "--yes").stdout
    assert "removed /etc/lmsav/lmsav.toml" in purge and "kept" not in purge
    assert not server.path("/etc/lmsav").exists()
    assert not server.account_exists("lmsav")
    assert leftovers(server, before) == []
