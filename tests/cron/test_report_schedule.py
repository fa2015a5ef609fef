"""`lmsav cron add report`: a schedule whose job runs `lmsav report daily|weekly`, keeps the
HTML page in the reports directory and mails it. Added, listed, installed, run for real with
`lmsav cron run` over mail recorded by the mail service yesterday (a sendmail that keeps what
it is given), and checked when written by hand."""

from __future__ import annotations

import email
import email.policy
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta

import pytest

from lmsav.cron.run import KEEP_REPORTS, prune_reports
from lmsav.cron.schedules import ScheduleError, from_toml
from lmsav.stats.report_commands import ENV_SENDMAIL
from tests.cron.test_update_schedule import LINE_START, lmsav_executable
from tests.stats.conftest import GROUPS
from tests.stats.test_report import (
    CLEAN,
    INFECTED,
    THREAT_RED,
    chart_of,
    decoded,
    fake_sendmail,
    png_size,
    run_mail,
)

YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date()


@pytest.fixture
def env(cron_env, monkeypatch):
    """A configuration with recipient groups and a statistics store holding yesterday's mail
    (UTC): two clean messages and an infected one."""
    config = cron_env.config
    (config.parent / "groups.d").mkdir()
    for name, text in GROUPS.items():
        (config.parent / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{cron_env.state}"\n'
                      '[server]\nhost_name = "mx1.example"\n')
    day = YESTERDAY.isoformat()
    run_mail(config, [
        (f"{day}T08:00:00", CLEAN, "alice@example.org", ("bob@lax.example",), 10),
        (f"{day}T08:30:00", CLEAN, "alice@example.org", ("bob@lax.example",), 20),
        (f"{day}T17:00:00", INFECTED, "mallory@bad.example", ("bob@strict.example",), 30),
    ])
    monkeypatch.setenv("LMSAV_EXECUTABLE", lmsav_executable())
    cron_env.mta = cron_env.tmp / "mta"
    cron_env.mta.mkdir()
    monkeypatch.setenv(ENV_SENDMAIL, str(fake_sendmail(cron_env.mta)))
    cron_env.log = cron_env.state / "log" / "cron.log"
    cron_env.reports = cron_env.state / "reports"
    return cron_env


def add(env, name="daily-mail", *extra):
    result = env.invoke("add", "report", name, "--report", "daily",
                        "--mail", "postmaster@example.org", "--schedule", "0 6 * * *", *extra)
    assert result.exit_code == 0, result.output
    return result


def mailed(env):
    raw = (env.mta / "sendmail.message").read_bytes()
    return email.message_from_bytes(raw, policy=email.policy.default)


def test_add_stores_a_report_schedule_and_installs_its_cron_line(env):
    result = add(env)
    assert f"added report daily-mail: {env.schedules}/daily-mail.toml" in result.stdout
    assert ("runs:     lmsav report daily, mailed to postmaster@example.org"
            in result.stdout)
    stored = tomllib.loads((env.schedules / "daily-mail.toml").read_text())
    assert (stored["kind"], stored["report"], stored["mail"], stored["schedule"]) == \
        ("report", "daily", ["postmaster@example.org"], "0 6 * * *")
    assert "paths" not in stored and "scan_options" not in stored
    cron = env.cron_file.read_text()
    assert "# report daily-mail: lmsav report daily\n" in cron
    assert re.search(r"^0 6 \* \* \* \S+ \S+ --config \S+ cron run --quiet daily-mail$", cron,
                     re.MULTILINE), cron
    listing = env.invoke("list")
    assert "daily-mail  report" in listing.output and "last:     never ran" in listing.output


def test_cron_run_mails_yesterdays_report_and_keeps_the_page(env):
    add(env)
    result = env.invoke("run", "daily-mail")
    assert result.exit_code == 0, result.output
    assert (f"mailed the daily report for {YESTERDAY} to postmaster@example.org"
            in result.stdout)

    [page] = env.reports.glob("daily-mail-*.html")
    html = page.read_text()
    assert f"lmsav daily report for {YESTERDAY} (UTC), mx1.example" in html
    assert '<tr><td>Messages</td><td class="n">3</td></tr>' in html
    png = chart_of(html)
    assert png_size(png) == (800, 300)
    assert THREAT_RED in {color for _n, color in decoded(png).getcolors(800 * 300)}

    message = mailed(env)
    assert message["To"] == "postmaster@example.org"
    assert message["From"] == "lmsav@mx1.example"
    assert message["Subject"] == (f"lmsav daily report for {YESTERDAY} (UTC), mx1.example: "
                                  f"3 messages, 1 infected")
    plain, related = message.get_payload()
    assert "Messages       3" in plain.get_content().splitlines()
    html_part, image = related.get_payload()
    assert f'src="cid:{image["Content-ID"].strip("<>")}"' in html_part.get_content()

    [line] = env.log.read_text().splitlines()
    assert re.fullmatch(LINE_START + rf"name=daily-mail kind=report result=sent exit=0 "
                        rf"seconds=[\d.]+ report={re.escape(str(page))}", line), line
    last = json.loads((env.state / "cron" / "daily-mail.last.json").read_text())
    assert (last["kind"], last["result"], last["exit"], last["report"]) == \
        ("report", "sent", 0, str(page))
    listing = env.invoke("list")
    assert re.search(r"last:     \S+ sent, [\d.]+ s", listing.output), listing.output

    quiet = env.invoke("run", "--quiet", "daily-mail")
    assert quiet.exit_code == 0 and quiet.output == ""
    assert len(list(env.reports.glob("daily-mail-*.html"))) == 2


