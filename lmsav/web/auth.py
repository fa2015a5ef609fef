"""Logging in and out, who is asking, and what their role lets them do.

Sessions are Flask's signed cookies (Secure, HttpOnly, SameSite=Strict) holding the account's
name, where it logged in from (local or PAM) and its generation; the role of a local account is
read from the accounts file on every request, so a changed role or removed account takes effect
at once, and a changed password ends older sessions.
"""

from __future__ import annotations

import functools
import grp
import logging
import pwd
import threading
import time
from collections import OrderedDict, deque

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from .accounts import AccountError, Accounts, User
from .audit import audit
from .context import web

log = logging.getLogger("lmsav.web")
bp = Blueprint("auth", __name__)

PUBLIC_ENDPOINTS = {"auth.login", "static"}


class LoginThrottle:
    """At most ``attempts`` failures per address and per account name within ``window``
    seconds; memory stays bounded whatever names are tried."""

    MAX_KEYS = 10000

    def __init__(self, attempts: int, window: float, clock=time.monotonic):
        self.attempts, self.window, self.clock = attempts, window, clock
        self._failures: OrderedDict[str, deque] = OrderedDict()
        self._lock = threading.Lock()

    def wait(self, *keys: str) -> float:
        """Seconds before another try from any of ``keys`` is allowed; 0: now."""
        now = self.clock()
        with self._lock:
            longest = 0.0
            for key in keys:
                times = self._failures.get(key)
                if not times:
                    continue
                while times and times[0] <= now - self.window:
                    times.popleft()
                if len(times) >= self.attempts:
                    longest = max(longest, times[0] + self.window - now)
            return longest

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._failures.setdefault(key, deque()).append(now)
                self._failures.move_to_end(key)
            while len(self._failures) > self.MAX_KEYS:
                self._failures.popitem(last=False)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._failures.pop(key, None)


def accounts() -> Accounts:
    return current_app.extensions["lmsav.accounts"]


def current_user() -> User | None:
    return getattr(g, "user", None)


def admin_required(view):
    """Changes are for admins; a viewer's request is refused (403) and audited."""
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        user = current_user()
        if user is None or not user.is_admin:
            audit(request.endpoint or request.path, request.path, "refused",
                  reason="not an admin")
            abort(403)
        return view(*args, **kwargs)
    return wrapped


def load_user() -> None:
    """Before every request: who is asking; anyone not logged in goes to the login page."""
    g.user = _session_user()
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if request.method != "GET":
            abort(401)
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    return None


def _session_user() -> User | None:
    name = session.get("user")
    if not isinstance(name, str):
        return None
    if session.get("source") == "pam":
        if not web().settings.web.pam:
            return None
        role = session.get("role")
        return User(name, role, "pam") if role in ("admin", "viewer") else None
    try:
        user = accounts().get(name)
    except AccountError as err:
        log.error("%s", err)
        return None
    if user is None or user.generation != session.get("generation"):
        return None
    return user


@bp.route("/login", methods=["GET", "POST"])
def login():
    if request.method == "GET":
        return render_template("login.html", next=_safe_next(request.args.get("next")))
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = request.remote_addr or "?"
    throttle: LoginThrottle = current_app.extensions["lmsav.throttle"]
    keys = (f"addr:{address}", f"user:{name.lower()}")
    wait = throttle.wait(*keys)
    if wait > 0:
        audit("login", name, "refused", reason="too many failed logins")
        flash(f"Too many failed logins: try again in {int(wait) + 1} s.", "error")
        return render_template("login.html", next=_safe_next(request.form.get("next"))), 429
    user = _authenticate(name, password)
    if user is None:
        throttle.failed(*keys)
        audit("login", name, "refused", reason="wrong name or password")
        flash("Wrong name or password.", "error")
        return render_template("login.html", next=_safe_next(request.form.get("next"))), 401
    throttle.succeeded(*keys)
    session.clear()  # a fresh session: nothing from before the login carries over
    session.permanent = True
    session.update(user=user.name, source=user.source, generation=user.generation,
                   role=user.role if user.source == "pam" else None)
    g.user = user
    audit("login", user.name, source=user.source)
    return redirect(_safe_next(request.form.get("next")) or home_url())


@bp.route("/logout", methods=["POST"])
def logout():
    user = current_user()
    if user is not None:
        audit("logout", user.name)
    session.clear()
    return redirect(url_for("auth.login"))


def home_url() -> str:
    return (url_for("dashboard.index") if "dashboard.index" in current_app.view_functions
            else "/")


def _authenticate(name: str, password: str) -> User | None:
    if not name or not password or len(password) > 4096:
        return None
    try:
        user = accounts().verify(name, password)
    except AccountError as err:
        log.error("%s", err)
        user = None
    if user is not None:
        return user
    settings = web().settings.web
    if settings.pam and accounts().get(name) is None:
        return _pam_user(name, password, settings)
    return None


def _pam_user(name: str, password: str, settings) -> User | None:
    import pam

    if not pam.authenticate(name, password, service=settings.pam_service):
        return None
    role = "viewer"
    if settings.pam_admin_group:
        try:
            group = grp.getgrnam(settings.pam_admin_group)
            primary = pwd.getpwnam(name).pw_gid
        except KeyError:
            group, primary = None, None
        if group is not None and (name in group.gr_mem or primary == group.gr_gid):
            role = "admin"
    return User(name, role, "pam")


def _safe_next(target: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return ""
    return target
