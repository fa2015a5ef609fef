"""Schedules: the scheduled sweeps, updates and reports with their next runs and last results;
adding a sweep or an update schedule with the checks of `lmsav cron add`, removing one, and
running one now in a child process (`lmsav cron run NAME`)."""

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

from ...cron import console
from ...cron.schedules import NAME_RE
from .. import runs as running
from ..audit import audit
from ..auth import admin_required, current_user
from ..context import web

bp = Blueprint("schedules", __name__, url_prefix="/schedules")
REFRESH_SECONDS = 3  # the page reloads itself this often while a run is in progress
FORM_KINDS = ("sweep", "update")  # a report schedule is added with `lmsav cron add report`


@bp.route("/")
def index():
    place = running.place()
    rows, broken = console.list_schedules(place)
    runs = {row.schedule.name: running.runs().get(console.schedule_key(row.schedule.name))
            for row in rows}
    response = make_response(render_template(
        "schedules/index.html", rows=rows, broken=broken, runs=runs,
        directory=place.store.directory))
    if any(run is not None and run.running for run in runs.values()):
        response.headers["Refresh"] = str(REFRESH_SECONDS)
    return response


@bp.route("/add", methods=["POST"])
@admin_required
def add():
    form = request.form
    kind = form.get("kind", "")
    name = form.get("name", "").strip()
    when = form.get("schedule", "").strip()
    systemd = form.get("systemd") == "on"
    try:
        if kind == "sweep":
            schedule = console.sweep_schedule(
                name, when, form.get("paths", "").splitlines(), form.get("scan_options", ""),
                incremental=form.get("incremental") == "on", systemd=systemd)
        elif kind == "update":
            schedule = console.update_schedule(name, when, systemd=systemd)
        else:
            raise console.ConsoleError(f"kind {kind!r}: expected {' or '.join(FORM_KINDS)}")
        changed = console.add(running.place(), schedule, replace=form.get("replace") == "on")
    except console.ConsoleError as err:
        audit("schedules.add", name[:64], "refused", kind=kind[:16], reason=str(err))
        flash(str(err), "error")
        return redirect(url_for("schedules.index"))
    audit("schedules.add", name, kind=kind, schedule=schedule.schedule,
          paths=list(schedule.paths), scan_options=list(schedule.scan_options),
          replaced=changed.replaced)
    flash(f"{'replaced' if changed.replaced else 'added'} {kind} {name}: {changed.path}", "ok")
    for warning in console.missing_paths(schedule):
        flash(f"warning: {warning}", "warning")
    _flash_installed(changed)
    return redirect(_at(name))


@bp.route("/<name>/remove", methods=["POST"])
@admin_required
def remove(name: str):
    try:
        changed = console.remove(running.place(), name)
    except console.ConsoleError as err:
        audit("schedules.remove", name[:64], "refused", reason=str(err))
        flash(str(err), "error")
        return redirect(url_for("schedules.index"))
    audit("schedules.remove", name)
    flash(f"removed {name}", "ok")
    _flash_installed(changed)
    return redirect(url_for("schedules.index"))


@bp.route("/<name>/run", methods=["POST"])
@admin_required
def run_now(name: str):
    user = current_user()
    try:
        argv = console.run_argv(running.place(), name, profile=web().profile)
        running.runs().start(console.schedule_key(name), argv, what=f"lmsav cron run {name}",
                      by=user.name if user else "", summary=console.cron_run_summary)
    except (console.ConsoleError, console.AlreadyRunning) as err:
        audit("schedules.run", name[:64], "refused", reason=str(err))
        flash(str(err), "error")
    except OSError as err:
        audit("schedules.run", name, "failed", reason=str(err))
        flash(f"cannot start lmsav cron run {name}: {err.strerror or err}", "error")
    else:
        audit("schedules.run", name)
        flash(f"started: lmsav cron run {name}; this page shows its result when it ends", "ok")
    return redirect(_at(name))


def _at(name: str) -> str:
    """The list, at the row of a schedule (a name that is not one goes nowhere near the URL)."""
    anchor = f"#schedule-{name}" if NAME_RE.fullmatch(name) else ""
    return url_for("schedules.index") + anchor


def _flash_installed(changed: console.Changed) -> None:
    for message in changed.messages:
        flash(message, "ok")
    if changed.systemctl:
        flash(f"to apply this to systemd, run: {changed.systemctl}", "warning")
