#!/usr/bin/env python3
"""Spool throughput: messages per second through enqueue → `lmsav spool watch` → reinjection,
and the time one `lmsav enqueue` call takes.

Usage: python bench/spool.py [--messages 2000] [--workers N] [--calls 200] [--clients 4]
                            [--door-only] [--workdir DIR]

Messages are ~20 KB with one attachment (a zip of a text document and some binary data), all
clean, so each one is scanned, exploded, stamped and reinjected. Figures printed:

  drain/dir     a backlog of N entries, `lmsav spool watch --once` (the real CLI, workers forked
                after the database is loaded), reinjection into a durable directory sink
                (every delivery fsynced): messages/s including start-up
  drain/smtp    the same backlog reinjected over SMTP (one connection kept per worker) into a
                counting aiosmtpd server in another process (it competes for the CPUs)
  drain/count   the same backlog, the watcher in-process with a sink that only counts
  flow/count    the watcher running while N messages are enqueued through the spool API as
                fast as one thread can, counting sink: first enqueue to an empty spool (the
                issue's measure: enqueue → watch → reinject, a sink that only counts)
  flow/dir      the same with `lmsav spool watch` (the real CLI) and the durable dir sink
  enqueue       wall time of one `lmsav enqueue` process (the MTA's pipe command), vs. `python -c
                pass` on the same interpreter
  door          intake only (into new/, nothing scanned), --clients concurrent clients as an
                MTA's delivery agents: one `lmsav enqueue` process per message (the pipe), against
                SMTP to `lmsav spool listen` over one connection per client (the content
                filter transport); messages/s and the CPU time per message of the listener
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from email.message import EmailMessage
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lmsav import config as config_mod  # noqa: E402
from lmsav.mail.envelope import Envelope  # noqa: E402
from lmsav.spool.nqueue import Spool  # noqa: E402

LMSAV = str(Path(sys.executable).with_name("lmsav"))
WORDS = ("invoice order shipment payment account report meeting agenda quarterly budget "
         "delivery contract signed attached please review regards customer support").split()


def make_message(n: int, rnd: random.Random) -> bytes:
    """~20 KB: a short text body and one zip attachment (text + incompressible data)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("report.txt", " ".join(rnd.choice(WORDS) for _ in range(800)))
        zf.writestr("data.bin", rnd.randbytes(13_000))
    msg = EmailMessage()
    msg["From"] = "alice@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = f"quarterly report {n}"
    msg["Message-ID"] = f"<bench-{n}@example.org>"
    msg.set_content("Please find the report attached.\n" * 20)
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip",
                       filename=f"report-{n}.zip")
    return msg.as_bytes()


def cli() -> list[str]:
    if subprocess.run([LMSAV, "spool", "--help"], capture_output=True).returncode == 0:
        return [LMSAV]
    return [sys.executable, "-c", "import sys; from lmsav.cli import main; "
            "from lmsav.spool.commands import spool; main.add_command(spool); main()"]


class Area:
    def __init__(self, root: Path, name: str, workers: int):
        self.root = root / name
        shutil.rmtree(self.root, ignore_errors=True)
        self.sink = self.root / "sink"
        self.config = self.root / "lmsav.toml"
        self.root.mkdir(parents=True)
        self.config.write_text(
            f'[paths]\nstate_dir = "{self.root / "state"}"\n\n[spool]\n'
            f'reinject = "dir:{self.sink}"\nworkers = {workers}\nrescan_interval = 5\n')
        self.spool = Spool(self.root / "state" / "nqueue")
        self.spool.ensure()
        self.env = dict(os.environ, LMSAV_CONFIG=str(self.config))

    def fill(self, messages: list[bytes]) -> float:
        t0 = time.perf_counter()
        for raw in messages:
            self.spool.enqueue(Envelope("alice@example.org", ("bob@example.net",)), raw)
        return time.perf_counter() - t0

    def delivered(self) -> int:
        return len(list(self.sink.glob("*.env"))) if self.sink.exists() else 0


