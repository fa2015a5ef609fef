"""The Schedules page: the list `lmsav cron list` shows, adding and removing with the checks and
one-line errors of `lmsav cron`, a schedule run now in the background, and who may do what."""

from __future__ import annotations

import html
import json

import pytest
from click.testing import CliRunner

from lmsav.cron import console, install
from lmsav.cron.commands import cron
from lmsav.update.store import Store

from ..jsonlines import records
from ..update.conftest import copy_genuine
from .conftest import BASE_URL, flashes, form_post, page_text, with_update_source

WAIT = 120


@pytest.fixture
def web_env(web_env, monkeypatch):
    """Schedules installed in a cron.d and a unit directory of the test's own; an update
    source with the genuine test database."""
    web_env.cron_dir = web_env.root / "cron.d"
    web_env.cron_dir.mkdir()
    web_env.units = web_env.root / "units"
    web_env.schedules = web_env.root / "schedules.d"
    monkeypatch.setenv("LMSAV_CONFIG", str(web_env.config_file))
    monkeypatch.setenv("LMSAV_CRON_DIR", str(web_env.cron_dir))
    monkeypatch.setenv("LMSAV_SYSTEMD_DIR", str(web_env.units))
    monkeypatch.delenv("LMSAV_CRONTAB", raising=False)
    monkeypatch.setattr(install, "SYSTEM_CRON_DIR", web_env.root / "system-cron.d")
    monkeypatch.setattr(install, "SYSTEM_UNIT_DIR", web_env.root / "system-units")
    monkeypatch.setattr(install, "SYSTEMD_RUNNING", web_env.root / "run-systemd-system")
    return with_update_source(web_env)


def cli(*args: str):
    """`lmsav cron …` as an administrator runs it, with the console's configuration."""
    return CliRunner().invoke(cron, list(args), catch_exceptions=False)


def listed() -> list[dict]:
    result = cli("list", "--json")
    assert result.exit_code == 0, result.stderr
    return records(result.output)


def page(client, url: str = "/schedules/") -> str:
    return page_text(client, url)



def post(client, url: str, data: dict | None = None):
    return form_post(client, url, data, token_from="/schedules/")


def add_update(client, name: str, when: str = "17 * * * *", **extra):
    return post(client, "/schedules/add", {"kind": "update", "name": name, "schedule": when,
                                           **extra})


def audit_lines(web_env) -> list[dict]:
    path = web_env.state_dir / "web" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_list_for_admins_and_viewers(admin, viewer, anon, web_env):
    assert "No schedules yet." in page(viewer)
    assert cli("add", "report", "daily-report", "--report", "daily", "--schedule",
               "0 6 * * *").exit_code == 0
    assert cli("add", "sweep", "nightly", "--paths", str(web_env.root), "--schedule",
               "0 3 * * *", "--exclude", "*.log").exit_code == 0
    for client in (admin, viewer):
        text = page(client)
        assert 'id="schedule-daily-report"' in text and 'id="schedule-nightly"' in text
        assert "lmsav report daily, kept in &lt;state_dir&gt;/reports/" in text
        assert f"lmsav scan {web_env.root}" in text and "<code>--exclude *.log</code>" in text
        assert text.count("never ran") == 2
        next_runs = [t.strftime("%a %Y-%m-%d %H:%M")
                     for t in console.list_schedules(
                         console.Place(web_env.config_file, web_env.state_dir))[0][1].next]
        assert "<br>".join(next_runs) in text
    assert 'id="run-now-nightly"' in page(admin) and 'id="add-sweep"' in page(admin)
    assert 'id="run-now-nightly"' not in page(viewer) and 'id="add-sweep"' not in page(viewer)
    assert anon.get("/schedules/", base_url=BASE_URL).status_code == 302


