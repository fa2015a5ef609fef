"""README.md's Postfix path, run literally as root on a server with the system's Postfix: its
`lmsav setup postfix` lines, its `[spool] listen` in /etc/lmsav/lmsav.toml, then `postfix reload
&& lmsav spool watch`; a message from swaks then reaches the mailbox scanned, through Postfix's
SMTP client and the listener of the watcher."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.mta.conftest import stop_process_group, token
from tests.setup.conftest import REPO, environment
from tests.setup.test_postfix_e2e import postfix_server  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration


def readme_postfix_blocks() -> list[tuple[str, str]]:
    """The code blocks of README's Postfix path: (language, text), in order."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Mail servers by hand: Postfix and Exim", 1)[1]
    postfix = section.split("\nPostfix:\n", 1)[1].split("\nExim ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", postfix, re.S)


def test_the_readme_blocks_are_the_commands_and_the_setting():
    blocks = readme_postfix_blocks()
    assert [language for language, _ in blocks] == ["sh", "toml", "sh"]
    assert "lmsav setup postfix --apply" in blocks[0][1]
    assert blocks[1][1] == '[spool]\nlisten = ["smtp:127.0.0.1:10025"]\n'
    assert blocks[2][1].strip() == "postfix reload && lmsav spool watch"


def test_the_readme_postfix_path_delivers_scanned_mail(postfix_server):  # noqa: F811
    server = postfix_server
    (_, setup), (_, setting), (_, start) = readme_postfix_blocks()
    # Root's shell on a server where lmsav is installed: `lmsav` is on PATH.
    env = dict(environment(), PATH=f"{os.path.dirname(server.lmsav)}:/usr/sbin:/usr/bin:"
                                   "/sbin:/bin")
    server.sh("postfix start")  # the server's Postfix runs, as it does before lmsav comes
    server.wait_port(25)

    for line in setup.strip().splitlines():
        done = server.root.run("sh", "-c", line, env=env, check=False)
        assert done.returncode == 0, f"{line}: {done.stdout}{done.stderr}"
    assert server.sh("postconf -h content_filter").stdout.strip() == "lmsav:[127.0.0.1]:10025"
    server.write("/etc/lmsav/lmsav.toml", setting)  # "in /etc/lmsav/lmsav.toml"

    log = Path(tempfile.mkdtemp(prefix="lmsav-readme-")) / "watch.log"
    with open(log, "ab") as out:
        watcher = subprocess.Popen(server.root.command("sh", "-c", start.strip()), env=env,
                                   stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        server.wait_port(10025)
        domain = server.sh("postconf -h myhostname").stdout.strip()
        clean = "clean-" + token()
        server.swaks(f"bob@{domain}", f"alice@{domain}", clean, "--body", "Lunch at noon?")
        server.wait_for(lambda: any(clean in (m["Subject"] or "")
                                    for m in server.mailbox("alice")),
                        "the clean message in alice's mailbox")
        [got] = [m for m in server.mailbox("alice") if clean in (m["Subject"] or "")]
        assert got["X-AV-Status"] == "clean" and got["X-AV-Checked"]
    finally:
        stop_process_group(watcher)
        said = log.read_text(errors="replace")
        shutil.rmtree(log.parent, ignore_errors=True)
    # The message came in through the listener the watcher ran, not a pipe.
    assert "listening on smtp:127.0.0.1:10025" in said, said[-3000:]
    assert f"message_id=<{clean}@client.example>" in said and "result=done" in said
