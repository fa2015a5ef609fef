"""Differential test: the same generated .ldb signatures and samples through clamscan and lmsav.

Signatures combine hex subsignatures (wildcards, alternatives, gaps that split a pattern, the
``i``/``w``/``a``/``f`` modifiers, offsets), PCRE and byte-compare subsignatures under random
expressions with counts; samples plant 0-4 instances of each subsignature (some altered so they
just miss) in binary filler. Every (sample, signature) verdict must be the same.
"""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from lmsav.scanner import filetype
from lmsav.scanner.signatures import logical
from lmsav.scanner.signatures.subject import Subject

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]

_FILLER = b"\x00\x10\x20\x30\xee\xfe\x01"
_HEADER = b"\x00\x01\x00\x01\x00\x01"


# -- hex subsignatures -------------------------------------------------------------------------

def _element(rnd: random.Random, letters: bool) -> tuple:
    kind = rnd.choice(["lit", "lit", "any", "hi", "alt", "gap", "star", "lit"])
    if kind == "lit":
        pool = b"abcdefgHIJKLxyz" if letters else bytes(range(0x41, 0x5b)) + b"\x80\x90\xfa"
        return ("lit", bytes(rnd.choice(pool) for _ in range(rnd.randint(2, 4))))
    if kind == "any":
        return ("any", rnd.randint(1, 2))
    if kind == "hi":
        return ("hi", rnd.choice(b"PQRSTU"))
    if kind == "alt":
        return ("alt", [bytes(rnd.choice(b"mnopq") for _ in range(rnd.choice([1, 2])))
                        for _ in range(2)])
    if kind == "gap":
        lo = rnd.randint(0, 3)
        return ("gap", lo, lo + rnd.randint(1, 4))
    return ("star",)


def _hex_elements(rnd: random.Random, letters: bool) -> list[tuple]:
    out = [("lit", bytes(rnd.choice(b"ABCDEFGHJK") for _ in range(3)))]
    for _ in range(rnd.randint(0, 3)):
        e = _element(rnd, letters)
        out.append(e)
        if e[0] in ("gap", "star", "any", "hi", "alt"):
            out.append(("lit", bytes(rnd.choice(b"VWXYZ") for _ in range(2))))
    return out


def _hex(elements) -> str:
    out = []
    for e in elements:
        if e[0] == "lit":
            out.append(e[1].hex())
        elif e[0] == "any":
            out.append("??" * e[1])
        elif e[0] == "hi":
            out.append(f"{e[1] >> 4:x}?")
        elif e[0] == "alt":
            out.append("(" + "|".join(a.hex() for a in e[1]) + ")")
        elif e[0] == "gap":
            out.append(f"{{{e[1]}-{e[2]}}}")
        else:
            out.append("*")
    return "".join(out)


def _bytes(rnd: random.Random, elements, spoil: bool) -> bytes:
    out = bytearray()
    bad = rnd.randrange(len(elements)) if spoil else -1
    for i, e in enumerate(elements):
        if e[0] == "lit":
            lit = bytearray(e[1])
            if i == bad:
                lit[-1] ^= 0x01
            out += lit
        elif e[0] == "any":
            out += bytes(rnd.choice(b"#$%") for _ in range(e[1]))
        elif e[0] == "hi":
            out.append((e[1] & 0xF0) | rnd.randrange(16) if i != bad else 0x7E)
        elif e[0] == "alt":
            out += rnd.choice(e[1]) if i != bad else b"!!"
        elif e[0] == "gap":
            n = rnd.randint(e[1], e[2]) if i != bad else e[2] + 2
            out += b"-" * n
        else:
            out += b"-" * rnd.randint(0, 6)
    return bytes(out)


