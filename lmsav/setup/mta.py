"""The MTAs `lmsav setup` finds on this machine: whether each is installed, the domains it
treats as local, and its configuration change, made and undone through `lmsav setup
postfix|exim|sendmail|qmail`'s own code (lmsav/spool/setup_*.py, lmsav/qmail/setup.py)."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..qmail import setup as qmail_setup
from ..spool import setup_exim, setup_exim_prequeue, setup_postfix, setup_sendmail
from .answers import Answers

QMAIL_HOME = Path("/var/qmail")
SENDMAIL_BIN = Path("/usr/lib/sm.bin/sendmail")  # Debian's sendmail-bin, not Postfix's sendmail
SENDMAIL_SUBMIT = "/usr/sbin/sendmail"  # sendmail(1), where every MTA puts it
EXIM_ACCOUNTS = ("Debian-exim", "exim")  # Debian's exim_user, then the upstream default
SBIN_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
LOCALHOST_NAMES = {"localhost", "localhost.localdomain"}


class MtaError(Exception):
    """The MTA's configuration cannot be read or changed."""


@dataclass
class Change:
    """What applying (or removing) lmsav's settings did to one MTA."""

    files: list[Path] = field(default_factory=list)  # files it may have written
    backups: list[Path] = field(default_factory=list)  # copies the MTA's setup code made
    changed: bool = False
    lines: list[str] = field(default_factory=list)  # what to tell the administrator


def program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=SBIN_PATH)


# -- Postfix -------------------------------------------------------------------------------------

class PostfixMta:
    name = "postfix"

    def __init__(self, answers: Answers):
        self.config_dir = Path(answers.postfix_config)
        self.milter = answers.postfix_mode == "milter"
        self.transport = None if self.milter else answers.transport  # after the queue

    def milter_listen(self) -> str:
        """Where `lmsav milter` listens for smtpd_milters to reach it."""
        try:
            return setup_postfix.milter_listen(self._postfix(),
                                               setup_postfix.DEFAULT_MILTER_SOCKET)
        except setup_postfix.SetupError as err:
            raise MtaError(str(err)) from None

    def installed(self) -> bool:
        return program("postconf") is not None and (self.config_dir / "main.cf").is_file()

    def _postfix(self) -> setup_postfix.Postfix:
        try:
            return setup_postfix.Postfix(self.config_dir)
        except setup_postfix.SetupError as err:
            raise MtaError(str(err)) from None

    def files(self) -> list[Path]:
        return [self.config_dir / "main.cf", self.config_dir / "master.cf"]

    def local_domains(self) -> list[str]:
        postfix = self._postfix()
        try:
            out = postfix.postconf("-x", "-h", "mydestination", "virtual_mailbox_domains")
        except setup_postfix.SetupError as err:
            raise MtaError(str(err)) from None
        return [word for word in re.split(r"[\s,]+", out) if word and "/" not in word
                and ":" not in word]

    def apply(self, lmsav: str, answers: Answers, remove: bool = False) -> Change:
        postfix = self._postfix()
        try:
            if remove:
                plan = setup_postfix.plan_remove(postfix)
            elif self.milter:
                plan = setup_postfix.plan_milter(postfix, setup_postfix.DEFAULT_MILTER_SOCKET,
                                                 answers.reinject_port)
            else:
                plan = setup_postfix.plan_setup(postfix, lmsav, answers.user,
                                                answers.reinject_port,
                                                transport=answers.transport,
                                                listen_port=answers.listen_port)
            backups = setup_postfix.apply(postfix, plan)
        except setup_postfix.SetupError as err:
            raise MtaError(str(err)) from None
        change = Change(self.files(), backups, bool(backups))
        if change.changed:
            change.lines += reload_postfix(self.config_dir)
        return change


