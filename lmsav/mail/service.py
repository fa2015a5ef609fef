"""The mail service: every front end (spool watcher, qmail wrapper, daemon, ``lmsav mail check``)
builds one ``MailService`` from the settings and asks it ``decide(message, envelope) -> Plan``.

The plan is what the policy decided (``plan.outcome``: per group its recipients, status, action
and message) and what the MTA must be handed, in order (``plan.deliveries``: notices first,
messages last, so a failure half-way can never leave a message queued while its notices were
lost). A front end translates the plan into its own protocol and decides nothing itself.

Before and after the queue differ in one case only, when every addressed group rejects:

- after the queue (the spool watcher) the MTA has already said yes, so the sender learns of the
  refusal by a delivery status notice: it is in ``plan.deliveries``, like every other delivery;
- before the queue (qmail wrapper, daemon's LMSAVMAIL, a milter) the SMTP reply carries the
  refusal (``plan.result == "reject"``, ``plan.reply``): ``plan.before_queue_deliveries()`` is
  ``plan.deliveries`` without that notice (the groups' own notices still go).

When only some groups reject, both queue what the others accept and tell the sender about the
refused recipients with a delivery status notice: one SMTP transaction has one answer for all
recipients.

A group whose action is "hold" gets no delivery: its message is kept intact for the
administrator. When every addressed group holds, ``plan.result`` is "hold" and ``plan.reply``
the reason; each front end keeps the message its own way (``Plan.held``): a milter asks the MTA
to quarantine it (Postfix's hold queue), the spool watcher moves the entry to ``hold/``, Exim's
DATA ACL freezes it, and qmail, which has no hold queue, accepts it and delivers nothing: the
backup, always made for a held message, is the copy kept.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .deliveries import REJECT_NOTICE_KEY, Delivery, plan_deliveries
from .envelope import Envelope
from .outcome import MessageOutcome

log = logging.getLogger("lmsav.mail")


class MailServiceError(Exception):
    """The service cannot be built or cannot decide for this message (one line; front ends
    defer, exit 2 or log it)."""


@dataclass
class Plan:
    """What to do with one message."""

    outcome: MessageOutcome  # per group: recipients, status, action, the message they get
    deliveries: list[Delivery]  # after the queue: every delivery, notices first, messages last
    result: str  # "accept" | "reject" | "hold" (every addressed group rejected, held)
    reply: str  # the SMTP reply when rejected, the reason when held, else ""

    @property
    def rejected(self) -> bool:
        return self.result == "reject"

    @property
    def held(self) -> list:
        """The groups (with recipients) whose message is kept, not delivered."""
        return [g for g in self.outcome.groups if g.recipients and g.action == "hold"]

    def before_queue_deliveries(self) -> list[Delivery]:
        """The deliveries of a front end that answers the SMTP transaction itself: when the
        message is refused, the sender hears it in the reply and gets no status notice."""
        if not self.rejected:
            return list(self.deliveries)
        return [d for d in self.deliveries if d.key != REJECT_NOTICE_KEY]


class MailService:
    """Groups, database and policy, built once per process; ``decide`` per message."""

    def __init__(self, database, groups, limits, *, backup_store=None, stats=None,
                 tmp_root: str | None = None, hostname: str | None = None):
        from .process import MailProcessor

        self.database = database
        self.groups = groups
        self.processor = MailProcessor(database, groups, limits, backup_store=backup_store,
                                       stats=stats, hostname=hostname, tmp_root=tmp_root)
        self.hostname = self.processor.hostname

    @classmethod
    def from_settings(cls, settings, config_path: Path | None, *, database=None,
                      database_dir: Path | None = None, groups=None, backup: bool = True,
                      stats: bool = True) -> MailService:
        """Groups from ``groups.d`` beside ``config_path`` (the shipped default group when None)
        unless ``groups`` is given (a daemon keeping its running groups when groups.d was
        refused) and, unless ``database`` is given, the database of ``database_dir`` or the
        settings."""
        from .. import paths
        from ..config import ConfigError
        from ..scanner.containers import load_all
        from ..stats.store import open_store
        from .backup import BackupStore
        from .groups import groups_dir, load_groups

        if groups is None:
            try:
                groups = load_groups(groups_dir(Path(config_path)) if config_path else None)
            except ConfigError as err:
                raise MailServiceError(str(err)) from None
        if database is None:
            database = load_database(database_dir or settings.database_dir())
        load_all()  # every handler imported once, before a daemon or watcher forks
        state = Path(settings.paths.state_dir)
        tmp = settings.paths.tmp_dir
        return cls(database, groups, settings.limits(),
                   backup_store=BackupStore(paths.backup_dir(state)) if backup else None,
                   stats=open_store(settings) if stats else None,
                   tmp_root=str(tmp) if tmp else None, hostname=settings.host_name())

    def decide(self, message: bytes, envelope: Envelope, queue_id: str = "") -> Plan:
        """Scan ``message``, apply each recipient group's policy, and plan the deliveries.
        One log line says what was decided (``queue_id``: the MTA's id, for that line)."""
        from .backup import BackupError

        if envelope.group and self.groups.get(envelope.group) is None:
            raise MailServiceError(f"no recipient group named {envelope.group!r}")
        try:
            outcome = self.processor.process(message, envelope.sender, list(envelope.recipients),
                                             group=envelope.group or None)
        except (OSError, BackupError) as err:
            raise MailServiceError(f"cannot record the outcome: {err}") from None
        deliveries = plan_deliveries(outcome, envelope, message, self.groups, self.hostname)
        addressed = [g for g in outcome.groups if g.recipients]
        rejected = bool(addressed) and all(g.action == "reject" for g in addressed)
        held = bool(addressed) and all(g.action == "hold" for g in addressed)
        reply = next((g.reject_reply for g in addressed if g.reject_reply), "") if rejected else ""
        if held:
            reply = hold_reason(outcome)
        log_decision(outcome, queue_id)
        result = "reject" if rejected else "hold" if held else "accept"
        return Plan(outcome, deliveries, result, reply)


def hold_reason(outcome: MessageOutcome) -> str:
    """Why a message is held, on one line of printable ASCII: the MTA shows it beside the
    held message (Postfix's queue, Sendmail's quarantine, Exim's frozen message, hold/)."""
    held = [g for g in outcome.groups if g.action == "hold"] or outcome.groups
    statuses = ",".join(dict.fromkeys(g.status for g in held)) or outcome.status
    text = f"held by the anti-virus policy: {statuses}"
    if outcome.threats:
        text += f" ({', '.join(outcome.threats)})"
    text = "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))
    return text if len(text) <= 200 else text[:197] + "..."


def log_decision(outcome: MessageOutcome, queue_id: str = "") -> None:
    """amavis' one line per message: ``queue=… msgid=<…> from=<…> to=<…>,<…> group=…
    status=… action=… threats=… size=… time=…ms``, a value per addressed group in ``group``,
    ``status`` and ``action``; in JSON lines the same fields, lists as lists."""
    if not log.isEnabledFor(logging.INFO):
        return
    groups = [g for g in outcome.groups if g.recipients] or outcome.groups
    fields = {
        "queue": queue_id,
        "msgid": outcome.message_id,
        "from": outcome.sender,
        "to": list(outcome.recipients),
        "group": [g.group for g in groups],
        "status": [g.status for g in groups] or [outcome.status],
        "action": [g.action for g in groups],
        "threats": list(outcome.threats),
        "size": outcome.size,
        "time_ms": round(outcome.scan_seconds * 1000),
    }
    log.info("queue=%s msgid=%s from=<%s> to=%s group=%s status=%s action=%s threats=%s "
             "size=%d time=%dms", _token(queue_id), _token(outcome.message_id), _bare(outcome.sender),
             ",".join(f"<{_bare(r)}>" for r in outcome.recipients) or "-",
             _joined(fields["group"]), _joined(fields["status"]), _joined(fields["action"]),
             _joined(_token(t) for t in outcome.threats), outcome.size, fields["time_ms"],
             extra=fields)


def _token(text: str) -> str:
    """A value without white space, so that the line splits on spaces; "-" when empty."""
    return "".join(str(text).split()) or "-"


def _bare(address: str) -> str:
    return "".join(address.split())  # the null sender stays <>


def _joined(values) -> str:
    return ",".join(values) or "-"


def load_database(directory):
    """The compiled database of ``directory``, resolved once (an update switching ``current``
    while it loads must not mix two versions); built in a child when it must be compiled."""
    from ..scanner.signatures.database import Database, DatabaseError
    from ..scanner.signatures.errors import SignatureError

    resolved = Path(os.path.realpath(directory))
    try:
        return Database.load(resolved, build_in_child=True)
    except (DatabaseError, SignatureError, OSError) as err:
        raise MailServiceError(f"signature database: {err}") from None