def _apply(rnd: random.Random, data: bytes, options: str) -> bytes:
    if "i" in options:
        data = bytes(b ^ 0x20 if chr(b).isalpha() and rnd.random() < 0.5 else b for b in data)
    if "w" in options and ("a" not in options or rnd.random() < 0.5):
        data = b"".join(bytes([b, 0]) for b in data)
    if "f" in options and rnd.random() < 0.8:
        data = b" " + data + b" "
    return data


# -- signatures --------------------------------------------------------------------------------

def _expression(rnd: random.Random, count: int) -> str:
    ids = list(range(count))
    rnd.shuffle(ids)

    def term(i):
        r = rnd.random()
        if r < 0.5:
            return str(i)
        if r < 0.7:
            return f"{i}>{rnd.randint(0, 2)}"
        if r < 0.85:
            return f"{i}={rnd.randint(0, 3)}"
        return f"{i}<{rnd.randint(1, 3)}"

    def build(items):
        if len(items) == 1:
            return term(items[0])
        cut = rnd.randint(1, len(items) - 1)
        op = rnd.choice("&|")
        left, right = build(items[:cut]), build(items[cut:])
        block = f"({left}{op}{right})"
        if rnd.random() < 0.3:
            block += rnd.choice([f">{rnd.randint(0, 3)}", f"={rnd.randint(1, 4)}",
                                 f"<{rnd.randint(2, 5)}", f">{rnd.randint(0, 2)},2"])
        return block

    return build(ids)


def _byte_compare(rnd: random.Random, ref: int) -> tuple[str, bytes]:
    """A byte compare reading 3 bytes after its reference's start, and the bytes to plant."""
    value = rnd.randrange(1, 60000)
    form = rnd.choice(["ib2", "il2", "hb4", "hle4", "db5", "ab6", "ib1", "dbe3"])
    op = rnd.choice(["=", ">", "<"])
    limit = value if op == "=" else value + rnd.choice([-1, 1]) * rnd.randint(0, 50)
    if form.startswith("ib") or form.startswith("il"):
        width = int(form[2:])
        value %= 256 ** width
        limit = value if op == "=" else limit % 256 ** width
        data = value.to_bytes(width, "big" if form[1] == "b" else "little")
    elif form.startswith("h"):
        data = f"{value:04x}".encode()[-4:]
        if form.startswith("hle"):
            value = int.from_bytes(bytes.fromhex(data.decode()), "little")
            limit = value if op == "=" else limit
    elif form.startswith("a"):
        data = rnd.choice([f"0x{value:04x}".encode(), f"{value:06d}".encode()])
    else:
        width = int(form[-1])
        value %= 10 ** width
        data = f"{value:0{width}d}".encode()
        limit = value if op == "=" else limit
    return f"{ref}(>>3#{form}#{op}{limit})", data


def _special(rnd: random.Random, j: int):
    """Constructs whose counting or anchoring is easy to get wrong."""
    kind = rnd.choice(["run", "anchor", "split", "negate", "pcre"])
    if kind == "run":  # overlapping matches of a repetitive pattern
        byte = rnd.choice(b"RST")
        return f"{byte:02x}{byte:02x}{byte:02x}", lambda rnd, spoil, b=byte: bytes(
            [b]) * (rnd.randint(1, 6) if not spoil else 2)
    if kind == "anchor":
        # Each signature gets its own bytes: ClamAV lets patterns that differ only in the
        # anchor's distance share one match result, across signatures (not reproduced).
        core = bytes(rnd.choice(b"KLMNOPQ") for _ in range(3))
        anchor = rnd.choice(b"JUVW")
        n = rnd.randint(0, 2)
        m = n + rnd.randint(0, 2)
        gap = lambda rnd, spoil, n=n, m=m: b"-" * (m + 1 if spoil else rnd.randint(n, m))
        if rnd.random() < 0.5:
            return f"{anchor:02x}[{n}-{m}]{core.hex()}", lambda rnd, spoil, c=core, a=anchor: (
                bytes([a]) + gap(rnd, spoil) + c)
        return f"{core.hex()}[{n}-{m}]{anchor:02x}", lambda rnd, spoil, c=core, a=anchor: (
            c + gap(rnd, spoil) + bytes([a]))
    if kind == "split":  # many first parts and last parts: ClamAV remembers only eight
        return "5051*5253", lambda rnd, spoil: b"".join(
            rnd.choice([b"PQ", b"RS", b"PQ-", b"RS-"]) for _ in range(rnd.randint(1, 12)))
    if kind == "negate":
        return "4b4c!(4d|4e)4f", lambda rnd, spoil: b"KL" + (b"M" if spoil else b"X") + b"O"
    if j == 0:
        return "4f505152", lambda rnd, spoil: b"OPQ" + (b"S" if spoil else b"R")
    flags = rnd.choice(["", "g", "ge", "gr", "A", "U", "E", "m"])
    offset = rnd.choice(["", "", "6:", "6,40:", "EOF-30,20:"])
    tail = rnd.choice(["", "", "(?=-)", "\\x2d?"])
    return f"{offset}0/qu+[x-z]{tail}/{flags}", lambda rnd, spoil: b"qu" * rnd.randint(
        1, 2) + (b"a" if spoil else b"y") + rnd.choice([b"", b"-"])


