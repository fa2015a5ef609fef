#!/usr/bin/env python3
"""lmsav's YARA against Debian's ``yara`` on a public-style rule set, timed in alternating turns.

Usage: python bench/yara.py [--rules 3500] [--files 20000] [--jobs 2] [--repeats 5]
                            [--profile 2000] [--seed 1] [--workdir DIR] [--keep]

The rule set has the size and shape of a large public one (signature-base): rules with
ascii/wide/nocase/fullword strings, hex strings with jumps and wildcards, regular expressions,
``filesize`` and ``uint16``/``uint32`` conditions, some using the ``pe`` module; 35 rules a file.
The tree is copies of Python's standard library and site-packages (text, bytecode, shared
objects) with generated PE files among them, a few carrying strings of the rules.

Timed on the same tree (contents in the page cache after an unmeasured warm-up read),
--repeats times each, in turns whose order alternates (lmsav first, then yara first), so a
load that comes and goes on a shared machine falls on both alike:

  lmsav   `lmsav scan -j JOBS -i --no-summary -d DB TREE` (the database holds only the rules,
          compiled beforehand by `lmsav db build`)
  yara    `yara -C -w -r -p JOBS RULES.yarc TREE` (rules compiled beforehand by `yarac`)

Each run's detections are compared (the files and rules yara names must be lmsav's too). The
result is the median of the turns' ratios (yara's time / lmsav's), with the lowest and highest;
CPU time (user + system, workers included) is printed beside, as it moves less with the
machine's load.

Then, to say where lmsav's time goes, one thread in this process over --profile files read
into memory: yara-x over the bytes with the full rules, with the same rules minus their `pe`
conditions (module parsing and calls), minus their regular-expression strings (regexes); and
lmsav's engine on the same files, with and without its YARA scans (read, sniff, archive members
unpacked, results: per-file overhead). The engine also scans the members of archives (gzip'd
files among them), which yara does not: its YARA scans per file are counted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

LMSAV = str(Path(sys.executable).with_name("lmsav"))
RULES_PER_FILE = 35
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
PE_IMPORTS = [("kernel32.dll", "VirtualAllocEx"), ("kernel32.dll", "WriteProcessMemory"),
              ("advapi32.dll", "RegSetValueExA"), ("ws2_32.dll", "connect"),
              ("wininet.dll", "InternetOpenUrlA"), ("user32.dll", "SetWindowsHookExA")]


# -- the rule set --------------------------------------------------------------------------------

def _word(rnd: random.Random, lo: int = 6, hi: int = 16) -> str:
    return "".join(rnd.choice(LETTERS) for _ in range(rnd.randint(lo, hi)))


def _hex(rnd: random.Random) -> str:
    parts = []
    for _ in range(rnd.randint(2, 4)):
        parts += [f"{rnd.randrange(256):02X}" for _ in range(rnd.randint(3, 6))]
        kind = rnd.random()
        if kind < 0.4:
            parts.append(f"[{rnd.randint(1, 4)}-{rnd.randint(5, 16)}]")
        elif kind < 0.7:
            parts.append("??")
        else:
            parts.append(f"{rnd.randrange(16):X}?")
    parts += [f"{rnd.randrange(256):02X}" for _ in range(3)]
    return "{ " + " ".join(parts) + " }"


def rule_text(rnd: random.Random, index: int, planted: list[bytes], pe: bool,
              regexes: bool) -> tuple[str, bool]:
    """One rule like signature-base's; (text, whether it imports pe)."""
    strings, families = [], []
    for i in range(rnd.randint(2, 6)):
        word = _word(rnd)
        mods = rnd.choice(["ascii", "wide", "ascii wide", "fullword ascii", "ascii nocase",
                           "wide nocase", "ascii wide nocase"])
        strings.append(f'      $s{i} = "{word}" {mods}')
        if rnd.random() < 0.01:
            planted.append(word.encode())
    families.append("s")
    if rnd.random() < 0.5:
        for i in range(rnd.randint(1, 3)):
            strings.append(f"      $x{i} = {_hex(rnd)}")
        families.append("x")
    # Random numbers are drawn alike whatever is left out: the variants without pe conditions
    # or regexes are the same rules otherwise.
    if rnd.random() < 0.3:
        prefix = _word(rnd, 4, 8)
        strings.append(f"      $r0 = /{prefix}[0-9a-f]{{2,8}}\\.(exe|dll|php|ps1)/ nocase")
        families.append("r")
    uses_pe = rnd.random() < 0.12
    head = rnd.choice(["uint16(0) == 0x5a4d", "uint32(0) == 0x464c457f", "", "", ""])
    size = rnd.choice(["filesize < 200KB", "filesize < 2MB", "filesize > 1KB", ""])
    counts = [(f, rnd.randint(1, 2)) for f in families]
    if not regexes:
        strings = [s for s in strings if not s.startswith("      $r")]
    anyof = " or ".join(f"{n} of (${f}*)" for f, n in counts if regexes or f != "r")
    parts = [p for p in (head, size) if p] + [f"( {anyof} )"]
    if uses_pe:
        dll, fn = rnd.choice(PE_IMPORTS)
        condition = rnd.choice([f'pe.imports("{dll}", "{fn}")',
                                f"pe.number_of_sections > {rnd.randint(3, 7)}",
                                f'pe.exports("{_word(rnd)}")'])
        if pe:
            parts.insert(0, condition)
    uses_pe = uses_pe and pe
    digest = "".join(rnd.choice("0123456789abcdef") for _ in range(64))
    text = (f"rule Bench_{index:05d}_{_word(rnd, 4, 8)} {{\n"
            f"   meta:\n"
            f'      description = "Detects generated sample {index}"\n'
            f'      author = "bench"\n'
            f'      date = "2024-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"\n'
            f'      hash1 = "{digest}"\n'
            f"   strings:\n" + "\n".join(strings) + "\n"
            "   condition:\n      " + " and ".join(parts) + "\n}\n")
    return text, uses_pe


