"""`lmsav cron run NAME`, what the installed jobs call: the scan it starts, the log line, the
last result, the lock that keeps a second run of the same schedule from scanning, and pruning."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.cron.run import KEEP_REPORTS, prune_reports
from tests.conftest import EICAR
from tests.jsonlines import records

# Stands in for the lmsav executable: records its arguments (one per line), writes the report
# it is asked for, optionally waits for a file, prints a scan summary and exits $STUB_EXIT.
STUB = """#!/bin/sh
printf '%s\\n' "$@" > "$STUB_DIR/args.$$"
prev=""
for a in "$@"; do
  [ "$prev" = "--report" ] && echo '{"summary": {"scanned_files": 3}}' > "$a"
  prev="$a"
done
touch "$STUB_DIR/started"
while [ -n "$STUB_WAIT" ] && [ ! -e "$STUB_WAIT" ]; do sleep 0.02; done
echo "/data/bad.com: Eicar-Test-Signature FOUND" >&${STUB_FD:-1}
echo "----------- SCAN SUMMARY -----------"
echo "Scanned files: 3"
echo "Infected files: ${STUB_FOUND:-1}"
echo "scan ran" >&2
exit ${STUB_EXIT:-1}
"""

CODE = "from lmsav.cron.commands import cron; cron()"


@pytest.fixture
def env(cron_env, monkeypatch):
    stub = cron_env.tmp / "lmsav-stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    monkeypatch.setenv("LMSAV_EXECUTABLE", str(stub))
    monkeypatch.setenv("STUB_DIR", str(cron_env.tmp))
    for name in ("STUB_WAIT", "STUB_EXIT", "STUB_FOUND", "STUB_FD"):
        monkeypatch.delenv(name, raising=False)
    assert cron_env.invoke("add", "sweep", "nightly", "--paths", cron_env.data, "--schedule",
                           "0 3 * * *", "--exclude", "*.log").exit_code == 0
    cron_env.stub = stub
    cron_env.log = cron_env.state / "log" / "cron.log"
    cron_env.last = cron_env.state / "cron" / "nightly.last.json"
    return cron_env


def stub_calls(env) -> list[list[str]]:
    return [path.read_text().splitlines() for path in sorted(env.tmp.glob("args.*"))]


def test_run_starts_the_scan_logs_one_line_and_keeps_the_last_result(env):
    result = env.invoke("run", "nightly")
    assert result.exit_code == 1  # the scan found something

    [argv] = stub_calls(env)
    report = argv[argv.index("--report") + 1]
    assert re.fullmatch(rf"{env.state}/reports/nightly-\d{{8}}T\d{{6}}\.jsonl", report)
    assert argv == ["--config", str(env.config), "scan", "--incremental", "--report", report,
                    "--exclude", "*.log", "--", str(env.data)]

    assert "/data/bad.com: Eicar-Test-Signature FOUND" in result.stdout
    [line] = env.log.read_text().splitlines()
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d name=nightly result=found exit=1 "
        rf"files=3 found=1 seconds=[\d.]+ report={re.escape(report)}", line), line
    assert result.stdout.endswith(f"lmsav cron: {line.split(' ', 1)[1]}\n")

    last = json.loads(env.last.read_text())
    assert last["result"] == "found" and last["exit"] == 1 and last["files"] == 3
    assert last["found"] == 1 and last["report"] == report and last["error"] is None

    listing = env.invoke("list")
    assert re.search(r"last:     \S+ found, 3 files, 1 found, [\d.]+ s", listing.output)
    [data] = records(env.invoke("list", "--json").stdout)
    assert data["last"]["result"] == "found"


def test_quiet_prints_nothing_when_clean_and_everything_otherwise(env, monkeypatch):
    monkeypatch.setenv("STUB_EXIT", "0")
    monkeypatch.setenv("STUB_FOUND", "0")
    clean = env.invoke("run", "--quiet", "nightly")
    assert clean.exit_code == 0 and clean.output == ""
    assert "result=clean exit=0 files=3 found=0" in env.log.read_text()

    monkeypatch.setenv("STUB_EXIT", "1")
    monkeypatch.setenv("STUB_FOUND", "1")
    found = env.invoke("run", "--quiet", "nightly")
    assert found.exit_code == 1
    assert "Eicar-Test-Signature FOUND" in found.stdout and "result=found" in found.stdout


def test_incremental_off_and_scan_errors(env, monkeypatch):
    env.invoke("add", "sweep", "full", "--paths", env.data, "--schedule", "@weekly",
               "--no-incremental")
    monkeypatch.setenv("STUB_EXIT", "2")
    result = env.invoke("run", "full")
    assert result.exit_code == 2
    [argv] = stub_calls(env)
    assert "--no-incremental" in argv and "--incremental" not in argv
    assert 'result=error exit=2 files=3 found=1' in env.log.read_text()
    assert 'error="scan ran"' in env.log.read_text()  # the last line of its standard error


def test_a_missing_executable_or_schedule_is_an_error_in_the_log(env, monkeypatch):
    monkeypatch.setenv("LMSAV_EXECUTABLE", str(env.tmp / "gone"))
    result = env.invoke("run", "nightly")
    assert result.exit_code == 2
    assert f'error="cannot run {env.tmp}/gone: No such file or directory"' in \
        env.log.read_text()
    result = env.invoke("run", "nope")
    assert result.exit_code == 2 and "no schedule 'nope'" in result.stderr
    assert "name=nope result=error" in env.log.read_text()


def test_a_second_run_of_the_same_schedule_does_not_scan(env, monkeypatch):
    release = env.tmp / "release"
    first = subprocess.Popen([sys.executable, "-c", CODE, "run", "--quiet", "nightly"],
                             env={**os.environ, "STUB_WAIT": str(release)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not (env.tmp / "started").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.02)

        second = env.invoke("run", "nightly")
        assert second.exit_code == 0
        assert re.fullmatch(r"lmsav: nightly is already running \(pid \d+\); not started "
                            r"again\n", second.stderr)
        assert len(stub_calls(env)) == 1  # the second run started no scan
        assert env.invoke("run", "--quiet", "nightly").output == ""
    finally:
        release.touch()
        _out, err = first.communicate(timeout=20)
    assert first.returncode == 1, err
    lines = env.log.read_text().splitlines()
    assert [re.search(r"result=(\w+)", line)[1] for line in lines] == [
        "skipped", "skipped", "found"]
    assert 'reason="already running (pid ' in lines[0]
    assert json.loads(env.last.read_text())["result"] == "found"  # skips are not results
    assert len(stub_calls(env)) == 1

    # The lock is free again.
    assert env.invoke("run", "--quiet", "nightly").exit_code == 1
    assert len(stub_calls(env)) == 2


def _last_shown(env, name: str = "nightly") -> str:
    [line] = [line for line in env.invoke("show", name).output.splitlines()
              if line.startswith("  last:")]
    return line


def test_a_schedule_added_again_under_a_removed_ones_name_never_ran(env):
    assert env.invoke("run", "nightly").exit_code == 1
    assert "found" in _last_shown(env)
    assert env.invoke("remove", "nightly").exit_code == 0
    assert not env.last.exists()  # its reports stay; its last result goes with it
    assert list((env.state / "reports").glob("nightly-*.jsonl"))

    assert env.invoke("add", "sweep", "nightly", "--paths", env.tmp, "--schedule",
                      "@daily").exit_code == 0
    assert _last_shown(env) == "  last:     never ran"
    [data] = records(env.invoke("list", "--json").stdout)
    assert data["name"] == "nightly" and data["last"] is None
    assert "last:     never ran" in env.invoke("list").output


@pytest.mark.parametrize("how", ["--replace", "file deleted by hand"])
def test_adding_a_schedule_under_a_name_forgets_the_old_ones_last_result(env, how):
    assert env.invoke("run", "nightly").exit_code == 1
    args = ["add", "sweep", "nightly", "--paths", env.tmp, "--schedule", "@daily"]
    if how == "--replace":
        args.append("--replace")
    else:
        (env.schedules / "nightly.toml").unlink()
    assert env.invoke(*args).exit_code == 0
    assert not env.last.exists()
    assert _last_shown(env) == "  last:     never ran"


def test_a_run_of_the_old_schedule_ending_after_the_new_one_was_added_is_not_its_result(env):
    """A run of the replaced schedule still in progress writes its result when it ends."""
    assert env.invoke("add", "sweep", "nightly", "--paths", env.tmp, "--schedule", "@daily",
                      "--replace").exit_code == 0
    env.last.parent.mkdir(parents=True, exist_ok=True)
    env.last.write_text(json.dumps({"name": "nightly", "started": "2000-01-01T03:00:00+00:00",
                                    "result": "found", "exit": 1}))
    assert _last_shown(env) == "  last:     never ran"
    assert env.invoke("run", "nightly").exit_code == 1
    assert "found" in _last_shown(env)


def test_only_the_newest_reports_of_a_schedule_are_kept(tmp_path):
    for day in range(1, 36):
        (tmp_path / f"nightly-202611{day:02d}T030000.jsonl").write_text("")
    (tmp_path / "nightly-20261201T030000-2.jsonl").write_text("")
    (tmp_path / "nightly-20261201T030000.jsonl").write_text("")
    (tmp_path / "nightly-x-20260101T030000.jsonl").write_text("")  # schedule "nightly-x"
    (tmp_path / "notes.txt").write_text("")
    removed = prune_reports(tmp_path, "nightly")
    assert len(removed) == 37 - KEEP_REPORTS
    kept = sorted(p.name for p in tmp_path.glob("nightly-2*"))
    assert len(kept) == KEEP_REPORTS
    assert "nightly-20261201T030000-2.jsonl" in kept and "nightly-20261108T030000.jsonl" in kept
    assert "nightly-20261107T030000.jsonl" not in kept
    assert (tmp_path / "nightly-x-20260101T030000.jsonl").exists()
    assert (tmp_path / "notes.txt").exists()


def test_runs_prune_their_reports(env):
    reports = env.state / "reports"
    reports.mkdir(parents=True)
    for day in range(1, 31):
        (reports / f"nightly-200001{day:02d}T030000.jsonl").write_text("")
    env.invoke("run", "nightly")
    assert len(list(reports.glob("nightly-*.jsonl"))) == KEEP_REPORTS
    assert not (reports / "nightly-20000101T030000.jsonl").exists()


LMSAV_BIN = Path(sys.executable).parent / "lmsav"


def _scan_has_report_options() -> bool:
    try:
        done = subprocess.run([str(LMSAV_BIN), "scan", "--help"], capture_output=True,
                              text=True, timeout=60, check=False)
    except OSError:
        return False
    return "--report" in done.stdout and "--incremental" in done.stdout


@pytest.mark.skipif(not _scan_has_report_options(),
                    reason="lmsav scan has no --report/--incremental yet")
def test_real_scan_through_cron_run(env, monkeypatch):
    (env.data / "eicar.com").write_bytes(EICAR)
    (env.data / "clean.txt").write_text("hello\n")
    monkeypatch.setenv("LMSAV_EXECUTABLE", str(LMSAV_BIN))
    result = env.invoke("run", "--quiet", "nightly")
    assert result.exit_code == 1, result.output
    assert f"{env.data}/eicar.com: Eicar-Test-Signature FOUND" in result.stdout
    last = json.loads(env.last.read_text())
    assert last["result"] == "found" and last["files"] == 2 and last["found"] == 1
    assert last["report"] and Path(last["report"]).is_file()
    assert "Eicar-Test-Signature" in Path(last["report"]).read_text()

    # Clean now: the next run says so, and prints nothing under --quiet.
    (env.data / "eicar.com").unlink()
    result = env.invoke("run", "--quiet", "nightly")
    assert result.exit_code == 0 and result.output == ""
    assert json.loads(env.last.read_text())["result"] == "clean"
