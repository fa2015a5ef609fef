"""The Configuration page: effective values and their sources (passwords masked), the safe
subset saved into the file (validated as lmsav loads it, other keys refused even from a forged
form), the profile switched, the console's settings and the running components reloaded."""

from __future__ import annotations

import html
import json
import re
import tomllib

import pytest

from lmsav import config as config_mod
from lmsav.web.context import web

from .conftest import BASE_URL, flashes, form_post, page_text


@pytest.fixture
def web_env(web_env):
    web_env.write_config('# the test server\n[limits]\nmax_files = 500  # per container\n'
                         '[stats]\nurl = "postgresql://lmsav:s3cret@db.example/lmsav"\n')
    return web_env


def page(client, url: str = "/config/") -> str:
    return page_text(client, url)



def digest(client) -> str:
    return re.search(r'name="digest" value="([^"]*)"', page(client)).group(1)


def post(client, url: str, data: dict | None = None, **kwargs):
    return form_post(client, url, data, token_from="/config/", **kwargs)


def audit_lines(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_values_sources_and_masked_secrets(viewer, web_env):
    text = page(viewer)
    row = re.search(r'<tr id="key-limits.max_files">(.*?)</tr>', text, re.DOTALL).group(1)
    assert "<code class=\"value\">500</code>" in row and str(web_env.config_file) in row
    assert "s3cret" not in text and "lmsav:***@db.example" in text
    assert 'name="limits.max_files"' not in text  # a viewer has no form
    assert "default_recommended" in text


def test_the_admin_form_offers_the_safe_keys_only(admin):
    text = page(admin)
    names = set(re.findall(r'<(?:input|select) type="text" name="([a-z_.]+)"', text)) | set(
        re.findall(r'<select name="([a-z_.]+)"', text))
    from lmsav.web.config_edit import SAFE_KEYS

    assert names - {"profile"} == set(SAFE_KEYS)


def test_save_writes_the_changed_keys_and_reloads(admin, web_env, app):
    response = post(admin, "/config/save", {
        "digest": digest(admin), "limits.max_files": "800", "limits.max_file_size": "100M",
        "log.level": "debug", "log.levels": "spool:warning"})
    assert response.status_code == 302
    text = web_env.config_file.read_text()
    assert "# the test server" in text and "max_files = 800  # per container" in text
    assert 'postgresql://lmsav:s3cret@db.example/lmsav' in text
    data = tomllib.loads(text)
    assert data["log"] == {"level": "debug", "levels": ["spool:warning"]}
    assert "max_file_size" not in data["limits"]  # unchanged: not written
    settings = config_mod.load_settings(web_env.config_file)  # the file on disk loads
    assert settings.limits_section.max_files == 800
    with app.app_context():
        assert web().settings.log.level == "debug"  # the console reloaded its own
    message = flashes(page(admin), "ok")[0]
    assert message.startswith(f"saved in {web_env.config_file}: ")
    assert "daemon: not running" in message and "spool watcher: not running" in message
    record = audit_lines(web_env)[-1]
    assert (record["action"], record["outcome"]) == ("settings.save", "ok")
    assert set(record["detail"]["changed"]) == {"limits.max_files", "log.level", "log.levels"}


def test_an_invalid_value_is_refused_with_the_configurations_error(admin, web_env):
    before = web_env.config_file.read_text()
    post(admin, "/config/save", {"digest": digest(admin), "limits.max_files": "many"})
    assert flashes(page(admin), "error") == [
        f'{web_env.config_file}: limits.max_files = "many": expected an integer >= 0']
    assert web_env.config_file.read_text() == before
    assert audit_lines(web_env)[-1]["outcome"] == "refused"


def test_a_forged_post_cannot_set_other_keys(admin, web_env):
    before = web_env.config_file.read_text()
    for name, value in (("paths.state_dir", "/tmp/elsewhere"),
                        ("spool.reinject", "sendmail:/bin/sh"), ("daemon.user", "root"),
                        ("stats.url", "postgresql://x@evil/db"), ("profile", "x")):
        response = post(admin, "/config/save", {"digest": digest(admin), name: value,
                                                "limits.max_files": "9"})
        assert response.status_code == 302
        assert "cannot be changed from the console" in flashes(page(admin), "error")[0]
    response = post(admin, "/config/save", {"digest": digest(admin), "unset": "paths.run_dir"})
    assert "cannot be changed" in flashes(page(admin), "error")[0]
    assert web_env.config_file.read_text() == before


def test_a_stale_form_is_refused(admin, web_env):
    old = digest(admin)
    web_env.config_file.write_text(web_env.config_file.read_text() + "[scan]\nworkers = 2\n")
    post(admin, "/config/save", {"digest": old, "limits.max_files": "9"})
    assert "changed since the page was shown" in flashes(page(admin), "error")[0]
    assert "max_files = 500" in web_env.config_file.read_text()


def test_unset_takes_a_key_out_of_the_file(admin, web_env):
    post(admin, "/config/save", {"digest": digest(admin), "unset": "limits.max_files"})
    assert "max_files" not in tomllib.loads(web_env.config_file.read_text())["limits"]


def test_switch_profile(admin, web_env):
    response = post(admin, "/config/profile", {"digest": digest(admin),
                                               "profile": "high_scan_speed"})
    assert response.status_code == 302
    assert tomllib.loads(web_env.config_file.read_text())["profile"] == "high_scan_speed"
    assert config_mod.load_settings(web_env.config_file).profile == "high_scan_speed"
    text = page(admin)
    assert re.search(r'id="profile"><strong>high_scan_speed</strong>', text)
    assert audit_lines(web_env)[-1]["action"] == "settings.profile"
    post(admin, "/config/profile", {"digest": digest(admin), "profile": "../../etc"})
    assert "unknown profile" in flashes(page(admin), "error")[0]


def test_viewer_refused_and_csrf_required(viewer, admin, web_env):
    before = web_env.config_file.read_text()
    assert post(viewer, "/config/save", {"limits.max_files": "1"}).status_code == 403
    assert post(viewer, "/config/profile", {"profile": "high_scan_speed"}).status_code == 403
    response = admin.post("/config/save", data={"limits.max_files": "1"}, base_url=BASE_URL)
    assert response.status_code == 400
    response = admin.post("/config/profile", data={"profile": "high_scan_speed"},
                          base_url=BASE_URL)
    assert response.status_code == 400
    assert web_env.config_file.read_text() == before


def form_as_shown(text: str) -> dict[str, str]:
    """The settings form's fields as a browser submits them untouched."""
    form = re.search(r'<form method="post" action="/config/save".*?</form>', text, re.DOTALL)
    fields = {}
    for name, value in re.findall(r'<input type="text" name="([^"]+)" id="[^"]*" value="([^"]*)"',
                                  form.group(0)):
        fields[name] = html.unescape(value)
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>',
                                    form.group(0), re.DOTALL):
        fields[name] = re.search(r'<option value="([^"]*)" selected>', options).group(1)
    fields["digest"] = re.search(r'name="digest" value="([^"]*)"', form.group(0)).group(1)
    return fields


def test_the_whole_form_sent_back_changes_only_what_was_changed(admin, web_env):
    fields = form_as_shown(page(admin))
    from lmsav.web.config_edit import SAFE_KEYS

    assert set(fields) == {*SAFE_KEYS, "digest"}
    before = web_env.config_file.read_text()
    post(admin, "/config/save", fields)
    assert flashes(page(admin), "ok") == ["nothing changed"]
    assert web_env.config_file.read_text() == before
    fields = form_as_shown(page(admin))
    fields["spool.retry_delay"] = "1m"
    fields["scan.scan_archives"] = "false"
    post(admin, "/config/save", fields)
    data = tomllib.loads(web_env.config_file.read_text())
    assert data["spool"] == {"retry_delay": 60} and data["scan"] == {"scan_archives": False}
    assert data["limits"] == {"max_files": 500}
