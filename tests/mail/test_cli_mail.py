"""`lmsav mail check`, `lmsav groups …` and `lmsav backup …` as an administrator uses them."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR


@pytest.fixture
def env(tmp_path, monkeypatch):
    cfg = tmp_path / "etc" / "lmsav.toml"
    (cfg.parent / "groups.d").mkdir(parents=True)
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    (cfg.parent / "groups.d" / "staff.toml").write_text(
        'priority = 5\nrecipients = ["*@staff.example"]\ninfected_action = "warn"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(cfg))
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)

    return run, tmp_path


def infected_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = "hello"
    msg.set_content("hi")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    return msg.as_bytes()


def test_mail_check_json_output_files_backup_and_stats(env):
    run, tmp = env
    msg = tmp / "m.eml"
    msg.write_bytes(infected_message())
    out = tmp / "out"
    result = run("mail", "check", "--json", "-o", out, "-f", "alice@example.org",
                 "-r", "bob@staff.example", "-r", "carol@other.example", msg)
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["status"] == "infected" and data["threats"] == ["Eicar-Test-Signature"]
    by_group = {g["group"]: g for g in data["groups"]}
    assert by_group["staff"]["action"] == "warn" and by_group["staff"]["delivered"]
    assert by_group["default"]["action"] == "reject" and not by_group["default"]["delivered"]
    warned = email.message_from_bytes((out / "staff.eml").read_bytes(), policy=email.policy.default)
    assert warned["X-AV-Status"] == "infected"
    assert not (out / "default.eml").exists()
    stats = list((tmp / "state" / "stats").glob("mail-*.jsonl"))
    assert json.loads(stats[0].read_text())["recipients"] == ["bob@staff.example",
                                                              "carol@other.example"]
    # The original was kept: list, show, extract, delete.
    listed = json.loads(run("backup", "list", "--json").output)
    [entry] = listed
    shown = json.loads(run("backup", "show", entry["id"]).output)
    assert shown["status"] == "infected"
    extracted = tmp / "orig.eml"
    assert run("backup", "extract", entry["id"], "-o", extracted).exit_code == 0
    assert extracted.read_bytes() == msg.read_bytes()
    assert run("backup", "delete", entry["id"]).exit_code == 0
    assert json.loads(run("backup", "list", "--json").output) == []
    bad = run("backup", "show", "../../etc")
    assert bad.exit_code == 2 and "invalid backup id" in bad.output


def test_mail_check_clean_from_stdin_human_output(env):
    run, _ = env
    msg = EmailMessage()
    msg["Subject"] = "plain"
    msg.set_content("nothing here")
    result = run("mail", "check", "--no-stats", "-r", "bob@staff.example", "-",
                 input=msg.as_bytes())
    assert result.exit_code == 0
    assert "group staff -> bob@staff.example: clean, action skip, delivered" in result.output


def test_groups_list_show_which(env):
    run, _ = env
    listed = run("groups", "list").output
    assert listed.index("staff") < listed.index("default")
    shown = run("groups", "show", "staff").output
    assert 'infected_action = "warn"' in shown
    which = run("groups", "which", "-f", "a@b.c", "-r", "x@staff.example", "-r", "y@z.example")
    assert which.output.splitlines() == ["x@staff.example: staff", "y@z.example: default"]
    missing = run("groups", "show", "nope")
    assert missing.exit_code == 2 and "no group 'nope'" in missing.output


def test_bad_group_file_is_one_line_error(env):
    run, tmp = env
    (tmp / "etc" / "groups.d" / "bad.toml").write_text('infected_action = "explode"\n')
    result = run("groups", "list")
    assert result.exit_code == 2
    assert "bad.toml" in result.output and "infected_action" in result.output
    assert len(result.output.strip().splitlines()) == 1
