#!/usr/bin/env python3
"""Incremental sweeps: `lmsav scan --incremental` of an unchanged tree, second run vs. first.

Usage: bench/incremental.py [--files 50000] [--db bundled|large] [--cold] [--repeat 3]
                            [--workdir DIR]          (also `bench/run incremental`)

A tree of N files (seeded, reproducible: text, binary data, a few zip archives and larger
files) is scanned by the real CLI, each round:

  plain    `lmsav scan` without the cache, for reference
  first    `lmsav scan --incremental` with an empty cache: scans everything, records it
  second   the same command again, nothing changed: every file skipped as unchanged
  clamscan `clamscan -r` of the same tree with the same database, once, for reference

Printed: whole-command seconds and files per second (medians over the rounds), the sweep phase
as the CLI's summary times it (after start-up and database load), and the ratio first/second
for both (target >= 20x). ``--db large`` uses 100,000 body + 1,000,000 hash signatures
(bench/gen.py) instead of the bundled database, so the first sweep does realistic matching work.
``--cold`` drops the tree's file contents from the page cache before every run
(posix_fadvise DONTNEED on each file: only this tree, metadata stays cached), as for a
scheduled sweep of data the server has not touched lately; the default measures a warm cache.
The cache lives in the work directory (a config file points [paths] state_dir there).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.gen import write_hash_sigs, write_ndb_sigs  # noqa: E402

LMSAV = [str(Path(sys.executable).with_name("lmsav"))]
CLAMSCAN = shutil.which("clamscan") or "clamscan"

WORDS = ("import def return class self value config server mail queue error warning info user "
         "path file size time data result status message header body line option default").split()


def write_file_tree(root: Path, count: int, seed: int = 7) -> int:
    """``count`` files, ~100 per directory, two levels deep; sizes log-uniform 64 B - 64 KB,
    with 0.2% of 256 KB - 2 MB. 70% text, 27% binary, 3% zip archives of text and data."""
    rnd = random.Random(seed)
    per_dir, written = 100, 0
    while written < count:
        d = written // per_dir
        directory = root / f"d{d // 25:03}" / f"s{d % 25:02}"
        directory.mkdir(parents=True, exist_ok=True)
        for _ in range(min(per_dir, count - written)):
            if rnd.random() < 0.002:
                size = rnd.randint(256 << 10, 2 << 20)
            else:
                size = int(math.exp(rnd.uniform(math.log(64), math.log(64 << 10))))
            kind = rnd.random()
            if kind < 0.70:
                words = rnd.choices(WORDS, k=size // 6 + 1)
                name, data = f"f{written:05}.txt", " ".join(words).encode()[:size]
            elif kind < 0.97:
                # A fixed header: random bytes may start with a container's magic number.
                name, data = f"f{written:05}.bin", b"\0bin" + rnd.randbytes(size)
            else:
                buf = io.BytesIO()
                with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
                    for m in range(rnd.randint(2, 5)):
                        zf.writestr(f"m{m}.txt", " ".join(rnd.choices(WORDS, k=size // 24 + 1)))
                name, data = f"f{written:05}.zip", buf.getvalue()
            (directory / name).write_bytes(data)
            written += 1
    return written


def large_db(work: Path) -> Path:
    db = work / "large-db"
    if not (db / "bench.hdb").exists():
        db.mkdir(parents=True, exist_ok=True)
        write_ndb_sigs(db / "bench.ndb", 100_000, seed=3)
        write_hash_sigs(db / "bench.hdb", 1_000_000, seed=4)
    return db


def evict(tree: Path) -> None:
    """Drop the tree's file contents (not the system's) from the page cache."""
    for dirpath, _, names in os.walk(tree):
        for name in names:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def timed(cmd: list[str], cold: Path | None = None) -> tuple[float, str]:
    if cold is not None:
        evict(cold)
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if out.returncode not in (0, 1):
        raise SystemExit(f"bench: {' '.join(cmd[:4])}… failed ({out.returncode}): "
                         f"{out.stderr.strip()[-300:]}")
    return elapsed, out.stdout


def summary_value(stdout: str, label: str) -> float:
    m = re.search(rf"^{label}: ([0-9.]+)", stdout, re.M)
    if m is None:
        raise SystemExit(f"bench: no '{label}' in lmsav's summary:\n{stdout[-500:]}")
    return float(m.group(1))


def bench_incremental(work: Path, db: Path, files: int = 50_000, repeat: int = 3,
                      cold: bool = False) -> dict:
    tree = work / f"incremental-tree-{files}"
    if not tree.exists():
        write_file_tree(tree, files)
        # Files changed within the cache's clock margin are (rightly) not recorded.
        time.sleep(2.5)
    n = sum(len(f) for _, _, f in os.walk(tree))
    help_text = subprocess.run(LMSAV + ["scan", "--help"], capture_output=True, text=True).stdout
    if "--incremental" not in help_text:
        raise SystemExit("bench: this lmsav has no `scan --incremental`")
    state = work / "incremental-state"
    config = work / "incremental.toml"
    config.write_text(f'[paths]\nstate_dir = "{state}"\n')
    subprocess.run(LMSAV + ["db", "build", str(db)], check=True, capture_output=True)
    scan = LMSAV + ["--config", str(config), "scan", "-i", "-d", str(db)]
    dropped = tree if cold else None
    rounds: dict[str, list[tuple[float, float]]] = {"plain": [], "first": [], "second": []}
    for _ in range(repeat):
        t, out = timed(scan + [str(tree)], dropped)
        rounds["plain"].append((t, summary_value(out, "Time")))
        shutil.rmtree(state, ignore_errors=True)
        t, out = timed(scan + ["--incremental", str(tree)], dropped)
        rounds["first"].append((t, summary_value(out, "Time")))
        t, out = timed(scan + ["--incremental", str(tree)], dropped)
        rounds["second"].append((t, summary_value(out, "Time")))
        unchanged = int(summary_value(out, "Unchanged files skipped"))
        if unchanged != n:
            raise SystemExit(f"bench: second sweep skipped {unchanged} of {n} files")
    t_clam, _ = timed([CLAMSCAN, "-r", "-i", "--no-summary", "-d", str(db), str(tree)],
                      dropped)
    med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
           for k, v in rounds.items()}
    result = {"files": n, "repeat": repeat, "cold": cold, "clamscan_s": t_clam,
              "tree_mb": sum(f.stat().st_size for f in tree.rglob("*") if f.is_file()) / 1e6,
              "ratio": med["first"][0] / med["second"][0],
              "ratio_sweep": med["first"][1] / med["second"][1]}
    for k, (whole, sweep_phase) in med.items():
        result[f"{k}_s"], result[f"{k}_sweep_s"] = whole, sweep_phase
    return result


def report(r: dict, db_name: str) -> str:
    n = r["files"]
    return (
        f"incremental: {n} files ({r['tree_mb']:.0f} MB), {db_name} database, "
        f"{'cold' if r['cold'] else 'warm'} page cache, median of {r['repeat']}\n"
        f"  lmsav plain        {r['plain_s']:6.2f}s ({n / r['plain_s']:6.0f} files/s)  "
        f"sweep {r['plain_sweep_s']:.3f}s\n"
        f"  --incremental 1st  {r['first_s']:6.2f}s ({n / r['first_s']:6.0f} files/s)  "
        f"sweep {r['first_sweep_s']:.3f}s\n"
        f"  --incremental 2nd  {r['second_s']:6.2f}s ({n / r['second_s']:6.0f} files/s)  "
        f"sweep {r['second_sweep_s']:.3f}s  (all {n} unchanged)\n"
        f"  clamscan           {r['clamscan_s']:6.2f}s ({n / r['clamscan_s']:6.0f} files/s)\n"
        f"  ratio first/second {r['ratio']:.1f}x whole command, {r['ratio_sweep']:.1f}x sweep "
        f"phase (target >= 20x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--db", choices=["bundled", "large"], default="bundled")
    ap.add_argument("--cold", action="store_true",
                    help="drop the tree's file contents from the page cache before each run")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", help="keep generated data here (reused by later runs)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmsav-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.db == "large":
        db = large_db(work)
    else:
        from lmsav import paths

        db = work / "bundled-db"
        if not db.exists():
            shutil.copytree(paths.bundled_database_dir(), db,
                            ignore=shutil.ignore_patterns(".compiled*"))
    print(f"{os.cpu_count()} cores, data in {work}")
    print(report(bench_incremental(work, db, args.files, args.repeat, args.cold), args.db))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
