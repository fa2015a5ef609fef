"""`lmsav setup postfix|exim|sendmail|qmail`: print, make (--apply) or undo (--remove) an MTA's lmsav
settings."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from ..clitools import Fatal, root_options
from . import setup_exim, setup_exim_prequeue, setup_postfix, setup_sendmail

DEFAULT_QMAIL_RULES = Path("/etc/tcp.smtp")


def _os_error(err: OSError) -> str:
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"


def _default_lmsav() -> str:
    """The lmsav executable the MTA should run: the one on PATH, else the one running now."""
    found = shutil.which("lmsav")
    if found:
        return os.path.abspath(found)
    beside = Path(sys.executable).parent / "lmsav"
    if beside.is_file():
        return str(beside)
    argv0 = Path(sys.argv[0])
    return str(argv0.resolve()) if argv0.name == "lmsav" else str(beside)


def _common_options(function):
    options = [
        click.option("--apply", "do_apply", is_flag=True,
                     help="Make the changes (after backing up the files) instead of only "
                          "printing them."),
        click.option("--remove", is_flag=True,
                     help="Take lmsav out of the configuration again (print; with --apply, "
                          "do it)."),
        click.option("--lmsav", "lmsav_path", metavar="PATH",
                     help="(--pipe) The lmsav executable the MTA runs (default: lmsav on "
                          "PATH)."),
        click.option("--pipe", is_flag=True,
                     help="Hand mail over with a pipe transport running `lmsav enqueue` once "
                          "per message instead of over SMTP to the listener of `lmsav spool "
                          "watch`: no listener needed, but one process per message."),
        click.option("--lmtp", is_flag=True,
                     help="Speak LMTP to lmsav's listener instead of SMTP (one reply per "
                          "recipient); its [spool] listen address then starts with lmtp:."),
        click.option("--listen-port", type=click.IntRange(1, 65535),
                     default=setup_postfix.DEFAULT_LISTEN_PORT, show_default=True,
                     metavar="PORT",
                     help="Port on 127.0.0.1 where lmsav's listener takes the mail ([spool] "
                          "listen); not with --pipe."),
        click.option("--user", default=setup_postfix.DEFAULT_USER, show_default=True,
                     metavar="NAME",
                     help="(--pipe) Account that runs `lmsav enqueue`; it must be able to "
                          "write the spool."),
        click.option("--port", type=click.IntRange(1, 65535), default=setup_postfix.DEFAULT_PORT,
                     show_default=True, metavar="PORT",
                     help="Port on 127.0.0.1 where lmsav sends scanned mail back ([spool] "
                          "reinject)."),
        click.option("--spool", metavar="DIR",
                     help="(--pipe) Spool directory passed to `lmsav enqueue --spool` "
                          "(default: what the configuration file says; the listener writes "
                          "to the spool of its own configuration)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _transport(pipe: bool, lmtp: bool, spool: str | None, other_mode: str | None) -> str:
    """The after-queue transport the flags ask for: smtp (the default), lmtp or pipe."""
    if pipe and lmtp:
        raise Fatal("--pipe and --lmtp exclude each other: the pipe speaks no protocol")
    if other_mode and (pipe or lmtp):
        raise Fatal(f"--pipe and --lmtp choose the after-queue transport; {other_mode} asks "
                    "before the queue")
    if spool and not pipe:
        raise Fatal("--spool goes with --pipe: lmsav's listener writes to the spool of its own "
                    "configuration ([spool] dir)")
    return "pipe" if pipe else "lmtp" if lmtp else "smtp"


def listen_address(transport: str, listen_port: int) -> str:
    """What [spool] listen must hold for the MTA's smtp or lmtp client to reach lmsav."""
    return f"{transport}:127.0.0.1:{listen_port}"


