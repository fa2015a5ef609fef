"""The console's commands as the README and lmsav-web(8) write them, run literally as root on a
server's default paths (a private view of /etc, /var/lib and /run, with its own network)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

PROBE = """
import re, ssl, sys, urllib.request
url = sys.argv[1]
context = ssl.create_default_context(cafile=sys.argv[2]) if len(sys.argv) > 2 else None
page = urllib.request.urlopen(url + "/login", timeout=5, context=context).read().decode()
assert re.search('name="csrf_token"', page), page[:200]
print("ok")
"""


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## The web console", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def man_examples() -> list[str]:
    text = (ROOT / "man" / "lmsav-web.8").read_text()
    section = text.split(".SH EXAMPLES", 1)[1].split("\n.SH ", 1)[0]
    lines = re.findall(r"^lmsav .*$", section, re.MULTILINE)
    return [line.replace("\\-", "-") for line in lines]


def test_the_readme_and_the_manual_show_the_same_commands():
    assert readme_commands() == ["lmsav web user add alice --role admin", "lmsav web"]
    assert man_examples()[:2] == readme_commands()
    assert man_examples()[2] == ("lmsav web --listen 0.0.0.0:8343 --certificate "
                                 "/etc/lmsav/web.pem --key /etc/lmsav/web.key")


def _serve_and_probe(sysroot, command: list[str], url: str, *ca: str) -> None:
    # A session of its own: with a PID namespace nsenter forks, and the console is its child.
    proc = subprocess.Popen(sysroot.command(*command), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            probe = sysroot.run(sys.executable, "-c", PROBE, url, *ca, check=False)
            if probe.stdout.strip() == "ok":
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"{command}: {proc.stderr.read().decode()}\n{probe.stderr}")
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) in (0, -15)


def test_documented_commands_run_as_written_on_a_server(isolated_sysroot):
    root = isolated_sysroot
    lmsav = root.program("lmsav")
    root.add_system_user("lmsav", "/var/lib/lmsav")
    root.run("install", "-d", "-o", "lmsav", "-g", "lmsav", "-m", "0750", "/var/lib/lmsav")
    root.run("install", "-d", "-m", "0755", "/etc/lmsav")
    add, serve = readme_commands()
    # "asks for the password twice": at a terminal; a script gives it on standard input.
    done = root.run(*add.replace("lmsav", lmsav, 1).split(), input="alice-password-1\n",
                    stdin=None)
    assert "account alice added (admin)" in done.stdout
    _serve_and_probe(root, serve.replace("lmsav", lmsav, 1).split(),
                     "http://127.0.0.1:8343")
    root.run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
             "-keyout", "/etc/lmsav/web.key", "-out", "/etc/lmsav/web.pem")
    root.run("chgrp", "lmsav", "/etc/lmsav/web.key")
    root.run("chmod", "0640", "/etc/lmsav/web.key")
    network = man_examples()[2]
    _serve_and_probe(root, network.replace("lmsav", lmsav, 1).split(),
                     "https://localhost:8343", "/etc/lmsav/web.pem")
