"""Dashboard, the console's home page: the health of every component (the snapshot of
``lmsav ctl status``), the signature databases and their age, mail counters for the last hour
and day, and charts of messages and threats per hour over the last 24 hours."""

from __future__ import annotations

import contextlib
import logging
import time

from flask import Blueprint, flash, render_template
from markupsafe import Markup

from ... import status as status_mod
from ...quarantine.index import IndexUnavailable, store_roots
from ...quarantine.kept_row import FILE, MAIL, QUARANTINE
from ...stats import queries
from ...stats.backend import StoreUnavailable
from ...stats.schema import HOUR
from ..charts import bar_chart, threats_per_row
from ..context import web
from .mail import stats_store
from .stores import fresh_index

bp = Blueprint("dashboard", __name__, url_prefix="/")
log = logging.getLogger("lmsav.web")

PERIODS = (("hour", "Last hour", HOUR), ("day", "Last 24 hours", 24 * HOUR))
COUNTERS = (("messages", "Messages"), ("infected", "Infected"), ("suspicious", "Suspicious"),
            ("protected", "Protected"), ("corrupted", "Corrupted"), ("errors", "Errors"),
            ("filtered", "Filtered"))


def _health() -> tuple[dict | None, list[str]]:
    """The snapshot and its problems; the daemon is asked with a timeout (status.py), so a
    daemon down or hung costs at most a second or so, never the page."""
    settings = web().settings
    try:
        snapshot = status_mod.collect(settings, stores=_indexed_stores)
        return snapshot, status_mod.problems(snapshot, settings)
    except Exception as err:  # noqa: BLE001 - one component's failure must not take the page
        log.warning("dashboard: cannot take the status snapshot: %s", err)
        flash(f"cannot take the status of the components: {err}", "error")
        return None, []


def _indexed_stores() -> dict:
    """The quarantine and backup parts of the snapshot from the stores' index (the one the
    Quarantine & backup page keeps current): counting 100,000 entries on disk takes seconds."""
    try:
        index, _syncer = fresh_index()
        usage = index.usage()
    except IndexUnavailable as err:
        log.warning("dashboard: the stores' index is unavailable (%s): counting on disk", err)
        return status_mod.stores_usage(web().state_dir)
    roots = store_roots(web().state_dir)

    def part(kind: str) -> dict:
        entries, size = usage[kind]
        return {"directory": str(roots[kind]), "entries": entries, "bytes": size}

    return {"quarantine": part(QUARANTINE),
            "backup": {"messages": part(MAIL), "files": part(FILE)}}


def _mail(now: float) -> tuple[dict, list[dict]]:
    """Counters per period and the last 24 hours per hour; empty when the store cannot be
    read (flashed)."""
    store = stats_store()
    try:
        # The newest messages get their search keys here too: the Mail page stays quick.
        with contextlib.suppress(StoreUnavailable):
            store.index_keys(queries.KEYS_PER_SEARCH)
        counters = {name: store.totals(now - seconds, now + 1)
                    for name, _label, seconds in PERIODS}
        hours = store.series(now - 24 * HOUR + 1, now + 1, "hour")
    except StoreUnavailable as err:
        flash(f"cannot read the statistics store: {err}", "error")
        return {}, []
    return counters, threats_per_row(hours[-24:])


@bp.route("/")
def index():
    now = time.time()
    snapshot, problems = _health()
    counters, hours = _mail(now)
    chart = Markup(bar_chart(hours, [("messages", "Messages"), ("threats", "Threats")],
                             title="Messages and threats per hour, last 24 hours",
                             element_id="chart-hourly"))
    threats_chart = Markup(bar_chart(hours, [("threats", "Threats")],
                                     title="Threats per hour, last 24 hours",
                                     element_id="chart-threats"))
    return render_template("dashboard/index.html", s=snapshot, problems=problems,
                           counters=counters, periods=PERIODS, labels=COUNTERS, chart=chart,
                           threats_chart=threats_chart, now=now)
