"""Hash signatures (.hdb .hsb) and allow-lists (.fp .sfp), stored as size-sorted tables.

The compiled form is a few flat arrays per digest algorithm — sizes (uint64), digests (fixed
width) and name ids (uint32) — sorted by (size, digest), plus a table for ``*`` size entries.
Loaded through memoryviews over the database's mmap, a million signatures cost no parsing and
almost no resident memory, and "does any signature have this size?" is one C-level bisect, so
files of other sizes are never hashed.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from dataclasses import dataclass

from .errors import SignatureError

ALGOS = {16: "md5", 20: "sha1", 32: "sha256"}
_HEX = frozenset("0123456789abcdefABCDEF")
WILDCARD = -1


@dataclass(frozen=True, slots=True)
class HashSig:
    digest: bytes
    size: int  # WILDCARD for "*"
    name: str
    source: str


# The ClamAV functionality level whose signature features lmsav implements.
FUNCTIONALITY_LEVEL = 216


def parse_hash_file(text: str, source: str, allow_wildcard: bool) -> list[HashSig]:
    """Parse ``digest:size:name[:flevel…]`` lines (.hdb .hsb .fp .sfp)."""
    sigs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) < 3:
            raise SignatureError(source, lineno, "expected HASH:SIZE:NAME")
        hexdigest, size_text, name = fields[0].strip(), fields[1].strip(), fields[2].strip()
        if len(hexdigest) not in (32, 40, 64) or not set(hexdigest) <= _HEX:
            raise SignatureError(
                source, lineno, f"bad hash {hexdigest!r}: need 32, 40 or 64 hex digits"
            )
        if size_text == "*":
            if not allow_wildcard:
                raise SignatureError(source, lineno, "size '*' is only allowed in .hsb/.sfp")
            size = WILDCARD
        elif size_text.isdigit():
            size = int(size_text)
        else:
            raise SignatureError(source, lineno, f"bad size {size_text!r}: need a number or '*'")
        if not name:
            raise SignatureError(source, lineno, "empty signature name")
        if len(fields) > 3 and fields[3].strip():
            if not fields[3].strip().isdigit():
                raise SignatureError(source, lineno, f"bad functionality level {fields[3]!r}")
            if int(fields[3]) > FUNCTIONALITY_LEVEL:
                continue  # written for a newer engine than ours: skipped, as ClamAV does
        sigs.append(HashSig(bytes.fromhex(hexdigest), size, name, source))
    return sigs


# -- compiled tables ---------------------------------------------------------------------------

def compile_hashes(sigs: list[HashSig], prefix: str) -> dict[str, bytes]:
    """Turn signatures into named binary sections (``<prefix>.<algo>.sizes`` …)."""
    sections: dict[str, bytes] = {}
    names: list[bytes] = []
    name_ids: dict[tuple[str, str], int] = {}
    by_algo: dict[int, list[tuple[int, bytes, int]]] = {16: [], 20: [], 32: []}
    wild: dict[int, list[tuple[bytes, int]]] = {16: [], 20: [], 32: []}
    for sig in sigs:
        key = (sig.name, sig.source)
        nid = name_ids.get(key)
        if nid is None:
            nid = name_ids[key] = len(names)
            names.append(f"{sig.name}\t{sig.source}".encode())
        width = len(sig.digest)
        if sig.size == WILDCARD:
            wild[width].append((sig.digest, nid))
        else:
            by_algo[width].append((sig.size, sig.digest, nid))
    for width, rows in by_algo.items():
        rows.sort()
        algo = ALGOS[width]
        sections[f"{prefix}.{algo}.sizes"] = struct.pack(f"<{len(rows)}Q", *(r[0] for r in rows))
        sections[f"{prefix}.{algo}.digests"] = b"".join(r[1] for r in rows)
        sections[f"{prefix}.{algo}.ids"] = struct.pack(f"<{len(rows)}I", *(r[2] for r in rows))
        wrows = sorted(wild[width])
        sections[f"{prefix}.{algo}.wdigests"] = b"".join(r[0] for r in wrows)
        sections[f"{prefix}.{algo}.wids"] = struct.pack(f"<{len(wrows)}I", *(r[1] for r in wrows))
    offsets = [0]
    for n in names:
        offsets.append(offsets[-1] + len(n))
    sections[f"{prefix}.names"] = b"".join(names)
    sections[f"{prefix}.nameoffs"] = struct.pack(f"<{len(offsets)}Q", *offsets)
    return sections


class _Table:
    """One algorithm's sorted table, read in place from memoryviews."""

    __slots__ = ("width", "sizes", "digests", "ids", "wdigests", "wids", "count", "wcount")

    def __init__(self, width, sizes, digests, ids, wdigests, wids):
        self.width = width
        self.sizes = sizes.cast("Q")
        self.digests = digests
        self.ids = ids.cast("I")
        self.wdigests = wdigests
        self.wids = wids.cast("I")
        self.count = len(self.sizes)
        self.wcount = len(self.wids)

    def has_size(self, size: int) -> bool:
        if self.wcount:
            return True
        if not self.count:
            return False
        i = bisect.bisect_left(self.sizes, size)
        return i < self.count and self.sizes[i] == size

    def find(self, size: int, digest: bytes) -> int | None:
        """Name id of a signature with this size and digest, or None."""
        w = self.width
        if self.count:
            lo = bisect.bisect_left(self.sizes, size)
            hi = bisect.bisect_right(self.sizes, size, lo)
            hit = _bisect_digest(self.digests, w, lo, hi, digest)
            if hit is not None:
                return self.ids[hit]
        if self.wcount:
            hit = _bisect_digest(self.wdigests, w, 0, self.wcount, digest)
            if hit is not None:
                return self.wids[hit]
        return None


def _bisect_digest(blob, width: int, lo: int, hi: int, digest: bytes) -> int | None:
    while lo < hi:
        mid = (lo + hi) // 2
        cur = blob[mid * width:(mid + 1) * width].tobytes()  # memoryviews do not order
        if cur < digest:
            lo = mid + 1
        elif cur > digest:
            hi = mid
        else:
            return mid
    return None


class HashMatcher:
    """Looks up file digests in the compiled tables; hashes only sizes some signature names."""

    def __init__(self, section, prefix: str):
        self.tables = []
        for width, algo in ALGOS.items():
            t = _Table(
                width,
                section(f"{prefix}.{algo}.sizes"),
                section(f"{prefix}.{algo}.digests"),
                section(f"{prefix}.{algo}.ids"),
                section(f"{prefix}.{algo}.wdigests"),
                section(f"{prefix}.{algo}.wids"),
            )
            if t.count or t.wcount:
                self.tables.append((algo, t))
        self._names = section(f"{prefix}.names")
        self._nameoffs = section(f"{prefix}.nameoffs").cast("Q")
        self.count = sum(t.count + t.wcount for _, t in self.tables)

    def wants(self, size: int) -> bool:
        """True if some signature could match a file of this size (the hot-path gate)."""
        for _, t in self.tables:
            if t.has_size(size):
                return True
        return False

    def match(self, data, size: int) -> list[tuple[str, str]]:
        """(name, source) of every signature whose digest and size match ``data``."""
        found = []
        for algo, t in self.tables:
            if not t.has_size(size):
                continue
            digest = hashlib.new(algo, data).digest()
            nid = t.find(size, digest)
            if nid is not None:
                found.append(self.name(nid))
        return found

    def name(self, nid: int) -> tuple[str, str]:
        raw = bytes(self._names[self._nameoffs[nid]:self._nameoffs[nid + 1]]).decode()
        name, _, source = raw.partition("\t")
        return name, source
