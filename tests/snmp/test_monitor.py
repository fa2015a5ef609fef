"""`lmsav snmp monitor`: which changes make traps, and the traps Debian's snmptrapd receives."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav import paths, status
from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.snmp import monitor
from lmsav.snmp.commands import snmp_group
from lmsav.snmp.mib import BASE, format_oid
from lmsav.spool.nqueue import Spool
from lmsav.stats.store import open_store
from lmsav.update import state as update_state
from lmsav.update.store import CURRENT, META
from tests.snmp.conftest import lmsav_command, wait_for

B = format_oid(BASE)
DAY = 86400.0
TRAP = {name: f"{B}.0.{n}" for name, n in (
    ("virusFound", 1), ("updateFailed", 2), ("databaseOutdated", 3), ("componentStopped", 4),
    ("componentStarted", 5), ("spoolOverThreshold", 6))}


def write_config(tmp: Path, extra: str = "", run_dir: Path | None = None) -> Path:
    path = tmp / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{tmp / "state"}"\n'
                    f'run_dir = "{run_dir or tmp / "run"}"\n' + extra)
    return path


def names(traps) -> list[str]:
    return [t.name for t in traps]


def binds(trap) -> dict[str, object]:
    return {format_oid(oid): value for oid, _kind, value in trap.varbinds}


# -- which changes make traps (no network) -------------------------------------------------------

@pytest.fixture
def base_snapshot(tmp_path):
    settings = load_settings(write_config(tmp_path, "[snmp]\nspool_threshold = 10\n"
                                                    "database_max_age = 86400\n"
                                                    "trap_interval = 60\n"))
    return settings, status.collect(settings)


def test_first_poll_reports_what_is_already_wrong(base_snapshot):
    settings, snap = base_snapshot
    snap = copy.deepcopy(snap)
    snap["daemon"].update(configured=True, running=False, detail="cannot connect")
    snap["spool"]["depth"] = 11
    traps, seen = monitor.changes(None, snap, {"infected": 5}, settings, 1000.0)
    assert names(traps) == ["lmsavComponentStopped", "lmsavSpoolOverThreshold"]
    assert binds(traps[0])[f"{B}.1.7.1.0"] == "daemon"
    assert binds(traps[0])[f"{B}.1.7.4.0"] == "the daemon is not running (cannot connect)"
    assert binds(traps[1])[f"{B}.1.3.4.0"] == 11 and binds(traps[1])[f"{B}.1.3.5.0"] == 10
    assert traps[1].oid == BASE + (0, 6)
    # The first count of infected messages is where counting starts: no trap for the past.
    assert seen.infected == 5 and seen.pending == 0 and seen.since == 1000.0
    # Nothing changed: nothing is sent again.
    again, _ = monitor.changes(seen, snap, {"infected": 5}, settings, 1010.0)
    assert again == []


def test_components_stop_and_start(base_snapshot):
    settings, snap = base_snapshot
    running = copy.deepcopy(snap)
    running["watcher"].update(running=True, detail="holds watch.lock")
    traps, seen = monitor.changes(None, running, None, settings, 0.0)
    assert traps == []
    traps, seen = monitor.changes(seen, snap, None, settings, 1.0)
    assert names(traps) == ["lmsavComponentStopped"]
    assert binds(traps[0])[f"{B}.1.7.1.0"] == "watcher"
    traps, seen = monitor.changes(seen, running, None, settings, 2.0)
    assert names(traps) == ["lmsavComponentStarted"]
    assert binds(traps[0])[f"{B}.1.7.4.0"] == "the spool watcher is running (holds watch.lock)"


def test_outdated_spool_and_failed_update_are_sent_once_per_episode(base_snapshot):
    settings, fresh = base_snapshot
    bad = copy.deepcopy(fresh)
    bad["database"].update(age_seconds=2 * DAY, version="daily 27001")
    bad["spool"]["depth"] = 50
    bad["update"].update(failed=True, last_check=500.0, last_error="no mirror answered")
    traps, seen = monitor.changes(monitor.Seen(), bad, None, settings, 0.0)
    assert names(traps) == ["lmsavDatabaseOutdated", "lmsavSpoolOverThreshold",
                            "lmsavUpdateFailed"]
    outdated = binds(traps[0])
    assert outdated[f"{B}.1.2.1.0"] == "daily 27001" and outdated[f"{B}.1.2.3.0"] == 2 * DAY
    assert binds(traps[2])[f"{B}.1.2.8.0"] == "no mirror answered"
    assert monitor.changes(seen, bad, None, settings, 1.0)[0] == []
    # The next failed run is news; the conditions must end before they are sent again.
    again = copy.deepcopy(bad)
    again["update"]["last_check"] = 900.0
    assert names(monitor.changes(seen, again, None, settings, 2.0)[0]) == ["lmsavUpdateFailed"]
    _, seen = monitor.changes(seen, fresh, None, settings, 3.0)
    assert names(monitor.changes(seen, bad, None, settings, 4.0)[0]) == [
        "lmsavDatabaseOutdated", "lmsavSpoolOverThreshold"]  # the same failed run: not news


def test_virus_traps_are_rate_limited_and_carry_the_count(base_snapshot):
    settings, snap = base_snapshot  # trap_interval = 60
    _, seen = monitor.changes(None, snap, {"infected": 10}, settings, 1000.0)
    traps, seen = monitor.changes(seen, snap, {"infected": 12}, settings, 1005.0)
    assert names(traps) == ["lmsavVirusFound"]
    assert binds(traps[0]) == {f"{B}.1.7.2.0": 2, f"{B}.1.7.3.0": 5, f"{B}.1.5.2.0": 12}
    traps, seen = monitor.changes(seen, snap, {"infected": 15}, settings, 1030.0)
    assert traps == [] and seen.pending == 3
    traps, seen = monitor.changes(seen, snap, {"infected": 16}, settings, 1050.0)
    assert traps == [] and seen.pending == 4
    traps, seen = monitor.changes(seen, snap, {"infected": 16}, settings, 1066.0)
    assert binds(traps[0])[f"{B}.1.7.2.0"] == 4 and binds(traps[0])[f"{B}.1.7.3.0"] == 61
    # A new, smaller store: what it holds is new.
    traps, seen = monitor.changes(seen, snap, {"infected": 1}, settings, 2000.0)
    assert binds(traps[0])[f"{B}.1.7.2.0"] == 1


def test_state_survives_between_runs_and_bad_state_is_a_fresh_start(tmp_path, caplog):
    path = tmp_path / "snmp" / "monitor.json"
    seen = monitor.Seen(running={"daemon": True}, outdated=True, infected=4, pending=2,
                        last_virus_trap=10.0, since=1.0, failed_update=3.0)
    monitor.save(path, seen)
    assert monitor.load(path) == seen
    path.write_text("{not json")
    assert monitor.load(path) is None
    assert "cannot be read" in caplog.text


# -- the commands, and traps received by snmptrapd ------------------------------------------------

def run_monitor(config: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(lmsav_command(config) + ["monitor", "--once", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**(env or os.environ), "LMSAV_CONFIG": str(config)})


def received(trapd, count: int) -> list[str]:
    return wait_for(lambda: len(trapd.traps()) >= count and trapd.traps(), 10) or []


def trap_oid(block: str) -> str:
    return block.split(".1.3.6.1.6.3.1.1.4.1.0 = OID: ")[1].split()[0]


def install_old_database(state: Path, age: float) -> Path:
    root = paths.bases_dir(state)
    (root / "daily-1").mkdir(parents=True)
    built = time.time() - age
    (root / "daily-1" / META).write_text(json.dumps(
        {"label": "daily-1", "databases": {"daily": {"version": 1, "built_at": built}}}))
    os.symlink("daily-1", root / CURRENT)
    return root


@pytest.mark.integration
def test_traps_after_state_changes(tmp_path, trapd):
    from tests.daemon.test_server import Daemon

    state = tmp_path / "state"
    root = install_old_database(state, 2 * DAY)
    # The daemon started below has its socket in <tmp>/d/run.
    config = write_config(tmp_path, f'database = "{root / CURRENT}"\n'
                          f'[snmp]\ntraps = ["{trapd.sink}"]\ncommunity = "lmsavtest"\n'
                          "spool_threshold = 2\ndatabase_max_age = 86400\n",
                          run_dir=tmp_path / "d" / "run")
    setup = paths.setup_dir(state)
    setup.mkdir(parents=True)
    (setup / "manifest.json").write_text(json.dumps({"format": 1, "entries": [
        {"kind": "unit", "key": "unit:lmsav-daemon.service", "name": "lmsav-daemon.service"}]}))

    # First run: the database is old and the configured daemon does not run.
    done = run_monitor(config)
    assert done.returncode == 0, done.stderr
    traps = received(trapd, 2)
    assert [trap_oid(t) for t in traps] == [TRAP["componentStopped"],
                                            TRAP["databaseOutdated"]]
    assert f'{B}.1.7.1.0 = STRING: "daemon"' in traps[0]
    assert f"{B}.1.2.3.0 = Gauge32: " in traps[1]

    # The spool fills over the threshold, the daemon starts, an update fails.
    spool = Spool(tmp_path / "state" / "nqueue")
    spool.ensure()
    for n in range(3):
        spool.enqueue(Envelope("a@example.org", ("b@example.org",)), b"Subject: %d\n\nx\n" % n)
    update_state.save(root, update_state.State(last_check=time.time(), last_result="failed",
                                               last_error="no mirror answered"), time.time())
    daemon = Daemon(tmp_path / "d")
    try:
        done = run_monitor(config)
        assert done.returncode == 0, done.stderr
        traps = received(trapd, 5)[2:]
        assert sorted(trap_oid(t) for t in traps) == sorted(
            [TRAP["componentStarted"], TRAP["spoolOverThreshold"], TRAP["updateFailed"]])
        over = next(t for t in traps if trap_oid(t) == TRAP["spoolOverThreshold"])
        assert f"{B}.1.3.4.0 = Gauge32: 3" in over and f"{B}.1.3.5.0 = Gauge32: 2" in over
        failed = next(t for t in traps if trap_oid(t) == TRAP["updateFailed"])
        assert f'{B}.1.2.8.0 = STRING: "no mirror answered"' in failed

        # Nothing changed: a third run sends nothing.
        assert run_monitor(config).returncode == 0
        time.sleep(1)
        assert len(trapd.traps()) == 5
    finally:
        daemon.stop()


@pytest.mark.integration
def test_virus_found_traps_are_rate_limited(tmp_path, trapd):
    config = write_config(tmp_path, f'[snmp]\ntraps = ["{trapd.sink}"]\ntrap_interval = 3\n')
    settings = load_settings(config)

    def infected(count: int) -> None:
        store = open_store(settings)
        for _ in range(count):
            store.record({"kind": "message", "status": "infected", "size": 10,
                          "threats": ["Eicar-Test-Signature"]})
        store.close()

    infected(1)
    assert run_monitor(config).returncode == 0  # where counting starts
    infected(2)
    assert run_monitor(config).returncode == 0
    [first] = received(trapd, 1)
    assert trap_oid(first) == TRAP["virusFound"]
    assert f"{B}.1.7.2.0 = Gauge32: 2" in first and f"{B}.1.5.2.0 = Counter64: 3" in first
    infected(3)
    started = time.monotonic()
    assert run_monitor(config).returncode == 0  # within trap_interval: held back
    time.sleep(0.5)
    assert len(trapd.traps()) == 1
    time.sleep(max(0.0, 3.2 - (time.monotonic() - started)))
    assert run_monitor(config).returncode == 0
    second = received(trapd, 2)[1]
    assert f"{B}.1.7.2.0 = Gauge32: 3" in second and f"{B}.1.5.2.0 = Counter64: 6" in second


@pytest.mark.integration
def test_an_unusable_sink_is_one_line_and_the_others_still_get_the_trap(tmp_path, trapd):
    config = write_config(tmp_path, '[snmp]\ntraps = ["255.255.255.255:162", '
                                    f'"{trapd.sink}"]\nspool_threshold = 1\n')
    spool = Spool(tmp_path / "state" / "nqueue")
    spool.ensure()
    for n in range(2):
        spool.enqueue(Envelope("a@example.org", ("b@example.org",)), b"Subject: %d\n\nx\n" % n)
    done = run_monitor(config)
    assert done.returncode == 2
    *logged, last = done.stderr.splitlines()
    # [log] lines: "<time> lmsav-snmp[<pid>]: <level>: <message>"
    assert [line.split(" ", 1)[1].split("]: ", 1)[1] for line in logged] == [
        ("error: cannot send lmsavSpoolOverThreshold to 255.255.255.255:162: Failure in "
         "sendto (Permission denied)"),
        f"info: sent lmsavSpoolOverThreshold to {trapd.sink}"]
    assert all(line.split(" ", 2)[1].startswith("lmsav-snmp[") for line in logged)
    assert last == "lmsav: error: not sent to every sink: lmsavSpoolOverThreshold"
    assert [trap_oid(t) for t in received(trapd, 1)] == [TRAP["spoolOverThreshold"]]


def test_monitor_without_sinks_or_snmptrap_is_a_clear_error(tmp_path):
    config = write_config(tmp_path)
    result = CliRunner().invoke(snmp_group, ["monitor", "--once"],
                                env={"LMSAV_CONFIG": str(config)})
    assert result.exit_code == 2
    assert result.output == ('lmsav: error: no trap sinks: list them in [snmp] traps, like '
                             'traps = ["127.0.0.1:162"]\n')
    config = write_config(tmp_path, '[snmp]\ntraps = ["127.0.0.1:162"]\n')
    done = run_monitor(config, env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == ("lmsav: error: snmptrap not found: install "
                                            "Debian's snmp package to send traps")
