"""`lmsav web` and `lmsav web user` as an administrator runs them."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from lmsav.cli import main
from lmsav.web.accounts import Accounts

pytestmark = pytest.mark.usefixtures("web_env")


def run(web_env, *args, input=None):
    return CliRunner().invoke(main, ["--config", str(web_env.config_file), "web", *args],
                              input=input, catch_exceptions=False)


def test_accounts_are_added_listed_changed_and_removed(web_env):
    result = run(web_env, "user", "add", "ann", "--role", "admin", "--password-stdin",
                 input="ann-password-1\n")
    assert result.exit_code == 0, result.output
    assert "account ann added (admin)" in result.output
    run(web_env, "user", "add", "vic", "--role", "viewer", input="vic-password-1\n")
    listed = [json.loads(line) for line in run(web_env, "user", "list", "--json")
              .output.splitlines()]
    assert [(a["name"], a["role"]) for a in listed] == [("ann", "admin"), ("vic", "viewer")]
    accounts = Accounts(web_env.state_dir / "web")
    assert accounts.verify("ann", "ann-password-1").role == "admin"
    assert run(web_env, "user", "passwd", "ann", input="new-password-2\n").exit_code == 0
    assert accounts.verify("ann", "ann-password-1") is None
    assert accounts.verify("ann", "new-password-2") is not None
    assert run(web_env, "user", "role", "vic", "admin").exit_code == 0
    assert accounts.get("vic").role == "admin"
    assert run(web_env, "user", "remove", "vic").exit_code == 0
    assert accounts.get("vic") is None
    users = web_env.state_dir / "web" / "users.json"
    assert users.stat().st_mode & 0o777 == 0o600
    assert "ann-password" not in users.read_text() and "$argon2id$" in users.read_text()


@pytest.mark.parametrize("args, stdin, message", [
    (("user", "add", "Bad/Name", "--role", "admin"), "password-123\n", "invalid account name"),
    (("user", "add", "ann", "--role", "admin"), "short\n", "too short"),
    (("user", "add", "ann", "--role", "admin"), "", "no password on standard input"),
    (("user", "remove", "nobody-here"), None, "no account 'nobody-here'"),
    (("user", "passwd", "nobody-here"), "password-123\n", "no account 'nobody-here'"),
])
def test_mistakes_are_one_line_errors(web_env, args, stdin, message):
    result = run(web_env, *args, input=stdin)
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output


def test_an_account_is_not_added_twice(web_env):
    run(web_env, "user", "add", "ann", "--role", "admin", input="ann-password-1\n")
    result = run(web_env, "user", "add", "ann", "--role", "viewer", input="other-password\n")
    assert result.exit_code == 2 and "exists" in result.output


def test_a_damaged_accounts_file_is_a_one_line_error(web_env):
    (web_env.state_dir / "web").mkdir()
    (web_env.state_dir / "web" / "users.json").write_text("{not json")
    result = run(web_env, "user", "list")
    assert result.exit_code == 2 and "users.json" in result.output


@pytest.mark.parametrize("listen", ["0.0.0.0:18343", "[::]:18343", "192.0.2.1:18343"])
def test_plain_http_off_loopback_is_refused(web_env, listen):
    result = run(web_env, "--listen", listen)
    assert result.exit_code == 2
    assert "refusing to serve plain HTTP" in result.output


def test_a_missing_certificate_is_a_one_line_error(web_env, tmp_path):
    result = run(web_env, "--certificate", str(tmp_path / "none.pem"))
    assert result.exit_code == 2
    assert "no such file" in result.output and result.output.count("\n") == 1


def test_forwarded_headers_count_only_from_trusted_proxies(web_env):
    from lmsav.web.app import create_app
    from tests.web.conftest import _client, form_post

    for trusted, expected in ((0, "127.0.0.1"), (1, "203.0.113.9")):
        web_env.write_config(f"[web]\ntrusted_proxies = {trusted}\n")
        app = create_app(web_env.settings(), web_env.config_file, testing=True)
        client = _client(app)
        form_post(client, "/login", {"username": "x", "password": "y" * 9},
                  headers={"X-Forwarded-For": "203.0.113.9"})
        record = json.loads((web_env.state_dir / "web" / "audit.jsonl").read_text()
                            .splitlines()[-1])
        assert record["address"] == expected


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, proc: subprocess.Popen, deadline: float = 20.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"lmsav web exited {proc.returncode}: "
                                 f"{proc.stderr.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("lmsav web did not listen")


@pytest.mark.integration
def test_root_serves_https_on_default_paths_as_the_service_user(sysroot, tmp_path):
    """As on a server: root adds an account and starts `lmsav web` with a certificate; the
    console binds, becomes the service user, and a login over HTTPS works."""
    lmsav = sysroot.program("lmsav")
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.run("install", "-d", "-o", "lmsav", "-g", "lmsav", "-m", "0750", "/var/lib/lmsav")
    sysroot.run("install", "-d", "-m", "0755", "/etc/lmsav")
    cert, key = "/etc/lmsav/web.pem", "/etc/lmsav/web.key"
    sysroot.run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                "-keyout", key, "-out", cert)
    sysroot.run("chown", "root:lmsav", key)
    sysroot.run("chmod", "0640", key)
    sysroot.run(lmsav, "web", "user", "add", "root-admin", "--role", "admin",
                "--password-stdin", input="admin-password-1\n", stdin=None)
    users = sysroot.path("/var/lib/lmsav/web/users.json")
    assert users.stat().st_uid == sysroot.uid_of("lmsav")  # the service can read it
    port = _free_port()
    proc = subprocess.Popen(sysroot.command(lmsav, "web", "--listen", f"127.0.0.1:{port}",
                                            "--certificate", cert, "--key", key),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(port, proc)
        pem = sysroot.path(cert)
        with httpx.Client(base_url=f"https://localhost:{port}", verify=ssl.create_default_context(cafile=str(pem))) as client:
            page = client.get("/login")
            assert page.status_code == 200
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            done = client.post("/login", data={"csrf_token": token, "username": "root-admin",
                                               "password": "admin-password-1"},
                               headers={"Referer": f"https://localhost:{port}/login"})
            assert done.status_code == 302, done.text
            assert "Secure" in done.headers["set-cookie"]
            assert client.get(done.headers["location"]).status_code == 200
        # Answering requests, it is the service user (nsenter execs lmsav in place).
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)", status, re.MULTILINE).groups()
        assert {int(u) for u in uid} == {sysroot.uid_of("lmsav")}
        audit = sysroot.path("/var/lib/lmsav/web/audit.jsonl").read_text()
        assert '"action": "login"' in audit and '"outcome": "ok"' in audit
    finally:
        proc.terminate()
        proc.wait(timeout=15)


@pytest.mark.integration
def test_root_without_the_service_account_stops_with_one_line(sysroot):
    lmsav = sysroot.program("lmsav")
    proc = sysroot.run(lmsav, "web", "--listen", f"127.0.0.1:{_free_port()}", check=False,
                       timeout=30)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        ("lmsav: error: cannot drop root: no user 'lmsav' (create it with `lmsav setup`, or run "
         "`lmsav web` as an unprivileged user)")]
