"""Differential test: the same .ndb signatures and samples through clamscan and BodyMatcher."""

from __future__ import annotations

import random
import shutil
import subprocess

import pytest

from lmsav.scanner import filetype
from lmsav.scanner.signatures import body
from lmsav.scanner.signatures.subject import Subject

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None, reason="clamscan not installed"),
]


def _static(rnd: random.Random, low: int, high: int) -> tuple:
    return ("lit", rnd.randbytes(rnd.randint(low, high)))


def _construct(rnd: random.Random, bounded: bool) -> tuple:
    kind = rnd.choice(["any", "hi", "lo", "fixed", "upto", "range", "alt", "neg", "negw"]
                      + ([] if bounded else ["star", "atleast"]))
    if kind == "any":
        return ("any", rnd.randint(1, 3))
    if kind in ("hi", "lo"):
        return (kind, rnd.randrange(256))
    if kind == "fixed":
        n = rnd.randint(1, 6)
        return ("gap", n, n, f"{{{n}}}")
    if kind == "upto":
        n = rnd.randint(1, 8)
        return ("gap", 0, n, f"{{-{n}}}")
    if kind == "range":
        lo = rnd.randint(0, 4)
        hi = lo + rnd.randint(1, 6)
        return ("gap", lo, hi, f"{{{lo}-{hi}}}")
    if kind == "star":
        return ("gap", 0, None, "*")
    if kind == "atleast":
        n = rnd.randint(1, 5)
        return ("gap", n, None, f"{{{n}-}}")
    if kind == "alt":
        width = rnd.choice([1, 2])
        return ("alt", [rnd.randbytes(width) for _ in range(rnd.randint(2, 3))])
    if kind == "neg":
        return ("neg", [rnd.randbytes(1) for _ in range(rnd.randint(1, 3))])
    return ("neg", [rnd.randbytes(2) for _ in range(2)])


def _hexsig(elements) -> str:
    out = []
    for e in elements:
        if e[0] == "lit":
            out.append(e[1].hex())
        elif e[0] == "any":
            out.append("??" * e[1])
        elif e[0] == "hi":
            out.append(f"{e[1] >> 4:x}?")
        elif e[0] == "lo":
            out.append(f"?{e[1] & 15:x}")
        elif e[0] == "gap":
            out.append(e[3])
        elif e[0] == "alt":
            out.append("(" + "|".join(a.hex() for a in e[1]) + ")")
        else:
            out.append("!(" + "|".join(a.hex() for a in e[1]) + ")")
    return "".join(out)


