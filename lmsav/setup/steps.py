"""The steps of `lmsav setup`, in order. Each prints what it did and records every change in the
manifest before going on, so an interrupted setup can be run again or removed."""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import hostname as hostname_mod
from .. import paths
from ..mail.groups import groups_dir
from ..spool.nqueue import DIR_MODE
from . import mta as mta_mod
from . import units
from .answers import Answers
from .manifest import MANIFEST_DIR, Manifest, file_hash

CONFIG_FILE = paths.SYSTEM_CONFIG_FILE
GROUPS_DEFAULT = groups_dir(paths.SYSTEM_CONFIG_FILE) / "default.toml"
LOG_DIR = paths.SYSTEM_LOG_DIR
SPOOL_LOG = LOG_DIR / "spool.log"
MILTER_LOG = LOG_DIR / "milter.log"  # the milter's output where systemd does not run
LOGROTATE_FILE = Path("/etc/logrotate.d/lmsav")
CLAMAV_DIR = Path("/var/lib/clamav")
ORIGINALS = MANIFEST_DIR / "originals"
SWEEP_NAME = "setup-nightly"
UPDATE_NAME = "setup-update"
UPDATED_DATABASE = paths.bases_dir(paths.SYSTEM_STATE_DIR) / "current"  # lmsav update's current link
TEMPLATE = Path(__file__).resolve().parent.parent / "data" / "lmsav.toml.example"
CLAMAV_DATABASE_FILES = (".cvd", ".cld", ".cud")


class StepError(Exception):
    """A step cannot go on; what was done so far stays recorded."""


@dataclass
class Context:
    answers: Answers
    manifest: Manifest
    lmsav: str
    echo: Callable[[str], None]
    mtas: list = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    admin: str = ""
    failures: list[str] = field(default_factory=list)

    def say(self, text: str) -> None:
        self.echo(f"      {text}")

    @property
    def user(self) -> str:
        return self.answers.user

    def owner(self) -> tuple[int, int]:
        account = pwd.getpwnam(self.user)
        return account.pw_uid, account.pw_gid


# -- 1. account and directories ------------------------------------------------------------------

def account(ctx: Context) -> None:
    user = ctx.user
    if not _group_exists(user):
        _run(["groupadd", "--system", user])
        ctx.manifest.record("group", f"group:{user}", name=user, created=True)
        ctx.say(f"created system group {user}")
    if not _user_exists(user):
        _run(["useradd", "--system", "--gid", user, "--home-dir", str(paths.SYSTEM_STATE_DIR),
              "--no-create-home", "--shell", _nologin(), "--comment", "lmsav anti-virus", user])
        ctx.manifest.record("user", f"user:{user}", name=user, created=True)
        uid, _ = ctx.owner()
        ctx.say(f"created system user {user} (uid {uid})")
    else:
        ctx.say(f"system user {user} exists")
    # qmail-smtpd runs lmsav-qmail-queue as qmaild: the group lets it reach the daemon's socket
    # and read the configuration.
    for mta in ctx.mtas:
        member = getattr(mta, "account", None)
        if member and _user_exists(member) and not _in_group(member, user):
            _run(["usermod", "-a", "-G", user, member])
            ctx.manifest.record("member", f"member:{member}:{user}", user=member, group=user)
            ctx.say(f"added {member} to group {user}")


