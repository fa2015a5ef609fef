"""`lmsav ctl queue` beside a real `lmsav spool watch`: mail from `lmsav enqueue`, a reinjection
held up while the test looks; the entry a worker is processing is refused, the others are held,
released, requeued and deleted, and every message ends delivered once or deleted."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.jsonlines import one_object, records

from .test_ctl_status import LMSAV, Site

pytestmark = pytest.mark.integration

SENDMAIL = """#!/bin/sh
# Reinjection that waits while the gate file exists, then keeps the message in the sink.
while [ -e {gate} ]; do sleep 0.05; done
cat > {sink}/$$.eml
"""


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


@pytest.fixture
def node(tmp_path):
    """A node whose reinjection is closed until ``gate`` is removed; delivered mail in ``sink``."""
    gate, sink = tmp_path / "gate", tmp_path / "sink"
    sink.mkdir()
    gate.touch()
    sendmail = tmp_path / "sendmail"
    sendmail.write_text(SENDMAIL.format(gate=gate, sink=sink))
    sendmail.chmod(0o755)
    site = Site.create(tmp_path, "[spool]\n" + "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in {
            "reinject": f"sendmail:{sendmail}", "workers": 1, "rescan_interval": 0.2,
            "retry_delay": 0.1}.items()))
    yield site, gate, sink
    gate.unlink(missing_ok=True)  # a worker a test left waiting finishes and exits


def start_watcher(site: Site, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([*LMSAV, "spool", "watch"], env=site.env(), stdout=out,
                                stderr=subprocess.STDOUT)


def states(site: Site) -> dict[str, str]:
    listed = site.ctl("queue", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return {entry["id"]: entry["state"] for entry in records(listed.stdout)}


def test_queue_commands_beside_a_running_watcher(node, tmp_path):
    site, gate, sink = node
    first = site.enqueue("ann@example.org", "bob@example.org", subject="first")
    second = site.enqueue("carl@example.org", "dora@example.org", subject="second")
    third = site.enqueue("erin@example.org", "fred@example.org", subject="third")
    log = tmp_path / "watch.log"
    watcher = start_watcher(site, log)
    try:
        assert wait_for(lambda: states(site).get(first) == "work"), log.read_text()
        assert states(site) == {first: "work", second: "new", third: "new"}

        # The entry being processed is refused by every command, one line each, exit 2.
        spool = site.spool()
        for command in (("hold",), ("requeue",), ("delete", "--yes")):
            refused = site.ctl("queue", *command, first)
            assert (refused.returncode, refused.stdout) == (2, "")
            assert refused.stderr == (f"lmsav: error: spool entry {first} is in work/ and a "
                                      f"spool watcher holds {spool}/watch.lock: it is being "
                                      "processed; left alone\n")
        both = site.ctl("queue", "hold", "--reason", "ask the sender", second, first)
        assert both.returncode == 2
        assert both.stdout == f"{second}: held from new/\n"
        assert len(both.stderr.splitlines()) == 1 and first in both.stderr
        deleted = site.ctl("queue", "delete", "--yes", third)
        assert (deleted.returncode, deleted.stdout) == (0, f"{third}: deleted from new/\n")
        assert states(site) == {first: "work", second: "hold"}

        held = one_object(site.ctl("queue", "show", second, "--json").stdout)
        assert (held["state"], held["reason"], held["headers"]["Subject"]) == (
            "hold", "ask the sender", "second")
        text = site.ctl("queue", "list", "--state", "hold").stdout.splitlines()
        assert text[0].startswith(f"{second}  hold  ") and text[1:] == [
            "    ask the sender", "1 hold"]

        status = site.ctl("status")
        assert status.returncode == 0, status.stdout
        assert f"spool:       0 new, 1 work, 1 hold (depth 1) in {spool}" in status.stdout
        assert f"watcher:     running, pid {watcher.pid}: holds {spool}/watch.lock" \
            in status.stdout

        gate.unlink()  # the first message goes out; the held one waits for the administrator
        assert wait_for(lambda: states(site) == {second: "hold"}), log.read_text()
        released = site.ctl("queue", "release", second)
        assert (released.returncode, released.stdout) == (0, f"{second}: released\n")
        assert wait_for(lambda: states(site) == {}), log.read_text()
    finally:
        gate.unlink(missing_ok=True)  # whatever happened, the worker in flight may finish
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(30) == 0, log.read_text()
    delivered = sorted(path.read_bytes().split(b"Subject: ", 1)[1].split(b"\n")[0]
                       for path in sink.glob("*.eml"))
    assert delivered == [b"first", b"second"]  # each once; the deleted one never


def test_entries_left_in_work_by_a_dead_watcher_can_be_handled(node, tmp_path):
    site, gate, _sink = node
    stuck = site.enqueue(subject="stuck")
    kept = site.enqueue(subject="kept")
    watcher = start_watcher(site, tmp_path / "watch.log")
    try:
        assert wait_for(lambda: states(site).get(stuck) == "work")
    finally:
        watcher.send_signal(signal.SIGKILL)  # its worker still holds the lock, and the entry
        watcher.wait(30)
    refused = site.ctl("queue", "requeue", stuck)
    assert refused.returncode == 2 and "being processed" in refused.stderr
    gate.unlink()  # the orphaned worker finishes its message and exits
    assert wait_for(lambda: stuck not in states(site))
    # What a crash leaves in work/ while no watcher runs is the administrator's.
    spool = site.spool()
    name = next((spool / "new").iterdir()).name
    (spool / "new" / name).rename(spool / "work" / name)
    assert states(site) == {kept: "work"}
    again = site.ctl("queue", "requeue", kept)
    assert (again.returncode, again.stdout) == (0, f"{kept}: requeued from work/\n")
    assert states(site) == {kept: "new"}


def test_delete_asks_first(node):
    site, _gate, _sink = node
    entry = site.enqueue()
    unanswered = site.ctl("queue", "delete", entry, stdin="")
    assert unanswered.returncode == 2
    assert unanswered.stderr.endswith(
        "lmsav: error: nothing deleted (--yes deletes without asking)\n")
    assert site.ctl("queue", "delete", entry, stdin="n\n").returncode == 2
    assert states(site) == {entry: "new"}
    yes = site.ctl("queue", "delete", entry, stdin="y\n")
    assert yes.returncode == 0 and yes.stdout.endswith(f"{entry}: deleted from new/\n")
    assert states(site) == {}
    missing = site.ctl("queue", "release", entry, "nonsense")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        f"lmsav: error: no spool entry {entry}",
        ("lmsav: error: invalid spool entry id 'nonsense': expected <arrival ns>.<pid>.<8 hex "
        "digits>")]
