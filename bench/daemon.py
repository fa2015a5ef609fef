#!/usr/bin/env python3
"""Benchmark ``lmsav daemon`` against the real clamd, same database and same data, in one run.

Usage: bench/daemon.py [tree|stream|clients|memory|all] [--workdir DIR] [--files N]

  tree     a tree of N files (default 5,000) copied from Python's standard library, scanned by
           clamdscan through each daemon: plain (the daemon walks the tree, CONTSCAN) and
           --multiscan; files per second, lmsav / clamd (target >= 2x)
  stream   one 50 MB INSTREAM over the unix socket: MB/s, lmsav / clamd
  clients  16 concurrent clients, each sending 20 KB messages by raw INSTREAM for a fixed time:
           requests per second, lmsav / clamd
  memory   each daemon with a 100,000 body + 1,000,000 hash signature database (bench/gen.py):
           start time and resident memory (RSS; for lmsav also PSS, since its pre-forked workers
           share the database copy-on-write), lmsav / clamd

tree, stream and clients use the bundled database (EICAR and lmsav's test signatures), so they
measure the daemons' own overhead: protocol, file access, dispatch. clamd runs with
DisableCache, so that a second pass over the same files is scanned again, as lmsav does.
Only ratios measured together on one machine mean anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench.gen import write_hash_sigs, write_ndb_sigs  # noqa: E402
from tests.daemon_clients.conftest import (  # noqa: E402
    BUNDLED_BASES, CLAMD, EICAR, Daemon, lmsav_daemon_available, start_clamd,
    start_lmsav_daemon,
)

CLAMDSCAN = shutil.which("clamdscan") or "clamdscan"
CLAMD_CONF_EXTRA = "DisableCache yes\n"
STREAM_MB = 50
CLIENTS = 16
MESSAGE_KB = 20
CLIENT_SECONDS = 10.0


def copy_stdlib_tree(dest: Path, want: int) -> int:
    """Copy regular files (sources and compiled .pyc) from the standard library until ``want``
    files exist."""
    src = Path(sysconfig.get_paths()["stdlib"])
    count = 0
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = sorted(d for d in dirnames if d != "site-packages")
        target = dest / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            source = Path(dirpath) / name
            if source.is_symlink() or not source.is_file():
                continue
            shutil.copyfile(source, target / name)
            count += 1
            if count >= want:
                return count
    return count


def tree_of(work: Path, want: int) -> tuple[Path, int]:
    tree = work / f"tree-{want}"
    if not tree.exists():
        copy_stdlib_tree(tree, want)
        (tree / "eicar.com").write_bytes(EICAR)  # one finding, so both must report it
    return tree, sum(len(files) for _, _, files in os.walk(tree))


def clamdscan_seconds(daemon: Daemon, tree: Path, *mode: str) -> float:
    """Best of two clamdscan runs over ``tree``; checks that the EICAR file was reported."""
    conf = daemon.root / "clamdscan.conf"
    conf.write_text(f"LocalSocket {daemon.socket}\n")
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        proc = subprocess.run([CLAMDSCAN, f"--config-file={conf}", "--no-summary", "-i", *mode,
                               str(tree)], capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if proc.returncode != 1 or "eicar.com:" not in proc.stdout:
            raise SystemExit(f"bench: clamdscan {' '.join(mode)} against {daemon.name} "
                             f"returned {proc.returncode}: {(proc.stdout + proc.stderr)[-400:]}")
        best = min(best, elapsed)
    return best


def stream_mbps(daemon: Daemon, data: bytes) -> float:
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        reply = daemon.instream(data, chunk=1 << 20, timeout=300)
        elapsed = time.perf_counter() - started
        if reply != b"stream: OK":
            raise SystemExit(f"bench: {daemon.name} answered {reply[:200]!r} to the 50 MB stream")
        best = max(best, len(data) / (1 << 20) / elapsed)
    return best


def message(number: int) -> bytes:
    """A 20 KB message: headers, some text and a base64 attachment."""
    head = (f"From: alice@senders.test\r\nTo: bob@clean.test\r\nSubject: report {number}\r\n"
            f"Message-ID: <{number}@senders.test>\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n"
            "Content-Type: text/plain\r\n\r\n").encode()
    text = b"quarterly report attached, please review\r\n" * 120
    attach = (b"--b1\r\nContent-Type: application/octet-stream\r\n"
              b"Content-Transfer-Encoding: base64\r\n\r\n")
    body = os.urandom(9000).hex().encode()
    lines = b"\r\n".join(body[i:i + 76] for i in range(0, len(body), 76))
    data = head + text + attach + lines + b"\r\n--b1--\r\n"
    return data[:MESSAGE_KB * 1024 - 8] + b"\r\n--b1--\r\n"


def requests_per_second(daemon: Daemon) -> float:
    messages = [message(n) for n in range(64)]
    counts = [0] * CLIENTS
    errors: list[str] = []
    stop = time.perf_counter() + CLIENT_SECONDS

    def client(index: int) -> None:
        n = index
        while time.perf_counter() < stop:
            reply = daemon.instream(messages[n % len(messages)], chunk=8192)
            if reply != b"stream: OK":
                errors.append(reply[:200].decode(errors="replace"))
                return
            counts[index] += 1
            n += CLIENTS

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"bench: {daemon.name} failed requests: {errors[:3]}")
    return sum(counts) / elapsed


def big_database(work: Path) -> Path:
    db = work / "big-db"
    if not (db / "bench.hdb").exists():
        db.mkdir(parents=True, exist_ok=True)
        write_ndb_sigs(db / "bench.ndb", 100_000, seed=3)
        write_hash_sigs(db / "bench.hdb", 1_000_000, seed=4)
        shutil.copy(BUNDLED_BASES / "main.ndb", db / "main.ndb")
    return db


def started(kind: str, root: Path, bases: Path, timeout: float = 600) -> tuple[Daemon, float]:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    os.chmod(root, 0o755)
    begin = time.perf_counter()
    if kind == "lmsav":
        # lmsav keeps its compiled database next to the sources (.compiled.lmsavc): the first
        # start compiles, later runs on the same --workdir only load.
        daemon = start_lmsav_daemon(root, bases=bases, workers=None, start_timeout=timeout,
                                    settings={"stream_max_length": "100M"})
    else:
        daemon = start_clamd(root, bases=bases, stream_max="100M", extra_conf=CLAMD_CONF_EXTRA)
    return daemon, time.perf_counter() - begin


def ratio(lmsav: float, clamd: float) -> str:
    return f"{lmsav / clamd:.2f}x" if clamd else "n/a"


def bench_small(work: Path, files: int, which: str) -> None:
    daemons = {kind: started(kind, work / f"run-{kind}", BUNDLED_BASES)[0]
               for kind in ("lmsav", "clamd")}
    try:
        if which in ("tree", "all"):
            tree, count = tree_of(work, files)
            for label, mode in (("plain", ()), ("--multiscan", ("--multiscan",))):
                rates = {k: count / clamdscan_seconds(d, tree, *mode) for k, d in daemons.items()}
                print(f"tree {label:12} {count} files   lmsav {rates['lmsav']:8.0f} files/s   "
                      f"clamd {rates['clamd']:8.0f} files/s   lmsav/clamd "
                      f"{ratio(rates['lmsav'], rates['clamd'])} (target >= 2x)", flush=True)
        if which in ("stream", "all"):
            data = os.urandom(STREAM_MB << 20)
            rates = {k: stream_mbps(d, data) for k, d in daemons.items()}
            print(f"INSTREAM {STREAM_MB} MB          lmsav {rates['lmsav']:8.1f} MB/s      "
                  f"clamd {rates['clamd']:8.1f} MB/s      lmsav/clamd "
                  f"{ratio(rates['lmsav'], rates['clamd'])}", flush=True)
        if which in ("clients", "all"):
            rates = {k: requests_per_second(d) for k, d in daemons.items()}
            label = f"{CLIENTS} clients x {MESSAGE_KB} KB msgs"
            print(f"{label}  lmsav {rates['lmsav']:8.0f} req/s     "
                  f"clamd {rates['clamd']:8.0f} req/s     lmsav/clamd "
                  f"{ratio(rates['lmsav'], rates['clamd'])}", flush=True)
    finally:
        for daemon in daemons.values():
            daemon.stop()


def bench_memory(work: Path) -> None:
    db = big_database(work)
    results = {}
    for kind in ("lmsav", "clamd"):
        daemon, seconds = started(kind, work / f"mem-{kind}", db, timeout=1800)
        try:
            if not daemon.instream(EICAR).startswith(b"stream: Eicar-Test-Signature"):
                raise SystemExit(f"bench: {daemon.name} does not find EICAR with the big database")
            daemon.instream(os.urandom(1 << 20))  # touch the matchers once
            rss, pss = daemon.memory_kib()
            results[kind] = (seconds, rss, pss)
        finally:
            daemon.stop()
    (ls, lr, lp), (cs, cr, cp) = results["lmsav"], results["clamd"]
    print(f"memory, 100k body + 1M hash sigs: lmsav start {ls:.1f} s, RSS {lr / 1024:.0f} MB "
          f"(PSS {lp / 1024:.0f} MB, all processes)   clamd start {cs:.1f} s, RSS "
          f"{cr / 1024:.0f} MB (PSS {cp / 1024:.0f} MB)   lmsav/clamd PSS {ratio(lp, cp)}, "
          f"RSS {ratio(lr, cr)}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="?", default="all",
                        choices=["tree", "stream", "clients", "memory", "all"])
    parser.add_argument("--workdir", help="keep generated data here (reused by later runs)")
    parser.add_argument("--files", type=int, default=5000, help="files in the tree")
    args = parser.parse_args()
    reason = lmsav_daemon_available()
    if reason:
        raise SystemExit(f"bench: {reason}")
    for program in (CLAMD, CLAMDSCAN):
        if not shutil.which(program) and not os.path.exists(program):
            raise SystemExit(f"bench: {program} is missing (Debian: clamav-daemon, clamdscan)")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmsav-bench-daemon-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    version = subprocess.run([CLAMD, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"lmsav daemon vs clamd ({version}), {os.cpu_count()} CPUs, data in {work}", flush=True)
    if args.which != "memory":
        bench_small(work, args.files, args.which)
    if args.which in ("memory", "all"):
        bench_memory(work)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
