"""lmsav.metrics: the families and their gauges, the /metrics endpoint, and the statistics
events of one-shot commands (a store the user cannot write is skipped without a word)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lmsav import config as config_mod
from lmsav.mail.envelope import Envelope
from lmsav.metrics.endpoint import MetricsError, open_endpoint, split_address
from lmsav.metrics.families import WATCHER_RESULTS, Metrics
from lmsav.spool.nqueue import depth as spool_depth
from lmsav.metrics.recording import EventRecorder, writable
from lmsav.spool.nqueue import Spool
from lmsav.stats.store import open_store, sqlite_path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) → value, as prometheus_client's parser reads a scrape."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(address: str) -> dict[tuple, float]:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        assert reply.status == 200
        return samples(reply.read().decode())


def value(found: dict, name: str, **labels) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_counters_start_at_zero_and_gauges_are_read_when_scraped(tmp_path):
    db = SimpleNamespace(built_at=1000.0, total=7, version="2026112401")
    holder = {"db": None}
    spool = Spool(tmp_path / "nqueue")
    spool.ensure()
    metrics = Metrics(WATCHER_RESULTS, lambda: holder["db"], spool_depth=lambda: spool_depth(spool.root))
    port = free_port()
    endpoint = open_endpoint(f"127.0.0.1:{port}", metrics.registry, "[metrics] watcher")
    endpoint.start()
    try:
        first = scrape(f"127.0.0.1:{port}")
        assert {r: value(first, "lmsav_messages_total", result=r) for r in WATCHER_RESULTS} == \
            dict.fromkeys(WATCHER_RESULTS, 0.0)
        assert value(first, "lmsav_verdicts_total", status="infected") == 0
        assert value(first, "lmsav_reloads_total", result="failed") == 0
        assert not any(name == "lmsav_database_signatures" for name, _ in first)  # not loaded
        assert not any(name.endswith("_created") for name, _ in first)

        holder["db"] = db
        metrics.messages.labels("done").inc()
        metrics.count_verdicts({"infected": 2, "clean": 0})
        metrics.count_actions(["reject", "warn", ""])
        metrics.scan_seconds.observe(0.003)
        held = spool.enqueue(Envelope("a@example.org", ("b@example.net",)), b"Subject: x\n\nx\n")
        spool.hold(spool.claim(held), "test")
        spool.enqueue(Envelope("a@example.org", ("b@example.net",)), b"Subject: y\n\ny\n")
        after = scrape(f"127.0.0.1:{port}")
    finally:
        endpoint.close()
    assert value(after, "lmsav_messages_total", result="done") == 1
    assert value(after, "lmsav_verdicts_total", status="infected") == 2
    assert value(after, "lmsav_verdicts_total", status="clean") == 0
    assert value(after, "lmsav_actions_total", action="reject") == 1
    assert value(after, "lmsav_actions_total", action="warn") == 1
    assert value(after, "lmsav_scan_seconds_count") == 1
    assert value(after, "lmsav_scan_seconds_bucket", le="0.005") == 1
    assert value(after, "lmsav_database_signatures") == 7
    assert value(after, "lmsav_database_age_seconds") > 1e9  # built at 1000.0
    assert value(after, "lmsav_database_info", version="2026112401") == 1
    assert {s: value(after, "lmsav_spool_queue_depth", state=s)
            for s in ("new", "work", "hold")} == {"new": 1, "work": 0, "hold": 1}
    assert spool_depth(spool.root) == {"new": 1, "work": 0, "hold": 1}


def test_only_metrics_is_served_and_closing_frees_the_port():
    port = free_port()
    endpoint = open_endpoint(f"localhost:{port}", Metrics((), lambda: None).registry, "x")
    endpoint.start()
    try:
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10)  # not /metrics
        assert value(scrape(f"127.0.0.1:{port}"), "lmsav_scan_seconds_count") == 0
    finally:
        endpoint.close()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()  # nobody listens there any more


def test_a_port_in_use_is_one_line_naming_the_key():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with pytest.raises(MetricsError) as err:
            open_endpoint(address, Metrics((), lambda: None).registry, "[metrics] daemon")
    assert str(err.value) == f'[metrics] daemon = "{address}": cannot listen: ' \
                             "Address already in use"


def test_off_and_addresses():
    assert open_endpoint("", None, "x") is None
    assert split_address("[::1]:9436") == ("::1", 9436)
    assert split_address("localhost:9436") == ("127.0.0.1", 9436)


def _settings(tmp_path: Path, state: Path):
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{state}"\n')
    return config_mod.load_settings(path)


def test_events_are_recorded_in_the_store_of_the_settings(tmp_path):
    settings = _settings(tmp_path, tmp_path / "state")
    recorder = EventRecorder(settings)
    assert not sqlite_path(settings.paths.state_dir).exists()  # nothing before the first event
    recorder.record({"kind": "file_scan", "status": "clean", "files": 4, "size": 10})
    recorder.record({"kind": "update", "status": "ok"})
    recorder.close()
    store = open_store(settings)
    try:
        assert store.totals()["files_scanned"] == 4
        assert store.summary(0, 4e9)["events"] == {"file_scan": 1, "update": 1}
    finally:
        store.close()


def _as_nobody(fn) -> int:
    """Run ``fn`` in a child as nobody; its exit code (0: passed)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            fn()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another user")
