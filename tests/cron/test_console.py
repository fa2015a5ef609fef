"""The schedules service of the web console: the same checks and one-line errors as `lmsav cron
add`, changes `lmsav cron list` sees, and commands run in the background one at a time."""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from lmsav.cron import console, install
from lmsav.cron.console import ConsoleError, Place

from ..jsonlines import records


@pytest.fixture
def env(cron_env):
    cron_env.place = Place(cron_env.config, cron_env.state)
    return cron_env


def cli_error(env, *args) -> str:
    """The one line `lmsav cron` prints for a mistake, without its ``lmsav: error:``."""
    result = env.invoke(*args)
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("lmsav: error: ")
    return line[len("lmsav: error: "):]


@pytest.mark.parametrize("name, when, options", [
    ("x", "61 * * * *", ""),
    ("x", "0 3 * *", ""),
    ("x", "@reboot", ""),
    ("x", "@fortnightly", ""),
    ("no/pe", "@daily", ""),
    ("-x", "@daily", ""),
    ("x", "@daily", "--bogus"),
    ("x", "@daily", "--exlude *.log"),
    ("x", "@daily", "-j many"),
    ("x", "@daily", "--report /tmp/r"),
    ("x", "@daily", "--watch"),
    ("x", "@daily", "--action burn"),
])
def test_a_sweep_is_refused_with_the_error_of_cron_add(env, name, when, options):
    expected = cli_error(env, "add", "sweep", name, "--paths", env.data, "--schedule", when,
                         *options.split())
    with pytest.raises(ConsoleError) as refused:
        schedule = console.sweep_schedule(name, when, [str(env.data)], options)
        console.add(env.place, schedule)
    assert str(refused.value) == expected
    assert not env.schedules.exists()
    assert list(env.cron_dir.iterdir()) == []


@pytest.mark.parametrize("name, when", [("x", "0 3 * * 8"), ("bad name", "@daily")])
def test_an_update_is_refused_with_the_error_of_cron_add(env, name, when):
    expected = cli_error(env, "add", "update", name, "--schedule", when)
    with pytest.raises(ConsoleError) as refused:
        console.update_schedule(name, when)
    assert str(refused.value) == expected


def test_a_systemd_schedule_without_a_calendar_form_is_refused_as_the_cli_does(env):
    expected = cli_error(env, "add", "update", "x", "--schedule", "0 3 1 * mon", "--systemd")
    with pytest.raises(ConsoleError) as refused:
        console.update_schedule("x", "0 3 1 * mon", systemd=True)
    assert str(refused.value) == expected


def test_paths_must_be_absolute_and_present(env):
    with pytest.raises(ConsoleError, match="no paths to sweep"):
        console.sweep_schedule("x", "@daily", ["", "  "])
    with pytest.raises(ConsoleError, match="'srv/mail': an absolute path"):
        console.sweep_schedule("x", "@daily", ["srv/mail"])
    with pytest.raises(ConsoleError, match="No closing quotation"):
        console.sweep_schedule("x", "@daily", [str(env.data)], "--exclude '*.log")


