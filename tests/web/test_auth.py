"""Logging in and out, sessions, roles, CSRF and the headers every page carries."""

from __future__ import annotations

import json

import pytest

from lmsav.web.accounts import Accounts
from lmsav.web.auth import LoginThrottle
from tests.web.conftest import ADMIN, BASE_URL, VIEWER, _client, form_post, log_in


def test_anyone_not_logged_in_is_sent_to_the_login_page(anon):
    response = anon.get("/groups/?x=1", base_url=BASE_URL)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/groups/")


def test_a_post_without_a_login_is_refused(anon):
    assert form_post(anon, "/groups/new", {"name": "x"}).status_code == 401


def test_login_sets_a_secure_httponly_strict_cookie_and_goes_where_asked(app):
    client = _client(app)
    response = form_post(client, "/login", {"username": ADMIN[0], "password": ADMIN[1],
                                            "next": "/groups/"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/groups/"
    cookie = response.headers["Set-Cookie"]
    assert "lmsav_session=" in cookie
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict"):
        assert attribute in cookie
    page = client.get("/groups/", base_url=BASE_URL)
    assert page.status_code == 200
    assert "alice (admin)" in page.get_data(as_text=True)


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "/\\evil"])
def test_login_never_redirects_off_the_console(app, target):
    client = _client(app)
    response = form_post(client, "/login", {"username": ADMIN[0], "password": ADMIN[1],
                                            "next": target})
    assert response.status_code == 302
    assert "evil" not in response.headers["Location"]


def test_a_wrong_password_is_refused_and_audited(app, web_env):
    client = _client(app)
    response = form_post(client, "/login", {"username": ADMIN[0], "password": "nope-nope"})
    assert response.status_code == 401
    assert "Wrong name or password" in response.get_data(as_text=True)
    lines = (web_env.state_dir / "web" / "audit.jsonl").read_text().splitlines()
    record = json.loads(lines[-1])
    assert (record["action"], record["target"], record["outcome"]) == ("login", "alice",
                                                                       "refused")


def test_an_unknown_name_is_refused_like_a_wrong_password(app):
    response = form_post(_client(app), "/login", {"username": "mallory", "password": "x" * 9})
    assert response.status_code == 401
    assert "Wrong name or password" in response.get_data(as_text=True)


def test_failed_logins_are_throttled_even_with_the_right_password(app, web_env):
    client = _client(app)
    for _ in range(web_env.settings().web.login_attempts):
        form_post(client, "/login", {"username": ADMIN[0], "password": "wrong-password"})
    response = form_post(client, "/login", {"username": ADMIN[0], "password": ADMIN[1]})
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)


def test_the_throttle_forgets_after_its_window_and_stays_bounded():
    now = [0.0]
    throttle = LoginThrottle(3, 60, clock=lambda: now[0])
    for _ in range(3):
        throttle.failed("addr:1")
    assert throttle.wait("addr:1") == pytest.approx(60)
    now[0] = 61
    assert throttle.wait("addr:1") == 0
    for i in range(LoginThrottle.MAX_KEYS + 50):
        throttle.failed(f"user:{i}")
    assert len(throttle._failures) == LoginThrottle.MAX_KEYS


def test_logout_ends_the_session(admin):
    assert form_post(admin, "/logout", token_from="/groups/").status_code == 302
    assert admin.get("/groups/", base_url=BASE_URL).status_code == 302


def test_a_changed_password_ends_older_sessions(admin, web_env):
    Accounts(web_env.state_dir / "web").set_password(ADMIN[0], "another-password")
    assert admin.get("/groups/", base_url=BASE_URL).status_code == 302


def test_a_removed_account_is_logged_out_at_once(viewer, web_env):
    Accounts(web_env.state_dir / "web").remove(VIEWER[0])
    assert viewer.get("/groups/", base_url=BASE_URL).status_code == 302


def test_a_role_taken_away_is_enforced_at_the_next_request(app, web_env):
    client = log_in(_client(app), *ADMIN)
    accounts = Accounts(web_env.state_dir / "web")
    accounts.set_role(ADMIN[0], "viewer")
    # The role change also ends the session; logged in again, the account is a viewer.
    client = log_in(_client(app), *ADMIN)
    response = form_post(client, "/groups/new", {"name": "x"}, token_from="/groups/")
    assert response.status_code == 403


def test_a_post_without_its_csrf_token_is_refused_and_audited(admin, web_env):
    response = admin.post("/logout", base_url=BASE_URL,
                          headers={"Referer": BASE_URL + "/groups/"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    record = json.loads((web_env.state_dir / "web" / "audit.jsonl").read_text()
                        .splitlines()[-1])
    assert record["outcome"] == "refused" and "CSRF" in record["detail"]["reason"]
    assert (record["user"], record["role"]) == ("alice", "admin")
    assert admin.get("/groups/", base_url=BASE_URL).status_code == 200  # still logged in


def test_a_token_of_another_session_is_refused(app, admin):
    other = log_in(_client(app), *VIEWER)
    token_of_other = other.get("/groups/", base_url=BASE_URL).get_data(as_text=True)
    token = token_of_other.split('name="csrf_token" value="')[1].split('"')[0]
    response = admin.post("/logout", data={"csrf_token": token}, base_url=BASE_URL,
                          headers={"Referer": BASE_URL + "/"})
    assert response.status_code == 400


def test_every_page_carries_the_security_headers(anon):
    response = anon.get("/login", base_url=BASE_URL)
    headers = response.headers
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"


def test_an_unknown_page_is_a_404_page_not_a_crash(admin):
    response = admin.get("/no/such/page", base_url=BASE_URL)
    assert response.status_code == 404
    assert "no such page" in response.get_data(as_text=True)


def test_the_session_key_is_private_and_survives_a_restart(app, web_env):
    from lmsav.web.app import create_app

    key = web_env.state_dir / "web" / "session.key"
    assert key.stat().st_mode & 0o777 == 0o600
    client = log_in(_client(app), *ADMIN)
    again = create_app(web_env.settings(), web_env.config_file, testing=True)
    cookie = client.get_cookie("lmsav_session", domain="localhost")
    fresh = _client(again)
    fresh.set_cookie("lmsav_session", cookie.value, domain="localhost", secure=True)
    assert fresh.get("/groups/", base_url=BASE_URL).status_code == 200


def test_pam_logins_are_off_unless_configured(app, monkeypatch):
    import pam

    calls = []
    monkeypatch.setattr(pam, "authenticate", lambda *a, **k: calls.append(a) or True)
    response = form_post(_client(app), "/login", {"username": "root", "password": "whatever1"})
    assert response.status_code == 401
    assert calls == []


def test_a_pam_user_gets_the_role_of_the_admin_group(web_env, monkeypatch):
    import grp
    import pwd

    import pam

    from lmsav.web.app import create_app

    me = pwd.getpwuid(0).pw_name
    group = grp.getgrgid(pwd.getpwuid(0).pw_gid).gr_name
    web_env.write_config(f'[web]\npam = true\npam_admin_group = "{group}"\n')
    application = create_app(web_env.settings(), web_env.config_file, testing=True)
    seen = []
    monkeypatch.setattr(pam, "authenticate",
                        lambda name, password, service: seen.append((name, service))
                        or password == "right-password")
    client = _client(application)
    assert form_post(client, "/login", {"username": me, "password": "bad-password"}) \
        .status_code == 401
    log_in(client, me, "right-password")
    assert seen[-1] == (me, "login")
    page = client.get("/groups/", base_url=BASE_URL).get_data(as_text=True)
    assert f"{me} (admin)" in page
