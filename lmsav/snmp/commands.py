"""`lmsav snmp agent` (the LMSAV-MIB for snmpd) and `lmsav snmp monitor` (its traps or
informs)."""

from __future__ import annotations

import logging
import signal
import sys
import time

import click

from .. import logsetup
from ..clitools import Fatal, load_settings
from .mib import BASE, format_oid, parse_oid
from .traps import INFORM_RETRIES, INFORM_TIMEOUT

MONITOR_INTERVAL = 30.0


def _configure_logging(ctx: click.Context, settings) -> None:
    """[log] for a service: snmpd and systemd keep what it writes (never on standard output,
    the agent's pass_persist channel)."""
    logsetup.configure(settings, "snmp", verbosity=logsetup.verbosity_of(ctx))


def _base(text: str) -> tuple[int, ...]:
    oid = parse_oid(text)
    if oid is None or len(oid) < 2:
        raise Fatal(f"--base {text!r}: expected a numeric OID like {format_oid(BASE)}")
    return oid


base_option = click.option(
    "--base", default=format_oid(BASE), show_default=True, metavar="OID",
    help="Where the LMSAV-MIB is served and its notifications are numbered: the OID of "
         "the pass_persist line (change it with the MIB's lmsavMIB to move the subtree).")


@click.group("snmp")
def snmp_group() -> None:
    """SNMP: the LMSAV-MIB for snmpd (pass_persist) and the traps of its notifications."""


@snmp_group.command("agent")
@base_option
@click.option("--cache", "cache_seconds", type=click.FloatRange(min=0), default=5.0,
              show_default=True, metavar="SECONDS",
              help="Answer from one status snapshot for this long.")
@click.option("--dump", is_flag=True,
              help="Print every object as OID = TYPE: VALUE and exit (what snmpwalk shows "
                   "through snmpd), without snmpd.")
@click.pass_context
def agent_cmd(ctx: click.Context, base: str, cache_seconds: float, dump: bool) -> None:
    """Serve the LMSAV-MIB to snmpd on standard input and output (pass_persist).

    snmpd starts it from a "pass_persist .1.3.6.1.4.1.8072.9999.9999.5766 PATH-OF-LMSAV snmp
    agent" line of snmpd.conf (see lmsav-snmp(8)).
    """
    from .agent import Agent, serve
    from .counters import TotalsReader

    oid = _base(base)
    settings = load_settings(ctx)
    _configure_logging(ctx, settings)
    agent = Agent(settings, TotalsReader(settings), base=oid, cache_seconds=cache_seconds)
    if dump:
        for line in agent.dump():
            click.echo(line)
        return
    if sys.stdin.isatty():
        raise Fatal("lmsav snmp agent answers snmpd's pass_persist requests on its standard "
                    "input; snmpd starts it from a pass_persist line of snmpd.conf (see "
                    "lmsav-snmp(8)); --dump prints the values here")
    try:
        serve(agent, sys.stdin, sys.stdout)
    except (BrokenPipeError, KeyboardInterrupt):
        pass  # snmpd went away


@snmp_group.command("monitor")
@base_option
@click.option("--once", is_flag=True, help="Poll once, send what changed, and exit (cron).")
@click.option("--interval", type=click.FloatRange(min=1), default=MONITOR_INTERVAL,
              show_default=True, metavar="SECONDS", help="Time between polls.")
@click.option("--inform-timeout", type=click.FloatRange(min=0.01, max=600),
              default=INFORM_TIMEOUT, show_default=True, metavar="SECONDS",
              help="With [snmp] informs: how long each try waits for the sink's "
                   "acknowledgement.")
@click.option("--inform-retries", type=click.IntRange(min=0, max=20), default=INFORM_RETRIES,
              show_default=True, metavar="N",
              help="With [snmp] informs: tries after the first before a sink counts as down.")
@click.pass_context
def monitor_cmd(ctx: click.Context, base: str, once: bool, interval: float,
                inform_timeout: float, inform_retries: int) -> None:
    """Send the LMSAV-MIB's traps to the sinks of [snmp] traps when lmsav's status changes
    (informs, acknowledged by the sinks, with [snmp] informs = true).

    Components stopped or started, the database outdated, the spool over its threshold, an
    update failed, and viruses found (at most one trap per [snmp] trap_interval). Exit
    status with --once: 0, or 2 when a trap could not be handed to every sink (an inform
    not acknowledged by every sink).
    """
    from .counters import TotalsReader
    from .monitor import poll, state_file
    from .traps import Sender

    oid = _base(base)
    settings = load_settings(ctx)
    if not settings.snmp.traps:
        raise Fatal("no trap sinks: list them in [snmp] traps, like traps = "
                    '["127.0.0.1:162"]')
    _configure_logging(ctx, settings)
    sender = Sender(settings.snmp.traps, settings.snmp.community, inform=settings.snmp.informs,
                    timeout=inform_timeout, retries=inform_retries,
                    persistent_dir=state_file(settings).parent / "net-snmp")
    if sender.available() is None:
        raise Fatal(f"{sender.command} not found: install Debian's snmp package to send "
                    f"{sender.kind}")
    totals, path = TotalsReader(settings), state_file(settings)
    if not once:
        # systemctl stop: end between polls like ^C (the state is saved after every poll).
        signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
        logging.getLogger("lmsav.snmp").info(
            "polling every %g s; %s to %s", interval, sender.kind,
            ", ".join(settings.snmp.traps))
    try:
        while True:
            results = poll(settings, totals, sender, path, base=oid)
            if once:
                failed = [trap.name for trap, sinks in results if sinks < len(sender.sinks)]
                if failed:
                    what = "acknowledged by" if sender.inform else "sent to"
                    raise Fatal(f"not {what} every sink: {', '.join(failed)}")
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        pass