def drain_dir(area: Area, n: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(cli() + ["spool", "watch", "--once"], env=area.env, check=True,
                   stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    assert area.delivered() == n, (area.delivered(), n)
    return seconds


class CountingReinjector:
    """The sink that only counts (per worker; the spool being empty is the proof of work)."""

    def __init__(self):
        self.count = 0

    def deliver(self, sender, recipients, message):
        self.count += 1

    def close(self):
        pass


def drain_count(area: Area, n: int) -> float:
    import logging

    from lmsav.spool.watcher import Watcher

    logging.getLogger("lmsav.spool").setLevel(logging.WARNING)
    settings = config_mod.load_settings(area.config)
    t0 = time.perf_counter()
    watcher = Watcher(settings, area.config, reinjector_factory=lambda s: CountingReinjector())
    watcher.run(once=True)
    seconds = time.perf_counter() - t0
    assert watcher.counts.get("done") == n, watcher.counts
    return seconds


def _watch_counting(config: Path) -> None:
    import logging

    from lmsav.spool.watcher import Watcher

    logging.getLogger("lmsav.spool").setLevel(logging.WARNING)
    settings = config_mod.load_settings(config)
    os._exit(Watcher(settings, config,
                     reinjector_factory=lambda s: CountingReinjector()).run())


def flow(area: Area, messages: list[bytes], sink: str) -> tuple[float, float]:
    """`lmsav spool watch` running (the real CLI for the dir sink, the same watcher in a child
    process for the counting sink) while the messages are enqueued: first enqueue to the
    spool being empty again."""
    if sink == "dir":
        proc = subprocess.Popen(cli() + ["spool", "watch"], env=area.env,
                                stderr=subprocess.DEVNULL)
        stop = proc.terminate
        wait = lambda: proc.wait(30)  # noqa: E731
    else:
        import multiprocessing

        proc = multiprocessing.get_context("fork").Process(target=_watch_counting,
                                                          args=(area.config,))
        proc.start()
        stop = proc.terminate
        wait = lambda: proc.join(30)  # noqa: E731
    new, work = area.spool.root / "new", area.spool.root / "work"
    try:
        time.sleep(1.5)  # started, database loaded, workers forked
        t0 = time.perf_counter()
        area.fill(messages)
        enqueued = time.perf_counter() - t0
        while os.listdir(new) or os.listdir(work):
            time.sleep(0.005)
        seconds = time.perf_counter() - t0
        if sink == "dir":
            assert area.delivered() == len(messages), area.delivered()
        return seconds, enqueued
    finally:
        stop()
        wait()


def _smtp_sink(port: int) -> None:
    """A counting SMTP server (aiosmtpd) in its own process, until terminated."""
    import signal

    from aiosmtpd.controller import Controller

    class Count:
        async def handle_DATA(self, server, session, envelope):
            return "250 OK"

    controller = Controller(Count(), hostname="127.0.0.1", port=port)
    controller.start()
    signal.sigwait({signal.SIGTERM})
    controller.stop()
    os._exit(0)


def drain_smtp(area: Area, n: int) -> float:
    """The backlog through `lmsav spool watch --once` reinjecting over SMTP (one kept
    connection per worker) into a counting aiosmtpd server."""
    import multiprocessing
    import signal
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    server = multiprocessing.get_context("fork").Process(target=_smtp_sink, args=(port,))
    server.start()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    area.config.write_text(area.config.read_text().replace(
        f'reinject = "dir:{area.sink}"', f'reinject = "smtp:127.0.0.1:{port}"'))
    try:
        time.sleep(1)
        t0 = time.perf_counter()
        subprocess.run(cli() + ["spool", "watch", "--once"], env=area.env, check=True,
                       stderr=subprocess.DEVNULL)
        seconds = time.perf_counter() - t0
        assert not os.listdir(area.spool.root / "new") and not os.listdir(area.spool.root / "hold")
        return seconds
    finally:
        server.terminate()
        server.join(10)


def enqueue_calls(area: Area, raw: bytes, calls: int) -> tuple[list[float], list[float]]:
    times, baseline = [], []
    for _ in range(calls):
        t0 = time.perf_counter()
        subprocess.run([LMSAV, "enqueue", "-f", "alice@example.org", "--", "bob@example.net"],
                       input=raw, env=area.env, check=True)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        baseline.append(time.perf_counter() - t0)
    return times, baseline


def _door_client(port: int, messages: list[bytes]) -> None:
    import smtplib

    client = smtplib.SMTP("127.0.0.1", port, timeout=60)
    for raw in messages:
        client.sendmail("alice@example.org", ["bob@example.net"], raw)
    client.quit()


def _pipe_client(env: dict, messages: list[bytes]) -> None:
    for raw in messages:
        subprocess.run([LMSAV, "enqueue", "-f", "alice@example.org", "--", "bob@example.net"],
                       input=raw, env=env, check=True)


def _in_parallel(target, args_per_client: list[tuple]) -> float:
    import multiprocessing

    procs = [multiprocessing.Process(target=target, args=args) for args in args_per_client]
    t0 = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"a client failed with status {proc.exitcode}")
    return time.perf_counter() - t0


def door(root: Path, messages: list[bytes], clients: int, workers: int) -> None:
    """Intake through the pipe against intake through the SMTP listener (see the docstring)."""
    import socket

    shares = [messages[i::clients] for i in range(clients)]
    area = Area(root, "door-pipe", workers)
    seconds = _in_parallel(_pipe_client, [(area.env, share) for share in shares])
    assert len(area.spool.pending(now=1e12)) == len(messages)
    pipe_rate = len(messages) / seconds
    print(f"door/pipe   ({clients} clients, one `lmsav enqueue` per message): "
          f"{pipe_rate:8.0f} msg/s")

    area = Area(root, "door-smtp", workers)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listener = subprocess.Popen([*cli(), "spool", "listen", "--listen", f"smtp:127.0.0.1:{port}"],
                                env=area.env, stdin=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or listener.poll() is not None:
                    raise SystemExit("the listener did not start") from None
                time.sleep(0.05)
        cpu_before = _cpu_of(listener.pid)
        seconds = _in_parallel(_door_client, [(port, share) for share in shares])
        cpu = _cpu_of(listener.pid) - cpu_before
    finally:
        listener.terminate()
        listener.wait(60)
    assert len(area.spool.pending(now=1e12)) == len(messages)
    rate = len(messages) / seconds
    print(f"door/smtp   ({clients} clients, lmsav spool listen):          {rate:8.0f} msg/s "
          f"({cpu / len(messages) * 1000:.2f} ms listener CPU per message); "
          f"{rate / pipe_rate:.1f}x the pipe")


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--clients", type=int, default=4,
                        help="concurrent MTA delivery agents for the door figures")
    parser.add_argument("--door-only", action="store_true",
                        help="only the door figures (intake by pipe and by SMTP)")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="lmsav-bench-spool-"))
    rnd = random.Random(1)
    messages = [make_message(i, rnd) for i in range(args.messages)]
    size = sum(map(len, messages)) / len(messages)
    n = len(messages)
    print(f"{n} messages, {size / 1024:.1f} KB average, one zip attachment each; "
          f"{args.workers} workers; {os.cpu_count()} CPUs")
    try:
        door(root, messages, args.clients, args.workers)
        if args.door_only:
            return
        area = Area(root, "drain-dir", args.workers)
        filled = area.fill(messages)
        print(f"enqueue (spool API, one thread): {n / filled:8.0f} msg/s")
        seconds = drain_dir(area, n)
        print(f"drain/dir   (lmsav spool watch --once, durable dir sink): "
              f"{n / seconds:8.0f} msg/s ({seconds:.2f} s, start-up included)")

        area = Area(root, "drain-smtp", args.workers)
        area.fill(messages)
        seconds = drain_smtp(area, n)
        print(f"drain/smtp  (lmsav spool watch --once, SMTP to aiosmtpd):   "
              f"{n / seconds:8.0f} msg/s ({seconds:.2f} s, start-up included)")

        area = Area(root, "drain-count", args.workers)
        area.fill(messages)
        seconds = drain_count(area, n)
        print(f"drain/count (in-process watcher, counting sink):          "
              f"{n / seconds:8.0f} msg/s ({seconds:.2f} s)")

        for sink, label in (("count", "counting sink"), ("dir", "durable dir sink")):
            area = Area(root, f"flow-{sink}", args.workers)
            seconds, enqueued = flow(area, messages, sink)
            print(f"flow/{sink:<6} (enqueue while watching, {label}): ".ljust(58)
                  + f"{n / seconds:8.0f} msg/s ({seconds:.2f} s; enqueueing took "
                    f"{enqueued:.2f} s)")

        area = Area(root, "enqueue", args.workers)
        times, baseline = enqueue_calls(area, messages[0], args.calls)
        ms = sorted(t * 1000 for t in times)
        print(f"lmsav enqueue per call: median {statistics.median(ms):.1f} ms, "
              f"p95 {ms[int(len(ms) * 0.95) - 1]:.1f} ms "
              f"(python -c pass: median {statistics.median(baseline) * 1000:.1f} ms)")
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
