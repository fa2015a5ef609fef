"""``lmsav mail`` and ``lmsav groups``: the mail policy from the command line (the kept
originals are ``lmsav backup``, in ``lmsav/backupcommands.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import jsonout
from ..clitools import (
    EXIT_CLEAN,
    EXIT_FOUND,
    Fatal,
    database_dir,
    load_settings,
    root_options,
)
from ..config import ConfigError


def _groups(ctx):
    from .groups import groups_dir, load_groups

    obj = root_options(ctx)
    try:
        return load_groups(groups_dir(Path(obj["config"])))
    except ConfigError as err:
        raise Fatal(str(err))


@click.group("mail")
def mail_group():
    """Apply mail policy to messages (what the spool and qmail integrations run)."""


@mail_group.command("check")
@click.argument("message", metavar="FILE|-")
@click.option("--sender", "-f", default="", metavar="ADDR", help="Envelope sender ('' for bounces).")
@click.option("--rcpt", "-r", "recipients", multiple=True, required=True, metavar="ADDR",
              help="Envelope recipient; repeatable.")
@click.option("-d", "--database", metavar="DIR", help="Signature database directory.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the outcome and the plan as one JSON object on one line.")
@click.option("--output", "-o", "output_dir", metavar="DIR",
              help="Write every delivery of the plan (notices, status notice, messages) as "
                   "files into DIR.")
@click.option("--record", is_flag=True,
              help="Keep the original in the backup store and append the statistics record, "
                   "as the mail integrations do; without it nothing is written to the state "
                   "directory.")
@click.option("--no-stats", is_flag=True,
              help="With --record: do not append the statistics record.")
@click.option("--no-backup", is_flag=True, help="With --record: do not keep the original.")
@click.pass_context
def mail_check(ctx, message, sender, recipients, database, as_json, output_dir, record,
               no_stats, no_backup):
    """Decide what happens to one message: scan it, apply each recipient group's policy, and
    print the outcome and the plan: the SMTP result and every delivery the MTA is handed.
    Trying a message leaves no trace in the state directory unless --record is given.
    Exit 0 when clean, 1 when something was found or filtered, 2 on error."""
    from .envelope import Envelope
    from .service import MailService, MailServiceError

    settings = load_settings(ctx)
    config = root_options(ctx)["config"]
    try:
        service = MailService.from_settings(
            settings, Path(config) if config else None,
            database_dir=database_dir(settings, database),
            backup=record and not no_backup, stats=record and not no_stats)
    except MailServiceError as err:
        raise Fatal(str(err))
    for warning in service.database.warnings:
        click.echo(f"lmsav: warning: {warning}", err=True)
    try:
        raw = sys.stdin.buffer.read() if message == "-" else Path(message).read_bytes()
    except OSError as err:
        raise Fatal(f"{message}: {err.strerror}")
    try:
        plan = service.decide(raw, Envelope(sender, tuple(recipients)))
    except MailServiceError as err:
        raise Fatal(str(err))
    outcome = plan.outcome
    if output_dir:
        _write_deliveries(Path(output_dir), plan)
    if as_json:
        jsonout.emit_object({**outcome.to_json(), "plan": _plan_json(plan)})
    else:
        _print_outcome(outcome)
        _print_plan(plan)
    found = outcome.status not in ("clean", "unscanned")
    ctx.exit(EXIT_FOUND if found else EXIT_CLEAN)


def _print_outcome(outcome) -> None:
    click.echo(f"message {outcome.message_id or '(no Message-ID)'} from <{outcome.sender}>, "
               f"{outcome.size} bytes: {outcome.status}"
               + (f" ({', '.join(outcome.threats)})" if outcome.threats else ""))
    for g in outcome.groups:
        result = "delivered" if g.delivered else ("rejected: " + g.reject_reply
                                                  if g.action == "reject" else "not delivered")
        click.echo(f"  group {g.group} -> {', '.join(g.recipients) or '(no recipients)'}: "
                   f"{g.status}, action {g.action}, {result}")
        for o in g.objects:
            what = ", ".join(o.threats) or o.reason
            click.echo(f"    {o.object}: {o.status} -> {o.action}" + (f" ({what})" if what else ""))
        if g.backup_id:
            click.echo(f"    original kept in backup {g.backup_id}")


def _print_plan(plan) -> None:
    """What the MTA is told and handed: the SMTP result (a front end answering the
    transaction itself) and every delivery after the queue, notices first."""
    click.echo(f"plan: {plan.result}" + (f" ({plan.reply})" if plan.reply else ""))
    for d in plan.deliveries:
        click.echo(f"  {d.key}: from <{d.sender}> to {', '.join(d.recipients)}, "
                   f"{len(d.message)} bytes -> {_delivery_file(d.key)}")


def _plan_json(plan) -> dict:
    return {"result": plan.result, "reply": plan.reply,
            "deliveries": [{"key": d.key, "from": d.sender, "to": list(d.recipients),
                            "size": len(d.message), "file": _delivery_file(d.key)}
                           for d in plan.deliveries]}


def _delivery_file(key: str) -> str:
    """The file ``-o`` writes a delivery to: GROUP.eml for a group's message,
    notice<i>-<kind>.eml for a notice, reject-notice.eml for the sender's status notice."""
    from .deliveries import REJECT_NOTICE_KEY

    if key == REJECT_NOTICE_KEY:
        return "reject-notice.eml"
    if key.endswith(":message"):
        return key[:-len(":message")] + ".eml"
    return key.replace(":", "-") + ".eml"


def _write_deliveries(directory: Path, plan) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for d in plan.deliveries:
        (directory / _delivery_file(d.key)).write_bytes(d.message)


@click.group("groups")
def groups_group():
    """Show the recipient groups (groups.d/*.toml) and which one a sender/recipient gets."""


@groups_group.command("list")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per group, a line each.")
@click.pass_context
def groups_list(ctx, as_json):
    """List groups, highest priority first, then the default group."""
    from .groups import summary_rows

    rows = summary_rows(_groups(ctx))
    if as_json:
        jsonout.emit_records(rows)
        return
    for row in rows:
        click.echo(f"{row['name']:<20} priority {row['priority']:<4} "
                   f"senders {', '.join(row['senders'])}  recipients "
                   f"{', '.join(row['recipients'])}")


@groups_group.command("show")
@click.argument("name")
@click.option("--sources", is_flag=True, help="Annotate values inherited from the default group.")
@click.pass_context
def groups_show(ctx, name, sources):
    """Print one group's effective settings as TOML."""
    from .groups import describe

    groups = _groups(ctx)
    found = next((g for g in [*groups.groups, groups.default] if g.name == name), None)
    if found is None:
        names = ", ".join(g.name for g in [*groups.groups, groups.default])
        raise Fatal(f"no group '{name}' (groups: {names})")
    click.echo(describe(found, sources=sources), nl=False)


@groups_group.command("which")
@click.option("--sender", "-f", default="", metavar="ADDR", help="Envelope sender.")
@click.option("--rcpt", "-r", "recipients", multiple=True, required=True, metavar="ADDR",
              help="Envelope recipient; repeatable.")
@click.pass_context
def groups_which(ctx, sender, recipients):
    """Show which group each recipient resolves to for this sender."""
    groups = _groups(ctx)
    if not groups.is_protected(sender, list(recipients)) and groups.unprotected == "skip":
        click.echo("no protected domain involved: the message passes unscanned")
    for rcpt in recipients:
        click.echo(f"{rcpt}: {groups.resolve(sender, rcpt).name}")
