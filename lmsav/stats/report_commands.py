"""``lmsav report daily|weekly``: a report of one day or one week of mail from the statistics
store, as text, HTML with a chart, JSON, or a mail to the administrators."""

from __future__ import annotations

import base64
import time

import click

from .. import jsonout
from ..clitools import Fatal, load_settings
from .report_mail import DEFAULT_SENDMAIL

ENV_SENDMAIL = "LMSAV_SENDMAIL"

# What "now" is: the default report is the day (or week) before it.
clock = time.time


@click.command("report", short_help="Daily or weekly mail report: text, HTML with a chart, "
                                    "or a mail (lmsav-report(1)).")
@click.argument("kind", type=click.Choice(["daily", "weekly"]), metavar="daily|weekly")
@click.option("--date", "day", metavar="DAY",
              help="The day reported on, or the last day of the week (an ISO date, UTC; "
                   "default: yesterday).")
@click.option("--format", "fmt", type=click.Choice(["text", "html"]), default="text",
              show_default=True, help="Text, or one HTML page with the chart inside it.")
@click.option("-o", "--output", metavar="FILE",
              help="Write the report to FILE instead of standard output.")
@click.option("--mail", "addresses", multiple=True, metavar="ADDR",
              help="Mail the report (text, HTML and chart) to ADDR; repeatable.")
@click.option("--sendmail", metavar="PATH", envvar=ENV_SENDMAIL, default=DEFAULT_SENDMAIL,
              show_default=True, help=f"The MTA's sendmail program (env {ENV_SENDMAIL}).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the report's numbers as one JSON object on one line.")
@click.pass_context
def report(ctx, kind, day, fmt, output, addresses, sendmail, as_json):
    """Report on the mail of one day (daily, by hour) or of seven days (weekly, by day):
    messages and their statuses, recipient groups and actions, top threats, top senders of
    infected mail, bytes and scan times, with a chart in the HTML form.

    Days are UTC, as in lmsav stats. With --mail the report is mailed instead of printed
    (written too with -o FILE).

    \b
    Examples:
      lmsav report daily
      lmsav report weekly --format html -o /var/www/lmsav/week.html
      lmsav report daily --mail postmaster@example.org
    """
    from .report import parse_day, period

    if as_json and fmt == "html":
        raise Fatal("--json and --format html are two different outputs; choose one")
    try:
        covered = period(kind, parse_day(day) if day is not None else None, clock())
    except ValueError as err:
        raise Fatal(f"--date: {err}") from None
    recipients = _recipients(addresses)
    settings = load_settings(ctx)
    data = _read(settings, covered)
    if output is not None or not recipients:
        _write(_rendered(data, fmt, as_json), output)
    if recipients:
        _mail(settings, data, recipients, sendmail)
        click.echo(f"mailed the {kind} report for {data['first']}"
                   + (f" to {data['last']}" if data["last"] != data["first"] else "")
                   + f" to {', '.join(recipients)}")


def _recipients(addresses: tuple[str, ...]) -> list[str]:
    from .report_mail import check_address

    try:
        return list(dict.fromkeys(check_address(a) for a in addresses))
    except ValueError as err:
        raise Fatal(f"--mail: {err}") from None


def _read(settings, covered) -> dict:
    from ..hostname import host_name
    from .report import build
    from .store import StatsError, open_store

    store = open_store(settings)
    try:
        return build(store, covered, host_name(settings.server.host_name))
    except StatsError as err:
        raise Fatal(f"cannot read the statistics store: {err}") from None
    finally:
        store.close()


def _chart(data: dict) -> bytes | None:
    """The chart's PNG; none for a period without mail."""
    if not data["totals"]["messages"]:
        return None
    from .report_chart import ChartError, chart_png

    try:
        return chart_png(data["series"], data["by"])
    except ChartError as err:
        raise Fatal(str(err)) from None


def _rendered(data: dict, fmt: str, as_json: bool) -> str:
    if as_json:
        return jsonout.dumps(data) + "\n"
    if fmt == "html":
        from .report_html import report_html

        png = _chart(data)
        source = None if png is None else \
            "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        return report_html(data, source)
    from .report_text import report_text

    return report_text(data)


def _write(text: str, output: str | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    from ..durable import write_atomic

    try:
        write_atomic(output, text.encode("utf-8"), 0o644)
    except OSError as err:
        raise Fatal(f"{output}: {err.strerror or err}") from None


def _mail(settings, data: dict, recipients: list[str], sendmail: str) -> None:
    from ..hostname import host_name
    from .report import headline, title
    from .report_html import report_html
    from .report_mail import MailError, build_message, chart_cid, send
    from .report_text import report_text

    sender = f"lmsav@{host_name(settings.server.host_name)}"
    png = _chart(data)
    cid = chart_cid(sender) if png is not None else None
    message = build_message(
        sender=sender, recipients=recipients, subject=f"{title(data)}: {headline(data)}",
        text=report_text(data), html=report_html(data, f"cid:{cid}" if cid else None),
        png=png, chart_cid=cid)
    try:
        send(message, sendmail)
    except MailError as err:
        raise Fatal(f"cannot mail the report: {err}") from None
