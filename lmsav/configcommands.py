"""`lmsav config`: show the effective configuration and check it with its group files."""

from __future__ import annotations

from pathlib import Path

import click

from . import config as config_mod
from .clitools import Fatal, load_settings, root_options


@click.group("config")
def config_group():
    """Show and check the configuration."""


@config_group.command("show")
@click.option("--sources", is_flag=True, help="Annotate each value with where it came from.")
@click.pass_context
def config_show(ctx, sources):
    """Print the effective configuration (defaults, profile and file merged) as TOML."""
    settings = load_settings(ctx)
    click.echo(settings.to_toml(with_sources=sources), nl=False)


@config_group.command("check")
@click.pass_context
def config_check(ctx):
    """Validate the configuration file and the group files in groups.d beside it; exit 0 if
    lmsav can start with them, 2 otherwise."""
    from .mail.groups import groups_dir, load_groups

    obj = root_options(ctx)
    settings = load_settings(ctx)
    try:
        load_groups(groups_dir(Path(obj["config"])))
    except config_mod.ConfigError as err:
        raise Fatal(str(err)) from None
    where = obj["config"] if Path(obj["config"]).exists() else "built-in defaults"
    click.echo(f"{where}: OK (profile {settings.profile})")
