"""`lmsav daemon` with ``[metrics] daemon``: /metrics scraped and parsed with prometheus_client's
parser, every count exact; each scan request is one ``daemon_scan`` event in the statistics
store, each LMSAVMAIL message one ``message`` event."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav import config as config_mod
from lmsav import paths
from lmsav.daemon.client import Client
from lmsav.stats.store import open_store, sqlite_path
from tests.conftest import EICAR
from tests.daemon.test_server import Daemon, _free_port
from tests.test_metrics import scrape, value

pytestmark = pytest.mark.integration


class MetricsDaemon(Daemon):
    """The daemon of test_server, with /metrics on a free loopback port."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.sock = tmp / "run" / "clamd.sock"
        self.port = _free_port()
        self.metrics = f"127.0.0.1:{_free_port()}"
        self.db = tmp / "bases"
        shutil.copytree(paths.bundled_database_dir(), self.db,
                        ignore=shutil.ignore_patterns(".compiled*"))
        self.config = tmp / "lmsav.toml"
        self.config.write_text(config_text(tmp, self.metrics))
        self.log = open(tmp / "daemon.log", "w+")  # noqa: SIM115 - closed by stop()
        self.proc = start(self.config, self.sock, self.db, self.log)
        self.client = Client(self.sock, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.client.ping():
                    return
            except Exception:  # noqa: BLE001 - not listening yet, whatever the error
                time.sleep(0.1)
            assert self.proc.poll() is None, self.output()
        raise AssertionError("daemon did not start: " + self.output())

    def scrape(self) -> dict:
        return scrape(self.metrics)

    def settings(self):
        return config_mod.load_settings(self.config)


def config_text(tmp: Path, metrics: str) -> str:
    return (f'[paths]\nrun_dir = "{tmp / "run"}"\nstate_dir = "{tmp / "state"}"\n'
            f'[metrics]\ndaemon = "{metrics}"\n')


def start(config: Path, sock: Path, db: Path, log) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lmsav.launcher", "daemon", "--socket", str(sock),
         "-d", str(db), "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, LMSAV_CONFIG=str(config)))


@pytest.fixture
def daemon(tmp_path):
    d = MetricsDaemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "clean.txt").write_bytes(b"just text\n")
    (root / "sub" / "eicar.com").write_bytes(EICAR)
    (root / "sub" / "other.txt").write_bytes(b"more text\n")
    return root


def mail(daemon, body: bytes) -> dict:
    from lmsav.qmail.daemon_client import ask

    message = os.memfd_create("message")
    try:
        os.write(message, b"From: a@example.com\r\nTo: b@example.com\r\nSubject: x\r\n\r\n"
                 + body + b"\r\n")
        header, _deliveries = ask(str(daemon.sock), message, b"a@example.com",
                                  [b"b@example.com"], "", "test", 30)
    finally:
        os.close(message)
    return header


def deltas(before: dict, after: dict, name: str, label: str) -> dict[str, float]:
    """label value → how much the counter grew between two scrapes (growth only)."""
    out = {}
    for (sample, labels), v in after.items():
        if sample == name:
            key = dict(labels)[label]
            grew = v - before.get((sample, labels), 0.0)
            if grew:
                out[key] = grew
    return out