@click.group("setup")
def setup() -> None:
    """Connect Postfix, Exim, Sendmail or qmail to lmsav: show, make or undo the configuration changes.

    Without --apply nothing is changed: the changes are printed, diff-like. With --apply the
    MTA's files are first copied aside (NAME.lmsav-TIMESTAMP), then changed; running it again
    changes nothing. --remove --apply takes lmsav's settings out and puts back what they
    replaced. See lmsav-setup(8).
    """


@setup.command("postfix", short_help="Hand Postfix's mail to lmsav (content_filter to its "
                                       "listener, reinjection smtpd; or --pipe, --milter).")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path),
              default=setup_postfix.DEFAULT_CONFIG_DIR, show_default=True,
              help="Postfix configuration directory (postconf -c).")
@click.option("--milter", is_flag=True,
              help="Scan before the queue with `lmsav milter` (smtpd_milters, milter_protocol "
                   "= 6, milter_default_action = tempfail) instead of the after-queue "
                   "content_filter.")
@click.option("--milter-socket", default=setup_postfix.DEFAULT_MILTER_SOCKET, show_default=True,
              metavar="SOCKET",
              help="With --milter (and --remove): where Postfix reaches the milter, "
                   "inet:HOST:PORT or unix:PATH (a path is seen from a chrooted smtpd's "
                   "queue directory).")
@click.option("--non-smtpd-milters", "non_smtpd", is_flag=True,
              help="With --milter: scan mail submitted with sendmail(1) too "
                   "(non_smtpd_milters).")
@_common_options
@click.pass_context
def setup_postfix_cmd(ctx, config_dir, milter, milter_socket, non_smtpd, do_apply, remove,
                      pipe, lmtp, listen_port, lmsav_path, user, port, spool):
    """Postfix: content_filter = lmsav:[127.0.0.1]:LISTEN-PORT and the service `lmsav`, Postfix's
    SMTP client (LMTP with --lmtp), which hands every message to the listener of `lmsav spool
    watch` ([spool] listen = ["smtp:127.0.0.1:10025"]); lmsav_destination_concurrency_limit and
    _recipient_limit; and an smtpd on 127.0.0.1:PORT without the filter for mail coming back.
    Edits go through postconf.

    With --pipe: the pipe service `lmsav` running `lmsav enqueue` once per message as USER, and
    content_filter = lmsav:dummy, instead of the client and the listener.

    With --milter: smtpd_milters names the running `lmsav milter` (default
    inet:127.0.0.1:8894, reachable from Debian's chrooted smtpd), milter_protocol = 6,
    milter_default_action = tempfail (fail-closed), and the same smtpd on 127.0.0.1:PORT, where
    the milter's notices come back unscanned. Each mode takes the other out.
    """
    if non_smtpd and not milter and not remove:
        raise Fatal("--non-smtpd-milters goes with --milter")
    transport = _transport(pipe, lmtp, spool, "--milter" if milter and not remove else None)
    lmsav_path = lmsav_path or _default_lmsav()
    try:
        postfix = setup_postfix.Postfix(config_dir)
        if remove:
            plan = setup_postfix.plan_remove(postfix, milter_socket)
        elif milter:
            plan = setup_postfix.plan_milter(postfix, milter_socket, port, non_smtpd)
        else:
            plan = setup_postfix.plan_setup(postfix, lmsav_path, user, port, spool,
                                            milter_socket, transport, listen_port)
        if milter and not remove:
            listen = setup_postfix.milter_listen(postfix, milter_socket)
            shown = _show_milter_plan(ctx, plan, do_apply, port, listen)
        else:
            shown = _show_plan(ctx, plan, do_apply, remove, port, spool, user, transport,
                               listen_port)
        if not shown:
            return
        backups = setup_postfix.apply(postfix, plan)
    except setup_postfix.SetupError as err:
        raise Fatal(str(err))
    except OSError as err:
        raise Fatal(_os_error(err))
    if backups:
        click.echo("Backed up: " + ", ".join(str(path) for path in backups))
        where = "" if Path(config_dir) == setup_postfix.DEFAULT_CONFIG_DIR else f" -c {config_dir}"
        if remove:
            then = "."
        elif milter:
            then = f" and make sure `lmsav milter` runs, listening on {listen}."
        else:
            then = " and make sure " + _watch_running(transport, listen_port)
        click.echo(f"Done. Now run `postfix{where} reload`{then}")


