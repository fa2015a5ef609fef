"""`lmsav ctl`: the administrator's tool (lmsav-ctl(8)) — the status of every component for
people and monitoring, reload, update, statistics, the configuration check and the spool's
entries. The daemon's own commands (ping, reload, stop) are lmsav.daemon.ctl's."""

from __future__ import annotations

import datetime
import time

import click

from . import jsonout
from .clitools import Fatal, load_settings
from .configcommands import config_check
from .daemon.ctl import (
    age,
    call,
    ctl_ping,
    ctl_reload,
    ctl_stop,
    daemon_client,
    daemon_lines,
    socket_option,
    wait_for_reload,
)
from .spool.nqueue import STATES, Spool, SpoolError
from .spool.queue_ops import HELD_REASON, QueueOps, entry_record, list_entries
from .stats.commands import stats_group

EXIT_HEALTHY, EXIT_PROBLEMS = 0, 1  # and 2 (Fatal, click's usage errors): the check failed
LABEL_WIDTH = 13


@click.group("ctl")
@socket_option
@click.pass_context
def ctl(ctx, socket_path):
    """The administrator's tool: status of every component (for monitoring too), reload,
    update, stats, config check and the spool's entries (see lmsav-ctl(8))."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and socket_path:
        obj["ctl_socket"] = socket_path


ctl.add_command(ctl_ping, "ping")
ctl.add_command(ctl_reload, "reload")
ctl.add_command(ctl_stop, "stop")
ctl.add_command(stats_group, "stats")


@ctl.group("config")
def ctl_config():
    """The configuration: `check` validates lmsav.toml and groups.d."""


ctl_config.add_command(config_check, "check")


# -- status --------------------------------------------------------------------------------------

@ctl.command("status")
@socket_option
@click.option("--json", "as_json", is_flag=True,
              help="The status as one JSON object on one line, with its problems.")
@click.pass_context
def ctl_status(ctx, socket_path, as_json):
    """Every component: the daemon, the spool watcher, the qmail wrapper, the database and its
    updates, the spool, quarantine and backup, free disk. Exit 0 when healthy, 1 when a
    problem is found (each on a `problem:` line), 2 when the status cannot be taken."""
    from .daemon.client import ClientError
    from .status import collect, problems

    socket_path = socket_path or _group_socket(ctx)
    settings = load_settings(ctx, {"daemon.socket": socket_path})
    snapshot = collect(settings)
    if snapshot["daemon"]["running"]:
        try:
            snapshot["daemon"]["status"] = daemon_client(ctx, socket_path).status()
        except ClientError as err:  # it stopped between PING and now
            snapshot["daemon"]["detail"] += f"; status: {err}"
    found = problems(snapshot, settings)
    snapshot["problems"] = found
    snapshot["ok"] = not found
    if as_json:
        jsonout.emit_object(snapshot)
    else:
        for label, text in status_lines(snapshot):
            click.echo(f"{label + ':':<{LABEL_WIDTH}}{text}" if label else text)
    ctx.exit(EXIT_PROBLEMS if found else EXIT_HEALTHY)


def _group_socket(ctx: click.Context) -> str | None:
    obj = ctx.find_root().obj
    return obj.get("ctl_socket") if isinstance(obj, dict) else None


def status_lines(snap: dict) -> list[tuple[str, str]]:
    """The text report: (label, text); an empty label is a line of its own."""
    found = snap["problems"]
    lines = [("status", "OK" if not found else f"{len(found)} problem"
                                               f"{'' if len(found) == 1 else 's'}"),
             ("lmsav", f"{snap['lmsav_version']}, at {_when(snap['time'])}")]
    lines += _daemon(snap["daemon"])
    watcher = snap["watcher"]
    state = (f"running, pid {watcher['pid']}" if watcher["running"] and watcher["pid"]
             else "running" if watcher["running"] else "not running")
    lines.append(("watcher", f"{state}{_configured(watcher)}: {watcher['detail']}"))
    qmail = snap["qmail"]
    lines.append(("qmail", (f"{'configured' if qmail['configured'] else 'not configured'}: "
                           f"{qmail['detail']}")))
    lines += _database(snap["database"], snap["update"])
    spool = snap["spool"]
    lines.append(("spool", (f"{spool['new']} new, {spool['work']} work, {spool['hold']} hold "
                           f"(depth {spool['depth']}) in {spool['directory']}")))
    lines.append(("quarantine", _usage(snap["quarantine"], "entries")))
    backup = snap["backup"]
    lines.append(("backup", (f"{_usage(backup['messages'], 'messages')}; "
                            f"{_usage(backup['files'], 'files')}")))
    disk = snap["disk"]
    if disk.get("free_bytes") is None:
        lines.append(("disk", f"{disk['path']}: {disk.get('error') or 'unknown'}"))
    else:
        lines.append(("disk", (f"{_bytes(disk['free_bytes'])} free of "
                              f"{_bytes(disk['total_bytes'])} ({disk['free_percent']:.1f}%) "
                              f"on the file system of {disk['path']}")))
    lines += [("", f"problem: {line}") for line in found]
    return lines


def _daemon(daemon: dict) -> list[tuple[str, str]]:
    if not daemon["running"]:
        return [("daemon", f"not running{_configured(daemon)}: {daemon['detail']}")]
    status = daemon.get("status")
    pid = daemon["pid"] or (status or {}).get("pid")  # the pid file is written with --detach
    where = f", pid {pid}" if pid else ""
    lines = [("daemon", f"running{where}, {daemon['detail']} on {daemon['socket']}")]
    if daemon.get("version"):
        lines.append(("  version", daemon["version"]))
    if status:
        own = dict(daemon_lines(status))
        lines += [(f"  {label}", own[label]) for label in ("uptime", "workers", "database")]
        lines.append(("  requests", (f"{status['requests']} ({status['found']} found, "
                                    f"{status['errors']} errors, {status['refused']} refused), "
                                    f"{status['queue']} queued, {status['connections']} "
                                    "connections")))
        lines += [(f"  {label}", own[label]) for label in ("reloads", "listening")]
    return lines


def _configured(part: dict) -> str:
    return " (configured)" if part["configured"] else ""


def _database(db: dict, update: dict) -> list[tuple[str, str]]:
    built = (f", built {age(db['age_seconds'])} ago" if db["age_seconds"] is not None
             else "")
    lines = [("database", f"{db['version'] or 'unknown'} in {db['directory']}{built}")]
    if db["managed"]:
        signatures = f", {db['signatures']} signatures" if db["signatures"] else ""
        lines.append(("  managed", f"active {db['active'] or 'none'}{signatures}"))
    checked = _when(update["last_check"]) if update["last_check"] else "never"
    succeeded = _when(update["last_success"]) if update["last_success"] else "never"
    text = f"last check {checked} ({update['last_result'] or 'none'}), last success {succeeded}"
    if update["last_error"]:
        text += f": {update['last_error']}"
    lines.append(("updates", text))
    return lines


def _usage(store: dict, noun: str) -> str:
    if store.get("entries") is None:
        return store.get("error") or f"{store['directory']}: unknown"
    return f"{store['entries']} {noun}, {_bytes(store['bytes'])} in {store['directory']}"


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


# -- update --------------------------------------------------------------------------------------

@ctl.command("update")
@click.option("--source", "sources", multiple=True, metavar="URL|DIR",
              help="Take updates from here for this run instead of [update] sources "
                   "(repeatable, tried in order).")
@socket_option
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SEC",
              help="How long to wait for the daemon's reload.")
@click.pass_context
def ctl_update(ctx, sources, socket_path, timeout):
    """Update the signature databases as `lmsav update` does, then reload the daemon if one
    runs. Exit 2 when no update could be installed (no source reachable, a bad download):
    the database in use stays."""
    from .daemon.client import ClientError
    from .update.commands import update

    client = daemon_client(ctx, socket_path or _group_socket(ctx))
    try:
        before = client.status()
    except ClientError:
        before = None
    try:
        ctx.invoke(update, sources=sources)
        code = 0
    except click.exceptions.Exit as done:
        code = done.exit_code
    if code != 0:
        raise Fatal("the databases were not updated (see above); the daemon and the spool "
                    "watcher keep the database they use")
    if before is None:
        click.echo("daemon: not running")
        return
    now = call(client.status)
    told = now.get("reloading") or now.get("last_reload") != before.get("last_reload")
    # Untold when the daemon uses another directory or nothing changed: reload it all the same.
    if not told and not call(client.reload):
        raise Fatal("the daemon did not accept RELOAD")
    click.echo(wait_for_reload(client, before, timeout))


# -- the spool's entries -------------------------------------------------------------------------

@ctl.group("queue")
def queue():
    """The spool's entries: list, show, hold, release, requeue, delete. Safe while the spool
    watcher runs: an entry a worker is processing is never touched."""


def _spool(ctx: click.Context) -> Spool:
    return Spool(load_settings(ctx).spool_dir())


@queue.command("list")
@click.option("--state", "states", type=click.Choice(STATES), multiple=True,
              help="Only entries in this state (repeatable; default: all).")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per entry, one per line (JSON Lines).")
@click.pass_context
def queue_list(ctx, states, as_json):
    """Entries waiting (new), being processed (work) and held (hold), oldest first."""
    try:
        rows = list_entries(_spool(ctx), tuple(states) or STATES)
    except SpoolError as err:
        raise Fatal(str(err)) from None
    if as_json:
        jsonout.emit_records(entry_record(state, entry) for state, entry in rows)
        return
    if not rows:
        click.echo("no entries" if states else "spool is empty")
        return
    for state, entry in rows:
        env = entry.envelope
        line = (f"{entry.id}  {state:<4}  {_when(env.arrived) if env.arrived else '-'}  "
                f"tries {entry.attempts}  <{env.sender}> -> {', '.join(env.recipients)}")
        if state == "new" and entry.not_before > time.time():
            line += f"  (next try {_when(entry.not_before)})"
        click.echo(line)
        if entry.reason:
            click.echo(f"    {entry.reason}")
    counts = {state: sum(1 for s, _e in rows if s == state) for state in STATES}
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items() if n))


@queue.command("show")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="The entry as one JSON object on one line.")
@click.pass_context
def queue_show(ctx, entry_id, as_json):
    """The envelope, main headers, attempts and last failure of one entry."""
    from .spool.commands import show_cmd

    ctx.invoke(show_cmd, entry_id=entry_id, as_json=as_json)


def _each(ctx: click.Context, ids, action) -> None:
    """Run ``action`` on each id: a line per id done, an error line per id that failed."""
    failed = 0
    for entry_id in ids:
        try:
            done = action(entry_id)
        except SpoolError as err:
            click.echo(f"lmsav: error: {err}", err=True)
            failed += 1
            continue
        click.echo(f"{entry_id}: {done}")
    if failed:
        ctx.exit(2)


_ids = click.argument("entry_ids", nargs=-1, required=True, metavar="ID...")


@queue.command("hold")
@_ids
@click.option("--reason", metavar="TEXT",
              help=f"Why, as `queue list` and `queue show` will show it (default: "
                   f"\"{HELD_REASON}\"; an entry already held keeps its own unless given).")
@click.pass_context
def queue_hold(ctx, entry_ids, reason):
    """Keep entries in hold/ until released: from new/ at once, from work/ only while no
    spool watcher runs."""
    ops = QueueOps(_spool(ctx))
    _each(ctx, entry_ids, lambda entry_id: ops.hold(entry_id, reason))


@queue.command("release")
@_ids
@click.pass_context
def queue_release(ctx, entry_ids):
    """Send held entries back to new/ for a fresh start (attempts, retry time and reason
    reset). Deliveries already made for an entry are not repeated."""
    _each(ctx, entry_ids, QueueOps(_spool(ctx)).release)


@queue.command("requeue")
@_ids
@click.pass_context
def queue_requeue(ctx, entry_ids):
    """Back to new/, due now, attempts reset: from hold/, from new/ (an entry waiting for its
    next try) and from work/ while no spool watcher runs."""
    _each(ctx, entry_ids, QueueOps(_spool(ctx)).requeue)


@queue.command("delete")
@_ids
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
@click.pass_context
def queue_delete(ctx, entry_ids, yes):
    """Remove entries for good: their mail is not delivered. Asks first unless --yes."""
    if not yes:
        count = len(entry_ids)
        try:
            sure = click.confirm(f"Delete {count} spool entr{'y' if count == 1 else 'ies'} "
                                 f"for good (their mail is not delivered)?", default=False)
        except click.Abort:
            sure = False
        if not sure:
            raise Fatal("nothing deleted (--yes deletes without asking)")
    _each(ctx, entry_ids, QueueOps(_spool(ctx)).delete)


__all__ = ["ctl", "status_lines"]