def test_added_and_removed_schedules_are_what_cron_list_shows(admin, web_env):
    response = post(admin, "/schedules/add", {
        "kind": "sweep", "name": "nightly", "schedule": "0 3 * * *",
        "paths": f"{web_env.root}\r\n{web_env.root}/missing\r\n",
        "scan_options": "--exclude '*.log' -j 2", "incremental": "on"})
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/schedules/#schedule-nightly")
    text = page(admin)
    assert flashes(text, "ok") == [
        f"added sweep nightly: {web_env.schedules}/nightly.toml",
        f"installed 1 schedule in {web_env.cron_dir}/lmsav"]
    assert flashes(text, "warning") == [
        (f"warning: {web_env.root}/missing: no such file or directory (yet); the sweep reports "
        f"an error for it until it exists")]
    assert add_update(admin, "hourly").status_code == 302
    rows = listed()
    assert [(r["name"], r["kind"], r["schedule"]) for r in rows] == [
        ("hourly", "update", "17 * * * *"), ("nightly", "sweep", "0 3 * * *")]
    assert rows[1]["paths"] == [str(web_env.root), f"{web_env.root}/missing"]
    assert rows[1]["scan_options"] == ["--exclude", "*.log", "-j", "2"]
    assert rows[1]["incremental"] is True
    assert "cron run --quiet nightly" in (web_env.cron_dir / "lmsav").read_text()

    assert post(admin, "/schedules/nightly/remove").status_code == 302
    assert flashes(page(admin), "ok") == ["removed nightly",
                                          f"installed 1 schedule in {web_env.cron_dir}/lmsav"]
    assert [r["name"] for r in listed()] == ["hourly"]
    assert [(a["action"], a["target"], a["outcome"]) for a in audit_lines(web_env)
            if a["action"].startswith("schedules.")] == [
        ("schedules.add", "nightly", "ok"), ("schedules.add", "hourly", "ok"),
        ("schedules.remove", "nightly", "ok")]


@pytest.mark.parametrize("form, cli_args", [
    ({"kind": "update", "name": "x", "schedule": "61 * * * *"},
     ["add", "update", "x", "--schedule", "61 * * * *"]),
    ({"kind": "update", "name": "x", "schedule": "@reboot"},
     ["add", "update", "x", "--schedule", "@reboot"]),
    ({"kind": "update", "name": "no.pe", "schedule": "@daily"},
     ["add", "update", "no.pe", "--schedule", "@daily"]),
    ({"kind": "update", "name": "x", "schedule": "0 3 1 * mon", "systemd": "on"},
     ["add", "update", "x", "--schedule", "0 3 1 * mon", "--systemd"]),
    ({"kind": "sweep", "name": "x", "schedule": "0 3 *", "paths": "/srv"},
     ["add", "sweep", "x", "--schedule", "0 3 *", "--paths", "/srv"]),
    ({"kind": "sweep", "name": "x", "schedule": "@daily", "paths": "/srv",
      "scan_options": "--exlude *.log"},
     ["add", "sweep", "x", "--schedule", "@daily", "--paths", "/srv", "--exlude", "*.log"]),
    ({"kind": "sweep", "name": "x", "schedule": "@daily", "paths": "/srv",
      "scan_options": "--watch"},
     ["add", "sweep", "x", "--schedule", "@daily", "--paths", "/srv", "--watch"]),
    ({"kind": "sweep", "name": "x", "schedule": "@daily", "paths": ""},
     ["add", "sweep", "x", "--schedule", "@daily"]),
])
def test_a_mistake_is_the_one_line_error_of_cron_add(admin, web_env, form, cli_args):
    expected = cli(*cli_args)
    assert expected.exit_code == 2
    response = post(admin, "/schedules/add", form)
    assert response.status_code == 302
    assert [f"lmsav: error: {m}\n" for m in flashes(page(admin), "error")] == [expected.stderr]
    assert not web_env.schedules.exists() or listed() == []
    assert list(web_env.cron_dir.iterdir()) == []
    assert audit_lines(web_env)[-1]["outcome"] == "refused"


