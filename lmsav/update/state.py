"""What lmsav update remembers between runs: checks, results and mirrors' cool-downs.

Times are Unix seconds from the wall clock, which may jump. A time in the future is read as a
clock that went back: a last check "later than now" does not hold the next check off, and a
cool-down further away than any mirror could have asked for is forgotten.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..durable import write_atomic

STATE = ".update-state.json"
MAX_COOL_DOWN = 24 * 3600.0 + 600  # the longest wait honoured (a larger one is clock skew)
OK_RESULTS = ("updated", "current", "rolled back")


@dataclass
class State:
    last_check: float | None = None  # when a network source was last asked
    last_success: float | None = None  # when the database was last found or made current
    last_result: str = ""  # "updated", "current", "failed", "rolled back"
    last_error: str = ""
    last_source: str = ""
    cool_downs: dict[str, float] = field(default_factory=dict)  # source → not before (Unix s)

    def cooling(self, source: str, now: float) -> float | None:
        """Until when ``source`` must not be asked, or None."""
        until = self.cool_downs.get(source)
        if until is None or until <= now or until - now > MAX_COOL_DOWN:
            return None
        return until

    def check_due(self, interval: float, now: float) -> bool:
        """True when the network sources may be asked again: ``interval`` after the last check
        that succeeded (after a failure the next run may try again; 429 cool-downs still hold)."""
        if not interval or self.last_check is None or self.last_result not in OK_RESULTS:
            return True
        elapsed = now - self.last_check
        return elapsed < 0 or elapsed >= interval  # < 0: the clock went back


def load(root: Path) -> State:
    """The saved state; a missing or unreadable file is a fresh start."""
    try:
        raw = json.loads((root / STATE).read_text())
    except (OSError, ValueError):
        return State()
    if not isinstance(raw, dict):
        return State()
    state = State()
    for key in ("last_check", "last_success"):
        if isinstance(raw.get(key), (int, float)):
            setattr(state, key, float(raw[key]))
    for key in ("last_result", "last_error", "last_source"):
        if isinstance(raw.get(key), str):
            setattr(state, key, raw[key])
    cool = raw.get("cool_downs")
    if isinstance(cool, dict):
        state.cool_downs = {k: float(v) for k, v in cool.items()
                            if isinstance(k, str) and isinstance(v, (int, float))}
    return state


def save(root: Path, state: State, now: float) -> None:
    state.cool_downs = {k: v for k, v in state.cool_downs.items() if v > now}
    write_atomic(root / STATE, (json.dumps(asdict(state), indent=2, sort_keys=True) + "\n")
                 .encode())


__all__ = ["State", "load", "save"]
