"""Real data: messages through the mail service, then ``lmsav stats`` and ``lmsav stats
messages`` over what it recorded."""

from __future__ import annotations

import json

from click.testing import CliRunner

from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.stats.commands import stats_group
from lmsav.stats.store import open_store, sqlite_path
from tests.conftest import EICAR

from .conftest import message, service


def run(config, *args):
    return CliRunner().invoke(stats_group, [str(a) for a in args],
                              env={"LMSAV_CONFIG": str(config)})


def test_the_service_records_every_message(mail_flow):
    config, total_bytes = mail_flow
    settings = load_settings(config)
    assert sqlite_path(settings.paths.state_dir).exists()
    store = open_store(settings)
    totals = store.totals()
    assert totals == {"messages": 7, "infected": 2, "suspicious": 0, "protected": 0,
                      "corrupted": 0, "errors": 0, "filtered": 0, "bytes": total_bytes,
                      "files_scanned": 0}
    [newest] = store.messages(limit=1)
    assert newest["node"] == "mx1.example" and newest["message_id"] == "<m6@example.org>"
    assert newest["outcomes"] == {"strict": {"status": "infected", "action": "reject"},
                                  "lax": {"status": "infected", "action": "warn"}}
    assert newest["action"] == "reject" and newest["threats"] == ["Eicar-Test-Signature"]


def test_stats_text_report(mail_flow):
    config, total_bytes = mail_flow
    result = run(config)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Statistics from ") and lines[0].endswith(
        f"UTC ({sqlite_path(load_settings(config).paths.state_dir)})")
    assert "Messages       7" in lines
    assert "  infected     2" in lines
    assert f"Bytes          {total_bytes} " in result.output
    assert any(line.split()[:3] == ["lax", "6", "1"] and line.endswith("skip 5, warn 1")
               for line in lines)
    assert any(line.split()[:3] == ["strict", "2", "2"] and line.endswith("reject 2")
               for line in lines)
    assert "Eicar-Test-Signature" in result.output
    top = lines.index(next(li for li in lines if li.startswith("TOP SENDERS OF INFECTED MAIL")))
    assert lines[top + 1].split() == ["mallory@bad.example", "2"]


def test_stats_json_and_by_hour(mail_flow):
    config, total_bytes = mail_flow
    result = run(config, "--since", "2h", "--by", "hour", "--json")
    assert result.exit_code == 0, result.output
    [line] = result.output.splitlines()
    data = json.loads(line)
    assert data["totals"]["messages"] == 7 and data["totals"]["bytes"] == total_bytes
    assert data["statuses"] == {"clean": 5, "infected": 2}
    assert data["by_action"] == {"skip": 5, "reject": 2, "warn": 1}
    assert data["top_threats"] == [{"threat": "Eicar-Test-Signature", "count": 2}]
    assert data["scan_ms"]["p50"] is not None and data["scan_ms"]["p99"] >= data["scan_ms"]["p50"]
    assert sum(row["messages"] for row in data["series"]) == 7
    assert len(data["series"]) in (3, 4)  # the hours of the last two, whole


def test_stats_messages_filters_text_and_json(mail_flow):
    config, _ = mail_flow
    result = run(config, "messages", "--status", "infected")
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[:4] == ["DATE", "(UTC)", "STATUS", "ACTION"]
    assert [r.split()[2:4] for r in rows] == [["infected", "reject"], ["infected", "reject"]]
    assert "bob@strict.example, carol@lax.example" in rows[0]
    result = run(config, "messages", "--rcpt", "carol@lax.example", "--json")
    [only] = [json.loads(li) for li in result.output.splitlines()]
    assert only["sender"] == "mallory@bad.example" and only["groups"] == ["strict", "lax"]
    assert run(config, "messages", "--sender", "*@bad.example", "--json").output.count("\n") == 2
    assert run(config, "messages", "--threat", "eicar*", "--limit", "1",
               "--json").output.count("\n") == 1
    assert run(config, "messages", "--sender", "nobody@x", "--json").output == ""
    assert run(config, "messages", "--since", "7d", "--json").output.count("\n") == 7


def test_mail_check_without_recording_records_nothing(mail_env):
    svc = service(mail_env, stats=False)
    svc.decide(message(EICAR, 1), Envelope("a@example.org", ("bob@strict.example",)))
    assert svc.processor.stats is None
    assert not (load_settings(mail_env).paths.state_dir / "stats").exists()


def test_the_processor_records_the_queue_id(mail_env):
    svc = service(mail_env)
    svc.processor.process(message(None, 1), "a@example.org", ["b@lax.example"],
                          queue_id="4XyZ")
    [got] = open_store(load_settings(mail_env)).messages()
    assert got["queue_id"] == "4XyZ"
