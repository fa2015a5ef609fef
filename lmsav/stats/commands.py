"""``lmsav stats`` (totals and breakdowns over a time range) and ``lmsav stats messages``
(per-message records), read from the statistics store the configuration names."""

from __future__ import annotations

import time

import click

from .. import jsonout
from ..clitools import Fatal, load_settings
from .backend import StoreUnavailable as StatsError
from .timespec import parse_time

DEFAULT_SINCE = "24h"

INDEX_BATCH = 5000  # messages per transaction: mail recording waits at most one batch


def _moment(value: str | None, option: str, now: float) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value, now)
    except ValueError as err:
        raise Fatal(f"{option}: {err}") from None


def _store(ctx):
    from .store import open_store

    return open_store(load_settings(ctx))


@click.group("stats", invoke_without_command=True)
@click.option("--since", metavar="WHEN", default=DEFAULT_SINCE, show_default=True,
              help="Start: an ISO date or time (UTC unless it names its zone) or a time back "
                   "from now (90m, 24h, 7d, 2w).")
@click.option("--until", metavar="WHEN", default="now", show_default=True,
              help="End, in the same forms.")
@click.option("--by", type=click.Choice(["hour", "day"]),
              help="Also list the totals hour by hour or day by day.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on one line.")
@click.pass_context
def stats_group(ctx, since, until, by, as_json):
    """Mail and scan statistics: messages, statuses, groups, actions, threats, senders.

    Counted over the whole store (every node sharing it). Without a command: the totals from
    --since to --until."""
    if ctx.invoked_subcommand is not None:
        return
    now = time.time()
    start, end = _moment(since, "--since", now), _moment(until, "--until", now)
    if start >= end:
        raise Fatal("--since must be before --until")
    store = _store(ctx)
    try:
        data = store.summary(start, end, by)
    except StatsError as err:
        raise Fatal(f"cannot read the statistics store: {err}") from None
    finally:
        store.close()
    data["store"] = store.description
    if by:
        data["by"] = by
    if as_json:
        jsonout.emit_object(data)
        return
    from .render import summary_lines

    for line in summary_lines(data, store.description):
        click.echo(line)


@stats_group.command("messages")
@click.option("--sender", metavar="ADDR", help="Only from this sender; * and ? match any text.")
@click.option("--rcpt", metavar="ADDR", help="Only to this recipient; * and ? match any text.")
@click.option("--status", type=click.Choice(["clean", "infected", "suspicious", "protected",
                                             "corrupted", "error", "filtered", "unscanned"]),
              help="Only messages of this status.")
@click.option("--threat", metavar="NAME", help="Only messages with this threat; * and ? match.")
@click.option("--since", metavar="WHEN", help="Only from then on (ISO date or time, or 24h, 7d).")
@click.option("--until", metavar="WHEN", help="Only before then.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="At most this many messages.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per message, a line "
                                                       "each.")
@click.pass_context
def stats_messages(ctx, sender, rcpt, status, threat, since, until, limit, as_json):
    """Per-message records, newest first (kept 90 days)."""
    now = time.time()
    start, end = _moment(since, "--since", now), _moment(until, "--until", now)
    store = _store(ctx)
    try:
        records = store.messages(since=start, until=end, sender=sender, rcpt=rcpt,
                                 status=status, threat=threat, limit=limit)
    except StatsError as err:
        raise Fatal(f"cannot read the statistics store: {err}") from None
    finally:
        store.close()
    if as_json:
        jsonout.emit_records(records)
        return
    from .render import messages_lines

    for line in messages_lines(records):
        click.echo(line)


@stats_group.command("index")
@click.option("--json", "as_json", is_flag=True,
              help='Print one JSON object: {"indexed": N}.')
@click.pass_context
def stats_index(ctx, as_json):
    """Give every message its search keys (sender, recipients, their domains) now.

    The web console does this while it runs; without it, a large backlog makes searches by
    address read the messages one by one. Safe to run from cron while mail flows."""
    store = _store(ctx)
    total = 0
    try:
        while True:
            done = store.index_keys(INDEX_BATCH)
            total += done
            if done < INDEX_BATCH:
                break
    except StatsError as err:
        raise Fatal(f"cannot index the statistics store: {err}") from None
    finally:
        store.close()
    if as_json:
        jsonout.emit_object({"indexed": total})
    else:
        click.echo(f"{total} messages given their search keys")
