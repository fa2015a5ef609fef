"""Groups: the recipient groups of groups.d, listed as `lmsav groups list` lists them; a group's
values, edited with the loader's own checks, written atomically; then the daemon and the spool
watcher are told to reload."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from ... import paths
from ...config import ConfigError
from ...mail import group_files as gf
from ...mail.groups import DEFAULT_GROUP, groups_dir, load_groups, summary_rows
from ..audit import audit
from ..auth import admin_required, current_user
from ..config_edit import reload_components
from ..context import web

bp = Blueprint("groups", __name__, url_prefix="/groups")


def _directory() -> Path:
    context = web()
    return groups_dir(Path(context.config_file or paths.config_file_from(None)))


def _is_admin() -> bool:
    user = current_user()
    return bool(user) and user.role == "admin"


def _valid_name_or_404(name: str) -> None:
    if not gf.valid_name(name):
        abort(404)


@bp.route("/")
def index():
    directory = _directory()
    problem = ""
    try:
        groups = load_groups(directory)
    except ConfigError as err:
        problem = str(err)
        rows = [{"name": path.stem, "file": str(path), "default": path.stem == DEFAULT_GROUP}
                for path in sorted(directory.glob("*.toml")) if not path.name.startswith(".")]
    else:
        rows = summary_rows(groups)
        for row in rows:
            group = groups.get(row["name"])
            row["actions"] = {status: group.action(status)
                              for status in ("infected", "suspicious", "error", "filtered")}
    return render_template("groups/index.html", rows=rows, problem=problem,
                           directory=directory, can_edit=_is_admin())


@bp.route("/<name>")
def show(name: str):
    _valid_name_or_404(name)
    try:
        group = gf.read_group(_directory(), name)
    except gf.GroupFileError as err:
        if not (_directory() / f"{name}.toml").exists():
            abort(404)
        flash(str(err), "error")
        return redirect(url_for("groups.index"))
    return _form(group, editable=_is_admin())


@bp.route("/<name>", methods=["POST"])
@admin_required
def save(name: str):
    directory = _directory()
    try:
        group = gf.read_group(directory, name)
    except gf.GroupFileError as err:
        # a bad name or no such group: nothing to show a form for
        audit("groups.save", name[:200], "refused", errors=err.errors)
        if gf.valid_name(name) and (directory / f"{name}.toml").exists():
            flash("; ".join(err.errors.values()), "error")
            return redirect(url_for("groups.index"), code=303)
        abort(404)
    fields, errors = gf.fields_from_form(group, request.form)
    if errors:
        return _refused(name, errors, group)
    try:
        result = gf.save_group(directory, name, fields,
                               expected_digest=request.form.get("digest", group.digest))
    except gf.GroupFileError as err:
        return _refused(name, err.errors, group)
    return _saved(name, result)


@bp.route("/new")
@admin_required
def new():
    return _form(gf.new_group(_directory()), editable=True, creating=True)


@bp.route("/new", methods=["POST"])
@admin_required
def create():
    name = request.form.get("name", "").strip()
    directory = _directory()
    group = gf.new_group(directory)
    fields, errors = gf.fields_from_form(group, request.form)
    problem = gf.name_error(name) or (
        f"group {name} exists already" if gf.valid_name(name)
        and (name == DEFAULT_GROUP or (directory / f"{name}.toml").exists()) else None)
    if problem:
        errors[""] = problem
    if errors:
        return _refused(name, errors, group, creating=True)
    try:
        result = gf.save_group(directory, name, fields, create=True)
    except gf.GroupFileError as err:
        return _refused(name, err.errors, group, creating=True)
    return _saved(name, result)


@bp.route("/<name>/delete", methods=["POST"])
@admin_required
def delete(name: str):
    target = name[:200]
    try:
        result = gf.delete_group(_directory(), name,
                                 expected_digest=request.form.get("digest") or None)
    except gf.GroupFileError as err:
        message = "; ".join(err.errors.values())
        audit("groups.delete", target, "refused", reason=message)
        flash(message, "error")
        return redirect(url_for("groups.show", name=name) if gf.valid_name(name)
                        and (_directory() / f"{name}.toml").exists()
                        else url_for("groups.index"), code=303)
    told = reload_components(web().settings)
    audit("groups.delete", name, file=str(result.path), content=result.content, reload=told)
    flash(f"deleted {result.path}; {_told(told)}", "ok")
    return redirect(url_for("groups.index"), code=303)


# -- shared --------------------------------------------------------------------------------------

def _form(group: gf.EditableGroup, *, editable: bool, creating: bool = False,
          submitted=None, errors=None, name: str = "", status: int = 200):
    rows = []
    for title, keys in gf.SECTIONS:
        section = []
        for key in keys:
            if key not in group.keys:
                continue
            own = key in group.own
            if submitted is not None and (key in submitted or gf.INHERIT_PREFIX + key in
                                          submitted):
                text = submitted.get(key, group.value(key))
                inherited = gf.inheritable(key) and bool(submitted.get(gf.INHERIT_PREFIX + key))
            else:
                text = group.value(key)
                inherited = gf.inheritable(key) and not own
            section.append({
                "key": key, "text": text, "inherited": inherited,
                "inheritable": gf.inheritable(key), "default": group.inherited.get(key, ""),
                "shape": gf.shape(key), "choices": gf.choices(key), "help": gf.help_text(key),
                "allowed": gf.allowed_text(key), "error": (errors or {}).get(key, ""),
                "own": own,
            })
        if section:
            rows.append((title, section))
    return render_template("groups/group.html", group=group, sections=rows, editable=editable,
                           creating=creating, errors=errors or {}, name=name or group.name,
                           digest=(submitted or {}).get("digest", group.digest)), status


def _refused(name: str, errors: dict[str, str], group: gf.EditableGroup,
             creating: bool = False):
    """The form again, with what was typed and one line per refused value."""
    audit("groups.save", name[:200], "refused", errors=errors)
    flash("not saved: " + ("; ".join(errors.values()) if len(errors) == 1
                           else f"{len(errors)} values were refused (see below)"), "error")
    return _form(group, editable=True, creating=creating, submitted=request.form,
                 errors=errors, name=name, status=400)


def _saved(name: str, result: gf.SaveResult):
    told = reload_components(web().settings)
    audit("groups.save", name, file=str(result.path), created=result.created,
          changed=list(result.changed), dropped=list(result.dropped), reload=told)
    what = "created" if result.created else "wrote"
    changed = ", ".join(result.changed) if result.changed else "no value changed"
    message = f"{what} {result.path} ({changed}); {_told(told)}"
    if result.dropped:
        message += f"; removed unknown keys {', '.join(result.dropped)}"
    flash(message, "ok")
    return redirect(url_for("groups.show", name=name), code=303)


def _told(told: dict[str, str]) -> str:
    return "reload: " + ", ".join(f"{component} {what}" for component, what in told.items())
