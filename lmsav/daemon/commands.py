"""`lmsav daemon` (the clamd-protocol service) and `lmsav ctl` (talk to a running daemon)."""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path

import click

from .. import jsonout
from ..clitools import Fatal, load_settings, root_options

LOG_FORMAT = "%(asctime)s lmsav-daemon[%(process)d]: %(message)s"
EXIT_OK, EXIT_ERROR = 0, 2
SYSLOG_SOCKET = "/dev/log"
DAEMON_LOG_NAME = "daemon.log"


def daemon_log_file(settings) -> Path:
    """Where a detached daemon logs when there is no syslog: the system's log directory (which
    `lmsav setup` makes and logrotate rotates), or the log directory of a person's state."""
    from .. import paths

    if paths.layout() == paths.SYSTEM:
        return paths.SYSTEM_LOG_DIR / DAEMON_LOG_NAME
    return paths.log_dir(settings.paths.state_dir) / DAEMON_LOG_NAME


def _setup_logging(detached: bool, settings, user: str) -> None:
    """Syslog (mail facility) when detached, stderr in the foreground. Detached without a syslog
    socket, a file, named on stderr while there still is one: no line may go nowhere."""
    from .process import prepare_log_file

    logger = logging.getLogger("lmsav")
    if detached and os.path.exists(SYSLOG_SOCKET):
        handler: logging.Handler = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, logging.handlers.SysLogHandler.LOG_MAIL)
        handler.setFormatter(logging.Formatter("lmsav-daemon[%(process)d]: %(message)s"))
    elif detached:
        path = daemon_log_file(settings)
        try:
            prepare_log_file(path, user)
            # Reopened when logrotate has moved it.
            handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
        except OSError as err:
            raise Fatal(f"{SYSLOG_SOCKET} not found, and cannot write the log file {path}: "
                        f"{err.strerror or err}") from None
        click.echo(f"lmsav: {SYSLOG_SOCKET} not found; logging to {path}", err=True)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@click.command("daemon")
@click.option("--socket", "socket_path", metavar="PATH",
              help="Unix socket to listen on (default: [daemon] socket, <run_dir>/clamd.sock).")
@click.option("--tcp", multiple=True, metavar="HOST:PORT",
              help="TCP listener, repeatable; replaces [daemon] tcp.")
@click.option("-d", "--database", metavar="DIR", help="Signature database directory.")
@click.option("--workers", type=click.IntRange(min=1), metavar="N",
              help="Scanning processes (default: [daemon] workers, 0 there = one per CPU).")
@click.option("--detach", is_flag=True, help="Run in the background, writing a pid file.")
@click.option("--foreground", is_flag=True,
              help="Stay in the foreground (the default; overrides --detach).")
@click.option("--pid-file", metavar="FILE",
              help="Pid file (default with --detach: [daemon] pid_file, <run_dir>/lmsav.pid).")
@click.pass_context
def daemon(ctx, socket_path, tcp, database, workers, detach, foreground, pid_file):
    """Serve the clamd protocol on a unix socket (and TCP if asked), so clamdscan, Exim,
    clamav-milter, rspamd and amavis scan through lmsav (see lmsav-daemon(8)).

    The database is loaded once; pre-forked workers share it. SIGHUP or SIGUSR2 (or RELOAD,
    or `lmsav ctl reload`) reads the configuration again (a bad file keeps the running one),
    loads and self-tests the database and the recipient groups, and swaps them in; SIGTERM
    finishes the requests in flight and exits 0.
    """
    from ..config import LISTEN_RE, ConfigError
    from ..config import load_settings as read_settings
    from .options import DaemonError, options_from_settings
    from .process import detach as do_detach
    from .process import remove_pid_file, write_pid_file
    from .server import Server

    overrides = {k: v for k, v in {"daemon.tcp": list(tcp) if tcp else None}.items()
                 if v is not None}
    settings = load_settings(ctx, overrides)
    for addr in tcp:
        if not LISTEN_RE.fullmatch(addr):
            raise Fatal(f"--tcp {addr}: expected HOST:PORT like 127.0.0.1:3310 or [::1]:3310")
    root = root_options(ctx)

    def options_of(settings):
        return options_from_settings(settings, socket_path, tcp, database, workers, pid_file,
                                     root["config"])

    def reread_options():
        """A reload reads the file again, with the same command line on top."""
        try:
            fresh = read_settings(root["config"], root["profile"], overrides,
                                  required=root["config_explicit"])
        except ConfigError as err:
            raise DaemonError(str(err)) from None
        return options_of(fresh)

    try:
        options = options_of(settings)
    except DaemonError as err:
        raise Fatal(str(err)) from None
    background = detach and not foreground
    _setup_logging(background, settings, options.user)
    server = Server(options, reload_options=reread_options)
    try:
        server.bind()
        # Load (and import the engine) while still root: the database and the interpreter's
        # modules may not be readable by the service user; scanning never needs root.
        server.load()
        server.drop_privileges()
    except DaemonError as err:
        server.close_listeners()
        raise Fatal(str(err)) from None
    if background:
        do_detach()
    write_pid = background or pid_file is not None
    if write_pid:
        write_pid_file(options.pid_file)
    try:
        code = server.run()
    finally:
        if write_pid:
            remove_pid_file(options.pid_file)
    ctx.exit(code)


# -- lmsav ctl ----------------------------------------------------------------------------------

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
