"""The ``lmsav`` command: parse, call, print, exit — no scanning logic lives here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import click

from . import __version__
from . import config as config_mod
from . import paths as paths_mod
from .clitools import Fatal, database_dir, load_database, load_settings
from .sweep.options import ScanParameters, scan_options


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"lmsav {__version__}")
    try:
        settings = config_mod.load_settings(
            paths_mod.config_file_from(None, os.environ), None, {}
        )
        db = load_database(Path(settings.database_dir()))
        click.echo(f"database {db.version} ({db.total} signatures) in {db.directory}")
    except (Fatal, config_mod.ConfigError) as err:
        click.echo(f"database unavailable: {getattr(err, 'message', err)}")
    ctx.exit(0)


class LazyGroup(click.Group):
    """Command groups that live beside the code they drive (spool, MTA setup, schedules …),
    imported only when used: importing them all costs every lmsav command ~0.1 s of start-up
    (croniter, the daemon, the spool), most of a sweep that finds everything unchanged."""

    LAZY: ClassVar[dict[str, str]] = {
        "quarantine": "lmsav.quarantine.commands:quarantine",
        "cron": "lmsav.cron.commands:cron",
        "spool": "lmsav.spool.commands:spool",
        "setup": "lmsav.setup.commands:setup",
        "daemon": "lmsav.daemon.commands:daemon",
        "ctl": "lmsav.ctl:ctl",
        "update": "lmsav.update.commands:update",
        "keys": "lmsav.update.keycommands:keys",
        "mail": "lmsav.mail.commands:mail_group",
        "groups": "lmsav.mail.commands:groups_group",
        "backup": "lmsav.backupcommands:backup_group",
        "db": "lmsav.dbcommands:db_group",
        "config": "lmsav.configcommands:config_group",
        "snmp": "lmsav.snmp.commands:snmp_group",
        "stats": "lmsav.stats.commands:stats_group",
        "milter": "lmsav.milter.commands:milter",
        "report": "lmsav.stats.report_commands:report",
        "web": "lmsav.web.commands:web",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            import importlib

            module, _, attr = self.LAZY[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", envvar=paths_mod.ENV_CONFIG,
              help=f"Configuration file (default: {paths_mod.SYSTEM_CONFIG_FILE} for root, "
                   f"service and system accounts, ~/.config/lmsav/lmsav.toml for a person; env "
                   f"{paths_mod.ENV_CONFIG}).")
@click.option("--profile", metavar="NAME",
              help="Preset to start from: default_recommended, high_overall_security, "
                   "high_scan_speed.")
@click.option("-v", "--verbose", "verbose", is_flag=True,
              help="Log everything (debug), whatever [log] says; before the command: "
                   "`lmsav -v daemon`.")
@click.option("-q", "--quiet", "quiet", is_flag=True,
              help="Log errors only, whatever [log] says; before the command.")
@click.option("-V", "--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show program and database versions and exit.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, profile: str | None, verbose: bool,
         quiet: bool) -> None:
    """lmsav — anti-virus for Linux mail servers and their filesystems.

    Scans files, directory trees, archives and mail with ClamAV-format signatures and YARA
    rules. Exit codes follow clamscan: 0 nothing found, 1 something found, 2 an error.
    """
    if verbose and quiet:
        raise Fatal("-v and -q say opposite things: give one of them")
    explicit = config_path is not None
    path = paths_mod.config_file_from(config_path, os.environ)
    ctx.obj = {"config": path, "config_explicit": explicit, "profile": profile,
               "verbosity": 1 if verbose else -1 if quiet else 0}
    _configure_logging(ctx)


# The component a command's lines are logged as (lmsav-<component>[pid]); commands that run as
# services set their logging again themselves (detached, their own log file).
COMMAND_COMPONENTS = {
    "scan": "scan", "daemon": "daemon", "ctl": "daemon", "spool": "spool", "enqueue": "spool",
    "update": "update", "keys": "update", "db": "update", "cron": "cron", "stats": "stats",
    "snmp": "snmp", "setup": "setup", "mail": "mail", "groups": "mail", "backup": "mail",
    "quarantine": "mail",
}


def _configure_logging(ctx: click.Context) -> None:
    """[log] for this command. A configuration the command cannot load is its own error to
    report: logging then starts from the defaults."""
    from . import logsetup

    obj = ctx.obj
    try:
        settings = config_mod.load_settings(obj["config"], obj["profile"], {},
                                            required=obj["config_explicit"])
    except config_mod.ConfigError:
        settings = config_mod.load_settings(None, None, {})
    logsetup.configure(settings, COMMAND_COMPONENTS.get(ctx.invoked_subcommand or "", ""),
                       verbosity=obj["verbosity"], interactive=True)
    ctx.call_on_close(logsetup.reset)


# -- lmsav enqueue -----------------------------------------------------------------------------

class _OwnWordsCommand(click.Command):
    """A command that parses its words itself: they reach it untouched, `--`, -h and words
    starting with '-' included."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.args = list(args)
        return []


@main.command("enqueue", cls=_OwnWordsCommand,
              short_help="Spool one message piped in by an MTA (lmsav-enqueue(8)).")
@click.pass_context
def enqueue_cmd(ctx: click.Context) -> None:
    """The MTA's pipe command. The lmsav executable runs it before this parser is loaded
    (lmsav.launcher), to start fast once per message; it is here for `lmsav --help` and for
    `lmsav --config FILE enqueue …`."""
    from .spool.enqueue import ENV_CONFIG
    from .spool.enqueue import main as enqueue_main

    obj = ctx.find_root().obj
    if obj["config_explicit"]:
        os.environ[ENV_CONFIG] = str(obj["config"])
    ctx.exit(enqueue_main(ctx.args))


# -- lmsav scan --------------------------------------------------------------------------------

@main.command("scan")
@scan_options
@click.pass_context
def scan_cmd(ctx, **given):
    """Scan files and directory trees (recursively) for threats; '-' reads standard input.

    Archives (zip, 7z, rar, tar, cpio, cab, iso, ar/deb, gzip, bzip2, xz, zstd) and mail files
    (RFC 822 messages, mbox) are scanned member by member. A finding inside a container is
    printed with its path inside it, e.g. 'mail.eml//2:invoice.zip//x.exe: Name FOUND'.
    """
    params = ScanParameters(**given)
    if params.use_daemon:
        if (params.action_overrides() or params.report_path or params.watch
                or params.initial_scan):
            raise Fatal("--action, --report, --watch and --initial-scan need a local scan; they "
                        "do not work with --daemon")
        ctx.exit(_scan_through_daemon(ctx, params))
    from .sweep.command import run_scan

    settings = load_settings(ctx, params.overrides())
    db = load_database(database_dir(settings, params.database))
    ctx.exit(run_scan(settings, db, params))


def _scan_through_daemon(ctx, params: ScanParameters) -> int:
    """clamdscan's behaviour: the daemon scans, lmsav.sweep.through_daemon prints."""
    from .daemon.client import Client, ClientError
    from .sweep.through_daemon import scan_through_daemon

    settings = load_settings(ctx)
    client = Client(path=params.daemon_socket or settings.daemon_socket())
    try:
        return scan_through_daemon(client, params, settings.scan.follow_symlinks)
    except (ClientError, OSError) as err:
        raise Fatal(f"daemon: {err}") from None