def _generate(seed: int, stress: bool = False):
    rnd = random.Random(seed)
    sigs, plants = [], []
    for n in range(40):
        count = rnd.randint(1, 4)
        subsigs, makers = [], []
        for j in range(count):
            r = rnd.random()
            if j and r < 0.15:
                # PCRE triggered by earlier subsignatures
                word = bytes(rnd.choice(b"klmn") for _ in range(3))
                flags = rnd.choice(["", "g", "gi", "r", "s"])
                offset = rnd.choice(["", "", "2,400:"])
                subsigs.append(f"{offset}{rnd.randrange(j)}/{word.decode()}[0-9]{{2}}/{flags}")
                makers.append(lambda rnd, spoil, w=word: w + (b"7x" if spoil else b"42"))
                continue
            if j and r < 0.25:
                ref = rnd.randrange(j)
                if "/" not in subsigs[ref] and "#" not in subsigs[ref]:
                    text, written = _byte_compare(rnd, ref)
                    subsigs.append(text)
                    makers.append(("bcomp", ref, written))
                    continue
            if stress and r < 0.45:
                text, maker = _special(rnd, j)
                subsigs.append(text)
                makers.append(maker)
                continue
            letters = rnd.random() < 0.4
            elements = _hex_elements(rnd, letters)
            options = ""
            if rnd.random() < 0.35:
                options = rnd.choice(["i", "w", "wa", "f", "fi", "iwa", "iwfa", "a"])
            if any(e[0] == "hi" for e in elements) and "i" in options:
                options = options.replace("i", "") or "a"
            offset = ""
            if rnd.random() < 0.15 and not any(e[0] in ("gap", "star") for e in elements):
                offset = rnd.choice(["0,600:", "EOF-300,300:", "5,900:"])
            text = _hex(elements)
            subsigs.append(f"{offset}{text}" + (f"::{options}" if options else ""))
            makers.append(lambda rnd, spoil, e=elements, o=options: _apply(
                rnd, _bytes(rnd, e, spoil), o))
        expr = _expression(rnd, count)
        tdb = "Engine:81-255,Target:0"
        if rnd.random() < 0.1:
            tdb += f",FileSize:{rnd.randint(0, 200)}-{rnd.randint(300, 2000)}"
        sigs.append(f"Diff.Ldb.{n};{tdb};{expr};" + ";".join(subsigs))
        plants.append(makers)
    return sigs, plants


