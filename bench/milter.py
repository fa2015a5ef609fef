#!/usr/bin/env python3
"""What `lmsav milter` adds before the queue, through a real Postfix, in one run: latency per
~20 KB message (p50, p99) and messages/s with 20 concurrent SMTP clients, without and with the
milter.

Usage: python bench/milter.py [--messages 400] [--latency 200] [--clients 20] [--workers 2]
                              [--in-process] [--keep]   (as root)

The Postfix is the MTA tests' private instance (tests/mta/conftest.py: its own configuration,
queue and log under a temporary directory, free ports, virtual(8) delivery to Maildirs). First
it runs alone; then `lmsav setup postfix --milter --apply` points smtpd_milters at a loopback
port, `lmsav daemon --workers N` is started with the bundled database, `lmsav milter --daemon`
decides through it ([milter] in a private lmsav.toml), and Postfix is reloaded. With
--in-process the milter decides itself instead of through the daemon.

  latency      one SMTP client, one connection, --latency messages sent one after the other:
               the time from MAIL FROM to the reply to the end of DATA (what the client
               waits for; the milter answers at the end of DATA), p50 and p99
  throughput   --clients clients, one connection each, --messages messages dealt round-robin:
               messages/s accepted (every reply 250), from the first MAIL FROM to the last reply

Messages are clean (~20 KB: a text part and a zip of a text document and incompressible data,
as bench/postfix.py builds them), so every one goes the whole way: scanned, accepted, stamped.
Each phase starts with warm-up messages. Everything is stopped at the end, even on error.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.postfix import make_message
from tests.mta.conftest import (
    SENDER,
    PrivatePostfix,
    _chown,
    _make_root,
    free_port,
    have_postfix,
    parsed,
    run_setup,
    wait_port,
    write_lmsav_config,
)

RCPT = "bob@clean.test"


def lmsav(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmsav.launcher", *args]


def transaction(client: smtplib.SMTP, raw: bytes) -> float:
    """One message over an open connection; the seconds the client waited for it."""
    t0 = time.perf_counter()
    refused = client.sendmail(SENDER, [RCPT], raw)
    seconds = time.perf_counter() - t0
    if refused:
        raise RuntimeError(f"refused: {refused}")
    return seconds


def connect(port: int) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=120)
    client.ehlo()
    return client


def latencies(port: int, messages: list[bytes]) -> list[float]:
    with connect(port) as client:
        return [transaction(client, raw) for raw in messages]


def throughput(port: int, messages: list[bytes], clients: int) -> float:
    """Messages/s accepted by ``clients`` connections sending at once."""
    errors: list[BaseException] = []
    start = threading.Barrier(clients + 1)

    def one(share: list[bytes]) -> None:
        try:
            with connect(port) as client:
                start.wait()
                for raw in share:
                    transaction(client, raw)
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)
            start.abort()

    threads = [threading.Thread(target=one, args=(messages[i::clients],), daemon=True)
               for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"sending failed: {errors[0]!r}") from errors[0]
    return len(messages) / seconds


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def phase(label: str, port: int, args, rnd: random.Random) -> dict:
    warm = [make_message(f"{label}-warm-{i}", RCPT, rnd) for i in range(args.clients)]
    throughput(port, warm, args.clients)
    timed = latencies(port, [make_message(f"{label}-lat-{i}", RCPT, rnd)
                             for i in range(args.latency)])
    rate = throughput(port, [make_message(f"{label}-{i}", RCPT, rnd)
                             for i in range(args.messages)], args.clients)
    result = {"p50": percentile(timed, 50) * 1000, "p99": percentile(timed, 99) * 1000,
              "mean": statistics.fmean(timed) * 1000, "rate": rate}
    print(f"{label:<14} latency p50 {result['p50']:6.1f} ms  p99 {result['p99']:6.1f} ms  "
          f"(mean {result['mean']:.1f} ms, {args.latency} messages)   "
          f"{rate:6.1f} msg/s with {args.clients} clients ({args.messages} messages)",
          flush=True)
    return result


def start_daemon(root: Path, config: Path, workers: int, sock: Path) -> subprocess.Popen:
    from lmsav.daemon.client import Client

    log = open(root / "daemon.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(lmsav("daemon", "--workers", str(workers)), stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(config)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"lmsav daemon exited:\n{(root / 'daemon.log').read_text()}")
        try:
            if Client(sock, timeout=10).ping():
                return proc
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise RuntimeError("lmsav daemon did not answer within 120 s")


def start_milter(root: Path, config: Path, port: int) -> subprocess.Popen:
    log = open(root / "milter.log", "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(lmsav("milter"), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(config)))
    wait_port(port, timeout=120)
    return proc


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the session started here
        proc.wait(10)


def stamped(root: Path, expected: int, timeout: float = 120) -> int:
    """How many delivered messages carry X-AV-Status (after waiting for ``expected``)."""
    folder = root / "mail" / "clean.test" / "bob" / "new"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(os.listdir(folder)) < expected:
        time.sleep(0.1)
    return sum(1 for path in folder.iterdir()
               if parsed(path.read_bytes())["X-AV-Status"] is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=400, help="messages for throughput")
    parser.add_argument("--latency", type=int, default=200, help="messages for latency")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2, help="lmsav daemon workers")
    parser.add_argument("--in-process", action="store_true",
                        help="the milter decides itself, without lmsav daemon")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/milter.py runs a private Postfix and needs root")
    if not have_postfix():
        raise SystemExit("Postfix is not installed (Debian package postfix)")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, f: sys.exit(128 + s))
    rnd = random.Random(1)

    root = _make_root("bench-milter")
    smtp_port, milter_port, reinject_port = free_port(), free_port(), free_port()
    (root / "mail").mkdir()
    postfix = PrivatePostfix(root, smtp_port, root / "mail")
    _chown(root / "mail", postfix.user)
    config = write_lmsav_config(root, root / "spool", reinject_port)
    daemon_socket = root / "run" / "clamd.sock"
    with open(config, "a") as out:
        out.write(f'\n[daemon]\nsocket = "{daemon_socket}"\n\n[milter]\n'
                  f'listen = "inet:{milter_port}@127.0.0.1"\n'
                  f"use_daemon = {'false' if args.in_process else 'true'}\n"
                  "fallback = false\n")
    daemon = milter = None
    try:
        postfix.configure()
        postfix.start()
        print(f"~20 KB clean messages; Postfix {postfix.postconf('-h', 'mail_version').strip()} "
              f"on 127.0.0.1:{smtp_port}, {os.cpu_count()} CPUs, run in {root}", flush=True)
        alone = phase("postfix alone", smtp_port, args, rnd)

        run_setup("postfix", "--milter", "--apply", "--config-dir", postfix.etc,
                  "--milter-socket", f"inet:127.0.0.1:{milter_port}", "--port", reinject_port,
                  config=config)
        if not args.in_process:
            daemon = start_daemon(root, config, args.workers, daemon_socket)
        milter = start_milter(root, config, milter_port)
        postfix.reload()
        time.sleep(1)
        how = "in-process" if args.in_process else f"daemon, {args.workers} workers"
        withm = phase("+lmsav milter", smtp_port, args, rnd)
        print(f"(milter: {how})")

        print(f"added latency  p50 +{withm['p50'] - alone['p50']:.1f} ms "
              f"({withm['p50'] / alone['p50']:.2f}x), p99 +{withm['p99'] - alone['p99']:.1f} ms "
              f"({withm['p99'] / alone['p99']:.2f}x)")
        print(f"throughput     {alone['rate']:.1f} → {withm['rate']:.1f} msg/s at "
              f"{args.clients} clients ({withm['rate'] / alone['rate']:.2f}x of Postfix alone)",
              flush=True)
        per_phase = args.clients + args.latency + args.messages
        marked = stamped(root, 2 * per_phase)
        print(f"check          {marked} of {2 * per_phase} delivered messages carry X-AV "
              f"headers (expected {per_phase}: those sent through the milter)")
    finally:
        for step in (lambda: stop(milter), lambda: stop(daemon), postfix.stop):
            try:
                step()
            except Exception as err:  # noqa: BLE001 - go on stopping the rest
                print(f"bench: stopping: {err!r}", file=sys.stderr)
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