def _watch_running(transport: str, listen_port: int) -> str:
    if transport == "pipe":
        return "`lmsav spool watch` runs."
    return (f"`lmsav spool watch` runs with [spool] listen = "
            f"[\"{listen_address(transport, listen_port)}\"].")


def _show_milter_plan(ctx, plan, do_apply, port, listen) -> bool:
    """Print the plan and where lmsav's configuration does not fit it; True to apply."""
    click.echo(plan.listing(), nl=False)
    _check_milter_settings(ctx, port, listen)
    if not do_apply and plan.changes:
        click.echo("Nothing changed; run again with --apply to make these changes.")
    return do_apply


def _show_plan(ctx, plan, do_apply, remove, port, spool, user, transport, listen_port) -> bool:
    """Print the plan and check lmsav's own settings; True when it is to be applied."""
    click.echo(plan.listing(), nl=False)
    if not remove:
        _check_lmsav_settings(ctx, port, spool, user, transport, listen_port)
    if not do_apply and plan.changes:
        click.echo("Nothing changed; run again with --apply to make these changes.")
    return do_apply


@setup.command("exim", short_help="Hand Exim's mail to lmsav (router, smtp transport to its "
                                    "listener or --pipe, reinjection port).")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path),
              default=setup_exim.DEFAULT_CONFIG_DIR, show_default=True,
              help="Exim configuration directory: Debian's split (conf.d/) or non-split "
                   "(exim4.conf.template) layout, or a directory with exim4.conf or configure.")
@click.option("--config-file", type=click.Path(dir_okay=False, path_type=Path),
              help="A single Exim configuration file (e.g. /etc/exim/configure, or what -C "
                   "names); overrides --config-dir.")
@click.option("--pre-queue", "pre_queue", is_flag=True,
              help="Apply the groups' policy at the end of DATA: a DATA ACL asks the running "
                   "lmsav daemon; what it cannot apply (cure, warn, several groups) goes "
                   "through lmsav after the queue.")
@click.option("--daemon-socket", default=setup_exim_prequeue.DEFAULT_SOCKET, show_default=True,
              metavar="PATH", help="(--pre-queue) The lmsav daemon's unix socket.")
@click.option("--acl-timeout", type=click.IntRange(1, 3600),
              default=setup_exim_prequeue.DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
              help="(--pre-queue) How long the ACL waits for the daemon before deferring.")
@_common_options
@click.pass_context
def setup_exim_cmd(ctx, config_dir, config_file, pre_queue, daemon_socket, acl_timeout,
                   do_apply, remove, pipe, lmtp, listen_port, lmsav_path, user, port, spool):
    """Exim: the router `lmsav_scan` before all others; the smtp transport `lmsav_smtp` to the
    listener of `lmsav spool watch` on 127.0.0.1:LISTEN-PORT ([spool] listen =
    ["smtp:127.0.0.1:10025"]; protocol = lmtp with --lmtp), or with --pipe the pipe transport
    `lmsav_pipe` running `lmsav enqueue`; and PORT added to daemon_smtp_ports for mail coming
    back. (--pre-queue sends what its ACL cannot finish through the pipe.)"""
    transport = _transport(pipe, lmtp, spool if not pre_queue else None,
                           "--pre-queue" if pre_queue and not remove else None)
    if pre_queue:
        transport = "pipe"
    lmsav_path = lmsav_path or _default_lmsav()
    try:
        layout, where = setup_exim.locate(config_dir, config_file)
        if remove:
            # The before-queue removal is a superset: it also takes the ACL out.
            plan = setup_exim_prequeue.plan_remove(layout, where)
        elif pre_queue:
            options = setup_exim_prequeue.Options(lmsav_path, user, port, spool, daemon_socket,
                                                  acl_timeout)
            plan = setup_exim_prequeue.plan_setup(layout, where, options)
        else:
            options = setup_exim.Options(lmsav_path, user, port, spool, transport=transport,
                                         listen_port=listen_port)
            plan = setup_exim_prequeue.plan_after_queue(layout, where, options)
        if not _show_plan(ctx, plan, do_apply, remove, port, spool, user, transport,
                          listen_port):
            return
        backups = setup_exim.apply(plan)
    except setup_exim.SetupError as err:
        raise Fatal(str(err))
    except OSError as err:
        raise Fatal(_os_error(err))
    if plan.changes:
        if backups:
            click.echo("Backed up: " + ", ".join(str(path) for path in backups))
        click.echo("Done." if remove else
                   "Done. Once Exim runs the new configuration, make sure "
                   + _watch_running(transport, listen_port))


