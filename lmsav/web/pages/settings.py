"""Configuration: every effective value with where it came from (passwords masked, as
`lmsav config show --sources` shows them); a safe subset edited and the profile switched in
the configuration file (lmsav.web.config_edit), then the daemon and the spool watcher told to
reload."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for

from ... import config as config_mod
from ... import paths
from ..audit import audit
from ..auth import admin_required
from ..config_edit import (
    SAFE_KEYS,
    EditError,
    apply_changes,
    file_digest,
    reload_components,
    rows,
    switch_profile,
)
from ..context import web

bp = Blueprint("settings", __name__, url_prefix="/config")
FORM_FIELDS = ("csrf_token", "digest", "unset")  # the form's own fields, not settings


def _config_file():
    return web().config_file or paths.config_file_from(None)


@bp.route("/")
def index():
    context = web()
    settings = context.settings
    path = _config_file()
    try:
        digest = file_digest(path)
    except EditError as err:
        flash(str(err), "error")
        digest = ""
    table = rows(settings)
    sections = {}
    for row in table:
        sections.setdefault(row.section, []).append(row)
    return render_template(
        "settings/index.html", sections=sections, settings=settings, config_file=path,
        exists=path.exists(), digest=digest, profiles=config_mod.profile_names(),
        profile_source=settings.sources.get("profile", config_mod.BUILT_IN),
        fixed_profile=context.profile, safe_keys=SAFE_KEYS)


@bp.route("/save", methods=["POST"])
@admin_required
def save():
    path = _config_file()
    submitted = {name: value for name, value in request.form.items() if name not in FORM_FIELDS}
    unset = tuple(request.form.getlist("unset"))
    try:
        result = apply_changes(path, web().settings, submitted, unset,
                               expected_digest=request.form.get("digest", ""))
    except EditError as err:
        audit("settings.save", str(path), "refused", reason=str(err),
              keys=sorted([*submitted, *unset])[:50])
        flash(str(err), "error")
        return redirect(url_for("settings.index"))
    if not result.changed:
        flash("nothing changed", "ok")
        return redirect(url_for("settings.index"))
    told = _reload()
    audit("settings.save", str(path), changed=list(result.changed),
          values={name: str(request.form.get(name, "")) for name in result.changed
                  if name in submitted},
          unset=[name for name in result.changed if name in unset], reloaded=told)
    flash(_saved_message(result, told), "ok")
    return redirect(url_for("settings.index"))


@bp.route("/profile", methods=["POST"])
@admin_required
def profile():
    path = _config_file()
    name = request.form.get("profile", "")
    try:
        result = switch_profile(path, name, expected_digest=request.form.get("digest", ""))
    except EditError as err:
        audit("settings.profile", name[:80], "refused", reason=str(err))
        flash(str(err), "error")
        return redirect(url_for("settings.index"))
    if not result.changed:
        flash(f"the profile already is {name}", "ok")
        return redirect(url_for("settings.index"))
    told = _reload()
    audit("settings.profile", name, file=str(path), reloaded=told)
    flash(_saved_message(result, told), "ok")
    return redirect(url_for("settings.index"))


def _reload() -> dict[str, str]:
    """The console's own settings, then the daemon and the spool watcher."""
    context = web()
    told = {}
    try:
        settings = context.reload_settings()
        told["console"] = "reloaded"
    except config_mod.ConfigError as err:  # validated before writing: another change came in
        settings = context.settings
        told["console"] = f"kept its settings: {err}"
    told.update(reload_components(settings))
    return told


def _saved_message(result, told: dict[str, str]) -> str:
    changed = ", ".join(result.changed)
    text = f"saved in {result.path}: {changed}"
    if not result.comments_kept:
        text += " (the file was rewritten whole: its comments are gone)"
    return text + "; " + "; ".join(f"{who}: {what}" for who, what in told.items())
