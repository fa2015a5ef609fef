"""`lmsav spool …`: run the watcher and look after the spool (list, show, release, delete)."""

from __future__ import annotations

import datetime

import click

from .. import jsonout, logsetup
from ..clitools import Fatal, load_settings, root_options
from .listing import shown_headers
from .nqueue import Spool, SpoolEntry, SpoolError


def _spool(ctx: click.Context) -> Spool:
    return Spool(load_settings(ctx).spool_dir())


@click.group("spool")
def spool():
    """The nqueue/ spool: run the watcher that scans and reinjects mail, and look after the
    entries it holds (see lmsav-spool(8))."""


@spool.command("watch")
@click.option("--workers", "-j", type=click.IntRange(min=1), metavar="N",
              help="Worker processes (default: [spool] workers, 0 there = one per CPU).")
@click.option("--once", is_flag=True,
              help="Process what is pending now, then exit (for cron and tests).")
@click.option("-d", "--database", metavar="DIR", help="Signature database directory.")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Append the log lines to FILE instead of [log] destination ([spool] log_file).")
@click.option("--listen", "-l", multiple=True, metavar="ADDR",
              help="Also take mail over SMTP/LMTP here, like smtp:127.0.0.1:10025 (repeatable; "
                   "default: [spool] listen). See `lmsav spool listen`.")
@click.pass_context
def watch_cmd(ctx, workers, once, database, log_file, listen):
    """Watch new/ with inotify, apply mail policy to each entry and reinject the results.

    With [spool] listen (or --listen) set, it also runs the SMTP/LMTP listener the MTA's
    content filter transport delivers to (`lmsav spool listen`, restarted if it dies).

    SIGHUP reloads the configuration, groups and database; SIGTERM and SIGINT finish the
    messages in flight and exit, leaving the rest in new/; SIGUSR1 reopens the log file
    (logrotate). One log line per message, where [log] says, or in [spool] log_file.
    """
    from .watcher import Watcher, WatcherError

    settings = load_settings(ctx, {"spool.workers": workers, "spool.log_file": log_file,
                                   "spool.listen": list(listen) or None})
    # [spool] log_file (what `lmsav setup` sets, and --log-file) is this command's own [log]
    # file; a file it cannot write is said once on stderr, where the lines then go.
    logsetup.configure(settings, "spool", verbosity=logsetup.verbosity_of(ctx),
                       file=settings.spool.log_file)
    obj = root_options(ctx)
    try:
        code = Watcher(settings, obj["config"], database, workers=workers,
                       profile=obj["profile"], listen=listen).run(once=once)
    except WatcherError as err:
        raise Fatal(str(err)) from None
    ctx.exit(code)


@spool.command("listen")
@click.option("--listen", "-l", multiple=True, metavar="ADDR",
              help="Where to listen: smtp:HOST:PORT, lmtp:HOST:PORT or lmtp:unix:/PATH "
                   "(repeatable; default: [spool] listen, else smtp:127.0.0.1:10025).")
@click.option("--log-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Append the log lines to FILE instead of [log] destination ([spool] log_file).")
@click.pass_context
def listen_cmd(ctx, listen, log_file):
    """Take mail over SMTP or LMTP into the spool: the target of an MTA's content filter
    transport (Postfix `content_filter = lmsav:[127.0.0.1]:10025`, an Exim smtp transport).

    Each message is answered 250 only once it is on disk in new/, for `lmsav spool watch` to
    scan and reinject; any failure is a 4xx, so the MTA keeps the message. Messages over
    [spool] max_message_size are deferred (or rejected, [spool] oversize). Runs in the
    foreground until SIGTERM or SIGINT. `lmsav spool watch` runs it itself when [spool] listen
    is set; run it alone to keep the door open while the watcher restarts.
    """
    from . import listener

    settings = load_settings(ctx, {"spool.listen": list(listen) or None,
                                   "spool.log_file": log_file})
    logsetup.configure(settings, "spool", verbosity=logsetup.verbosity_of(ctx),
                       file=settings.spool.log_file)
    try:
        addresses = [listener.parse_listen(text)
                     for text in settings.spool.listen or (listener.DEFAULT_LISTEN,)]
        policy = listener.Policy(settings.spool.max_message_size, settings.spool.oversize)
        ctx.exit(listener.run(addresses, settings.spool_dir(), policy))
    except listener.ListenError as err:
        raise Fatal(str(err)) from None


def _entry_json(state: str, entry: SpoolEntry) -> dict:
    env = entry.envelope
    return {
        "id": entry.id,
        "state": state,
        "sender": env.sender,
        "recipients": list(env.recipients),
        "queue_id": entry.queue_id,
        "arrived": env.arrived,
        "attempts": entry.attempts,
        "not_before": entry.not_before,
        "reason": entry.reason,
    }


def _when(epoch: float) -> str:
    if not epoch:
        return "-"
    return datetime.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S")


