"""`lmsav config`: show the effective configuration and check it with its group files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from . import config as config_mod
from . import jsonout
from .clitools import Fatal, load_settings, root_options


@click.group("config")
def config_group():
    """Show and check the configuration."""


@config_group.command("show")
@click.option("--sources", is_flag=True, help="Annotate each value with where it came from.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object on one line: section → key → value (with --sources, each "
                   "value is {\"value\": …, \"source\": …}).")
@click.option("--show-secrets", is_flag=True,
              help="Print passwords in URLs ([update] proxy, [stats] url) instead of ***.")
@click.pass_context
def config_show(ctx, sources, as_json, show_secrets):
    """Print the effective configuration (defaults, profile and file merged) as TOML.
    Passwords in URLs are shown as *** unless --show-secrets."""
    settings = load_settings(ctx)
    if as_json:
        jsonout.emit_object(settings_json(settings, sources, redact=not show_secrets))
        return
    click.echo(settings.to_toml(with_sources=sources, redact=not show_secrets), nl=False)


def settings_json(settings, with_sources: bool = False, redact: bool = False) -> dict[str, Any]:
    """The settings as ``config show`` writes them, as one JSON-ready object: ``profile``, then
    one object per section holding its keys; with sources, each value says where it came from."""

    def entry(name: str, value: Any) -> Any:
        if not with_sources:
            return value
        return {"value": value, "source": settings.sources.get(name, config_mod.BUILT_IN)}

    out: dict[str, Any] = {"profile": entry("profile", settings.profile)}
    for section in config_mod.SECTIONS:
        out[section] = {spec.key: entry(spec.name, settings.dumped(spec, redact))
                        for spec in config_mod.SPECS.values() if spec.section == section}
    return out


@config_group.command("check")
@click.option("--json", "as_json", is_flag=True,
              help="The result as one JSON object on one line: config, ok, profile.")
@click.pass_context
def config_check(ctx, as_json):
    """Validate the configuration file and the group files in groups.d beside it; exit 0 if
    lmsav can start with them, 2 otherwise."""
    from .mail.groups import groups_dir, load_groups

    obj = root_options(ctx)
    settings = load_settings(ctx)
    try:
        load_groups(groups_dir(Path(obj["config"])))
    except config_mod.ConfigError as err:
        raise Fatal(str(err)) from None
    found = Path(obj["config"]).exists()
    if as_json:
        jsonout.emit_object({"config": str(obj["config"]) if found else None, "ok": True,
                             "profile": settings.profile})
        return
    where = obj["config"] if found else "built-in defaults"
    click.echo(f"{where}: OK (profile {settings.profile})")
