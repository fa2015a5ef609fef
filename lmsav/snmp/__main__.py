"""``python -m lmsav.snmp agent|monitor``: the snmp commands without the rest of the CLI."""

from .commands import snmp_group

snmp_group(prog_name="lmsav snmp")
