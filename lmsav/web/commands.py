"""`lmsav web`: serve the console; `lmsav web user …`: its local accounts."""

from __future__ import annotations

import os
import sys

import click

from ..clitools import Fatal, load_settings, root_options
from ..jsonout import emit_records


@click.group("web", invoke_without_command=True)
@click.option("--listen", metavar="HOST:PORT",
              help="Where to listen (default: [web] listen, 127.0.0.1:8343).")
@click.option("--certificate", metavar="FILE",
              help="PEM certificate for HTTPS (default: [web] certificate; none: HTTP).")
@click.option("--key", metavar="FILE",
              help="PEM private key (default: [web] key, else the certificate file).")
@click.option("--trusted-proxies", type=click.IntRange(min=0), metavar="N",
              help="Reverse proxies whose X-Forwarded-* headers are honoured "
                   "(default: [web] trusted_proxies, 0).")
@click.pass_context
def web(ctx, listen, certificate, key, trusted_proxies):
    """Serve the administration console (lmsav-web(8)).

    Dashboard, mail log, quarantine and backups, spool, groups, updates, schedules,
    configuration and logs, for the accounts made with `lmsav web user add`. It listens on
    127.0.0.1:8343 unless told otherwise, and refuses plain HTTP off loopback. Started as root,
    it runs as the service user. SIGTERM or Ctrl-C stops it.
    """
    if ctx.invoked_subcommand is not None:
        return
    overrides = {f"web.{name}": value for name, value in (
        ("listen", listen), ("certificate", certificate), ("key", key),
        ("trusted_proxies", trusted_proxies)) if value is not None}
    settings = load_settings(ctx, overrides)
    _serve(ctx, settings)


def _serve(ctx, settings) -> None:
    import signal
    import threading

    from .. import logsetup
    from ..paths import service_user
    from .server import (
        ServeError,
        check_exposure,
        make_server,
        parse_listen,
        tls_adapter,
    )

    section = settings.web
    try:
        host, port = parse_listen(section.listen)
        check_exposure(host, section.certificate is not None, section.trusted_proxies)
        adapter = (tls_adapter(section.certificate, section.key)
                   if section.certificate else None)
    except ServeError as err:
        raise Fatal(str(err)) from None
    try:
        logsetup.configure(settings, "web", verbosity=logsetup.verbosity_of(ctx))
    except logsetup.LogSetupError as err:
        raise Fatal(str(err)) from None
    options = root_options(ctx)
    from .app import create_app
    from .pages.stores import start_indexing

    account = _service_account(service_user())
    server = make_server(None, host, port, adapter)
    try:
        server.prepare()  # binds while still root, for a port below 1024
    except OSError as err:
        raise Fatal(f"cannot listen on {section.listen}: {err.strerror or err}") from None
    try:
        _become(account)
        app = create_app(settings, options["config"], options["profile"])
        with app.app_context():
            start_indexing()  # the first visitor finds the stores' index already built
        server.wsgi_app = app
    except OSError as err:
        server.stop()  # its worker threads would keep the process alive
        raise Fatal(f"cannot prepare the console's state: {err.strerror or err}: "
                    f"{err.filename or ''}") from None

    def stop(_signum, _frame):
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    scheme = "https" if adapter else "http"
    bound = server.bind_addr
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    click.echo(f"lmsav web: serving on {scheme}://{shown}:{bound[1]}/", err=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        server.stop()


def _service_account(user: str):
    """As root, the account to become once the socket is bound: the console acts only through
    lmsav's stores and the services' sockets, never with root's rights. None otherwise."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise Fatal(f"cannot drop root: no user {user!r} (create it with `lmsav setup`, or run "
                    "`lmsav web` as an unprivileged user)") from None
    return account if account.pw_uid != 0 else None


def _become(account) -> None:
    if account is None:
        return
    os.initgroups(account.pw_name, account.pw_gid)
    os.setgid(account.pw_gid)
    os.setuid(account.pw_uid)


# -- accounts ----------------------------------------------------------------------------------

def _accounts(ctx):
    from .accounts import Accounts

    settings = load_settings(ctx)
    return Accounts(settings.paths.state_dir / "web")


def _call(fn):
    from .accounts import AccountError

    try:
        return fn()
    except AccountError as err:
        raise Fatal(str(err)) from None
    except OSError as err:
        raise Fatal(f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise Fatal("no password on standard input")
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@web.group("user")
def user_group():
    """The console's local accounts (admin: may change things; viewer: may look)."""


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "viewer"]), required=True,
              help="admin may change things; viewer may only look.")
@click.option("--password-stdin", is_flag=True,
              help="Read the password as one line on standard input (also when stdin is not "
                   "a terminal).")
@click.pass_context
def user_add(ctx, name, role, password_stdin):
    """Add the account NAME (the password is asked twice, or read from stdin)."""
    accounts = _accounts(ctx)
    from .accounts import check_name

    _call(lambda: check_name(name))
    password = _read_password(password_stdin)
    _call(lambda: accounts.add(name, password, role))
    click.echo(f"account {name} added ({role})")


@user_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the new password from stdin.")
@click.pass_context
def user_passwd(ctx, name, password_stdin):
    """Set a new password for NAME; its open sessions end."""
    accounts = _accounts(ctx)
    if _call(lambda: accounts.get(name)) is None:
        raise Fatal(f"no account {name!r}")
    password = _read_password(password_stdin)
    _call(lambda: accounts.set_password(name, password))
    click.echo(f"password of {name} changed")


@user_group.command("role")
@click.argument("name")
@click.argument("role", type=click.Choice(["admin", "viewer"]))
@click.pass_context
def user_role(ctx, name, role):
    """Give NAME another role; its open sessions end."""
    accounts = _accounts(ctx)
    _call(lambda: accounts.set_role(name, role))
    click.echo(f"{name} is now {role}")


@user_group.command("remove")
@click.argument("name")
@click.pass_context
def user_remove(ctx, name):
    """Remove the account NAME; its open sessions end."""
    accounts = _accounts(ctx)
    _call(lambda: accounts.remove(name))
    click.echo(f"account {name} removed")


@user_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per account.")
@click.pass_context
def user_list(ctx, as_json):
    """The accounts and their roles."""
    import time

    accounts = _call(lambda: _accounts(ctx).list())
    if as_json:
        emit_records(accounts)
        return
    click.echo(f"{'NAME':<20} {'ROLE':<8} CHANGED")
    for a in accounts:
        changed = time.strftime("%Y-%m-%d %H:%M", time.localtime(a["changed"])) \
            if a.get("changed") else ""
        click.echo(f"{a['name']:<20} {a['role']:<8} {changed}")
