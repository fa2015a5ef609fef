"""`lmsav snmp agent`: the pass_persist protocol, and the values snmpd serves from it."""

from __future__ import annotations

import io
import os
import pty
import subprocess

import pytest
from click.testing import CliRunner

from lmsav import paths, status
from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.quarantine.store import FileStore
from lmsav.snmp.agent import Agent, serve
from lmsav.snmp.commands import snmp_group
from lmsav.snmp.mib import BASE, format_oid, values
from lmsav.spool.nqueue import Spool
from lmsav.stats.store import open_store
from tests.snmp.conftest import Snmpd, lmsav_command, wait_for

B = format_oid(BASE)


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'run_dir = "{tmp_path / "run"}"\n[snmp]\nspool_threshold = 3\n')
    return path


def talk(agent: Agent, *lines: str) -> list[str]:
    out = io.StringIO()
    serve(agent, io.StringIO("".join(line + "\n" for line in lines)), out)
    return out.getvalue().splitlines()


def enqueue(settings, count: int) -> None:
    spool = Spool(settings.spool_dir())
    spool.ensure()
    for n in range(count):
        spool.enqueue(Envelope("a@example.org", ("b@example.org",)), b"Subject: %d\n\nx\n" % n)


def test_protocol_ping_get_getnext_set_and_unknown(config):
    settings = load_settings(config)
    agent = Agent(settings, lambda: {"messages": 7, "infected": 2})
    assert talk(agent, "PING") == ["PONG"]
    # lmsavComponentName.1, the first object: GETNEXT from the base and from before it.
    first = [f"{B}.1.1.1.1.2.1", "string", "daemon"]
    assert talk(agent, "getnext", B) == first
    assert talk(agent, "getnext", ".1.3.6.1.4.1.8072") == first
    assert talk(agent, "get", f"{B}.1.3.5.0") == [f"{B}.1.3.5.0", "gauge", "3"]
    assert talk(agent, "get", f"{B}.1.5.1.0") == [f"{B}.1.5.1.0", "counter64", "7"]
    assert talk(agent, "get", f"{B}.1.3.5") == ["NONE"]  # the object, not its instance
    assert talk(agent, "get", "not an oid") == ["NONE"]
    assert talk(agent, "set", f"{B}.1.3.5.0", "gauge 7") == ["not-writable"]
    assert talk(agent, "frobnicate") == ["NONE"]
    last = values(agent_view(agent))[-1][0]
    assert talk(agent, "getnext", format_oid(last)) == ["NONE"]
    # Several requests on one connection, as snmpd sends them.
    assert talk(agent, "PING", "get", f"{B}.1.6.1.0", "PING") == [
        "PONG", f"{B}.1.6.1.0", "integer", "1", "PONG"]


def agent_view(agent: Agent):
    from lmsav.snmp.mib import View

    snap = status.collect(agent.settings)
    return View(snap, agent.settings, status.problems(snap, agent.settings), agent.totals())


def test_snapshot_is_kept_for_the_cache_time(config):
    settings = load_settings(config)
    clock = [100.0]
    agent = Agent(settings, lambda: None, cache_seconds=5, clock=lambda: clock[0])
    depth = f"{B}.1.3.4.0"
    assert talk(agent, "get", depth)[2] == "0"
    enqueue(settings, 2)
    clock[0] += 4
    assert talk(agent, "get", depth)[2] == "0"
    clock[0] += 2
    assert talk(agent, "get", depth)[2] == "2"
    # No statistics store: the counters are left out, the rest is served.
    assert talk(agent, "get", f"{B}.1.5.1.0") == ["NONE"]


def test_failing_status_answers_none_and_logs_once(config, monkeypatch, caplog):
    settings = load_settings(config)
    agent = Agent(settings, lambda: None, cache_seconds=0)

    def broken(_settings, now=None):
        raise OSError("disk on fire")

    monkeypatch.setattr(status, "collect", broken)
    assert talk(agent, "get", f"{B}.1.3.4.0", "getnext", B) == ["NONE", "NONE"]
    assert [r.getMessage() for r in caplog.records] == [
        "cannot read lmsav's status: disk on fire"]


