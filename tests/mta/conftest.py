"""A real Postfix and a real Exim on 127.0.0.1, each with private configuration and state, set up
for lmsav by ``lmsav setup … --apply`` and delivering to Maildirs under a temporary directory.

Each stack is an MTA, an lmsav configuration of its own (spool, groups) and a running ``lmsav
spool watch``. The MTA hands mail to lmsav as ``lmsav setup`` does by default, over SMTP to the
listener the watcher runs (``[spool] listen`` on a free port, ``--listen-port``), or, in the
``*_pipe_stack`` fixtures, through the pipe transport (``--pipe``) running ``lmsav enqueue``.
Postfix comes from the Debian package; Exim, whose packages conflict with postfix, is unpacked
beside it by scripts/mta/exim-unpack. A test that cannot get its MTA is skipped with the
reason. Set LMSAV_KEEP_MTA=1 to keep the directories for a post-mortem.

Every stack knows the same domains and recipients; the lmsav groups give each domain its
policy: drop.test drops infected mail, warn.test warns, cure.test cures, everything else (the
default group) rejects, which after the queue means a notice to the sender. Notices to the
administrator go to admin@admin.test.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import io
import json
import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
import zipfile
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.spool.nqueue import SUBDIRS
from tests.conftest import EICAR

REPO = Path(__file__).resolve().parents[2]
LMSAV = shutil.which("lmsav") or str(Path(sys.executable).parent / "lmsav")
EXIM_UNPACK = REPO / "scripts" / "mta" / "exim-unpack"

DOMAINS = ("clean.test", "drop.test", "warn.test", "cure.test", "reject.test", "admin.test",
           "senders.test")
LOCAL_PARTS = ("alice", "bob", "carol", "dave", "admin")
ADMIN = "admin@admin.test"
SENDER = "alice@senders.test"
NOTICE_FROM = "lmsav@mta.test"

GROUPS = {
    "default.toml": f"""
admin_addresses = ["{ADMIN}"]
notice_from = "{NOTICE_FROM}"
# The test sender is real: let rejections after the queue come back to it as notices.
no_sender_notice = []
""",
    "drop.toml": 'priority = 10\nrecipients = ["drop.test"]\ninfected_action = "drop"\n',
    "warn.toml": 'priority = 10\nrecipients = ["warn.test"]\ninfected_action = "warn"\n',
    "cure.toml": """priority = 10
recipients = ["cure.test"]
scan_policy = "combined"
infected_action = "cure"
uncurable_action = "drop"
""",
}

# Headers an MTA adds on the way in and at delivery; anything else must come through unchanged.
TRACE_HEADERS = {"received", "return-path", "delivered-to", "x-original-to", "envelope-to",
                 "delivery-date"}
AV_HEADERS = {"x-av-checked", "x-av-status", "x-av-threats"}

WAIT = float(os.environ.get("LMSAV_MTA_WAIT", "60"))

POSTFIX_SHARE = Path("/usr/share/postfix")  # the package's pristine files, whatever /etc holds


def program(name: str) -> str:
    """An MTA command by full path: /usr/sbin is not on an ordinary user's PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


def have_postfix() -> bool:
    """Postfix's programs and the package's template of master.cf are there."""
    return os.path.isabs(program("postconf")) and (POSTFIX_SHARE / "master.cf.dist").is_file()


def write_stock_postfix_config(etc: Path) -> None:
    """main.cf and master.cf as the Debian package installs them on a fresh machine, from its
    templates: tests never depend on (nor copy) the host's /etc/postfix."""
    etc.mkdir(parents=True)
    template = POSTFIX_SHARE / "main.cf.debian"
    main = template.read_text() if template.is_file() else "compatibility_level = 3.6\n"
    # What the package's postinst adds for an "Internet site" answered with defaults.
    main += ("myhostname = mta.test\nalias_maps = hash:/etc/aliases\n"
             "alias_database = hash:/etc/aliases\nmydestination = $myhostname, localhost\n"
             "relayhost =\nmynetworks = 127.0.0.0/8\nmailbox_size_limit = 0\n"
             "recipient_delimiter = +\ninet_interfaces = all\ninet_protocols = all\n")
    (etc / "main.cf").write_text(main)
    shutil.copyfile(POSTFIX_SHARE / "master.cf.dist", etc / "master.cf")


