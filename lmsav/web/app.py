"""The console as a WSGI application: settings, sessions, CSRF, security headers, the pages."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta
from pathlib import Path

from flask import Flask, render_template, request, url_for
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from .. import config as config_mod
from .accounts import Accounts, prepare_dir, write_private
from .audit import audit
from .auth import LoginThrottle, current_user, home_url, load_user
from .auth import bp as auth_bp
from .context import WebContext
from .pages import NAVIGATION, blueprints

log = logging.getLogger("lmsav.web")
KEY_FILE = "session.key"
MAX_FORM = 1 << 20

# Scripts and styles only from the console itself; nothing may frame it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "style-src 'self' 'unsafe-inline'; script-src 'self'; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def create_app(settings: config_mod.Settings, config_file: Path | str | None = None,
               profile: str | None = None, *, testing: bool = False) -> Flask:
    app = Flask(__name__)
    context = WebContext(settings, Path(config_file) if config_file else None, profile)
    app.extensions["lmsav"] = context
    app.extensions["lmsav.accounts"] = Accounts(context.web_dir)
    app.extensions["lmsav.throttle"] = LoginThrottle(settings.web.login_attempts,
                                                     settings.web.login_window)
    app.config.update(
        SECRET_KEY=_session_key(context.web_dir),
        SESSION_COOKIE_NAME="lmsav_session",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=settings.web.session_lifetime or 8 * 3600),
        MAX_CONTENT_LENGTH=MAX_FORM,
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session that carries it
        TESTING=testing,
    )
    # Who is asking is known before the CSRF check, so a refusal names the account.
    app.before_request(load_user)
    CSRFProtect(app)
    if settings.web.trusted_proxies:
        n = settings.web.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)

    app.after_request(_security_headers)
    app.register_blueprint(auth_bp)
    for blueprint in blueprints():
        app.register_blueprint(blueprint)
    _register_errors(app)
    _register_template_helpers(app)
    return app


def _session_key(directory: Path) -> bytes:
    """The key signing session cookies, made once and kept private: sessions survive a
    restart of the console."""
    path = directory / KEY_FILE
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    prepare_dir(directory)
    key = secrets.token_bytes(32)
    write_private(path, key)
    return key


def _security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _register_errors(app: Flask) -> None:
    messages = {
        400: "The request was not understood.",
        401: "Log in first.",
        403: "Your role does not allow this: ask an admin.",
        404: "There is no such page or entry.",
        405: "This page does not take that kind of request.",
        413: "The form is too large.",
        429: "Too many requests: wait a little.",
        500: "Something went wrong inside the console; the log says what.",
    }

    def handler(err):
        code = getattr(err, "code", 500) or 500
        return render_template("error.html", code=code,
                               message=messages.get(code, str(err))), code

    for code in messages:
        app.register_error_handler(code, handler)

    @app.errorhandler(CSRFError)
    def csrf_refused(err):
        audit(request.endpoint or request.path, request.path, "refused",
              reason=f"CSRF: {err.description}")
        return render_template(
            "error.html", code=400,
            message="The form was refused: its security token is missing or expired. "
                    "Reload the page and try again."), 400


def _register_template_helpers(app: Flask) -> None:
    @app.context_processor
    def globals_():
        available = [(endpoint, label) for endpoint, label in NAVIGATION
                     if endpoint in app.view_functions]
        return {"current_user": current_user(), "navigation": available,
                "host_name": app.extensions["lmsav"].settings.host_name()}

    app.jinja_env.filters["when"] = when
    app.jinja_env.filters["size"] = human_size
    app.jinja_env.filters["age"] = age
    app.jinja_env.globals["home_url"] = home_url
    app.jinja_env.globals["page_url"] = _page_url


def when(timestamp) -> str:
    """A time in the server's zone, to the second; "" for none."""
    if timestamp in (None, ""):
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(timestamp)))
    except (TypeError, ValueError, OverflowError, OSError):
        return str(timestamp)


def human_size(size) -> str:
    try:
        size = float(size)
    except (TypeError, ValueError):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def age(timestamp) -> str:
    try:
        seconds = max(0, time.time() - float(timestamp))
    except (TypeError, ValueError):
        return ""
    for width, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= width:
            return f"{int(seconds // width)} {unit}"
    return f"{int(seconds)} s"


def _page_url(**changes) -> str:
    """This page's URL with some query arguments changed (pagination, filters)."""
    args = request.args.to_dict()
    for key, value in changes.items():
        if value in (None, ""):
            args.pop(key, None)
        else:
            args[key] = value
    return url_for(request.endpoint, **(request.view_args or {}), **args)

