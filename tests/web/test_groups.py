"""The Groups page: list, show, edit, create and delete groups of groups.d, with the loader's
own checks, the roles, CSRF, and the daemon and spool watcher told to reload."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from html import unescape
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.config import ConfigError
from lmsav.mail.groups import load_groups

from .conftest import BASE_URL, form_post

SALES = 'priority = 10\nrecipients = ["*@sales.example.com"]\ninfected_action = "drop"\n'


@pytest.fixture
def gdir(web_env) -> Path:
    directory = web_env.config_file.parent / "groups.d"
    directory.mkdir()
    (directory / "sales.toml").write_text(SALES)
    return directory


def page(client, url: str):
    return client.get(url, base_url=BASE_URL)


def text(response) -> str:
    return unescape(response.get_data(as_text=True))


def audit_records(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def which(web_env, recipient: str, sender: str = "a@b.example") -> str:
    """`lmsav groups which` for the console's configuration, as an administrator runs it."""
    result = CliRunner().invoke(main, ["--config", str(web_env.config_file), "groups", "which",
                                       "-f", sender, "-r", recipient])
    assert result.exit_code == 0, result.output
    return result.output.strip().rpartition(": ")[2]


# -- showing -------------------------------------------------------------------------------------

def test_list_shows_groups_in_the_order_they_are_tried(admin, gdir):
    (gdir / "shop.toml").write_text('priority = 20\nsenders = ["*@shop.example"]\n')
    response = page(admin, "/groups/")
    assert response.status_code == 200
    body = text(response)
    assert body.index('id="group-shop"') < body.index('id="group-sales"') \
        < body.index('id="group-default"')
    row = re.search(r'<tr id="group-sales">(.*?)</tr>', body, re.DOTALL).group(1)
    assert "*@sales.example.com" in row and ">10<" in row and "infected: drop" in row
    assert 'id="new-group"' in body


def test_list_says_why_groups_d_does_not_load(admin, gdir):
    (gdir / "broken.toml").write_text('infected_action = "nope"\n')
    response = page(admin, "/groups/")
    assert response.status_code == 200
    assert f'{gdir / "broken.toml"}: infected_action = "nope"' in text(response)
    assert 'id="group-broken"' in text(response)


def test_an_admin_gets_the_form_with_stable_names(admin, gdir):
    body = text(page(admin, "/groups/sales"))
    for element in ('<textarea name="recipients" id="recipients"',
                    '<textarea name="senders" id="senders"',
                    '<input type="text" name="priority" id="priority" value="10"',
                    '<button type="submit" id="save">', 'name="csrf_token"',
                    'id="inherit_suspicious_action" value="1" checked',
                    'id="delete"'):
        assert element in body, element
    assert re.search(r'<textarea name="recipients" id="recipients"[^>]*>\*@sales.example.com'
                     r'</textarea>', body)
    assert 'id="inherit_infected_action" value="1">' in body  # set in the file: not ticked


def test_a_viewer_sees_the_values_without_a_form(viewer, gdir):
    response = page(viewer, "/groups/sales")
    assert response.status_code == 200
    body = text(response)
    assert "<form method=\"post\" id=\"group-form\"" not in body and 'id="save"' not in body
    assert re.search(r'id="value-recipients">\*@sales.example.com<', body)
    assert 'id="new-group"' not in text(page(viewer, "/groups/"))
    assert page(viewer, "/groups/new").status_code == 403


def test_unknown_and_malformed_names_are_not_found(admin, gdir):
    assert page(admin, "/groups/nope").status_code == 404
    assert page(admin, "/groups/.hidden").status_code == 404
    assert page(admin, "/groups/..%2Fetc%2Fpasswd").status_code == 404


def test_the_default_group_can_be_shown_without_a_file(admin, gdir):
    body = text(page(admin, "/groups/default"))
    assert 'name="protected_domains"' in body and 'name="recipients"' not in body
    assert 'id="delete"' not in body