def test_dump_shows_real_counters_and_state(config):
    settings = load_settings(config)
    store = open_store(settings)
    store.record({"kind": "message", "status": "infected", "size": 1000,
                  "threats": ["Eicar-Test-Signature"]})
    store.record({"kind": "message", "status": "clean", "size": 500})
    store.close()
    FileStore(paths.quarantine_dir(settings.paths.state_dir)).put(b"x" * 2000, {"path": "/a"})
    result = CliRunner().invoke(snmp_group, ["agent", "--dump"],
                                env={"LMSAV_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    lines = dict(line.split(" = ", 1) for line in result.output.splitlines())
    assert lines[f"{B}.1.5.1.0"] == "counter64: 2"  # lmsavMessages
    assert lines[f"{B}.1.5.2.0"] == "counter64: 1"  # lmsavInfected
    assert lines[f"{B}.1.5.8.0"] == "counter64: 1500"  # lmsavBytes
    assert lines[f"{B}.1.4.1.0"] == "gauge: 1"  # lmsavQuarantineEntries
    size = status.collect(settings)["quarantine"]["bytes"]  # the file and its record
    assert size > 2000 and lines[f"{B}.1.4.2.0"] == f"gauge: {-(-size // 1024)}"
    assert lines[f"{B}.1.2.1.0"] == "string: 2026112401"


def test_bad_base_and_a_terminal_are_clear_errors(config):
    result = CliRunner().invoke(snmp_group, ["agent", "--base", "enterprises.1"],
                                env={"LMSAV_CONFIG": str(config)})
    assert result.exit_code == 2
    assert "--base 'enterprises.1': expected a numeric OID like .1.3.6.1" in result.output

    # Typed at a terminal rather than started by snmpd.
    primary, secondary = pty.openpty()
    try:
        done = subprocess.run(lmsav_command(config) + ["agent"], stdin=secondary,
                              capture_output=True, text=True, timeout=60, check=False,
                              env=dict(os.environ, LMSAV_CONFIG=str(config)))
    finally:
        os.close(primary)
        os.close(secondary)
    assert done.returncode == 2
    assert done.stderr.startswith("lmsav: error: lmsav snmp agent answers snmpd's "
                                  "pass_persist requests on its standard input")


@pytest.mark.integration
def test_snmpd_serves_the_status_snapshot(tmp_path, config):
    settings = load_settings(config)
    enqueue(settings, 2)
    snmpd = Snmpd(tmp_path, config, " --cache 0")
    try:
        walk = snmpd.run("snmpwalk", B)
        assert walk.returncode == 0, walk.stderr + snmpd.log.read_text()[-2000:]
        got = dict(line.split(" = ", 1) for line in walk.stdout.splitlines())
        snap = status.collect(settings)
        assert got[f"{B}.1.1.1.1.2.1"] == 'STRING: "daemon"'
        assert got[f"{B}.1.1.1.1.3.1"] == "INTEGER: 3"  # notConfigured: never started here
        assert got[f"{B}.1.2.1.0"] == f'STRING: "{snap["database"]["version"]}"'
        assert got[f"{B}.1.3.1.0"] == "Gauge32: 2"  # lmsavSpoolNew
        assert got[f"{B}.1.3.5.0"] == "Gauge32: 3"  # lmsavSpoolThreshold
        assert got[f"{B}.1.6.1.0"] == "INTEGER: 1"  # lmsavHealthy: true
        # Every object the agent dumps, and nothing else, in the same order.
        dump = CliRunner().invoke(snmp_group, ["agent", "--dump"],
                                  env={"LMSAV_CONFIG": str(config)}).output
        assert list(got) == [line.split(" = ")[0] for line in dump.splitlines()]

        enqueue(settings, 2)  # 4 waiting, over the threshold of 3
        get = snmpd.run("snmpget", f"{B}.1.3.4.0", f"{B}.1.6.1.0", f"{B}.1.6.3.0")
        assert get.returncode == 0, get.stderr
        depth, healthy, problems = get.stdout.splitlines()
        assert depth == f"{B}.1.3.4.0 = Gauge32: 4"
        assert healthy == f"{B}.1.6.1.0 = INTEGER: 2"
        assert "4 messages wait in the spool" in problems

        missing = snmpd.run("snmpget", f"{B}.1.3.99.0")
        assert "No Such Object" in missing.stdout or "No Such Instance" in missing.stdout
    finally:
        snmpd.stop()


@pytest.mark.integration
def test_snmpd_starts_the_agent_again_after_it_was_killed(tmp_path, config):
    """snmpd starts the agent again on the next request after it died."""
    snmpd = Snmpd(tmp_path, config)
    try:
        first = snmpd.run("snmpget", f"{B}.1.3.5.0")
        assert first.stdout.strip() == f"{B}.1.3.5.0 = Gauge32: 3"
        agents = subprocess.run(["pgrep", "-f", "-s", str(snmpd.proc.pid), "snmp agent"],
                                capture_output=True, text=True, check=False).stdout.split()
        assert agents, "no agent process under snmpd"
        for pid in agents:
            os.kill(int(pid), 9)
        again = wait_for(lambda: "Gauge32: 3" in snmpd.run("snmpget", f"{B}.1.3.5.0").stdout,
                         30, 0.5)
        assert again
    finally:
        snmpd.stop()


def test_totals_without_a_store_file_are_zero_and_create_nothing(config):
    from lmsav.snmp.counters import TotalsReader
    from lmsav.stats.store import sqlite_path

    settings = load_settings(config)
    assert TotalsReader(settings)() == dict.fromkeys(
        ("messages", "infected", "suspicious", "protected", "corrupted", "errors", "filtered",
         "bytes", "files_scanned"), 0)
    assert not sqlite_path(settings.paths.state_dir).parent.exists()


def test_an_unreadable_store_leaves_the_counters_out_and_is_logged_once(config, monkeypatch,
                                                                        caplog):
    import lmsav.stats.store as store_mod
    from lmsav.snmp.counters import TotalsReader

    settings = load_settings(config)
    store = open_store(settings)
    store.record({"kind": "message", "status": "clean"})
    store.close()  # the file exists, but reading it fails below

    class Down:
        def totals(self):
            raise store_mod.StatsError("PostgreSQL at db.example:5432 does not answer")

        def close(self):
            pass

    monkeypatch.setattr(store_mod, "open_store", lambda _settings: Down())
    agent = Agent(settings, TotalsReader(settings), cache_seconds=0)
    assert talk(agent, "get", f"{B}.1.5.2.0", "get", f"{B}.1.3.4.0") == [
        "NONE", f"{B}.1.3.4.0", "gauge", "0"]
    assert talk(agent, "get", f"{B}.1.5.2.0") == ["NONE"]
    assert [r.getMessage() for r in caplog.records] == [
        ("statistics unavailable, counters left out: PostgreSQL at db.example:5432 does "
         "not answer")]