@setup.command("sendmail", short_help="Ask `lmsav milter` about Sendmail's mail "
                                        "(INPUT_MAIL_FILTER, sendmail.cf rebuilt with m4).")
@click.option("--config-dir", type=click.Path(file_okay=False, path_type=Path),
              default=setup_sendmail.DEFAULT_CONFIG_DIR, show_default=True,
              help="Sendmail configuration directory (sendmail.mc, sendmail.cf).")
@click.option("--milter-socket", default=setup_sendmail.DEFAULT_MILTER_SOCKET,
              show_default=True, metavar="SOCKET",
              help="Where Sendmail reaches the milter: inet:PORT@HOST or local:/path.")
@click.option("--cf-dir", type=click.Path(file_okay=False, path_type=Path),
              default=setup_sendmail.DEFAULT_CF_DIR, show_default=True,
              help="Sendmail's cf files (m4/cf.m4), for a sendmail.mc that does not include "
                   "cf.m4 itself.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Make the changes (after backing up the files) instead of only printing "
                   "them.")
@click.option("--remove", is_flag=True,
              help="Take lmsav out of the configuration again (print; with --apply, do it).")
@click.pass_context
def setup_sendmail_cmd(ctx, config_dir, milter_socket, cf_dir, do_apply, remove):
    """Sendmail: INPUT_MAIL_FILTER(`lmsav', `S=inet:8894@127.0.0.1, F=T, T=S:4m;R:4m;E:10m')
    in sendmail.mc, between marker lines, and sendmail.cf rebuilt from it with m4. F=T makes
    Sendmail tempfail the mail while the milter cannot be reached (fail-closed).

    --remove takes the lines out; sendmail.cf is put back from the copy made with that
    sendmail.mc, byte for byte, or rebuilt.
    """
    try:
        if remove:
            plan = setup_sendmail.plan_remove(config_dir, cf_dir)
        else:
            plan = setup_sendmail.plan_setup(config_dir, milter_socket, cf_dir)
        click.echo(plan.listing(), nl=False)
        if not remove and plan.changes:
            listen = setup_sendmail.sendmail_socket(milter_socket)
            _check_milter_listen(ctx, listen)
        if not do_apply:
            if plan.changes:
                click.echo("Nothing changed; run again with --apply to make these changes.")
            return
        backups = setup_sendmail.apply(plan)
    except setup_sendmail.SetupError as err:
        raise Fatal(str(err))
    except OSError as err:
        raise Fatal(_os_error(err))
    if backups:
        click.echo("Backed up: " + ", ".join(str(path) for path in backups))
        click.echo("Done. Now restart Sendmail" + ("." if remove else
                   f" and make sure `lmsav milter` runs, listening on {listen}."))


