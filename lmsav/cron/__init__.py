"""Scheduled sweeps (database updates later): schedule files, their installation for cron or
systemd, and the runs themselves. See lmsav-cron(8)."""
