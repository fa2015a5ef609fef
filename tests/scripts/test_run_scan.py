"""scripts/run-scan, the README's first command: the arguments it hands to `lmsav scan`, run from
a copy of the checkout whose bootstrap step is a stand-in (the real one installs packages), with
the checkout's real environment, lmsav and bundled database."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EICAR

ROOT = Path(__file__).resolve().parents[2]
ENV_SH = ROOT / ".deps" / "env.sh"


@pytest.fixture
def checkout(tmp_path) -> Path:
    """scripts/run-scan in a checkout of its own: bootstrap only leaves a mark."""
    if not ENV_SH.is_file():
        pytest.skip("no .deps/env.sh: run scripts/bootstrap")
    copy = tmp_path / "checkout"
    (copy / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "run-scan", copy / "scripts" / "run-scan")
    stubs = {
        "scripts/bootstrap": f'#!/bin/sh\ntouch "{tmp_path}/bootstrapped"\n',
        ".deps/env.sh": f'. "{ENV_SH}"\n',
        ".venv/bin/python": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
    }
    for name, text in stubs.items():
        path = copy / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return copy


@pytest.fixture
def here(tmp_path) -> Path:
    """The directory run-scan is started in: one EICAR file and a clean subdirectory."""
    work = tmp_path / "work"
    (work / "clean").mkdir(parents=True)
    (work / "clean" / "note.txt").write_text("hello\n")
    (work / "eicar.com").write_bytes(EICAR)
    return work


def run_scan(checkout: Path, here: Path, *args: str) -> subprocess.CompletedProcess:
    config = here.parent / "lmsav.toml"
    config.write_text("")
    env = {**os.environ, "LMSAV_CONFIG": str(config), "HOME": str(here.parent)}
    done = subprocess.run([str(checkout / "scripts" / "run-scan"), *args], cwd=here, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert (here.parent / "bootstrapped").exists()  # it sets the checkout up first
    return done


@pytest.mark.parametrize("args", [(), ("-i",), ("-i", "--no-summary"), ("--max-filesize", "1M"),
                                  ("-i", "--")])
def test_without_a_path_the_current_directory_is_scanned(checkout, here, args):
    done = run_scan(checkout, here, *args)
    assert done.returncode == 1, done.stderr
    assert "./eicar.com: Eicar-Test-Signature FOUND" in done.stdout.splitlines()
    assert "Missing argument" not in done.stderr


def test_an_options_value_is_not_taken_for_a_path(checkout, here):
    done = run_scan(checkout, here, "-i", "--exclude", "*.com")
    assert done.returncode == 0, done.stderr
    assert "Scanned files: 1" in done.stdout  # clean/note.txt, under .


def test_given_paths_are_scanned_and_nothing_else(checkout, here):
    done = run_scan(checkout, here, "clean")
    assert done.returncode == 0, done.stderr
    assert "eicar" not in done.stdout
    done = run_scan(checkout, here, "-i", "--", "eicar.com")
    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines()[0] == "eicar.com: Eicar-Test-Signature FOUND"


def test_a_mistaken_option_is_lmsavs_one_line_error(checkout, here):
    done = run_scan(checkout, here, "--max-filesize")
    assert done.returncode == 2
    assert "--max-filesize" in done.stderr and "requires an argument" in done.stderr


def test_help_is_lmsav_scans_help(checkout, here):
    done = run_scan(checkout, here, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: lmsav scan ")
    assert "eicar.com" not in done.stdout  # nothing was scanned
