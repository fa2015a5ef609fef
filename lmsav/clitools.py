"""What every ``lmsav`` command group shares: the one-line error, the root options, the
settings and the database as a command loads them. Command groups live beside the code they
drive and import this module, never ``lmsav.cli`` (which imports them)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from . import config as config_mod
from . import paths as paths_mod

EXIT_CLEAN, EXIT_FOUND, EXIT_ERROR = 0, 1, 2


class Fatal(click.ClickException):
    """A one-line error an administrator can act on; exit code 2 as clamscan's."""

    exit_code = EXIT_ERROR

    def show(self, file=None):
        click.echo(f"lmsav: error: {self.message}", err=True)


def root_options(ctx: click.Context) -> dict:
    """The root command's --config and --profile; resolved as `lmsav` resolves them when a
    command group runs on its own (its tests, scripts)."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and "config" in obj:
        return obj
    return {"config": paths_mod.config_file_from(None, os.environ),
            "config_explicit": bool(os.environ.get(paths_mod.ENV_CONFIG)), "profile": None}


def load_settings(ctx: click.Context, overrides: dict | None = None):
    """The settings for this invocation; a bad configuration is a one-line error."""
    obj = root_options(ctx)
    try:
        return config_mod.load_settings(obj["config"], obj["profile"], overrides or {},
                                        required=obj["config_explicit"])
    except config_mod.ConfigError as err:
        raise Fatal(str(err))


def database_dir(settings, cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    return Path(settings.database_dir())


def load_database(directory: Path, rebuild: bool = False):
    from .scanner.signatures.database import Database, DatabaseError
    from .scanner.signatures.errors import SignatureError

    try:
        # A scan compiles in a child: the compiler's heap (gigabytes for ClamAV's database)
        # must not stay in the process that scans and forks workers. `db build` just exits.
        db = Database.load(directory, rebuild=rebuild, build_in_child=not rebuild)
    except (DatabaseError, SignatureError) as err:
        raise Fatal(str(err))
    for warning in db.warnings:
        click.echo(f"lmsav: warning: {warning}", err=True)
    return db