def test_an_existing_name_needs_replace(admin, web_env):
    add_update(admin, "hourly")
    add_update(admin, "hourly", "@daily")
    assert flashes(page(admin), "error") == [
        (f"schedule 'hourly' exists ({web_env.schedules}/hourly.toml); use --replace, or "
        f"`lmsav cron remove hourly` first")]
    add_update(admin, "hourly", "@daily", replace="on")
    assert flashes(page(admin), "ok")[0] == \
        f"replaced update hourly: {web_env.schedules}/hourly.toml"
    assert [r["schedule"] for r in listed()] == ["@daily"]


def test_a_systemd_schedule_says_what_to_run(admin, web_env):
    add_update(admin, "timer", "@daily", systemd="on")
    text = page(admin)
    assert f"wrote {web_env.units}/lmsav-update-timer.timer" in flashes(text, "ok")
    systemctl = " ".join(install.resolve_target().systemctl())
    assert flashes(text, "warning") == [
        (f"to apply this to systemd, run: {systemctl} daemon-reload && {systemctl} enable --now "
        f"lmsav-update-timer.timer")]
    assert "(systemd timer)" in text


def test_unknown_and_malformed_names_in_the_url(admin, web_env):
    for name in ("ghost", "bad.name", "x" * 70):
        for verb in ("run", "remove"):
            response = post(admin, f"/schedules/{name}/{verb}")
            assert response.status_code == 302
            [message] = flashes(page(admin), "error")
            assert message.startswith((f"no schedule '{name}' in {web_env.schedules}",
                                       f'NAME "{name}": expected letters, digits'))
    assert post(admin, "/schedules/../../etc/run").status_code == 404
    response = post(admin, "/schedules/a%0D%0ALocation:%20x/run")
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/")


def test_run_now_of_an_update_schedule_switches_the_version(admin, web_env):
    copy_genuine(web_env.source, 3)
    add_update(admin, "hourly")
    response = post(admin, "/schedules/hourly/run")
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/schedules/#schedule-hourly")
    runs = console.runs_for(web_env.state_dir / "web" / "runs")
    done = runs.wait("schedule-hourly", WAIT)
    assert (done.result, done.by) == ("updated", "alice"), done.output
    assert Store(web_env.bases).current_label() == "test-3"
    [row] = listed()
    assert (row["last"]["result"], row["last"]["version"]) == ("updated", "test-3")
    text = page(admin)
    assert "version test-3" in text
    assert html.escape(done.message) in text and done.message.startswith("name=hourly kind=update")
    assert audit_lines(web_env)[-1]["action"] == "schedules.run"


def test_a_sweep_run_now_is_logged_like_a_cron_run(admin, web_env):
    copy_genuine(web_env.source, 3)
    add_update(admin, "update")
    post(admin, "/schedules/update/run")
    runs = console.runs_for(web_env.state_dir / "web" / "runs")
    assert runs.wait("schedule-update", WAIT).result == "updated"
    data = web_env.root / "data"
    data.mkdir()
    (data / "clean.txt").write_text("nothing here\n")
    (data / "eicar.com").write_bytes(
        b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    post(admin, "/schedules/add", {"kind": "sweep", "name": "data", "schedule": "@daily",
                                   "paths": str(data)})
    post(admin, "/schedules/data/run")
    done = runs.wait("schedule-data", WAIT)
    row = {r["name"]: r for r in listed()}["data"]
    assert done.result == row["last"]["result"] == "found", done.output
    assert row["last"]["found"] == 1
    assert row["last"]["files"] == 2
    assert (web_env.state_dir / "log" / "cron.log").read_text().count("name=data ") == 1


def test_viewers_and_forms_without_a_token_are_refused(admin, viewer, web_env):
    add_update(admin, "hourly")
    for url, data in (("/schedules/add", {"kind": "update", "name": "x", "schedule": "@daily"}),
                      ("/schedules/hourly/remove", {}), ("/schedules/hourly/run", {})):
        assert post(viewer, url, data).status_code == 403
        response = admin.post(url, data=data, base_url=BASE_URL,
                              headers={"Referer": BASE_URL + "/schedules/"})
        assert response.status_code == 400
    assert [r["name"] for r in listed()] == ["hourly"]
    assert console.runs_for(web_env.state_dir / "web" / "runs").get("schedule-hourly") is None