def test_anonymous_visitors_are_sent_to_log_in(anon, gdir):
    assert page(anon, "/groups/").status_code == 302


# -- editing -------------------------------------------------------------------------------------

def test_editing_recipients_writes_the_file_and_groups_which_follows(admin, gdir, web_env):
    assert which(web_env, "x@shop.example.com") == "default"
    response = form_post(admin, "/groups/sales", {
        "recipients": "*@shop.example.com\n*@sales.example.com", "priority": "12",
        "inherit_infected_action": "1", "infected_action": "drop",
    }, token_from="/groups/sales")
    assert response.status_code == 303, text(response)
    assert response.headers["Location"].endswith("/groups/sales")
    groups = load_groups(gdir)
    sales = groups.get("sales")
    assert sales.recipients == ("*@shop.example.com", "*@sales.example.com")
    assert sales.priority == 12 and sales.infected_action == "reject"  # back to the default
    assert which(web_env, "x@shop.example.com") == "sales"
    flashed = text(page(admin, "/groups/sales"))
    assert f"wrote {gdir / 'sales.toml'} (priority, recipients, infected_action)" in flashed
    assert "reload: daemon not running, spool watcher not running" in flashed
    record = audit_records(web_env)[-1]
    assert record["action"] == "groups.save" and record["target"] == "sales"
    assert record["outcome"] == "ok" and record["user"] == "alice"
    assert record["detail"]["changed"] == ["priority", "recipients", "infected_action"]


def test_a_whole_form_as_a_browser_sends_it_saves_only_what_changed(admin, gdir):
    body = text(page(admin, "/groups/sales"))
    form = _form_fields(body)
    form["recipients"] = "*@shop.example.com"
    response = form_post(admin, "/groups/sales", form, token_from="/groups/sales")
    assert response.status_code == 303, text(response)
    written = (gdir / "sales.toml").read_text()
    assert "shop.example.com" in written and 'infected_action = "drop"' in written
    assert "suspicious_action" not in written  # still inherited from the default group


def _form_fields(body: str) -> dict[str, str]:
    """What a browser submits of the group form: inputs, ticked boxes, selected options."""
    form = re.search(r'<form method="post" id="group-form".*?</form>', body, re.DOTALL).group(0)
    fields = {}
    for tag in re.finditer(r"<input [^>]*>", form):
        attrs = dict(re.findall(r'(\w+)="([^"]*)"', tag.group(0)))
        if attrs.get("type") == "checkbox" and " checked" not in tag.group(0):
            continue
        if "name" in attrs and attrs["name"] != "csrf_token":
            fields[attrs["name"]] = attrs.get("value", "")
    for area in re.finditer(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.DOTALL):
        fields[area.group(1)] = area.group(2)
    for select in re.finditer(r'<select name="([^"]+)".*?</select>', form, re.DOTALL):
        chosen = re.search(r'<option value="([^"]*)" selected>', select.group(0))
        fields[select.group(1)] = chosen.group(1)
    return fields


@pytest.mark.parametrize("key, value, file_value", [
    ("priority", "ten", '"ten"'),
    ("recipients", "re:(", '["re:("]'),
    ("reject_reply", "go away", '"go away"'),
    ("max_file_size", "lots", '"lots"'),
])
def test_a_refused_value_shows_the_loaders_message_and_keeps_the_input(admin, gdir, web_env,
                                                                       key, value, file_value):
    probe = gdir.parent / "probe.d"
    probe.mkdir()
    (probe / "sales.toml").write_text(f"{key} = {file_value}\n")
    with pytest.raises(ConfigError) as loaded:
        load_groups(probe)
    expected = str(loaded.value).replace(str(probe), str(gdir))
    response = form_post(admin, "/groups/sales", {key: value}, token_from="/groups/sales")
    assert response.status_code == 400
    body = text(response)
    assert re.search(rf'<p class="error-text" id="error-{key}">{re.escape(expected)}</p>', body)
    assert value in body  # the person's input is shown again
    assert (gdir / "sales.toml").read_text() == SALES
    record = audit_records(web_env)[-1]
    assert record["outcome"] == "refused" and record["detail"]["errors"] == {key: expected}


