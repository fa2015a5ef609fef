#!/usr/bin/env python3
"""A database of ClamAV's official size: compile, cached load, memory and sweep vs. clamscan.

Usage: bench/bigdb.py [--scale 1.0 | --signatures N] [--files 20000] [--cud] [--[no-]ldb]
                      [--columnar] [--skip-clamscan] [--rerun-clamscan] [--workdir DIR]

The generated directory has the shape of ClamAV's official main + daily databases (about 8.7
million signatures at ``--scale 1.0``), seeded and reproducible:

  bench.hdb  MD5 file hashes             36.8%   hash:size:Name
  bench.hsb  SHA-256 file hashes         21.8%   hash:size:Name[:73], 2% with size '*'
  bench.mdb  MD5 PE section hashes       33.3%   size:hash:Name
  bench.msb  SHA-256 PE section hashes    6.0%   size:hash:Name[:73], 1% with size '*'
  bench.ndb  150,000 body signatures (fixed count; 10-200 bytes; ``??``, ``a?``, ``*``,
             ``{n-m}``, ``[n-m]``, ``(aa|bb)``; targets 0/1/3/7; offsets ``*``, ``0``,
             ``EOF-n``, ``EP+n``)
  bench.ldb  30,000 logical signatures (with ``--ldb``, default: when lmsav reads .ldb)

``--signatures N`` scales the hash files so the total is N (the 50-million case). ``--cud``
also packs the same files into an unsigned ``bench.cud`` with ``sigtool --build --unsigned``
and benchmarks that container instead of the loose files.

A tree of small files (bench/incremental.py's mix of text, binary and zip archives) holds a
few planted files that the database detects by MD5, SHA-256 (sized and ``*``) and body; both
scanners must report all of them. Measured, each in a fresh process:

  compile   `lmsav db build DIR`: seconds, peak RSS of the process tree, cache size
  load      `Database.load(DIR)` from the cache: seconds and RSS after loading
  sweep     `lmsav scan -i -d DIR TREE`: seconds, files/s, peak RSS of one process and peak
            PSS of all its processes (workers share the mapped database)
  clamscan  `clamscan -d DIR EMPTY` (its load time and RSS) and `clamscan -r -i -d DIR TREE`
            (kept in DIR/.clamscan-*.json and reused until --rerun-clamscan)

and the ratios. Generated data is kept in --workdir and reused by later runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.incremental import write_file_tree

LMSAV = [str(Path(sys.executable).with_name("lmsav"))]
CLAMSCAN = shutil.which("clamscan") or "clamscan"
SIGTOOL = shutil.which("sigtool") or "sigtool"

OFFICIAL_TOTAL = 8_700_000
BODY_COUNT = 150_000
LOGICAL_COUNT = 30_000
# Shares of the hash signatures (everything but bodies and logical signatures).
HASH_SHARES = {"hdb": 0.368, "hsb": 0.218, "mdb": 0.333, "msb": 0.060}
HASH_SHARES = {k: v / sum(HASH_SHARES.values()) for k, v in HASH_SHARES.items()}

PLATFORMS = ["Win", "Win", "Win", "Doc", "Html", "Js", "Unix", "Pdf", "Xls", "Email", "Andr"]
CATEGORIES = ["Trojan", "Malware", "Downloader", "Dropper", "Exploit", "Virus", "Worm",
              "Adware", "Packed", "Phishing", "Spyware", "Ransomware"]
FAMILIES = [
    "Agent", "Generic", "Zbot", "Emotet", "Ramnit", "Virut", "Sality", "Allaple", "Qakbot",
    "Fareit", "Dridex", "Ursnif", "Nanocore", "Remcos", "Lokibot", "Formbook", "AgentTesla",
    "Kryptik", "Vobfus", "Upatre", "Expiro", "Parite", "Mydoom", "Netsky", "Bagle", "Small",
]


def _name(rnd: random.Random, serial: int) -> str:
    return (f"{rnd.choice(PLATFORMS)}.{rnd.choice(CATEGORIES)}.{rnd.choice(FAMILIES)}"
            f"-{serial}-{rnd.randint(0, 3)}")


def _file_size(rnd: random.Random) -> int:
    # Real hash signatures name files of a few hundred bytes to tens of megabytes.
    return int(math.exp(rnd.uniform(math.log(300), math.log(20 << 20))))


def _section_size(rnd: random.Random) -> int:
    return 512 * int(math.exp(rnd.uniform(0, math.log(4096))))


# -- signature files ---------------------------------------------------------------------------

def write_hashes(path: Path, kind: str, count: int, seed: int, serial0: int,
                 extra: list[str] = ()) -> None:
    """``count`` lines of one hash format, written in batches (50 M lines take minutes)."""
    rnd = random.Random(seed)
    width = 16 if kind in ("hdb", "mdb") else 32
    wild_share = {"hsb": 0.02, "msb": 0.01}.get(kind, 0.0)
    with open(path, "w") as fh:
        done = 0
        while done < count:
            n = min(200_000, count - done)
            hexes = rnd.randbytes(width * n).hex()
            step = 2 * width
            lines = []
            for i in range(n):
                digest = hexes[i * step:(i + 1) * step]
                name = _name(rnd, serial0 + done + i)
                wild = wild_share and rnd.random() < wild_share
                if kind in ("hdb", "hsb"):
                    size = "*" if wild else str(_file_size(rnd))
                    lines.append(f"{digest}:{size}:{name}")
                else:
                    size = "*" if wild else str(_section_size(rnd))
                    lines.append(f"{size}:{digest}:{name}")
                if width == 32 and (wild or rnd.random() < 0.5):
                    lines[-1] += ":73"  # ClamAV needs level 73 for '*' and writes it on many
            fh.write("\n".join(lines))
            fh.write("\n")
            done += n
        fh.writelines(line + "\n" for line in extra)


def _hex_run(rnd: random.Random, n: int) -> str:
    return rnd.randbytes(n).hex()


def ndb_hex(rnd: random.Random) -> str:
    """A body like real .ndb ones: 10-200 bytes, mostly plain hex, some of each wildcard."""
    total = int(math.exp(rnd.uniform(math.log(10), math.log(200))))
    kind = rnd.random()
    if kind < 0.55 or total < 14:
        return _hex_run(rnd, total)
    # Pieces of literal hex joined by one kind of wildcard each time; literal ends.
    pieces = [_hex_run(rnd, rnd.randint(4, 12))]
    left = total - len(pieces[0]) // 2
    while left > 4:
        w = rnd.random()
        if w < 0.30:
            pieces.append("??" * rnd.randint(1, 4))
        elif w < 0.40:
            pieces.append(rnd.choice("0123456789abcdef") + "?")
        elif w < 0.55:
            pieces.append("*")
        elif w < 0.75:
            lo = rnd.randint(0, 16)
            pieces.append(f"{{{lo}-{lo + rnd.randint(1, 64)}}}")
        elif w < 0.92:
            width = rnd.randint(1, 3)
            pieces.append(f"({'|'.join(_hex_run(rnd, width) for _ in range(rnd.randint(2, 4)))})")
        else:
            pieces.append(f"{{{rnd.randint(1, 300)}}}")
        run = min(left, rnd.randint(4, 24))
        pieces.append(_hex_run(rnd, run))
        left -= run + 1
    if rnd.random() < 0.05:
        # ClamAV takes [x-y] only between a sequence and one single byte.
        lo = rnd.randint(1, 8)
        pieces.append(f"[{lo}-{lo + rnd.randint(1, 8)}]{_hex_run(rnd, 1)}")
    return "".join(pieces)


def ndb_offset(rnd: random.Random, target: int) -> str:
    r = rnd.random()
    if r < 0.72:
        return "*"
    if r < 0.82:
        return "0"
    if r < 0.88:
        return f"EOF-{rnd.randint(16, 4096)}"
    if target == 1:
        return f"EP+{rnd.randint(0, 512)}"
    return f"{rnd.randint(0, 1024)}"


def write_ndb(path: Path, count: int, seed: int, extra: list[str] = ()) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(count):
            target = rnd.choices((0, 1, 3, 7), weights=(35, 45, 10, 10))[0]
            name = _name(rnd, 90_000_000 + i)
            line = f"{name}:{target}:{ndb_offset(rnd, target)}:{ndb_hex(rnd)}"
            if rnd.random() < 0.3:
                line += f":{rnd.choice((51, 73, 90, 99))}"
            fh.write(line + "\n")
        for line in extra:
            fh.write(line + "\n")


def ldb_subsig(rnd: random.Random, target: int) -> str:
    body = _hex_run(rnd, rnd.randint(4, 40))
    r = rnd.random()
    if r < 0.15:
        body += "{-" + str(rnd.randint(10, 200)) + "}" + _hex_run(rnd, rnd.randint(4, 16))
    elif r < 0.25:
        body += "??" + _hex_run(rnd, rnd.randint(4, 16))
    if target == 1 and rnd.random() < 0.2:
        return f"EP+{rnd.randint(0, 64)}:{body}"
    if rnd.random() < 0.1:
        return f"0:{body}"
    return body


def write_ldb(path: Path, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(count):
            target = rnd.choices((0, 1, 3, 7), weights=(25, 55, 10, 10))[0]
            subs = [ldb_subsig(rnd, target) for _ in range(rnd.randint(1, 6))]
            n = len(subs)
            r = rnd.random()
            if n == 1:
                expr = "0"
            elif r < 0.5:
                expr = "&".join(map(str, range(n)))
            elif r < 0.8:
                expr = f"({'|'.join(map(str, range(n - 1)))})&{n - 1}"
            else:
                expr = f"({'|'.join(map(str, range(n)))})>{min(2, n - 1)}"
            name = _name(rnd, 95_000_000 + i)
            fh.write(f"{name};Engine:51-255,Target:{target};{expr};{';'.join(subs)}\n")


# -- the tree with planted detections ----------------------------------------------------------

def planted(tree: Path) -> tuple[dict[str, list[str]], int]:
    """Write files the database must detect; returns extra signature lines per file kind."""
    rnd = random.Random(99)
    pdir = tree / "planted"
    pdir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, list[str]] = {"hdb": [], "hsb": [], "ndb": []}
    for i in range(4):
        data = b"planted md5 " + rnd.randbytes(rnd.randint(100, 5000))
        (pdir / f"md5-{i}.bin").write_bytes(data)
        extra["hdb"].append(f"{hashlib.md5(data).hexdigest()}:{len(data)}:Bench.Planted.Md5-{i}")
    for i in range(3):
        data = b"planted sha256 " + rnd.randbytes(rnd.randint(100, 5000))
        (pdir / f"sha256-{i}.bin").write_bytes(data)
        size = "*" if i == 0 else str(len(data))
        extra["hsb"].append(
            f"{hashlib.sha256(data).hexdigest()}:{size}:Bench.Planted.Sha256-{i}:73")
    for i in range(3):
        marker = rnd.randbytes(24)
        data = rnd.randbytes(1000) + marker + rnd.randbytes(500)
        (pdir / f"body-{i}.bin").write_bytes(data)
        extra["ndb"].append(f"Bench.Planted.Body-{i}:0:*:{marker[:10].hex()}??{marker[11:].hex()}")
    return extra, 10


# -- generation --------------------------------------------------------------------------------

def generate(work: Path, total: int, files: int, ldb: bool, cud: bool) -> tuple[Path, Path]:
    tag = f"{total}" + ("-ldb" if ldb else "") + ("-cud" if cud else "")
    db = work / f"db-{tag}"
    tree = work / f"tree-{files}"
    if not (tree / ".done").exists():
        shutil.rmtree(tree, ignore_errors=True)
        write_file_tree(tree, files)
        extra, _ = planted(tree)
        (tree / ".done").write_text(json.dumps(extra))
        # .done is a file in the tree too: both scanners see it, it detects nothing.
    extra = json.loads((tree / ".done").read_text())
    if (db / ".done").exists():
        return db, tree
    shutil.rmtree(db, ignore_errors=True)
    src = db / "src" if cud else db
    src.mkdir(parents=True)
    started = time.perf_counter()
    hash_total = max(0, total - BODY_COUNT - (LOGICAL_COUNT if ldb else 0))
    serial = 0
    for seed, (kind, share) in enumerate(HASH_SHARES.items(), 10):
        count = round(hash_total * share)
        write_hashes(src / f"bench.{kind}", kind, count, seed, serial, extra.get(kind, []))
        serial += count
    write_ndb(src / "bench.ndb", BODY_COUNT, 20, extra["ndb"])
    if ldb:
        write_ldb(src / "bench.ldb", LOGICAL_COUNT, 21)
    if cud:
        pack_cud(src, db)
        shutil.rmtree(src)
    print(f"generated {db} ({total:,} signatures) in {time.perf_counter() - started:.0f} s",
          flush=True)
    (db / ".done").write_text("")
    return db, tree


def pack_cud(src: Path, db: Path) -> None:
    """sigtool packs the files named bench.* in its working directory (COPYING required)."""
    (src / "COPYING").write_text("Generated benchmark signatures; no rights reserved.\n")
    out = subprocess.run([SIGTOOL, "--build=bench.cud", "--unsigned"], cwd=src, check=False,
                         capture_output=True, text=True, input="bench\n")
    if out.returncode != 0:
        raise SystemExit(f"bench: sigtool --build failed: {out.stderr.strip()[-500:]}")
    shutil.move(src / "bench.cud", db / "bench.cud")


# -- measuring ---------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _tree_pss_kib(root: int) -> int:
    """Proportional set size of ``root``'s descendants (not root): shared pages count once."""
    total, todo = 0, _children(root)
    while todo:
        pid = todo.pop()
        todo += _children(pid)
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            pass
    return total


