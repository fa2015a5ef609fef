"""`lmsav update --status` shows when `lmsav cron` runs the next update of the same directory: the
earliest of the update schedules beside the configuration in use, computed as `lmsav cron list`
computes it; none when there is none, or when --database names another directory."""

from __future__ import annotations

import datetime
import time

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.cron.schedules import Schedule, Store
from lmsav.update.status import next_scheduled, status
from tests.cron.conftest import cron_env  # noqa: F401 (a fixture)
from tests.jsonlines import one_object, records

NO_SCHEDULE = "no scheduled update (lmsav cron add update NAME --schedule EXPR)"


@pytest.fixture
def env(cron_env):  # noqa: F811
    runner = CliRunner()

    def lmsav(*args):
        return runner.invoke(main, ["--config", str(cron_env.config), *map(str, args)],
                             catch_exceptions=False)

    cron_env.lmsav = lmsav
    return cron_env


def add(env, kind: str, name: str, when: str, *extra: str) -> None:
    args = ["cron", "add", kind, name, *extra, "--schedule", when]
    result = env.lmsav(*args)
    assert result.exit_code == 0, result.output


def expected_next(when: str, stamp: float) -> datetime.datetime:
    start = datetime.datetime.fromtimestamp(stamp).astimezone()
    return Schedule("x", when, kind="update").expression.next_times(1, start)[0]


def test_without_a_schedule_status_says_how_to_add_one(env):
    result = env.lmsav("update", "--status")
    assert NO_SCHEDULE in result.stdout
    report = one_object(env.lmsav("update", "--status", "--json").stdout)
    assert report["next_run"] is None and report["schedule"] is None


def test_status_shows_the_first_update_schedule_as_cron_list_does(env):
    add(env, "update", "daily", "30 4 * * *")
    add(env, "update", "hourly", "17 * * * *")
    add(env, "sweep", "often", "* * * * *", str(env.data))  # a sweep updates nothing
    before = time.time()
    report = one_object(env.lmsav("update", "--status", "--json").stdout)
    assert report["schedule"] == "hourly"
    moment = datetime.datetime.fromisoformat(report["next_run"])
    assert moment.tzinfo is not None and moment.minute == 17 and moment.second == 0
    assert moment in (expected_next("17 * * * *", before),
                      expected_next("17 * * * *", time.time()))
    listed = {s["name"]: s for s in records(env.lmsav("cron", "list", "--json").stdout)}
    assert listed["hourly"]["next"][0] == report["next_run"]

    text = env.lmsav("update", "--status").stdout
    when = moment.strftime("%Y-%m-%d %H:%M:%S")
    assert f"next scheduled run: {when} (" in text and "from now) (schedule hourly)" in text
    assert NO_SCHEDULE not in text

    env.lmsav("cron", "remove", "hourly")
    report = one_object(env.lmsav("update", "--status", "--json").stdout)
    assert report["schedule"] == "daily" and report["next_run"] == listed["daily"]["next"][0]


def test_another_database_directory_is_not_the_one_scheduled(env):
    add(env, "update", "hourly", "17 * * * *")
    other = env.tmp / "other-bases"
    report = one_object(env.lmsav("update", "--status", "--json", "--database", other).stdout)
    assert report["directory"] == str(other)
    assert report["next_run"] is None and report["schedule"] is None
    # Naming the configured directory itself is the same directory.
    same = env.state / "bases"
    report = one_object(env.lmsav("update", "--status", "--json", "--database", same).stdout)
    assert report["schedule"] == "hourly"


def test_the_configured_update_dir_is_what_the_schedules_update(env):
    bases = env.tmp / "elsewhere"
    env.config.write_text(f'[paths]\nstate_dir = "{env.state}"\n\n[update]\ndir = "{bases}"\n')
    add(env, "update", "nightly", "@daily")
    before = time.time()
    report = one_object(env.lmsav("update", "--status", "--json").stdout)
    assert report["directory"] == str(bases) and report["schedule"] == "nightly"
    assert datetime.datetime.fromisoformat(report["next_run"]) in (
        expected_next("0 0 * * *", before), expected_next("0 0 * * *", time.time()))


def test_a_broken_schedule_file_is_a_warning_and_the_others_still_count(env):
    add(env, "update", "hourly", "17 * * * *")
    (env.schedules / "broken.toml").write_text('kind = "update"\nname = "broken"\n'
                                               'schedule = "61 * * * *"\n')
    result = env.lmsav("update", "--status")
    assert "(schedule hourly)" in result.stdout
    assert "broken.toml: schedule = \"61 * * * *\"" in result.stderr
    assert result.stderr.count("\n") == result.stderr.count("lmsav: warning:")


def test_next_scheduled_from_a_given_moment(tmp_path):
    store = Store(tmp_path / "schedules.d")
    store.save(Schedule("weekly", "0 5 * * mon", kind="update"))
    store.save(Schedule("sweep", "* * * * *", paths=("/srv",)))
    now = datetime.datetime(2026, 12, 4, 13, 0).astimezone()  # a Friday
    warnings: list[str] = []
    name, moment = next_scheduled(store.directory, now.timestamp(), warnings)
    assert name == "weekly" and warnings == []
    assert (moment.year, moment.month, moment.day, moment.hour, moment.minute) == \
        (2026, 12, 7, 5, 0)
    report = status(tmp_path / "bases", tmp_path / "bases" / "current", max_age=0,
                    check_interval=0, network=False, now=now.timestamp(),
                    schedules=store.directory)
    assert report["schedule"] == "weekly" and report["next_run"] == moment.isoformat()
    assert next_scheduled(tmp_path / "none", now.timestamp(), warnings) is None
