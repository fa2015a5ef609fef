"""`lmsav mail check`, `lmsav groups …` and `lmsav backup …` as an administrator uses them."""

from __future__ import annotations

import email
import email.policy
import shlex
from email.message import EmailMessage
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR
from tests.jsonlines import one_object, records


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


def state_files(state) -> dict[str, bytes]:
    return {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*") if p.is_file()}


def test_mail_check_json_output_files_backup_and_stats(env):
    run, tmp = env
    msg = tmp / "m.eml"
    msg.write_bytes(infected_message())
    out = tmp / "out"
    result = run("mail", "check", "--record", "--json", "-o", out, "-f", "alice@example.org",
                 "-r", "bob@staff.example", "-r", "carol@other.example", msg)
    assert result.exit_code == 1
    data = one_object(result.output)
    assert data["status"] == "infected" and data["threats"] == ["Eicar-Test-Signature"]
    by_group = {g["group"]: g for g in data["groups"]}
    assert by_group["staff"]["action"] == "warn" and by_group["staff"]["delivered"]
    assert by_group["default"]["action"] == "reject" and not by_group["default"]["delivered"]
    warned = email.message_from_bytes((out / "staff.eml").read_bytes(), policy=email.policy.default)
    assert warned["X-AV-Status"] == "infected"
    assert not (out / "default.eml").exists()
    assert state_files(tmp / "state" / "stats")  # the statistics were recorded (--record)
    # The original was kept: list, show, extract, delete.
    [entry] = records(run("backup", "list", "--json").output)
    assert entry["kind"] == "mail" and entry["id"] == by_group["staff"]["backup"]
    shown = one_object(run("backup", "show", "--json", entry["id"]).output)
    assert shown["status"] == "infected"
    extracted = tmp / "orig.eml"
    assert run("backup", "extract", entry["id"], "-o", extracted).exit_code == 0
    assert extracted.read_bytes() == msg.read_bytes()
    assert run("backup", "delete", entry["id"]).exit_code == 0
    assert run("backup", "list", "--json").output == ""
    bad = run("backup", "show", "../../etc")
    assert bad.exit_code == 2 and "invalid backup id" in bad.output


def test_mail_check_leaves_no_trace_unless_record(env):
    """Trying a message by hand writes neither a backup entry nor statistics; --record does
    both, as the mail integrations do, and --no-backup / --no-stats leave out one of them.
    Each case runs on a state directory of its own."""
    run, tmp = env
    msg = tmp / "m.eml"
    msg.write_bytes(infected_message())

    def check(name: str, *extra: str) -> tuple[dict[str, bytes], list[dict]]:
        """The files of state directory NAME after one check, and its backup entries."""
        config = tmp / "etc" / f"{name}.toml"  # beside groups.d
        config.write_text(f'[paths]\nstate_dir = "{tmp / name}"\n')
        result = run("--config", config, "mail", "check", *extra, "-f", "alice@example.org",
                     "-r", "bob@other.example", msg)
        assert result.exit_code == 1, result.output
        return (state_files(tmp / name),
                records(run("--config", config, "backup", "list", "--json").output))

    for extra in ((), ("--json",), ("--no-backup", "--no-stats")):
        assert check("untouched", *extra) == ({}, [])  # nothing at all in the state directory

    files, kept = check("recorded", "--record")
    assert [e["kind"] for e in kept] == ["mail"]
    assert {name.split("/")[0] for name in files} == {"backup", "stats"}

    files, kept = check("stats-only", "--record", "--no-backup")
    assert kept == [] and {name.split("/")[0] for name in files} == {"stats"}

    files, kept = check("backup-only", "--record", "--no-stats")
    assert len(kept) == 1 and {name.split("/")[0] for name in files} == {"backup"}


def test_the_man_page_examples_run_as_written(env, monkeypatch):
    """Each EXAMPLES line of lmsav-mail(1) as written, in a directory holding msg.eml; only
    the one with --record leaves a backup entry."""
    page = (Path(__file__).resolve().parents[2] / "man" / "lmsav-mail.1").read_text()
    block = page.split(".SH EXAMPLES\n.nf\n", 1)[1].split(".fi\n", 1)[0].replace("\\-", "-")
    run, tmp = env
    monkeypatch.chdir(tmp)
    (tmp / "msg.eml").write_bytes(infected_message())
    kept = []
    for line in block.splitlines():
        words = shlex.split(line)
        stdin = None
        if words[-2] == "<":  # the shell's redirection
            stdin, words = Path(words[-1]).read_bytes(), words[:-2]
        assert words[:3] == ["lmsav", "mail", "check"], line
        result = run(*words[1:], input=stdin)
        assert result.exit_code == 1, (line, result.output)
        kept.append(len(records(run("backup", "list", "--json").output)))
    assert kept == [0, 0, 1]
    assert list((tmp / "out").glob("notice*.eml"))  # -o out wrote the plan


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
    rows = records(run("groups", "list", "--json").output)  # one line per group
    assert [r["name"] for r in rows] == ["staff", "default"]
    assert rows[0]["recipients"] == ["*@staff.example"] and rows[0]["priority"] == 5
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
