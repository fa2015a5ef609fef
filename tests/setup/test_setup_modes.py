"""`lmsav setup` before the queue: `postfix_mode = "milter"` (smtpd_milters and the `lmsav
milter` service) and `exim_mode = "pre-queue"` (the DATA ACL asking the daemon), end to end on a
server in a tests.sysroot namespace as the administrator does it: setup, the start commands it
prints, the MTA, mail from swaks refused at SMTP time, and `--remove`, which gives the MTA's files
back byte for byte. Bad mode answers are one-line errors.
"""

from __future__ import annotations

import json
import shutil
import tomllib

import pytest

from lmsav.setup import answers as answers_mod
from lmsav.setup import mta as mta_mod
from lmsav.setup import units
from tests.mta.conftest import token
from tests.setup.conftest import TESTS_DIR, environment, leftovers, start_commands
from tests.setup.test_exim_e2e import CONFIG as EXIM_CONFIG_FILE
from tests.setup.test_exim_e2e import exim_server  # noqa: F401 (a fixture)

MANIFEST = "/var/lib/lmsav/setup/manifest.json"
MILTER_LISTEN = "inet:8894@127.0.0.1"


# -- answers and units, without a server ---------------------------------------------------------

@pytest.mark.parametrize("text, fragment", [
    ('postfix_mode = "before-queue"', ('postfix_mode = \'before-queue\': expected "after-queue" '
                                      'or "milter"')),
    ("postfix_mode = true", "postfix_mode = True: expected"),
    ('exim_mode = "milter"', 'exim_mode = \'milter\': expected "after-queue" or "pre-queue"'),
])
def test_bad_mode_answers_are_one_line_errors(tmp_path, text, fragment):
    path = tmp_path / "answers.toml"
    path.write_text(text + "\n")
    with pytest.raises(answers_mod.AnswersError) as err:
        answers_mod.load(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_mode_answers_and_defaults(tmp_path):
    assert (answers_mod.Answers().postfix_mode, answers_mod.Answers().exim_mode) == \
        ("after-queue", "after-queue")
    path = tmp_path / "answers.toml"
    path.write_text('postfix_mode = "milter"\nexim_mode = "pre-queue"\nmta = ["sendmail"]\n'
                    'sendmail_config = "/srv/mail"\n')
    got = answers_mod.load(path)
    assert (got.postfix_mode, got.exim_mode, got.mta, got.sendmail_config) == \
        ("milter", "pre-queue", ["sendmail"], "/srv/mail")
    assert [key for key, _, _ in answers_mod.mode_questions(["postfix", "qmail", "exim"])] == \
        ["postfix_mode", "exim_mode"]
    assert answers_mod.mode_questions(["sendmail", "qmail"]) == []


def test_milter_unit_and_start_command():
    made = units.units("/usr/bin/lmsav", "lmsav", "lmsav", milter=True)
    assert list(made) == [units.DAEMON_UNIT, units.SPOOL_UNIT, units.MILTER_UNIT]
    unit = made[units.MILTER_UNIT]
    assert "ExecStart=/usr/bin/lmsav milter\n" in unit and "User=lmsav\n" in unit
    assert "After=network.target lmsav-daemon.service\n" in unit
    assert units.MILTER_UNIT not in units.units("/usr/bin/lmsav", "lmsav", "lmsav")
    commands = units.start_commands("/usr/bin/lmsav", "lmsav", "/var/log/lmsav/spool.log",
                                    "/var/log/lmsav/milter.log")
    assert commands[2] == ("setsid -f runuser -u lmsav -- /usr/bin/lmsav milter </dev/null "
                           ">>/var/log/lmsav/milter.log 2>&1")
    assert len(units.start_commands("/usr/bin/lmsav", "lmsav", "/var/log/lmsav/spool.log")) == 2


def test_sendmail_is_found_by_its_own_binary_and_listens_where_sendmail_looks(tmp_path,
                                                                              monkeypatch):
    (tmp_path / "sendmail.mc").write_text("dnl a Sendmail configuration\n")
    (tmp_path / "local-host-names").write_text("# local\nExample.ORG\n")
    sendmail = mta_mod.SendmailMta(answers_mod.Answers(sendmail_config=str(tmp_path)))
    monkeypatch.setattr(mta_mod, "SENDMAIL_BIN", tmp_path / "absent")
    monkeypatch.setattr(mta_mod, "program", lambda name: None)
    assert not sendmail.installed()  # Postfix's /usr/sbin/sendmail is not Sendmail
    monkeypatch.setattr(mta_mod, "SENDMAIL_BIN", tmp_path / "sendmail.mc")
    assert sendmail.installed()
    assert mta_mod.milter_listens([sendmail]) == [MILTER_LISTEN]
    assert sendmail.local_domains() == ["example.org"]
    assert sendmail.files() == [tmp_path / "sendmail.mc", tmp_path / "sendmail.cf"]


# -- Postfix with the milter, end to end -----------------------------------------------------------

@pytest.fixture
def postfix_server(server):
    if mta_mod.program("postconf") is None or not server.path("/etc/postfix/main.cf").is_file():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    server.sh("useradd --no-create-home alice && useradd --no-create-home bob")
    return server


def swaks_reply(server, sender: str, recipient: str, tok: str, *extra: str,
                server_port: int = 25):
    """swaks's exit status and transcript (a refusal is not an error here)."""
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (Debian package swaks)")
    proc = server.root.run(
        swaks, "--server", f"127.0.0.1:{server_port}", "--helo", "client.example", "--from", sender,
        "--to", recipient, "--header", f"Subject: test {tok}",
        "--header", f"Message-Id: <{tok}@client.example>", *extra,
        env=environment(), check=False, timeout=120)
    return proc.returncode, proc.stdout + proc.stderr


def run_start_commands(server, out: str, count: int) -> list[str]:
    lines = out.splitlines()
    index = next(i for i, line in enumerate(lines) if "start the services with" in line)
    commands = [line.strip() for line in lines[index + 1:index + 1 + count]]
    for command in commands:
        server.sh(command, timeout=120)
    server.wait_for(lambda: server.sh(f"{server.lmsav} ctl ping", check=False).returncode == 0,
                    "the daemon to answer")
    return commands


def manifest(server) -> list[dict]:
    return json.loads(server.read(MANIFEST))["entries"]


@pytest.mark.integration
def test_postfix_milter_mode_set_up_used_and_removed(postfix_server):
    server = postfix_server
    etc_postfix = server.tree("/etc/postfix")
    before = server.root.changes()

    setup = server.setup("--yes", answers={"mta": ["postfix"], "postfix_mode": "milter",
                                           "self_test": False})
    out = setup.stdout
    assert "postfix: configured" in out and "lmsav is set up." in out

    # Postfix asks the milter before the queue, fail-closed; no content_filter.
    main_cf = server.read("/etc/postfix/main.cf")
    settings = {k.strip(): v.strip() for k, _, v in (
        line.partition("=") for line in server.sh("postconf -n").stdout.splitlines())}
    assert settings["smtpd_milters"] == "inet:127.0.0.1:8894"
    assert (settings["milter_protocol"], settings["milter_default_action"]) == ("6", "tempfail")
    assert "content_filter" not in settings
    assert main_cf.rstrip("\n").splitlines()[-1].startswith("milter_")
    # lmsav.toml: the milter listens where Postfix looks, deciding through the daemon.
    config = tomllib.loads(server.read("/etc/lmsav/lmsav.toml"))
    assert config["milter"]["listen"] == MILTER_LISTEN and config["milter"]["use_daemon"]
    assert "notices" not in config["milter"]  # [spool] reinject: Postfix's listener
    unit = server.read(f"/etc/systemd/system/{units.MILTER_UNIT}")
    assert f"ExecStart={server.lmsav} milter" in unit

    # The manifest records the mode (for --remove), Postfix's files and the milter's unit.
    entries = manifest(server)
    [mta_entry] = [e for e in entries if e["kind"] == "mta"]
    assert mta_entry["config"]["postfix_mode"] == "milter"
    assert {e["path"] for e in entries if e["kind"] == "mta-file"} == \
        {"/etc/postfix/main.cf", "/etc/postfix/master.cf"}
    recorded = {e.get("path") for e in entries if e["kind"] == "file"}
    assert {f"/etc/systemd/system/{units.MILTER_UNIT}", "/var/log/lmsav/milter.log"} <= recorded

    commands = run_start_commands(server, out, 3)
    assert " milter " in commands[2] and commands[2].startswith("setsid -f runuser -u lmsav")
    server.wait_port(8894)
    server.sh("postfix start")
    server.wait_port(25)
    domain = server.sh("postconf -h myhostname").stdout.strip()

    # EICAR is refused at SMTP time with the Default group's reply; nothing reaches alice.
    infected = "eicar-" + token()
    code, transcript = swaks_reply(server, f"bob@{domain}", f"alice@{domain}", infected,
                                   "--attach", f"@{server.write_eicar()}")
    assert code != 0 and "<** 550 " in transcript, transcript
    # A clean message is delivered, checked by the milter.
    clean = "clean-" + token()
    code, transcript = swaks_reply(server, f"bob@{domain}", f"alice@{domain}", clean,
                                   "--body", "Lunch at noon?")
    assert code == 0, transcript
    server.wait_for(lambda: any(clean in (m["Subject"] or "") for m in server.mailbox("alice")),
                    "the clean message in alice's mailbox")
    [got] = [m for m in server.mailbox("alice") if clean in (m["Subject"] or "")]
    assert got["X-AV-Status"] == "clean"
    for message in server.mailbox("alice"):  # a notice may name it; the message is not there
        assert infected not in (message["Message-ID"] or "")
        assert b"EICAR-STANDARD" not in message.as_bytes()
    # It never went through the spool path.
    assert clean not in server.read("/var/log/lmsav/spool.log")
    # The self-test knows the mode: the SMTP reply is the verdict.
    self_test = server.setup("--self-test", answers={"mta": ["postfix"],
                                                     "postfix_mode": "milter"})
    assert "clean: ok: accepted at SMTP time" in self_test.stdout, self_test.stdout
    assert "eicar: ok: refused at SMTP time: 550 " in self_test.stdout, self_test.stdout

    removal = server.setup("--remove", "--purge", "--yes")
    assert "postfix: restored /etc/postfix/main.cf, /etc/postfix/master.cf byte for byte" \
        in removal.stdout
    assert "stopped lmsav milter" in removal.stdout
    assert server.tree("/etc/postfix") == etc_postfix
    assert server.lmsav_processes() == []
    assert not server.path(f"/etc/systemd/system/{units.MILTER_UNIT}").exists()
    assert leftovers(server, before, ignore=("/var/spool/postfix/", "/var/lib/postfix/",
                                             "/var/mail/")) == []


@pytest.mark.integration
def test_bad_mode_in_the_answers_file_is_a_one_line_error(server):
    before = server.root.changes()
    proc = server.setup("--yes", answers={"postfix_mode": "before-queue"}, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        (f"lmsav: error: {TESTS_DIR}/answers.toml: postfix_mode = 'before-queue': expected "
        '"after-queue" or "milter"')]
    assert leftovers(server, before) == []


# -- Exim before the queue, end to end ---------------------------------------------------------------

@pytest.mark.integration
def test_exim_pre_queue_mode_set_up_used_and_removed(exim_server):  # noqa: F811
    server = exim_server
    etc_exim = server.tree("/etc/exim4")
    before = server.root.changes()
    domain = server.sh("exim4 -bP primary_hostname").stdout.split("=", 1)[1].strip()

    answers = {"mta": ["exim"], "exim_config_file": EXIM_CONFIG_FILE, "exim_mode": "pre-queue",
               "self_test": False}
    out = server.setup("--yes", answers=answers).stdout
    assert "exim: configured" in out and "lmsav is set up." in out
    # Exim's user joins the group the daemon's socket belongs to.
    assert "added Debian-exim to group lmsav" in out
    assert "Debian-exim" in server.sh("getent group lmsav").stdout
    text = server.read(EXIM_CONFIG_FILE)
    assert "acl_smtp_data = lmsav_data" in text
    assert "exim-acl --socket /run/lmsav/clamd.sock" in text
    # No milter here: two services, no [milter] listen.
    assert len(start_commands(out)) == 2 and " milter " not in out
    assert "listen" not in tomllib.loads(server.read("/etc/lmsav/lmsav.toml")).get("milter", {})
    entries = manifest(server)
    [mta_entry] = [e for e in entries if e["kind"] == "mta"]
    assert mta_entry["config"]["exim_mode"] == "pre-queue"
    assert any(e["kind"] == "member" and e["user"] == "Debian-exim" for e in entries)

    run_start_commands(server, out, 2)
    server.sh("exim4 -bd -q5s")
    server.wait_port(25)

    infected = "eicar-" + token()
    code, transcript = swaks_reply(server, f"bob@{domain}", f"alice@{domain}", infected,
                                   "--attach", f"@{server.write_eicar()}")
    assert code != 0 and "<** 550 " in transcript, transcript
    clean = "clean-" + token()
    code, transcript = swaks_reply(server, f"bob@{domain}", f"alice@{domain}", clean,
                                   "--body", "Lunch at noon?")
    assert code == 0, transcript
    server.wait_for(lambda: any(clean in (m["Subject"] or "") for m in server.mailbox("alice")),
                    "the clean message in alice's mailbox")
    [got] = [m for m in server.mailbox("alice") if clean in (m["Subject"] or "")]
    assert got["X-AV-Status"] == "clean"
    for message in server.mailbox("alice"):  # a notice may name it; the message is not there
        assert infected not in (message["Message-ID"] or "")
        assert b"EICAR-STANDARD" not in message.as_bytes()
    # Decided in the DATA ACL: the spool path never saw it.
    assert "R=lmsav_scan" not in server.read("/var/log/exim4/mainlog")

    removal = server.setup("--remove", "--purge", "--yes")
    assert f"exim: restored {EXIM_CONFIG_FILE} byte for byte" in removal.stdout
    assert server.tree("/etc/exim4") == etc_exim
    assert "Debian-exim" not in server.sh("getent group lmsav", check=False).stdout
    assert server.lmsav_processes() == []
    assert not server.account_exists("lmsav")
    assert leftovers(server, before, ignore=("/var/spool/exim4/", "/var/log/exim4/",
                                             "/var/mail/")) == []


# -- Sendmail (always the milter), end to end ---------------------------------------------------------

SENDMAIL_PORT = 2525


@pytest.fixture
def sendmail_server():
    """A server with Debian's Sendmail where the package puts it (/usr/lib/sm.bin/sendmail,
    /etc/mail/sendmail.mc and the sendmail.cf made from it), unpacked by
    scripts/mta/sendmail-unpack: sendmail-bin conflicts with the host's Postfix."""
    import os
    import shlex

    from tests.milter.test_sendmail import sendmail_mc, unpacked_sendmail
    from tests.setup.conftest import Server, SystemRoot

    if os.geteuid() != 0:
        pytest.skip("needs root: Sendmail is installed inside a tests.sysroot namespace")
    wrapper = unpacked_sendmail()
    cf_dir = wrapper.parent.parent / "root" / "usr" / "share" / "sendmail" / "cf"
    root = SystemRoot(net=True, pids=True, overlays=("/var", "/usr"))
    try:
        root.start()
        server = Server(root)
        server.write("/etc/mail/sendmail.mc", sendmail_mc(
            "/var/lib/sendmail-test", cf_dir, SENDMAIL_PORT, SENDMAIL_PORT + 1))
        server.sh(f"""set -e
            install -D -m 755 {shlex.quote(str(wrapper))} /usr/lib/sm.bin/sendmail
            install -d -m 700 /var/lib/sendmail-test/mqueue
            : > /var/lib/sendmail-test/aliases
            printf 'hosts files\\naliases files\\n' > /var/lib/sendmail-test/service.switch
            cd /etc/mail && m4 sendmail.mc > sendmail.cf
            useradd --no-create-home alice
            """)
        yield server
    finally:
        root.stop()


@pytest.mark.integration
def test_sendmail_set_up_with_the_milter_used_and_removed(sendmail_server):
    server = sendmail_server
    etc_mail = server.tree("/etc/mail")
    before = server.root.changes()

    out = server.setup("--yes", answers={"mta": ["sendmail"], "self_test": False}).stdout
    assert "sendmail: configured" in out and "lmsav is set up." in out
    mc = server.read("/etc/mail/sendmail.mc")
    assert "INPUT_MAIL_FILTER(`lmsav', `S=inet:8894@127.0.0.1, F=T" in mc
    assert "Xlmsav, S=inet:8894@127.0.0.1" in server.read("/etc/mail/sendmail.cf")
    config = tomllib.loads(server.read("/etc/lmsav/lmsav.toml"))
    assert config["milter"]["listen"] == MILTER_LISTEN
    # No reinjection listener with Sendmail: notices go through sendmail(1).
    assert config["milter"]["notices"] == "sendmail:/usr/sbin/sendmail"
    entries = manifest(server)
    assert {e["path"] for e in entries if e["kind"] == "mta-file"} == \
        {"/etc/mail/sendmail.mc", "/etc/mail/sendmail.cf"}

    run_start_commands(server, out, 3)
    server.wait_port(8894)
    server.sh("unshare --uts sh -c 'hostname mta.test && exec /usr/lib/sm.bin/sendmail "
              "-C /etc/mail/sendmail.cf -bd -q1m'")
    server.wait_port(SENDMAIL_PORT)

    infected = "eicar-" + token()
    code, transcript = swaks_reply(server, "bob@client.example", "alice@mta.test", infected,
                                   "--attach", f"@{server.write_eicar()}",
                                   server_port=SENDMAIL_PORT)
    assert code != 0 and "<** 550 " in transcript, \
        transcript + server.read("/var/log/lmsav/milter.log")
    # alice's notice went to sendmail(1) ([milter] notices).
    assert any(server.path("/var/spool/postfix/maildrop").iterdir())
    code, transcript = swaks_reply(server, "bob@client.example", "alice@mta.test",
                                   "clean-" + token(), "--body", "Lunch at noon?",
                                   server_port=SENDMAIL_PORT)
    assert code == 0 and "<-  250 " in transcript, transcript

    removal = server.setup("--remove", "--purge", "--yes")
    assert ("sendmail: restored /etc/mail/sendmail.cf, /etc/mail/sendmail.mc byte for byte"
            in removal.stdout)
    assert "stopped lmsav milter" in removal.stdout
    assert server.tree("/etc/mail") == etc_mail
    assert server.lmsav_processes() == []
    # /usr/sbin/sendmail here is the host's Postfix's: its maildrop kept the notices.
    assert leftovers(server, before, ignore=("/var/lib/sendmail-test/",
                                             "/var/spool/postfix/")) == []