def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run cmd under a fresh helper Python so its peak RSS is its own; sample the tree's PSS."""
    code = (
        "import resource,subprocess,sys,time,json;"
        "t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "e=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps([e,r,p.returncode,p.stdout[-4000:],p.stderr[-2000:],"
        "p.stdout.count(' FOUND')]))"
    )
    helper = subprocess.Popen([sys.executable, "-c", code, *cmd], stdout=subprocess.PIPE,
                              text=True, env=env)
    peak_pss = 0
    while helper.poll() is None:
        peak_pss = max(peak_pss, _tree_pss_kib(helper.pid))
        time.sleep(0.2)
    elapsed, rss, rc, stdout, stderr, found = json.loads(helper.stdout.read())
    if rc not in (0, 1) or "Traceback (most recent call last)" in stderr:
        raise SystemExit(f"bench: {' '.join(cmd[:4])}… failed ({rc}): {stderr.strip()[-500:]}")
    return {"s": elapsed, "rss_mb": rss / 1024, "pss_mb": peak_pss / 1024, "found": found,
            "stdout": stdout, "stderr": stderr}


# `--columnar`: the build with hash and section files parsed straight into columns
# (hashes.parse_hash_columns), as proposed for kinds.py; everything else is the usual build.
COLUMNAR_BUILD = """
import sys
from lmsav.scanner.signatures import database, hashes, kinds


class Parts(list):
    # One file's columns; len() is its signature count, which the loader adds up.
    def __init__(self, columns):
        super().__init__([columns])
        self.signatures = len(columns)

    def __len__(self):
        return self.signatures


def columnar(adapter, layout, wildcard_exts, prefix):
    def parse(text, source, ext):
        columns, skipped = hashes.parse_hash_columns(text, source, ext in wildcard_exts, layout)
        return Parts(columns), skipped

    adapter.parse = parse
    adapter.compile = lambda parts: hashes.compile_hash_columns(parts, prefix)


columnar(kinds.ADAPTERS["hash"], hashes.HASH_FIRST, (".hsb", ".hsu"), "hash")
columnar(kinds.ADAPTERS["section"], hashes.SIZE_FIRST, (".msb", ".msu"), "mdb")
header = database.build(sys.argv[1])
print(sum(header["counts"].values()))
"""


def bench_lmsav(db: Path, tree: Path, files: int, empty: Path, columnar: bool = False) -> dict:
    cache = next(db.glob(".compiled*"), None)
    if cache is not None:
        cache.unlink()
    if columnar:
        build = measure([sys.executable, "-c", COLUMNAR_BUILD, str(db)])
    else:
        build = measure(LMSAV + ["db", "build", str(db)])
    cache = next(db.glob(".compiled*"))
    probe = (
        "import time,resource,sys;t=time.perf_counter();"
        "from lmsav.scanner.signatures.database import Database;"
        "d=Database.load(sys.argv[1]);e=time.perf_counter()-t;"
        "print(e, d.loaded_from_cache, d.total,"
        "open('/proc/self/status').read().split('VmRSS:')[1].split()[0])"
    )
    loads = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", probe, str(db)], capture_output=True,
                             text=True, check=True).stdout.split()
        loads.append((float(out[0]), out[1] == "True", int(out[2]), int(out[3]) / 1024))
    load_s = min(x[0] for x in loads)
    empty_scan = measure(LMSAV + ["scan", "--no-summary", "-d", str(db), str(empty)])
    sweep = measure(LMSAV + ["scan", "-i", "--no-summary", "-d", str(db), str(tree)])
    return {"build_s": build["s"], "build_rss_mb": build["rss_mb"],
            "build_pss_mb": build["pss_mb"], "cache_mb": cache.stat().st_size / 1e6,
            "load_s": load_s, "from_cache": all(x[1] for x in loads), "signatures": loads[0][2],
            "load_rss_mb": loads[0][3], "empty_s": empty_scan["s"],
            "empty_rss_mb": empty_scan["rss_mb"], "sweep_s": sweep["s"],
            "sweep_rss_mb": sweep["rss_mb"], "sweep_pss_mb": sweep["pss_mb"],
            "fps": files / sweep["s"], "found": sweep["found"],
            "warnings": build["stderr"].count("\n")}


HASH_PROBE = """
import json, resource, sys, time
from pathlib import Path
from lmsav.scanner.signatures import hashes
started = time.perf_counter()
builder = hashes.HashTableBuilder("hash")
for path in sorted(Path(sys.argv[1]).glob("bench.*")):
    ext = path.suffix
    if ext in (".hdb", ".hsb", ".mdb", ".msb"):
        layout = hashes.SIZE_FIRST if ext in (".mdb", ".msb") else hashes.HASH_FIRST
        builder.add_file(path, path.name, ext in (".hsb", ".msb"), layout)
parsed = time.perf_counter()
sections = builder.sections()
done = time.perf_counter()
size = sum(len(v) for v in sections.values())
print(json.dumps([builder.count, parsed - started, done - parsed, size,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))
"""


def bench_hash_tables(db: Path) -> dict:
    """The columnar hash compiler alone, over every hash file (.hdb .hsb .mdb .msb)."""
    out = subprocess.run([sys.executable, "-c", HASH_PROBE, str(db)], capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench: hash tables: {out.stderr.strip()[-500:]}")
    count, parse_s, sort_s, size, rss = json.loads(out.stdout)
    return {"count": count, "parse_s": parse_s, "sort_s": sort_s, "mb": size / 1e6,
            "rss_mb": rss / 1024}


def bench_clamscan(db: Path, tree: Path, files: int, empty: Path) -> dict:
    load = measure([CLAMSCAN, "-d", str(db), str(empty)])
    known = next((ln.split(":")[1].strip() for ln in load["stdout"].splitlines()
                  if ln.startswith("Known viruses")), "?")
    sweep = measure([CLAMSCAN, "-r", "-i", "--no-summary", "-d", str(db), str(tree)])
    return {"load_s": load["s"], "load_rss_mb": load["rss_mb"], "known": known,
            "sweep_s": sweep["s"], "sweep_rss_mb": sweep["rss_mb"],
            "scan_only_s": max(sweep["s"] - load["s"], 1e-3),
            "fps": files / sweep["s"], "found": sweep["found"]}


def report(total: int, files: int, lm: dict, cl: dict | None, ht: dict | None) -> str:
    out = []
    if ht:
        out.append(f"hash tables alone (columnar, all of .hdb .hsb .mdb .msb): {ht['count']:,} "
                   f"signatures, parse {ht['parse_s']:.1f} s + sort {ht['sort_s']:.1f} s, "
                   f"{ht['mb']:.0f} MB of sections, peak RSS {ht['rss_mb']:.0f} MB")
    if not lm:
        return "\n".join(out)
    out += [
        f"database: {total:,} generated signatures; lmsav counts {lm['signatures']:,}"
        + (f", clamscan 'Known viruses' {cl['known']}" if cl else ""),
        (f"  lmsav compile   {lm['build_s']:7.1f} s  peak RSS {lm['build_rss_mb']:7.0f} MB  "
        f"(tree PSS {lm['build_pss_mb']:.0f} MB)  cache {lm['cache_mb']:.0f} MB  "
        f"(target <= 600 s)"),
        (f"  lmsav load      {lm['load_s']:7.3f} s  RSS {lm['load_rss_mb']:7.0f} MB  "
        f"from cache {lm['from_cache']}  (target <= 1 s)"),
        f"  lmsav scan of one empty file {lm['empty_s']:.2f} s, peak RSS {lm['empty_rss_mb']:.0f} MB",
        (f"  lmsav sweep     {lm['sweep_s']:7.2f} s  {lm['fps']:7.0f} files/s  peak RSS "
        f"{lm['sweep_rss_mb']:.0f} MB/process, PSS of all processes {lm['sweep_pss_mb']:.0f} MB "
        f"(target <= 400 MB); found {lm['found']}"),
    ]
    if cl:
        out += [
            (f"  clamscan load   {cl['load_s']:7.2f} s  peak RSS {cl['load_rss_mb']:7.0f} MB "
            f"(one empty file)"),
            (f"  clamscan sweep  {cl['sweep_s']:7.2f} s  {cl['fps']:7.0f} files/s  peak RSS "
            f"{cl['sweep_rss_mb']:.0f} MB; found {cl['found']}"),
            (f"  ratio files/s lmsav/clamscan {cl['sweep_s'] / lm['sweep_s']:.1f}x whole command "
            f"(target >= 10x); scan phase only {cl['scan_only_s'] / max(lm['sweep_s'] - lm['empty_s'], 1e-3):.1f}x; "
            f"load {cl['load_s'] / lm['empty_s']:.1f}x; RSS {cl['sweep_rss_mb'] / max(lm['sweep_pss_mb'], lm['sweep_rss_mb']):.1f}x less"),
        ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="fraction of the official database's size (default 1.0: 8.7 M)")
    ap.add_argument("--signatures", type=int, help="total signatures (overrides --scale)")
    ap.add_argument("--files", type=int, default=20_000, help="files in the tree")
    ap.add_argument("--ldb", action=argparse.BooleanOptionalAction, default=None,
                    help="include 30,000 .ldb (default: when lmsav reads .ldb)")
    ap.add_argument("--cud", action="store_true", help="pack into an unsigned .cud (sigtool)")
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--columnar", action="store_true",
                    help="build with hash and section files parsed into columns "
                         "(hashes.parse_hash_columns) instead of one object per line")
    ap.add_argument("--skip-hash-tables", action="store_true",
                    help="do not time the hash tables alone before the whole build")
    ap.add_argument("--skip-clamscan", action="store_true")
    ap.add_argument("--rerun-clamscan", action="store_true",
                    help="measure clamscan again instead of reusing this data's last figures")
    ap.add_argument("--workdir", help="keep generated data here (reused by later runs)")
    args = ap.parse_args()
    total = args.signatures or round(OFFICIAL_TOTAL * args.scale)
    ldb = args.ldb if args.ldb is not None else (
        REPO / "lmsav/scanner/signatures/logical.py").exists()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lmsav-bigdb-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} cores, data in {work}", flush=True)
    db, tree = generate(work, total, args.files, ldb, args.cud)
    if args.generate_only:
        return
    files = sum(len(f) for _, _, f in os.walk(tree))
    empty = work / "empty.txt"
    empty.write_bytes(b"")
    ht = None if args.cud or args.skip_hash_tables else bench_hash_tables(db)
    if ht:
        print(report(total, files, {}, None, ht), flush=True)
    lm = bench_lmsav(db, tree, files, empty, args.columnar)
    cl = None
    if not args.skip_clamscan:
        # clamscan's figures depend only on the generated data: kept for later lmsav runs.
        saved = db / f".clamscan-{tree.name}.json"
        if saved.exists() and not args.rerun_clamscan:
            cl = json.loads(saved.read_text())
        else:
            cl = bench_clamscan(db, tree, files, empty)
            saved.write_text(json.dumps(cl))
    print(report(total, files, lm, cl, None), flush=True)
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