@spool.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per entry, one per line (JSON Lines).")
@click.pass_context
def list_cmd(ctx, as_json):
    """Entries waiting (new), being processed (work) and held for the administrator (hold)."""
    try:
        rows = _spool(ctx).list()
    except SpoolError as err:
        raise Fatal(str(err)) from None
    if as_json:
        jsonout.emit_records(_entry_json(s, e) for s, e in rows)
        return
    if not rows:
        click.echo("spool is empty")
        return
    for state, e in rows:
        env = e.envelope
        line = (f"{e.id}  {state:<4}  {_when(env.arrived)}  tries {e.attempts}  "
                f"<{env.sender}> -> {', '.join(env.recipients)}")
        if state == "new" and e.not_before:
            line += f"  (next try {_when(e.not_before)})"
        click.echo(line)
        if e.reason:
            click.echo(f"    {e.reason}")
    counts = {}
    for state, _e in rows:
        counts[state] = counts.get(state, 0) + 1
    click.echo(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))


@spool.command("show")
@click.argument("entry_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True,
              help="The entry as one JSON object on one line.")
@click.pass_context
def show_cmd(ctx, entry_id, as_json):
    """The envelope, main headers, attempts and last failure of one entry."""
    sp = _spool(ctx)
    try:
        entry = sp.get(entry_id)
        raw = sp.message(entry)
    except SpoolError as err:
        raise Fatal(str(err)) from None
    state = entry.path.parent.name
    headers = shown_headers(raw[:1 << 20])
    if as_json:
        data = _entry_json(state, entry)
        data.update(size=len(raw), headers=dict(headers), path=str(entry.path))
        jsonout.emit_object(data)
        return
    env = entry.envelope
    click.echo(f"entry:      {entry.id} ({state})")
    click.echo(f"file:       {entry.path}")
    click.echo(f"queue id:   {entry.queue_id or '-'}")
    click.echo(f"arrived:    {_when(env.arrived)}")
    click.echo(f"sender:     <{env.sender}>")
    for i, r in enumerate(env.recipients):
        click.echo(f"{'recipients:' if i == 0 else '':<12}<{r}>")
    click.echo(f"size:       {len(raw)} bytes")
    click.echo(f"attempts:   {entry.attempts}")
    if entry.not_before:
        click.echo(f"next try:   {_when(entry.not_before)}")
    if entry.reason:
        click.echo(f"reason:     {entry.reason}")
    for name, value in headers:
        click.echo(f"{name + ':':<12}{value}")


def _each(ctx, ids, action, verb: str) -> None:
    failed = 0
    for entry_id in ids:
        try:
            action(entry_id)
        except SpoolError as err:
            click.echo(f"lmsav: error: {err}", err=True)
            failed += 1
            continue
        click.echo(f"{verb} {entry_id}")
    if failed:
        ctx.exit(2)


@spool.command("release")
@click.argument("entry_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def release_cmd(ctx, entry_ids):
    """Send held entries back to new/ for a fresh start (attempts reset). Deliveries already
    made for an entry are remembered and not repeated."""
    _each(ctx, entry_ids, _spool(ctx).release, "released")


@spool.command("check")
@click.option("--user", "pipe_user", metavar="NAME",
              help="The account the MTA runs `lmsav enqueue` as (Postfix's pipe user=, Exim's "
                   "transport user), when it is not the service user.")
@click.option("--json", "as_json", is_flag=True,
              help="The report as one JSON object on one line.")
@click.pass_context
def check_cmd(ctx, pipe_user, as_json):
    """Check the owners and modes of the spool and of the other directories the mail path
    shares, and print the commands that fix what is wrong (exit 1 then)."""
    from . import permissions

    settings = load_settings(ctx)
    who = permissions.owner(settings)
    findings = permissions.check(settings, who, pipe_user)
    ok = not any(finding.problem for finding in findings)
    if as_json:
        jsonout.emit_object({
            "owner": who.spec, "mode": f"{permissions.DIR_MODE:04o}", "ok": ok,
            "findings": [{"path": str(f.path), "problem": f.problem or None, "fixes": f.fixes}
                         for f in findings]})
        ctx.exit(0 if ok else 1)
    click.echo(f"wanted: owner {who.spec}, mode {permissions.DIR_MODE:04o} (see lmsav.toml(5))")
    for finding in findings:
        click.echo(f"{finding.path}: {finding.problem or 'ok'}")
    fixes = [command for finding in findings if finding.problem for command in finding.fixes]
    if fixes:
        click.echo("To fix, run as root:")
        for command in fixes:
            click.echo(f"  {command}")
    if not ok:
        ctx.exit(1)


@spool.command("delete")
@click.argument("entry_ids", nargs=-1, required=True, metavar="ID...")
@click.pass_context
def delete_cmd(ctx, entry_ids):
    """Remove entries from hold/ or new/ for good: their mail is not delivered."""
    from .watcher import DeliveredStore

    sp = _spool(ctx)
    delivered = DeliveredStore(sp.root)

    def delete(entry_id: str) -> None:
        sp.delete(entry_id)
        delivered.discard(entry_id)

    _each(ctx, entry_ids, delete, "deleted")

