"""`lmsav ctl`: talk to a running daemon over its socket (ping, status, reload, stop)."""

from __future__ import annotations

import time

import click

from .. import jsonout
from ..clitools import Fatal, load_settings


def _client(ctx: click.Context, socket_path: str | None):
    from .client import Client

    obj = ctx.find_root().obj
    path = socket_path or (obj.get("ctl_socket") if isinstance(obj, dict) else None)
    if not path:
        path = str(load_settings(ctx).daemon_socket())
    return Client(path, timeout=30)


_socket_option = click.option("--socket", "socket_path", metavar="PATH",
                              help="The daemon's unix socket (default: [daemon] socket).")


@click.group("ctl")
@_socket_option
@click.pass_context
def ctl(ctx, socket_path):
    """Control a running lmsav daemon over its socket: status, reload, stop, ping."""
    obj = ctx.find_root().obj
    if isinstance(obj, dict) and socket_path:
        obj["ctl_socket"] = socket_path


def _call(fn):
    from .client import ClientError

    try:
        return fn()
    except ClientError as err:
        raise Fatal(str(err)) from None


@ctl.command("ping")
@_socket_option
@click.pass_context
def ctl_ping(ctx, socket_path):
    """Check that the daemon answers (PING → PONG)."""
    client = _client(ctx, socket_path)
    if not _call(client.ping):
        raise Fatal("the daemon did not answer PONG")
    click.echo("PONG")


def _age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


@ctl.command("status")
@_socket_option
@click.option("--json", "as_json", is_flag=True, help="The status as one JSON object on one line.")
@click.pass_context
def ctl_status(ctx, socket_path, as_json):
    """Uptime, workers, database version and age, requests served, findings, queue."""
    client = _client(ctx, socket_path)
    st = _call(client.status)
    if as_json:
        jsonout.emit_object(st)
        return
    db = st["database"]
    click.echo(f"pid:         {st['pid']}")
    click.echo(f"uptime:      {_age(st['uptime'])}")
    click.echo(f"workers:     {st['workers']} ({st['workers_busy']} busy)")
    click.echo(f"database:    {db['version']} ({db['signatures']} signatures, built "
               f"{_age(db['age'])} ago) in {db['directory']}")
    click.echo(f"requests:    {st['requests']}")
    click.echo(f"found:       {st['found']}")
    click.echo(f"errors:      {st['errors']}")
    click.echo(f"refused:     {st['refused']}")
    click.echo(f"queue:       {st['queue']}")
    click.echo(f"connections: {st['connections']}")
    last = st.get("last_reload") or {}
    reload_text = "never" if not last else (
        f"{last['result']} {_age(time.time() - last['at'])} ago"
        + (f": {last.get('error')}" if last.get("error") else ""))
    click.echo(f"reloads:     {st['reloads']} (last: {reload_text})"
               + (" — reloading now" if st.get("reloading") else ""))
    click.echo(f"listening:   {', '.join(st['listeners'])}")


@ctl.command("reload")
@_socket_option
@click.option("--no-wait", is_flag=True, help="Do not wait for the outcome of the reload.")
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SEC",
              help="How long to wait for the outcome.")
@click.pass_context
def ctl_reload(ctx, socket_path, no_wait, timeout):
    """Reload the configuration, the database and the groups; exit 2 if the database was
    refused (the daemon keeps the old one)."""
    client = _client(ctx, socket_path)
    before = _call(client.status)
    if not _call(client.reload):
        raise Fatal("the daemon did not accept RELOAD")
    if no_wait:
        click.echo("RELOADING")
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        st = _call(client.status)
        last = st.get("last_reload") or {}
        if not st.get("reloading") and last and last != before.get("last_reload"):
            if last["result"] == "ok":
                click.echo(f"reloaded: database {last['version']}")
                if last.get("error"):  # the configuration or the groups were kept
                    click.echo(f"lmsav: warning: {last['error']}", err=True)
                return
            raise Fatal(f"reload refused, still using database "
                         f"{st['database']['version']}: {last.get('error')}")
    raise Fatal(f"no reload outcome after {timeout:g}s")


@ctl.command("stop")
@_socket_option
@click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SEC",
              help="How long to wait for the daemon to exit.")
@click.pass_context
def ctl_stop(ctx, socket_path, timeout):
    """Stop the daemon (SHUTDOWN): it finishes the requests in flight, then exits."""
    from .client import ClientError

    client = _client(ctx, socket_path)
    _call(client.shutdown)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
        except ClientError:
            click.echo("stopped")
            return
        time.sleep(0.1)
    raise Fatal(f"the daemon still answers after {timeout:g}s")