# -- helpers shared by the tests ------------------------------------------------------------------

def lmsav_cli():
    """lmsav's click group (it loads `setup` and `spool` itself, lazily)."""
    from lmsav.cli import main

    return main


def lmsav_command() -> list[str]:
    """How to run ``lmsav``: the installed executable."""
    return [LMSAV]


def enqueue_executable(root: Path, user: str, runs=None) -> str:
    """An lmsav the MTA's unprivileged ``user`` can run: the installed one if it can, else a
    wrapper running this checkout with the system Python (a virtual environment made from a
    Python under /root is out of that user's reach). ``runs(command)``, if given, tells whether
    ``command`` exits 0 run as that user (inside a tests.sysroot namespace, say)."""

    def as_user(command: list[str]) -> bool:
        account = pwd.getpwnam(user)
        try:
            proc = subprocess.run(command, user=account.pw_uid, group=account.pw_gid,
                                  extra_groups=[], capture_output=True, cwd="/")
        except OSError:
            return False
        return proc.returncode == 0

    runs = runs or as_user

    def works(command: str) -> bool:
        return runs([command, "enqueue", "--help"])

    if works(LMSAV):
        return LMSAV
    wrapper = root / "bin" / "lmsav"
    wrapper.parent.mkdir(exist_ok=True)
    wrapper.write_text(f"""#!/bin/sh
# lmsav for {user}: this checkout, run by the system Python.
PYTHONPATH={REPO} exec /usr/bin/python3 -m lmsav.launcher "$@"
""")
    os.chmod(wrapper.parent, 0o755)
    os.chmod(wrapper, 0o755)
    if not works(str(wrapper)):
        pytest.skip(f"{user} can run neither {LMSAV} nor lmsav with /usr/bin/python3")
    return str(wrapper)


def run_setup(*args: str, config: Path | None = None) -> str:
    """Run ``lmsav setup …`` and return its output; a failure fails the test with the output."""
    env = {"LMSAV_CONFIG": str(config)} if config else {}
    result = CliRunner().invoke(lmsav_cli(), ["setup", *map(str, args)], env=env,
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, up: bool = True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                if up:
                    return
        except OSError:
            if not up:
                return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} is not {'up' if up else 'down'} after {timeout} s")


def token() -> str:
    return uuid.uuid4().hex[:12]


