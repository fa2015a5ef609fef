"""`lmsav setup` on a server with the system's Postfix, end to end, as the administrator does it:
`lmsav setup --yes`, the two start commands it prints, `postfix start`, mail from swaks, `lmsav
setup --self-test`, and `lmsav setup --remove`, which gives /etc/postfix back byte for byte; with
the default transport (Postfix's SMTP client to the listener the spool watcher runs) and with
`transport = "pipe"` (`lmsav enqueue`).

Postfix is the host's (/etc/postfix as the package installed it), inside a tests.sysroot
namespace with its own network: port 25 there is not the host's, and the host is untouched.
"""

from __future__ import annotations

import tomllib

import pytest

from lmsav.setup import mta as mta_mod
from tests.mta.conftest import token
from tests.setup.conftest import leftovers, send_eicar_to_alice

pytestmark = pytest.mark.integration


@pytest.fixture
def postfix_server(server):
    if mta_mod.program("postconf") is None or not server.path("/etc/postfix/main.cf").is_file():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    # Two people with mailboxes on this server (their homes would be the host's /home).
    server.sh("useradd --no-create-home alice && useradd --no-create-home bob")
    return server


FILTERS = {"smtp": "lmsav:[127.0.0.1]:10025", "pipe": "lmsav:dummy"}


@pytest.mark.parametrize("transport", ["smtp", "pipe"])
def test_postfix_server_set_up_used_and_removed(postfix_server, transport):
    server = postfix_server
    etc_postfix = server.tree("/etc/postfix")
    before = server.root.changes()

    setup = server.setup("--yes", answers={"transport": transport})
    out = setup.stdout
    domain = server.sh("postconf -h myhostname").stdout.strip()
    # The protected domains are what Postfix delivers locally (mydestination), its own name
    # first; the administrator is that domain's postmaster.
    assert f"protected: {domain}" in out and f"administrator: postmaster@{domain}" in out
    assert "postfix: configured" in out
    assert "lmsav is set up." in out
    assert server.tree("/etc/postfix") != etc_postfix
    assert server.sh("postconf -h content_filter").stdout.strip() == FILTERS[transport]
    listen = tomllib.loads(server.read("/etc/lmsav/lmsav.toml"))["spool"].get("listen")
    assert listen == (["smtp:127.0.0.1:10025"] if transport == "smtp" else None)

    server.start_services(out)
    server.sh("postfix start")
    server.wait_port(25)

    # A clean message reaches alice's mailbox, checked.
    clean = "clean-" + token()
    server.swaks(f"bob@{domain}", f"alice@{domain}", clean, "--body", "Lunch at noon?")
    line = server.watcher_line(clean)
    assert (line["status"], line["action"], line["group"]) == ("clean", "skip", "default")
    server.wait_for(lambda: any(clean in (m["Subject"] or "") for m in server.mailbox("alice")),
                    "the clean message in alice's mailbox")
    [got] = [m for m in server.mailbox("alice") if clean in (m["Subject"] or "")]
    assert got["X-AV-Checked"] and got["X-AV-Status"] == "clean"
    assert "Lunch at noon?" in got.get_payload()

    # EICAR: the Default group's policy (infected_action = "reject"), so alice never gets it;
    # she is told (notify_recipients), and the original is in the backup store.
    infected = send_eicar_to_alice(server, domain)
    assert any(infected.encode() in p.read_bytes()
               for p in server.path("/var/lib/lmsav/backup").rglob("*") if p.is_file())

    self_test = server.setup("--self-test")
    assert "clean: ok" in self_test.stdout and "eicar: ok" in self_test.stdout

    # Removal: /etc/postfix as it was, byte for byte, the services stopped; the backup store
    # (holding the EICAR message) and the account owning it are kept until --purge.
    removal = server.setup("--remove", "--yes")
    assert "postfix: restored /etc/postfix/main.cf, /etc/postfix/master.cf byte for byte" \
        in removal.stdout
    assert server.tree("/etc/postfix") == etc_postfix
    assert "stopped lmsav daemon" in removal.stdout
    assert "stopped lmsav spool watch" in removal.stdout
    assert server.lmsav_processes() == []
    kept = [line for line in removal.stdout.splitlines() if line.startswith("kept: ")]
    assert kept == [
        "kept: /var/lib/lmsav/backup (quarantine or backup store; --purge removes it)",
        "kept: user lmsav (owns what is kept)",
        "kept: group lmsav (owns what is kept)"]
    for gone in ("/etc/lmsav", "/etc/logrotate.d/lmsav", "/etc/systemd/system/lmsav-daemon.service",
                 "/etc/systemd/system/lmsav-spool.service", "/var/cache/lmsav", "/var/log/lmsav",
                 "/run/lmsav"):
        assert not server.path(gone).exists(), gone

    purge = server.setup("--remove", "--purge", "--yes")
    assert "removed user lmsav" in purge.stdout
    assert not server.account_exists("lmsav")
    assert not server.path("/var/lib/lmsav").exists()
    # Nothing of lmsav's is left; what Postfix itself wrote while it ran (its queue, its
    # locks) is the server's.
    assert leftovers(server, before, ignore=("/var/spool/postfix/", "/var/lib/postfix/",
                                             "/var/mail/")) == []
