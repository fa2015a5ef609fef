"""lmsav-snmp(8) as written: its snmpd.conf lines, snmpwalk, snmptranslate, [snmp] table, cron
line and systemd unit, run with the lmsav of this checkout in place of /usr/local/bin/lmsav."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess

import pytest

from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.snmp import monitor
from lmsav.spool.nqueue import Spool
from tests.snmp.conftest import ROOT, Snmpd, lmsav_command, wait_for

pytestmark = pytest.mark.integration

PAGE = ROOT / "man" / "lmsav-snmp.8"
DOCUMENTED_LMSAV = "/usr/local/bin/lmsav"


def example_lines() -> list[str]:
    """The lines of the page's .nf blocks, roff escapes undone."""
    out, inside = [], False
    for line in PAGE.read_text().splitlines():
        if line == ".nf":
            inside = True
        elif line == ".fi":
            inside = False
        elif inside and not line.startswith("."):
            out.append(line.replace("\\-", "-").replace("\\e", "\\"))
    return out


def documented(prefix: str) -> str:
    [line] = [line for line in example_lines() if line.startswith(prefix)]
    return line


def ours(command: str, config) -> list[str]:
    """A documented lmsav command line with this checkout's lmsav."""
    words = shlex.split(command)
    at = words.index(DOCUMENTED_LMSAV)
    assert words[at + 1] == "snmp"
    return words[:at] + lmsav_command(config) + words[at + 2:]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'run_dir = "{tmp_path / "run"}"\n')
    return path


def test_snmpd_conf_lines_and_snmpwalk(tmp_path, config):
    view = documented("view ")
    directive, oid, command = documented("pass_persist ").split(None, 2)
    agent = " ".join(ours(command, config))
    # Debian's read-only community, limited to its view, with the page's two lines.
    snmpd = Snmpd(tmp_path, config, lines=["rocommunity public 127.0.0.1 -V systemonly", view,
                                           f"{directive} {oid} {agent}"])
    try:
        walk = shlex.split(documented("snmpwalk "))
        walk[walk.index("localhost")] = f"127.0.0.1:{snmpd.port}"
        done = subprocess.run([*walk, "-On"], capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, done.stderr
        assert f'{oid}.1.1.1.1.2.1 = STRING: "daemon"' in done.stdout
        assert f"{oid}.1.6.1.0 = INTEGER: 1" in done.stdout
    finally:
        snmpd.stop()


def test_snmptranslate_line(mib_home):
    line = documented("snmptranslate ")
    assert shlex.split(line) == ["snmptranslate", "-M", "+contrib/snmp", "-m", "+LMSAV-MIB",
                                 "-Tp"]
    done = subprocess.run(shlex.split(line), cwd=ROOT, env=mib_home, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and "+--lmsavMIB(5766)" in done.stdout


def test_snmp_table_loads(tmp_path):
    lines = example_lines()
    start = lines.index("[snmp]")
    table = "\n".join(lines[start:start + 6]) + "\n"
    path = tmp_path / "lmsav.toml"
    path.write_text(table)
    snmp = load_settings(path).snmp
    assert snmp.traps == ("192.0.2.10:162",) and snmp.trap_interval == 60
    assert snmp.spool_threshold == 1000 and snmp.database_max_age == 259200


def test_cron_line_and_systemd_unit_send_traps(tmp_path, trapd):
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'run_dir = "{tmp_path / "run"}"\n'
                      f'[snmp]\ntraps = ["{trapd.sink}"]\nspool_threshold = 1\n')
    spool = Spool(tmp_path / "state" / "nqueue")
    spool.ensure()

    def fill(count: int) -> None:
        for n in range(count):
            spool.enqueue(Envelope("a@example.org", ("b@example.org",)),
                          b"Subject: %d\n\nx\n" % n)

    cron = documented("*/5 * * * * ")
    command = ours(cron.split(None, 6)[6], config)  # after the schedule and the user
    fill(2)
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ, LMSAV_CONFIG=str(config)))
    assert done.returncode == 0, done.stderr
    assert wait_for(lambda: len(trapd.traps()) == 1)

    # The unit's ExecStart, polling every second, stopped as systemctl stops it.
    exec_start = documented("ExecStart=").removeprefix("ExecStart=")
    for path in (tmp_path / "state" / "nqueue" / "new").iterdir():
        path.unlink()
    service = subprocess.Popen(ours(exec_start, config) + ["--interval", "1"],
                               stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, LMSAV_CONFIG=str(config)))
    try:
        # Its first poll sees the spool emptied, which ends the episode the cron run reported.
        state = monitor.state_file(load_settings(config))
        assert wait_for(lambda: getattr(monitor.load(state), "spool_over", True) is False, 60)
        fill(2)
        assert wait_for(lambda: len(trapd.traps()) == 2, 20), trapd.traps()
        # The state is saved after the trap went out and was logged: stop only then.
        assert wait_for(lambda: getattr(monitor.load(state), "spool_over", False) is True, 20)
    finally:
        service.send_signal(signal.SIGTERM)
        _, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert err.count("sent lmsavSpoolOverThreshold") == 1


def test_the_sudo_rule_allows_the_documented_agent_command():
    sudoers = documented("Debian-snmp ALL=(lmsav) NOPASSWD: ")
    assert sudoers.endswith(f"{DOCUMENTED_LMSAV} snmp agent")
    assert documented("pass_persist ").endswith(f"{DOCUMENTED_LMSAV} snmp agent")
