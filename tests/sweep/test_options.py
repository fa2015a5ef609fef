"""The options of `lmsav scan` are defined once: the command, the parameters it hands on and
the check of a schedule's stored options all see the same ones."""

import dataclasses
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmsav.cli import main
from lmsav.cron.schedules import ScheduleError, split_scan_args
from lmsav.sweep.options import ScanParameters, scan_command
from tests.conftest import EICAR


def spellings(command):
    return sorted(opt for p in command.params for opt in (*p.opts, *p.secondary_opts))


def test_the_scan_command_and_the_checking_command_take_the_same_options():
    assert spellings(main.commands["scan"]) == spellings(scan_command())


def test_every_parameter_of_scan_is_a_field_of_scan_parameters():
    names = sorted(p.name for p in scan_command().params)
    assert names == sorted(f.name for f in dataclasses.fields(ScanParameters))


def test_given_values_become_configuration_keys():
    ctx = scan_command().make_context("scan", ["-j", "3", "--no-archive", "--action", "cure",
                                               "--no-backup", "/srv"])
    params = ScanParameters(**ctx.params)
    assert params.targets == ("/srv",)
    assert params.action_overrides() == {"scan.action": "cure", "scan.backup": False}
    assert params.overrides() == {"scan.workers": 3, "scan.scan_archives": False,
                                  "scan.action": "cure", "scan.backup": False}


def test_a_schedule_s_options_are_checked_against_scan_s_own():
    assert split_scan_args(["/srv", "-j", "2", "--exclude", "*.iso"]) == (
        ["-j", "2", "--exclude", "*.iso"], ["/srv"])
    with pytest.raises(ScheduleError, match="--action"):
        split_scan_args(["/srv", "--action", "eat"])


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script(1) not installed")
def test_no_color_and_NO_COLOR_turn_off_the_colour_of_a_terminal(tmp_path):
    """On a terminal (a pseudo-terminal from script(1)) FOUND lines are coloured; not with --no-color
    nor with NO_COLOR set."""
    (tmp_path / "eicar.com").write_bytes(EICAR)
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    exe = Path(sys.executable).with_name("lmsav")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["LMSAV_CONFIG"] = str(config)

    def on_a_terminal(*options, **extra_env) -> str:
        command = shlex.join([str(exe), "scan", "--no-summary", "--no-progress", *options,
                              str(tmp_path / "eicar.com")])
        done = subprocess.run(["script", "-qec", command, "/dev/null"],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, env={**env, **extra_env}, check=False)
        assert done.returncode == 1, done.stdout + done.stderr
        assert "Eicar-Test-Signature FOUND" in done.stdout
        return done.stdout

    assert "\x1b[" in on_a_terminal()
    assert "\x1b[" not in on_a_terminal("--no-color")
    assert "\x1b[" not in on_a_terminal(NO_COLOR="1")


def test_no_color_and_initial_scan_are_parameters():
    ctx = scan_command().make_context("scan", ["--no-color", "--watch", "--initial-scan", "/srv"])
    params = ScanParameters(**ctx.params)
    assert params.no_color and params.watch and params.initial_scan
    assert params.overrides() == {}
