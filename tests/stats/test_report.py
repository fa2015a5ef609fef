"""`lmsav report daily|weekly` over real data: mail run through the mail service at fixed
times with fixed scan times, so that every number a report prints is known in advance; text,
JSON, HTML with its chart, and bad input."""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import stat
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.mail.envelope import Envelope
from lmsav.stats import report_commands
from lmsav.stats.report_commands import report
from tests.conftest import EICAR

from .conftest import message, service


def at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


class FixedTime:
    """Stands in for the ``time`` module of the mail processor: ``time()`` is when the message
    arrives, and two ``monotonic()`` readings around a scan are ``scan`` seconds apart."""

    def __init__(self):
        self.now = 0.0
        self.scan = 0.0
        self._monotonic = 1000.0
        self._readings = 0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        self._readings += 1
        if self._readings % 2 == 0:
            self._monotonic += self.scan
        return self._monotonic


CLEAN, INFECTED = "clean", "infected"
# (arrival UTC, infected?, sender, recipients, scan ms)
MAIL = [
    ("2026-11-26T23:00:00", CLEAN, "alice@example.org", ("bob@lax.example",), 5),
    ("2026-12-02T12:00:00", CLEAN, "alice@example.org", ("bob@lax.example",), 5),
    ("2026-12-03T09:15:00", CLEAN, "alice@example.org", ("bob@lax.example",), 10),
    ("2026-12-03T09:20:00", CLEAN, "alice@example.org", ("bob@lax.example",), 20),
    ("2026-12-03T09:25:00", CLEAN, "alice@example.org", ("bob@lax.example",), 30),
    ("2026-12-03T14:40:00", INFECTED, "mallory@bad.example", ("bob@strict.example",), 40),
    ("2026-12-03T14:50:00", INFECTED, "mallory@bad.example",
     ("bob@strict.example", "carol@lax.example"), 50),
    ("2026-12-03T23:59:59", CLEAN, "alice@example.org", ("bob@lax.example",), 60),
    ("2026-12-04T00:00:00", CLEAN, "alice@example.org", ("bob@lax.example",), 5),
]
NOW = at("2026-12-04T16:00:00")


@dataclass
class Flow:
    config: Path
    sizes: list[int]  # of each message of MAIL, in order

    def bytes(self, first: str, end: str) -> int:
        """The bytes of the messages that arrived in [first, end)."""
        return sum(size for (when, *_), size in zip(MAIL, self.sizes, strict=True)
                   if at(first) <= at(when) < at(end))


def run_mail(config: Path, mail: list[tuple] = MAIL) -> Flow:
    """Every message of ``mail`` through the mail service of ``config``, recorded in its
    store."""
    import lmsav.mail.process
    import lmsav.stats.store

    fixed = FixedTime()
    sizes = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(lmsav.mail.process, "time", fixed)
        # The store's own clock (pruning, flushing) is the same fixed one.
        patch.setattr(lmsav.stats.store, "open_store",
                      functools.partial(lmsav.stats.store.open_store, clock=fixed.time))
        svc = service(config)
        for n, (when, status, sender, rcpts, scan_ms) in enumerate(mail):
            fixed.now, fixed.scan = at(when), scan_ms / 1000
            raw = message(EICAR if status == INFECTED else None, n)
            sizes.append(len(raw))
            plan = svc.decide(raw, Envelope(sender, rcpts))
            assert plan.outcome.status == status
        svc.processor.stats.close()
    return Flow(config, sizes)


def fake_sendmail(directory: Path, exit_code: int = 0, complaint: str = "") -> Path:
    """A sendmail that keeps its arguments and the message it reads, and exits as told."""
    script = directory / "sendmail"
    script.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$@" > "{directory}/sendmail.args"\n'
        f'cat > "{directory}/sendmail.message"\n'
        + (f'echo "{complaint}" >&2\n' if complaint else "")
        + f"exit {exit_code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    assert os.access(script, os.X_OK)
    return script


# -- running the command ---------------------------------------------------------------------

def lmsav(config: Path, *args, env: dict | None = None):
    """``lmsav report ARGS`` through the whole command line once it carries ``report``, else
    through the command itself."""
    from lmsav.cli import LazyGroup, main

    env = {"LMSAV_CONFIG": str(config), **(env or {})}
    words = [str(a) for a in args]
    if "report" in LazyGroup.LAZY:
        return CliRunner().invoke(main, ["report", *words], env=env, catch_exceptions=False)
    return CliRunner().invoke(report, words, env=env, catch_exceptions=False)