def _check_milter_listen(ctx: click.Context, listen: str):
    """A note when [milter] listen is not where the MTA will look; (the settings read, their
    file), or None when they cannot be read."""
    from .. import config as config_mod
    from .. import paths as paths_mod
    from .milter_socket import ListenError, parse_listen

    obj = root_options(ctx)
    path = obj.get("config") or paths_mod.config_file_from(None, os.environ)
    try:
        settings = config_mod.load_settings(path, obj.get("profile"))
    except config_mod.ConfigError as err:
        click.echo(f"note: cannot check lmsav's configuration: {err}")
        return None
    configured = settings.milter.listen or f"unix:{Path(settings.paths.run_dir) / 'milter.sock'}"
    try:
        same = parse_listen(configured) == parse_listen(listen)
    except ListenError:
        same = False
    if not same:
        click.echo(f'note: lmsav milter listens on {configured} ([milter] listen in {path}); '
                   f'set listen = "{listen}" there (or run it with --listen {listen})')
    return settings, path


def _default_wrapper() -> str:
    found = shutil.which("lmsav-qmail-queue")
    if found:
        return os.path.abspath(found)
    return str(Path(sys.executable).parent / "lmsav-qmail-queue")


@setup.command("qmail", short_help="Run lmsav-qmail-queue as qmail-smtpd's QMAILQUEUE "
                                     "(tcpserver rules).")
@click.option("--rules", "rules_file", type=click.Path(dir_okay=False, path_type=Path),
              default=str(DEFAULT_QMAIL_RULES), show_default=True,
              help="tcpserver rules file of qmail-smtpd (source of the .cdb).")
@click.option("--cdb", type=click.Path(dir_okay=False, path_type=Path),
              help="Compiled rules to rebuild with tcprules after --apply (default: RULES.cdb).")
@click.option("--apply", "do_apply", is_flag=True,
              help="Change the rules file (after copying it aside) and recompile it.")
@click.option("--remove", is_flag=True, help="Take lmsav-qmail-queue out of the rules again.")
@click.option("--wrapper", metavar="PATH",
              help="The lmsav-qmail-queue to run (default: the one on PATH).")
@click.pass_context
def setup_qmail_cmd(ctx, rules_file, cdb, do_apply, remove, wrapper):
    """qmail: set QMAILQUEUE to lmsav-qmail-queue for every client qmail-smtpd accepts, so
    each message is scanned before it is queued and a rejection reaches the SMTP client.

    Every `allow` rule gets QMAILQUEUE (and LMSAV_CONFIG when the configuration file is not
    /etc/lmsav/lmsav.toml); a catch-all `:allow` rule is added when there is none. Rules that
    already name another QMAILQUEUE are left alone. See lmsav-qmail-queue(8) for the
    permissions qmail's users need and the per-client settings LMSAV_GROUP and LMSAV_BYPASS.
    """
    from ..qmail import setup as qsetup
    from ..qmail.settings import SYSTEM_CONFIG

    wrapper = wrapper or _default_wrapper()
    if not os.path.isabs(wrapper):
        raise Fatal(f"--wrapper {wrapper}: expected an absolute path")
    # The wrapper reads /etc/lmsav/lmsav.toml unless told otherwise: pass another file only
    # when it was asked for or exists (a user's absent default would defer every message).
    obj = root_options(ctx)
    config = str(obj.get("config") or "")
    wanted = config and (obj.get("config_explicit") or os.path.exists(config))
    config = config if wanted and os.path.abspath(config) != SYSTEM_CONFIG else None
    try:
        plan = qsetup.plan(rules_file, wrapper, config, remove)
        click.echo(plan.listing(), nl=False)
        if not do_apply:
            if plan.changed:
                click.echo("Nothing changed; run again with --apply to make these changes.")
            return
        backup = qsetup.apply(plan)
        if backup is not None:
            click.echo(f"Backed up: {backup}")
        cdb = cdb or rules_file.with_name(rules_file.name + ".cdb")
        ran = qsetup.compile_rules(rules_file, cdb) if plan.changed else None
    except qsetup.SetupError as err:
        raise Fatal(str(err))
    except OSError as err:
        raise Fatal(_os_error(err))
    if plan.changed:
        if ran:
            click.echo(f"Compiled: {ran}")
        else:
            click.echo(f"tcprules is not installed here; compile with: tcprules {cdb} "
                       f"{cdb}.tmp < {rules_file}")
        click.echo("Done. New connections use the new rules; qmail-smtpd needs no restart.")


