"""Debian's clamdscan, configured by a private clamd.conf to talk to the daemon, in each of its
modes: an infected file is reported with a FOUND line and exit code 1, a clean one exits 0."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon_clients.conftest import EICAR_NAME

pytestmark = pytest.mark.integration

CLAMDSCAN = shutil.which("clamdscan")
MODES = {"plain": [], "stream": ["--stream"], "fdpass": ["--fdpass"],
         "multiscan": ["--multiscan"]}


@pytest.fixture(scope="module")
def client_configs(daemon) -> dict[str, Path]:
    """clamdscan configurations: one for the unix socket, one for TCP on 127.0.0.1."""
    if CLAMDSCAN is None:
        pytest.skip("clamdscan is not installed (Debian package clamdscan)")
    unix = daemon.root / "clamdscan-unix.conf"
    unix.write_text(f"LocalSocket {daemon.socket}\n")
    tcp = daemon.root / "clamdscan-tcp.conf"
    tcp.write_text(f"TCPSocket {daemon.tcp_port}\nTCPAddr 127.0.0.1\n")
    return {"unix": unix, "tcp": tcp}


def clamdscan(config: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([CLAMDSCAN, f"--config-file={config}", "--no-summary", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def found_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.endswith(" FOUND")]


@pytest.mark.parametrize("mode", MODES)
def test_infected_file_is_found(daemon, client_configs, scan_tree, mode):
    target = scan_tree / "sub" / "eicar.com"
    result = clamdscan(client_configs["unix"], *MODES[mode], target)
    assert result.returncode == 1, (result.stdout, result.stderr, daemon.log_tail())
    [line] = found_lines(result.stdout)
    assert line.startswith(f"{target}: {EICAR_NAME}")


@pytest.mark.parametrize("mode", MODES)
def test_clean_file_is_ok(daemon, client_configs, scan_tree, mode):
    target = scan_tree / "clean.txt"
    result = clamdscan(client_configs["unix"], *MODES[mode], target)
    assert result.returncode == 0, (result.stdout, result.stderr, daemon.log_tail())
    assert result.stdout.strip() == f"{target}: OK"


@pytest.mark.parametrize("mode", MODES)
def test_directory_reports_the_infected_member(daemon, client_configs, scan_tree, mode):
    result = clamdscan(client_configs["unix"], *MODES[mode], scan_tree)
    assert result.returncode == 1, (result.stdout, result.stderr, daemon.log_tail())
    [line] = found_lines(result.stdout)
    assert line.startswith(f"{scan_tree / 'sub' / 'eicar.com'}: {EICAR_NAME}")


@pytest.mark.parametrize("mode", MODES)
def test_clean_directory_exits_zero(daemon, client_configs, scan_tree, mode):
    (scan_tree / "sub" / "eicar.com").unlink()
    result = clamdscan(client_configs["unix"], *MODES[mode], scan_tree)
    assert result.returncode == 0, (result.stdout, result.stderr, daemon.log_tail())
    assert not found_lines(result.stdout)


@pytest.mark.parametrize("mode", ["plain", "stream", "multiscan"])
def test_over_tcp(daemon, client_configs, scan_tree, mode):
    infected = clamdscan(client_configs["tcp"], *MODES[mode], scan_tree / "sub" / "eicar.com")
    assert infected.returncode == 1, (infected.stdout, infected.stderr)
    assert found_lines(infected.stdout)[0].split(": ", 1)[1].startswith(EICAR_NAME)
    clean = clamdscan(client_configs["tcp"], *MODES[mode], scan_tree / "clean.txt")
    assert clean.returncode == 0, (clean.stdout, clean.stderr)


def test_several_files_in_one_run(daemon, client_configs, scan_tree):
    files = [scan_tree / "clean.txt", scan_tree / "sub" / "eicar.com", scan_tree / "notes.md"]
    result = clamdscan(client_configs["unix"], *files)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stdout.splitlines()
    assert f"{files[0]}: OK" in lines and f"{files[2]}: OK" in lines
    assert len(found_lines(result.stdout)) == 1


def test_missing_file_is_an_error(daemon, client_configs, scan_tree):
    result = clamdscan(client_configs["unix"], scan_tree / "no-such-file")
    assert result.returncode == 2, (result.stdout, result.stderr)


def test_version_and_ping(daemon, client_configs):
    version = subprocess.run([CLAMDSCAN, f"--config-file={client_configs['unix']}", "--version"],
                             capture_output=True, text=True, timeout=30)
    assert version.returncode == 0 and version.stdout.strip(), version
    ping = subprocess.run([CLAMDSCAN, f"--config-file={client_configs['unix']}", "--ping", "1"],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, (ping.stdout, ping.stderr)
