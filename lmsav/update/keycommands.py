"""`lmsav keys`: the Ed25519 keys whose signatures lmsav bundles and feeds may carry."""

from __future__ import annotations

from pathlib import Path

import click

from .. import jsonout
from ..clitools import Fatal


@click.group("keys")
def keys() -> None:
    """Trust store of Ed25519 keys for lmsav bundles and signed feeds.

    /etc/lmsav/keys for the system (root, service and system accounts); an ordinary user also
    trusts ~/.config/lmsav/keys, where that user's `keys add` writes.
    """


@keys.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per key, one per line (JSON Lines).")
def list_keys(as_json: bool) -> None:
    """Show the trusted keys: name, id, where they are."""
    from . import keys as store

    found = store.trusted()
    if as_json:
        jsonout.emit_records(k.to_json() for k in found)
        return
    if not found:
        click.echo(f"no trusted keys ({', '.join(str(d) for d in store.key_dirs())})")
    for key in found:
        click.echo(f"{key.name}  {key.key_id}  {key.scope}  {key.path}")


@keys.command("add")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", required=True, help="The name the key is listed and removed by.")
def add_key(file: Path, name: str) -> None:
    """Trust the Ed25519 public key in FILE (PEM, or the base64 of its 32 bytes)."""
    from . import keys as store

    try:
        added = store.add(file, name, store.writable_dir())
    except store.KeyProblem as err:
        raise Fatal(str(err)) from None
    click.echo(f"added {added.name} ({added.key_id}) to {added.path.parent}")


@keys.command("remove")
@click.argument("name")
def remove_key(name: str) -> None:
    """Stop trusting the key NAME: bundles it signed are refused from now on."""
    from . import keys as store

    try:
        removed = store.remove(name, store.writable_dir())
    except store.KeyProblem as err:
        raise Fatal(str(err)) from None
    click.echo(f"removed {removed.name} ({removed.key_id}) from {removed.path.parent}")