def directories(ctx: Context, settings) -> None:
    from ..spool import permissions

    uid, gid = ctx.owner()
    made = []
    # /etc/lmsav: root writes it, the service group reads it.
    made += _ensure_dir(ctx, paths.SYSTEM_CONFIG_DIR, 0, gid, 0o750)
    made += _ensure_dir(ctx, GROUPS_DEFAULT.parent, 0, gid, 0o750)
    state = Path(settings.paths.state_dir)
    for path in permissions.shared_dirs(settings):
        made += _ensure_dir(ctx, path, uid, gid, DIR_MODE,
                            store=path == paths.backup_dir(state))
    made += _ensure_dir(ctx, paths.quarantine_dir(state), uid, gid, DIR_MODE, store=True)
    made += _ensure_dir(ctx, paths.SYSTEM_RUN_DIR, uid, gid, DIR_MODE)
    made += _ensure_dir(ctx, LOG_DIR, uid, gid, 0o2750)
    if not SPOOL_LOG.exists():
        fd = os.open(SPOOL_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.fchown(fd, uid, gid)
        os.close(fd)
        ctx.manifest.record("file", f"file:{SPOOL_LOG}", path=str(SPOOL_LOG), created=True,
                            log=True)
    ctx.say(f"created {len(made)} directories" if made else "directories exist")
    who = permissions.owner(settings)
    for finding in permissions.check(settings, who, ctx.user):
        if finding.problem:
            ctx.say(f"warning: {finding.path}: {finding.problem}; fix: "
                    + "; ".join(finding.fixes))


def _ensure_dir(ctx: Context, path: Path, uid: int, gid: int, mode: int,
                store: bool = False) -> list[Path]:
    if path.exists():
        return []
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for created in reversed(missing):
        os.mkdir(created, mode if created == path else 0o755)
        if created == path:
            os.chown(created, uid, gid)
            os.chmod(created, mode)  # after chown, and explicitly: mkdir ignores set-group-id
        ctx.manifest.record("dir", f"dir:{created}", path=str(created), created=True,
                            store=store and created == path)
    return [path]


# -- 2. configuration file ----------------------------------------------------------------------

def config_text(ctx: Context) -> str:
    """The template with this server's values set."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text = set_key(text, "spool", "reinject", f'"smtp:127.0.0.1:{ctx.answers.reinject_port}"')
    text = set_key(text, "spool", "log_file", f'"{SPOOL_LOG}"')
    listen = spool_listen(ctx)
    if listen:
        # The watcher's service runs the listener the MTA hands its mail to.
        text = set_key(text, "spool", "listen", _toml_strings([listen]))
    text = set_key(text, "daemon", "socket_group", f'"{ctx.user}"')
    if ctx.user != paths.SERVICE_USER:
        text = set_key(text, "daemon", "user", f'"{ctx.user}"')
    listen = milter_listen(ctx)
    if listen:
        # Where the MTA looks for the milter; the daemon (always set up) decides.
        text = set_key(text, "milter", "listen", f'"{listen}"')
        text = set_key(text, "milter", "use_daemon", "true")
        notices = mta_mod.milter_notices(ctx.mtas)
        if notices:
            text = set_key(text, "milter", "notices", f'"{notices}"')
    database = database_dir(ctx.answers)
    if database is not None:
        text = set_key(text, "paths", "database", f'"{database}"')
    if updated_database(ctx.answers):
        for key, values in (("sources", ctx.answers.update_sources),
                            ("databases", ctx.answers.update_databases)):
            if values:
                text = set_key(text, "update", key, _toml_strings(values))
    return text


def _toml_strings(values: list[str]) -> str:
    # A JSON string is a TOML basic string.
    return "[" + ", ".join(json.dumps(value, ensure_ascii=False) for value in values) + "]"


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Set ``key`` in ``[section]``: the template's commented line becomes the setting."""
    lines = text.split("\n")
    start = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
    if start is None:
        return text.rstrip("\n") + f"\n\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")),
               len(lines))
    pattern = re.compile(rf"^#?\s*{re.escape(key)}\s*=")
    for i in range(start + 1, end):
        if pattern.match(lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines)
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines)


def milter_listen(ctx: Context) -> str:
    """Where `lmsav milter` listens for the MTAs set up before the queue with it; "" for
    none. Postfix's and Sendmail's defaults are one socket, served by one milter."""
    try:
        listens = mta_mod.milter_listens(ctx.mtas)
    except mta_mod.MtaError as err:
        raise StepError(f"milter socket: {err}") from None
    if len(listens) > 1:
        raise StepError(f"the MTAs look for the milter at different sockets: "
                        f"{', '.join(listens)}")
    return listens[0] if listens else ""


