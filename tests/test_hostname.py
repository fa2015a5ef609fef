"""One host name everywhere: `[server] host_name`, else the fully qualified name (or the short
name when that resolves to localhost), in mail notices, quarantine records and SMTP HELO."""

from __future__ import annotations

import email
import email.policy
import shutil
import socket
from email.message import EmailMessage

import pytest
from click.testing import CliRunner

from lmsav import hostname
from lmsav.cli import main
from lmsav.spool.reinject import from_setting
from tests.conftest import EICAR


@pytest.fixture
def system_names(monkeypatch):
    """Pretend /etc/hosts makes the FQDN "localhost" and the short name "mailhost"."""
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "localhost")
    monkeypatch.setattr(socket, "gethostname", lambda: "mailhost")
    hostname._system_name.cache_clear()
    yield
    hostname._system_name.cache_clear()


def test_default_is_the_fqdn_or_the_short_name_when_that_is_localhost(system_names, monkeypatch):
    assert hostname.host_name() == "mailhost"
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "mx1.example.org")
    hostname._system_name.cache_clear()
    assert hostname.host_name() == "mx1.example.org"
    assert hostname.host_name("  relay.example.net ") == "relay.example.net"


@pytest.fixture
def configured(tmp_path, monkeypatch, system_names):
    def write(extra: str = ""):
        cfg = tmp_path / "etc" / "lmsav.toml"
        (cfg.parent / "groups.d").mkdir(parents=True, exist_ok=True)
        cfg.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n{extra}')
        (cfg.parent / "groups.d" / "default.toml").write_text(
            'notify_sender = ["infected"]\nno_sender_notice = []\n')
        monkeypatch.setenv("LMSAV_CONFIG", str(cfg))
    return write


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _notice_and_quarantine_host(tmp_path) -> tuple[str, str]:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@example.org", "bob@example.net", "x"
    msg.set_content("see attached")
    msg.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="e.com")
    (tmp_path / "m.eml").write_bytes(msg.as_bytes())
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    result = _run("mail", "check", "-o", out, "-f", "alice@example.org", "-r",
                  "bob@example.net", tmp_path / "m.eml")
    assert result.exit_code == 1, result.output
    [path] = out.glob("notice*-sender.eml")
    notice = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text = notice.get_body(preferencelist=("plain",)).get_content()

    victim = tmp_path / "files" / "eicar.com"
    victim.parent.mkdir(exist_ok=True)
    victim.write_bytes(EICAR)
    result = _run("scan", "--no-summary", "--infected-action", "quarantine", victim)
    assert result.exit_code == 1, result.output
    entry = result.output.split("moved to quarantine as ", 1)[1].split()[0].rstrip(".,)")
    shown = _run("quarantine", "show", entry).output
    [host_line] = [line for line in shown.splitlines() if line.startswith("Host:")]
    return text, host_line.split(":", 1)[1].strip()


def test_notices_and_quarantine_records_name_the_same_host(tmp_path, configured):
    configured()
    text, host = _notice_and_quarantine_host(tmp_path)
    assert host == "mailhost"
    assert "anti-virus system of\nmailhost" in text or "anti-virus system of mailhost" in text


def test_configured_host_name_is_used_everywhere(tmp_path, configured):
    configured('[server]\nhost_name = "mx.example.org"\n')
    text, host = _notice_and_quarantine_host(tmp_path)
    assert host == "mx.example.org"
    assert "mx.example.org" in text and "mailhost" not in text


def test_reinjecting_client_says_helo_with_the_host_name(system_names):
    assert from_setting("smtp:[127.0.0.1]:10026").helo == "mailhost"
    assert from_setting("smtp:[127.0.0.1]:10026", "mx.example.org").helo == "mx.example.org"