def test_a_ticked_default_beside_a_typed_value_is_refused(admin, gdir):
    response = form_post(admin, "/groups/sales", {
        "inherit_suspicious_action": "1", "suspicious_action": "drop"},
        token_from="/groups/sales")
    assert response.status_code == 400
    assert "both the default and a value" in text(response)
    assert (gdir / "sales.toml").read_text() == SALES


def test_a_save_refused_when_another_file_breaks_groups_d(admin, gdir):
    (gdir / "broken.toml").write_text("priority = true\n")
    response = form_post(admin, "/groups/sales", {"priority": "3"}, token_from="/groups/sales")
    assert response.status_code == 400
    assert f'{gdir / "broken.toml"}: priority = true: expected an integer' in text(response)
    assert (gdir / "sales.toml").read_text() == SALES


def test_a_file_changed_meanwhile_is_not_overwritten(admin, gdir):
    digest = re.search(r'name="digest" value="([0-9a-f]+)"',
                       text(page(admin, "/groups/sales"))).group(1)
    (gdir / "sales.toml").write_text(SALES.replace("10", "11"))
    response = form_post(admin, "/groups/sales", {"priority": "3", "digest": digest},
                         token_from="/groups/sales")
    assert response.status_code == 400
    assert "was changed since it was read" in text(response)
    assert "priority = 11" in (gdir / "sales.toml").read_text()


def test_a_viewer_cannot_change_anything(viewer, gdir, web_env):
    for url, data in (("/groups/sales", {"priority": "3"}), ("/groups/new", {"name": "x"}),
                      ("/groups/sales/delete", {})):
        response = form_post(viewer, url, data, token_from="/groups/sales")
        assert response.status_code == 403, url
    assert (gdir / "sales.toml").read_text() == SALES
    assert sorted(p.name for p in gdir.iterdir()) == ["sales.toml"]


def test_a_post_without_its_csrf_token_is_refused(admin, gdir):
    for url in ("/groups/sales", "/groups/new", "/groups/sales/delete"):
        response = admin.post(url, data={"priority": "3", "name": "x"}, base_url=BASE_URL,
                              headers={"Referer": BASE_URL + "/groups/sales"})
        assert response.status_code == 400, url
    assert (gdir / "sales.toml").read_text() == SALES
    assert sorted(p.name for p in gdir.iterdir()) == ["sales.toml"]


def test_posts_to_malformed_or_unknown_names_touch_nothing(admin, gdir, web_env):
    for name in (".hidden", "nope", "..%2Fx"):
        response = form_post(admin, f"/groups/{name}", {"priority": "1"},
                             token_from="/groups/sales")
        assert response.status_code == 404, name
    assert sorted(p.name for p in gdir.parent.iterdir()) == sorted(
        ["groups.d", "lmsav.toml", "state", "run"])
    assert sorted(p.name for p in gdir.iterdir()) == ["sales.toml"]


# -- creating and deleting -----------------------------------------------------------------------

def test_create_a_group(admin, gdir, web_env):
    body = text(page(admin, "/groups/new"))
    assert 'name="name" id="name"' in body and 'id="save"' in body
    response = form_post(admin, "/groups/new", {
        "name": "shop", "priority": "20", "senders": "*", "recipients": "*@shop.example.com",
        "inherit_infected_action": "", "infected_action": "warn"}, token_from="/groups/new")
    assert response.status_code == 303, text(response)
    assert response.headers["Location"].endswith("/groups/shop")
    shop = load_groups(gdir).get("shop")
    assert shop.priority == 20 and shop.infected_action == "warn"
    assert which(web_env, "x@shop.example.com") == "shop"
    record = audit_records(web_env)[-1]
    assert record["action"] == "groups.save" and record["detail"]["created"] is True


