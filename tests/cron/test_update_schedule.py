"""`lmsav cron add update`: a schedule whose job runs `lmsav update` with the configuration in
use. Added, listed, installed for cron and systemd, run for real against a directory source (no
network), never twice at once, and removed."""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.jsonlines import records
from tests.scanner.signatures.test_cvd import write_cud
from tests.update.conftest import md5_line

SAMPLE = b"lmsav scheduled update sample\n"
LINE_START = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "


def lmsav_executable() -> str:
    installed = Path(sys.executable).parent / "lmsav"
    if not installed.is_file():
        pytest.skip(f"{installed} is missing: lmsav is not installed in this environment")
    return str(installed)


@pytest.fixture
def env(cron_env, monkeypatch):
    """A configuration whose [update] source is a directory holding one unsigned .cud,
    named explicitly in [update] databases (as lmsav update accepts one)."""
    source = cron_env.tmp / "source"
    source.mkdir()
    write_cud(source / "extra.cud", {"extra.hdb": md5_line(SAMPLE, "Lmsav.Scheduled")})
    cron_env.config.write_text(
        f'[paths]\nstate_dir = "{cron_env.state}"\n'
        f'database = "{cron_env.state}/bases/current"\n\n'
        f'[update]\nsources = ["{source}"]\ndatabases = ["extra.cud"]\n')
    monkeypatch.setenv("LMSAV_EXECUTABLE", lmsav_executable())
    cron_env.source = source
    cron_env.log = cron_env.state / "log" / "cron.log"
    cron_env.last = cron_env.state / "cron" / "hourly.last.json"
    return cron_env


def add_hourly(env, *extra: str):
    result = env.invoke("add", "update", "hourly", "--schedule", "17 * * * *", *extra)
    assert result.exit_code == 0, result.output
    return result


def test_add_stores_an_update_schedule_and_installs_its_cron_line(env):
    result = add_hourly(env)
    assert f"added update hourly: {env.schedules}/hourly.toml" in result.stdout
    assert "runs:     lmsav update" in result.stdout and "paths:" not in result.stdout

    stored = tomllib.loads((env.schedules / "hourly.toml").read_text())
    assert stored["kind"] == "update" and stored["schedule"] == "17 * * * *"
    assert "paths" not in stored and "scan_options" not in stored
    cron = env.cron_file.read_text()
    assert "# update hourly: lmsav update\n" in cron
    assert re.search(rf"^17 \* \* \* \* \S+ {re.escape(lmsav_executable())} --config "
                     rf"{re.escape(str(env.config))} cron run --quiet hourly$", cron, re.MULTILINE), cron

    listing = env.invoke("list")
    assert "hourly  update" in listing.output and "last:     never ran" in listing.output
    [data] = records(env.invoke("list", "--json").stdout)
    assert data["kind"] == "update" and all(":17:00" in t for t in data["next"])
    shown = env.invoke("show", "hourly")
    assert shown.exit_code == 0 and "cron run --quiet hourly" in shown.output

    again = env.invoke("add", "update", "hourly", "--schedule", "@daily")
    assert again.exit_code == 2 and "use --replace" in again.output
    add_hourly(env, "--replace")


def test_an_update_schedule_as_systemd_units(env):
    add_hourly(env, "--systemd")
    service = (env.units / "lmsav-update-hourly.service").read_text()
    timer = (env.units / "lmsav-update-hourly.timer").read_text()
    assert re.search(r"^ExecStart=\S+ --config \S+ cron run --quiet hourly$", service, re.MULTILINE)
    assert "OnCalendar=*-*-* *:17:00" in timer and "Persistent=true" in timer
    assert not env.cron_file.exists()


def test_bad_input_is_one_line(env):
    for args, message in [
        (("--schedule", "61 * * * *"), '--schedule "61 * * * *"'),
        (("--schedule", "@hourly", "--enable"), "--enable goes with --systemd"),
    ]:
        result = env.invoke("add", "update", "hourly", *args)
        assert result.exit_code == 2 and message in result.stderr
        assert result.stderr.count("\n") == 1
    result = env.invoke("add", "update", "no/slash", "--schedule", "@hourly")
    assert result.exit_code == 2 and 'NAME "no/slash"' in result.stderr
    assert not (env.schedules / "hourly.toml").exists()


def test_run_updates_from_the_configured_source_and_logs_one_line(env):
    add_hourly(env)
    result = env.invoke("run", "hourly")
    assert result.exit_code == 0, result.output
    assert "updated: extra-7" in result.stdout

    [line] = env.log.read_text().splitlines()
    assert re.fullmatch(LINE_START + r"name=hourly kind=update result=updated exit=0 "
                        r"version=extra-7 seconds=[\d.]+", line), line
    last = json.loads(env.last.read_text())
    assert last["result"] == "updated" and last["version"] == "extra-7" and last["exit"] == 0
    assert (env.state / "bases" / "current" / "extra.cud").is_file()
    listing = env.invoke("list")
    assert re.search(r"last:     \S+ updated, version extra-7, [\d.]+ s", listing.output)

    # The database the configuration names now detects the sample.
    sample = env.tmp / "sample.txt"
    sample.write_bytes(SAMPLE)
    scan = CliRunner().invoke(main, ["--config", str(env.config), "scan", str(sample)])
    assert scan.exit_code == 1 and "Lmsav.Scheduled" in scan.output

    # Again: nothing new, and --quiet (what cron runs) prints nothing.
    quiet = env.invoke("run", "--quiet", "hourly")
    assert quiet.exit_code == 0 and quiet.output == ""
    second = env.log.read_text().splitlines()[1]
    assert " result=current exit=0 version=extra-7 " in second


def test_a_failed_update_is_logged_and_printed_even_when_quiet(env):
    add_hourly(env)
    os.rename(env.source, env.tmp / "gone")
    result = env.invoke("run", "--quiet", "hourly")
    assert result.exit_code == 1
    [line] = env.log.read_text().splitlines()
    assert " name=hourly kind=update result=failed exit=1 version=- " in line
    assert f'error="{env.source}' in line, line
    assert "lmsav cron: name=hourly kind=update result=failed" in result.stdout
    assert json.loads(env.last.read_text())["result"] == "failed"


def test_runs_never_overlap(env):
    add_hourly(env)
    lock = env.state / "cron" / "hourly.lock"
    lock.parent.mkdir(parents=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        result = env.invoke("run", "hourly")
    finally:
        os.close(fd)
    assert result.exit_code == 0
    assert "already running (pid 4242)" in result.stderr
    [line] = env.log.read_text().splitlines()
    assert line.endswith('name=hourly result=skipped reason="already running (pid 4242)"')
    assert not (env.state / "bases").exists()  # no update ran
    assert not env.last.exists()


def test_remove_takes_the_schedule_out_of_cron(env):
    add_hourly(env)
    env.invoke("add", "sweep", "nightly", "--paths", env.data, "--schedule", "0 3 * * *")
    result = env.invoke("remove", "hourly")
    assert result.exit_code == 0, result.output
    assert not (env.schedules / "hourly.toml").exists()
    cron = env.cron_file.read_text()
    assert "hourly" not in cron and "# sweep nightly:" in cron
    env.invoke("remove", "nightly")
    assert not env.cron_file.exists()
    missing = env.invoke("run", "hourly")
    assert missing.exit_code == 2 and "no schedule 'hourly'" in missing.stderr