def test_a_report_kept_only_and_a_weekly_one(env):
    result = env.invoke("add", "report", "week", "--report", "weekly", "--schedule", "@weekly")
    assert result.exit_code == 0, result.output
    assert "runs:     lmsav report weekly, kept in <state_dir>/reports/" in result.output
    run = env.invoke("run", "week")
    assert run.exit_code == 0, run.output
    assert "result=written" in run.output
    assert not (env.mta / "sendmail.message").exists()
    [page] = env.reports.glob("week-*.html")
    assert "<h2>Per day</h2>" in page.read_text()


def test_a_failing_mta_is_an_error_run(env, monkeypatch):
    monkeypatch.setenv(ENV_SENDMAIL, str(fake_sendmail(env.mta, 75, "queue file full")))
    add(env)
    result = env.invoke("run", "--quiet", "daily-mail")
    assert result.exit_code == 2
    assert "result=error exit=2" in result.output
    assert 'error="cannot mail the report: ' in result.output
    assert "queue file full" in result.output
    last = json.loads((env.state / "cron" / "daily-mail.last.json").read_text())
    assert last["result"] == "error" and "queue file full" in last["error"]


def test_bad_input_is_one_line(env):
    for args, message in [
        (("--report", "daily", "--mail", "postmaster", "--schedule", "@daily"),
         "--mail: 'postmaster' is not a mail address"),
        (("--report", "daily", "--schedule", "61 * * * *"), '--schedule "61 * * * *"'),
    ]:
        result = env.invoke("add", "report", "r", *args)
        assert result.exit_code == 2 and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    result = env.invoke("add", "report", "r", "--report", "monthly", "--schedule", "@daily")
    assert result.exit_code == 2 and "monthly" in result.stderr
    assert not (env.schedules / "r.toml").exists()


@pytest.mark.parametrize(("data", "message"), [
    ({"kind": "report", "name": "r", "schedule": "@daily"},
     "missing key report (\"daily\" or \"weekly\")"),
    ({"kind": "report", "name": "r", "schedule": "@daily", "report": "hourly"},
     'report = "hourly": expected "daily" or "weekly"'),
    ({"kind": "report", "name": "r", "schedule": "@daily", "report": "daily",
      "mail": "postmaster@example.org"},
     ('mail = "postmaster@example.org": expected a list of mail addresses like '
      '["postmaster@example.org"]')),
    ({"kind": "report", "name": "r", "schedule": "@daily", "report": "daily",
      "paths": ["/srv"]},
     'paths = ["/srv"]: a report schedule runs `lmsav report` and has no paths'),
    ({"kind": "sweep", "name": "r", "schedule": "@daily", "paths": ["/srv"],
      "mail": ["postmaster@example.org"]},
     'mail = ["postmaster@example.org"]: a sweep schedule runs `lmsav scan` and has no mail'),
    ({"kind": "update", "name": "r", "schedule": "@daily", "report": "daily"},
     'report = "daily": an update schedule runs `lmsav update` and has no report'),
])
def test_a_schedule_file_written_by_hand_is_checked(data, message):
    with pytest.raises(ScheduleError) as raised:
        from_toml(data, "/etc/lmsav/schedules.d/r.toml")
    assert str(raised.value) == f"/etc/lmsav/schedules.d/r.toml: {message}"


def test_a_valid_hand_written_report_schedule_round_trips():
    data = {"kind": "report", "name": "r", "schedule": "0 6 * * 1", "report": "weekly",
            "mail": ["a@example.org", "b@example.org"], "systemd": False}
    schedule = from_toml(data, "r.toml")
    assert schedule.to_toml() == data


def test_only_the_newest_pages_are_kept(tmp_path):
    for day in range(1, 33):
        (tmp_path / f"daily-mail-202612{day % 31 + 1:02d}T06000{day // 31}.html").write_text("")
    (tmp_path / "nightly-20261201T030000.jsonl").write_text("")
    removed = prune_reports(tmp_path, "daily-mail")
    assert sorted(p.name for p in removed) == ["daily-mail-20261201T060001.html",
                                               "daily-mail-20261202T060000.html"]
    assert len(list(tmp_path.glob("daily-mail-*.html"))) == KEEP_REPORTS
    assert (tmp_path / "nightly-20261201T030000.jsonl").exists()
