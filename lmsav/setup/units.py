"""The long-running services `lmsav setup` installs: systemd units where systemd runs, else the
commands that start them."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")
DAEMON_UNIT = "lmsav-daemon.service"
SPOOL_UNIT = "lmsav-spool.service"
MILTER_UNIT = "lmsav-milter.service"


def systemd_running() -> bool:
    """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir("/run/systemd/system")


def daemon_unit(lmsav: str) -> str:
    return f"""\
# Written by `lmsav setup`; `lmsav setup --remove` deletes it unless it was edited.
[Unit]
Description=lmsav anti-virus daemon (clamd protocol)
Documentation=man:lmsav-daemon(8)
After=network.target
Before=postfix.service exim4.service clamav-milter.service

[Service]
Type=simple
ExecStart={shlex.quote(lmsav)} daemon --foreground
ExecReload=/bin/kill -USR2 $MAINPID
# Requests in flight finish on SIGTERM; the workers follow the parent.
KillMode=mixed
TimeoutStopSec=180
Restart=on-failure
RuntimeDirectory=lmsav
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""


def spool_unit(lmsav: str, user: str, group: str) -> str:
    return f"""\
# Written by `lmsav setup`; `lmsav setup --remove` deletes it unless it was edited.
[Unit]
Description=lmsav spool watcher (takes the MTA's mail into nqueue/ and scans it)
Documentation=man:lmsav-spool(8)
After=network.target lmsav-daemon.service
Before=postfix.service exim4.service

[Service]
Type=simple
User={user}
Group={group}
ExecStart={shlex.quote(lmsav)} spool watch
ExecReload=/bin/kill -HUP $MAINPID
# Messages in flight finish on SIGTERM; the rest wait in new/ for the next start.
KillMode=mixed
TimeoutStopSec=180
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def milter_unit(lmsav: str, user: str, group: str) -> str:
    return f"""\
# Written by `lmsav setup`; `lmsav setup --remove` deletes it unless it was edited.
[Unit]
Description=lmsav milter (the groups' policy before the queue, for Postfix and Sendmail)
Documentation=man:lmsav-milter(8)
After=network.target lmsav-daemon.service
Wants=lmsav-daemon.service
Before=postfix.service sendmail.service

[Service]
Type=simple
User={user}
Group={group}
ExecStart={shlex.quote(lmsav)} milter
# Sessions in flight finish on SIGTERM; the MTA tempfails new ones meanwhile.
KillMode=mixed
TimeoutStopSec=180
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""


def units(lmsav: str, user: str, group: str, milter: bool = False) -> dict[str, str]:
    out = {DAEMON_UNIT: daemon_unit(lmsav), SPOOL_UNIT: spool_unit(lmsav, user, group)}
    if milter:
        out[MILTER_UNIT] = milter_unit(lmsav, user, group)
    return out


def start_commands(lmsav: str, user: str, log_file: Path,
                   milter_log: Path | None = None) -> list[str]:
    """What an administrator runs where systemd does not: the daemon detaches itself, the
    watcher (and, given its log, the milter) runs as the service user in a session of its
    own (its early errors, before it opens its log, go to the same file)."""
    exe = shlex.quote(lmsav)
    commands = [f"{exe} daemon --detach",
                (f"setsid -f runuser -u {shlex.quote(user)} -- {exe} spool watch "
                 f"</dev/null >>{shlex.quote(str(log_file))} 2>&1")]
    if milter_log is not None:
        commands.append(f"setsid -f runuser -u {shlex.quote(user)} -- {exe} milter "
                        f"</dev/null >>{shlex.quote(str(milter_log))} 2>&1")
    return commands


def systemctl(*args: str) -> tuple[bool, str]:
    proc = subprocess.run(["systemctl", *args], capture_output=True, text=True, check=False)
    return proc.returncode == 0, " ".join((proc.stderr or proc.stdout).split())
