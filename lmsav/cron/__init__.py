"""Scheduled sweeps and database updates: schedule files, their installation for cron or
systemd, and the runs themselves. See lmsav-cron(8)."""