def build_message(tok: str, *attachments, to: str = "bob@clean.test", text: str = "Hello.\n",
                  subject: str = "report") -> bytes:
    """A message with CRLF line ends, as it goes over SMTP; ``tok`` in Subject and Message-ID
    tells it apart from every other message of the run."""
    msg = EmailMessage()
    msg["From"] = f"Alice <{SENDER}>"
    msg["To"] = to
    msg["Subject"] = f"{subject} {tok}"
    msg["Date"] = "Wed, 25 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = f"<{tok}@senders.test>"
    msg["X-Test-Token"] = tok
    msg.set_content(text)
    for name, data, ctype in attachments:
        main, sub = ctype.split("/")
        msg.add_attachment(data, maintype=main, subtype=sub, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def infected_message(tok: str, to: str = "bob@clean.test") -> bytes:
    """A text part, a harmless attachment, and a zip holding a clean file beside EICAR."""
    return build_message(tok, ("notes.txt", b"harmless notes\n", "text/plain"),
                         ("files.zip", zip_of({"clean.txt": b"fine\n", "eicar.com": EICAR}),
                          "application/zip"), to=to)


def parsed(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def split_message(raw: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """(headers as (lower-case name, raw field with folding, LF ends), body with LF ends)."""
    raw = raw.replace(b"\r\n", b"\n")
    head, _, body = raw.partition(b"\n\n")
    headers: list[tuple[str, bytes]] = []
    for line in head.split(b"\n"):
        if line[:1] in (b" ", b"\t") and headers:
            name, value = headers[-1]
            headers[-1] = (name, value + b"\n" + line)
        else:
            headers.append((line.split(b":", 1)[0].decode("ascii", "replace").lower(), line))
    return headers, body


def assert_unchanged_but_av_headers(sent: bytes, delivered: bytes) -> None:
    """The delivered message is the sent one: same body bytes, same header fields in the same
    order, plus only MTA trace headers and lmsav's X-AV-* headers."""
    sent_headers, sent_body = split_message(sent)
    got_headers, got_body = split_message(delivered)
    assert got_body == sent_body
    kept = [h for h in got_headers if h[0] not in TRACE_HEADERS | AV_HEADERS]
    assert kept == sent_headers
    assert {"x-av-checked", "x-av-status"} <= {h[0] for h in got_headers}
    assert parsed(delivered)["X-AV-Status"] == "clean"


def attachment_names(raw: bytes) -> list[str]:
    return [p.get_filename() for p in parsed(raw).walk() if p.get_filename()]


def zip_members(raw: bytes, name: str) -> list[str]:
    for part in parsed(raw).walk():
        if part.get_filename() == name:
            with zipfile.ZipFile(io.BytesIO(part.get_content())) as zf:
                return zf.namelist()
    raise AssertionError(f"no attachment {name}")


def _chown(path: Path, user: str) -> None:
    """chown to ``user`` and its primary group (an MTA's delivery user)."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


def stop_process_group(proc) -> None:
    """SIGTERM the session a fixture started (daemon and its children), SIGKILL if it lingers."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def stop_gracefully(proc) -> None:
    """SIGTERM the process alone (it stops its own children), then SIGKILL the session the
    fixture started if it has not exited within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the MTA tests run a real Postfix/Exim and need root")


# -- mailboxes ------------------------------------------------------------------------------------

@dataclass
class Mailboxes:
    """The Maildirs the MTA delivers to: <root>/<domain>/<local part>/{new,cur}/."""

    root: Path

    def messages(self, address: str, tok: str | None = None) -> list[bytes]:
        local, _, domain = address.partition("@")
        out = []
        for sub in ("new", "cur"):
            folder = self.root / domain / local / sub
            if folder.is_dir():
                for path in sorted(folder.iterdir()):
                    data = path.read_bytes()
                    if tok is None or tok.encode() in data:
                        out.append(data)
        return out

    def wait(self, address: str, tok: str, count: int = 1, timeout: float = WAIT,
             stack: Stack | None = None) -> list[bytes]:
        """Wait until ``count`` messages holding ``tok`` are in the mailbox, then return them;
        a little longer than that to catch a duplicate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.messages(address, tok)
            if len(found) >= count:
                time.sleep(0.3)
                return self.messages(address, tok)
            time.sleep(0.1)
        found = self.messages(address, tok)
        detail = stack.debug() if stack is not None else ""
        raise AssertionError(f"{address}: {len(found)} message(s) with {tok} after {timeout} s, "
                             f"expected {count}\n{detail}")


# -- lmsav ----------------------------------------------------------------------------------------

class LmsavProcess:
    """An `lmsav` command as a child process with its own configuration and log."""

    what = "lmsav"

    def __init__(self, config: Path, log: Path, *args: str):
        self.config = config
        self.log = log
        self.args = args
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, LMSAV_CONFIG=str(self.config))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*lmsav_command(), *self.args], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def signal(self, signum: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, f"{self.what} is not running"
        self.proc.send_signal(signum)

    def stop(self) -> None:
        if self.proc is not None:
            stop_gracefully(self.proc)
        self.proc = None


class WatcherProcess(LmsavProcess):
    """``lmsav spool watch``."""

    what = "the watcher"

    def __init__(self, config: Path, log: Path):
        super().__init__(config, log, "spool", "watch")


class ListenerProcess(LmsavProcess):
    """``lmsav spool listen --listen ADDR``, beside a watcher."""

    what = "the listener"

    def __init__(self, config: Path, listen: str, log: Path):
        super().__init__(config, log, "spool", "listen", "--listen", listen)
        self.listen = listen


def write_lmsav_config(root: Path, spool: Path, reinject_port: int, listen: str = "") -> Path:
    """lmsav's configuration for a stack; it ends in its [spool] table, so a test may add to
    that. ``listen``: the address of the listener the watcher runs ([spool] listen)."""
    config = root / "lmsav" / "lmsav.toml"
    (config.parent / "groups.d").mkdir(parents=True)
    config.write_text(f"""[paths]
state_dir = "{root / 'state'}"

[spool]
dir = "{spool}"
reinject = "smtp:127.0.0.1:{reinject_port}"
workers = 2
retry_delay = 1
rescan_interval = 1
max_attempts = 1000
""" + (f'listen = ["{listen}"]\n' if listen else ""))
    for name, text in GROUPS.items():
        (config.parent / "groups.d" / name).write_text(text)
    os.chmod(config.parent, 0o755)
    return config


# -- Postfix --------------------------------------------------------------------------------------

class PrivatePostfix:
    """A Postfix instance of its own: configuration, queue, data and log under ``root``."""

    user = "nobody"  # runs `lmsav enqueue` with --pipe (pipe refuses root and the postfix account)

    def __init__(self, root: Path, smtp_port: int, mailboxes: Path, inside=None):
        self.root = root
        self.etc = root / "postfix"
        self.smtp_port = smtp_port
        self.mailboxes = mailboxes
        self.maillog = root / "maillog"
        # How a Postfix command runs: as it is, or inside a tests.sysroot namespace.
        self.inside = inside or (lambda command: command)

    def run(self, name: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(self.inside([program(name), "-c", str(self.etc), *args]),
                              check=check, capture_output=True, text=True)

    def postconf(self, *args: str) -> str:
        return self.run("postconf", *args).stdout

    def configure(self) -> None:
        write_stock_postfix_config(self.etc)
        (self.root / "queue").mkdir()
        recipients = self.etc / "vmailbox"
        recipients.write_text("".join(f"{local}@{domain} {domain}/{local}/\n"
                                      for domain in DOMAINS for local in LOCAL_PARTS))
        nobody = pwd.getpwnam(self.user)
        self.postconf(
            "-e",
            f"queue_directory = {self.root / 'queue'}",
            f"data_directory = {self.root / 'data'}",
            f"maillog_file = {self.maillog}",
            f"maillog_file_prefixes = {self.root}",
            "inet_interfaces = 127.0.0.1",
            "inet_protocols = ipv4",
            "myhostname = mta.test",
            "mydomain = mta.test",
            "myorigin = mta.test",
            "mydestination =",
            "alias_maps =",
            "alias_database =",
            "mynetworks = 127.0.0.0/8",
            "smtpd_relay_restrictions = permit_mynetworks, reject",
            f"virtual_mailbox_domains = {' '.join(DOMAINS)}",
            f"virtual_mailbox_base = {self.mailboxes}",
            f"virtual_mailbox_maps = texthash:{recipients}",
            f"virtual_uid_maps = static:{nobody.pw_uid}",
            f"virtual_gid_maps = static:{nobody.pw_gid}",
            # Nothing leaves the test instance, and deferred mail is retried within seconds.
            "default_transport = error:no mail leaves this test instance",
            "relay_transport = error:no mail leaves this test instance",
            "queue_run_delay = 1s",
            "minimal_backoff_time = 1s",
            "maximal_backoff_time = 2s",
            "smtputf8_enable = no",
            "compatibility_level = 3.6",
        )
        # Listen on a free port, and run nothing chrooted (the queue holds no copy of /etc).
        self.postconf("-F", "-e", f"smtp/inet/service = 127.0.0.1:{self.smtp_port}")
        self.postconf("-F", "-e", "*/*/chroot = n")

    def postfix(self, *args: str) -> None:
        self.run("postfix", *args)

    def start(self) -> None:
        self.postfix("start")
        wait_port(self.smtp_port)

    def reload(self) -> None:
        self.postfix("reload")

    def stop(self) -> None:
        """Stop the instance and wait until its master and listeners are gone."""
        self.run("postfix", "stop", check=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.run("postfix", "status",
                                                       check=False).returncode == 0:
            time.sleep(0.1)
        wait_port(self.smtp_port, up=False)

    def flush(self) -> None:
        self.run("postqueue", "-f")

    def queue(self) -> list[dict]:
        """The queue as postqueue -j lists it: one dict per message."""
        out = self.run("postqueue", "-j").stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def deferred_reasons(self) -> list[str]:
        return [r.get("delay_reason", "") for m in self.queue() for r in m["recipients"]]

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""


# -- Exim -----------------------------------------------------------------------------------------

EXIM_CONFIG = """\
exim_path = {exim}
exim_user = Debian-exim
exim_group = Debian-exim
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
primary_hostname = mta.test
qualify_domain = mta.test
domainlist local_domains = {domains}
hostlist relay_from_hosts = 127.0.0.1
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
keep_environment =
host_lookup =
rfc1413_hosts =
tls_advertise_hosts =
acl_smtp_rcpt = acl_check_rcpt

begin acl

acl_check_rcpt:
  accept hosts = +relay_from_hosts
         domains = +local_domains
         local_parts = {local_parts}
  deny   message = unknown user or relay not permitted

begin routers

local_maildir:
  driver = accept
  domains = +local_domains
  local_parts = {local_parts}
  transport = maildir

begin transports

maildir:
  driver = appendfile
  directory = {mailboxes}/$domain_data/$local_part_data
  maildir_format
  create_directory
  envelope_to_add
  return_path_add
  delivery_date_add
  user = Debian-exim

begin retry

*  *  F,2h,1s
"""


class PrivateExim:
    """An Exim daemon of its own (``-C``), unpacked beside Postfix; it runs as Debian-exim."""

    user = "Debian-exim"  # Exim gives up root for -C, so a pipe (--pipe) runs as the Exim user

    def __init__(self, exim: str, root: Path, smtp_port: int, mailboxes: Path):
        self.exim = exim
        self.root = root / "exim"
        self.config = self.root / "exim4.conf"
        self.smtp_port = smtp_port
        self.mailboxes = mailboxes
        self.proc: subprocess.Popen | None = None

    def configure(self) -> None:
        for sub in ("", "spool", "log"):
            (self.root / sub).mkdir(exist_ok=True)
            _chown(self.root / sub, self.user)
        self.config.write_text(EXIM_CONFIG.format(
            exim=self.exim, root=self.root, domains=" : ".join(DOMAINS),
            local_parts=" : ".join(LOCAL_PARTS), port=self.smtp_port, mailboxes=self.mailboxes))

    def command(self, *args: str) -> list[str]:
        return [self.exim, "-C", str(self.config), *args]

    def start(self, ports: str | None = None) -> None:
        """Start the daemon (queue runs every second); ``ports`` replaces daemon_smtp_ports."""
        extra = ["-oX", ports] if ports else []
        self.proc = subprocess.Popen(self.command("-bdf", "-q1s", *extra),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.smtp_port)
        assert self.proc.poll() is None, f"Exim exited:\n{self.log()[-2000:]}"

    def reload(self) -> None:
        """SIGHUP: the daemon executes itself again and reads the configuration anew."""
        assert self.proc is not None and self.proc.poll() is None, "Exim is not running"
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        wait_port(self.smtp_port)

    def stop(self) -> None:
        """Stop the daemon and what it forked (SMTP sessions, queue runners, deliveries): all
        of the session this fixture started."""
        if self.proc is not None and self.proc.poll() is None:
            stop_process_group(self.proc)
            # A child on its way out may hold the listening socket a moment longer; a daemon
            # started now would find the port taken.
            wait_port(self.smtp_port, up=False)
        self.proc = None

    def flush(self) -> None:
        subprocess.run(self.command("-qff"), check=True, capture_output=True)

    def queue(self) -> list[str]:
        out = subprocess.run(self.command("-bp"), capture_output=True, text=True).stdout
        return [block for block in out.split("\n\n") if block.strip()]

    def log(self) -> str:
        path = self.root / "log" / "mainlog"
        return path.read_text(errors="replace") if path.exists() else ""


def exim_root(exim: str) -> Path:
    """The tree exim-unpack extracted the packages into (usr/sbin, etc/exim4)."""
    return Path(exim).resolve().parent.parent / "root"


def unpacked_exim() -> str:
    """The Exim wrapper from scripts/mta/exim-unpack (fetched on first use), or skip."""
    proc = subprocess.run([str(EXIM_UNPACK)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot unpack Exim: {proc.stderr.strip().splitlines()[-1:]}")
    return proc.stdout.strip().splitlines()[-1]


# -- the stacks -----------------------------------------------------------------------------------

@dataclass
class Stack:
    """One MTA with lmsav behind it."""

    name: str
    root: Path
    mta: PrivatePostfix | PrivateExim
    smtp_port: int
    reinject_port: int
    lmsav_config: Path
    spool: Path
    watcher: WatcherProcess
    mail: Mailboxes
    enqueue_path: str  # the lmsav the MTA runs (--pipe --lmsav); "" for the listener
    setup_output: str = ""

    @property
    def setup_args(self) -> list:
        """`lmsav setup …` as this stack was set up: run again, it changes nothing."""
        target = self.mta.etc if self.name == "postfix" else self.mta.root
        args = [self.name, "--apply", "--config-dir", target, "--port", self.reinject_port]
        if self.enqueue_path:
            return args + ["--pipe", "--user", self.mta.user, "--lmsav", self.enqueue_path,
                           "--spool", self.spool]
        [listen] = tomllib.loads(self.lmsav_config.read_text())["spool"]["listen"]
        protocol, _, rest = listen.partition(":")
        return args + ["--listen-port", rest.rpartition(":")[2]] + (
            ["--lmtp"] if protocol == "lmtp" else [])

    def send(self, message: bytes, recipients, sender: str = SENDER) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, local_hostname="client.test",
                          timeout=30) as smtp:
            refused = smtp.sendmail(sender, list(recipients), message)
        assert not refused, refused

    def wait(self, address: str, tok: str, count: int = 1) -> list[bytes]:
        return self.mail.wait(address, tok, count, stack=self)

    def spool_entries(self) -> list[Path]:
        return [p for sub in ("new", "work", "hold") if (self.spool / sub).is_dir()
                for p in (self.spool / sub).iterdir()]

    def log_lines(self, *words: str, timeout: float = 30.0) -> list[str]:
        """The MTA's log lines holding every one of ``words``, waiting for the first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = [line for line in self.mta.log().splitlines()
                     if all(word in line for word in words)]
            if lines:
                return lines
            time.sleep(0.1)
        raise AssertionError(f"no {self.name} log line with {words} after {timeout} s\n"
                             f"{self.debug()}")

    def debug(self) -> str:
        watch_log = self.root / "watch.log"
        parts = [f"--- {self.name} log (tail)", "\n".join(self.mta.log().splitlines()[-25:]),
                 "--- lmsav spool watch log (tail)",
                 "\n".join(watch_log.read_text(errors="replace").splitlines()[-25:])
                 if watch_log.exists() else "(none)",
                 f"--- spool entries: {[p.name for p in self.spool_entries()]}"]
        return "\n".join(parts)


def _make_root(name: str) -> Path:
    # Not pytest's tmp_path: the MTA's unprivileged users must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix=f"lmsav-{name}-", dir="/tmp"))
    os.chmod(root, 0o755)
    return root


TRANSPORTS = ("smtp", "lmtp", "pipe")


@dataclass
class ListenerStack(Stack):
    """A stack whose MTA hands mail to lmsav over SMTP or LMTP (or the pipe, for comparison)."""

    transport: str = "smtp"
    listen: str = ""  # the listener's address, "" for the pipe
    listen_port: int = 0
    listener: ListenerProcess | None = None  # a separate `lmsav spool listen`, if any

    def start(self) -> None:
        self.mta.start()
        wait_port(self.reinject_port)
        self.watcher.start()
        if self.listener is not None:
            self.listener.start()
        if self.listen_port:
            wait_port(self.listen_port, timeout=60)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        _teardown(self)

    def debug(self) -> str:
        text = super().debug()
        log = self.root / "listen.log"
        if log.exists():
            text += "\n--- lmsav spool listen log (tail)\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-25:])
        return text


def build_listener_stack(name: str, mta_factory, transport: str = "smtp", *,
                         separate_listener: bool = False) -> ListenerStack:
    """An MTA (``name``: postfix or exim) set up by `lmsav setup NAME --apply` for
    ``transport`` (smtp, lmtp: the listener on a free port; pipe: `lmsav enqueue`), a private
    lmsav configuration and spool, a watcher and, with the listener, either ``[spool] listen``
    in the configuration (the watcher runs it) or a separate `lmsav spool listen`."""
    assert transport in TRANSPORTS, transport
    root = _make_root(name)
    smtp_port, reinject_port = free_port(), free_port()
    listen_port = free_port() if transport != "pipe" else 0
    mailboxes = root / "mail"
    mailboxes.mkdir()
    mta = mta_factory(root, smtp_port, mailboxes)
    _chown(mailboxes, mta.user)
    spool = root / "spool"
    # The spool belongs to the account that runs `lmsav enqueue`; the watcher (and the listener
    # it runs) runs as root.
    for path in (spool, *(spool / sub for sub in SUBDIRS)):
        path.mkdir(mode=0o750)
        _chown(path, mta.user)
    listen = f"{transport}:127.0.0.1:{listen_port}" if listen_port else ""
    config = write_lmsav_config(root, spool, reinject_port,
                                "" if separate_listener else listen)
    mta.configure()
    target = ["--config-dir", mta.etc if name == "postfix" else mta.root]
    args = [name, "--apply", *target, "--port", reinject_port]
    enqueue = ""
    if transport == "pipe":
        enqueue = enqueue_executable(root, mta.user)
        args += ["--pipe", "--user", mta.user, "--lmsav", enqueue, "--spool", spool]
    else:
        args += ["--listen-port", listen_port] + (["--lmtp"] if transport == "lmtp" else [])
    output = run_setup(*args, config=config)
    watcher = WatcherProcess(config, root / "watch.log")
    listener = (ListenerProcess(config, listen, root / "listen.log")
                if listen and separate_listener else None)
    return ListenerStack(name, root, mta, smtp_port, reinject_port, config, spool, watcher,
                         Mailboxes(mailboxes), enqueue, output, transport, listen, listen_port,
                         listener)


def _teardown(stack: Stack) -> None:
    stack.watcher.stop()
    stack.mta.stop()
    if os.environ.get("LMSAV_KEEP_MTA") != "1":
        shutil.rmtree(stack.root, ignore_errors=True)


def _postfix_stack(transport: str):
    _need_root()
    if not have_postfix():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    stack = build_listener_stack("postfix", PrivatePostfix, transport)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _exim_stack(transport: str):
    _need_root()
    exim = unpacked_exim()
    stack = build_listener_stack(
        "exim", lambda root, port, mail: PrivateExim(exim, root, port, mail), transport)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def postfix_stack():
    """A private Postfix with lmsav behind it as `lmsav setup postfix` makes it by default
    (over SMTP to the listener), running for the module's tests."""
    yield from _postfix_stack("smtp")


@pytest.fixture(scope="module")
def postfix_pipe_stack():
    """The same with `lmsav setup postfix --pipe`: `lmsav enqueue` for every message."""
    yield from _postfix_stack("pipe")


@pytest.fixture(scope="module")
def exim_stack():
    """A private Exim with lmsav behind it as `lmsav setup exim` makes it by default (an smtp
    transport to the listener), running for the module's tests."""
    yield from _exim_stack("smtp")


@pytest.fixture(scope="module")
def exim_pipe_stack():
    """The same with `lmsav setup exim --pipe`: `lmsav enqueue` for every message."""
    yield from _exim_stack("pipe")


@contextlib.contextmanager
def full_spool(stack, setup_args: list):
    """A spool on a 64 KiB tmpfs filled to the brim, switched in with `lmsav setup … --pipe
    --spool` and switched back (and unmounted) afterwards: enqueue fails with ENOSPC
    meanwhile."""
    full = stack.root / "full-spool"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs",
                              str(full)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        for sub in ("", "tmp", "new", "work", "hold"):
            (full / sub).mkdir(exist_ok=True)
            shutil.chown(full / sub, stack.mta.user)
        with open(full / "filler", "wb", buffering=0) as fp:  # leave no room for a message
            try:
                while True:
                    fp.write(b"\0" * 4096)
            except OSError:
                pass
        run_setup(*setup_args, "--spool", full)
        stack.mta.reload()
        yield full
    finally:
        run_setup(*setup_args, "--spool", stack.spool)
        stack.mta.reload()
        subprocess.run(["umount", str(full)], check=True)