def _samples(seed: int, plants) -> list[tuple[str, bytes]]:
    rnd = random.Random(seed + 1)
    samples = []
    for n, makers in enumerate(plants):
        for k in range(4):
            pieces = []
            positions = {}
            for j, maker in enumerate(makers):
                if isinstance(maker, tuple):
                    continue
                for _ in range(rnd.choice([0, 1, 1, 2, 3])):
                    pieces.append((j, maker(rnd, rnd.random() < 0.2)))
            rnd.shuffle(pieces)
            # The header keeps clamscan from reading a sample as ASCII or UTF-16 text (which it
            # would scan a second time, normalised).
            out = bytearray(_HEADER + bytes(rnd.choice(_FILLER) for _ in range(rnd.randint(0, 8))))
            for j, piece in pieces:
                positions.setdefault(j, []).append(len(out))
                out += piece
                # byte compares read 3 bytes after their reference's start
                for maker in makers:
                    if isinstance(maker, tuple) and maker[1] == j and rnd.random() < 0.7:
                        at = positions[j][-1] + 3
                        written = maker[2]
                        out[at:at + len(written)] = written
                out += bytes(rnd.choice(_FILLER) for _ in range(rnd.randint(0, 12)))
            samples.append((f"s{n}-{k}", bytes(out)))
    return samples


def _clamscan(ldb: str, tmp_path, samples) -> set[tuple[str, str]]:
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    (dbdir / "diff.ldb").write_text(ldb)
    files = tmp_path / "samples"
    files.mkdir()
    for name, data in samples:
        (files / name).write_bytes(data)
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "--bytecode=no", "-d", str(dbdir),
         str(files)], capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr
    found = set()
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, name = line[: -len(" FOUND")].rpartition(": ")
            found.add((path.rsplit("/", 1)[-1], name.removesuffix(".UNOFFICIAL")))
    return found


def _lmsav(ldb: str, samples) -> set[tuple[str, str]]:
    sigs, skipped = logical.parse_ldb(ldb, "diff.ldb")
    assert not skipped
    sections = logical.compile_ldb(sigs)
    matcher = logical.LogicalMatcher(lambda name: memoryview(sections.get(name, b"")))
    found = set()
    for name, data in samples:
        subject = Subject(data, len(data), filetype.sniff(data, len(data)))
        found |= {(name, hit) for hit, _ in matcher.match(subject)}
    return found


def _compare(tmp_path, sigs, samples):
    ldb = "\n".join(sigs) + "\n"
    clam = _clamscan(ldb, tmp_path, samples)
    ours = _lmsav(ldb, samples)
    by_name = {s.split(";", 1)[0]: s for s in sigs}
    diff = sorted(ours ^ clam)
    assert ours == clam, "\n".join(
        f"{'lmsav' if d in ours else 'clamscan'} only: {d[0]} {by_name[d[1]]}" for d in diff)
    return clam


@pytest.mark.parametrize("seed, stress", [(11, False), (23, False), (5, True), (8, True)])
def test_generated_logical_signatures_agree_with_clamscan(tmp_path, seed, stress):
    sigs, plants = _generate(seed, stress)
    samples = _samples(seed, plants)
    found = _compare(tmp_path, sigs, samples)
    # Worth something only if signatures both match and miss across the samples.
    hits = {}
    for _, name in found:
        hits[name] = hits.get(name, 0) + 1
    assert len([n for n in hits.values() if n < len(samples)]) >= 15


# -- executables -------------------------------------------------------------------------------

_PROGRAM = r"""
#include <stdio.h>
const char marker[] = "lmsav-ldb-pe-marker";
const char second[] = "second-%d-marker";
int main(void) { printf(marker); printf(second, 42); return 0; }
"""


