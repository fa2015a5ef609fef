"""The SNMP subagent and traps: nothing yet; the package holds the place of the coming one."""
