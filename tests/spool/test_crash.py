"""Crash test: `kill -9` of the real `lmsav spool watch` at random moments while 500 messages flow
in through the real `lmsav enqueue`; after the last restart every Message-ID must have reached
the sink. Loss must be 0; duplicates are counted and printed (target 0)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.spool.nqueue import Spool

pytestmark = pytest.mark.integration

MESSAGES = 500
KILLS = 8


def lmsav_command() -> list[str]:
    """`lmsav`, or the same CLI with the spool commands added while cli.py lacks them."""
    if subprocess.run(["lmsav", "spool", "--help"], capture_output=True).returncode == 0:
        return ["lmsav"]
    return [sys.executable, "-c", ("import sys; from lmsav.cli import main; "
            "from lmsav.spool.commands import spool; main.add_command(spool); "
            "sys.argv[0] = 'lmsav'; main()")]


def message(n: int) -> bytes:
    return (f"From: alice@example.org\nTo: bob@example.net\nSubject: crash test {n}\n"
            f"Message-ID: <crash-{n}@example.org>\n\n" + f"line {n}\n" * 40).encode()


def sink_message_ids(sink: Path) -> list[str]:
    ids = []
    for env in sink.glob("*.env"):
        head = env.with_suffix(".eml").read_bytes().split(b"\n\n", 1)[0]
        for line in head.split(b"\n"):
            if line.lower().startswith(b"message-id:"):
                ids.append(line.split(b":", 1)[1].strip().decode())
    return ids


def test_kill_9_while_mail_flows_loses_nothing(tmp_path):
    sink = tmp_path / "sink"
    config = tmp_path / "lmsav.toml"
    config.write_text(f"""[paths]
state_dir = "{tmp_path / 'state'}"

[spool]
reinject = "dir:{sink}"
workers = 2
retry_delay = 0.1
rescan_interval = 1
""")
    env = dict(os.environ, LMSAV_CONFIG=str(config))
    spool = Spool(tmp_path / "state" / "nqueue")
    spool.ensure()
    logs = tmp_path / "logs"
    logs.mkdir()
    cli = lmsav_command()
    runs = []

    def start():
        log = open(logs / f"watch-{len(runs)}.log", "wb")
        proc = subprocess.Popen(cli + ["spool", "watch"], env=env, stdout=log, stderr=log,
                                start_new_session=True)
        runs.append(proc)
        return proc

    def enqueue(n: int) -> int:
        done = subprocess.run(["lmsav", "enqueue", "-f", "alice@example.org", "-q", f"Q{n}",
                               "--", "bob@example.net"], input=message(n), env=env,
                              capture_output=True)
        return done.returncode, done.stderr.decode(errors="replace").strip()

    rng = random.Random(int(os.environ.get("LMSAV_CRASH_SEED", "5")))
    started = time.monotonic()
    watcher = start()
    kills = []

    def killer():
        nonlocal watcher
        for i in range(KILLS):
            time.sleep(rng.uniform(0.5, 1.5))
            if i % 2:
                os.killpg(watcher.pid, signal.SIGKILL)  # parent and workers at once
                kills.append("group")
            else:
                os.kill(watcher.pid, signal.SIGKILL)  # the parent only: workers finish
                kills.append("parent")
            watcher.wait()
            watcher = start()

    def enqueue_fast():
        # Half the messages through the spool API at ~150/s, so the workers are busy when the
        # kills land; the other half through the real `lmsav enqueue`, as the MTA runs it.
        try:
            for n in range(MESSAGES // 2, MESSAGES):
                spool.enqueue(Envelope("alice@example.org", ("bob@example.net",)),
                              message(n), f"Q{n}")
                time.sleep(1 / 150)
        except Exception as err:  # noqa: BLE001 - reported by the test below
            errors.append(err)

    errors: list[Exception] = []
    kill_thread = threading.Thread(target=killer)
    fast_thread = threading.Thread(target=enqueue_fast)
    kill_thread.start()
    fast_thread.start()
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(enqueue, range(MESSAGES // 2)))
    fast_thread.join()
    kill_thread.join()
    assert not errors, errors
    failed = [(n, err) for n, (code, err) in enumerate(codes) if code]
    assert not failed, f"lmsav enqueue failed: {failed[:3]}"

    expected = {f"<crash-{n}@example.org>" for n in range(MESSAGES)}
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if expected <= set(sink_message_ids(sink)) and not spool.list():
            break
        time.sleep(0.2)
    # SIGTERM before the watcher has installed its handlers would just kill it: wait for it.
    last_log = logs / f"watch-{len(runs) - 1}.log"
    while time.monotonic() < deadline + 10 and b"watching" not in last_log.read_bytes():
        time.sleep(0.1)
    watcher.send_signal(signal.SIGTERM)
    assert watcher.wait(20) == 0

    ids = sink_message_ids(sink)
    lost = expected - set(ids)
    duplicates = len(ids) - len(set(ids))
    report = {"messages": MESSAGES, "kills": kills, "delivered": len(ids),
              "lost": len(lost), "duplicates": duplicates,
              "seconds": round(time.monotonic() - started, 1), "left_in_spool": len(spool.list())}
    print("crash test:", json.dumps(report))
    assert not lost, f"lost {len(lost)} messages: {sorted(lost)[:5]}"
    assert report["left_in_spool"] == 0
    assert set(ids) == expected