def spool_listen(ctx: Context) -> str:
    """Where lmsav's listener takes the mail of the MTAs set up to hand it over SMTP or LMTP
    after the queue ([spool] listen); "" for none."""
    return mta_mod.spool_listen(ctx.mtas, ctx.answers)


def config_file(ctx: Context) -> None:
    _, gid = ctx.owner()
    ctx.say(write_file(ctx, CONFIG_FILE, config_text(ctx), 0o640, 0, gid))
    if milter_listen(ctx) or spool_listen(ctx):
        from .. import config

        try:
            settings = config.load_settings(CONFIG_FILE, None)
        except config.ConfigError:
            return  # the next step says what is wrong with the file
        check_milter_listen(ctx, settings)
        check_spool_listen(ctx, settings)


def check_milter_listen(ctx: Context, settings) -> None:
    """An administrator's own lmsav.toml is kept: say so when its [milter] listen is not
    where the MTA will look."""
    wanted = milter_listen(ctx)
    if wanted and settings.milter.listen != wanted:
        ctx.say(f"warning: [milter] listen in {CONFIG_FILE} is "
                f"{settings.milter.listen or 'the default'}; the MTA looks for the milter "
                f"at {wanted}: set listen = \"{wanted}\"")


def check_spool_listen(ctx: Context, settings) -> None:
    """An administrator's own lmsav.toml is kept: say so when its [spool] listen lacks the
    address the MTA will hand mail to."""
    wanted = spool_listen(ctx)
    listen = tuple(getattr(settings.spool, "listen", ()))
    if wanted and wanted not in listen:
        shown = ", ".join(f'"{address}"' for address in listen)
        ctx.say(f"warning: [spool] listen in {CONFIG_FILE} is [{shown}]; the MTA hands mail to "
                f"{wanted}: add it (listen = [\"{wanted}\"])")


def write_file(ctx: Context, path: Path, text: str, mode: int, uid: int = 0,
               gid: int = 0) -> str:
    """Write a file of lmsav's unless the administrator has one (theirs is kept); returns what
    was done, for the step's output."""
    key = f"file:{path}"
    entry = ctx.manifest.get(key)
    current = file_hash(path)
    data = text.encode()
    if current is not None:
        ours = entry is not None and entry.get("sha256") == current
        if not ours:
            if entry is None:
                ctx.manifest.record("file", key, path=str(path), created=False)
            return f"kept {path} (it exists; lmsav's template is {TEMPLATE.name})" \
                if path == CONFIG_FILE else f"kept {path} (it exists)"
        if current == _sha(data):
            return f"{path} is up to date"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.lmsav-tmp")
    with open(tmp, "wb") as fp:
        fp.write(data)
        fp.flush()
        os.fsync(fp.fileno())
    os.chown(tmp, uid, gid)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    ctx.manifest.record("file", key, path=str(path), created=True, sha256=_sha(data))
    return f"wrote {path}"


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


# -- 3. protected domains ------------------------------------------------------------------------

def groups_text(ctx: Context) -> str:
    domains = ", ".join(f'"{d}"' for d in ctx.domains)
    return ("# Written by `lmsav setup`: this server's settings of the Default group, over the "
            "shipped ones\n# key by key (see lmsav-groups(5)).\n\n"
            "# Mail neither from nor to one of these domains passes unscanned; [] scans all "
            "mail.\n"
            f"protected_domains = [{domains}]\n\n"
            "# Who gets the administrator's notifications.\n"
            f'admin_addresses = ["{ctx.admin}"]\n')


def protected_domains(ctx: Context) -> None:
    _, gid = ctx.owner()
    shown = ", ".join(ctx.domains) if ctx.domains else "all mail (no domain list)"
    ctx.say(f"protected: {shown}; administrator: {ctx.admin}")
    ctx.say(write_file(ctx, GROUPS_DEFAULT, groups_text(ctx), 0o640, 0, gid))


def default_admin(domains: list[str]) -> str:
    return f"postmaster@{domains[0] if domains else host_name()}"


