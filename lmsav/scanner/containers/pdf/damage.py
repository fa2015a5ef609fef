"""The damage a PDF reader notes and reads past."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Damage:
    """What went wrong while decoding, collected so the rest of the document is still read."""

    reasons: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        if len(self.reasons) < 20:
            self.reasons.append(what)
