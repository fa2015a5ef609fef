"""`lmsav setup` with the database lmsav update keeps: the configuration points at
/var/lib/lmsav/bases/current, step 4 runs the first update, step 5 installs an hourly update at
a minute drawn once, and --remove takes the schedule out again. In a tests.sysroot namespace,
with a directory as the update source (no network)."""

from __future__ import annotations

import json
import os
import re
import tomllib

import pytest

from tests.scanner.signatures.test_cvd import write_cud
from tests.update.conftest import md5_line

pytestmark = pytest.mark.integration

SOURCE = "/run/lmsav-tests/source"
SAMPLE = b"lmsav setup first update sample\n"
ANSWERS = "/etc/answers.toml"


def environment() -> dict:
    """Root's environment at a shell: nothing that points lmsav at another configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}


@pytest.fixture
def server(isolated_sysroot):
    root = isolated_sysroot
    if not root.path("/etc/cron.d").is_dir():
        pytest.skip("no /etc/cron.d here (cron is not installed)")
    root.lmsav = root.program("lmsav")
    source = root.path(SOURCE)
    source.mkdir(parents=True)
    # An unsigned .cud: lmsav update accepts one only when [update] databases names it.
    write_cud(source / "extra.cud", {"extra.hdb": md5_line(SAMPLE, "Lmsav.SetupUpdate")})
    root.path("/run/lmsav-tests/sample.txt").write_bytes(SAMPLE)
    return root


def answers(server, sources: list[str]) -> None:
    server.path(ANSWERS).write_text(
        'mta = "none"\nservices = "print"\nself_test = false\ndatabase = "update"\n'
        f"update_sources = {json.dumps(sources)}\n"
        'update_databases = ["extra.cud"]\n')


def setup(server, *args: str):
    return server.run(server.lmsav, "setup", "--yes", *args, "--answers", ANSWERS,
                      "--lmsav", server.lmsav, env=environment(), check=False, timeout=600)


def manifest_minute(server) -> int:
    manifest = json.loads(server.path("/var/lib/lmsav/setup/manifest.json").read_text())
    [entry] = [e for e in manifest["entries"] if e["key"] == "schedule:setup-update"]
    assert entry["kind"] == "schedule" and entry["name"] == "setup-update"
    return entry["minute"]


def update_line(server) -> str:
    cron = server.path("/etc/cron.d/lmsav").read_text()
    [line] = [line for line in cron.splitlines() if line.endswith(" setup-update")]
    return line


def test_setup_with_updated_database(server):
    answers(server, [SOURCE])
    proc = setup(server)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lmsav update: updated: extra-7" in proc.stdout

    config = tomllib.loads(server.path("/etc/lmsav/lmsav.toml").read_text())
    assert config["paths"]["database"] == "/var/lib/lmsav/bases/current"
    assert config["update"]["sources"] == [SOURCE]
    assert config["update"]["databases"] == ["extra.cud"]

    # The first update made the database the configuration names, and it detects.
    assert server.path("/var/lib/lmsav/bases/current").is_symlink()
    assert server.path("/var/lib/lmsav/bases/current/extra.cud").is_file()
    scan = server.run(server.lmsav, "scan", "/run/lmsav-tests/sample.txt", env=environment(),
                      check=False)
    assert scan.returncode == 1 and "Lmsav.SetupUpdate" in scan.stdout, scan.stdout + scan.stderr

    # Step 5: hourly at the minute the manifest keeps.
    minute = manifest_minute(server)
    assert 0 <= minute < 60
    line = update_line(server)
    assert re.fullmatch(rf"{minute} \* \* \* \* root \S+ --config /etc/lmsav/lmsav\.toml cron "
                        rf"run --quiet setup-update", line), line
    assert f"database update every hour at minute {minute} " in proc.stdout
    schedule = tomllib.loads(server.path("/etc/lmsav/schedules.d/setup-update.toml").read_text())
    assert schedule["kind"] == "update" and schedule["schedule"] == f"{minute} * * * *"

    # The installed job works: one run, logged in one line.
    run = server.run(server.lmsav, "cron", "run", "--quiet", "setup-update", env=environment(),
                     check=False)
    assert run.returncode == 0 and run.stdout == "", run.stdout + run.stderr
    assert " name=setup-update kind=update result=current exit=0 version=extra-7 " in \
        server.path("/var/lib/lmsav/log/cron.log").read_text()

    # Again: nothing changes, the minute included.
    again = setup(server)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "lmsav update: current: extra-7" in again.stdout
    assert manifest_minute(server) == minute and update_line(server) == line

    # --remove takes the schedule out with everything else.
    removed = server.run(server.lmsav, "setup", "--remove", "--yes", "--lmsav", server.lmsav,
                         env=environment(), check=False)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "removed the schedule setup-update" in removed.stdout
    cron = server.path("/etc/cron.d/lmsav")
    assert not cron.exists() or "setup-update" not in cron.read_text()
    assert not server.path("/etc/lmsav").exists()


def test_a_first_update_that_fails_stops_setup_with_one_line(server):
    answers(server, ["/run/lmsav-tests/nowhere"])
    proc = setup(server)
    assert proc.returncode == 2
    [error] = proc.stderr.splitlines()
    assert error.startswith("lmsav: error: first database update failed: "
                            "/run/lmsav-tests/nowhere: ")
    assert "run `lmsav update` once a source is reachable, or choose another database" in error
    assert "[5/9]" not in proc.stdout
    assert not server.path("/etc/lmsav/schedules.d/setup-update.toml").exists()
    removed = server.run(server.lmsav, "setup", "--remove", "--yes", "--lmsav", server.lmsav,
                         env=environment(), check=False)
    assert removed.returncode == 0, removed.stdout + removed.stderr