def write_rules(directory: Path, count: int, seed: int, pe: bool = True,
                regexes: bool = True) -> list[bytes]:
    """``count`` rules in files of RULES_PER_FILE; returns the strings worth planting."""
    directory.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    planted: list[bytes] = []
    for start in range(0, count, RULES_PER_FILE):
        texts, imports_pe = [], False
        for index in range(start, min(count, start + RULES_PER_FILE)):
            text, uses = rule_text(rnd, index, planted, pe, regexes)
            texts.append(text)
            imports_pe |= uses
        head = 'import "pe"\n\n' if imports_pe else ""
        (directory / f"set_{start // RULES_PER_FILE:03d}.yar").write_text(head + "\n".join(texts))
    return planted


# -- the tree ------------------------------------------------------------------------------------

def pe_bytes(rnd: random.Random, payload: bytes) -> bytes:
    sections = rnd.randint(1, 6)
    mz = bytearray(b"MZ".ljust(0x40, b"\0"))
    mz[0x3C:0x40] = struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x14C, sections, 0, 0, 0, 0xE0, 0x102)
    opt = bytearray(0xE0)
    opt[0:2] = struct.pack("<H", 0x10B)
    opt[16:20] = struct.pack("<I", 0x1000)
    opt[28:40] = struct.pack("<III", 0x400000, 0x1000, 0x200)
    opt[56:64] = struct.pack("<II", 0x1000 * (sections + 1), 0x400)
    opt[92:96] = struct.pack("<I", 16)
    table = b""
    body = b""
    for i in range(sections):
        raw = rnd.randbytes(0x200) if i else payload.ljust(0x200)[:0x200]
        table += f".s{i}".encode().ljust(8, b"\0") + struct.pack(
            "<IIIIIIHHI", 0x1000, 0x1000 * (i + 1), 0x200, 0x400 + 0x200 * i, 0, 0, 0, 0,
            0x60000020)
        body += raw
    return (bytes(mz) + b"PE\0\0" + coff + bytes(opt) + table).ljust(0x400, b"\0") + body


def build_tree(dest: Path, want: int, planted: list[bytes], seed: int) -> int:
    """Python's files copied until ``want`` files exist, one in ten a generated PE."""
    rnd = random.Random(seed)
    sources = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    count = 0
    for src in sources:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames.sort()
            target = dest / Path(dirpath).relative_to(src.parent)
            target.mkdir(parents=True, exist_ok=True)
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if path.is_symlink() or not path.is_file():
                    continue
                if count % 10 == 9:
                    payload = b"".join(rnd.sample(planted, min(2, len(planted)))) \
                        if planted and rnd.random() < 0.05 else b""
                    (target / f"gen{count}.exe").write_bytes(pe_bytes(rnd, payload))
                else:
                    shutil.copyfile(path, target / name)
                count += 1
                if count >= want:
                    return count
    return count


def tree_files(tree: Path) -> list[Path]:
    return sorted(Path(d) / f for d, _, files in os.walk(tree) for f in files)


# -- timing --------------------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float  # wall clock
    cpu: float  # user + system of the command and every process it waited for (its workers)
    found: set[tuple[str, str]]  # (file, rule) detected


