"""The Updates page: status, sources and feeds, an update run now and a rollback — each a real
`lmsav update` in a child process against a local source — and who may do what."""

from __future__ import annotations

import html
import json
import os
import signal
import sys

import pytest

from lmsav.cron import console as runs_mod
from lmsav.update.store import Store
from lmsav.web.context import web

from ..update.conftest import copy_genuine
from .conftest import BASE_URL, flashes, form_post, page_text, with_update_source

WAIT = 120


@pytest.fixture
def web_env(web_env):
    """The console's configuration takes the genuine test database from a directory."""
    return with_update_source(web_env)


def runs(web_env) -> runs_mod.Runs:
    return runs_mod.runs_for(web_env.state_dir / "web" / "runs")


def page(client, url: str = "/updates/") -> str:
    return page_text(client, url)



def active(web_env) -> str | None:
    return Store(web_env.bases).current_label()


def post(client, url: str, data: dict | None = None):
    return form_post(client, url, data, token_from="/updates/")


def audit_lines(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_status_before_any_update(admin, viewer, anon, web_env):
    for client in (admin, viewer):
        text = page(client)
        assert 'id="active-version">none<' in text
        assert f"no database installed in {web_env.bases}: run lmsav update" in text
        assert html.escape(str(web_env.source)) in text and "directory" in text
    assert 'id="update-now"' in page(admin)
    assert 'id="update-now"' not in page(viewer)
    response = anon.get("/updates/", base_url=BASE_URL)
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_run_now_then_rollback_switch_the_version(admin, web_env):
    copy_genuine(web_env.source, 3)
    response = post(admin, "/updates/run")
    assert response.status_code == 302 and response.headers["Location"].endswith("/updates/")
    done = runs(web_env).wait("update", WAIT)
    assert (done.result, done.by) == ("updated", "alice")
    assert active(web_env) == "test-3"
    text = page(admin)
    assert 'id="active-version">test-3<' in text
    assert f"updated: test-3 (test - -&gt; 3 (full)) from {web_env.source}" in text

    copy_genuine(web_env.source, 4)
    post(admin, "/updates/run")
    assert runs(web_env).wait("update", WAIT).result == "updated"
    assert active(web_env) == "test-4"
    text = page(admin)
    assert 'id="rollback-test-3"' in text and 'id="rollback-test-4"' not in text

    response = post(admin, "/updates/rollback", {"version": "test-3"})
    assert response.status_code == 302
    back = runs(web_env).wait("update", WAIT)
    assert (back.result, back.message) == ("rolled back",
                                           "rolled back: test-3 is active (was test-4)")
    assert active(web_env) == "test-3"
    assert [(a["action"], a["target"], a["outcome"]) for a in audit_lines(web_env)
            if a["action"].startswith("updates.")] == [
        ("updates.run", "update", "ok"), ("updates.run", "update", "ok"),
        ("updates.rollback", "test-3", "ok")]


def test_a_file_url_source_works_too(admin, web_env):
    copy_genuine(web_env.root / "mirror", 3)
    text = web_env.config_file.read_text().replace(
        json.dumps(str(web_env.source)), json.dumps(f"file://{web_env.root}/mirror"))
    web_env.config_file.write_text(text)
    post(admin, "/updates/run")
    done = runs(web_env).wait("update", WAIT)
    assert done.message == f"updated: test-3 (test - -> 3 (full)) from file://{web_env.root}/mirror"
    assert active(web_env) == "test-3"


def test_a_failed_update_is_shown_and_changes_nothing(admin, web_env):
    post(admin, "/updates/run")  # the source directory does not exist
    done = runs(web_env).wait("update", WAIT)
    assert done.result == "failed"
    text = page(admin)
    assert f"not updated: no database is active: {web_env.source}: no such directory" \
        in html.unescape(text)
    assert 'id="last-result"><span class="status status-failed">failed</span>' in text
    # The command's own error line is in the output shown; its JSON object is not.
    output = html.unescape(text[text.index("<pre>"):text.index("</pre>")])
    assert output == f"<pre>lmsav: error: {web_env.source}: no such directory"
    assert active(web_env) is None


def test_an_unknown_version_is_one_flashed_line(admin, web_env):
    for label in ("test-9", "../../etc/passwd", ""):
        response = post(admin, "/updates/rollback", {"version": label})
        assert response.status_code == 302
        assert flashes(page(admin), "error") == [
            f"no version {label} in {web_env.bases} (kept: none)"]
    assert runs(web_env).get("update") is None
    assert [a["outcome"] for a in audit_lines(web_env)
            if a["action"] == "updates.rollback"] == ["refused"] * 3


def test_one_run_at_a_time(admin, web_env):
    sleeper = runs(web_env).start("update", [sys.executable, "-c", "import time; time.sleep(30)"],
                                  what="lmsav update", by="bob", summary=lambda *a: ("ok", "", {}))
    try:
        response = admin.get("/updates/", base_url=BASE_URL)
        assert response.headers["Refresh"] == "3"  # the page follows the run
        assert "is running" not in flashes(response.get_data(as_text=True), "error")
        post(admin, "/updates/run")
        [message] = flashes(page(admin), "error")
        assert message.startswith("lmsav update is running already (started ")
        assert message.endswith(" by bob)")
        assert audit_lines(web_env)[-1]["outcome"] == "refused"
    finally:
        os.kill(sleeper.pid, signal.SIGTERM)
    assert runs(web_env).wait("update", WAIT).exit == -signal.SIGTERM
    assert "Refresh" not in admin.get("/updates/", base_url=BASE_URL).headers


def test_viewers_and_forms_without_a_token_are_refused(admin, viewer, web_env):
    copy_genuine(web_env.source, 3)
    for url, data in (("/updates/run", {}), ("/updates/rollback", {"version": "test-3"})):
        assert post(viewer, url, data).status_code == 403
        response = admin.post(url, data=data, base_url=BASE_URL,
                              headers={"Referer": BASE_URL + "/updates/"})
        assert response.status_code == 400
    assert runs(web_env).get("update") is None
    assert active(web_env) is None


def test_sources_and_feeds_never_show_a_password(admin, web_env):
    text = web_env.config_file.read_text().replace(
        json.dumps(str(web_env.source)),
        json.dumps("https://mirror:s3cret@mirror.example.org/clamav") + ", "
        + json.dumps(str(web_env.source)))
    web_env.config_file.write_text(
        text + 'feeds = ["https://u:s3cret@feeds.example.org/lmsav.bundle"]\n'
               'proxy = "http://p:s3cret@proxy.example.org:3128"\n')
    with admin.application.app_context():
        web().reload_settings()
    shown = page(admin)
    assert "s3cret" not in shown
    assert "https://mirror:***@mirror.example.org/clamav" in shown
    assert "https://u:***@feeds.example.org/lmsav.bundle" in shown
    assert "http://p:***@proxy.example.org:3128" in shown
