"""`lmsav setup`: the post-installation script, its removal and self-test; and the per-MTA
commands `lmsav setup postfix|exim|qmail` (lmsav/spool/setup_commands.py)."""

from __future__ import annotations

import fcntl
import os
import sys
from pathlib import Path

import click

from ..clitools import Fatal
from ..spool import setup_commands as mta_commands
from . import answers as answers_mod
from . import mta as mta_mod
from . import selftest, steps, units
from .manifest import Manifest, ManifestError

LOCK_FILE = Path("/run/lmsav-setup.lock")
STEP_TITLES = ("Service account and directories", "Configuration file", "Protected domains",
               "Signature database", "Schedules", "Services", "Log rotation", "Mail servers",
               "Self-test")


@click.group("setup", invoke_without_command=True,
             short_help="Set this server up for lmsav (account, config, services, MTA), or "
                        "take it out again.")
@click.option("--yes", "-y", is_flag=True,
              help="Ask nothing: take the answers from --answers, the rest from the defaults.")
@click.option("--answers", "answers_file", metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of answers (see lmsav-setup(8) for the keys).")
@click.option("--remove", is_flag=True,
              help="Undo what setup did (from its manifest); edited files and the quarantine "
                   "and backup stores are kept.")
@click.option("--purge", is_flag=True, help="With --remove: delete the kept files and stores too.")
@click.option("--self-test", "self_test_only", is_flag=True,
              help="Only send the two test messages through the MTA and report.")
@click.option("--lmsav", "lmsav_path", metavar="PATH",
              help="The lmsav executable services and MTAs run (default: lmsav on PATH).")
@click.pass_context
def setup(ctx, yes, answers_file, remove, purge, self_test_only, lmsav_path):
    """Without a command: the post-installation script. It asks a few questions (or takes
    --yes and --answers FILE), then, printing what each step does:

    \b
     1. creates the system user and group lmsav and lmsav's directories;
     2. writes /etc/lmsav/lmsav.toml from the template (an existing file is kept);
     3. sets the protected domains (default: what the MTA treats as local);
     4. compiles the signature database (bundled, /var/lib/clamav, or a first
        `lmsav update` into /var/lib/lmsav/bases/current);
     5. schedules hourly updates (for an updated database) and an optional nightly sweep;
     6. installs and starts the daemon and the spool watcher (systemd), or prints the
        commands that start them where systemd is not running;
     7. installs a logrotate file;
     8. connects every MTA it finds (Postfix, Exim, qmail);
     9. sends a clean and an EICAR message through the MTA and reports what lmsav did.

    Running it again changes nothing. Every change is recorded in
    /var/lib/lmsav/setup/manifest.json; --remove undoes them. See lmsav-setup(8).

    With a command (postfix, exim, qmail): show, make or undo one MTA's changes only.
    """
    if ctx.invoked_subcommand is not None:
        if yes or answers_file or remove or purge or self_test_only or lmsav_path:
            raise Fatal(f"--yes, --answers, --remove, --purge, --self-test and --lmsav belong "
                        f"to `lmsav setup` alone, not to `lmsav setup {ctx.invoked_subcommand}`")
        return
    if purge and not remove:
        raise Fatal("--purge goes with --remove")
    if os.geteuid() != 0:
        raise Fatal("lmsav setup changes the system (accounts, /etc, the MTA): run it as root")
    try:
        answers = answers_mod.load(answers_file) if answers_file else answers_mod.Answers()
    except answers_mod.AnswersError as err:
        raise Fatal(str(err)) from None
    lmsav = os.path.abspath(lmsav_path or answers.lmsav or mta_commands._default_lmsav())
    if not os.access(lmsav, os.X_OK):
        raise Fatal(f"{lmsav}: not an executable lmsav (give it with --lmsav)")
    with _locked():
        try:
            manifest = Manifest.load()
        except ManifestError as err:
            raise Fatal(str(err)) from None
        if remove:
            ctx.exit(_remove(manifest, answers, yes, purge, lmsav))
        if self_test_only:
            ctx.exit(_self_test(answers, _recorded_mtas(manifest, answers), lmsav))
        ctx.exit(_setup(manifest, answers, yes, lmsav))


for _name, _command in mta_commands.setup.commands.items():
    setup.add_command(_command, _name)


class _locked:
    """One setup at a time."""

    def __enter__(self):
        try:
            self.fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Fatal("another `lmsav setup` is running") from None
        except OSError as err:
            raise Fatal(f"{LOCK_FILE}: {err.strerror}") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# -- setup ---------------------------------------------------------------------------------------

def _setup(manifest: Manifest, answers, yes: bool, lmsav: str) -> int:
    if not yes and not sys.stdin.isatty():
        raise Fatal("no terminal to ask the questions on: run `lmsav setup --yes` (with "
                    "--answers FILE for anything but the defaults)")
    mtas = mta_mod.chosen(answers)
    detected = mta_mod.local_domains(mtas)
    if not yes:
        _ask(answers, mtas, detected)
        mtas = mta_mod.chosen(answers)
    problem = steps.check_database_choice(answers)
    if problem:
        raise Fatal(f"database: {problem}")
    domains = detected if answers.domains is None else answers.domains
    ctx = steps.Context(answers=answers, manifest=manifest, lmsav=lmsav, echo=click.echo,
                        mtas=mtas, domains=domains,
                        admin=answers.admin or steps.default_admin(domains))
    use_systemd = answers.services == "systemd" or (
        answers.services == "auto" and units.systemd_running())
    settings = None

    def header(number: int) -> None:
        click.echo(f"[{number}/9] {STEP_TITLES[number - 1]}")

    try:
        header(1)
        steps.account(ctx)
        settings = _settings()
        steps.directories(ctx, settings)
        header(2)
        steps.config_file(ctx)
        settings = _settings()
        header(3)
        steps.protected_domains(ctx)
        header(4)
        steps.database(ctx, settings)
        header(5)
        steps.schedules(ctx, use_systemd)
        header(6)
        steps.services(ctx, use_systemd)
        header(7)
        steps.logrotate(ctx)
        header(8)
        steps.mtas(ctx)
    except steps.StepError as err:
        raise Fatal(f"{err} (what was done so far is recorded; run `lmsav setup` again, or "
                    "`lmsav setup --remove`)") from None
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        raise Fatal(f"{where}{err.strerror or err} (what was done so far is recorded)") from None
    header(9)
    code = _self_test(answers, [m for m in mtas if m.installed()], lmsav, ctx.admin, indent=True)\
        if answers.self_test else 0
    if not answers.self_test:
        click.echo("      skipped (self_test = false)")
    if ctx.failures:
        click.echo("Set up, except: " + "; ".join(ctx.failures))
        return 1
    click.echo("lmsav is set up." + (" The self-test failed: see above." if code else ""))
    return code


def _settings():
    from .. import config

    try:
        return config.load_settings(steps.CONFIG_FILE, None)
    except config.ConfigError as err:
        raise Fatal(str(err)) from None


def _ask(answers, mtas, detected: list[str]) -> None:
    """The questions, at the terminal; the defaults are what --yes would take."""
    shown = " ".join(answers.domains if answers.domains is not None else detected) or "*"
    reply = click.prompt("Protected domains (mail from or to them is scanned; * for all mail)",
                         default=shown)
    answers.domains = [] if reply.strip() == "*" else reply.replace(",", " ").lower().split()
    answers.admin = click.prompt("Administrator's address for notifications",
                                 default=answers.admin or steps.default_admin(answers.domains))
    default_db = answers.database
    if default_db == "bundled" and steps.check_database_choice(
            answers_mod.Answers(database="clamav")) is None:
        default_db = "clamav"
    answers.database = click.prompt(
        "Signature database: bundled (test signatures only), clamav (/var/lib/clamav), "
        "update (fetched and kept current by lmsav update) or a directory", default=default_db)
    sweep = click.prompt("Directories to sweep every night (empty for none)",
                         default=" ".join(answers.sweep), show_default=False)
    answers.sweep = sweep.split()
    chosen = [m.name for m in mtas if click.confirm(f"Connect {m.name} to lmsav?", default=True)]
    answers.mta = chosen or "none"
    for key, question, choices in answers_mod.mode_questions(chosen):
        setattr(answers, key, click.prompt(question, type=click.Choice(choices),
                                           default=getattr(answers, key)))
    # Asked once the modes are known: it matters only after the queue.
    transport = answers_mod.transport_question(answers, chosen)
    if transport is not None:
        key, question, choices = transport
        setattr(answers, key, click.prompt(question, type=click.Choice(choices),
                                           default=getattr(answers, key)))
    answers.self_test = click.confirm("Send two test messages through the MTA at the end?",
                                      default=answers.self_test)
    if not click.confirm("Go ahead?", default=True):
        raise Fatal("nothing done")


# -- self-test -----------------------------------------------------------------------------------

def _recorded_mtas(manifest: Manifest, answers) -> list:
    """The MTAs setup connected, where their configuration was then (the manifest); without a
    manifest, those the answers choose."""
    entries = manifest.of_kind("mta")
    if not entries:
        return mta_mod.chosen(answers)
    out = []
    for entry in entries:
        recorded = answers_mod.Answers(**{
            key: value for key, value in (entry.get("config") or {}).items()
            if key in answers_mod.FIELDS})
        out += [cls(recorded) for cls in mta_mod.ALL if cls.name == entry.get("name")]
    return out


def _self_test(answers, mtas, lmsav: str, admin: str = "", indent: bool = False) -> int:
    settings = _settings()
    pad = "      " if indent else ""
    if not admin:
        groups = settings_admin(settings)
        admin = groups or steps.default_admin(mta_mod.local_domains(mtas))
    recipient = answers.self_test_recipient or admin
    checks: list[selftest.Check] = []
    installed = [m for m in mtas if m.installed()]
    names = {m.name for m in installed}
    before_queue = {m.name for m in installed
                    if getattr(m, "milter", False) or getattr(m, "pre_queue", False)}
    if before_queue & {"postfix", "exim", "sendmail"}:
        checks += selftest.at_smtp_time(answers.self_test_smtp, admin, recipient)
    elif names & {"postfix", "exim"}:
        checks += selftest.through_spool(settings, answers.self_test_smtp, admin, recipient,
                                         answers.self_test_timeout)
    if "qmail" in names:
        wrapper = str(Path(lmsav).with_name("lmsav-qmail-queue"))
        checks += selftest.through_qmail(wrapper, admin, recipient)
    if not checks:
        click.echo(f"{pad}skipped: no MTA is set up for lmsav")
        return 0
    for check in checks:
        mark = {True: "ok", False: "FAILED", None: "skipped"}[check.ok]
        click.echo(f"{pad}{check.name}: {mark}: {check.detail}")
    return 1 if any(check.ok is False for check in checks) else 0


def settings_admin(settings) -> str:
    """The first admin address of the Default group as this server sets it, if any."""
    import tomllib

    try:
        data = tomllib.loads(steps.GROUPS_DEFAULT.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return ""
    addresses = data.get("admin_addresses")
    return addresses[0] if isinstance(addresses, list) and addresses else ""


# -- removal -------------------------------------------------------------------------------------

def _remove(manifest: Manifest, answers, yes: bool, purge: bool, lmsav: str) -> int:
    from .remove import Removal

    if not manifest.exists:
        click.echo(f"Nothing to remove: no setup manifest at {manifest.path}.")
        return 0
    if not yes:
        if not sys.stdin.isatty():
            raise Fatal("no terminal to confirm on: run `lmsav setup --remove --yes`")
        what = "everything setup made, stores included" if purge else "what setup made"
        if not click.confirm(f"Remove {what}?", default=False):
            raise Fatal("nothing done")
    removal = Removal(manifest, answers, click.echo, purge=purge, lmsav=lmsav)
    removal.run()
    for item in removal.kept:
        click.echo(f"kept: {item}")
    if removal.failures:
        click.echo("Not everything could be undone; the manifest keeps the rest: run "
                   "`lmsav setup --remove` again once fixed.")
        return 1
    LOCK_FILE.unlink(missing_ok=True)  # held until exit: a setup waiting meanwhile still fails
    click.echo("lmsav is removed from this server's configuration.")
    return 0
