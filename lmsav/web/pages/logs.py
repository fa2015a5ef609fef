"""Logs: the newest lines of lmsav's log files (read from their end within a byte budget) or
of the journal, filtered by component, level and text (lmsav.web.logread)."""

from __future__ import annotations

from flask import Blueprint, flash, render_template, request

from .. import logread
from ..context import web

bp = Blueprint("logs", __name__, url_prefix="/logs")
LINE_CHOICES = (50, 200, 500, 1000)
DEFAULT_LINES = 200
MAX_TEXT = 200


@bp.route("/")
def index():
    context = web()
    settings = context.settings
    found = logread.sources(settings, context.state_dir)
    by_key = {source.key: source for source in found}
    key = request.args.get("source", "")
    if key and key not in by_key:
        flash(f"unknown log {key[:40]!r}: choose {', '.join(by_key)}", "error")
        key = ""
    source = by_key.get(key) or _first_written(found)
    try:
        lines = int(request.args.get("lines", DEFAULT_LINES))
    except ValueError:
        lines = DEFAULT_LINES
    lines = lines if lines in LINE_CHOICES else DEFAULT_LINES
    try:
        flt = logread.LogFilter(request.args.get("component", ""),
                                request.args.get("level", ""),
                                request.args.get("q", "")[:MAX_TEXT])
    except ValueError as err:
        flash(str(err), "error")
        flt = logread.LogFilter(text=request.args.get("q", "")[:MAX_TEXT])
    tail = logread.read(source, lines, flt)
    return render_template(
        "logs/index.html", sources=found, source=source, tail=tail, flt=flt, lines=lines,
        line_choices=LINE_CHOICES, components=logread.COMPONENTS, levels=logread.LEVELS,
        destination=logread.destination_note(settings),
        journal_missing=settings.log.destination in ("syslog", "journald")
        and "journal" not in by_key)


def _first_written(found: list[logread.LogSource]) -> logread.LogSource:
    """The log shown when none is asked for: the first file that exists, else the journal."""
    for source in found:
        if source.path is None or source.path.exists():
            return source
    return found[0]