def host_name() -> str:
    """The fully qualified name, unless /etc/hosts makes that "localhost": then the host name."""
    return hostname_mod.host_name()


# -- 4. database ---------------------------------------------------------------------------------

def database_dir(answers: Answers) -> Path | None:
    """The database the configuration names; None for the bundled one."""
    if answers.database == "bundled":
        return None
    if answers.database == "clamav":
        return CLAMAV_DIR
    if updated_database(answers):
        return UPDATED_DATABASE
    return Path(answers.database)


def updated_database(answers: Answers) -> bool:
    """The database is lmsav update's: fetched in step 4, kept current by step 5's schedule."""
    return answers.database == "update"


def check_database_choice(answers: Answers) -> str | None:
    """Why the chosen database cannot be used, or None."""
    directory = database_dir(answers)
    if directory is None or updated_database(answers):
        return None  # the first update (step 4) says why, should it fail
    try:
        names = os.listdir(directory)
    except OSError as err:
        return f"{directory}: {err.strerror}"
    if answers.database == "clamav" and not any(n.endswith(CLAMAV_DATABASE_FILES)
                                                for n in names):
        return f"{directory} holds no ClamAV database (.cvd, .cld): run freshclam first"
    return None


def database(ctx: Context, settings) -> None:
    """Compiled once here (in a child process), so no service or MTA process compiles it;
    an up-to-date compiled database is only checked."""
    from ..scanner.signatures.database import Database, DatabaseError
    from ..scanner.signatures.errors import SignatureError

    if updated_database(ctx.answers):
        first_update(ctx)
    directory = Path(settings.database_dir())
    try:
        db = Database.load(directory, build_in_child=True)
    except (DatabaseError, SignatureError, OSError) as err:
        raise StepError(f"database {directory}: {err}") from None
    what = "up to date" if db.loaded_from_cache else "compiled"
    ctx.say(f"database {directory}: version {db.version or '-'}, {db.total} signatures, {what}")
    for warning in db.warnings[:3]:
        ctx.say(f"warning: {warning}")
    ctx.say("lmsav update keeps it current (the schedule of step 5)"
            if updated_database(ctx.answers) else
            "scheduled updates come with `lmsav update`; until then freshclam keeps "
            f"{directory} current" if directory == CLAMAV_DIR else
            "the bundled database knows test signatures only: for real protection choose "
            "\"clamav\" (/var/lib/clamav, kept current by freshclam)"
            if answers_bundled(ctx.answers) else f"keep {directory} current as you do now")


def answers_bundled(answers: Answers) -> bool:
    return answers.database == "bundled"


def first_update(ctx: Context) -> None:
    """`lmsav update` once, with the configuration just written: without a database there is
    nothing to scan with, so a failure stops setup."""
    command = [ctx.lmsav, "--config", str(CONFIG_FILE), "update"]
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    errors = [line.removeprefix("lmsav: error: ") for line in proc.stderr.splitlines()
              if line.startswith("lmsav: error: ")]
    if proc.returncode != 0:
        reason = errors[0] if errors else _last_line(proc.stderr or proc.stdout) \
            or f"exit status {proc.returncode}"
        raise StepError(f"first database update failed: {reason}; run `lmsav update` once a "
                        f"source is reachable, or choose another database")
    result = next((line for line in reversed(proc.stdout.splitlines())
                   if line.startswith(("updated:", "current:"))), "")
    ctx.say(f"lmsav update: {result or 'done'}")
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("lmsav: warning:")]
    for line in warnings[:3]:
        ctx.say(line.removeprefix("lmsav: "))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- 5. schedules --------------------------------------------------------------------------------

def schedules(ctx: Context, use_systemd: bool) -> None:
    nightly_sweep(ctx, use_systemd)
    if updated_database(ctx.answers):
        update_schedule(ctx, use_systemd)