def test_added_and_removed_schedules_are_what_cron_list_shows(env):
    sweep = console.sweep_schedule("nightly", "0 3 * * *", [str(env.data), str(env.data) + "/"],
                                   "--exclude '*.log' -j 2", incremental=False)
    assert sweep.paths == (str(env.data),)  # the same directory once
    changed = console.add(env.place, sweep)
    assert changed.path == env.schedules / "nightly.toml" and not changed.replaced
    assert changed.messages == [f"installed 1 schedule in {env.cron_file}"]
    console.add(env.place, console.update_schedule("hourly", "17 * * * *"))

    listed = records(env.invoke("list", "--json").output)
    assert [(r["name"], r["kind"], r["schedule"]) for r in listed] == [
        ("hourly", "update", "17 * * * *"), ("nightly", "sweep", "0 3 * * *")]
    assert listed[1]["scan_options"] == ["--exclude", "*.log", "-j", "2"]
    assert listed[1]["incremental"] is False
    rows, broken = console.list_schedules(env.place)
    assert broken == []
    assert [row.to_json() for row in rows] == listed
    assert "cron run --quiet hourly" in env.cron_file.read_text()

    with pytest.raises(ConsoleError) as exists:
        console.add(env.place, console.update_schedule("hourly", "@daily"))
    assert str(exists.value) == cli_error(env, "add", "update", "hourly", "--schedule", "@daily")
    replaced = console.add(env.place, console.update_schedule("hourly", "@daily"), replace=True)
    assert replaced.replaced

    console.remove(env.place, "nightly")
    assert [r["name"] for r in records(env.invoke("list", "--json").output)] == ["hourly"]
    assert "nightly" not in env.cron_file.read_text()
    with pytest.raises(ConsoleError) as missing:
        console.remove(env.place, "nightly")
    assert str(missing.value) == cli_error(env, "remove", "nightly")


def test_a_broken_schedule_file_is_listed_as_its_error(env):
    console.add(env.place, console.update_schedule("good", "@daily"))
    (env.schedules / "bad.toml").write_text(
        'kind = "update"\nname = "bad"\nschedule = "61 * * * *"\n')
    rows, broken = console.list_schedules(env.place)
    assert [row.schedule.name for row in rows] == ["good"]
    assert broken == [(f'{env.schedules / "bad.toml"}: schedule = "61 * * * *": minute "61": 61 '
                      f"is out of range 0-59")]


def test_a_systemd_schedule_says_what_systemctl_must_do(env):
    changed = console.add(env.place, console.update_schedule("timer", "@daily", systemd=True))
    assert (env.units / "lmsav-update-timer.timer").is_file()
    systemctl = " ".join(install.resolve_target().systemctl())
    assert changed.systemctl == (f"{systemctl} daemon-reload && {systemctl} enable --now "
                                 f"lmsav-update-timer.timer")


def test_a_name_from_outside_is_checked_before_it_reaches_a_path(env):
    for name in ("../etc/passwd", "a/b", "", "x" * 65):
        with pytest.raises(ConsoleError, match="expected letters, digits"):
            console.run_argv(env.place, name)
    with pytest.raises(ConsoleError, match="no schedule 'ghost'"):
        console.run_argv(env.place, "ghost")


def test_the_run_command_is_cron_run_with_the_configuration(env):
    console.add(env.place, console.update_schedule("hourly", "@hourly"))
    assert console.run_argv(env.place, "hourly", profile="fast") == [
        sys.executable, "-m", "lmsav", "--config", str(env.config), "--profile", "fast",
        "cron", "run", "hourly"]


# -- background runs -------------------------------------------------------------------------

def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def summary(code, lines):
    return ("ok" if code == 0 else "error"), (lines[-1] if lines else ""), {"lines": len(lines)}


def test_a_background_run_is_followed_and_kept(tmp_path):
    runs = console.Runs(tmp_path / "runs")
    run = runs.start("update", python("import time; time.sleep(0.3); print('one'); print('two')"),
                     what="a test", by="alice", summary=summary)
    assert run.running and run.pid
    assert runs.get("update").running
    with pytest.raises(console.AlreadyRunning, match="a test is running already"):
        runs.start("update", python("pass"), what="another", by="bob", summary=summary)
    done = runs.wait("update", 30)
    assert (done.result, done.message, done.exit, done.output) == ("ok", "two", 0, ["one", "two"])
    assert done.finished and done.by == "alice" and done.detail == {"lines": 2}
    # What a console started later (after a restart) shows.
    again = console.Runs(tmp_path / "runs").get("update")
    assert again.to_json() == done.to_json()
    assert runs.start("update", python("raise SystemExit(3)"), what="failing", by="bob",
                      summary=summary).running
    failed = runs.wait("update", 30)
    assert (failed.result, failed.exit, failed.by) == ("error", 3, "bob")


