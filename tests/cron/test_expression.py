"""Cron expressions as an administrator writes them: what is accepted, when it runs, and the
systemd calendar form of the same times."""

from __future__ import annotations

import datetime
import re
import shutil
import subprocess

import pytest

from lmsav.cron.expression import ExpressionError, parse

START = datetime.datetime(2026, 11, 25, 15, 7, tzinfo=datetime.UTC)  # a Wednesday


def times(expr: str, n: int = 3) -> list[str]:
    return [t.strftime("%a %Y-%m-%d %H:%M") for t in parse(expr).next_times(n, START)]


def test_next_times_follow_cron():
    assert times("0 3 * * *") == ["Thu 2026-11-26 03:00", "Fri 2026-11-27 03:00",
                                  "Sat 2026-11-28 03:00"]
    assert times("*/20 9-17 * * mon-fri", 2) == ["Wed 2026-11-25 15:20", "Wed 2026-11-25 15:40"]
    assert times("@weekly", 1) == ["Sun 2026-11-29 00:00"]
    assert times("0 0 * * 7", 1) == times("0 0 * * 0", 1) == ["Sun 2026-11-29 00:00"]
    # Both day fields restricted: cron runs when either matches (the 1st, or any Monday).
    assert times("0 3 1 * mon", 3) == ["Mon 2026-11-30 03:00", "Tue 2026-12-01 03:00",
                                       "Mon 2026-12-07 03:00"]
    # A day field starting with *: both must match (vixie cron's rule).
    assert times("0 3 */2 * mon", 2) == ["Mon 2026-12-07 03:00", "Mon 2026-12-21 03:00"]


def test_names_are_case_insensitive_and_whitespace_is_normalised():
    assert parse("  0  3 * JAN-mar  Sun ").text == "0 3 * JAN-mar Sun"
    assert parse("@DAILY").fields == ("0", "0", "*", "*", "*")


@pytest.mark.parametrize("expr, message", [
    ("61 * * * *", 'minute "61": 61 is out of range 0-59'),
    ("0 24 * * *", 'hour "24": 24 is out of range 0-23'),
    ("0 3 * *", "4 fields: expected 5 fields"),
    ("0 3 * * * *", "6 fields: expected 5 fields"),
    ("5/10 * * * *", "a step needs * or a range before it, e.g. */10 or 5-59/10"),
    ("*/0 * * * *", "step 0 is not allowed"),
    ("0 3 L * *", 'day of month "L": "L" is not a number'),
    ("0 3 * foo *", 'month "foo": "foo" is not a number or a name (jan,'),
    ("0 3 * * 8", 'day of week "8": 8 is out of range 0-7'),
    ("30-10 * * * *", "range 30-10 goes backwards"),
    ("0 0 30 2 *", "never runs"),
    ("@reboot", "@reboot is not supported"),
    ("@often", "unknown shorthand"),
    ("", "0 fields"),
])
def test_invalid_expressions_say_what_is_wrong(expr, message):
    with pytest.raises(ExpressionError) as err:
        parse(expr)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("expr, calendar", [
    ("0 3 * * *", "*-*-* 03:00:00"),
    ("@daily", "*-*-* 00:00:00"),
    ("*/15 * * * *", "*-*-* *:00/15:00"),
    ("0 3 * * 1-5", "Mon..Fri *-*-* 03:00:00"),
    ("0 3 * * sun", "Sun *-*-* 03:00:00"),
    ("0 3 * * 5-7", "Fri..Sun *-*-* 03:00:00"),
    ("0 3 * * 0,6", "Sat,Sun *-*-* 03:00:00"),
    ("30 2 1,15 * *", "*-*-01,15 02:30:00"),
    ("0 */6 * * sat,sun", "Sat,Sun *-*-* 00/6:00:00"),
    ("5 4 * jan-mar,dec 0", "Sun *-01..03,12-* 04:05:00"),
    ("10-50/20 9-17 * * mon-fri", "Mon..Fri *-*-* 09..17:10,30,50:00"),
    ("0 12 */2 * *", "*-*-01/2 12:00:00"),
    ("0 0 1 */3 *", "*-01/3-01 00:00:00"),
    ("@monthly", "*-*-01 00:00:00"),
])
def test_on_calendar(expr, calendar):
    assert parse(expr).on_calendar() == calendar


def test_either_day_has_no_systemd_form():
    with pytest.raises(ExpressionError, match="day of month OR the day of week"):
        parse("0 3 1 * 1").on_calendar()


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("expr", [
    "0 3 * * *", "*/15 * * * *", "10-50/20 9-17 * * mon-fri", "5 4 * jan-mar,dec 0",
    "0 */6 * * sat,sun", "0 12 */2 * *", "0 0 1 */3 *", "0 3 * * 5-7", "@monthly",
])
def test_systemd_runs_the_on_calendar_form_at_the_same_times(expr):
    """systemd itself computes the OnCalendar= times; they must be cron's times."""
    parsed = parse(expr)
    ours = [t.strftime("%Y-%m-%d %H:%M") for t in parsed.next_times(6, START)]
    done = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=6",
         f"--base-time={START.strftime('%Y-%m-%d %H:%M:%S')} UTC", parsed.on_calendar()],
        capture_output=True, text=True, env={"TZ": "UTC", "PATH": "/usr/bin:/bin"}, check=False)
    if done.returncode != 0 and "base-time" in done.stderr:
        pytest.skip("systemd-analyze without --base-time")
    assert done.returncode == 0, done.stderr
    theirs = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d)",
                        done.stdout)
    assert theirs == ours
