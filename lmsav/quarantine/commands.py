"""`lmsav quarantine`: list, show, restore and delete files ``lmsav scan`` took out of place."""

from __future__ import annotations

import re
import time
from pathlib import Path

import click

from .. import jsonout, paths
from ..clitools import Fatal, load_settings
from .store import FileStore, StoreError

STORES = ("quarantine", "backup")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def store_roots(state_dir: Path | str) -> dict[str, Path]:
    """Where each store lives under the state directory (mail backups own ``backup/`` itself)."""
    return {"quarantine": paths.quarantine_dir(state_dir),
            "backup": paths.backup_files_dir(state_dir)}


def _store(ctx: click.Context, which: str) -> FileStore:
    settings = load_settings(ctx)
    return FileStore(store_roots(settings.paths.state_dir)[which], which)


def _call(fn):
    try:
        return fn()
    except StoreError as err:
        raise Fatal(str(err)) from None


store_option = click.option(
    "--store", "which", type=click.Choice(STORES), default="quarantine", show_default=True,
    help="quarantine: files moved away by --action quarantine; backup: originals kept before "
         "a cure or a delete (backup/files/; 'lmsav backup' lists them with the mail ones).")


@click.group("quarantine")
def quarantine():
    """Files `lmsav scan` moved into quarantine. Originals kept before a cure or delete are
    in `lmsav backup`."""


@quarantine.command("list")
@store_option
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per entry, a line each.")
@click.pass_context
def quarantine_list(ctx, which, as_json):
    """List entries, newest first."""
    entries = _call(_store(ctx, which).list)
    if as_json:
        jsonout.emit_records(e.to_json() for e in entries)
        return
    rows = [("ID", "DATE (UTC)", "STATUS", "THREATS", "SIZE", "ORIGINAL PATH")]
    for e in entries:
        rows.append((e.id, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.created)),
                     e.status, cell(", ".join(e.threats), 40), str(e.size),
                     cell(e.original_path, None)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:4], widths)]
        cells += [row[4].rjust(widths[4]), row[5]]
        click.echo("  ".join(cells).rstrip())


@quarantine.command("show")
@click.argument("entry_id", metavar="ID")
@store_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole record as one JSON object on one line.")
@click.pass_context
def quarantine_show(ctx, entry_id, which, as_json):
    """Print an entry's record: original path, owner, mode, times, hashes, verdict."""
    record = _call(lambda: _store(ctx, which).info(entry_id))
    if as_json:
        jsonout.emit_object(record)
        return
    for label, value in describe(record):
        click.echo(f"{label + ':':<18}{cell(value, None)}")


@quarantine.command("restore")
@click.argument("entry_id", metavar="ID")
@store_option
@click.option("--to", "to", metavar="PATH",
              help="Restore to PATH instead of the original path.")
@click.option("--force", is_flag=True, help="Replace a file that exists at the target.")
@click.option("--keep", is_flag=True, help="Keep the entry in the store after restoring.")
@click.pass_context
def quarantine_restore(ctx, entry_id, which, to, force, keep):
    """Put a file back with its owner, mode and times; the entry is removed afterwards."""
    restore_entry(_store(ctx, which), entry_id, to, force, keep)


def restore_entry(store: FileStore, entry_id: str, to: str | None, force: bool,
                  keep: bool) -> None:
    """``restore`` of either store: put the file back, say so, then forget the entry."""
    restored = _call(lambda: store.restore(entry_id, to, force))
    for warning in restored.warnings:
        click.echo(f"lmsav: warning: {restored.path}: {warning}", err=True)
    if not keep:
        _call(lambda: store.delete(entry_id))
    click.echo(f"restored {entry_id} to {restored.path}")


@quarantine.command("delete")
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@store_option
@click.pass_context
def quarantine_delete(ctx, entry_ids, which):
    """Delete entries for good."""
    store = _store(ctx, which)
    for entry_id in entry_ids:
        _call(lambda entry_id=entry_id: store.delete(entry_id))
        click.echo(f"deleted {entry_id}")


def cell(value: str, width: int | None) -> str:
    """``value`` safe to print in a table: control characters as ?, at most ``width`` long."""
    # Paths and names come from the scanned files: they must not drive the admin's terminal.
    value = _CONTROL.sub("?", value).encode("utf-8", "replace").decode("utf-8")
    if width is not None and len(value) > width:
        value = value[: width - 1] + "\u2026"
    return value


def describe(record: dict) -> list[tuple[str, str]]:
    """A kept file's record as (label, value) rows for ``show``."""
    def when(epoch) -> str:
        if not isinstance(epoch, (int, float)):
            return ""
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))

    mtime = record.get("mtime_ns")
    rows = [
        ("ID", record.get("id", "")),
        ("Kept", when(record.get("created"))),
        ("Action", record.get("action", "")
         + (f" (cure requested: {record['uncurable_reason']})"
            if record.get("uncurable_reason") else "")),
        ("Original path", record.get("original_path", "")),
        ("Owner", (f"{record.get('owner') or record.get('uid', '')}:"
                   f"{record.get('group') or record.get('gid', '')} "
                   f"({record.get('uid', '')}:{record.get('gid', '')})")),
        ("Mode", record.get("mode_octal", "")),
        ("Modified", when(mtime / 1e9) if isinstance(mtime, int) else ""),
        ("Size", record.get("size", "")),
        ("SHA-256", record.get("sha256", "")),
        ("MD5", record.get("md5", "")),
        ("Status", record.get("status", "")),
        ("Threats", ", ".join(record.get("threats") or [])),
        ("Database version", record.get("database_version", "")),
        ("Host", record.get("hostname", "")),
    ]
    for finding in record.get("findings") or []:
        names = ", ".join(finding.get("threats") or []) or finding.get("reason", "")
        rows.append(("Finding", f"{finding.get('path', '')}: {finding.get('status', '')}"
                                + (f" ({names})" if names else "")))
    return [(k, str(v)) for k, v in rows]

