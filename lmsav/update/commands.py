"""`lmsav update`: bring the signature databases up to date, roll back, or show the status."""

from __future__ import annotations

import datetime
import os
import sys
import time
from pathlib import Path

import click

from .. import jsonout, paths
from ..clitools import Fatal, load_settings

EXIT_CURRENT, EXIT_NOT_CURRENT = 0, 1


@click.command("update")
@click.option("--source", "sources", multiple=True, metavar="URL|DIR",
              help="Take updates from here for this run instead of [update] sources: a mirror "
                   "URL in ClamAV's layout, a file:// URL or a directory (repeatable, tried in "
                   "order).")
@click.option("--database", metavar="DIR",
              help="The managed directory to update (versions and the current link) instead of "
                   "[update] dir (default <state_dir>/bases).")
@click.option("--json", "as_json", is_flag=True,
              help="The result (or the status) as one JSON object on one line.")
@click.option("--allow-downgrade", is_flag=True,
              help="Install a source's database even when it is older than the active one.")
@click.option("--rollback", "rollback_to", is_flag=False, flag_value="", default=None,
              metavar="[VERSION]",
              help="Make a kept version active again: VERSION, or the one installed before the "
                   "active one.")
@click.option("--status", "show_status", is_flag=True,
              help="Show the active and kept versions, the last check and the database's age.")
@click.pass_context
def update(ctx, sources, database, as_json, allow_downgrade, rollback_to, show_status):
    """Keep the signature databases current: download, verify, compile, switch.

    New versions are checked (size, MD5, ClamAV's signature), applied by .cdiff where the
    source offers them, compiled in a child process and self-tested before they become
    active; whatever fails leaves the active database as it was. Exit 0 when the database
    is current afterwards, 1 when it is not, 2 for a usage or configuration error.
    """
    if show_status and rollback_to is not None:
        raise Fatal("--status and --rollback cannot be combined")
    if (show_status or rollback_to is not None) and (sources or allow_downgrade):
        raise Fatal("--source and --allow-downgrade apply to an update, not to --status or "
                    "--rollback")
    overrides = {"update.sources": list(sources) or None,
                 "update.dir": os.path.abspath(database) if database else None}
    settings = load_settings(ctx, overrides)
    root = Path(settings.update.dir or paths.bases_dir(settings.paths.state_dir))
    if show_status:
        ctx.exit(_show_status(settings, root, as_json))
    from .updater import NoSuchVersion, Options
    from .updater import rollback as rollback_run
    from .updater import update as update_run

    from ..metrics.recording import EventRecorder

    notify = _notifier(settings, root)
    events = EventRecorder(settings)  # one "update" event per run in the statistics store
    if rollback_to is not None:
        try:
            outcome = rollback_run(root, rollback_to or None, notify=notify,
                                   record=events.record)
        except NoSuchVersion as err:
            raise Fatal(str(err)) from None
        finally:
            events.close()
    else:
        section = settings.update
        options = Options(
            sources=section.sources, databases=section.databases,
            keep_versions=section.keep_versions, check_interval=section.check_interval,
            timeout=section.timeout, retries=section.retries, retry_delay=section.retry_delay,
            proxy=section.proxy, dns_txt=section.dns_txt, feeds=section.feeds,
            allow_downgrade=allow_downgrade, progress=not as_json and sys.stderr.isatty())
        try:
            outcome = update_run(root, options, notify=notify, record=events.record)
        finally:
            events.close()
        if outcome.ok and outcome.active:
            _warn_if_unused(outcome, settings, root)
    _report(outcome, as_json)
    ctx.exit(EXIT_CURRENT if outcome.ok else EXIT_NOT_CURRENT)


def _notifier(settings, root: Path):
    def notify() -> dict[str, str]:
        from .notify import tell_running

        pid_file = settings.daemon.pid_file or Path(settings.paths.run_dir) / "lmsav.pid"
        return tell_running(root, Path(settings.database_dir()), settings.daemon_socket(),
                            pid_file, settings.spool_dir())

    return notify


def _warn_if_unused(outcome, settings, root: Path) -> None:
    from .notify import uses

    configured = Path(settings.database_dir())
    if not uses(root, configured):
        outcome.warnings.append(f"[paths] database is {configured}: set it to {root}/current "
                                f"for lmsav to scan with the updated database")


