"""Each EXAMPLES line of lmsav-report(1), run as written over mail recorded by the service,
and its synopsis naming every option."""

from __future__ import annotations

import email
import email.policy
import json
import shlex
import tomllib
from pathlib import Path

from click.testing import CliRunner

from lmsav.cron import install
from lmsav.stats.report_commands import ENV_SENDMAIL, report

from .test_report import chart_of, fake_sendmail, flow, png_size  # noqa: F401  (flow: a fixture)

MAN_PAGE = Path(__file__).resolve().parents[2] / "man" / "lmsav-report.1"


def examples() -> list[str]:
    text = MAN_PAGE.read_text()
    block = text.split(".SH EXAMPLES", 1)[1].split(".nf\n", 1)[1].split(".fi", 1)[0]
    return [line.replace("\\-", "-").replace("\\(dq", '"') for line in block.splitlines()]


def lmsav(words: list[str], env: dict):
    """``lmsav WORDS`` through the whole command line once it carries ``report``, else
    through the command (or ``cron``) group itself."""
    from lmsav.cli import LazyGroup, main

    if "report" in LazyGroup.LAZY:
        return CliRunner().invoke(main, words, env=env, catch_exceptions=False)
    if words[0] == "cron":
        from lmsav.cron.commands import cron

        return CliRunner().invoke(cron, words[1:], env=env, catch_exceptions=False)
    return CliRunner().invoke(report, words[1:], env=env, catch_exceptions=False)


def test_the_man_page_examples_run_as_written(flow, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(install, "SYSTEM_CRON_DIR", tmp_path / "system-cron.d")
    monkeypatch.setattr(install, "SYSTEM_UNIT_DIR", tmp_path / "system-units")
    (tmp_path / "cron.d").mkdir()
    env = {"LMSAV_CONFIG": str(flow.config), ENV_SENDMAIL: str(fake_sendmail(tmp_path)),
           "LMSAV_CRON_DIR": str(tmp_path / "cron.d"), "LMSAV_SYSTEMD_DIR": str(tmp_path / "u")}
    lines = examples()
    assert len(lines) == 6
    outputs = {}
    for line in lines:
        words = shlex.split(line)
        assert words[0] == "lmsav" and words[1] in ("report", "cron"), line
        result = lmsav(words[1:], env)
        assert result.exit_code == 0, (line, result.output)
        outputs[line] = result.output
    assert outputs["lmsav report daily"].startswith(
        "lmsav daily report for 2026-12-03 (UTC), mx1.example\n")
    assert "Messages       7" in outputs["lmsav report weekly"].splitlines()
    data = json.loads(outputs["lmsav report daily --date 2026-12-03 --json"])
    assert data["totals"]["messages"] == 6 and data["totals"]["infected"] == 2
    page = (tmp_path / "week.html").read_text()
    assert png_size(chart_of(page)) == (800, 300)
    assert outputs["lmsav report daily --mail postmaster@example.org"] == (
        "mailed the daily report for 2026-12-03 to postmaster@example.org\n")
    mailed = email.message_from_bytes((tmp_path / "sendmail.message").read_bytes(),
                                      policy=email.policy.default)
    assert mailed["To"] == "postmaster@example.org"
    stored = tomllib.loads((flow.config.parent / "schedules.d" / "daily-mail.toml").read_text())
    assert (stored["report"], stored["mail"], stored["schedule"]) == \
        ("daily", ["postmaster@example.org"], "0 6 * * *")
    assert "cron run --quiet daily-mail" in (tmp_path / "cron.d" / "lmsav").read_text()


def test_the_synopsis_names_every_option():
    text = MAN_PAGE.read_text().replace("\\-", "-")
    synopsis = text.split(".SH SYNOPSIS", 1)[1].split(".SH ", 1)[0]
    for param in report.params:
        for opt in param.opts:
            if opt.startswith("-") and opt != "--help":
                assert opt in synopsis, opt
    options = text.split(".SH OPTIONS", 1)[1].split(".SH ", 1)[0]
    for param in report.params:
        if param.opts[0].startswith("-"):
            assert param.opts[-1] in options, param.opts