def _build_pe(tmp_path, flags: list[str]) -> bytes:
    src = tmp_path / "prog.c"
    src.write_text(_PROGRAM)
    out = tmp_path / f"prog{len(flags)}.exe"
    subprocess.run(["x86_64-w64-mingw32-gcc", *flags, "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=120)
    return out.read_bytes()


@pytest.mark.skipif(shutil.which("x86_64-w64-mingw32-gcc") is None, reason="no mingw-w64")
def test_pe_targets_offsets_and_attributes_agree_with_clamscan(tmp_path):
    from lmsav.scanner.signatures import exe_headers

    pe_plain = _build_pe(tmp_path, ["-O0"])
    pe_small = _build_pe(tmp_path, ["-O2", "-s"])
    exe = exe_headers.parse(pe_plain, "pe")
    assert exe is not None and exe.sections
    ep = pe_plain[exe.entry_point:exe.entry_point + 4].hex()
    s0 = pe_plain[exe.sections[0].raw + 16:exe.sections[0].raw + 20].hex()
    last = exe.sections[-1]
    sl = pe_plain[last.raw:last.raw + 4].hex()
    marker = b"lmsav-ldb-pe-marker".hex()
    sections = len(exe.sections)
    sigs = [
        f"Pe.Marker;Engine:51-255,Target:1;0;{marker}",
        f"Any.Marker;Engine:51-255,Target:0;0;{marker}",
        f"Pe.EntryPoint;Engine:51-255,Target:1;0&1;EP+0:{ep};{marker}",
        f"Pe.Section0;Engine:51-255,Target:1;0;S0+16:{s0}",
        f"Pe.LastSection;Engine:51-255,Target:1;0;SL+0:{sl}",
        f"Pe.SectionEnd;Engine:51-255,Target:1;0;SE0:{marker}",
        f"Pe.Ep.Range;Engine:51-255,Target:1,EntryPoint:{exe.entry_point}-"
        f"{exe.entry_point};0;{marker}",
        f"Pe.Ep.Wrong;Engine:51-255,Target:1,EntryPoint:0-16;0;{marker}",
        f"Pe.Sections;Engine:51-255,Target:1,NumberOfSections:{sections}-{sections};0;{marker}",
        f"Pe.Sections.Wrong;Engine:51-255,Target:1,NumberOfSections:{sections + 1}-99;0;"
        f"{marker}",
        f"Pe.Size;Engine:51-255,Target:1,FileSize:{len(pe_plain)}-{len(pe_plain)};0;{marker}",
        "Pe.Wide.Fullword;Engine:81-255,Target:1;0;7365636f6e64::fa",
        f"Pe.Pcre;Engine:81-255,Target:1;0&1;{marker};0/second-%d-m[a-z]+/",
        f"Pe.Top;Engine:81-255,Target:1,Container:CL_TYPE_ANY;0;{marker}",
        f"Pe.InZip;Engine:81-255,Target:1,Container:CL_TYPE_ZIP;0;{marker}",
    ]
    plain = _HEADER + b"lmsav-ldb-pe-marker second-%d-marker" + b"\x00" * 64
    samples = [("plain.exe", pe_plain), ("small.exe", pe_small), ("data.bin", plain)]
    found = _compare(tmp_path, sigs, samples)
    assert ("plain.exe", "Pe.EntryPoint") in found
    assert ("data.bin", "Any.Marker") in found and ("data.bin", "Pe.Marker") not in found


# -- macro subsignatures -----------------------------------------------------------------------
# ``${min-max}g$`` after subsignature j: on each later match of j, the last match of macro group
# g (.ndb lines with the offset ``$g$``) reported so far must start min…max bytes after j's
# previous match. Signatures plant j two to four times, group members near each instance.

_MACRO_GROUPS = 6  # group 4 has members of target 1 only, group 5 none at all


def _member(rnd: random.Random, group: int) -> tuple[str, bytes]:
    """A macro group member (hex, bytes of one instance); each group has letters of its own."""
    lead = bytes([0x61 + 2 * group]) * 2
    tail = bytes(rnd.choice(b"xyz") for _ in range(rnd.randint(1, 2)))
    form = rnd.choice(["lit", "lit", "wild", "alt", "anchor"])
    if form == "wild":  # a wildcard ahead moves ClamAV's trie start, hence its report order
        return f"{lead[0]:02x}??{lead.hex()}{tail.hex()}", lead[:1] + b"#" + lead + tail
    if form == "alt":
        return f"{lead.hex()}(78|79){tail.hex()}", lead + b"x" + tail
    if form == "anchor":  # the match starts after the anchored byte
        return f"{tail[0]:02x}[1-2]{lead.hex()}", tail[:1] + b"-" + lead
    return (lead + tail).hex(), lead + tail


def _macro_signatures(rnd: random.Random):
    ndb, members = [], {}
    for group in range(_MACRO_GROUPS - 1):
        target = 1 if group == 4 else 0
        for k in range(rnd.randint(1, 2)):
            hexsig, data = _member(rnd, group)
            ndb.append(f"Macro.Member.{group}.{k}:{target}:${group}$:{hexsig}")
            members.setdefault(group, []).append(data)
    # A split member joins its group by its first sub-pattern alone (no other signature here
    # is split, which would let ClamAV take its later sub-patterns too).
    ndb.append(f"Macro.Split:0:$3$:{b'ggq'.hex()}*{b'ggr'.hex()}")
    members[3].append(b"ggq")
    sigs, plans = [], []
    for n in range(36):
        word = b"Q" + bytes(rnd.choice(b"RSTUVW") for _ in range(3))
        first = word.hex() if rnd.random() < 0.7 else f"{word[0]:02x}??{word[2:].hex()}"
        lo = rnd.randint(6, 12)
        hi = lo + rnd.randint(0, 3)
        group = rnd.choice([0, 1, 2, 3, 3, 4, 5])
        kind = rnd.choice(["simple", "simple", "simple", "chain", "pcre", "first"])
        if kind == "chain":
            group2 = rnd.choice([0, 1, 2])
            lo2 = rnd.randint(4, 8)
            subs = [first, f"${{{lo}-{hi}}}{group}$", f"${{{lo2}-{lo2 + 2}}}{group2}$"]
            expr = rnd.choice(["0&1&2", "2", "1=2&2<9", "1&2>0", "(0|2)"])
            plan = [(group, lo, hi), (group2, lo2, lo2 + 2)]
        elif kind == "pcre":
            subs = [first, f"0/{word.decode()}/g", f"${{{lo}-{hi}}}{group}$"]
            expr = rnd.choice(["1&2", "2", "2=2", "0&2=1"])
            plan = [(group, lo, hi)]
        elif kind == "first":  # a macro first in the list never counts
            subs = [f"${{{lo}-{hi}}}{group}$", first]
            expr = rnd.choice(["0=0&1", "0>0|1=3", "1&0<1"])
            plan = [(group, lo, hi)]
        else:
            subs = [first, f"${{{lo}-{hi}}}{group}$"]
            expr = rnd.choice(["0&1", "1", "1=1", "1=2", "0=2&1", "0>1&1>0", "1>1", "0=1&1<9"])
            plan = [(group, lo, hi)]
        sigs.append(f"Diff.Macro.{n};Engine:81-255,Target:0;{expr};" + ";".join(subs))
        plans.append((word, plan))
    return ndb, sigs, members, plans


def _macro_samples(rnd: random.Random, members, plans) -> list[tuple[str, bytes]]:
    samples = []
    for n, (word, plan) in enumerate(plans):
        for k in range(4):
            out = bytearray(_HEADER + bytes(rnd.choice(_FILLER) for _ in range(rnd.randint(0, 6))))
            for _ in range(rnd.randint(1, 4)):
                at = len(out)
                out += word
                end = len(out)
                for group, lo, hi in plan:
                    if group not in members or rnd.random() < 0.2:
                        break
                    data = rnd.choice(members[group])
                    # Starting lo…hi bytes after the previous instance, or just outside.
                    start = max(end, at + rnd.randint(lo - 1, hi + 1))
                    out += bytes(rnd.choice(_FILLER) for _ in range(start - len(out)))
                    out += data
                    at, end = start, len(out)
                out += bytes(rnd.choice(_FILLER) for _ in range(rnd.randint(0, 8)))
            samples.append((f"m{n}-{k}", bytes(out)))
    return samples


def _database_names(dbdir, tmp_path, samples) -> set[tuple[str, str]]:
    """What lmsav's database (body and logical matchers together) finds in each sample."""
    from lmsav.scanner.signatures.database import Database

    db = Database.load(dbdir, cache_path=tmp_path / "cache.lmsavc")
    found = set()
    for name, data in samples:
        subject = Subject(data, len(data), filetype.sniff(data, len(data)))
        found |= {(name, hit.removesuffix(".UNOFFICIAL")) for hit, _ in db.match(subject)}
    return found


@pytest.mark.parametrize("seed", [3, 17, 29])
def test_macro_subsignatures_agree_with_clamscan(tmp_path, seed):
    rnd = random.Random(seed)
    ndb, sigs, members, plans = _macro_signatures(rnd)
    samples = _macro_samples(rnd, members, plans)
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    (dbdir / "macros.ndb").write_text("\n".join(ndb) + "\n")
    (dbdir / "macros.ldb").write_text("\n".join(sigs) + "\n")
    files = tmp_path / "samples"
    files.mkdir()
    for name, data in samples:
        (files / name).write_bytes(data)
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "--bytecode=no", "-d", str(dbdir),
         str(files)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    clam = set()
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, name = line[: -len(" FOUND")].rpartition(": ")
            clam.add((path.rsplit("/", 1)[-1], name.removesuffix(".UNOFFICIAL")))
    ours = _database_names(dbdir, tmp_path, samples)
    by_name = {s.split(";", 1)[0]: s for s in sigs}
    assert ours == clam, "\n".join(
        f"{'lmsav' if d in ours else 'clamscan'} only: {d[0]} {by_name.get(d[1], d[1])}"
        for d in sorted(ours ^ clam))
    # Macro group members are no detections; the test is worth something only if signatures
    # both match and miss, and some of the matches need a macro.
    assert not any(name.startswith("Macro.") for _, name in clam)
    hit = {name for _, name in clam}
    assert len(hit) >= 8 and len(clam) < len(samples)


# -- what ClamAV refuses -----------------------------------------------------------------------

LDB_ACCEPTANCE_LINES = [
    "L;Engine:51-255,Target:0;0&1;41424344;${-1-2}3$",
    "L;Engine:51-255,Target:0;0&1;41424344;${1-2}3x$",
    "L;Engine:51-255,Target:0;0&1;41424344;${1 -2}3$",
    "L;Engine:51-255,Target:0;0&1;41424344;${ 1-2}3$",
    "L;Engine:51-255,Target:0;0&1;41424344;${1-2}32$",
    "L;Engine:51-255,Target:0;0&1;41424344;$",
    "L;Engine:51-255,Target:0;0&1;41424344;${1-2}3",
    "L;Engine:51-255,Target:0;0&1;41424344;$1$:4142",
    "L;Engine:51-255,Target:0;0;41(B)4243",
    "L;Engine:51-255,Target:3;0;41(B)4243",
    "L;Engine:51-255,Target:0;0;41(42|43)4445",
    "L;Engine:51-255,Target:0;0;41(42|43)4445::i",
    "L;Engine:51-255,Target:0;0;4a(4b|4c)4d4e::a",
    "L;Engine:51-255,Target:0;0;(4a4b|4c4d)4e4f::a",
    "L;Engine:51-255,Target:0;0;4a[1-2]4b4c[0-3]4d::i",
    "L;Engine:51-255,Target:0;0;4a[1-2]4b[3]4c4d",
    "L;Engine:51-255,Target:0;0;4a4b[3]4c::f",
    "L;Engine:51-255,Target:0;0;4a4b[40]4c",
    "L;Engine:51-255,Target:7;0;4a(4b|4c4d)4e4f",
]


def test_refused_logical_signatures_agree_with_clamscan(tmp_path):
    from lmsav.scanner.signatures.errors import SignatureError

    from .test_body_vs_clamscan import _accepted_by_clamscan

    def ours(line: str) -> bool:
        try:
            logical.compile_ldb(logical.parse_ldb(line + "\n", "t.ldb")[0])
        except SignatureError:
            return False
        return True

    lines = LDB_ACCEPTANCE_LINES
    clam = {line: _accepted_by_clamscan("ldb", line, tmp_path) for line in lines}
    assert {line: ours(line) for line in lines} == clam
    assert 5 < sum(clam.values()) < len(clam) - 5


def test_anchored_bytes_in_subsignatures_agree_with_clamscan(tmp_path):
    from .test_body_vs_clamscan import _BINARY, _PAD, _anchor_signature

    rnd = random.Random(41)
    sigs, samples = [], []
    for i in range(30):
        hexsig, instance, _ = _anchor_signature(rnd, i)
        if rnd.random() < 0.3 and "?" not in hexsig:
            hexsig += "::i"  # the anchored byte is matched in either case too
        expr = rnd.choice(["0", "0=1", "0=2", "0>1"])
        sigs.append(f"Diff.Anchor.{i};Engine:81-255,Target:0;{expr};{hexsig}")
        for k in range(4):
            out = bytearray(_BINARY)
            for _ in range(rnd.randint(1, 3)):
                out += bytes(rnd.choice(_PAD) for _ in range(rnd.randint(0, 5)))
                out += instance(rnd.random() < 0.7)[0]
            out += bytes(rnd.choice(_PAD) for _ in range(6))
            samples.append((f"la{i}-{k}", bytes(out)))
    found = _compare(tmp_path, sigs, samples)
    assert 20 <= len(found) < len(samples)


@pytest.mark.skipif(shutil.which("x86_64-w64-mingw32-gcc") is None, reason="no mingw-w64")
def test_macro_groups_stay_in_their_target_in_a_pe_like_clamscan(tmp_path):
    # A PE is matched against ClamAV's generic (target 0) and PE (target 1) signature sets,
    # each with macro groups of its own: members of target 1 never serve a target 0 signature.
    # (Logical signatures of target 1 with a macro crash clamscan 1.4.6 on a PE: its dummy
    # pattern for the macro matches two zero bytes and reads a table that set lacks.)
    marker, member = b"lmsav-ldb-pe-marker", b"lmsav-macro-member"
    sample = _build_pe(tmp_path, ["-O0"]) + (b"\0" * 16 + marker + b"\0" * 4 + member) * 2
    gap = len(marker) + 4
    ndb = [f"Pe.Member:1:$2$:{member.hex()}", f"Any.Member:0:$3$:{member.hex()}"]
    sigs = [f"Any.Macro;Engine:81-255,Target:0;0&1;{marker.hex()};${{{gap}-{gap}}}3$",
            f"Any.Other.Target;Engine:81-255,Target:0;0&1;{marker.hex()};${{{gap}-{gap}}}2$"]
    dbdir = tmp_path / "db"
    dbdir.mkdir()
    (dbdir / "m.ndb").write_text("\n".join(ndb) + "\n")
    (dbdir / "m.ldb").write_text("\n".join(sigs) + "\n")
    files = tmp_path / "samples"
    files.mkdir()
    (files / "prog.exe").write_bytes(sample)
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "--bytecode=no", "-d", str(dbdir),
         str(files)], capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    clam = {line.rsplit(": ", 1)[1].removesuffix(" FOUND").removesuffix(".UNOFFICIAL")
            for line in proc.stdout.splitlines() if line.endswith(" FOUND")}
    ours = {name for _, name in _database_names(dbdir, tmp_path, [("prog.exe", sample)])}
    assert ours == clam == {"Any.Macro"}
