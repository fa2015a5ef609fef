"""Cron expressions: validate the five standard fields, compute run times, write systemd's form.

Only what cron(5) itself accepts is allowed — numbers, names, ``*``, lists, ranges and steps
after ``*`` or a range, and the @hourly … @yearly shorthands — so a schedule that validates here
is one cron installs as written. croniter computes the run times. ``@reboot`` is refused: it has
no next run time to show, and systemd has no calendar form for it.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass

from croniter import CroniterError, croniter

SHORTHANDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

ALLOWED = ('5 fields "minute hour day-of-month month day-of-week" (numbers, names, *, lists, '
           'ranges, steps, e.g. "0 3 * * *" or "*/30 8-18 * * mon-fri") or one of '
           + ", ".join(SHORTHANDS))

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_SYSTEMD_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day of month", 1, 31, {}),
    _Field("month", 1, 12, {name: i for i, name in enumerate(_MONTHS, 1)}),
    # 0 and 7 are both Sunday, as in cron(5).
    _Field("day of week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)

_ITEM_RE = re.compile(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?", re.IGNORECASE)


class ExpressionError(ValueError):
    """What is wrong with a cron expression, in words a person can act on."""


@dataclass(frozen=True)
class CronExpression:
    """A validated schedule: the text as written, its five fields and the values they match."""

    text: str
    fields: tuple[str, str, str, str, str]
    values: tuple[frozenset[int], ...]

    @property
    def days_either(self) -> bool:
        """cron(5): when both day fields are restricted (neither starts with *), either matches."""
        return not self.fields[2].startswith("*") and not self.fields[4].startswith("*")

    def next_times(self, count: int, start: datetime.datetime | None = None
                   ) -> list[datetime.datetime]:
        """The next ``count`` run times after ``start`` (default now), in local time."""
        start = start or datetime.datetime.now().astimezone()
        it = croniter(" ".join(self.fields).lower(), start, day_or=self.days_either)
        return [it.get_next(datetime.datetime) for _ in range(count)]

    def on_calendar(self) -> str:
        """systemd's OnCalendar= for the same times; ExpressionError when there is none."""
        if self.days_either:
            raise ExpressionError(
                "no systemd form: cron runs it when the day of month OR the day of week matches, "
                "an OnCalendar= only when both do; use two schedules")
        minute, hour, dom, month, dow = self.fields
        minutes, hours, doms, months, dows = self.values
        date = f"*-{_calendar_part(month, months, 1)}-{_calendar_part(dom, doms, 1)}"
        time = f"{_calendar_part(hour, hours, 0)}:{_calendar_part(minute, minutes, 0)}:00"
        weekdays = {d % 7 for d in dows}
        if dow.startswith("*") and weekdays == set(range(7)):
            return f"{date} {time}"
        return f"{_weekday_part(weekdays)} {date} {time}"


def parse(text: str) -> CronExpression:
    """Validate ``text``; raise ExpressionError saying what is wrong and what is allowed."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected {ALLOWED}")
    written = " ".join(text.split())
    lowered = written.lower()
    if lowered == "@reboot":
        raise ExpressionError("@reboot is not supported: a sweep needs times it runs at; use "
                              "@daily or a time such as \"0 3 * * *\"")
    if lowered.startswith("@"):
        if lowered not in SHORTHANDS:
            raise ExpressionError(f"unknown shorthand: expected {ALLOWED}")
        fields = SHORTHANDS[lowered].split()
    else:
        fields = written.split()
        if len(fields) != 5:
            raise ExpressionError(f"{len(fields)} fields: expected {ALLOWED}")
    values = tuple(_parse_field(spec, value) for spec, value in zip(_FIELDS, fields))
    expression = CronExpression(written, tuple(fields), values)  # type: ignore[arg-type]
    try:
        expression.next_times(1)
    except CroniterError:
        raise ExpressionError("never runs: no date matches it (such as 30 February)") from None
    return expression


def _parse_field(spec: _Field, text: str) -> frozenset[int]:
    matched: set[int] = set()
    for item in text.split(","):
        match = _ITEM_RE.fullmatch(item)
        if not match:
            raise ExpressionError(f'{spec.name} "{text}": "{item}" is not a number, name, *, '
                                  f'range (1-5) or step (*/10, 1-30/5)')
        base, step_text = match[1], match[2]
        if base == "*":
            first, last = spec.low, spec.high
        elif "-" in base:
            first, last = (_value(spec, part, text) for part in base.split("-"))
            if first > last:
                raise ExpressionError(f'{spec.name} "{text}": range {base} goes backwards')
        else:
            if step_text is not None:
                raise ExpressionError(f'{spec.name} "{text}": a step needs * or a range before '
                                      f'it, e.g. */{step_text} or {base}-{spec.high}/{step_text}')
            first = last = _value(spec, base, text)
        step = 1
        if step_text is not None:
            step = int(step_text)
            if step < 1:
                raise ExpressionError(f'{spec.name} "{text}": step 0 is not allowed')
        matched.update(range(first, last + 1, step))
    return frozenset(matched)


def _value(spec: _Field, word: str, text: str) -> int:
    if word.isdigit():
        number = int(word)
    elif word.lower() in spec.names:
        number = spec.names[word.lower()]
    else:
        names = f" or a name ({', '.join(spec.names)})" if spec.names else ""
        raise ExpressionError(f'{spec.name} "{text}": "{word}" is not a number{names}')
    if not spec.low <= number <= spec.high:
        raise ExpressionError(f'{spec.name} "{text}": {number} is out of range '
                              f'{spec.low}-{spec.high}')
    return number


def _calendar_part(text: str, values: frozenset[int], low: int) -> str:
    """One OnCalendar component: *, start/step for */N, else a list with a..b runs."""
    if text == "*":
        return "*"
    if re.fullmatch(r"\*/\d+", text):
        return f"{low:02d}/{text[2:]}"
    return ",".join(
        f"{a:02d}" if a == b else f"{a:02d},{b:02d}" if b == a + 1 else f"{a:02d}..{b:02d}"
        for a, b in _runs(sorted(values)))


def _weekday_part(days: set[int]) -> str:
    # systemd's week starts on Monday: Sunday (0) sorts last so that "Mon..Fri,Sun" reads well.
    order = sorted(days, key=lambda d: (d == 0, d))
    keyed = [7 if d == 0 else d for d in order]
    parts = []
    for a, b in _runs(keyed):
        first, last = _SYSTEMD_DAYS[a % 7], _SYSTEMD_DAYS[b % 7]
        parts.append(first if a == b else f"{first},{last}" if b == a + 1 else f"{first}..{last}")
    return ",".join(parts)


def _runs(numbers: list[int]) -> list[tuple[int, int]]:
    """[1, 2, 3, 5] → [(1, 3), (5, 5)]: consecutive numbers as (first, last)."""
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    return runs