def reload_postfix(config_dir: Path) -> list[str]:
    """`postfix reload` when it runs; otherwise say so."""
    command = program("postfix")
    if command is None:
        return []
    args = [command] + (["-c", str(config_dir)] if config_dir != setup_postfix.DEFAULT_CONFIG_DIR
                        else [])
    status = subprocess.run([*args, "status"], capture_output=True, text=True, check=False)
    if status.returncode != 0:
        return ["Postfix is not running: the changes apply when it starts"]
    done = subprocess.run([*args, "reload"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return [f"`postfix reload` failed: {' '.join(done.stderr.split())}; reload it by hand"]
    return ["Postfix reloaded"]


# -- Exim ----------------------------------------------------------------------------------------

class EximMta:
    name = "exim"

    def __init__(self, answers: Answers):
        self.config_dir = Path(answers.exim_config)
        self.config_file = Path(answers.exim_config_file) if answers.exim_config_file else None
        self.pre_queue = answers.exim_mode == "pre-queue"
        # After the queue, how mail reaches lmsav; before it, what the ACL cannot finish goes
        # through the pipe.
        self.transport = None if self.pre_queue else answers.transport

    milter = False

    @property
    def account(self) -> str | None:
        """Before the queue, Exim's own user asks the daemon: it joins the service group,
        which the daemon's socket belongs to ([daemon] socket_group)."""
        if not self.pre_queue:
            return None
        return next((name for name in EXIM_ACCOUNTS if _account_exists(name)), None)

    def installed(self) -> bool:
        if self.config_file is not None:
            return self.config_file.is_file()
        return ((program("exim4") or program("exim")) is not None) and self.config_dir.is_dir()

    def _where(self):
        try:
            return setup_exim.locate(self.config_dir, self.config_file)
        except setup_exim.SetupError as err:
            raise MtaError(str(err)) from None

    def files(self) -> list[Path]:
        layout, where = self._where()
        options = setup_exim.Options("/x", "x", 1, None)
        try:
            plans = [setup_exim.plan_setup(layout, where, options)]
            if self.pre_queue:  # its ACL file too, where Debian's split layout has one
                plans.append(setup_exim_prequeue.plan_setup(
                    layout, where, setup_exim_prequeue.Options("/x", "x", 1, None)))
        except setup_exim.SetupError as err:
            raise MtaError(str(err)) from None
        return list(dict.fromkeys(change.path for plan in plans for change in plan.files))

    def local_domains(self) -> list[str]:
        layout, where = self._where()
        if layout is not setup_exim.Layout.SINGLE:
            # update-exim4.conf makes it "@:localhost:" + dc_other_hostnames.
            debconf = setup_exim._debian_settings(where)
            return _exim_list("@ : " + debconf.get("dc_other_hostnames", "").replace(";", ":"),
                              exim_primary_hostname(""))
        text = _read(where)
        match = re.search(r"^\s*domainlist\s+local_domains\s*=\s*(.*)$", text, re.MULTILINE)
        return _exim_list(match[1], exim_primary_hostname(text)) if match else []

    def apply(self, lmsav: str, answers: Answers, remove: bool = False) -> Change:
        layout, where = self._where()
        try:
            if remove:
                plan = setup_exim_prequeue.plan_remove(layout, where)
            elif self.pre_queue:
                plan = setup_exim_prequeue.plan_setup(layout, where, setup_exim_prequeue.Options(
                    lmsav, answers.user, answers.reinject_port, None))
            else:
                options = setup_exim.Options(lmsav, answers.user, answers.reinject_port, None,
                                             transport=answers.transport,
                                             listen_port=answers.listen_port)
                plan = setup_exim_prequeue.plan_after_queue(layout, where, options)
            backups = setup_exim.apply(plan)
        except setup_exim.SetupError as err:
            raise MtaError(str(err)) from None
        change = Change([c.path for c in plan.files], backups, bool(plan.changes))
        if change.changed:
            change.lines += [f"{note}" for note in setup_exim._next_steps(layout, where)]
            if self.pre_queue and not remove:
                change.lines.append(f"the DATA ACL asks the lmsav daemon at "
                                    f"{setup_exim_prequeue.DEFAULT_SOCKET}")
        return change


def exim_primary_hostname(config_text: str) -> str:
    """What "@" stands for: primary_hostname if the configuration sets it, else what Exim
    takes, the host name, qualified by the resolver when it has no dot (not
    socket.getfqdn(), which /etc/hosts often turns into "localhost")."""
    match = re.search(r"^\s*primary_hostname\s*=\s*([^\s$]+)\s*$", config_text, re.MULTILINE)
    if match:
        return match[1]
    name = socket.gethostname()
    if "." not in name:
        try:
            name = socket.gethostbyname_ex(name)[0]
        except OSError:
            pass
    return name


def _exim_list(text: str, primary_hostname: str) -> list[str]:
    """An Exim domain list: colon-separated, "@" for the primary host name, lookups skipped."""
    out = []
    for item in re.split(r"\s*:\s*", text.strip()):
        if item == "@":
            out.append(primary_hostname.lower())
        elif item and not item.startswith(("!", "+", "$", "/")) and ";" not in item:
            out.append(item.lower())
    return out


# -- qmail ---------------------------------------------------------------------------------------

class QmailMta:
    name = "qmail"
    milter = False
    account = "qmaild"  # runs qmail-smtpd, hence lmsav-qmail-queue

    def __init__(self, answers: Answers):
        self.rules = Path(answers.qmail_rules)

    @property
    def cdb(self) -> Path:
        return self.rules.with_name(self.rules.name + ".cdb")

    def installed(self) -> bool:
        return (QMAIL_HOME / "bin" / "qmail-queue").is_file()

    def files(self) -> list[Path]:
        return [self.rules, self.cdb]

    def local_domains(self) -> list[str]:
        text = _read(QMAIL_HOME / "control" / "rcpthosts")
        return [line.strip().lower().lstrip(".") for line in text.splitlines()
                if line.strip() and not line.startswith("#")]

    def apply(self, lmsav: str, answers: Answers, remove: bool = False) -> Change:
        wrapper = str(Path(lmsav).with_name("lmsav-qmail-queue"))
        try:
            plan = qmail_setup.plan(self.rules, wrapper, None, remove)
            backup = qmail_setup.apply(plan)
            change = Change(self.files(), [backup] if backup else [], plan.changed)
            if plan.changed:
                ran = qmail_setup.compile_rules(self.rules, self.cdb)
                change.lines.append(f"compiled: {ran}" if ran else
                                    f"tcprules is not installed: compile {self.cdb} by hand")
        except qmail_setup.SetupError as err:
            raise MtaError(str(err)) from None
        return change


# -- Sendmail ------------------------------------------------------------------------------------

class SendmailMta:
    """Sendmail asks `lmsav milter` before the queue (INPUT_MAIL_FILTER); it has no other
    mode."""

    name = "sendmail"
    milter = True

    def __init__(self, answers: Answers):
        self.config_dir = Path(answers.sendmail_config)

    def installed(self) -> bool:
        if not (self.config_dir / setup_sendmail.MC).is_file():
            return False
        found = program("sendmail")
        return SENDMAIL_BIN.exists() or (found is not None
                                         and "sm.bin" in str(Path(found).resolve()))

    def milter_listen(self) -> str:
        return setup_sendmail.sendmail_socket(setup_sendmail.DEFAULT_MILTER_SOCKET)

    def files(self) -> list[Path]:
        return [self.config_dir / setup_sendmail.MC, self.config_dir / setup_sendmail.CF]

    def local_domains(self) -> list[str]:
        text = _read(self.config_dir / "local-host-names")
        return [line.strip().lower() for line in text.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]

    def apply(self, lmsav: str, answers: Answers, remove: bool = False) -> Change:
        try:
            plan = (setup_sendmail.plan_remove(self.config_dir) if remove else
                    setup_sendmail.plan_setup(self.config_dir))
            backups = setup_sendmail.apply(plan)
        except setup_sendmail.SetupError as err:
            raise MtaError(str(err)) from None
        change = Change(self.files(), backups, bool(plan.changes))
        if change.changed:
            change.lines += plan.notes
        return change


def _account_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def milter_listens(mtas) -> list[str]:
    """Where `lmsav milter` must listen for the installed MTAs set up to ask it."""
    out: list[str] = []
    for mta in mtas:
        if mta.milter and mta.installed():
            listen = mta.milter_listen()
            if listen not in out:
                out.append(listen)
    return out


def spool_listen(mtas, answers: Answers) -> str:
    """Where lmsav's listener must take the mail of the installed MTAs set up to hand it over
    SMTP or LMTP after the queue ([spool] listen); "" when none does."""
    if answers.transport == "pipe":
        return ""
    for mta in mtas:
        if getattr(mta, "transport", None) and mta.installed():
            return f"{answers.transport}:127.0.0.1:{answers.listen_port}"
    return ""


def milter_notices(mtas) -> str:
    """Where the milter's notices go when [spool] reinject does not reach an MTA: Postfix's
    milter mode (and its after-queue mode, and Exim's) adds the reinjection listener; Sendmail
    has none, so its own sendmail(1) takes them. "" keeps [spool] reinject."""
    names = {mta.name for mta in mtas if mta.installed()}
    if "sendmail" in names and not names & {"postfix", "exim"}:
        return f"sendmail:{SENDMAIL_SUBMIT}"
    return ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


ALL = (PostfixMta, EximMta, QmailMta, SendmailMta)


def chosen(answers: Answers) -> list:
    """The MTAs to set up: those installed ("auto"), none, or those named (installed or not:
    their setup then says what is missing)."""
    if answers.mta == "none":
        return []
    mtas = [cls(answers) for cls in ALL]
    if answers.mta == "auto":
        return [m for m in mtas if m.installed()]
    return [m for m in mtas if m.name in answers.mta]


def local_domains(mtas) -> list[str]:
    """What the MTAs treat as local, without localhost and in order of appearance."""
    out: list[str] = []
    for mta in mtas:
        try:
            found = mta.local_domains()
        except MtaError:
            continue
        for domain in found:
            domain = domain.strip().lower().rstrip(".")
            if domain and not _is_localhost(domain) and domain not in out:
                out.append(domain)
    return out


def _is_localhost(domain: str) -> bool:
    return domain in LOCALHOST_NAMES or domain.startswith("localhost.")