def _report(outcome, as_json: bool) -> None:
    # Warnings and errors go to stderr with --json too: the object on stdout has them as well.
    for warning in outcome.warnings:
        click.echo(f"lmsav: warning: {warning}", err=True)
    for error in outcome.errors:
        click.echo(f"lmsav: error: {error}", err=True)
    if as_json:
        jsonout.emit_object(outcome.to_json())
        return
    databases = ", ".join(c.describe() for c in outcome.changes)
    detail = f" ({databases})" if databases else ""
    source = f" from {outcome.source}" if outcome.source else ""
    if outcome.result == "updated":
        line = f"updated: {outcome.active}{detail}{source}"
        if outcome.removed:
            line += f"; removed {', '.join(outcome.removed)}"
        click.echo(line)
    elif outcome.result == "rolled back":
        click.echo(f"rolled back: {outcome.active} is active (was {outcome.previous or 'none'})")
    elif outcome.result == "current":
        click.echo(f"current: {outcome.active}{detail}{source}")
    else:
        # The errors above say why, one line each; this line says where that leaves us.
        click.echo(f"not updated: still using {outcome.active}" if outcome.active
                   else "not updated: no database is active")
    for extra in outcome.extras:
        detail = f" {extra['detail']}" if extra["detail"] else ""
        click.echo(f"feed: {extra['url']}{detail} ({extra['verified']}): "
                   f"{', '.join(extra['files'])}")
    if outcome.notified:
        click.echo("told: " + "; ".join(f"{who}: {what}"
                                        for who, what in outcome.notified.items()))


def _show_status(settings, root: Path, as_json: bool) -> int:
    from ..clitools import root_options
    from .status import schedules_for, status

    obj = root_options(click.get_current_context())
    network = any(s.startswith(("http://", "https://")) for s in settings.update.sources)
    report = status(root, Path(settings.database_dir()), max_age=settings.update.max_age,
                    check_interval=settings.update.check_interval, network=network,
                    now=time.time(),
                    schedules=schedules_for(Path(obj["config"]).absolute(),
                                            obj["config_explicit"], root))
    if as_json:
        jsonout.emit_object(report)
        for warning in report["warnings"]:
            click.echo(f"lmsav: warning: {warning}", err=True)
    else:
        _print_status(report)
    return EXIT_CURRENT if report["ok"] else EXIT_NOT_CURRENT


def _print_status(report: dict) -> None:
    now = time.time()
    click.echo(f"directory:    {report['directory']}")
    if report["active"]:
        click.echo(f"active:       {report['active']} (installed {_when(report['installed_at'], now)}"
                   f" from {report['source']})")
        for db in report["databases"]:
            click.echo(f"  {db['name']}: version {db.get('version')}, built "
                       f"{db.get('build_time')}, {db.get('signatures')} signatures, "
                       f"{db.get('file')}")
        click.echo(f"signatures:   {report['signatures']} (compiled in "
                   f"{report['build_seconds']} s)")
        if report["age_seconds"] is not None:
            click.echo(f"age:          {_span(report['age_seconds'])} (max_age "
                       f"{_span(report['max_age'])})")
    else:
        click.echo("active:       none")
    kept = ", ".join(v["label"] + (" (active)" if v["active"] else "")
                     for v in report["versions"])
    click.echo(f"kept:         {kept or 'none'}")
    click.echo(f"last check:   {_when(report['last_check'], now)} (network sources)")
    click.echo(f"last result:  {report['last_result'] or 'none'}"
               + (f": {report['last_error']}" if report["last_error"] else ""))
    click.echo(f"last success: {_when(report['last_success'], now)}")
    if report["next_check"] is not None:
        click.echo(f"next check:   not before {_when(report['next_check'], now)}")
    if report["next_run"] is not None:
        moment = datetime.datetime.fromisoformat(report["next_run"]).timestamp()
        click.echo(f"next scheduled run: {_when(moment, now)} (schedule {report['schedule']})")
    else:
        click.echo("no scheduled update (lmsav cron add update NAME --schedule EXPR)")
    for source, until in report["cool_downs"].items():
        click.echo(f"cool-down:    {source} until {_when(until, now)}")
    for warning in report["warnings"]:
        click.echo(f"lmsav: warning: {warning}", err=True)


def _when(stamp: float | None, now: float) -> str:
    if stamp is None:
        return "never"
    text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))
    delta = now - stamp
    return f"{text} ({_span(abs(delta))} {'ago' if delta >= 0 else 'from now'})"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