def _instance(rnd: random.Random, elements, spoil: int | None = None) -> bytes:
    """Bytes matching the elements; with ``spoil``, element number ``spoil`` is made to miss."""
    out = bytearray()
    for i, e in enumerate(elements):
        bad = i == spoil
        if e[0] == "lit":
            lit = bytearray(e[1])
            if bad:
                lit[len(lit) // 2] ^= 0x5A
            out += lit
        elif e[0] == "any":
            out += rnd.randbytes(e[1] - (1 if bad else 0))  # one byte short
        elif e[0] in ("hi", "lo"):
            nib = rnd.randrange(16)
            b = (e[1] & 0xF0 | nib) if e[0] == "hi" else (nib << 4 | e[1] & 0x0F)
            out.append(b ^ (0x80 if e[0] == "hi" else 0x08) if bad else b)
        elif e[0] == "gap":
            lo, hi = e[1], e[2]
            if bad:
                n = hi + 1 if hi is not None else max(lo - 1, 0)
            else:
                n = rnd.randint(lo, hi if hi is not None else lo + 12)
            out += bytes(rnd.choice(b"\x01\x02\x03\x04\x05") for _ in range(n))
        elif e[0] == "alt":
            choice = rnd.choice(e[1])
            out += bytes([choice[0] ^ 0xFF]) + choice[1:] if bad and choice[0] ^ 0xFF not in {
                a[0] for a in e[1]} else choice
        else:
            width = len(e[1][0])
            if bad:
                out += rnd.choice(e[1])
            else:
                while True:
                    cand = rnd.randbytes(width)
                    if cand not in e[1]:
                        break
                out += cand
    return bytes(out)


def _max_len(elements) -> int:
    total = 0
    for e in elements:
        if e[0] == "lit":
            total += len(e[1])
        elif e[0] == "any":
            total += e[1]
        elif e[0] in ("hi", "lo"):
            total += 1
        elif e[0] == "gap":
            total += e[2] + 1
        elif e[0] == "alt":
            total += max(len(a) for a in e[1])
        else:
            total += len(e[1][0])
    return total


def _generate(seed: int = 4242):
    rnd = random.Random(seed)
    sigs, samples = [], []
    for i in range(40):
        where = rnd.random()
        kind = "any" if where < 0.55 else ("start" if where < 0.78 else "eof")
        bounded = kind == "eof"
        elements = [_static(rnd, 3, 6)]
        for _ in range(rnd.randint(1, 3)):
            elements.append(_construct(rnd, bounded))
            elements.append(_static(rnd, 2, 5))
        name = f"Diff.Sig.{i}"
        n = m = 0
        if kind == "any":
            offset = "*"
        elif kind == "start":
            n, m = rnd.randint(0, 40), rnd.choice([0, 0, rnd.randint(1, 10)])
            offset = f"{n},{m}" if m else str(n)
        else:
            n, m = _max_len(elements) + rnd.randint(0, 12), rnd.choice([0, rnd.randint(1, 6)])
            offset = f"EOF-{n},{m}" if m else f"EOF-{n}"
        sigs.append(f"{name}:0:{offset}:{_hexsig(elements)}")

        def place(inst: bytes, shift: int = 0) -> bytes:
            # Binary filler (a NUL up front) keeps clamscan from treating samples as text.
            filler = lambda k: bytes(rnd.choice(b"\x00\x10\x20\x30\xee\xfe") for _ in range(k))
            if kind == "any":
                return b"\x00" + filler(rnd.randint(0, 60)) + inst + filler(rnd.randint(0, 60))
            if kind == "start":
                pre = n + rnd.randint(0, m) + shift
                return b"\x00" * min(pre, 1) + filler(pre - min(pre, 1)) + inst + filler(20)
            room = n - len(inst)  # start at size-n+k, k in [0, min(m, room)]
            k = rnd.randint(0, max(0, min(m, room)))
            tail = n - k - len(inst) - shift
            return b"\x00" + filler(rnd.randint(0, 30)) + inst + filler(max(tail, 0))

        samples.append((f"hit-{i}", place(_instance(rnd, elements))))
        spoil = rnd.choice([j for j, e in enumerate(elements) if e[0] != "gap" or e[2] is not None])
        samples.append((f"near-{i}", place(_instance(rnd, elements, spoil))))
        if kind == "start" and i % 2 == 0:
            samples.append((f"late-{i}", place(_instance(rnd, elements), shift=m + 1)))
        if kind == "eof" and i % 2 == 0:
            samples.append((f"early-{i}", place(_instance(rnd, elements), shift=-(m + 1))))
    for j in range(6):
        samples.append((f"clean-{j}", b"\x00" + rnd.randbytes(rnd.randint(10, 4000))))
    return sigs, samples


def _typed_cases():
    """A couple of signatures restricted to PE and ELF, with files of both types."""
    sigs = [
        "Diff.Pe:1:*:6c6d7361762d70652d626f6479",
        "Diff.Elf:6:*:6c6d7361762d656c662d626f6479",
    ]
    pe = bytearray(512)
    pe[0:2] = b"MZ"
    pe[0x3C:0x40] = (0x80).to_bytes(4, "little")
    pe[0x80:0x84] = b"PE\0\0"
    elf = bytearray(b"\x7fELF\x02\x01\x01" + b"\0" * 249)
    samples = []
    for label, head in (("pe", bytes(pe)), ("elf", bytes(elf)), ("bin", b"\x00" * 256)):
        samples.append((f"typed-{label}-pe", head + b"lmsav-pe-body" + b"\0" * 16))
        samples.append((f"typed-{label}-elf", head + b"lmsav-elf-body" + b"\0" * 16))
    return sigs, samples


def _clamscan(ndb, directory) -> set[tuple[str, str]]:
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "-d", str(ndb), str(directory)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode in (0, 1), proc.stderr
    found = set()
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, name = line[: -len(" FOUND")].rpartition(": ")
            found.add((path.rsplit("/", 1)[-1], name.removesuffix(".UNOFFICIAL")))
    return found


def _lmsav(ndb_text: str, samples) -> set[tuple[str, str]]:
    matcher = body.BodyMatcher.from_blob(body.compile_body(body.parse_ndb(ndb_text, "d.ndb")))
    found = set()
    for name, data in samples:
        ftype = filetype.sniff(data, len(data))
        found |= {(name, hit) for hit, _ in matcher.match(Subject(data, len(data), ftype))}
    return found


def _compare(tmp_path, sigs, samples):
    text = "\n".join(sigs) + "\n"
    ndb = tmp_path / "diff.ndb"
    ndb.write_text(text)
    directory = tmp_path / "samples"
    directory.mkdir()
    for name, data in samples:
        (directory / name).write_bytes(data)
    clam = _clamscan(ndb, directory)
    ours = _lmsav(text, samples)
    assert ours == clam, (
        f"only lmsav: {sorted(ours - clam)}\nonly clamscan: {sorted(clam - ours)}\n{text}"
    )
    return clam


def test_generated_signatures_agree_with_clamscan(tmp_path):
    sigs, samples = _generate()
    assert len(sigs) == 40 and len(samples) >= 60
    found = _compare(tmp_path, sigs, samples)
    # The test is only worth something if both hits and misses occur.
    assert len(found) >= 30
    assert len({name for name, _ in found}) < len(samples)


def test_pe_and_elf_targets_agree_with_clamscan(tmp_path):
    sigs, samples = _typed_cases()
    found = _compare(tmp_path, sigs, samples)
    assert ("typed-pe-pe", "Diff.Pe") in found and ("typed-elf-elf", "Diff.Elf") in found


# -- anchored bytes ----------------------------------------------------------------------------
# ``aa[n-m]core`` and ``core[n-m]aa``: one byte n…m bytes before or after a sub-pattern's core,
# the match (and so its offset) starting at the core. ClamAV never checks a ``??`` or a
# high-nibble anchor; it checks a low-nibble one.

# Binary filler (text would be scanned again, normalised), never an anchor byte below: low
# nibbles 2-5, where anchors have a-f, 0 and 1. The head keeps clamscan from reading a sample
# as ASCII or UTF-16 text.
_PAD = b"\xe2\xe3\xe4\xe5\xf2\xf3\xf4\xf5\x82\x93"
_BINARY = b"\x00\x01\x00\x01\x00\x01"


def _anchor_byte(rnd: random.Random) -> tuple[str, bytes, bytes]:
    """(hex pair, a byte it takes, a byte it refuses)."""
    kind = rnd.choice(["byte", "byte", "byte", "low", "high", "any"])
    value = rnd.choice(b"JKLMNOPQ")
    if kind == "low":
        return f"?{value & 15:x}", bytes([value ^ 0x30]), bytes([value ^ 0x01])
    if kind == "high":  # unchecked: the refused byte matches all the same
        return f"{value >> 4:x}?", bytes([value]), b"\x99"
    if kind == "any":
        return "??", bytes([value]), b"\x99"
    return f"{value:02x}", bytes([value]), b"\x99"


def _anchor_signature(rnd: random.Random, i: int):
    """A signature and a function making (hit?) instances: (bytes, where the core starts)."""
    core = bytes(rnd.choice(b"abcdefgh") for _ in range(3)) + bytes([0x61 + i % 26])
    n = rnd.randint(0, 3)
    m = n + rnd.randint(0, 3)
    left = rnd.random() < 0.5
    pair, good, bad = _anchor_byte(rnd)
    tail = rnd.choice(["", "", f"{{2-4}}{b'zz'.hex()}", f"*{b'yy'.hex()}"])
    tail_bytes = {"": b"", "*": b"\x01\x02yy"}.get(tail[:1], b"\x01\x02\x03zz")
    hexsig = (f"{pair}[{n}-{m}]{core.hex()}" if left else f"{core.hex()}[{n}-{m}]{pair}") + (
        tail if left else "")

    def instance(hit: bool, edge: bool = False) -> tuple[bytes, int]:
        gap = rnd.randint(n, m) if hit else m + 1
        mark = good if hit or rnd.random() < 0.5 else bad
        if not hit and mark == bad:
            gap = rnd.randint(n, m)
        filler = bytes(rnd.choice(_PAD) for _ in range(gap))
        if edge:  # the anchored byte would lie before the file's start or after its end
            return (core + tail_bytes, 0) if left else (core + filler, 0)
        if left:
            return mark + filler + core + tail_bytes, 1 + gap
        return core + filler + mark, 0
    return hexsig, instance, left


def _anchor_cases(seed: int = 77):
    rnd = random.Random(seed)
    sigs, samples = [], []
    for i in range(30):
        hexsig, instance, left = _anchor_signature(rnd, i)
        where = rnd.choice(["*", "*", "start", "eof"])
        for k, hit in enumerate([True, False, True, False]):
            data, at = instance(hit)
            head = bytes(rnd.choice(_PAD) for _ in range(rnd.randint(4, 12)))
            sample = _BINARY + head + data + bytes(rnd.choice(_PAD) for _ in range(6))
            samples.append((f"anchor-{i}-{k}", sample))
            if k == 0:  # the offset names the core's start in the first sample
                start = len(_BINARY) + len(head) + at
                offset = {"*": "*", "start": f"{start}",
                          "eof": f"EOF-{len(sample) - start}"}[where]
        sigs.append(f"Diff.Anchor.{i}:0:{offset}:{hexsig}")
        data, _ = instance(True, edge=True)
        pad = bytes(rnd.choice(_PAD) for _ in range(8))
        samples.append((f"anchor-{i}-edge", data + pad + _BINARY if left else _BINARY + pad + data))
    return sigs, samples


def test_anchored_bytes_agree_with_clamscan(tmp_path):
    sigs, samples = _anchor_cases()
    found = _compare(tmp_path, sigs, samples)
    hits = {name for name, _ in found}
    assert len(found) >= 25 and len(hits) < len(samples)


# -- what ClamAV refuses -----------------------------------------------------------------------
# A database with one of these lines is refused whole by ClamAV (or taken, for the others):
# anchors next to anything but one byte at a sub-pattern's edge, sub-patterns too short or
# without two consecutive fixed bytes, plain patterns under three bytes for the Boyer-Moore
# matcher, and for the prefiltered targets 0, 1, 4 and 7 a marker or multi-byte alternative
# among a sub-pattern's first elements.

ACCEPTANCE_LINES = [
    "T:0:*:4142[3]43", "T:0:*:41[1-2]4243[3-4]44", "T:0:*:41[1-2]42[1-2]4344",
    "T:0:*:4142[1-2]43[1-2]44", "T:0:*:41[1-2]42", "T:0:*:[1-2]4142", "T:0:*:41[0-33]4243",
    "T:0:*:41[ 1-2]4243", "T:0:*:41[1-2x]4243", "T:0:*:41[-1]4243", "T:0:*:414243[1-2]4445",
    "T:0:*:4142*43[1-2]4445", "T:0:*:??[1-2]4243", "T:0:*:(41|42)[1-2]4344",
    "T:0:*:41[1-2](B)4243", "T:0:*:{1}[1-2]4142", "T:0:*:41[1-2]4243{30-40}44",
    "T:0:*:41(B)4243", "T:0:*:4142(B)43", "T:0:*:41(4243|4445)4647", "T:0:*:(4243|4445)4647",
    "T:0:*:(4243|4445)46", "T:3:*:(4243|4445)46", "T:0:*:41(42|4?)44", "T:3:*:41(B)4243",
    "T:2:*:41(B)4243", "T:4:*:41(B)4243", "T:7:*:41(L)4243", "T:1:*:41(W)4243",
    "T:0:*:4142*43(B)4445", "T:0:*:??(B)4142", "T:0:*:(42|43)(4243|4445)4647",
    "T:0:*:4142!(B)43", "T:0:*:41(42|43)4445", "T:0:*:41(42|43)44", "T:0:*:41??42",
    "T:0:*:4142", "T:1:*:4142", "T:1:0:4142", "T:1:0,4:4142", "T:2:*:4142", "T:0:EOF-2:4142",
    "T:0:*:4142*(B)*4344", "T:0:*:4142**4344", "T:0:$0$:4142", "T:0:$0$:41(B)4243",
    "T:15:*:41",
]


def _accepted_by_clamscan(ext: str, line: str, tmp_path) -> bool:
    dbdir = tmp_path / "accept"
    dbdir.mkdir(exist_ok=True)
    for old in dbdir.iterdir():
        old.unlink()
    (dbdir / f"t.{ext}").write_text(line + "\n")
    sample = tmp_path / "accept-sample"
    sample.write_bytes(b"\x00\x01\x00\x01\x00\x01 nothing to find")
    proc = subprocess.run(["clamscan", "--no-summary", "--bytecode=no", "-d", str(dbdir),
                           str(sample)], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode == 0


def _accepted_by_lmsav(line: str) -> bool:
    from lmsav.scanner.signatures.errors import SignatureError

    try:
        body.compile_body(body.parse_ndb(line + "\n", "t.ndb"))
    except SignatureError:
        return False
    return True


def test_refused_patterns_agree_with_clamscan(tmp_path):
    clam = {line: _accepted_by_clamscan("ndb", line, tmp_path) for line in ACCEPTANCE_LINES}
    ours = {line: _accepted_by_lmsav(line) for line in ACCEPTANCE_LINES}
    assert ours == clam, [line for line in ACCEPTANCE_LINES if ours[line] != clam[line]]
    assert 10 < sum(clam.values()) < len(clam) - 10
