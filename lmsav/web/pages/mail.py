"""Mail: the per-message log of the statistics store, searched by sender, recipient, status,
threat and time, newest first in keyset pages; and one message's record."""

from __future__ import annotations

import logging
import re
import threading
import time
from datetime import datetime

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from ...stats import queries
from ...stats.backend import StoreUnavailable
from ...stats.events import STATUSES
from ...stats.timespec import parse_time
from ..context import web

bp = Blueprint("mail", __name__, url_prefix="/mail")
log = logging.getLogger("lmsav.web")

PAGE_SIZE = 50
MAX_TEXT = 320  # an address is at most 320 characters (RFC 3696)
CURSOR_RE = re.compile(r"^(\d{1,12}(?:\.\d{1,17})?):(\d{1,19})$")
_EXTENSION = "lmsav.stats"
_lock = threading.Lock()
# The search keys of new messages are given in the background, a batch at a time (the store's
# connection is shared with the requests, each batch holds it ~50 ms), so that a search
# seldom has many messages to read directly or to give keys to first.
KEYS_INTERVAL = 30.0
KEYS_BATCH = 1000


# -- the store of this console ---------------------------------------------------------------------

class KeysIndexer(threading.Thread):
    """Gives the new messages of a store their search keys every ``interval`` seconds."""

    def __init__(self, store, interval: float = KEYS_INTERVAL, batch: int = KEYS_BATCH):
        super().__init__(name="lmsav-web-keys", daemon=True)
        self.store, self.interval, self.batch = store, interval, batch
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                while self.store.index_keys(self.batch) == self.batch \
                        and not self.stopping.is_set():
                    pass
            except StoreUnavailable:
                pass  # the page says so when asked; the next round tries again
            except Exception:  # the thread must outlive one bad round
                log.exception("giving search keys to new messages failed")

    def stop(self) -> None:
        self.stopping.set()


def stats_store():
    """The statistics store the settings name, one per application (its connection is kept
    between requests; another one once the settings name another store), with its keys
    indexer (not in tests: no thread outlives them)."""
    from ...stats.store import open_store

    settings = web().settings
    key = (settings.stats.url, str(settings.paths.state_dir), settings.server.host_name)
    with _lock:
        held = current_app.extensions.get(_EXTENSION)
        if held is not None and held[0] == key:
            return held[1]
        if held is not None:
            _key, old, indexer = held
            if indexer is not None:
                indexer.stop()
            old.close()
        store = open_store(settings)
        indexer = None
        if not current_app.testing:
            indexer = KeysIndexer(store)
            indexer.start()
        current_app.extensions[_EXTENSION] = (key, store, indexer)
        return store


# -- the search form -------------------------------------------------------------------------------

def _moment(text: str, now: float) -> float:
    """A time of the form: 24h, 7d, now, or a date or date and time in the server's zone
    (as the browser's date picker gives it)."""
    text = text.strip()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return parse_time(text, now)  # 24h, 7d, now; or its one-line reason
    return moment.timestamp()  # without a zone: the server's


def _address(text: str) -> str:
    """An address, ``@domain`` (a whole domain) or a pattern with * and ?."""
    text = text.strip()[:MAX_TEXT]
    return "*" + text if text.startswith("@") and len(text) > 1 else text


def search_form() -> tuple[dict, dict]:
    """(filters for ``Store.search``, the form as shown); what cannot be understood is
    flashed and left out."""
    args = request.args
    form = {"sender": args.get("sender", "").strip()[:MAX_TEXT],
            "rcpt": args.get("rcpt", "").strip()[:MAX_TEXT],
            "status": args.get("status", "").strip(),
            "threat": " ".join(args.get("threat", "").split())[:MAX_TEXT],
            "since": args.get("since", "").strip()[:40],
            "until": args.get("until", "").strip()[:40]}
    filters: dict = {}
    if form["sender"]:
        filters["sender"] = _address(form["sender"])
    if form["rcpt"]:
        filters["rcpt"] = _address(form["rcpt"])
    if form["threat"]:
        filters["threat"] = form["threat"]
    if form["status"]:
        if form["status"] in STATUSES:
            filters["status"] = form["status"]
        else:
            flash(f"unknown status {form['status'][:40]!r}: showing every status", "error")
            form["status"] = ""
    now = time.time()
    for key, label in (("since", "from"), ("until", "to")):
        if not form[key]:
            continue
        try:
            filters[key] = _moment(form[key], now)
        except (ValueError, OverflowError, OSError) as err:
            flash(f"{label}: {err}", "error")
            form[key] = ""
    if filters.get("since") is not None and filters.get("until") is not None \
            and filters["since"] >= filters["until"]:
        flash("from must be before to: showing every time", "error")
        del filters["since"], filters["until"]
        form["since"] = form["until"] = ""
    return filters, form


def parse_cursor(text: str) -> tuple[float, int]:
    """``time:id`` of the last message of a page; ValueError when it is not one."""
    match = CURSOR_RE.match(text)
    if not match:
        raise ValueError(f"invalid page position {text[:40]!r}")
    return float(match.group(1)), int(match.group(2))


def cursor_text(cursor: tuple[float, int]) -> str:
    return f"{cursor[0]!r}:{cursor[1]}"  # the time exactly: the next page starts right after


# -- the pages -------------------------------------------------------------------------------------

@bp.route("/")
def index():
    filters, form = search_form()
    query = {k: v for k, v in form.items() if v}
    before_text = request.args.get("before", "")
    before = None
    if before_text:
        try:
            before = parse_cursor(before_text)
        except ValueError as err:
            flash(f"{err}: showing the newest messages", "error")
            return redirect(url_for("mail.index", **query))
    page, error = None, None
    started = time.perf_counter()
    try:
        page = stats_store().search(before=before, limit=PAGE_SIZE,
                                    budget=queries.SEARCH_BUDGET, **filters)
    except StoreUnavailable as err:
        error = f"cannot read the statistics store: {err}"
        flash(error, "error")
    elapsed_ms = (time.perf_counter() - started) * 1000
    older_url = None
    if page is not None and page.next is not None:
        older_url = url_for("mail.index", **query, before=cursor_text(page.next))
    return render_template(
        "mail/index.html", page=page, form=form, statuses=STATUSES, older_url=older_url,
        newest_url=url_for("mail.index", **query) if before else None,
        searched=bool(filters), budget=queries.SEARCH_BUDGET, elapsed_ms=elapsed_ms,
        error=error)


@bp.route("/<int:message_id>")
def message(message_id: int):
    if message_id > 2**63 - 1:
        abort(404)
    try:
        record = stats_store().message(message_id)
    except StoreUnavailable as err:
        flash(f"cannot read the statistics store: {err}", "error")
        return redirect(url_for("mail.index"))
    if record is None:
        abort(404)
    return render_template("mail/message.html", r=record)
