"""The envelope of one message: what the MTA (or the person running ``lmsav mail check``) says
about it besides its bytes. Every front end of the mail service builds one of these.

Its byte encoding for qmail-queue and the LMSAVMAIL files is in ``qmail_envelope.py``, kept
apart because the qmail wrapper, which runs once per message, cannot afford ``dataclasses``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Envelope:
    """Sender ("" for bounces), recipients, arrival time, the client (for logs) and, when the
    connection forces one, the policy group every recipient gets."""

    sender: str
    recipients: tuple[str, ...]
    arrived: float = field(default_factory=time.time)
    client: str = ""
    group: str = ""

    def __post_init__(self) -> None:
        # Callers pass lists too; a frozen envelope keeps a tuple.
        if not isinstance(self.recipients, tuple):
            object.__setattr__(self, "recipients", tuple(self.recipients))
