"""``lmsav backup``: the originals lmsav kept before changing something, files and mail alike.

Two stores under ``<state_dir>/backup/`` hold them: ``files/``, the originals of files a sweep
cured or deleted (a FileStore, also shown by ``lmsav quarantine --store backup``), and the entry
directories beside it, the original messages the mail policy kept (a BackupStore). Both name
entries alike (``20261125T134501Z-`` and 12 hex digits), so an id is looked for in both; the one
way an id can name an entry of each (the same microsecond and the same 28 random bits) is
refused with a request for ``--kind``, never settled by guessing.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click

from . import jsonout, paths
from .clitools import Fatal, load_settings
from .mail.backup import BackupEntry, BackupError, BackupStore, validate_id
from .mail.release import ReleaseError, release
from .quarantine.commands import cell, describe, restore_entry
from .quarantine.store import FileStore, StoredFile, StoreError

FILE, MAIL = "file", "mail"
KINDS = (FILE, MAIL)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Kept:
    """One kept original of either kind, as ``lmsav backup list`` shows it."""

    kind: str
    id: str
    created: float
    status: str
    threats: tuple[str, ...]
    size: int
    original: str  # a file's path; a message's sender, recipients and subject
    record: dict  # the store's own listing fields

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.record}


def _from_file(e: StoredFile) -> Kept:
    return Kept(FILE, e.id, e.created, e.status, e.threats, e.size, cell(e.original_path, None),
                e.to_json())


def _from_mail(e: BackupEntry) -> Kept:
    original = "" if e.status == "damaged" else (
        f"<{cell(e.sender, 32)}> to {cell(', '.join(e.recipients), 40)}: "
        f"{cell(e.subject, 50)}")
    return Kept(MAIL, e.id, e.created, e.status, e.threats, e.size, original, e.to_json())


class KeptOriginals:
    """Both stores of one state directory, looked at as one."""

    def __init__(self, state_dir: Path | str):
        self.files = FileStore(paths.backup_files_dir(state_dir), "backup")
        self.mail = BackupStore(paths.backup_dir(state_dir))

    def list(self, kind: str | None = None) -> list[Kept]:
        """Every entry of ``kind`` (both when None), newest first."""
        kept = []
        if kind in (None, FILE):
            kept += [_from_file(e) for e in _call(self.files.list)]
        if kind in (None, MAIL):
            kept += [_from_mail(e) for e in _call(self.mail.list)]
        kept.sort(key=lambda k: (k.created, k.id), reverse=True)
        return kept

    def kind_of(self, entry_id: str, kind: str | None = None) -> str:
        """Which store holds ``entry_id`` (only ``kind``'s when given); an error if none does,
        or if both do and ``kind`` does not say which is meant."""
        _call(lambda: validate_id(entry_id))
        found = [k for k, store in ((FILE, self.files), (MAIL, self.mail))
                 if kind in (None, k) and _call(lambda store=store: store.exists(entry_id))]
        if not found:
            raise Fatal(f"no {kind + ' ' if kind else ''}backup entry '{entry_id}'")
        if len(found) > 1:
            raise Fatal(f"backup entry '{entry_id}' names both a file and a mail original: "
                        f"add --kind file or --kind mail")
        return found[0]


def _call(fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except (StoreError, BackupError) as err:
        raise Fatal(str(err)) from None


def _originals(ctx: click.Context) -> KeptOriginals:
    return KeptOriginals(load_settings(ctx).paths.state_dir)


kind_option = click.option(
    "--kind", type=click.Choice(KINDS),
    help="Look only among file or mail originals (needed only for an id that names both).")


@click.group("backup", short_help="Originals of the files and messages lmsav changed.")
def backup_group():
    """Originals kept before a modifying action: files a scan cured or deleted (KIND file) and
    messages the mail policy changed (KIND mail). List, show, extract, restore (files),
    release (messages) and delete them."""


@backup_group.command("list")
@click.option("--kind", type=click.Choice(KINDS), help="List only file or only mail originals.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per entry, a line each, with its \"kind\".")
@click.pass_context
def backup_list(ctx, kind, as_json):
    """List kept originals, newest first.

    Files (KIND file) and messages (KIND mail) together, or one kind with --kind."""
    kept = _originals(ctx).list(kind)
    if as_json:
        jsonout.emit_records(k.to_json() for k in kept)
        return
    for line in format_table(kept):
        click.echo(line)


def format_table(kept: list[Kept]) -> list[str]:
    """The header and one line per entry, columns aligned (the header alone for none)."""
    rows = [("ID", "KIND", "DATE (UTC)", "STATUS", "THREATS", "SIZE", "ORIGINAL")]
    for k in kept:
        rows.append((k.id, k.kind, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(k.created)),
                     cell(k.status, None), cell(", ".join(k.threats), 40), str(k.size),
                     k.original))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:5], widths)]
        cells += [row[5].rjust(widths[5]), row[6]]
        lines.append("  ".join(cells).rstrip())
    return lines


@backup_group.command("show")
@click.argument("entry_id", metavar="ID")
@kind_option
@click.option("--json", "as_json", is_flag=True,
              help="Print the whole record as one JSON object on one line, with its \"kind\".")
@click.pass_context
def backup_show(ctx, entry_id, kind, as_json):
    """Print an entry's record.

    For a file: where it was, owner, mode, times, hashes, verdict; for a message: its
    envelope, subject, groups and verdict."""
    kept = _originals(ctx)
    kind = kept.kind_of(entry_id, kind)
    record = _call(lambda: kept.files.info(entry_id) if kind == FILE
                   else kept.mail.show(entry_id))
    if as_json:
        jsonout.emit_object({"kind": kind, **record})
        return
    rows = describe(record) if kind == FILE else _describe_mail(record)
    rows.insert(1, ("Kind", kind))
    for label, value in rows:
        click.echo(f"{label + ':':<18}{cell(value, None)}")


def _describe_mail(record: dict) -> list[tuple[str, str]]:
    envelope = record.get("envelope") if isinstance(record.get("envelope"), dict) else record
    created = record.get("created")
    rows = [
        ("ID", record.get("id", "")),
        ("Kept", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(created))
         if isinstance(created, (int, float)) else ""),
        ("Status", record.get("status", "")),
        ("Threats", ", ".join(str(t) for t in record.get("threats") or [])),
        ("Sender", f"<{envelope.get('sender') or ''}>"),
        ("Recipients", ", ".join(str(r) for r in envelope.get("recipients") or [])),
        ("Subject", record.get("subject", "")),
        ("Message-ID", record.get("message_id", "")),
    ]
    for group in record.get("groups") or []:
        if isinstance(group, dict):
            recipients = ", ".join(str(r) for r in group.get("recipients") or [])
            what = f"{group.get('status', '')}, action {group.get('action', '')}"
            rows.append(("Group", f"{group.get('group', '')}: {recipients}: {what}"))
    rows += [
        ("Size", record.get("size", "")),
        ("SHA-256", record.get("sha256", "")),
        ("Database version", record.get("database_version", "")),
    ]
    return [(label, str(value)) for label, value in rows]


@backup_group.command("extract")
@click.argument("entry_id", metavar="ID")
@kind_option
@click.option("-o", "--output", metavar="FILE", help="Write to FILE instead of standard output.")
@click.pass_context
def backup_extract(ctx, entry_id, kind, output):
    """Write the original, byte for byte.

    A file's content, or the message exactly as it was received."""
    kept = _originals(ctx)
    kind = kept.kind_of(entry_id, kind)
    if kind == FILE:
        source = _call(lambda: kept.files.content_path(entry_id))
        try:
            with open(source, "rb") as src:
                _write_out(output, lambda out: shutil.copyfileobj(src, out))
        except OSError as err:
            raise Fatal(f"cannot read backup entry '{entry_id}': {err.strerror}") from None
    else:
        data = _call(lambda: kept.mail.extract(entry_id))
        _write_out(output, lambda out: out.write(data))


def _write_out(output: str | None, write: Callable) -> None:
    """Standard output, or ``output`` created readable by its owner only: it may hold a threat
    or someone's mail."""
    if not output:
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise Fatal(f"cannot write {output}: {err.strerror}") from None
    with os.fdopen(fd, "wb") as out:
        write(out)


@backup_group.command("restore")
@click.argument("entry_id", metavar="ID")
@kind_option
@click.option("--to", "to", metavar="PATH", help="Restore to PATH instead of the original path.")
@click.option("--force", is_flag=True, help="Replace a file that exists at the target.")
@click.option("--keep", is_flag=True, help="Keep the entry after restoring.")
@click.pass_context
def backup_restore(ctx, entry_id, kind, to, force, keep):
    """Put a file original back.

    With its owner, mode and times, at its original path or --to PATH (replacing a cured file
    needs --force); the entry is removed afterwards. A message has no path: extract it."""
    kept = _originals(ctx)
    if kept.kind_of(entry_id, kind) == MAIL:
        raise Fatal(f"backup entry '{entry_id}' is a mail message, which has no path to go back "
                    f"to: write it out with 'lmsav backup extract {entry_id} -o FILE'")
    restore_entry(kept.files, entry_id, to, force, keep)


@backup_group.command("release")
@click.argument("entry_id", metavar="ID")
@click.option("--to", "to", metavar="ADDR", multiple=True,
              help="Deliver to this recipient only (repeatable); it must be one of the "
                   "message's recipients. Default: all of them.")
@click.pass_context
def backup_release(ctx, entry_id, to):
    """Deliver a kept message as it was received.

    The original, byte for byte, with its original sender, to its original recipients (or
    those given with --to), through the [spool] reinject target; the entry is kept."""
    from .spool.reinject import from_setting

    settings = load_settings(ctx)
    kept = KeptOriginals(settings.paths.state_dir)
    if (not _call(lambda: kept.mail.exists(entry_id))
            and _call(lambda: kept.files.exists(entry_id))):
        raise Fatal(f"backup entry '{entry_id}' is a file, which has no recipients: put it "
                    f"back with 'lmsav backup restore {entry_id}'")
    kept.kind_of(entry_id, MAIL)
    reinjector = from_setting(settings.spool.reinject, settings.host_name())
    try:
        done = release(kept.mail, entry_id, reinjector, to)
    except ReleaseError as err:
        raise Fatal(str(err)) from None
    finally:
        reinjector.close()
    click.echo(f"released {entry_id}: from <{done.sender}> to "
               f"{', '.join(f'<{r}>' for r in done.recipients)} "
               f"via {settings.spool.reinject}")


@backup_group.command("delete")
@click.argument("entry_ids", metavar="ID...", nargs=-1, required=True)
@kind_option
@click.pass_context
def backup_delete(ctx, entry_ids, kind):
    """Delete entries for good."""
    kept = _originals(ctx)
    for entry_id in entry_ids:
        store = kept.files if kept.kind_of(entry_id, kind) == FILE else kept.mail
        _call(lambda entry_id=entry_id, store=store: store.delete(entry_id))
        click.echo(f"deleted {entry_id}")
