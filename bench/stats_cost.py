#!/usr/bin/env python3
"""The cost of statistics recording: spool throughput with recording off and on, in one run.

Usage: python bench/stats_cost.py [--messages 1000] [--repeat 8] [--workers N] [--postgres]
                                  [--cpu] [--ways drain,flow] [--events 20000]
                                  [--workdir DIR] [--keep]

The messages, the watcher and the ways of running it are bench/spool.py's:

  drain/count  a backlog of N entries, the watcher in-process (`run(once=True)`), a sink that
               only counts
  flow/count   the watcher running in a child while N messages are enqueued, counting sink:
               first enqueue to the spool being empty again

"off" builds the watcher's mail service without a statistics store, "on" with the store the
settings name: the default SQLite file under the state directory, and with --postgres also a
PostgreSQL server of its own (Debian's, on a private port and data directory, as the tests
start it). After an unmeasured warm-up of each, --repeat pairs of runs follow, off-on then
on-off in turn (ABBA), so that both see the same machine and a load that drifts weighs on
both alike; each rate is the median of its runs. The issue's bound: cost <= 2 %. Under each
line, the CPU time the watcher (parent and workers) spent per message: steadier than wall
time when other work shares the machine. With --cpu the cost that is checked against the
bound is that CPU time, the median over the pairs of "on" against "off" ("paired"), shown
with its quartiles and, as a noise check, with the same figure for each "off" run against
the next "off" run (recording cannot be the difference there: a cost well inside that
spread is not measured, only bounded). Last, recording's own CPU time measured inside the
watcher's processes (``record()`` on the workers' threads, the writer thread, ``close()``)
as a share of the same run's CPU: what recording itself costs, the figure that other load
on the machine moves least (it leaves out only indirect costs, e.g. caches, a local
PostgreSQL server taking CPU time). With --postgres, also the CPU time the private server's
processes spent during each run, as a share of the watcher's: a cost a node pays only when it
hosts the server itself, and which takes the watcher's 2 cores (or fewer) meanwhile; the
kernel counts it in clock ticks (10 ms, about 0.5 % of a run's CPU), so only its median over
the runs says much.

  record       recording alone: --events message events recorded in one process (record()
               and the writer thread's batched writes), against the CPU time the watcher
               spends per message in drain/count without recording; the median of 3 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.spool import Area, drain_count, flow, make_message
from lmsav import config as config_mod
from lmsav.mail.service import MailService, MailServiceError
from lmsav.spool import watcher as watcher_mod

BOUND = 2.0  # per cent


class WatcherWithoutStats(watcher_mod.Watcher):
    """The spool watcher whose mail service records nothing (``stats=False``)."""

    def _load(self, settings):
        try:
            service = MailService.from_settings(settings, self.config_path,
                                                database_dir=self.database_dir, stats=False)
        except MailServiceError as err:
            raise watcher_mod.WatcherError(str(err)) from None
        workers = self.workers_override or settings.spool.workers or os.cpu_count() or 1
        return watcher_mod._Loaded(settings, service, max(1, workers))


@contextlib.contextmanager
def recording(on: bool, tally: Path):
    """bench/spool.py's runs look the watcher up when they start (the flow's child inherits
    it through fork): with recording off they find the one without a store. With recording
    on, each process of the watcher adds to ``tally`` the CPU time its recording took."""
    if on:
        with timed_recording(tally):
            yield
        return
    original = watcher_mod.Watcher
    watcher_mod.Watcher = WatcherWithoutStats
    try:
        yield
    finally:
        watcher_mod.Watcher = original


@contextlib.contextmanager
def timed_recording(tally: Path):
    """The CPU time of ``record()`` on the worker's own thread (where batches are written
    under load) and the whole CPU time of the writer thread, measured where they are spent,
    in the same run as the watcher's: a share of that run's CPU that load on the machine
    shifts much less than it shifts the difference between two runs. Each process appends
    "pid seconds batches" to ``tally`` when it closes its store. Timing costs two clock reads per
    message (~1 µs), counted in the "on" runs too. Each process also counts the batches it
    wrote (transactions: a round trip or more each with PostgreSQL)."""
    from lmsav.stats.backend import SqlBackend
    from lmsav.stats.recorder import Recorder

    spent = [0.0]
    batches = [0]
    record, write_loop, close = Recorder.record, Recorder._write_loop, Recorder.close
    write = SqlBackend.write

    def counted_write(self, rows, now):
        batches[0] += 1
        return write(self, rows, now)

    def timed_record(self, event):
        t0 = time.thread_time()
        try:
            record(self, event)
        finally:
            spent[0] += time.thread_time() - t0

    def timed_write_loop(self):
        try:
            write_loop(self)
        finally:
            spent[0] += time.thread_time()  # all of this thread's time

    def reporting_close(self):
        t0 = time.thread_time()
        try:
            close(self)
        finally:
            spent[0] += time.thread_time() - t0
            with open(tally, "a") as fh:
                fh.write(f"{os.getpid()} {spent[0]} {batches[0]}\n")
            spent[0], batches[0] = 0.0, 0

    Recorder.record, Recorder._write_loop = timed_record, timed_write_loop
    Recorder.close, SqlBackend.write = reporting_close, counted_write
    try:
        yield
    finally:
        Recorder.record, Recorder._write_loop, Recorder.close = record, write_loop, close
        SqlBackend.write = write


def tallied(tally: Path) -> tuple[float, int]:
    """Seconds of recording and batches written that the processes of a run reported."""
    if not tally.exists():
        return 0.0, 0
    lines = [line.split() for line in tally.read_text().splitlines() if line]
    return sum(float(f[1]) for f in lines), sum(int(f[2]) for f in lines)


def server_cpu(data_dir: Path | None) -> float:
    """CPU seconds of a PostgreSQL server so far: the postmaster, the backends it reaped (its
    children's time) and those still running; 0 without a server."""
    if data_dir is None:
        return 0.0
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        pid, ppid = int(stat.parent.name), int(fields[1])
        if pid == postmaster:
            total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        elif ppid == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def recorded(area: Area) -> int:
    """Messages the area's store holds (its own SQLite file, or the shared server). The store
    is created first, as on a server that has been running: reading alone creates nothing,
    and the workers would otherwise race to create a new file when the run starts."""
    from lmsav.stats.store import open_store

    store = open_store(config_mod.load_settings(area.config))
    try:
        store.record({"kind": "bench_start"})
        store.flush()
        return int(store.totals().get("messages") or 0)
    finally:
        store.close()


def one_run(root: Path, messages: list[bytes], workers: int, way: str, on: bool, n: int | str,
            stats_url: str, server_dir: Path | None = None
            ) -> tuple[float, float, float, float, int]:
    """Messages per second of one run, the CPU milliseconds the watcher spent per message
    (its parent and workers; for the flow, not the enqueueing), the per cent of that CPU the
    PostgreSQL server in ``server_dir`` took meanwhile and, with recording on, the per cent
    its recording took and the batches it wrote; checks that "on" recorded every message."""
    name = f"{way}-{'on' if on else 'off'}-{n}"
    area = Area(root, name, workers)
    if stats_url:
        with open(area.config, "a") as fh:
            fh.write(f'\n[stats]\nurl = "{stats_url}"\n')
    before = recorded(area) if on else 0
    tally = root / f"{name}.recording-cpu"
    tally.unlink(missing_ok=True)
    with recording(on, tally):
        if way == "drain":
            area.fill(messages)
            cpu0, server0 = cpu_seconds(True), server_cpu(server_dir)
            seconds = drain_count(area, len(messages))  # in this process, workers forked
            cpu = cpu_seconds(True) - cpu0
        else:
            cpu0, server0 = cpu_seconds(False), server_cpu(server_dir)
            seconds, _enqueued = flow(area, messages, "count")  # in a child, which is reaped
            cpu = cpu_seconds(False) - cpu0
        server = server_cpu(server_dir) - server0
    if on:
        got = recorded(area) - before
        if got != len(messages):
            raise SystemExit(f"stats_cost: {name}: {got} of {len(messages)} messages recorded")
    spent, batches = tallied(tally)
    tally.unlink(missing_ok=True)
    shutil.rmtree(area.root, ignore_errors=True)
    return (len(messages) / seconds, cpu * 1000 / len(messages), spent / cpu * 100,
            server / cpu * 100, batches)


def cpu_seconds(including_self: bool) -> float:
    """User and system time of the children reaped so far (and of this process)."""
    used = [resource.getrusage(resource.RUSAGE_CHILDREN)]
    if including_self:
        used.append(resource.getrusage(resource.RUSAGE_SELF))
    return sum(u.ru_utime + u.ru_stime for u in used)


def paired_costs(off: list[float], on: list[float]) -> list[float]:
    """Per cent each "on" run costs more CPU than the "off" run of its pair."""
    return [(b / a - 1) * 100 for a, b in zip(off, on, strict=True)]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, mid, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, mid, high


def spread(values: list[float]) -> str:
    low, mid, high = quartiles(values)
    return f"{mid:+.1f} % (quartiles {low:+.1f} … {high:+.1f})"


def compare(root: Path, messages: list[bytes], workers: int, repeat: int, store: str,
            ways: tuple[str, ...], stats_url: str = "", by_cpu: bool = False,
            server_dir: Path | None = None) -> tuple[list[float], float]:
    """Print one line per way of running the watcher; returns the costs in per cent and the
    CPU seconds per message without recording (of the drain when it ran).

    Runs come in pairs, off-on then on-off (ABBA), so that a load drifting while the runs go
    on weighs on both sides alike. What is checked with --cpu is the median over the pairs of
    on/off CPU; its noise is shown by the same figure for each "off" run against the next
    "off" run, where recording cannot be the difference."""
    costs, base_cpu = [], 0.0
    for way in ways:
        # Unmeasured: the first run of a process pays for imports and caches the others find.
        for on in (False, True):
            one_run(root, messages[:50], workers, way, on, "warm-up", stats_url)
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpus: dict[bool, list[float]] = {False: [], True: []}
        servers: dict[bool, list[float]] = {False: [], True: []}
        shares: list[float] = []
        batches: list[int] = []
        for n in range(repeat):
            for on in ((False, True) if n % 2 == 0 else (True, False)):
                rate, cpu, share, server, batch = one_run(root, messages, workers, way, on, n,
                                                          stats_url, server_dir)
                rates[on].append(rate)
                cpus[on].append(cpu)
                servers[on].append(server)
                if on:
                    shares.append(share)
                    batches.append(batch)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        cpu_off, cpu_on = statistics.median(cpus[False]), statistics.median(cpus[True])
        ratio = on / off
        cost = (1 - ratio) * 100
        cpu_pairs = paired_costs(cpus[False], cpus[True])
        cpu_paired = statistics.median(cpu_pairs)
        costs.append(cpu_paired if by_cpu else cost)
        base_cpu = base_cpu or cpu_off / 1000
        # Each "on" against the "off" of its pair: less sensitive to a load that drifts.
        paired = -statistics.median(paired_costs(rates[False], rates[True]))
        runs = lambda rs, digits=0: " ".join(f"{r:.{digits}f}" for r in rs)  # noqa: E731
        noise = (f"off vs next off {spread(paired_costs(cpus[False][:-1], cpus[False][1:]))}"
                 if repeat > 1 else "off vs off: needs --repeat 2 or more")
        print(f"{way + '/count':<12}{store:<11}off {off:7.1f} msg/s  on {on:7.1f} msg/s  "
              f"ratio {ratio:.3f}  cost: {cost:.1f} %   (median of paired runs: {paired:.1f} %; "
              f"runs off: {runs(rates[False])}; on: {runs(rates[True])})\n"
              f"{'':<23}cpu {cpu_off:.3f} ms/msg off, {cpu_on:.3f} ms/msg on: "
              f"{(cpu_on / cpu_off - 1) * 100:+.1f} % cpu (medians); paired on vs off "
              f"{spread(cpu_pairs)}; {noise}\n"
              f"{'':<23}cpu runs off: {runs(cpus[False], 3)}; on: {runs(cpus[True], 3)}\n"
              f"{'':<23}recording's own cpu, measured in the watcher's processes: "
              f"{statistics.median(shares):.2f} % of each \"on\" run's cpu (median; runs: "
              f"{runs(shares, 2)}); batches written per run: {runs(batches)}"
              + (f"\n{'':<23}the PostgreSQL server's cpu meanwhile: "
                 f"{statistics.median(servers[True]):.2f} % of the watcher's in the \"on\" runs, "
                 f"{statistics.median(servers[False]):.2f} % in the \"off\" runs (medians; on: "
                 f"{runs(servers[True], 2)})" if server_dir else ""),
              flush=True)
    return costs, base_cpu


def record_cost(root: Path, store: str, stats_url: str, count: int, per_message: float) -> None:
    """What recording one message costs, alone: ``record()`` and the writer thread's batched
    writes, ``count`` events in one process, against the CPU time the watcher spends per
    message without recording (``per_message`` seconds)."""
    from lmsav.stats.store import open_store

    area = root / f"record-{store}"
    shutil.rmtree(area, ignore_errors=True)
    (area / "state").mkdir(parents=True)
    config = area / "lmsav.toml"
    # A buffer for every event: recorded faster than written, none may be dropped uncounted.
    config.write_text(f'[paths]\nstate_dir = "{area / "state"}"\n[stats]\nbuffer = {count + 10}\n'
                      + (f'url = "{stats_url}"\n' if stats_url else ""))
    db = open_store(config_mod.load_settings(config))
    db.record({"kind": "bench_start"})  # the store exists, as on a running server
    db.flush()
    events = [{"kind": "message", "time": time.time(), "queue_id": f"Q{n}",
               "message_id": f"<bench-{n}@example.org>", "sender": "alice@example.org",
               "recipients": ["bob@example.net"],
               "groups": [{"group": "default", "status": "clean", "action": "skip"}],
               "status": "clean", "threats": [], "size": 20_500, "scan_ms": 4.0}
              for n in range(count)]
    walls, cpus = [], []
    for _round in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        for event in events:
            db.record(event)
        db.close()  # what still waits is written: part of the cost
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    shutil.rmtree(area, ignore_errors=True)
    wall, cpu = statistics.median(walls), statistics.median(cpus)
    each = cpu / count
    print(f"record/{store:<16}cpu {each * 1e6:.1f} us per message (wall {wall / count * 1e6:.1f} "
          f"us; {count} events, record() and the batched writes) = {each / per_message * 100:.2f}"
          f" % of the {per_message * 1000:.2f} ms of cpu per message of drain/count off",
          flush=True)


@contextlib.contextmanager
def private_postgres():
    """Debian's PostgreSQL on a private port and data directory (tests/stats' server)."""
    import pwd

    from tests.stats.conftest import PostgresServer, _pg_bin

    if _pg_bin("initdb") is None:
        raise SystemExit("stats_cost: --postgres: PostgreSQL server not installed "
                         "(Debian package postgresql)")
    base = Path(tempfile.mkdtemp(prefix="lmsav-bench-pg-"))
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(base, pw.pw_uid, pw.pw_gid)
    server = PostgresServer(base)
    try:
        server.init()
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop()
        shutil.rmtree(base, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=8,
                        help="pairs of runs, off and on (medians)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--postgres", action="store_true",
                        help="also with a private PostgreSQL server as the store")
    parser.add_argument("--cpu", action="store_true",
                        help="check the CPU time per message against the bound, not the rate")
    parser.add_argument("--ways", default="drain,flow",
                        help="ways of running the watcher, among drain and flow")
    parser.add_argument("--events", type=int, default=20000,
                        help="events of the record/ line (recording alone)")
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if min(args.messages, args.repeat, args.events) < 1:
        parser.error("--messages, --repeat and --events must be at least 1")
    ways = tuple(w.strip() for w in args.ways.split(",") if w.strip())
    if not ways or not set(ways) <= {"drain", "flow"}:
        parser.error("--ways: drain, flow or both, separated by a comma")
    root = args.workdir or Path(tempfile.mkdtemp(prefix="lmsav-bench-stats-"))
    rnd = random.Random(1)
    messages = [make_message(i, rnd) for i in range(args.messages)]
    size = sum(map(len, messages)) / len(messages)
    print(f"{len(messages)} messages, {size / 1024:.1f} KB average; {args.workers} workers; "
          f"{os.cpu_count()} CPUs; {args.repeat} pairs of runs off/on (ABBA), medians",
          flush=True)
    # Said once per area by the watcher when run as root on a machine without the service user.
    logging.getLogger("lmsav.spool").addFilter(
        lambda record: "the service user" not in record.getMessage())
    t0 = time.perf_counter()
    try:
        costs, cpu = compare(root, messages, args.workers, args.repeat, "sqlite", ways,
                             by_cpu=args.cpu)
        record_cost(root, "sqlite", "", args.events, cpu)
        if args.postgres:
            with private_postgres() as server:
                more, cpu = compare(root, messages, args.workers, args.repeat, "postgresql",
                                    ways, server.url, by_cpu=args.cpu, server_dir=server.data)
                costs += more
                record_cost(root, "postgresql", server.url, args.events, cpu)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(root, ignore_errors=True)
    print(f"worst cost{' (cpu)' if args.cpu else ''}: {max(costs):.1f} % (bound {BOUND:.0f} %); "
          f"{time.perf_counter() - t0:.0f} s in all")


if __name__ == "__main__":
    main()
