"""`lmsav daemon` (the clamd-protocol service) and `lmsav ctl` (talk to a running daemon)."""

from __future__ import annotations

import click

from ..clitools import Fatal, load_settings, root_options

EXIT_OK, EXIT_ERROR = 0, 2


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
    finishes the requests in flight and exits 0. SIGUSR1 reopens the log file (logrotate).
    """
    from .. import logsetup
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
    try:
        # Detached, stderr is gone: there [log] destination "stderr" means syslog, and a host
        # without /dev/log gets the log file, named on stderr while there still is one.
        logsetup.configure(settings, "daemon", verbosity=logsetup.verbosity_of(ctx),
                           detached=background, user=options.user)
    except logsetup.LogSetupError as err:
        raise Fatal(str(err)) from None
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