@pytest.fixture
def flow(mail_env, monkeypatch) -> Flow:
    monkeypatch.setattr(report_commands, "clock", lambda: NOW)
    return run_mail(mail_env)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which a valid PNG has first."""
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def decoded(data: bytes):
    """The image, decoded in full (a truncated or corrupt PNG raises)."""
    from PIL import Image

    image = Image.open(BytesIO(data))
    image.load()
    return image.convert("RGB")


THREAT_RED = (0xC0, 0x39, 0x2B)  # report_chart's colour of the "with threats" bars

DAILY_TOTALS = {"messages": 6, "infected": 2, "suspicious": 0, "protected": 0, "corrupted": 0,
                "errors": 0, "filtered": 0, "files_scanned": 0}


# -- the numbers -----------------------------------------------------------------------------

def test_daily_json_counts_yesterday_exactly(flow):
    result = lmsav(flow.config, "daily", "--json")
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    data = json.loads(line)
    assert (data["report"], data["first"], data["last"], data["by"]) == \
        ("daily", "2026-12-03", "2026-12-03", "hour")
    assert data["host"] == "mx1.example"
    assert (data["since"], data["until"]) == (at("2026-12-03T00:00:00"),
                                              at("2026-12-04T00:00:00"))
    assert data["totals"] == {**DAILY_TOTALS,
                              "bytes": flow.bytes("2026-12-03T00:00:00", "2026-12-04T00:00:00")}
    assert data["statuses"] == {"clean": 4, "infected": 2}
    assert data["by_group"] == {
        "lax": {"messages": 5, "statuses": {"clean": 4, "infected": 1},
                "actions": {"skip": 4, "warn": 1}},
        "strict": {"messages": 2, "statuses": {"infected": 2}, "actions": {"reject": 2}}}
    assert data["by_action"] == {"skip": 4, "reject": 2, "warn": 1}
    assert data["top_threats"] == [{"threat": "Eicar-Test-Signature", "count": 2}]
    assert data["top_infected_senders"] == [{"sender": "mallory@bad.example", "count": 2}]
    # Nearest rank over 10, 20, 30, 40, 50, 60 ms.
    assert data["scan_ms"] == {"p50": 30.0, "p99": 60.0}
    assert [row["time"] for row in data["series"]] == \
        [at("2026-12-03T00:00:00") + 3600 * h for h in range(24)]
    per_hour = {h: (row["messages"], row["infected"])
                for h, row in enumerate(data["series"]) if row["messages"]}
    assert per_hour == {9: (3, 0), 14: (2, 2), 23: (1, 0)}


def test_daily_for_a_given_date_and_weekly_ending_on_it(flow):
    same = lmsav(flow.config, "daily", "--date", "2026-12-03", "--json")
    default = lmsav(flow.config, "daily", "--json")
    assert same.exit_code == 0 and same.output == default.output

    weekly = json.loads(lmsav(flow.config, "weekly", "--json").output)
    assert (weekly["first"], weekly["last"], weekly["by"]) == ("2026-11-27", "2026-12-03", "day")
    assert weekly["totals"]["messages"] == 7 and weekly["totals"]["infected"] == 2
    assert weekly["totals"]["bytes"] == flow.bytes("2026-11-27T00:00:00", "2026-12-04T00:00:00")
    assert [(r["messages"], r["infected"]) for r in weekly["series"]] == \
        [(0, 0)] * 5 + [(1, 0), (6, 2)]
    assert weekly["scan_ms"] == {"p50": 30.0, "p99": 60.0}  # 5 10 20 30 40 50 60

    later = json.loads(lmsav(flow.config, "weekly", "--date", "2026-12-04", "--json").output)
    assert (later["first"], later["last"]) == ("2026-11-28", "2026-12-04")
    assert later["totals"]["messages"] == 8
    assert later["totals"]["bytes"] == flow.bytes("2026-11-28T00:00:00", "2026-12-05T00:00:00")

    day = json.loads(lmsav(flow.config, "daily", "--date", "2026-11-26", "--json").output)
    assert day["totals"]["messages"] == 1 and day["series"][23]["messages"] == 1


def test_daily_text(flow):
    result = lmsav(flow.config, "daily")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "lmsav daily report for 2026-12-03 (UTC), mx1.example"
    assert lines[2].startswith("Statistics from 2026-12-03 00:00 to 2026-12-04 00:00 UTC")
    assert "Messages       6" in lines and "  infected     2" in lines
    size = flow.bytes("2026-12-03T00:00:00", "2026-12-04T00:00:00")
    assert f"Bytes          {size} ({size / 1024:.1f} KiB)" in lines
    assert "Scan time      p50 30 ms, p99 60 ms" in lines
    assert any(line.split()[:4] == ["lax", "5", "1", "0"] and line.endswith("skip 4, warn 1")
               for line in lines)
    assert any(line.split() == ["Eicar-Test-Signature", "2"] for line in lines)
    assert any(line.split() == ["mallory@bad.example", "2"] for line in lines)
    hours = [line.split() for line in lines if line.startswith("2026-12-03 ")]
    assert len(hours) == 24
    assert hours[14][:5] == ["2026-12-03", "14:00", "2", "0", "2"]


# -- HTML and its chart ----------------------------------------------------------------------

def chart_of(page: str) -> bytes:
    [source] = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return base64.b64decode(source, validate=True)


def test_html_file_with_the_chart_inside(flow, tmp_path):
    out = tmp_path / "daily.html"
    result = lmsav(flow.config, "daily", "--format", "html", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.output == ""
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<h1>lmsav daily report for 2026-12-03 (UTC), mx1.example</h1>" in page
    assert '<tr><td>Messages</td><td class="n">6</td></tr>' in page
    assert '<tr><td>infected</td><td class="n">2</td></tr>' in page
    assert '<tr><td>mallory@bad.example</td><td class="n">2</td></tr>' in page
    assert '<tr><td>Eicar-Test-Signature</td><td class="n">2</td></tr>' in page
    png = chart_of(page)
    assert png_size(png) == (800, 300)
    image = decoded(png)
    assert image.size == (800, 300)
    assert THREAT_RED in {color for _n, color in image.getcolors(800 * 300)}


def test_weekly_html_to_stdout(flow):
    result = lmsav(flow.config, "weekly", "--format", "html")
    assert result.exit_code == 0, result.output
    assert "<h2>Per day</h2>" in result.output
    assert "<td>2026-12-02</td>" in result.output
    assert png_size(chart_of(result.output)) == (800, 300)


# -- no traffic, bad input -------------------------------------------------------------------

def test_an_empty_store_says_there_was_no_traffic(mail_env, tmp_path):
    result = lmsav(mail_env, "daily", "--date", "2026-12-03")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2] == (
        "No mail traffic: no message was recorded from 2026-12-03 00:00 to 2026-12-04 00:00 "
        f"UTC ({tmp_path / 'state' / 'stats' / 'stats.sqlite'}).")
    page = lmsav(mail_env, "weekly", "--date", "2026-12-03", "--format", "html").output
    assert "No mail traffic: no message was recorded from 2026-11-27 00:00 to 2026-12-04" in page
    assert "<img" not in page
    data = json.loads(lmsav(mail_env, "weekly", "--date", "2026-12-03", "--json").output)
    assert data["totals"]["messages"] == 0 and len(data["series"]) == 7
    # Asking did not create a store.
    assert not (tmp_path / "state" / "stats").exists()


def test_a_day_without_mail_in_a_store_that_has_some(flow):
    result = lmsav(flow.config, "daily", "--date", "2026-12-01")
    assert result.exit_code == 0
    assert "No mail traffic: no message was recorded from 2026-12-01 00:00" in result.output


@pytest.mark.parametrize(("args", "message"), [
    (("daily", "--date", "yesterday"), "--date: 'yesterday' is not a date like 2026-12-03"),
    (("weekly", "--date", "2026-02-30"), "--date: '2026-02-30' is not a date like 2026-12-03"),
    (("daily", "--mail", "postmaster"), "--mail: 'postmaster' is not a mail address"),
    (("daily", "--mail", "a@b.example, c@d.example"), "--mail: 'a@b.example, c@d.example'"),
    (("daily", "--json", "--format", "html"), "--json and --format html"),
])
def test_bad_input_is_one_line_and_exit_2(mail_env, args, message):
    result = lmsav(mail_env, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"lmsav: error: {message}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""


def test_an_unwritable_output_is_one_line(flow, tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "r.txt"
    result = lmsav(flow.config, "daily", "-o", missing)
    assert result.exit_code == 2
    assert result.stderr == f"lmsav: error: {missing}: No such file or directory\n"


def test_an_unreadable_store_is_one_line(mail_env, tmp_path):
    store = tmp_path / "state" / "stats" / "stats.sqlite"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"not a database" * 100)
    result = lmsav(mail_env, "daily")
    assert result.exit_code == 2
    assert result.stderr.startswith(f"lmsav: error: cannot read the statistics store: {store}")
    assert result.stderr.count("\n") == 1
