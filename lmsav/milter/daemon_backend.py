"""Deciding through the running ``lmsav daemon`` (its LMSAVMAIL command, mail/transfer.py): the
daemon's pre-forked workers scan in parallel with the database they already hold. When the
daemon does not answer, the milter's own mail service decides (unless that fallback is off, and
then the message is deferred)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ..mail import qmail_envelope
from ..mail.deliveries import Delivery

log = logging.getLogger("lmsav.milter")


@dataclass
class _Outcome:
    groups: list = field(default_factory=list)  # what the daemon's plan file does not carry


@dataclass
class RemotePlan:
    """The parts of a ``service.Plan`` a plan file carries: result, reply, and the before-queue
    deliveries."""

    result: str
    reply: str
    deliveries: list[Delivery]
    outcome: _Outcome = field(default_factory=_Outcome)

    @property
    def rejected(self) -> bool:
        return self.result == "reject"

    def before_queue_deliveries(self) -> list[Delivery]:
        return list(self.deliveries)


class DaemonBackend:
    """Same interface as ``server.Backend``; ``local`` is that backend (the groups at RCPT
    time, notices, and the fallback)."""

    def __init__(self, socket_path: str, timeout: float, local, fallback: bool = True):
        self.socket_path = socket_path
        self.timeout = timeout
        self.local = local
        self.fallback = fallback

    def group_of(self, sender: str, recipient: str) -> str:
        return self.local.group_of(sender, recipient)

    def send(self, deliveries) -> None:
        self.local.send(deliveries)

    def close(self) -> None:
        self.local.close()

    def decide(self, message: bytes, envelope, queue_id: str = ""):
        from ..qmail.daemon_client import DaemonUnavailable, ask
        from ..qmail.errors import Defer

        fd = os.memfd_create("lmsav-milter", os.MFD_CLOEXEC)
        try:
            view = memoryview(message)
            while view:
                view = view[os.write(fd, view):]
            os.lseek(fd, 0, os.SEEK_SET)
            try:
                header, deliveries = ask(
                    self.socket_path, fd, qmail_envelope.raw(envelope.sender),
                    [qmail_envelope.raw(r) for r in envelope.recipients], envelope.group,
                    envelope.client, self.timeout)
            except DaemonUnavailable as err:
                if not self.fallback:
                    raise RuntimeError(f"daemon at {self.socket_path} unavailable and "
                                       f"fallback is off: {err}") from None
                log.warning("daemon at %s unavailable (%s): deciding in this process",
                            self.socket_path, err)
                return self.local.decide(message, envelope, queue_id)
            except Defer as err:
                raise RuntimeError(str(err)) from None
        finally:
            os.close(fd)
        return RemotePlan(header["result"], header["reply"], [
            Delivery(key, qmail_envelope.text(sender),
                     tuple(qmail_envelope.text(r) for r in recipients), body)
            for key, sender, recipients, body in deliveries])
