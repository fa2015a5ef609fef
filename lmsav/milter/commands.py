"""`lmsav milter`: the group policy before the queue for Postfix (smtpd_milters) and Sendmail
(INPUT_MAIL_FILTER), over the milter protocol version 6."""

from __future__ import annotations

import click

from ..clitools import Fatal, load_settings, root_options

SIZE = r"(\d+)\s*([KMG]?)"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value, param, ctx):
        import re

        if isinstance(value, int):
            return value
        match = re.fullmatch(SIZE, str(value).strip(), re.IGNORECASE)
        if not match:
            self.fail(f"{value!r}: expected bytes, or a number with K, M or G", param, ctx)
        return int(match[1]) * _UNITS[match[2].upper()]


def _given(option, configured):
    """The command line's value when the option was given, else the configuration's."""
    return configured if option is None else option


@click.command("milter")
@click.option("--listen", metavar="SOCKET",
              help="unix:/path, inet:PORT@HOST or inet:HOST:PORT "
                   "(default: [milter] listen, else unix:<run_dir>/milter.sock).")
@click.option("--socket-mode", metavar="OCTAL",
              help="Permissions of a unix socket (the MTA's account must be able to connect; "
                   "default: [milter] socket_mode, 0660).")
@click.option("-d", "--database", metavar="DIR", help="Signature database directory.")
@click.option("--notices", "notices_to", metavar="TARGET",
              help="Where notices go: smtp:HOST:PORT, sendmail:/path or dir:/path "
                   "(default: [milter] notices, else [spool] reinject).")
@click.option("--max-message-size", type=SizeType(),
              help="Larger messages are deferred (452 4.3.4; default: [milter] "
                   "max_message_size, 100M).")
@click.option("--spill-size", type=SizeType(),
              help="Bytes of a message kept in memory; the rest goes to a private file "
                   "(default: [milter] spill_size, 1M).")
@click.option("--timeout", type=click.FloatRange(min=0),
              help="Seconds of silence from the MTA before a connection is dropped (0: none; "
                   "default: [milter] timeout, 300).")
@click.option("--daemon/--no-daemon", "use_daemon", default=None,
              help="Decide through the running lmsav daemon's workers ([daemon] socket; "
                   "default: [milter] use_daemon, off).")
@click.option("--daemon-timeout", type=click.FloatRange(min=0),
              help="Seconds to wait for the daemon's decision (default: [milter] "
                   "daemon_timeout, 120).")
@click.option("--fallback/--no-fallback", default=None,
              help="With --daemon: decide in this process when the daemon does not answer, "
                   "else defer (default: [milter] fallback, on).")
@click.pass_context
def milter(ctx, listen, socket_mode, database, notices_to, max_message_size, spill_size,
           timeout, use_daemon, daemon_timeout, fallback):
    """Apply the recipient groups' policy before the queue, as a milter (lmsav-milter(8)).

    The database and groups are loaded once; each MTA connection gets a thread; with --daemon
    the running daemon's workers decide, in parallel. Infected mail
    is refused with the group's reject_reply, dropped mail discarded, warned or cured mail
    accepted with its new body and X-AV-* headers. Recipients of a second group are deferred
    at RCPT (451 4.7.1) and come back in a transaction of their own. Anything that goes wrong
    while deciding is a temporary failure (fail-closed). SIGTERM stops it.
    """
    import logging
    import signal
    import threading
    from pathlib import Path

    from .. import logsetup
    from ..mail.service import MailService, MailServiceError
    from ..spool.reinject import from_setting
    from ..spool.milter_socket import ListenError, parse_listen
    from .server import Backend, make_server
    from .session import Limits

    settings = load_settings(ctx)
    # Each option left out takes its [milter] value (lmsav.toml(5)); given, it wins.
    section = settings.milter
    mode_from = "--socket-mode" if socket_mode else "[milter] socket_mode"
    socket_mode = socket_mode or section.socket_mode
    try:
        mode = int(socket_mode, 8)
    except ValueError:
        raise Fatal(f"{mode_from} {socket_mode}: expected an octal mode like 660") from None
    listen_from = "--listen" if listen else "[milter] listen"
    listen = (listen or section.listen
              or f"unix:{Path(settings.paths.run_dir) / 'milter.sock'}")
    max_message_size = _given(max_message_size, section.max_message_size)
    spill_size = _given(spill_size, section.spill_size)
    timeout = _given(timeout, section.timeout)
    use_daemon = _given(use_daemon, section.use_daemon)
    daemon_timeout = _given(daemon_timeout, section.daemon_timeout)
    fallback = _given(fallback, section.fallback)
    try:
        parse_listen(listen)
    except ListenError as err:
        raise Fatal(f"{listen_from} {err}") from None
    target = notices_to or section.notices or settings.spool.reinject
    try:
        from_setting(target, settings.host_name())
    except ValueError as err:
        raise Fatal(str(err)) from None
    try:
        logsetup.configure(settings, "milter", verbosity=logsetup.verbosity_of(ctx))
    except logsetup.LogSetupError as err:
        raise Fatal(str(err)) from None
    config = root_options(ctx)["config"]
    try:
        service = MailService.from_settings(settings, Path(config) if config else None,
                                            database_dir=Path(database) if database else None)
    except MailServiceError as err:
        raise Fatal(str(err)) from None
    backend = Backend(service, lambda: from_setting(target, settings.host_name()))
    if use_daemon:
        from .daemon_backend import DaemonBackend

        backend = DaemonBackend(str(settings.daemon_socket()), daemon_timeout, backend,
                                fallback)
    tmp = settings.paths.tmp_dir
    limits = Limits(spill=spill_size, max_message=max_message_size,
                    tmp_dir=str(tmp) if tmp else None)
    try:
        server = make_server(listen, backend, limits, timeout, mode)
    except OSError as err:
        raise Fatal(f"cannot listen on {listen}: {err.strerror or err}") from None

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("lmsav.milter").info("listening on %s", listen)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        backend.close()
        kind, address = parse_listen(listen)
        if kind == "unix":
            Path(address).unlink(missing_ok=True)
