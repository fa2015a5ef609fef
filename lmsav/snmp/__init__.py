"""SNMP: the LMSAV-MIB (contrib/snmp/LMSAV-MIB.txt) served to net-snmp's snmpd through
pass_persist (``agent``), and its notifications sent as SNMPv2c traps (``monitor``, ``traps``).
The values come from lmsav.status and the statistics store; see lmsav-snmp(8)."""
