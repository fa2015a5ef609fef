"""The wrapper without a daemon: build the mail service here and decide in this process (about a
quarter of a second per message instead of milliseconds, but mail keeps flowing while the daemon
is down). The plan goes through the same file format as the daemon's, so the rest of the wrapper
cannot tell the two apart."""

from __future__ import annotations

import os
from pathlib import Path

from ..mail import qmail_envelope as envelope
from ..mail import transfer


def plan_in_process(conf, message_fd: int, sender: bytes, recipients: list[bytes], group: str,
                    client: str):
    """The same plan the daemon would make, as ``transfer.read_plan`` gives it."""
    import signal

    from .. import config as config_mod
    from .. import logsetup, paths
    from ..mail.envelope import Envelope
    from ..mail.service import MailService, MailServiceError
    from .errors import Defer

    def expired(_signum, _frame):
        raise Defer(f"no result within {conf.timeout:g} s")

    if conf.timeout:
        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, conf.timeout)
    config_file = Path(conf.config_file)
    paths.mark_started_by_mta()  # qmail's users get the system layout's state and cache
    try:
        try:
            settings = config_mod.load_settings(config_file, None, {}, required=False)
            logsetup.configure(settings, "qmail")  # the message's log line goes where [log] says
            service = MailService.from_settings(settings, config_file)
            raw = transfer.read_fd(message_fd, transfer.MAX_MESSAGE)
            plan = service.decide(raw, Envelope(
                envelope.text(sender), tuple(envelope.text(r) for r in recipients),
                client=client, group=group))
        except (config_mod.ConfigError, MailServiceError, transfer.PlanError) as err:
            raise Defer(str(err)) from None
    finally:
        if conf.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    plan_fd = os.memfd_create("lmsav-plan", os.MFD_CLOEXEC)
    try:
        transfer.write_plan(plan_fd, plan)
        return transfer.read_plan(plan_fd)
    finally:
        os.close(plan_fd)
