"""The Logs page: lmsav's own lines from its files, newest first, filtered by component, level
and text; the sources come from the configuration, never from a path in the URL."""

from __future__ import annotations

import html
import json
import logging
import re

import pytest

from lmsav import logsetup

from .conftest import BASE_URL, form_post, page_text


@pytest.fixture
def web_env(web_env):
    web_env.log_file = web_env.root / "lmsav.log"
    web_env.write_config(f'[log]\ndestination = "file"\nfile = "{web_env.log_file}"\n')
    formatter = logsetup.LineFormatter("daemon")
    lines = []
    for n, (name, level, message) in enumerate([
            ("lmsav.daemon", logging.INFO, "started <b>4</b> workers"),
            ("lmsav.spool", logging.WARNING, "entry deferred: 451"),
            ("lmsav.mail", logging.ERROR, "cannot reinject"),
            ("lmsav.daemon", logging.DEBUG, "worker idle")]):
        lines.append(formatter.format(logging.LogRecord(name, level, __file__, n, message, (),
                                                        None)))
    web_env.log_file.write_bytes("\n".join(lines).encode() + b"\n\xff broken\n")
    return web_env


def page(client, url: str = "/logs/") -> str:
    return page_text(client, url)


def messages(text: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<pre class="log-message"[^>]*>(.*?)</pre>',
                                                 text, re.DOTALL)]


def test_anonymous_goes_to_the_login(anon):
    assert anon.get("/logs/", base_url=BASE_URL).status_code == 302


def test_newest_first_escaped_and_unreadable_bytes_shown(viewer, web_env):
    text = page(viewer)
    assert str(web_env.log_file) in text and 'destination is "file"' in html.unescape(text)
    assert messages(text) == ["worker idle\n\ufffd broken", "cannot reinject",
                              "entry deferred: 451", "started <b>4</b> workers"]
    assert "<b>4</b>" not in text  # escaped


def test_filters(viewer):
    assert messages(page(viewer, "/logs/?level=warning")) == ["cannot reinject",
                                                              "entry deferred: 451"]
    assert messages(page(viewer, "/logs/?component=daemon&lines=50")) == [
        "worker idle\n\ufffd broken", "started <b>4</b> workers"]
    assert messages(page(viewer, "/logs/?q=REINJECT")) == ["cannot reinject"]
    assert "No lines match these filters" in page(viewer, "/logs/?q=nothing+like+it")
    text = page(viewer, "/logs/?level=loud")
    assert "unknown level" in text and len(messages(text)) == 4


def test_the_audit_trail_is_a_source(admin, web_env):
    form_post(admin, "/spool/1733300000000000000.1.deadbeef/release", {}, token_from="/logs/")
    text = page(admin, "/logs/?source=audit")
    line = messages(text)[0]  # the newest: the logins before it are audited too
    assert line.startswith("alice spool.release 1733300000000000000.1.deadbeef refused")
    assert str(web_env.state_dir / "web" / "audit.jsonl") in text
    last = (web_env.state_dir / "web" / "audit.jsonl").read_text().splitlines()[-1]
    assert json.loads(last)["action"] == "spool.release"


def test_a_source_is_a_key_never_a_path(viewer):
    text = page(viewer, "/logs/?source=/etc/shadow")
    assert "unknown log" in text and "/etc/shadow</code>" not in text
    assert len(messages(text)) == 4
    text = page(viewer, "/logs/?source=cron")
    assert "not written yet" in text


def test_syslog_destination_says_where_to_look(viewer, web_env):
    web_env.write_config('[log]\ndestination = "syslog"\n')
    from lmsav.web.context import web

    with viewer.application.app_context():
        web().reload_settings()
    text = page(viewer)
    assert 'destination is "syslog"' in html.unescape(text) and "facility mail" in text


def test_no_post(viewer):
    assert form_post(viewer, "/logs/", {}, token_from="/logs/").status_code == 405


def test_the_first_log_written_is_shown_by_default(viewer, web_env):
    web_env.write_config(f'[log]\ndestination = "stderr"\nfile = "{web_env.root}/none.log"\n')
    cron = web_env.state_dir / "log" / "cron.log"
    cron.parent.mkdir()
    cron.write_text("2026-12-04T03:00:00+00:00 name=nightly result=found exit=1 files=3\n")
    from lmsav.web.context import web

    with viewer.application.app_context():
        web().reload_settings()
    text = page(viewer)
    assert messages(text) == ["name=nightly result=found exit=1 files=3"]
    assert re.search(r'<option value="cron" selected>', text)
