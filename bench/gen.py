"""Generators of large, realistic signature sets for the benchmarks (seeded, reproducible)."""

from __future__ import annotations

import random
from pathlib import Path


def _hex(rnd: random.Random, n: int) -> str:
    return rnd.randbytes(n).hex()


def ndb_body(rnd: random.Random) -> str:
    """A body in the shape of real ClamAV .ndb signatures: mostly static hex, some wildcards."""
    kind = rnd.random()
    if kind < 0.80:
        return _hex(rnd, rnd.randint(16, 64))
    left, right = _hex(rnd, rnd.randint(8, 24)), _hex(rnd, rnd.randint(8, 24))
    if kind < 0.88:
        return f"{left}????{right}"
    if kind < 0.94:
        return f"{left}{{{rnd.randint(0, 8)}-{rnd.randint(9, 32)}}}{right}"
    return f"{left}*{right}"


def write_ndb_sigs(path: Path, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(count):
            target = 0 if rnd.random() < 0.7 else 1
            fh.write(f"Bench.Body.{i}:{target}:*:{ndb_body(rnd)}\n")


def write_hash_sigs(path: Path, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(count):
            fh.write(f"{_hex(rnd, 16)}:{rnd.randint(100, 5_000_000)}:Bench.Hash.{i}\n")