def _check_lmsav_settings(ctx: click.Context, port: int, spool: str | None, user: str,
                          transport: str = "pipe",
                          listen_port: int = setup_postfix.DEFAULT_LISTEN_PORT) -> None:
    """Notes where lmsav's own configuration does not fit the MTA's: reinjection, and the
    listener or the spool the pipe writes to."""
    from .. import config as config_mod
    from .. import paths as paths_mod

    obj = root_options(ctx)
    path = obj.get("config") or paths_mod.config_file_from(None, os.environ)
    try:
        settings = config_mod.load_settings(path, obj.get("profile"))
    except config_mod.ConfigError as err:
        click.echo(f"note: cannot check lmsav's configuration: {err}")
        return
    wanted = {f"smtp:127.0.0.1:{port}", f"smtp:localhost:{port}", f"smtp:[127.0.0.1]:{port}"}
    if settings.spool.reinject not in wanted:
        click.echo(f'note: [spool] reinject = "{settings.spool.reinject}" in {path}; set it to '
                   f'"smtp:127.0.0.1:{port}" so scanned mail comes back through the port above')
    if transport != "pipe":
        _check_listen(settings, path, transport, listen_port)
        return
    default = paths_mod.default_config_file(env={}, euid=0)
    if not spool and Path(path) != default:
        click.echo(f"note: the MTA runs `lmsav enqueue` without $LMSAV_CONFIG, so it reads "
                   f"{default}, not {path}; give the spool directory with --spool")
    spool_dir = spool or settings.spool_dir()
    click.echo(f"note: `lmsav enqueue` runs as {user} and writes to {spool_dir}: that directory "
               f"(or its parent, if it does not exist yet) must be writable by {user}")


# Listener hosts the MTA's client reaches when it connects to 127.0.0.1.
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "0.0.0.0"}


def _check_listen(settings, path, transport: str, listen_port: int) -> None:
    """A note when [spool] listen has no address where the MTA's client will connect."""
    listen = tuple(getattr(settings.spool, "listen", ()))
    for address in listen:
        protocol, _, rest = address.partition(":")
        host, _, port = rest.rpartition(":")
        if protocol == transport and host.strip("[]") in LOOPBACK_HOSTS \
                and port == str(listen_port):
            return
    wanted = listen_address(transport, listen_port)
    shown = "[" + ", ".join(f'"{a}"' for a in listen) + "]"
    click.echo(f"note: [spool] listen = {shown} in {path}: lmsav does not listen where the MTA "
               f'will hand it mail; set listen = ["{wanted}"] in [spool] there, so that '
               "`lmsav spool watch` takes it")


def _check_milter_settings(ctx: click.Context, port: int, listen: str) -> None:
    """Notes where [milter] does not fit Postfix's: its socket, where its notices go."""
    checked = _check_milter_listen(ctx, listen)
    if checked is None:
        return
    settings, path = checked
    notices = settings.milter.notices or settings.spool.reinject
    wanted = {f"smtp:127.0.0.1:{port}", f"smtp:localhost:{port}", f"smtp:[127.0.0.1]:{port}"}
    if notices not in wanted:
        click.echo(f'note: the milter\'s notices go to "{notices}" ([milter] notices, else '
                   f'[spool] reinject, in {path}); "smtp:127.0.0.1:{port}" is the listener '
                   "above, where they are not scanned again")
