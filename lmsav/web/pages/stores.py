"""Quarantine and backup: the kept originals of the three stores in one list (from the stores
index, newest first, filtered, keyset pages), one entry's findings and headers, and the admin's
actions: download the original, restore a file, release and deliver a message, delete."""

from __future__ import annotations

import os
import threading
import time

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from ...mail.backup import BackupError
from ...mail.release import ReleaseError, release
from ...quarantine.entry_detail import (
    NoSuchEntry,
    check,
    open_original,
    read_detail,
    stores_of,
)
from ...quarantine.index import (
    Filters,
    IndexUnavailable,
    StoresIndex,
    cursor_of,
    parse_cursor,
    store_roots,
)
from ...quarantine.index_sync import IndexSyncer
from ...quarantine.kept_row import FILE, KINDS, MAIL, QUARANTINE
from ...quarantine.store import StoreError
from ...spool.reinject import from_setting
from ..audit import audit
from ..auth import admin_required
from ..context import web

bp = Blueprint("stores", __name__, url_prefix="/stores")

INDEX_FILE = "stores.sqlite"
SYNC_INTERVAL = 3.0
FRESH_WAIT = 0.1  # how long a list waits for the index to catch up with the stores
PAGE_SIZE = 50
MAX_TEXT = 200
KIND_LABELS = {QUARANTINE: "quarantine", FILE: "file backup", MAIL: "mail backup"}
STATUSES = ("infected", "suspicious", "protected", "corrupted", "error", "filtered", "clean",
            "damaged")
_EXTENSION = "lmsav.stores"
_lock = threading.Lock()


# -- the index of this console --------------------------------------------------------------------

def _syncer() -> IndexSyncer:
    """This application's index of the stores of its state directory, its background thread
    started on first use (tests sync in the request instead: no thread outlives them)."""
    app = current_app
    state_dir = web().state_dir
    with _lock:
        syncer = app.extensions.get(_EXTENSION)
        if syncer is None or syncer.index.roots != store_roots(state_dir):
            if syncer is not None:
                syncer.stop(0)
            syncer = IndexSyncer(StoresIndex(web().web_dir / INDEX_FILE, state_dir),
                                 SYNC_INTERVAL)
            if not app.testing:
                syncer.start()
            app.extensions[_EXTENSION] = syncer
    return syncer


def start_indexing() -> None:
    """Start keeping the index of the stores current (in an application context)."""
    _syncer()


def fresh_index() -> tuple[StoresIndex, IndexSyncer]:
    syncer = _syncer()
    if current_app.testing:
        syncer.sync_now()
    else:
        syncer.fresh(FRESH_WAIT)
    return syncer.index, syncer


def _forget(kind: str, entry_id: str) -> None:
    try:
        _syncer().index.forget(kind, entry_id)
    except IndexUnavailable:
        pass  # the next round drops it anyway


# -- the list -------------------------------------------------------------------------------------

def _filters() -> tuple[Filters, dict]:
    """The list's filters from the query; what cannot be understood is flashed and left out."""
    args = request.args
    form = {"kind": args.get("kind", ""), "status": args.get("status", ""),
            "text": " ".join(args.get("text", "").split())[:MAX_TEXT],
            "threat": " ".join(args.get("threat", "").split())[:MAX_TEXT],
            "since": args.get("since", ""), "until": args.get("until", "")}
    if form["kind"] not in ("", *KINDS):
        flash(f"unknown kind {form['kind'][:40]!r}: showing every kind", "error")
        form["kind"] = ""
    if form["status"] not in ("", *STATUSES):
        flash(f"unknown status {form['status'][:40]!r}: showing every status", "error")
        form["status"] = ""
    since = _day(form, "since")
    until = _day(form, "until")
    return Filters(kind=form["kind"] or None, status=form["status"] or None,
                   text=form["text"] or None, threat=form["threat"] or None, since=since,
                   until=until + 86400 if until is not None else None), form


def _day(form: dict, key: str) -> float | None:
    """Local midnight of a YYYY-MM-DD date (the day of the date picker)."""
    text = form[key]
    if not text:
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    except (ValueError, OverflowError):
        flash(f"invalid date {text[:40]!r}: expected YYYY-MM-DD", "error")
        form[key] = ""
        return None


@bp.route("/")
def index():
    filters, form = _filters()
    before, after = request.args.get("before", ""), request.args.get("after", "")
    query = {k: v for k, v in form.items() if v}
    rows, older_url, newer_url, total, indexing = [], None, None, 0, False
    try:
        for cursor in (before, after):
            if cursor:
                parse_cursor(cursor)
        idx, syncer = fresh_index()
        if syncer.error:
            flash(syncer.error, "error")
        indexing = not syncer.ready.is_set()
        if after and not before:
            rows, newer = idx.search(filters, after=after, limit=PAGE_SIZE)
            if newer is None:  # back at the top: the first page, whole
                rows, older = idx.search(filters, limit=PAGE_SIZE)
            else:
                older = cursor_of(rows[-1])
                newer_url = url_for("stores.index", **query, after=newer)
        else:
            rows, older = idx.search(filters, before=before or None, limit=PAGE_SIZE)
            if before:  # there is a way back: to the rows just newer, or to the top
                newer_url = url_for("stores.index", **query,
                                    **({"after": cursor_of(rows[0])} if rows else {}))
        if older:
            older_url = url_for("stores.index", **query, before=older)
        total = idx.count(filters)
    except ValueError as err:
        flash(f"{err}: showing the newest entries", "error")
        return redirect(url_for("stores.index", **query))
    except IndexUnavailable as err:
        flash(str(err), "error")
    return render_template(
        "stores/index.html", rows=rows, total=total, form=form, kinds=KIND_LABELS,
        statuses=STATUSES, indexing=indexing, older_url=older_url, newer_url=newer_url)


