"""``lmsav report daily|weekly``: the period a report covers (whole UTC days) and what it says,
read from the statistics store with the questions ``lmsav stats`` asks (``Store.summary``).
The text, HTML, chart and mail forms live in ``report_*.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

# Report kind → (days covered, the series' step).
KINDS = {"daily": (1, "hour"), "weekly": (7, "day")}


@dataclass(frozen=True)
class Period:
    """The whole UTC days ``first`` to ``last`` (both included) of one report."""

    kind: str
    first: date
    last: date

    @property
    def since(self) -> float:
        return datetime(self.first.year, self.first.month, self.first.day,
                        tzinfo=UTC).timestamp()

    @property
    def until(self) -> float:
        end = self.last + timedelta(days=1)
        return datetime(end.year, end.month, end.day, tzinfo=UTC).timestamp()

    @property
    def by(self) -> str:
        return KINDS[self.kind][1]

    @property
    def label(self) -> str:
        """``2026-12-03`` or ``2026-11-27 to 2026-12-03``."""
        if self.first == self.last:
            return self.first.isoformat()
        return f"{self.first.isoformat()} to {self.last.isoformat()}"


def parse_day(text: str) -> date:
    """A day written as an ISO date; ValueError with a one-line reason."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a date like 2026-12-03") from None


def period(kind: str, day: date | None, now: float) -> Period:
    """The report ``kind`` ending with ``day`` (default: yesterday, UTC)."""
    if day is None:
        day = datetime.fromtimestamp(now, UTC).date() - timedelta(days=1)
    days = KINDS[kind][0]
    return Period(kind, day - timedelta(days=days - 1), day)


def build(store, covered: Period, host: str) -> dict:
    """Everything a report says, as ``lmsav stats --by hour|day --json`` has it, plus what
    the report is (kind, first and last day, host, store). StatsError when the store cannot
    be read."""
    data = store.summary(covered.since, covered.until, covered.by)
    return {"report": covered.kind, "first": covered.first.isoformat(),
            "last": covered.last.isoformat(), "host": host, "store": store.description,
            "by": covered.by, **data}


def title(data: dict) -> str:
    first, last = data["first"], data["last"]
    days = first if first == last else f"{first} to {last}"
    return f"lmsav {data['report']} report for {days} (UTC), {data['host']}"


def headline(data: dict) -> str:
    """The numbers a subject line carries."""
    totals = data["totals"]
    if not totals["messages"]:
        return "no mail traffic"
    found = [f"{totals[key]} {key}" for key in ("infected", "suspicious") if totals[key]]
    return ", ".join([f"{totals['messages']} messages", *found])


def threats_in(row: dict) -> int:
    """Messages of one series row in which a threat was found."""
    return row["infected"] + row["suspicious"]
