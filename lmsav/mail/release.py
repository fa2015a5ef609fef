"""Release a kept message: hand the original, byte for byte, back to the MTA for its original
recipients (or some of them) with its original sender.

The backup entry's record holds the envelope (``sender`` and ``recipients``, flat or under
``envelope``); an entry without one cannot be released. The caller gives the reinjector (the
spool's ``[spool] reinject`` target, as the watcher uses it): a reinjection port does not filter
again, so what is released is delivered as it was received.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from .backup import BackupError, BackupStore

log = logging.getLogger("lmsav.mail")


class ReleaseError(Exception):
    """The message was not released, or only to ``delivered``; the message is one line."""

    def __init__(self, message: str, delivered: tuple[str, ...] = ()):
        super().__init__(message)
        self.delivered = delivered


class Deliverer(Protocol):
    """What a reinjector offers (lmsav.spool.reinject)."""

    def deliver(self, sender: str, recipients: list[str], message: bytes) -> None: ...


@dataclass(frozen=True)
class Released:
    entry_id: str
    sender: str
    recipients: tuple[str, ...]
    size: int


def envelope_of(entry_id: str, record: dict) -> tuple[str, tuple[str, ...]]:
    """(sender, recipients) the entry was received with; ReleaseError if it has none."""
    envelope = record.get("envelope")
    envelope = envelope if isinstance(envelope, dict) else record
    sender, recipients = envelope.get("sender"), envelope.get("recipients")
    if (not isinstance(sender, str) or not isinstance(recipients, list) or not recipients
            or not all(isinstance(r, str) and r.strip() for r in recipients)):
        raise ReleaseError(f"backup entry '{entry_id}' has no envelope (sender and "
                           f"recipients): it cannot be released; extract it instead")
    return sender, tuple(dict.fromkeys(recipients))


def choose_recipients(entry_id: str, recipients: tuple[str, ...],
                      wanted: Iterable[str] | None) -> tuple[str, ...]:
    """``wanted`` (all when None or empty) as the entry spells them; an address that is not one
    of its recipients is refused: a release goes nowhere the message was not addressed."""
    wanted = [w.strip().strip("<>") for w in wanted or () if w.strip()]
    if not wanted:
        return recipients
    by_fold = {r.casefold(): r for r in recipients}
    chosen = []
    for address in wanted:
        match = address if address in recipients else by_fold.get(address.casefold())
        if match is None:
            raise ReleaseError(f"<{address}> is not a recipient of backup entry '{entry_id}' "
                               f"(its recipients: {', '.join(recipients)})")
        chosen.append(match)
    return tuple(dict.fromkeys(chosen))


def release(store: BackupStore, entry_id: str, deliverer: Deliverer,
            to: Iterable[str] | None = None) -> Released:
    """Deliver the original of ``entry_id`` to ``to`` (a subset of its recipients; all of them
    when None). The entry is kept: releasing is not deleting."""
    try:
        record = store.show(entry_id)
        sender, recipients = envelope_of(entry_id, record)
        chosen = choose_recipients(entry_id, recipients, to)
        message = store.extract(entry_id)
    except BackupError as err:
        raise ReleaseError(str(err)) from None
    recorded = record.get("sha256")
    if isinstance(recorded, str) and hashlib.sha256(message).hexdigest() != recorded:
        raise ReleaseError(f"backup entry '{entry_id}' is damaged: its message does not match "
                           f"the recorded sha256")
    try:
        deliverer.deliver(sender, list(chosen), message)
    except Exception as err:  # noqa: BLE001 - a reinjector failure or bug: never "delivered"
        delivered = tuple(getattr(err, "delivered", ()) or ())
        if delivered:
            raise ReleaseError(f"backup entry '{entry_id}' delivered to "
                               f"{', '.join(delivered)} only: {err}", delivered) from None
        raise ReleaseError(f"backup entry '{entry_id}' not delivered: {err}") from None
    log.info("released backup entry %s from <%s> to %s", entry_id, sender,
             ", ".join(f"<{r}>" for r in chosen))
    return Released(entry_id, sender, chosen, len(message))
