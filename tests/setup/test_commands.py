"""`lmsav setup` as an administrator meets it: the questions at a terminal, and the one-line
errors for what cannot work. The interactive run happens in a tests.sysroot namespace, so it
creates the account and writes /etc/lmsav there, not on the host."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tomllib

import pytest
from click.testing import CliRunner

from lmsav.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["setup", *args])


def test_purge_needs_remove():
    result = run("--purge")
    assert result.exit_code == 2
    assert "--purge goes with --remove" in result.output


def test_options_of_the_script_do_not_go_with_an_mta_command():
    result = run("--yes", "postfix")
    assert result.exit_code == 2
    assert "belong to `lmsav setup` alone" in result.output


def test_bad_answers_file_is_one_line(tmp_path, sysroot):
    bad = sysroot.path("/etc/answers.toml")
    bad.write_text("colour = 'blue'\n")
    proc = sysroot.run(sysroot.program("lmsav"), "setup", "--yes", "--answers",
                       "/etc/answers.toml", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "unknown key 'colour'" in proc.stderr
    assert not sysroot.path("/etc/lmsav").exists()


def test_not_root(sysroot):
    proc = sysroot.run(sysroot.program("lmsav"), "setup", "--yes", user="nobody", check=False)
    assert proc.returncode == 2
    assert "run it as root" in proc.stderr


def test_no_terminal_without_yes(sysroot):
    proc = sysroot.run(sysroot.program("lmsav"), "setup", check=False)
    assert proc.returncode == 2
    assert "lmsav setup --yes" in proc.stderr
    assert not sysroot.path("/etc/lmsav").exists()


def test_remove_without_setup(sysroot):
    proc = sysroot.run(sysroot.program("lmsav"), "setup", "--remove", "--yes", check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Nothing to remove" in proc.stdout


@pytest.mark.integration
def test_questions_at_a_terminal(isolated_sysroot):
    """The documented `lmsav setup`, answered at a terminal (script(1) gives it one)."""
    sysroot = isolated_sysroot
    if shutil.which("script") is None:
        pytest.skip("script (util-linux) is missing")
    lmsav = sysroot.program("lmsav")
    replies = "".join(line + "\n" for line in (
        "example.org example.net",   # protected domains
        "",                          # administrator: the default, postmaster@example.org
        "bundled",                   # database
        "/srv",                      # nightly sweep
        "n",                         # no self-test
        "y",                         # go ahead
    ))
    # The answers file gives the defaults the questions offer: here, leave the MTAs alone.
    sysroot.path("/etc/answers.toml").write_text('mta = "none"\n')
    command = (f"{shlex.quote(lmsav)} setup --lmsav {shlex.quote(lmsav)} "
               "--answers /etc/answers.toml")
    proc = subprocess.run(sysroot.command("script", "-qec", command, "/dev/null"),
                          input=replies, capture_output=True, text=True, timeout=300,
                          check=False)
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "Protected domains" in out and "[9/9] Self-test" in out
    assert "skipped (self_test = false)" in out
    groups = tomllib.loads(sysroot.path("/etc/lmsav/groups.d/default.toml").read_text())
    assert groups == {"protected_domains": ["example.org", "example.net"],
                      "admin_addresses": ["postmaster@example.org"]}
    settings = tomllib.loads(sysroot.path("/etc/lmsav/lmsav.toml").read_text())
    assert settings["spool"]["log_file"] == "/var/log/lmsav/spool.log"
    assert sysroot.run("id", "-u", "lmsav").returncode == 0
    manifest = json.loads(sysroot.path("/var/lib/lmsav/setup/manifest.json").read_text())
    kinds = {entry["kind"] for entry in manifest["entries"]}
    assert {"user", "group", "dir", "file", "schedule"} <= kinds
    assert "mta" not in kinds
    cron = sysroot.path("/etc/cron.d/lmsav").read_text()
    assert "30 3 * * *" in cron and "/srv" in cron
    # And all of it goes again, the cron entry included.
    proc = sysroot.run(lmsav, "setup", "--remove", "--yes", "--lmsav", lmsav)
    assert "lmsav is removed" in proc.stdout
    assert not sysroot.path("/etc/lmsav").exists()
    assert not sysroot.path("/var/lib/lmsav").exists()
    assert "setup-nightly" not in (sysroot.path("/etc/cron.d/lmsav").read_text()
                                   if sysroot.path("/etc/cron.d/lmsav").exists() else "")
    assert sysroot.run("id", "-u", "lmsav", check=False).returncode != 0


class NamedMta:
    def __init__(self, name: str):
        self.name = name


@pytest.mark.parametrize("replies, mode, transport", [
    (["", "lmtp"], "after-queue", "lmtp"),   # after the queue: the transport is asked
    (["milter"], "milter", "smtp"),          # before it: no transport question
])
def test_the_transport_question_follows_the_mode(replies, mode, transport):
    import click

    from lmsav.setup import answers as answers_mod
    from lmsav.setup import commands

    answers = answers_mod.Answers(domains=["example.org"], admin="av@example.org")

    @click.command()
    def ask():
        commands._ask(answers, [NamedMta("postfix")], ["example.org"])

    lines = ["", "", "bundled", "", "y", *replies, "n", "y"]
    result = CliRunner().invoke(ask, input="".join(line + "\n" for line in lines))
    assert result.exit_code == 0, result.output
    assert (answers.mta, answers.postfix_mode, answers.transport) == (["postfix"], mode,
                                                                      transport)
    assert ("lmsav spool watch" in result.output) == (mode == "after-queue")
