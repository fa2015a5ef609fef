"""Updates: the database versions, the last check and success, the sources and feeds; an
update run now and a rollback to a kept version, each in a child process (`lmsav update`)."""

from __future__ import annotations

from flask import (
    Blueprint,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from ...cron import console as runs_mod
from ...update import console
from .. import runs as running
from ..audit import audit
from ..auth import admin_required, current_user
from ..context import web

bp = Blueprint("updates", __name__, url_prefix="/updates")
RUN_KEY = "update"  # an update and a rollback share it: never both at once from the console
REFRESH_SECONDS = 3  # the page reloads itself this often while a run is in progress


def _lmsav() -> list[str]:
    return runs_mod.lmsav_argv(running.place(), profile=web().profile)


@bp.route("/")
def index():
    context = web()
    settings = context.settings
    place = running.place()
    report = console.status_report(settings, place.config_file, place.config_explicit)
    run = running.runs().get(RUN_KEY)
    if run is not None:  # the outcome object is shown in words; its warnings stay
        run.output = [line for line in run.output if not line.startswith("{")]
    response = make_response(render_template(
        "updates/index.html", report=report, run=run,
        sources=console.sources(settings), feeds=console.feeds(settings),
        update=settings.update, proxy=console.without_password(settings.update.proxy)))
    if run is not None and run.running:
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


@bp.route("/run", methods=["POST"])
@admin_required
def run_now():
    return _start(console.update_command(_lmsav()), "lmsav update", "updates.run", "update")


@bp.route("/rollback", methods=["POST"])
@admin_required
def rollback():
    label = request.form.get("version", "").strip()
    try:
        console.kept_version(web().settings, label)
    except console.ConsoleError as err:
        audit("updates.rollback", label[:200], "refused", reason=str(err))
        flash(str(err), "error")
        return redirect(url_for("updates.index"))
    return _start(console.rollback_command(_lmsav(), label), f"lmsav update --rollback {label}",
                  "updates.rollback", label)


def _start(argv: list[str], what: str, action: str, target: str):
    user = current_user()
    try:
        running.runs().start(RUN_KEY, argv, what=what, by=user.name if user else "",
                      summary=console.update_summary)
    except runs_mod.AlreadyRunning as err:
        audit(action, target, "refused", reason=str(err))
        flash(str(err), "error")
    except OSError as err:
        audit(action, target, "failed", reason=str(err))
        flash(f"cannot start {what}: {err.strerror or err}", "error")
    else:
        audit(action, target)
        flash(f"started: {what}; this page shows its result when it ends", "ok")
    return redirect(url_for("updates.index"))
