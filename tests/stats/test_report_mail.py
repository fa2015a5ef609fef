"""`lmsav report … --mail ADDR`: the report handed to a sendmail that keeps what it is given,
then read back as a mail reader would (text, HTML, and the chart the HTML refers to)."""

from __future__ import annotations

import email
import email.policy

from lmsav.stats.report_commands import ENV_SENDMAIL

from .test_report import (
    THREAT_RED,
    decoded,
    fake_sendmail,
    flow,  # noqa: F401  (the fixture)
    lmsav,
    png_size,
)


def sent(directory):
    args = (directory / "sendmail.args").read_text().splitlines()
    raw = (directory / "sendmail.message").read_bytes()
    return args, email.message_from_bytes(raw, policy=email.policy.default)


def test_mail_with_text_html_and_the_chart(flow, tmp_path):  # noqa: F811
    sendmail = fake_sendmail(tmp_path)
    result = lmsav(flow.config, "daily", "--mail", "postmaster@example.org",
                   "--mail", "abuse@example.org", "--sendmail", sendmail)
    assert result.exit_code == 0, result.output
    assert result.output == ("mailed the daily report for 2026-12-03 to postmaster@example.org, "
                             "abuse@example.org\n")
    args, message = sent(tmp_path)
    assert args == ["-t", "-oi"]
    assert message["From"] == "lmsav@mx1.example"
    assert message["To"] == "postmaster@example.org, abuse@example.org"
    assert message["Subject"] == ("lmsav daily report for 2026-12-03 (UTC), mx1.example: "
                                  "6 messages, 2 infected")
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"].endswith("@mx1.example>") and message["Date"]
    assert message.get_content_type() == "multipart/alternative"
    plain, related = message.get_payload()
    assert plain.get_content_type() == "text/plain"
    # The text part is the text report, as `lmsav report daily` prints it.
    assert plain.get_content() == lmsav(flow.config, "daily").output
    assert related.get_content_type() == "multipart/related"
    html, image = related.get_payload()
    assert html.get_content_type() == "text/html"
    page = html.get_content()
    assert '<tr><td>Messages</td><td class="n">6</td></tr>' in page
    assert image.get_content_type() == "image/png"
    cid = image["Content-ID"].strip("<>")
    assert f'<img src="cid:{cid}"' in page and "data:image" not in page
    png = image.get_content()
    assert png_size(png) == (800, 300)
    assert THREAT_RED in {color for _n, color in decoded(png).getcolors(800 * 300)}


def test_mail_and_a_file_from_the_environment_sendmail(flow, tmp_path):  # noqa: F811
    sendmail = fake_sendmail(tmp_path)
    out = tmp_path / "week.txt"
    result = lmsav(flow.config, "weekly", "--mail", "postmaster@example.org", "-o", out,
                   env={ENV_SENDMAIL: str(sendmail)})
    assert result.exit_code == 0, result.output
    assert result.output == ("mailed the weekly report for 2026-11-27 to 2026-12-03 to "
                             "postmaster@example.org\n")
    _args, message = sent(tmp_path)
    assert message["Subject"].endswith("2026-11-27 to 2026-12-03 (UTC), mx1.example: "
                                       "7 messages, 2 infected")
    plain = message.get_payload()[0].get_content()
    assert plain == out.read_text()


def test_no_traffic_mails_text_and_html_without_a_chart(mail_env, tmp_path):
    sendmail = fake_sendmail(tmp_path)
    result = lmsav(mail_env, "daily", "--date", "2026-12-03", "--mail", "postmaster@example.org",
                   "--sendmail", sendmail)
    assert result.exit_code == 0, result.output
    _args, message = sent(tmp_path)
    assert message["Subject"].endswith(": no mail traffic")
    plain, html = message.get_payload()
    assert "No mail traffic" in plain.get_content()
    assert html.get_content_type() == "text/html" and "<img" not in html.get_content()


def test_a_failing_sendmail_is_one_line(flow, tmp_path):  # noqa: F811
    sendmail = fake_sendmail(tmp_path, exit_code=75, complaint="sendmail: queue file full")
    result = lmsav(flow.config, "daily", "--mail", "postmaster@example.org",
                   "--sendmail", sendmail)
    assert result.exit_code == 2
    assert result.stderr == (f"lmsav: error: cannot mail the report: {sendmail} -t -oi failed "
                             f"(exit status 75): sendmail: queue file full\n")
    assert result.stdout == ""


def test_a_missing_sendmail_is_one_line(flow, tmp_path):  # noqa: F811
    missing = tmp_path / "no-mta" / "sendmail"
    result = lmsav(flow.config, "daily", "--mail", "postmaster@example.org",
                   "--sendmail", missing)
    assert result.exit_code == 2
    assert result.stderr == (f"lmsav: error: cannot mail the report: {missing}: not found; "
                             f"install an MTA, or name its sendmail with --sendmail PATH\n")
