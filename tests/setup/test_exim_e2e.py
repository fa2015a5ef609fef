"""`lmsav setup` on a server running Exim from one configuration file (/etc/exim4/exim4.conf),
end to end: setup with `mta = ["exim"]` and `exim_config_file`, the two start commands it
prints, Exim's daemon, mail from swaks, `lmsav setup --self-test`, and `lmsav setup --remove`,
which gives the configuration back byte for byte.

Exim's packages conflict with Postfix, so scripts/mta/exim-unpack unpacks them; inside the
tests.sysroot namespace the binary goes where the package puts it (/usr/sbin/exim4, set-uid
root, its libraries beside the system's), so Exim runs as root and gives up privileges as on a
server: local deliveries run as the mailbox's owner, and lmsav's smtp transport hands every
message to the listener the spool watcher runs (setup's default, [spool] listen).
"""

from __future__ import annotations

import os
import shlex

import pytest

from tests.mta.conftest import exim_root, token, unpacked_exim
from tests.setup.conftest import Server, SystemRoot, leftovers, send_eicar_to_alice

pytestmark = pytest.mark.integration

CONFIG = "/etc/exim4/exim4.conf"
EXIM_CONFIG = """\
# This server's Exim: local mailboxes for the local domains, relaying for this host only.
domainlist local_domains = @ : localhost
hostlist relay_from_hosts = 127.0.0.1
local_interfaces = 127.0.0.1
daemon_smtp_ports = smtp
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = /var/spool/exim4
log_file_path = /var/log/exim4/%slog
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept  domains = +local_domains
          verify = recipient
  accept  hosts = +relay_from_hosts
  deny    message = relay not permitted

begin routers

local_user:
  driver = accept
  domains = +local_domains
  check_local_user
  transport = local_delivery

begin transports

local_delivery:
  driver = appendfile
  file = /var/mail/$local_part_data
  delivery_date_add
  envelope_to_add
  return_path_add
  group = mail
  mode = 0660

begin retry

*  *  F,2h,15m
"""


@pytest.fixture
def exim_server():
    if os.geteuid() != 0:
        pytest.skip("needs root: Exim is installed inside a tests.sysroot namespace")
    unpacked = exim_root(unpacked_exim())  # before the namespace: it adds Debian-exim
    root = SystemRoot(net=True, pids=True, overlays=("/var", "/usr"))
    try:
        root.start()
        server = Server(root)
        # What installing exim4-daemon-heavy does: the set-uid binary and the libraries it
        # needs, the Exim account, its spool and log directories.
        lib = shlex.quote(str(unpacked / "usr" / "lib"))
        server.sh(f"""set -e
            install -m 4755 -o root -g root {shlex.quote(str(unpacked / 'usr/sbin/exim4'))} \\
                /usr/sbin/exim4
            cp -a {lib}/x86_64-linux-gnu/. /usr/lib/x86_64-linux-gnu/ 2>/dev/null || true
            cp -a {lib}/libspf2* /usr/lib/
            ldconfig
            getent passwd Debian-exim >/dev/null || useradd --system --user-group \\
                --home-dir /var/spool/exim4 --no-create-home --shell /usr/sbin/nologin \\
                Debian-exim
            install -d -o Debian-exim -g Debian-exim -m 750 /var/spool/exim4 /var/log/exim4
            useradd --no-create-home alice
            useradd --no-create-home bob
            """)
        server.write(CONFIG, EXIM_CONFIG)
        check = server.sh("exim4 -bV", check=False)
        if check.returncode != 0:
            pytest.skip(f"the unpacked Exim does not run here: {check.stdout}{check.stderr}")
        yield server
    finally:
        root.stop()


def test_exim_server_set_up_used_and_removed(exim_server):
    server = exim_server
    etc_exim = server.tree("/etc/exim4")
    before = server.root.changes()
    domain = server.sh("exim4 -bP primary_hostname").stdout.split("=", 1)[1].strip()

    answers = {"mta": ["exim"], "exim_config_file": CONFIG}
    setup = server.setup("--yes", answers=answers)
    out = setup.stdout
    # "@" in local_domains: Exim's primary host name, as Exim itself says it.
    assert f"protected: {domain}; administrator: postmaster@{domain}" in out
    assert "exim: configured" in out and "lmsav is set up." in out
    assert server.tree("/etc/exim4") != etc_exim

    server.start_services(out)
    server.sh("exim4 -bd -q5s")  # the daemon, as the init script starts it
    server.wait_port(25)
    server.wait_port(10026)  # the reinjection port setup added

    clean = "clean-" + token()
    server.swaks(f"bob@{domain}", f"alice@{domain}", clean, "--body", "Lunch at noon?")
    line = server.watcher_line(clean)
    assert (line["status"], line["action"], line["group"]) == ("clean", "skip", "default")
    server.wait_for(lambda: any(clean in (m["Subject"] or "") for m in server.mailbox("alice")),
                    "the clean message in alice's mailbox")
    [got] = [m for m in server.mailbox("alice") if clean in (m["Subject"] or "")]
    assert got["X-AV-Checked"] and got["X-AV-Status"] == "clean"
    # It went to the listener of the watcher (the spool is lmsav's, mode 2770), once.
    mainlog = server.read("/var/log/exim4/mainlog")
    assert "R=lmsav_scan T=lmsav_smtp H=127.0.0.1 [127.0.0.1]" in mainlog
    assert 'listen = ["smtp:127.0.0.1:10025"]' in server.read("/etc/lmsav/lmsav.toml")
    assert " T=lmsav_smtp defer" not in mainlog, mainlog

    send_eicar_to_alice(server, domain)

    self_test = server.setup("--self-test", answers=answers)
    assert "clean: ok" in self_test.stdout and "eicar: ok" in self_test.stdout

    removal = server.setup("--remove", "--purge", "--yes")
    assert f"exim: restored {CONFIG} byte for byte" in removal.stdout
    assert server.tree("/etc/exim4") == etc_exim
    assert server.lmsav_processes() == []
    assert not server.account_exists("lmsav")
    assert leftovers(server, before, ignore=("/var/spool/exim4/", "/var/log/exim4/",
                                             "/var/mail/")) == []
