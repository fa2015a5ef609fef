"""Spool: depth per state, the entries (held first) with their sender, recipients, size, age
and reason, one entry's headers; release, requeue, hold and delete through the operations of
`lmsav ctl queue` (lmsav.spool.queue_ops), which never touch an entry a worker holds."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ...spool import listing
from ...spool.nqueue import ID_RE, Spool, SpoolError
from ...spool.queue_ops import QueueOps
from ..audit import audit
from ..auth import admin_required
from ..context import web

bp = Blueprint("spool", __name__, url_prefix="/spool")
STATE_FILTERS = {"": listing.PAGE_ORDER, "hold": ("hold",), "new": ("new",), "work": ("work",)}
MAX_REASON = 200


def _spool_dir():
    return web().settings.spool_dir()


def _page_number(text: str | None) -> int:
    return int(text) if text and text.isdigit() and len(text) < 9 else 1


@bp.route("/")
def index():
    state = request.args.get("state", "")
    if state not in STATE_FILTERS:
        flash(f"unknown state {state[:40]!r}: showing every entry", "error")
        state = ""
    try:
        page = listing.read_page(_spool_dir(), _page_number(request.args.get("page")),
                                 states=STATE_FILTERS[state])
    except SpoolError as err:
        flash(str(err), "error")
        page = listing.SpoolPage({"new": 0, "work": 0, "hold": 0}, [], 1, 1, 0,
                                 STATE_FILTERS[state])
    return render_template("spool/index.html", page=page, state=state,
                           spool_dir=_spool_dir(), actions=_actions_of)


def _actions_of(row: listing.EntryRow) -> list[str]:
    """What makes sense for an entry in its state (the operations refuse the rest anyway)."""
    if row.state == "hold":
        return ["release", "delete"]
    if row.state == "new":
        return ["requeue", "hold", "delete"] if row.not_before else ["hold", "delete"]
    return ["requeue", "hold", "delete"]  # work/: refused while a watcher holds it


@bp.route("/<entry_id>")
def entry(entry_id: str):
    if not ID_RE.match(entry_id):
        flash(f"invalid spool entry id {entry_id[:60]!r}", "error")
        return redirect(url_for("spool.index"))
    try:
        detail = listing.read_entry(_spool_dir(), entry_id)
    except SpoolError as err:
        flash(str(err), "error")
        return redirect(url_for("spool.index"))
    return render_template("spool/entry.html", detail=detail, row=detail.row,
                           actions=_actions_of(detail.row),
                           confirm_delete=request.args.get("confirm") == "delete")


@bp.route("/<entry_id>/<action>", methods=["POST"])
@admin_required
def act(entry_id: str, action: str):
    if action not in listing.ACTIONS:
        abort(404)
    back = _back()
    if not ID_RE.match(entry_id):
        audit(f"spool.{action}", entry_id[:100], "refused", reason="invalid entry id")
        flash(f"invalid spool entry id {entry_id[:60]!r}", "error")
        return redirect(back)
    if action == "delete" and request.form.get("confirm") != "yes":
        # As `lmsav ctl queue delete` asks first: the entry's page asks, then posts this.
        flash("confirm the deletion: the mail of a deleted entry is not delivered", "error")
        return redirect(url_for("spool.entry", entry_id=entry_id, confirm="delete"))
    reason = " ".join(request.form.get("reason", "").split())[:MAX_REASON]
    try:
        done = listing.apply(QueueOps(Spool(_spool_dir())), action, entry_id, reason or None)
    except SpoolError as err:
        audit(f"spool.{action}", entry_id, "refused", reason=str(err))
        flash(str(err), "error")
        return redirect(back)
    audit(f"spool.{action}", entry_id, result=done)
    flash(f"{entry_id}: {done}", "ok")
    if action == "delete" and request.form.get("from") == "entry":
        return redirect(url_for("spool.index"))
    return redirect(back)


def _back() -> str:
    """The page the form came from: the list with its state and page, or the entry."""
    if request.form.get("from") == "entry":
        entry_id = request.view_args.get("entry_id", "")
        if ID_RE.match(entry_id):
            return url_for("spool.entry", entry_id=entry_id)
    state = request.form.get("state", "")
    args = {"state": state} if state in STATE_FILTERS and state else {}
    page = _page_number(request.form.get("page"))
    if page > 1:
        args["page"] = page
    return url_for("spool.index", **args)