def test_scans_requests_and_mail_are_counted_exactly(daemon, files):
    before = daemon.scrape()
    eicar, clean = files / "sub" / "eicar.com", files / "clean.txt"
    assert daemon.raw(f"zSCAN {eicar}\0".encode()).endswith(b"FOUND\0")
    assert daemon.raw(f"zSCAN {clean}\0".encode()).endswith(b"OK\0")
    assert daemon.raw(f"zSCAN {files / 'missing'}\0".encode()).endswith(b"ERROR\0")
    assert daemon.client.instream(EICAR).status == "FOUND"
    assert daemon.raw(f"zCONTSCAN {files}\0".encode()).endswith(b"FOUND\0")
    assert daemon.raw(b"zPING\0") == b"PONG\0"
    assert daemon.raw(b"zNOSUCHCOMMAND\0").endswith(b"UNKNOWN COMMAND\0")
    assert mail(daemon, b"hello")["result"] == "accept"
    assert mail(daemon, EICAR)["result"] == "reject"
    after = daemon.scrape()

    assert deltas(before, after, "lmsav_requests_total", "command") == {
        "SCAN": 3, "INSTREAM": 1, "CONTSCAN": 1, "PING": 1, "unknown": 1, "LMSAVMAIL": 2}
    # Files: eicar, clean, missing, the stream, the directory's three; then two messages.
    assert deltas(before, after, "lmsav_verdicts_total", "status") == {
        "infected": 4, "clean": 4, "error": 1}
    assert deltas(before, after, "lmsav_messages_total", "result") == {"accept": 1, "reject": 1}
    assert deltas(before, after, "lmsav_actions_total", "action") == {"skip": 1, "reject": 1}
    # One observation per request: 3 SCAN, INSTREAM, CONTSCAN (its workers' batches added up)
    # and the two messages.
    assert value(after, "lmsav_scan_seconds_count") - \
        value(before, "lmsav_scan_seconds_count") == 7
    assert value(after, "lmsav_scan_seconds_bucket", le="+Inf") == \
        value(after, "lmsav_scan_seconds_count")
    assert value(after, "lmsav_database_signatures") == 7
    assert value(after, "lmsav_database_info", version="2026112401") == 1
    assert 0 <= value(after, "lmsav_database_age_seconds") < 3600
    assert value(after, "lmsav_stats_events_dropped_total") == 0

    assert daemon.stop() == 0  # the daemon's own events are written as it stops
    store = open_store(daemon.settings())
    try:
        totals = store.totals()
        events = store.summary(0, time.time() + 60)["events"]
    finally:
        store.close()
    assert events == {"daemon_scan": 5}
    assert (totals["messages"], totals["infected"], totals["files_scanned"]) == (2, 1, 7)
    rows = _events(daemon)
    contscan = next(r for r in rows if r["detail"]["command"] == "CONTSCAN")
    assert (contscan["status"], contscan["files"], contscan["threats"], contscan["size"]) == (
        "infected", 3, ["Eicar-Test-Signature"], len(EICAR) + len(b"just text\n")
        + len(b"more text\n"))
    assert sorted((r["detail"]["command"], r["status"]) for r in rows) == [
        ("CONTSCAN", "infected"), ("INSTREAM", "infected"), ("SCAN", "clean"),
        ("SCAN", "error"), ("SCAN", "infected")]


def _events(daemon) -> list[dict]:
    import sqlite3

    path = sqlite_path(daemon.tmp / "state")
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT status, files, threats, size, detail FROM events "
                            "WHERE kind = 'daemon_scan'").fetchall()
    return [{"status": s, "files": f, "threats": json.loads(t), "size": z,
             "detail": json.loads(d)} for s, f, t, z, d in rows]


def test_reloads_are_counted_ok_and_failed(daemon):
    def reloads() -> dict[str, float]:
        found = daemon.scrape()
        return {r: value(found, "lmsav_reloads_total", result=r) for r in ("ok", "failed")}

    assert reloads() == {"ok": 0, "failed": 0}
    (daemon.db / "database.toml").write_text('version = "2026112402"\n')
    os.kill(daemon.proc.pid, signal.SIGHUP)
    assert _wait(lambda: reloads() == {"ok": 1, "failed": 0}), reloads()
    (daemon.db / "database.toml").write_text('version = "2026999999"\n')
    (daemon.db / "broken.ndb").write_text("Broken.Sig:0:*:zz-not-hex\n")
    assert daemon.client.reload()
    assert _wait(lambda: reloads() == {"ok": 1, "failed": 1}), reloads()
    assert value(daemon.scrape(), "lmsav_database_info", version="2026112402") == 1


def _wait(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def test_a_metrics_port_in_use_stops_the_start_with_one_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        config = tmp_path / "lmsav.toml"
        config.write_text(config_text(tmp_path, address))
        sock = tmp_path / "run" / "clamd.sock"
        result = subprocess.run(
            [sys.executable, "-m", "lmsav.launcher", "daemon", "--socket", str(sock)],
            check=False, capture_output=True, text=True, timeout=60,
            env=dict(os.environ, LMSAV_CONFIG=str(config)))
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == \
        f'lmsav: error: [metrics] daemon = "{address}": cannot listen: Address already in use'
    assert not sock.exists()  # the clamd socket bound before it is removed again
