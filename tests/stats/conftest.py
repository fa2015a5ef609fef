"""Stores on a clock the test turns, events as the mail policy records them, and a real
PostgreSQL server (Debian's) on a private port and data directory."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.config import load_settings
from lmsav.mail.envelope import Envelope
from lmsav.mail.service import MailService
from lmsav.stats.sqlite_store import SQLiteBackend
from lmsav.stats.store import Store
from tests.conftest import EICAR

NOW = 1_796_400_000.0  # 2026-12-04 16:00:00 UTC


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def message_event(t: float, *, status: str = "clean", sender: str = "alice@example.org",
                  recipients=("bob@example.com",), group: str = "default",
                  action: str = "skip", threats=(), size: int = 1000,
                  scan_ms: float = 5.0) -> dict:
    return {"kind": "message", "time": t, "queue_id": "Q1", "message_id": "<m@example.org>",
            "sender": sender, "recipients": list(recipients),
            "groups": [{"group": group, "status": status, "action": action}],
            "status": status, "threats": list(threats), "size": size, "scan_ms": scan_ms}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sqlite_store(tmp_path, clock):
    # Every event written at once, as on a quiet server: what each test reads is written.
    store = Store(SQLiteBackend(tmp_path / "stats" / "stats.sqlite"), "mx.test", 100,
                  clock=clock, quiet=0)
    yield store
    store.close()


# -- PostgreSQL ------------------------------------------------------------------------------------

def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """initdb + pg_ctl: the server runs as ``postgres`` when the tests run as root (it refuses
    root), else as the user running them."""

    def __init__(self, base: Path):
        self.base = base
        self.data = base / "data"
        self.port = _free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.url = f"postgresql://lmsav@127.0.0.1:{self.port}/lmsav"

    def run(self, *argv: str) -> None:
        subprocess.run([*self.as_user, *argv], check=True, capture_output=True, timeout=120)

    def init(self) -> None:
        self.run(_pg_bin("initdb"), "-D", str(self.data), "-U", "lmsav", "--auth=trust",
                 "-E", "UTF8", "--no-sync")
        self.start()
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE lmsav")

    def start(self) -> None:
        self.run(_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w",
                 "-o", f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
                       "-c fsync=off", "start")

    def stop(self) -> None:
        self.run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture(scope="module")
def postgres():
    if _pg_bin("initdb") is None:
        pytest.fail("PostgreSQL server not installed (Debian package postgresql)")
    base = Path(tempfile.mkdtemp(prefix="lmsav-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(base)
    server.init()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass  # already stopped by the test
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(postgres):
    """The server's database, emptied for each test."""
    import psycopg

    with psycopg.connect(postgres.url, autocommit=True) as conn:
        for table in ("messages", "events", "rollup_minute", "rollup_hour", "rollup_day",
                      "meta"):
            conn.execute(f"DROP TABLE IF EXISTS {table}")
    return postgres.url


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# -- mail through the service ------------------------------------------------------------------

GROUPS = {
    "strict.toml": 'priority = 20\nrecipients = ["*@strict.example"]\n'
                   'infected_action = "reject"\n',
    "lax.toml": 'priority = 10\nrecipients = ["*@lax.example"]\ninfected_action = "warn"\n',
}


def message(attachment: bytes | None, n: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["Subject"] = f"report {n}"
    msg["Message-ID"] = f"<m{n}@example.org>"
    msg.set_content("hello " * 50)
    if attachment is not None:
        msg.add_attachment(attachment, maintype="application", subtype="octet-stream",
                           filename="e.com")
    return msg.as_bytes()


@pytest.fixture
def mail_env(tmp_path):
    config = tmp_path / "lmsav.toml"
    (tmp_path / "groups.d").mkdir()
    for name, text in GROUPS.items():
        (tmp_path / "groups.d" / name).write_text(text)
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n'
                      '[server]\nhost_name = "mx1.example"\n')
    return config


def service(config, **kw) -> MailService:
    return MailService.from_settings(load_settings(config), config,
                                     database_dir=paths.bundled_database_dir(), backup=False,
                                     **kw)


@pytest.fixture
def mail_flow(mail_env):
    """Five clean messages, two infected ones from a bad sender (one to both groups)."""
    svc = service(mail_env)
    sizes = []
    for n in range(5):
        raw = message(None, n)
        sizes.append(len(raw))
        plan = svc.decide(raw, Envelope("alice@example.org", ("bob@lax.example",)))
        assert plan.outcome.status == "clean"
    for n, rcpts in ((5, ("bob@strict.example",)), (6, ("bob@strict.example",
                                                         "carol@lax.example"))):
        raw = message(EICAR, n)
        sizes.append(len(raw))
        plan = svc.decide(raw, Envelope("mallory@bad.example", rcpts))
        assert plan.outcome.status == "infected"
    svc.processor.stats.close()
    return mail_env, sum(sizes)