def test_only_the_tail_of_a_long_output_is_kept(tmp_path):
    runs = console.Runs(tmp_path)
    runs.start("schedule-big", python("for i in range(100000): print(i)"), what="many lines",
               by="alice", summary=summary)
    done = runs.wait("schedule-big", 60)
    assert done.output == [str(i) for i in range(100000 - console.OUTPUT_LINES, 100000)]
    assert done.detail == {"lines": console.KEEP_LINES}


def test_a_run_the_console_no_longer_follows_is_unknown(tmp_path):
    runs = console.Runs(tmp_path)
    runs.start("update", python("import time; time.sleep(5)"), what="slow", by="alice",
               summary=summary)
    try:
        orphan = console.Runs(tmp_path).get("update")  # another process, after a restart
        assert orphan.result == "unknown" and "restarted" in orphan.message
    finally:
        os.kill(runs.get("update").pid, signal.SIGTERM)
    assert runs.wait("update", 30).exit == -signal.SIGTERM


def test_a_command_that_cannot_start_is_an_oserror_and_nothing_runs(tmp_path):
    runs = console.Runs(tmp_path)
    with pytest.raises(OSError):
        runs.start("update", [str(tmp_path / "missing")], what="x", by="a", summary=summary)
    assert runs.get("update") is None
    assert runs.start("update", python("pass"), what="x", by="a", summary=summary).running


def test_keys_are_checked():
    with pytest.raises(ValueError):
        console.Runs("/nonexistent").get("../x")


def test_runs_for_is_one_per_directory(tmp_path):
    assert console.runs_for(tmp_path) is console.runs_for(tmp_path / ".")
    assert console.runs_for(tmp_path) is not console.runs_for(tmp_path / "other")


@pytest.mark.parametrize("code, lines, expected", [
    (0, ["lmsav cron: name=hourly kind=update result=updated exit=0 version=test-3 seconds=1.2"],
     ("updated", "name=hourly kind=update result=updated exit=0 version=test-3 seconds=1.2")),
    (1, ["/srv/x: Eicar FOUND", ("lmsav cron: name=n result=found exit=1 files=3 found=1 "
                                "seconds=0.1 report=/r.jsonl")],
     ("found", "name=n result=found exit=1 files=3 found=1 seconds=0.1 report=/r.jsonl")),
    (0, ["lmsav: n is already running (pid 42); not started again"],
     ("skipped", "n is already running (pid 42); not started again")),
    (2, ["lmsav: error: no schedule 'n' in /etc/schedules.d (schedules: none)"],
     ("error", "no schedule 'n' in /etc/schedules.d (schedules: none)")),
    (-9, [], ("error", "lmsav cron run exited with -9 and logged no result")),
])
def test_what_cron_run_said(code, lines, expected):
    result, message, _fields = console.cron_run_summary(code, lines)
    assert (result, message) == expected


def test_a_real_cron_run_in_the_background(env):
    """A sweep of an empty directory with no database: cron run logs the error, and the
    console's record and `lmsav cron list` agree on it."""
    env.config.write_text(f'[paths]\nstate_dir = "{env.state}"\ndatabase = "{env.tmp}/nodb"\n')
    console.add(env.place, console.sweep_schedule("empty", "@daily", [str(env.data)]))
    runs = console.Runs(env.tmp / "runs")
    runs.start("schedule-empty", console.run_argv(env.place, "empty"), what="cron run",
               by="alice", summary=console.cron_run_summary)
    started = time.monotonic()
    done = runs.wait("schedule-empty", 120)
    assert not done.running, time.monotonic() - started
    [listed] = records(env.invoke("list", "--json").output)
    assert listed["last"]["result"] == done.result == "error"
    assert done.message.startswith("name=empty result=error exit=2")
    assert json.loads((env.tmp / "runs" / "schedule-empty.json").read_text())["result"] == "error"
