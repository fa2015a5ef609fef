"""`lmsav db …`: build, inspect and self-test signature databases."""

from __future__ import annotations

from pathlib import Path

import click

from . import jsonout
from .clitools import (
    EXIT_CLEAN,
    EXIT_ERROR,
    Fatal,
    database_dir,
    load_database,
    load_settings,
)


@click.group("db")
def db_group():
    """Build, inspect and self-test signature databases."""


@db_group.command("build")
@click.argument("directory", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON object on one line.")
@click.option("--strict", is_flag=True,
              help="Fail, compiling nothing, if any YARA rule file or rule is left out.")
def db_build(directory, as_json, strict):
    """Validate every signature file in DIR and compile it into DIR's cache.

    A malformed line is an error naming the file, the line and what is wrong. A YARA rule file
    that does not compile is left out and listed with its error (with --strict it is fatal).
    Later processes load the compiled cache in milliseconds instead of recompiling.
    """
    if strict:
        _build_strict(Path(directory))
        db = load_database(Path(directory))  # just compiled: loaded from the cache
    else:
        db = load_database(Path(directory), rebuild=True)
    info = _db_info(db)
    if as_json:
        jsonout.emit_object(info)
    else:
        click.echo(f"built {db.directory}: {db.total} signatures in {db.build_seconds:.2f} s "
                   f"-> {db.cache_path}")
        for line in db.not_used:
            click.echo(f"warning: {line}; not used", err=True)
        for line in db.skipped_lines:
            click.echo(f"warning: {line}; skipped", err=True)


def _build_strict(directory: Path) -> None:
    from .scanner.signatures.database import DatabaseError, build
    from .scanner.signatures.errors import SignatureError

    try:
        build(directory, strict=True)
    except (DatabaseError, SignatureError) as err:
        raise Fatal(str(err))


@db_group.command("info")
@click.option("-d", "--database", metavar="DIR", help="Database directory (default: configured).")
@click.option("--json", "as_json", is_flag=True,
              help="The database as one JSON object on one line.")
@click.pass_context
def db_info(ctx, database, as_json):
    """Show a database's version, signature counts per format and build time."""
    settings = load_settings(ctx)
    db = load_database(database_dir(settings, database))
    info = _db_info(db)
    if as_json:
        jsonout.emit_object(info)
        return
    import datetime

    built = datetime.datetime.fromtimestamp(db.built_at).strftime("%Y-%m-%d %H:%M:%S")
    click.echo(f"Directory: {db.directory}")
    click.echo(f"Version: {db.version}")
    click.echo(f"Signatures: {db.total}")
    for c in info["containers"]:
        click.echo(f"  {c['file']}: version {c['version']}, built {c['build_time']} by "
                   f"{c['builder']}, {c['signatures']} signatures, functionality level "
                   f"{c['functionality_level']}, {c['signature_status']}")
    click.echo(f"{'Type':<8}{'loaded':>10}{'skipped':>10}")
    for fmt in sorted(set(db.counts) | set(db.skipped)):
        click.echo(f"  .{fmt:<6}{db.counts.get(fmt, 0):>10}{db.skipped.get(fmt, 0):>10}")
    click.echo(f"Built: {built} in {db.build_seconds:.2f} s")
    click.echo(f"Compiled cache: {db.cache_path}")
    for line in db.not_used:
        click.echo(f"Not used: {line}")
    if db.skipped_lines:
        click.echo(f"Skipped signatures: {len(db.skipped_lines)} (each with its reason: "
                   f"`lmsav db info --json`)")


def _db_info(db) -> dict:
    return {
        "directory": str(db.directory),
        "version": db.version,
        "signatures": db.total,
        "counts": {k: v for k, v in db.counts.items() if v},
        "skipped": {k: v for k, v in db.skipped.items() if v},
        "containers": db.containers,
        "built_at": db.built_at,
        "build_seconds": db.build_seconds,
        "cache": str(db.cache_path),
        "not_used": db.not_used,
        "skipped_signatures": db.skipped_lines,
        "warnings": db.warnings,
        "self_test_samples": len(db.samples),
    }


@db_group.command("test")
@click.option("-d", "--database", metavar="DIR", help="Database directory (default: configured).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per sample, one per line (JSON Lines).")
@click.pass_context
def db_test(ctx, database, as_json):
    """Self-test: scan the database's own samples (selftest.toml) and check every verdict."""
    from .scanner.engine import Engine

    settings = load_settings(ctx)
    db = load_database(database_dir(settings, database))
    if not db.samples:
        raise Fatal(f"{db.directory}: no self-test samples (selftest.toml)")
    engine = Engine(db, settings.limits())
    failures = 0
    for sample in db.samples:
        verdict = engine.scan_bytes(sample.data, f"selftest:{sample.name}")
        names = [t.name for _, t in verdict.threats]
        ok = sample.expect in names if sample.expect else not names
        failures += not ok
        if as_json:
            jsonout.emit_object({"sample": sample.name, "expected": sample.expect or None,
                                 "found": names, "ok": ok})
            continue
        want = sample.expect or "clean"
        got = ", ".join(names) or "clean"
        click.echo(f"{'ok  ' if ok else 'FAIL'} {sample.name}: expected {want}, got {got}")
    if not as_json:
        click.echo(f"{len(db.samples) - failures} passed, {failures} failed")
    ctx.exit(EXIT_ERROR if failures else EXIT_CLEAN)