# -- one entry ------------------------------------------------------------------------------------

@bp.route("/<kind>/<entry_id>")
def entry(kind: str, entry_id: str):
    try:
        detail = read_detail(web().state_dir, kind, entry_id)
    except NoSuchEntry:
        abort(404)
    if detail.error:
        flash(detail.error, "error")
    return render_template("stores/entry.html", d=detail, row=detail.row, record=detail.record,
                           kinds=KIND_LABELS)


@bp.route("/<kind>/<entry_id>/download")
@admin_required
def download(kind: str, entry_id: str):
    """The original as an attachment, never shown inline: it may be the threat itself."""
    try:
        original = open_original(web().state_dir, kind, entry_id)
    except NoSuchEntry:
        abort(404)
    audit("stores.download", f"{kind}/{entry_id}")
    return send_file(original, mimetype="application/octet-stream", as_attachment=True,
                     download_name=f"{entry_id}.{'eml' if kind == MAIL else 'bin'}",
                     max_age=0)


def _target(kind: str, entry_id: str, kinds=KINDS) -> str:
    """``kind/id`` once both are well formed and of ``kinds``; 404 otherwise."""
    try:
        check(kind, entry_id)
    except NoSuchEntry:
        abort(404)
    if kind not in kinds:
        abort(404)
    return f"{kind}/{entry_id}"


def _refused(action: str, target: str, message: str, back: str, outcome: str = "refused"):
    audit(f"stores.{action}", target, outcome, reason=message)
    flash(message, "error")
    return redirect(back)


@bp.route("/<kind>/<entry_id>/restore", methods=["POST"])
@admin_required
def restore(kind: str, entry_id: str):
    target = _target(kind, entry_id, (QUARANTINE, FILE))
    back = url_for("stores.entry", kind=kind, entry_id=entry_id)
    store = stores_of(web().state_dir)[kind]
    overwrite = request.form.get("overwrite") == "on"
    keep = request.form.get("keep") == "on"
    try:
        original = str(store.info(entry_id).get("original_path") or "")
        if original and not overwrite and os.path.lexists(original):
            return _refused("restore", target, f"{original} exists: tick \u201coverwrite\u201d "
                            f"to replace it", back)
        restored = store.restore(entry_id, None, overwrite)
    except StoreError as err:
        return _refused("restore", target, str(err), back, "failed")
    for warning in restored.warnings:
        flash(f"{restored.path}: {warning}", "warning")
    removed = ""
    if not keep:
        try:
            store.delete(entry_id)
            _forget(kind, entry_id)
            removed = "; the entry is removed"
        except StoreError as err:
            flash(f"restored, but the entry stays: {err}", "error")
    audit("stores.restore", target, path=restored.path, overwrite=overwrite, kept=keep,
          warnings=restored.warnings)
    flash(f"restored {entry_id} to {restored.path}{removed}", "ok")
    return redirect(url_for("stores.index") if removed else back)


@bp.route("/<kind>/<entry_id>/release", methods=["POST"])
@admin_required
def release_mail(kind: str, entry_id: str):
    target = _target(kind, entry_id, (MAIL,))
    back = url_for("stores.entry", kind=kind, entry_id=entry_id)
    chosen = request.form.getlist("to")
    if not chosen:
        return _refused("release", target, "tick at least one recipient to deliver to", back)
    settings = web().settings
    try:
        reinjector = from_setting(settings.spool.reinject, settings.host_name())
    except ValueError as err:
        return _refused("release", target, str(err), back, "failed")
    try:
        done = release(stores_of(web().state_dir)[MAIL], entry_id, reinjector, chosen)
    except ReleaseError as err:
        audit("stores.release", target, "failed", reason=str(err),
              delivered=list(err.delivered))
        flash(str(err), "error")
        return redirect(back)
    finally:
        reinjector.close()
    audit("stores.release", target, sender=done.sender, recipients=list(done.recipients),
          via=settings.spool.reinject)
    flash(f"released {entry_id}: delivered to {', '.join(done.recipients)} through "
          f"{settings.spool.reinject}", "ok")
    return redirect(back)


@bp.route("/<kind>/<entry_id>/delete", methods=["POST"])
@admin_required
def delete(kind: str, entry_id: str):
    target = _target(kind, entry_id)
    try:
        stores_of(web().state_dir)[kind].delete(entry_id)
    except (StoreError, BackupError) as err:
        return _refused("delete", target, str(err), url_for("stores.index"), "failed")
    _forget(kind, entry_id)
    audit("stores.delete", target)
    flash(f"deleted {KIND_LABELS[kind]} entry {entry_id}", "ok")
    return redirect(url_for("stores.index"))