def nightly_sweep(ctx: Context, use_systemd: bool) -> None:
    if not ctx.answers.sweep:
        ctx.say("no nightly sweep (none asked for)")
        return
    command = [ctx.lmsav, "--config", str(CONFIG_FILE), "cron", "add", "sweep", SWEEP_NAME,
               "--schedule", ctx.answers.sweep_schedule, "--replace"]
    for where in ctx.answers.sweep:
        command += ["--paths", where]
    if use_systemd:
        command += ["--systemd", "--enable"]
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise StepError(f"nightly sweep: {(proc.stderr or proc.stdout).strip()}")
    ctx.manifest.record("schedule", f"schedule:{SWEEP_NAME}", name=SWEEP_NAME,
                        systemd=use_systemd)
    ctx.say(f"nightly sweep of {' '.join(ctx.answers.sweep)} at "
            f"\"{ctx.answers.sweep_schedule}\" ({'systemd timer' if use_systemd else 'cron'})")


def update_schedule(ctx: Context, use_systemd: bool) -> None:
    """An hourly `lmsav update` at a minute of this server's own, so that servers set up alike
    do not all ask the mirrors at :00. The minute is drawn once and kept in the manifest: a
    second run installs the same schedule."""
    key = f"schedule:{UPDATE_NAME}"
    recorded = (ctx.manifest.get(key) or {}).get("minute")
    minute = recorded if isinstance(recorded, int) and 0 <= recorded < 60 \
        else random.randrange(60)
    when = f"{minute} * * * *"
    command = [ctx.lmsav, "--config", str(CONFIG_FILE), "cron", "add", "update", UPDATE_NAME,
               "--schedule", when, "--replace"]
    if use_systemd:
        command += ["--systemd", "--enable"]
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise StepError(f"update schedule: {(proc.stderr or proc.stdout).strip()}")
    ctx.manifest.record("schedule", key, name=UPDATE_NAME, systemd=use_systemd, minute=minute)
    ctx.say(f"database update every hour at minute {minute} (\"{when}\", "
            f"{'systemd timer' if use_systemd else 'cron'})")


# -- 6. services ---------------------------------------------------------------------------------

