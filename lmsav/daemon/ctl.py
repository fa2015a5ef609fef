"""The daemon's side of `lmsav ctl`: talk to a running daemon over its socket (ping, status,
reload, stop). The administrator's whole tool, which adds every other component, is lmsav.ctl."""

from __future__ import annotations

import time

import click

from ..clitools import Fatal, load_settings


def daemon_client(ctx: click.Context, socket_path: str | None):
    from .client import Client

    obj = ctx.find_root().obj
    path = socket_path or (obj.get("ctl_socket") if isinstance(obj, dict) else None)
    if not path:
        path = str(load_settings(ctx).daemon_socket())
    return Client(path, timeout=30)


socket_option = click.option("--socket", "socket_path", metavar="PATH",
                              help="The daemon's unix socket (default: [daemon] socket).")


def call(fn):
    from .client import ClientError

    try:
        return fn()
    except ClientError as err:
        raise Fatal(str(err)) from None


@click.command("ping")
@socket_option
@click.pass_context
def ctl_ping(ctx, socket_path):
    """Check that the daemon answers (PING → PONG)."""
    client = daemon_client(ctx, socket_path)
    if not call(client.ping):
        raise Fatal("the daemon did not answer PONG")
    click.echo("PONG")


def age(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def daemon_lines(st: dict) -> list[tuple[str, str]]:
    """The daemon's own status (LMSAVSTATUS) as (label, text) lines."""
    db = st["database"]
    last = st.get("last_reload") or {}
    reload_text = "never" if not last else (
        f"{last['result']} {age(time.time() - last['at'])} ago"
        + (f": {last.get('error')}" if last.get("error") else ""))
    return [
        ("pid", str(st["pid"])),
        ("uptime", age(st["uptime"])),
        ("workers", f"{st['workers']} ({st['workers_busy']} busy)"),
        ("database", (f"{db['version']} ({db['signatures']} signatures, built "
                     f"{age(db['age'])} ago) in {db['directory']}")),
        ("requests", str(st["requests"])),
        ("found", str(st["found"])),
        ("errors", str(st["errors"])),
        ("refused", str(st["refused"])),
        ("queue", str(st["queue"])),
        ("connections", str(st["connections"])),
        ("reloads", f"{st['reloads']} (last: {reload_text})"
                    + (" — reloading now" if st.get("reloading") else "")),
        ("listening", ", ".join(st["listeners"])),
    ]


@click.command("reload")
@socket_option
@click.option("--no-wait", is_flag=True, help="Do not wait for the outcome of the reload.")
@click.option("--timeout", type=float, default=120.0, show_default=True, metavar="SEC",
              help="How long to wait for the outcome.")
@click.pass_context
def ctl_reload(ctx, socket_path, no_wait, timeout):
    """Reload the configuration, the database and the groups; exit 2 if the database was
    refused (the daemon keeps the old one)."""
    client = daemon_client(ctx, socket_path)
    before = call(client.status)
    if not call(client.reload):
        raise Fatal("the daemon did not accept RELOAD")
    if no_wait:
        click.echo("RELOADING")
        return
    click.echo(wait_for_reload(client, before, timeout))


def wait_for_reload(client, before: dict, timeout: float) -> str:
    """Wait until the reload requested after ``before`` (a status) has an outcome: the line
    to print when the database was taken; Fatal when it was refused or took too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = call(client.status)
        last = st.get("last_reload") or {}
        if not st.get("reloading") and last and last != before.get("last_reload"):
            if last["result"] == "ok":
                if last.get("error"):  # the configuration or the groups were kept
                    click.echo(f"lmsav: warning: {last['error']}", err=True)
                return f"reloaded: database {last['version']}"
            raise Fatal(f"reload refused, still using database "
                        f"{st['database']['version']}: {last.get('error')}")
        time.sleep(0.2)
    raise Fatal(f"no reload outcome after {timeout:g}s")


@click.command("stop")
@socket_option
@click.option("--timeout", type=float, default=60.0, show_default=True, metavar="SEC",
              help="How long to wait for the daemon to exit.")
@click.pass_context
def ctl_stop(ctx, socket_path, timeout):
    """Stop the daemon (SHUTDOWN): it finishes the requests in flight, then exits."""
    from .client import ClientError

    client = daemon_client(ctx, socket_path)
    call(client.shutdown)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client.ping()
        except ClientError:
            click.echo("stopped")
            return
        time.sleep(0.1)
    raise Fatal(f"the daemon still answers after {timeout:g}s")
