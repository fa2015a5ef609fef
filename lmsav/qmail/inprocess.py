"""The wrapper without a daemon: load the configuration, groups and database here and apply
the policy in this process (about a quarter of a second per message instead of milliseconds,
but mail keeps flowing while the daemon is down)."""

from __future__ import annotations

from pathlib import Path

from ..daemon import mailjob
from . import envelope


def plan_in_process(conf, message_fd: int, sender: bytes, recipients: list[bytes], group: str,
                    client: str):
    """The same plan the daemon would make, as (header, deliveries)."""
    import signal

    from .. import config as config_mod
    from .. import paths
    from ..mail.backup import BackupStore
    from ..mail.groups import groups_dir, load_groups
    from ..mail.process import MailProcessor
    from ..scanner.signatures.database import Database, DatabaseError
    from ..scanner.signatures.errors import SignatureError
    from .queue import Defer

    def expired(_signum, _frame):
        raise Defer(f"no result within {conf.timeout:g} s")

    if conf.timeout:
        signal.signal(signal.SIGALRM, expired)
        signal.setitimer(signal.ITIMER_REAL, conf.timeout)
    config_file = Path(conf.config_file)
    paths.mark_started_by_mta()  # qmail's users get the system layout's state and cache
    try:
        settings = config_mod.load_settings(config_file, None, {}, required=False)
        groups = load_groups(groups_dir(config_file))
    except config_mod.ConfigError as err:
        raise Defer(str(err)) from None
    try:
        database = Database.load(Path(settings.database_dir()), build_in_child=True)
    except (DatabaseError, SignatureError, OSError) as err:
        raise Defer(f"signature database: {err}") from None
    state = Path(settings.paths.state_dir)
    processor = MailProcessor(
        database, groups, settings.limits(), backup_store=BackupStore(state / "backup"),
        stats_dir=state / "stats",
        tmp_root=str(settings.paths.tmp_dir) if settings.paths.tmp_dir else None)
    raw = mailjob.read_fd(message_fd, mailjob.MAX_MESSAGE)
    request = {"sender": envelope.text(sender), "recipients": [envelope.text(r) for r in recipients],
               "group": group, "client": client}
    try:
        header, bodies = mailjob.make_plan(processor, groups, request, raw, processor.hostname)
    except KeyError as err:  # an unknown group named by the connection's LMSAV_GROUP
        raise Defer(str(err.args[0] if err.args else err)) from None
    finally:
        if conf.timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
    deliveries = [(d["key"], envelope.raw(d["sender"]), [envelope.raw(r) for r in d["recipients"]],
                   body) for d, body in zip(header["deliveries"], bodies)]
    return header, deliveries
