"""contrib/snmp/LMSAV-MIB.txt: net-snmp's snmptranslate reads it, and it numbers every object
as lmsav.snmp.mib does."""

from __future__ import annotations

import subprocess

import pytest

from lmsav.snmp import mib
from tests.snmp.conftest import MIB_DIR, ROOT, needs

pytestmark = pytest.mark.integration


def translate(args: list[str], env: dict) -> subprocess.CompletedProcess:
    needs("snmptranslate")
    return subprocess.run(["snmptranslate", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60, check=False)


def test_the_documented_snmptranslate_command(mib_home):
    done = translate(["-M", "+contrib/snmp", "-m", "+LMSAV-MIB", "-Tp"], mib_home)
    assert done.returncode == 0
    # Debian leaves modules of its default list out; nothing may be about this MIB.
    assert not [line for line in done.stderr.splitlines() if "LMSAV" in line], done.stderr
    tree = done.stdout[done.stdout.index("+--lmsavMIB(5766)"):]
    for name, number in mib.NOTIFICATIONS.items():
        assert f"+--{name}({number})" in tree
    assert "Index: lmsavComponentIndex" in tree
    assert "Counter64 lmsavInfected(2)" in tree
    assert "Values: up(1), down(2), notConfigured(3)" in tree


def test_the_module_alone_parses_without_warnings(mib_home):
    # Only the per-user directory, net-snmp's own and contrib/snmp: no default module list.
    search = f"{mib_home['HOME']}/.snmp/mibs:/usr/share/snmp/mibs:{MIB_DIR}"
    done = translate(["-M", search, "-m", "LMSAV-MIB", "-Pw", "-Tp"], mib_home)
    assert done.returncode == 0
    assert not [line for line in done.stderr.splitlines() if "LMSAV" in line], done.stderr


def test_every_oid_of_the_agent_and_monitor_is_the_mibs(mib_home):
    names = [name for _suffix, name, _kind, _value in mib.SCALARS]
    names += [name for _number, name, _key in mib.COUNTERS]
    names += list(mib.NOTIFY_OBJECTS)
    expected = [mib.format_oid(mib.scalar_oid(name)) for name in names]
    names += list(mib.NOTIFICATIONS)
    expected += [mib.format_oid(mib.notification_oid(name)) for name in mib.NOTIFICATIONS]
    names += [f"lmsavComponent{column}" for column in ("Name", "Status", "Configured", "Pid",
                                                       "Detail")]
    expected += [mib.format_oid(mib.BASE + mib.COMPONENT_ENTRY + (column,))
                 for column, _kind, _get in mib.COMPONENT_COLUMNS]
    queries = [f"LMSAV-MIB::{name}" + (".0" if oid.endswith(".0") else "")
               for name, oid in zip(names, expected, strict=True)]
    done = translate(["-M", "+contrib/snmp", "-m", "+LMSAV-MIB", "-On", *queries], mib_home)
    assert done.stdout.split() == expected, done.stderr[-2000:]
