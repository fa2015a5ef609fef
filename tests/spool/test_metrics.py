"""`lmsav spool watch` with ``[metrics] watcher``: messages through the real watcher and its
workers, /metrics scraped and parsed with prometheus_client's parser, every count exact."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lmsav.stats.store import open_store
from tests.conftest import BODY_SAMPLE
from tests.spool.test_watcher import Setup, make_message
from tests.test_metrics import free_port, scrape, value

pytestmark = pytest.mark.integration


def with_metrics(setup: Setup, address: str) -> None:
    with open(setup.config, "a") as fh:
        fh.write(f'\n[metrics]\nwatcher = "{address}"\n')


def watch(setup: Setup, *args: str, **kw):
    return subprocess.Popen([sys.executable, "-m", "lmsav.launcher", "spool", "watch", *args],
                            env=dict(os.environ, LMSAV_CONFIG=str(setup.config)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    return predicate()


def test_messages_verdicts_actions_depth_and_reloads(tmp_path):
    setup = Setup(tmp_path)
    address = f"127.0.0.1:{free_port()}"
    with_metrics(setup, address)
    held = setup.enqueue(make_message(1))
    setup.spool.hold(setup.spool.claim(held), "kept for the test")
    process = watch(setup)
    try:
        assert wait_for(lambda: value(scrape(address), "lmsav_database_signatures") > 0)
        setup.enqueue(make_message(2, ("a.txt", b"fine")), "alice@example.org",
                      "bob@example.net")
        setup.enqueue(make_message(3, ("sample.bin", BODY_SAMPLE)), "alice@example.org",
                      "bob@example.net", "carol@warned.example")
        assert wait_for(lambda: value(scrape(address), "lmsav_messages_total",
                                      result="done") == 2)
        found = scrape(address)
        assert {r: value(found, "lmsav_messages_total", result=r)
                for r in ("done", "retry", "held", "stuck")} == \
            {"done": 2, "retry": 0, "held": 0, "stuck": 0}
        assert {s: value(found, "lmsav_verdicts_total", status=s)
                for s in ("clean", "infected", "error")} == {"clean": 1, "infected": 1, "error": 0}
        # The clean message: its one group skips; the infected one: default rejects,
        # warned warns.
        assert {a: value(found, "lmsav_actions_total", action=a)
                for a in ("skip", "reject", "warn", "drop")} == \
            {"skip": 1, "reject": 1, "warn": 1, "drop": 0}
        assert value(found, "lmsav_scan_seconds_count") == 2
        assert {s: value(found, "lmsav_spool_queue_depth", state=s)
                for s in ("new", "work", "hold")} == {"new": 0, "work": 0, "hold": 1}
        assert value(found, "lmsav_database_info", version="2026112401") == 1

        process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: value(scrape(address), "lmsav_reloads_total", result="ok") == 1)
        (tmp_path / "etc" / "groups.d" / "bad.toml").write_text('action = "explode"\n')
        process.send_signal(signal.SIGHUP)
        assert wait_for(lambda: value(scrape(address), "lmsav_reloads_total",
                                      result="failed") == 1)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    assert f"metrics at http://{address}/metrics" in output
    with socket.socket() as s:  # the port is free again, also from the workers
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(address.rsplit(":", 1)[1])))
        s.listen()
    store = open_store(setup.settings)  # the workers recorded each message
    try:
        totals = store.totals()
    finally:
        store.close()
    assert (totals["messages"], totals["infected"]) == (2, 1)


def test_a_metrics_port_in_use_stops_the_watcher_with_one_line(tmp_path):
    setup = Setup(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        with_metrics(setup, address)
        setup.enqueue(make_message(4))
        process = watch(setup, "--once")
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 2
    assert output.splitlines()[-1] == \
        f'lmsav: error: [metrics] watcher = "{address}": cannot listen: Address already in use'
    assert setup.states() == {"new": 1, "work": 0, "hold": 0}  # nothing taken