@pytest.mark.parametrize("name, message", [
    ("../x", 'group name "../x": expected letters'),
    ("a/b", 'group name "a/b"'),
    ("", 'group name ""'),
    ("sales", "group sales exists already"),
    ("default", "group default exists already"),
])
def test_create_refuses_bad_and_taken_names(admin, gdir, name, message):
    response = form_post(admin, "/groups/new", {"name": name, "recipients": "*@x.example"},
                         token_from="/groups/new")
    assert response.status_code == 400
    assert message in text(response)
    assert sorted(p.name for p in gdir.iterdir()) == ["sales.toml"]
    assert sorted(p.name for p in gdir.parent.iterdir()) == sorted(
        ["groups.d", "lmsav.toml", "state", "run"])


def test_delete_a_group(admin, gdir, web_env):
    response = form_post(admin, "/groups/sales/delete", {}, token_from="/groups/sales")
    assert response.status_code == 303
    assert not (gdir / "sales.toml").exists()
    assert f"deleted {gdir / 'sales.toml'}" in text(page(admin, "/groups/"))
    record = audit_records(web_env)[-1]
    assert record["action"] == "groups.delete" and record["detail"]["content"] == SALES


def test_the_default_group_cannot_be_deleted(admin, gdir, web_env):
    (gdir / "default.toml").write_text('infected_action = "warn"\n')
    response = form_post(admin, "/groups/default/delete", {}, token_from="/groups/sales")
    assert response.status_code == 303
    assert (gdir / "default.toml").exists()
    assert "cannot be deleted" in text(page(admin, "/groups/"))
    assert audit_records(web_env)[-1]["outcome"] == "refused"


def test_editing_the_default_group_writes_default_toml(admin, gdir):
    response = form_post(admin, "/groups/default", {"infected_action": "warn",
                                                   "protected_domains": "example.com"},
                         token_from="/groups/default")
    assert response.status_code == 303, text(response)
    groups = load_groups(gdir)
    assert groups.default.infected_action == "warn"
    assert groups.protected_domains == ("example.com",)
    assert groups.get("sales").suspicious_action == "reject"


# -- telling the running components --------------------------------------------------------------

class FakeDaemon:
    """A unix socket answering RELOAD as the daemon does, counting the requests."""

    def __init__(self, path: Path):
        self.reloads = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = conn.recv(1024)
                if request == b"zRELOAD\0":
                    self.reloads += 1
                    conn.sendall(b"RELOADING\0")

    def close(self):
        self.sock.close()


def test_a_save_tells_the_daemon_and_the_spool_watcher(admin, gdir, web_env):
    settings = web_env.settings()
    daemon = FakeDaemon(Path(settings.daemon_socket()))
    spool = Path(settings.spool_dir())
    spool.mkdir(parents=True, exist_ok=True)
    hup = web_env.root / "hup"
    # a stand-in watcher: holds the spool's lock and notes a SIGHUP
    watcher = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, signal, sys, time\n"
        f"lock = open({str(spool / 'watch.lock')!r}, 'a')\n"
        "fcntl.flock(lock, fcntl.LOCK_EX)\n"
        f"signal.signal(signal.SIGHUP, lambda *a: open({str(hup)!r}, 'w').close())\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline().strip() == "ready"
        response = form_post(admin, "/groups/sales", {"priority": "4"},
                             token_from="/groups/sales")
        assert response.status_code == 303
        deadline = time.monotonic() + 5
        while not hup.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hup.exists() and daemon.reloads == 1
        told = audit_records(web_env)[-1]["detail"]["reload"]
        assert told == {"daemon": "reload requested",
                        "spool watcher": f"sent SIGHUP to pid {watcher.pid}"}
    finally:
        daemon.close()
        watcher.kill()
        watcher.wait()
