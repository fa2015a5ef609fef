"""`lmsav report` over a PostgreSQL store (Debian's real server, private port and data
directory) gives the same report as over SQLite, for the same mail."""

from __future__ import annotations

import json

import pytest

from lmsav.stats import report_commands

from .test_report import NOW, lmsav, run_mail

pytestmark = pytest.mark.integration


def test_the_same_report_from_postgresql_and_sqlite(mail_env, pg_url, monkeypatch):
    monkeypatch.setattr(report_commands, "clock", lambda: NOW)
    sqlite_flow = run_mail(mail_env)
    pg_config = mail_env.with_name("lmsav-pg.toml")
    pg_config.write_text(mail_env.read_text() + f'[stats]\nurl = "{pg_url}"\n')
    run_mail(pg_config)
    for args in (("daily",), ("weekly", "--date", "2026-12-04")):
        from_sqlite = json.loads(lmsav(sqlite_flow.config, *args, "--json").output)
        from_pg = json.loads(lmsav(pg_config, *args, "--json").output)
        assert from_pg.pop("store") != from_sqlite.pop("store")
        assert from_pg == from_sqlite
        assert from_pg["totals"]["messages"] in (6, 8)
    text = lmsav(pg_config, "daily").output
    assert "Messages       6" in text.splitlines()