def test_a_store_this_user_cannot_write_is_skipped(tmp_path):
    top = Path(tempfile.mkdtemp(prefix="lmsav-metrics-"))  # pytest's tmp is root's alone
    try:
        _cannot_write(tmp_path, top)
    finally:
        shutil.rmtree(top)


def _cannot_write(tmp_path: Path, top: Path) -> None:
    top.chmod(0o755)
    base = top / "base"
    base.mkdir(mode=0o555)  # root's: nobody cannot create state/stats/ in it
    settings = _settings(tmp_path, base / "state")

    def record_quietly():
        assert not writable(sqlite_path(settings.paths.state_dir))
        recorder = EventRecorder(settings)
        recorder.record({"kind": "file_scan", "files": 1})
        recorder.close()
        assert recorder._off

    assert _as_nobody(record_quietly) == 0
    assert not (base / "state").exists()
    assert writable(sqlite_path(settings.paths.state_dir))  # root may


# -- docs/monitoring.md, as written -----------------------------------------------------------

DOC = Path(__file__).resolve().parent.parent / "docs" / "monitoring.md"


def doc_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)


@pytest.mark.integration
def test_the_monitoring_document_as_written(tmp_path):
    [metrics_toml] = doc_blocks("toml")
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nrun_dir = "{tmp_path / "run"}"\n'
                      f'state_dir = "{tmp_path / "state"}"\n\n{metrics_toml}')
    settings = config_mod.load_settings(config)
    daemon_at, watcher_at = settings.metrics.daemon, settings.metrics.watcher
    [scrape_yaml] = doc_blocks("yaml")
    assert re.findall(r'targets: \["([^"]+)"\]', scrape_yaml) == [daemon_at, watcher_at]

    env = dict(os.environ, LMSAV_CONFIG=str(config),
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    [commands] = doc_blocks("sh")
    start, curl = commands.strip().splitlines()
    assert start == "lmsav daemon --detach"
    watcher = None
    try:
        subprocess.run(start, shell=True, env=env, check=True, timeout=120)
        shown = subprocess.run(curl, shell=True, env=env, capture_output=True, text=True,
                               timeout=60, check=True).stdout
        assert shown == "lmsav_database_signatures 7.0\n"
        watcher = subprocess.Popen([sys.executable, "-m", "lmsav.launcher", "spool", "watch"],
                                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            try:
                served = set(scrape(daemon_at)) | set(scrape(watcher_at))
                break
            except OSError:
                assert time.monotonic() < deadline and watcher.poll() is None
                time.sleep(0.2)
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(60)
        subprocess.run("lmsav ctl stop", shell=True, env=env, check=False, timeout=120,
                       capture_output=True)
    names = {name for name, _labels in served}
    documented = set(re.findall(r"`(lmsav_\w+)`", DOC.read_text()))
    assert documented, "the table of metrics"
    for name in documented:  # a histogram is served as its _bucket, _count and _sum
        assert name in names or f"{name}_count" in names, name
    assert {n for n in names if n.startswith("lmsav_")} - {
        f"{d}{suffix}" for d in documented for suffix in ("", "_bucket", "_count", "_sum")
    } == set()  # and nothing served is left out of it