def services(ctx: Context, use_systemd: bool) -> list[str]:
    """Units written (and, under systemd, enabled and started); returns the commands to run
    where systemd does not. The milter comes with them when an MTA asks it before the
    queue."""
    milter = bool(milter_listen(ctx))
    if units.UNIT_DIR.is_dir():
        for name, text in units.units(ctx.lmsav, ctx.user, ctx.user, milter).items():
            ctx.say(write_file(ctx, units.UNIT_DIR / name, text, 0o644))
    names = [units.DAEMON_UNIT, units.SPOOL_UNIT] + ([units.MILTER_UNIT] if milter else [])
    if use_systemd:
        for args in (("daemon-reload",), ("enable", "--now", *names)):
            ok, detail = units.systemctl(*args)
            if not ok:
                raise StepError(f"systemctl {' '.join(args)}: {detail}")
        for name in names:
            ctx.manifest.record("unit", f"unit:{name}", name=name, enabled=True)
        ctx.say(f"enabled and started {', '.join(names[:-1])} and {names[-1]}")
        return []
    if milter and not MILTER_LOG.exists():
        uid, gid = ctx.owner()
        fd = os.open(MILTER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        os.fchown(fd, uid, gid)
        os.close(fd)
        ctx.manifest.record("file", f"file:{MILTER_LOG}", path=str(MILTER_LOG), created=True,
                            log=True)
    commands = units.start_commands(ctx.lmsav, ctx.user, SPOOL_LOG,
                                    MILTER_LOG if milter else None)
    ctx.say("systemd is not running here: start the services with")
    for line in commands:
        ctx.say(f"  {line}")
    return commands


# -- 7. log rotation -----------------------------------------------------------------------------

def logrotate_text(user: str) -> str:
    return (f"# Written by `lmsav setup`. lmsav reopens its logs when they are moved.\n"
            f"{LOG_DIR}/*.log {{\n\tweekly\n\trotate 8\n\tcompress\n\tdelaycompress\n"
            f"\tmissingok\n\tnotifempty\n\tcreate 0640 {user} {user}\n\tsu {user} {user}\n}}\n")


def logrotate(ctx: Context) -> None:
    if not LOGROTATE_FILE.parent.is_dir():
        ctx.say(f"skipped: logrotate is not installed ({LOGROTATE_FILE.parent} is missing)")
        return
    ctx.say(write_file(ctx, LOGROTATE_FILE, logrotate_text(ctx.user), 0o644))


# -- 8. the MTAs ---------------------------------------------------------------------------------

def mtas(ctx: Context) -> None:
    if not ctx.mtas:
        ctx.say("no MTA found (Postfix, Exim, Sendmail, qmail): only files and the daemon are "
                "set up")
        return
    for mta in ctx.mtas:
        if not mta.installed():
            ctx.say(f"{mta.name}: skipped, not installed")
            continue
        files: list[Path] = []
        try:
            files = mta.files()
            for path in files:
                _keep_original(ctx, mta.name, path)
            change = mta.apply(ctx.lmsav, ctx.answers)
        except (mta_mod.MtaError, OSError) as err:
            if files:  # recorded all the same: --remove puts back what the attempt changed
                _record_mta(ctx, mta, files)
            ctx.failures.append(f"{mta.name}: {err}")
            ctx.say(f"{mta.name}: FAILED: {err}")
            continue
        for backup in change.backups:
            ctx.manifest.record("mta-backup", f"mta-backup:{backup}", mta=mta.name,
                                path=str(backup), sha256=file_hash(backup))
        _record_mta(ctx, mta, files)
        ctx.say(f"{mta.name}: {'configured' if change.changed else 'already set up'}")
        for line in change.lines:
            ctx.say(f"{mta.name}: {line}")


# Where each MTA's configuration was found, so --remove finds it without the same --answers.
MTA_CONFIG_ANSWERS = {"postfix": ("postfix_config", "postfix_mode", "transport", "listen_port"),
                      "exim": ("exim_config", "exim_config_file", "exim_mode", "transport",
                               "listen_port"),
                      "qmail": ("qmail_rules",),
                      "sendmail": ("sendmail_config",)}


def _record_mta(ctx: Context, mta, files: list[Path]) -> None:
    for path in files:
        if ctx.manifest.get(f"mta-file:{path}") is not None:
            ctx.manifest.record("mta-file", f"mta-file:{path}", after_hash=file_hash(path))
    config = {key: getattr(ctx.answers, key) for key in MTA_CONFIG_ANSWERS.get(mta.name, ())}
    ctx.manifest.record("mta", f"mta:{mta.name}", name=mta.name, config=config)


def _keep_original(ctx: Context, name: str, path: Path) -> None:
    """A byte-for-byte copy of an MTA file before lmsav first changes it."""
    key = f"mta-file:{path}"
    entry = ctx.manifest.get(key)
    if entry is not None:
        # A file lmsav has not changed (an earlier attempt failed, or found it set up) that
        # the administrator changed since, to fix what made that attempt fail, say: the
        # original is what it holds now.
        untouched = "after_hash" in entry and entry["after_hash"] == entry.get("original_hash")
        if not (untouched and file_hash(path) != entry["after_hash"]):
            return
        ctx.manifest.forget(key)
    copy = None
    if path.exists():
        ORIGINALS.mkdir(mode=0o700, parents=True, exist_ok=True)
        copy = ORIGINALS / str(path).strip("/").replace("/", "%")
        shutil.copy2(path, copy)
    ctx.manifest.record("mta-file", key, mta=name, path=str(path),
                        original=str(copy) if copy else None,
                        original_hash=file_hash(path))


# -- helpers -------------------------------------------------------------------------------------

def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          check=False)
    if proc.returncode != 0:
        raise StepError(f"{' '.join(command)}: {' '.join(proc.stderr.split()) or proc.returncode}")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def _in_group(user: str, group: str) -> bool:
    try:
        return user in grp.getgrnam(group).gr_mem
    except KeyError:
        return False


def _nologin() -> str:
    for candidate in ("/usr/sbin/nologin", "/sbin/nologin"):
        if os.path.exists(candidate):
            return candidate
    return "/bin/false"
