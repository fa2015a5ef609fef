"""Fixtures of the console's tests: a private configuration and state, the application, and
test clients logged in as an admin, a viewer, or nobody."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from lmsav import config as config_mod
from lmsav.web.accounts import Accounts
from lmsav.web.app import create_app

# The real browser's fixtures and its screenshot-on-failure hook.
from tests.web.browser import *

BASE_URL = "https://localhost"
ADMIN, VIEWER = ("alice", "alice-password-1"), ("victor", "victor-password-1")


@dataclass
class WebEnv:
    root: Path
    config_file: Path
    state_dir: Path
    run_dir: Path

    def settings(self) -> config_mod.Settings:
        return config_mod.load_settings(self.config_file)

    def write_config(self, extra: str = "") -> None:
        self.config_file.write_text(
            f'[paths]\nstate_dir = "{self.state_dir}"\nrun_dir = "{self.run_dir}"\n' + extra)


@pytest.fixture(autouse=True)
def fast_password_hashes(monkeypatch):
    """Argon2 with its smallest costs in these tests (the real costs take 0.1-0.4 s a hash);
    the command-line and browser tests keep the real ones."""
    from argon2 import PasswordHasher

    from lmsav.web import accounts

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(accounts, "_hasher", cheap)
    monkeypatch.setattr(accounts, "_DUMMY_HASH", cheap.hash("no such account"))


def with_update_source(env: WebEnv) -> WebEnv:
    """A configuration taking the genuine test database from a directory (``env.source``)
    into ``env.bases``, as the Updates and Schedules pages' tests need."""
    env.source = env.root / "source"
    env.bases = env.state_dir / "bases"
    update = {"sources": [str(env.source)], "databases": ["test"], "check_interval": 0,
              "retries": 2, "retry_delay": 0.01, "timeout": 5}
    env.write_config(f'database = "{env.bases}/current"\n'
                     f'[daemon]\nsocket = "{env.run_dir}/clamd.sock"\n'
                     f'[spool]\ndir = "{env.root}/spool"\n'
                     + tomli_w.dumps({"update": update}))
    return env


@pytest.fixture
def web_env(tmp_path) -> WebEnv:
    env = WebEnv(tmp_path, tmp_path / "lmsav.toml", tmp_path / "state", tmp_path / "run")
    env.state_dir.mkdir()
    env.run_dir.mkdir()
    env.write_config()
    return env


@pytest.fixture
def app(web_env):
    application = create_app(web_env.settings(), web_env.config_file, testing=True)
    accounts = Accounts(web_env.state_dir / "web")
    accounts.add(ADMIN[0], ADMIN[1], "admin")
    accounts.add(VIEWER[0], VIEWER[1], "viewer")
    return application


def csrf_token(client, url: str = "/login") -> str:
    """The token a form of the console carries, read from a page as a browser would."""
    page = client.get(url, base_url=BASE_URL).get_data(as_text=True)
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, f"no CSRF token on {url}"
    return match.group(1)


def form_post(client, url: str, data: dict | None = None, *, token_from: str = "/login",
              **kwargs):
    """POST a form with the CSRF token the session expects, as the console's pages send it."""
    fields = {"csrf_token": csrf_token(client, token_from), **(data or {})}
    # Over HTTPS the CSRF check also wants the page the form came from, as browsers send it.
    headers = {"Referer": BASE_URL + token_from, **kwargs.pop("headers", {})}
    return client.post(url, data=fields, base_url=BASE_URL, headers=headers, **kwargs)


def page_text(client, url: str) -> str:
    """A page's HTML, which must have been served (200)."""
    response = client.get(url, base_url=BASE_URL)
    assert response.status_code == 200, (url, response.status_code)
    return response.get_data(as_text=True)


def flashes(text: str, category: str) -> list[str]:
    """The one-line messages of ``category`` (error, success, …) a page shows."""
    return [html.unescape(m) for m in
            re.findall(rf'<p class="flash {category}"[^>]*>(.*?)</p>', text, re.DOTALL)]


def log_in(client, name: str, password: str):
    response = form_post(client, "/login", {"username": name, "password": password})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def _client(app):
    client = app.test_client()
    # Every request as a browser on HTTPS sends it: the session cookie is Secure.
    client.environ_base["wsgi.url_scheme"] = "https"
    return client


@pytest.fixture
def anon(app):
    return _client(app)


@pytest.fixture
def admin(app):
    return log_in(_client(app), *ADMIN)


@pytest.fixture
def viewer(app):
    return log_in(_client(app), *VIEWER)
