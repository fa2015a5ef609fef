"""The options of `lmsav scan` are defined once: the command, the parameters it hands on and
the check of a schedule's stored options all see the same ones."""

import dataclasses

import pytest

from lmsav.cli import main
from lmsav.cron.schedules import ScheduleError, split_scan_args
from lmsav.sweep.options import ScanParameters, scan_command


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