def timed(cmd: list[str], parse) -> Run:
    """Run ``cmd``; its wall and CPU time, and what it found (``parse`` of its output)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode not in (0, 1):
            err.seek(0)
            raise SystemExit(f"bench: {cmd[0]} failed ({proc.returncode}): "
                             f"{err.read()[-400:].decode(errors='replace')}")
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Run(elapsed, usage.ru_utime + usage.ru_stime, parse(text))


def lmsav_found(text: str) -> set[tuple[str, str]]:
    """``PATH: YARA.RULE FOUND`` lines (a member's PATH is ``FILE//MEMBER``)."""
    found = set()
    for line in text.splitlines():
        if line.endswith(" FOUND"):
            path, _, name = line[: -len(" FOUND")].rpartition(": ")
            found.add((path, name.removeprefix("YARA.")))
    return found


def yara_found(text: str) -> set[tuple[str, str]]:
    """``RULE PATH`` lines."""
    return {(path, rule) for rule, _, path in (line.partition(" ") for line in text.splitlines())
            if path}


def compare(lmsav: Run, yara: Run) -> str:
    """What differs between the files' detections ("" if nothing); lmsav's detections in the
    members of archives, which yara does not unpack, are only counted."""
    files = {f for f in lmsav.found if "//" not in f[0]}
    missed, extra = yara.found - files, files - yara.found
    members = len(lmsav.found) - len(files)
    also = f"; {members} in archive members" if members else ""
    if not missed and not extra:
        return f"same ({len(files)}{also})"
    return f"DIFFERENT: {len(missed)} missed by lmsav, {len(extra)} only lmsav's{also}"


def compile_yara_x(directory: Path):
    import yara_x

    compiler = yara_x.Compiler(relaxed_re_syntax=True, includes_enabled=False)
    for path in sorted(directory.glob("*.yar")):
        compiler.new_namespace(path.name)
        compiler.add_source(path.read_text(), origin=path.name)
    return compiler.build()


def per_file_us(rules, blobs: list[bytes]) -> float:
    """yara-x's CPU time per blob, the best of three passes."""
    import yara_x

    scanner = yara_x.Scanner(rules)
    best = float("inf")
    for _ in range(3):
        started = time.process_time()  # CPU time: steadier than wall time on a shared machine
        for blob in blobs:
            scanner.scan(blob)
        best = min(best, time.process_time() - started)
    return best / len(blobs) * 1e6


def engine_us(engine, paths: list[str]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for path in paths:
            engine.scan_path(path)
        best = min(best, time.process_time() - started)
    return best / len(paths) * 1e6


def profile(work: Path, db: Path, files: list[Path], count: int, seed: int, rules: int) -> dict:
    from lmsav.scanner.engine import Engine
    from lmsav.scanner.signatures.database import Database

    sample = files[:: max(1, len(files) // count)][:count]
    blobs = [p.read_bytes() for p in sample]
    write_rules(work / "rules-nope", rules, seed, pe=False)
    write_rules(work / "rules-nore", rules, seed, regexes=False)
    out = {"files": len(sample)}
    out["yara_x_full"] = per_file_us(compile_yara_x(db), blobs)
    out["yara_x_no_pe"] = per_file_us(compile_yara_x(work / "rules-nope"), blobs)
    out["yara_x_no_regex"] = per_file_us(compile_yara_x(work / "rules-nore"), blobs)
    database = Database.load(db)
    engine = Engine(database)
    paths = [str(p) for p in sample]
    engine.scan_path(paths[0])  # the first scan loads what the engine imports lazily
    yara = database.matchers["yara"]
    scans = [0]

    def counted(subject, match=yara.match):
        scans[0] += 1
        return match(subject)

    yara.match = counted
    engine.scan_path(paths[0])
    scans[0] = 0
    for path in paths:
        engine.scan_path(path)
    out["scans"] = scans[0] / len(paths)
    del yara.match
    out["engine"] = engine_us(engine, paths)
    del database.matchers["yara"]  # the same engine with no YARA: the rest of its work
    out["engine_no_yara"] = engine_us(engine, paths)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=3500)
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each")
    parser.add_argument("--profile", type=int, default=2000,
                        help="files profiled in-process (0: none)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if shutil.which("yara") is None or shutil.which("yarac") is None:
        raise SystemExit("bench: Debian's yara (yara, yarac) is not installed")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmsav-bench-yara-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        db, tree = work / "db", work / "tree"
        shutil.rmtree(db, ignore_errors=True)
        planted = write_rules(db, args.rules, args.seed)
        if not tree.exists():
            build_tree(tree, args.files, planted, args.seed)
        files = tree_files(tree)
        n = len(files)
        started = time.perf_counter()
        subprocess.run([LMSAV, "db", "build", str(db)], check=True, capture_output=True)
        build_s = time.perf_counter() - started
        compiled = work / "rules.yarc"
        started = time.perf_counter()
        subprocess.run(["yarac", "-w", *sorted(str(p) for p in db.glob("*.yar")), str(compiled)],
                       check=True, capture_output=True)
        yarac_s = time.perf_counter() - started
        for path in files:  # warm the page cache for both
            path.read_bytes()
        print(f"rules: {args.rules} in {len(list(db.glob('*.yar')))} files; tree: {n} files "
              f"({sum(p.stat().st_size for p in files) / 1e6:.1f} MB); jobs: {args.jobs}; "
              f"repeats: {args.repeats}")
        print(f"compile: lmsav db build {build_s:.2f} s, yarac {yarac_s:.2f} s")
        commands = {
            "lmsav": ([LMSAV, "scan", "-j", str(args.jobs), "-i", "--no-summary",
                       "--no-progress", "-d", str(db), str(tree)], lmsav_found),
            "yara": (["yara", "-C", "-w", "-r", "-p", str(args.jobs), str(compiled),
                      str(tree)], yara_found),
        }
        runs: dict[str, list[Run]] = {"lmsav": [], "yara": []}
        ratios, cpu_ratios, differing = [], [], 0
        print(f"{'turn':>4}  {'lmsav s':>8} {'cpu s':>6}  {'yara s':>8} {'cpu s':>6}  "
              f"{'ratio':>5}  detections")
        for turn in range(args.repeats):
            order = ("lmsav", "yara") if turn % 2 == 0 else ("yara", "lmsav")
            for who in order:
                cmd, parse = commands[who]
                runs[who].append(timed(cmd, parse))
            lm, ya = runs["lmsav"][-1], runs["yara"][-1]
            ratios.append(ya.seconds / lm.seconds)
            cpu_ratios.append(ya.cpu / lm.cpu)
            detections = compare(lm, ya)
            differing += detections.startswith("DIFFERENT")
            print(f"{turn + 1:>4}  {lm.seconds:8.2f} {lm.cpu:6.2f}  {ya.seconds:8.2f} "
                  f"{ya.cpu:6.2f}  {ratios[-1]:5.2f}  {detections}")
        t_l = median([r.seconds for r in runs["lmsav"]])
        t_y = median([r.seconds for r in runs["yara"]])
        print(f"lmsav scan: {t_l:6.2f} s  {n / t_l:8.0f} files/s  "
              f"(median; cpu {median([r.cpu for r in runs['lmsav']]):.2f} s)")
        print(f"yara -C -p: {t_y:6.2f} s  {n / t_y:8.0f} files/s  "
              f"(median; cpu {median([r.cpu for r in runs['yara']]):.2f} s)")
        print(f"lmsav / yara files/s: median {median(ratios):.2f} (lowest {min(ratios):.2f}, "
              f"highest {max(ratios):.2f}); cpu time yara / lmsav: median "
              f"{median(cpu_ratios):.2f}")
        print("detections: " + (f"DIFFERENT in {differing} of {args.repeats} turns"
                                if differing else "the same in every turn"))
        if args.profile:
            report_profile(profile(work, db, files, args.profile, args.seed, args.rules))
        if differing:
            raise SystemExit(1)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def report_profile(prof: dict) -> None:
    full = prof["yara_x_full"]
    engine, rest = prof["engine"], prof["engine_no_yara"]
    print(f"where the time goes (one thread, {prof['files']} files, CPU µs per file):")
    print(f"  lmsav engine per file        {engine:8.0f}")
    print(f"  yara-x scan of the file      {full:8.0f}  (full rules, the file's bytes)")
    print(f"    pe conditions and module   {full - prof['yara_x_no_pe']:8.0f}  "
          f"(full − the same rules without their pe conditions)")
    print(f"    regular expressions        {full - prof['yara_x_no_regex']:8.0f}  "
          f"(full − the same rules without their regex strings)")
    print(f"  YARA scans of archive members{engine - rest - full:8.0f}  "
          f"({prof['scans']:.2f} YARA scans per file: members of archives too)")
    print(f"  the rest of lmsav's work     {rest:8.0f}  "
          f"(engine without YARA: read, sniff, unpack members, results)")


if __name__ == "__main__":
    main()
