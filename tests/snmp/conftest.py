"""Debian's real snmpd and snmptrapd on private ports, and lmsav's commands as they run them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav import cli

ROOT = Path(__file__).resolve().parents[2]
MIB_DIR = ROOT / "contrib" / "snmp"
# Minimal SNMPv2-SMI, -TC and -CONF for net-snmp: Debian's main archive leaves the IETF's
# modules out (they are in non-free's snmp-mibs-downloader), and LMSAV-MIB imports from them.
SMI_STANDINS = Path(__file__).resolve().parent / "smi"
BASE = ".1.3.6.1.4.1.8072.9999.9999.5766"
COMMUNITY = "lmsavtest"


def lmsav_command(config: Path) -> list[str]:
    """`lmsav --config FILE snmp` as an administrator (or snmpd) runs it: the lmsav beside
    this Python, or the group on its own where the command line does not list it."""
    program = Path(sys.executable).parent / "lmsav"
    if "snmp" in cli.main.LAZY or "snmp" in getattr(cli.main, "commands", {}):
        return [str(program), "--config", str(config), "snmp"]
    return [sys.executable, "-m", "lmsav.snmp"]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 15.0, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    return predicate()


def needs(*programs: str) -> None:
    missing = [p for p in programs if shutil.which(p) is None
               and not Path("/usr/sbin", p).exists()]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (Debian packages snmpd, snmptrapd, "
                    "snmp)")


def sbin(program: str) -> str:
    return shutil.which(program) or str(Path("/usr/sbin", program))


class Snmpd:
    """snmpd on 127.0.0.1:PORT with its own configuration and persistent directory, serving
    the LMSAV-MIB through `lmsav snmp agent`."""

    def __init__(self, tmp: Path, config: Path, agent_args: str = "",
                 lines: list[str] | None = None):
        """``lines`` replace the community and pass_persist lines of the configuration."""
        needs("snmpd", "snmpget", "snmpwalk")
        self.port = free_udp_port()
        self.dir = tmp / "snmpd"
        (self.dir / "persist").mkdir(parents=True)
        self.conf = self.dir / "snmpd.conf"
        agent = " ".join(lmsav_command(config) + ["agent"]) + agent_args
        if lines is None:
            lines = [f"rocommunity {COMMUNITY} 127.0.0.1", f"pass_persist {BASE} {agent}"]
        self.conf.write_text(f"agentAddress udp:127.0.0.1:{self.port}\n"
                             + "".join(line + "\n" for line in lines))
        self.log = self.dir / "snmpd.log"
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(self.dir / "persist"),
                   LMSAV_CONFIG=str(config), MIBS="")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sbin("snmpd"), "-f", "-Lo", "-C", "-c", str(self.conf)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        if not wait_for(lambda: self.proc.poll() is not None or
                        "NET-SNMP version" in self.log.read_text()):
            raise AssertionError("snmpd did not start: " + self.log.read_text()[-2000:])
        assert self.proc.poll() is None, self.log.read_text()[-2000:]

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([tool, "-v2c", "-c", COMMUNITY, "-On", "-t", "10", "-r", "0",
                               f"127.0.0.1:{self.port}", *args],
                              capture_output=True, text=True, timeout=60, check=False)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # snmpd and the agent it started
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Snmptrapd:
    """snmptrapd on 127.0.0.1:PORT logging every trap it accepts to a file, numerically."""

    def __init__(self, tmp: Path):
        needs("snmptrapd", "snmptrap")
        self.port = free_udp_port()
        self.dir = tmp / "snmptrapd"
        (self.dir / "persist").mkdir(parents=True)
        self.conf = self.dir / "snmptrapd.conf"
        self.conf.write_text("disableAuthorization yes\n")
        self.log = self.dir / "traps.log"
        self.log.touch()
        env = dict(os.environ, SNMP_PERSISTENT_DIR=str(self.dir / "persist"), MIBS="")
        self.proc = subprocess.Popen(
            [sbin("snmptrapd"), "-f", "-Lf", str(self.log), "-C", "-c", str(self.conf),
             "-On", f"udp:127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True)
        if not wait_for(lambda: self.proc.poll() is not None or
                        "NET-SNMP version" in self.log.read_text()):
            raise AssertionError("snmptrapd did not start: " + self.log.read_text())
        assert self.proc.poll() is None, self.log.read_text()

    @property
    def sink(self) -> str:
        return f"127.0.0.1:{self.port}"

    def traps(self) -> list[str]:
        """One string per trap received (its lines joined), in order."""
        text = self.log.read_text()
        blocks, current = [], []
        for line in text.splitlines():
            if "NET-SNMP version" in line:
                continue
            if line[:4].isdigit() and current:  # snmptrapd starts each trap with its date
                blocks.append(" ".join(current))
                current = []
            current.append(line)
        if current:
            blocks.append(" ".join(current))
        return [b for b in blocks if ".1.3.6.1.6.3.1.1.4.1.0" in b]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


@pytest.fixture
def trapd(tmp_path):
    receiver = Snmptrapd(tmp_path)
    yield receiver
    receiver.stop()


@pytest.fixture
def mib_home(tmp_path) -> dict[str, str]:
    """An environment whose $HOME/.snmp/mibs (net-snmp's per-user MIB directory) holds the
    SMI modules LMSAV-MIB imports, unless the system has the real ones."""
    env = dict(os.environ)
    real = subprocess.run(["snmptranslate", "-m", "SNMPv2-SMI", "-On",
                           "SNMPv2-SMI::enterprises"], capture_output=True, text=True, check=False)
    if real.stdout.strip() != ".1.3.6.1.4.1":
        home = tmp_path / "home"
        (home / ".snmp").mkdir(parents=True)
        shutil.copytree(SMI_STANDINS, home / ".snmp" / "mibs")
        env["HOME"] = str(home)
    return env
