"""Hash signatures (.hdb .hsb) and allow-lists (.fp .sfp), stored as size-sorted tables.

The compiled form is a few flat arrays per digest algorithm — sizes (uint64), digests (fixed
width) and name ids (uint32) — sorted by (size, digest), plus a table for ``*`` size entries.
Loaded through memoryviews over the database's mmap, millions of signatures cost no parsing and
almost no resident memory, and "does any signature have this size?" is one C-level bisect, so
files of other sizes are never hashed.

ClamAV's official database holds millions of hash lines, so building is columnar: files are
read in blocks and parsed with numpy (imported only to build, never to scan); a line the
vectorised parser cannot take as it stands (spaces, extra fields, an error) goes through the
line parser, which gives the exact result or error.
"""

from __future__ import annotations

import bisect
import hashlib
from dataclasses import dataclass

from .errors import SignatureError
from .levels import FUNCTIONALITY_LEVEL

ALGOS = {16: "md5", 20: "sha1", 32: "sha256"}
_HEX = frozenset("0123456789abcdefABCDEF")
WILDCARD = -1

# Field order of a line: file hashes (.hdb .hsb .fp .sfp) put the digest first, PE section
# hashes (.mdb .msb) the size; the compiled tables are the same.
HASH_FIRST, SIZE_FIRST = "hash:size", "size:hash"

BLOCK = 16 << 20  # bytes of signature text parsed at once: bounds the builder's scratch memory
FENCE = 512  # rows of the sizes column per fence entry: one 4 KiB page of uint64


@dataclass(frozen=True, slots=True)
class HashSig:
    digest: bytes
    size: int  # WILDCARD for "*"
    name: str
    source: str


def parse_hash_file(text: str, source: str, allow_wildcard: bool,
                    layout: str = HASH_FIRST) -> list[HashSig]:
    """Parse ``digest:size:name[:flevel…]`` lines (.hdb .hsb .fp .sfp)."""
    sigs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        sig = parse_hash_line(line, source, lineno, allow_wildcard, layout)
        if isinstance(sig, HashSig):
            sigs.append(sig)
    return sigs


def parse_hash_line(line: str, source: str, lineno: int, allow_wildcard: bool,
                    layout: str = HASH_FIRST) -> HashSig | str | None:
    """One line: a HashSig, None for a blank line or comment, or the reason it is skipped."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    fields = line.split(":")
    if len(fields) < 3:
        expected = "HASH:SIZE:NAME" if layout == HASH_FIRST else "SIZE:HASH:NAME"
        raise SignatureError(source, lineno, f"expected {expected}")
    first, second, name = fields[0].strip(), fields[1].strip(), fields[2].strip()
    hexdigest, size_text = (first, second) if layout == HASH_FIRST else (second, first)
    if len(hexdigest) not in (32, 40, 64) or not set(hexdigest) <= _HEX:
        raise SignatureError(
            source, lineno, f"bad hash {hexdigest!r}: need 32, 40 or 64 hex digits"
        )
    if size_text == "*":
        if not allow_wildcard:
            raise SignatureError(source, lineno, "size '*' is only allowed in .hsb/.sfp")
        size = WILDCARD
    elif size_text.isdigit() and size_text.isascii():
        size = int(size_text)
        if size >= 1 << 63:
            raise SignatureError(source, lineno, f"bad size {size_text!r}: too large")
    else:
        raise SignatureError(source, lineno, f"bad size {size_text!r}: need a number or '*'")
    if not name:
        raise SignatureError(source, lineno, "empty signature name")
    if len(fields) > 3 and fields[3].strip():
        level = fields[3].strip()
        if not (level.isdigit() and level.isascii()):
            raise SignatureError(source, lineno, f"bad functionality level {fields[3]!r}")
        if int(level) > FUNCTIONALITY_LEVEL:
            # Written for a newer engine than ours: skipped, as ClamAV does.
            return f"{source}:{lineno}: {name}: needs engine level {int(level)} " \
                   f"(lmsav: {FUNCTIONALITY_LEVEL})"
    return HashSig(bytes.fromhex(hexdigest), size, name, source)


# -- compiled tables ---------------------------------------------------------------------------

def compile_hashes(sigs: list[HashSig], prefix: str) -> dict[str, bytes]:
    """Turn parsed signatures into named binary sections (``<prefix>.<algo>.sizes`` …)."""
    builder = HashTableBuilder(prefix)
    for sig in sigs:
        builder.add_sig(sig)
    return builder.sections()


def parse_hash_columns(text: str | bytes, source: str, allow_wildcard: bool,
                       layout: str = HASH_FIRST) -> tuple[HashTableBuilder, list[str]]:
    """One file's signatures as columns (``len()`` is their number) and its skipped lines;
    the columnar counterpart of parse_hash_file for databases of millions of lines."""
    columns = HashTableBuilder("")
    columns.add_text(text, source, allow_wildcard, layout)
    return columns, columns.skipped


def compile_hash_columns(parts, prefix: str) -> dict[str, bytes]:
    """Sections of every file's columns together (the output of parse_hash_columns)."""
    builder = HashTableBuilder(prefix)
    for part in parts:
        builder.extend(part)
    return builder.sections()


class HashTableBuilder:
    """Collects hash signatures file by file into columns; ``sections()`` sorts and packs them.

    Memory stays near the size of the compiled tables (about 40 bytes a signature plus its
    name), never a Python object per line, so tens of millions of signatures compile in one
    process. Name ids follow the order signatures were added; each source file owns one
    contiguous range of ids, so names are stored without their file's name.
    """

    def __init__(self, prefix: str):
        import numpy

        self._np = numpy
        self.prefix = prefix
        self.count = 0
        self.skipped: list[str] = []
        # width → list of (sizes int64 with WILDCARD, digests uint8[n, width], ids uint32)
        self._rows: dict[int, list[tuple]] = {w: [] for w in ALGOS}
        self._names: list = []  # uint8 arrays, concatenated names
        self._name_lengths: list = []  # int64 arrays
        self._sources: list[tuple[int, str]] = []  # (first id, file name)
        self._pending: list[HashSig] = []  # add_sig() batches

    # -- input -----------------------------------------------------------------------------
    def add_file(self, path, source: str, allow_wildcard: bool,
                 layout: str = HASH_FIRST) -> int:
        """Add every signature of one file, read block by block. Returns how many were added."""
        before = self.count
        self._begin(source)
        line0, carry = 1, b""
        with open(path, "rb") as fh:
            while True:
                block = fh.read(BLOCK)
                if not block:
                    break
                block = carry + block
                cut = block.rfind(b"\n") + 1
                if cut == 0:  # one line longer than a block: keep reading it
                    carry = block
                    continue
                carry = block[cut:]
                line0 = self._add_block(block[:cut], source, line0, allow_wildcard, layout)
        if carry:
            self._add_block(carry + b"\n", source, line0, allow_wildcard, layout)
        return self.count - before

    def add_text(self, text: str | bytes, source: str, allow_wildcard: bool,
                 layout: str = HASH_FIRST) -> int:
        """Add every signature of one file's contents. Returns how many were added."""
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else bytes(text)
        before = self.count
        self._begin(source)
        line0, start = 1, 0
        while start < len(data):
            end = data.rfind(b"\n", start, start + BLOCK) + 1
            if end <= start:
                end = data.find(b"\n", start + BLOCK) + 1 or len(data)
            block = data[start:end]
            if not block.endswith(b"\n"):
                block += b"\n"
            line0 = self._add_block(block, source, line0, allow_wildcard, layout)
            start = end
        return self.count - before

    def add_sig(self, sig: HashSig) -> None:
        """Add one parsed signature (small inputs, tests); batched into columns."""
        if not self._sources or self._sources[-1][1] != sig.source:
            self._begin(sig.source)
        self._pending.append(sig)
        if len(self._pending) >= 65536:
            self._flush_pending()

    def extend(self, other: HashTableBuilder) -> None:
        """Take over another builder's signatures (its ids follow this builder's)."""
        self._flush_pending()
        other._flush_pending()
        shift = self.count
        for width, parts in other._rows.items():
            self._rows[width] += [(sizes, digests, ids + shift) for sizes, digests, ids in parts]
        self._names += other._names
        self._name_lengths += other._name_lengths
        self._sources += [(start + shift, source) for start, source in other._sources]
        self.skipped += other.skipped
        self.count += other.count
        other._rows, other._names, other._name_lengths = {w: [] for w in ALGOS}, [], []

    def __len__(self) -> int:
        return self.count + len(self._pending)

    # -- output ----------------------------------------------------------------------------
    def sections(self) -> dict[str, bytes]:
        """Sorted tables as named sections (bytes-like: numpy buffers, not copied again)."""
        np = self._np
        self._flush_pending()
        p = self.prefix
        out: dict[str, bytes] = {}
        for width, algo in ALGOS.items():
            parts = self._rows[width]
            self._rows[width] = []
            if parts:
                sizes = np.concatenate([x[0] for x in parts])
                digests = np.concatenate([x[1] for x in parts])
                ids = np.concatenate([x[2] for x in parts])
            else:
                sizes = np.zeros(0, np.int64)
                digests = np.zeros((0, width), np.uint8)
                ids = np.zeros(0, np.uint32)
            del parts
            # One copy of a column at a time: tens of millions of rows stay within memory.
            wild = sizes == WILDCARD
            wdigests, wids = digests[wild], ids[wild]
            if len(wids):
                fixed = ~wild
                sizes, digests, ids = sizes[fixed], digests[fixed], ids[fixed]
            del wild
            order = _sort_order(np, sizes, digests)
            sizes = sizes[order].astype("<u8")
            out[f"{p}.{algo}.sizes"] = _buf(sizes)
            out[f"{p}.{algo}.fence"] = _buf(np.ascontiguousarray(sizes[::FENCE]))
            del sizes
            out[f"{p}.{algo}.digests"] = _buf(digests[order])
            del digests
            out[f"{p}.{algo}.ids"] = _buf(ids[order].astype("<u4"))
            del ids, order
            worder = _sort_order(np, np.zeros(len(wids), np.int64), wdigests)
            out[f"{p}.{algo}.wdigests"] = _buf(wdigests[worder])
            out[f"{p}.{algo}.wids"] = _buf(wids[worder].astype("<u4"))
        lengths = (np.concatenate(self._name_lengths) if self._name_lengths
                   else np.zeros(0, np.int64))
        offsets = np.zeros(len(lengths) + 1, "<u8")
        np.cumsum(lengths, out=offsets[1:])
        names = np.concatenate(self._names) if self._names else np.zeros(0, np.uint8)
        self._names, self._name_lengths = [], []
        out[f"{p}.names"] = _buf(names)
        out[f"{p}.nameoffs"] = _buf(offsets)
        out[f"{p}.sourcestarts"] = _buf(np.array([s for s, _ in self._sources], "<u8"))
        out[f"{p}.sourcenames"] = "\n".join(n for _, n in self._sources).encode()
        return out

    # -- internals -------------------------------------------------------------------------
    def _begin(self, source: str) -> None:
        self._flush_pending()
        if "\n" in source:
            raise ValueError(f"source name with a newline: {source!r}")
        self._sources.append((self.count, source))

    def _flush_pending(self) -> None:
        if self._pending:
            sigs, self._pending = self._pending, []
            self._append_sigs(sigs)

    def _append_sigs(self, sigs: list[HashSig]) -> None:
        """Rows from parsed signatures (the line parser's output), in order, as columns."""
        np = self._np
        for width in ALGOS:
            rows = [s for s in sigs if len(s.digest) == width]
            if not rows:
                continue
            sizes = np.array([s.size for s in rows], np.int64)
            digests = np.frombuffer(b"".join(s.digest for s in rows), np.uint8)
            ids = np.array([self.count + i for i, s in enumerate(sigs)
                            if len(s.digest) == width], np.uint32)
            self._rows[width].append((sizes, digests.reshape(-1, width), ids))
        encoded = [s.name.encode("utf-8", "surrogateescape") for s in sigs]
        self._names.append(np.frombuffer(b"".join(encoded), np.uint8).copy())
        self._name_lengths.append(np.array([len(e) for e in encoded], np.int64))
        self.count += len(sigs)

    def _add_block(self, block: bytes, source: str, line0: int, allow_wildcard: bool,
                   layout: str) -> int:
        """Parse complete lines (``block`` ends with a newline); returns the next line number."""
        np = self._np
        a = np.frombuffer(block, np.uint8)
        ends = np.flatnonzero(a == 10)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        next_line = line0 + len(ends)
        cr = (ends > starts) & (a[np.maximum(ends - 1, 0)] == 13)
        ends = ends - cr
        nonblank = ends > starts
        skip = ~nonblank | (a[np.minimum(starts, len(a) - 1)] == ord("#"))
        colons = np.flatnonzero(a == ord(":"))
        k0 = np.searchsorted(colons, starts)
        ncolons = np.searchsorted(colons, ends) - k0
        regular = ~skip & ((ncolons == 2) | (ncolons == 3))
        # Colon positions for regular lines (others get harmless stand-ins, masked below).
        pad = np.append(colons, [len(a)] * 3)
        c1 = np.where(regular, pad[k0], starts)
        c2 = np.where(regular, pad[k0 + 1], starts)
        c3 = np.where(regular & (ncolons == 3), pad[k0 + 2], ends)
        if layout == HASH_FIRST:
            hex_lo, hex_hi, size_lo, size_hi = starts, c1, c1 + 1, c2
        else:
            size_lo, size_hi, hex_lo, hex_hi = starts, c1, c1 + 1, c2
        hex_len = hex_hi - hex_lo
        regular &= np.isin(hex_len, (32, 40, 64))
        sizes, ok = _parse_sizes(np, a, size_lo, size_hi, allow_wildcard)
        regular &= ok
        # Names: not empty, no surrounding blanks (the line parser strips them).
        name_lo, name_hi = c2 + 1, c3
        regular &= name_hi > name_lo
        blank = np.array([ord(" "), ord("\t")], np.uint8)
        last = len(a) - 1
        regular &= ~np.isin(a[np.minimum(name_lo, last)], blank)
        regular &= ~np.isin(a[np.clip(name_hi - 1, 0, last)], blank)
        levels, ok = _parse_digits(np, a, c3 + 1, np.where(ncolons == 3, ends, c3 + 1), 9)
        regular &= ok | (ncolons == 2)
        newer = regular & (ncolons == 3) & (levels > FUNCTIONALITY_LEVEL)
        # Digests column by column: rows of one width at a time, invalid hex → line parser.
        accepted = regular & ~newer
        digests = {}
        for width in ALGOS:
            rows = np.flatnonzero(accepted & (hex_len == 2 * width))
            if len(rows) == 0:
                continue
            table = _nibble_table(np)
            out = np.empty((len(rows), width), np.uint8)
            bad = np.zeros(len(rows), bool)
            base = hex_lo[rows]
            for j in range(width):
                hi = table[a[base + 2 * j]]
                lo = table[a[base + 2 * j + 1]]
                bad |= (hi | lo) > 15
                out[:, j] = (hi << 4) | (lo & 15)
            if bad.any():
                regular[rows[bad]] = False
                accepted[rows[bad]] = False
                rows, out = rows[~bad], out[~bad]
            digests[width] = (rows, out)
        for row in np.flatnonzero(newer & regular):
            name = bytes(a[name_lo[row]:name_hi[row]]).decode("utf-8", "replace")
            self.skipped.append(f"{source}:{line0 + row}: {name}: needs engine level "
                                f"{int(levels[row])} (lmsav: {FUNCTIONALITY_LEVEL})")
        # Rows in file order get ids; then the irregular lines, through the line parser.
        keep = np.flatnonzero(accepted)
        ids = np.full(len(starts), -1, np.int64)
        ids[keep] = self.count + np.arange(len(keep))
        for width, (rows, out) in digests.items():
            self._rows[width].append((sizes[rows], out, ids[rows].astype(np.uint32)))
        lengths = (name_hi - name_lo)[keep]
        if len(keep):
            gather = np.repeat(name_lo[keep] - np.cumsum(lengths) + lengths, lengths)
            gather += np.arange(len(gather))
            self._names.append(a[gather])
            self._name_lengths.append(lengths.astype(np.int64))
        self.count += len(keep)
        slow = []
        for row in np.flatnonzero(~skip & ~regular):
            line = bytes(a[starts[row]:ends[row]]).decode("utf-8", "surrogateescape")
            sig = parse_hash_line(line, source, line0 + int(row), allow_wildcard, layout)
            if isinstance(sig, HashSig):
                slow.append(sig)
            elif sig is not None:
                self.skipped.append(sig)
        if slow:
            self._append_sigs(slow)
        return next_line


def _buf(array) -> memoryview:
    """A flat byte view of a numpy array (the database writer needs only len() and write())."""
    return memoryview(array.reshape(-1) if array.ndim > 1 else array).cast("B")


def _sort_order(np, sizes, digests):
    """Permutation sorting rows by (size, digest bytes)."""
    width = digests.shape[1]
    if width % 8:
        padded = np.zeros((len(digests), (width + 7) // 8 * 8), np.uint8)
        padded[:, :width] = digests
    else:
        padded = np.ascontiguousarray(digests)
    words = padded.view(">u8")
    keys = [words[:, k] for k in range(words.shape[1] - 1, -1, -1)] + [sizes]
    return np.lexsort(keys) if len(sizes) else np.zeros(0, np.int64)


_NIBBLES = None


def _nibble_table(np):
    """Byte → hex digit value, 255 for anything that is not a hex digit."""
    global _NIBBLES
    if _NIBBLES is None:
        table = np.full(256, 255, np.uint8)
        for i, ch in enumerate("0123456789abcdef"):
            table[ord(ch)] = i
            table[ord(ch.upper())] = i
        _NIBBLES = table
    return _NIBBLES


def _parse_digits(np, a, lo, hi, most: int):
    """Decimal numbers in a[lo:hi] per row; ok is False where a field is empty, too long or
    has a non-digit."""
    length = hi - lo
    ok = (length > 0) & (length <= most)
    value = np.zeros(len(lo), np.int64)
    last = len(a) - 1
    for j in range(most):
        inside = ok & (j < length)
        if not inside.any():
            break
        digit = a[np.minimum(lo + j, last)].astype(np.int64) - ord("0")
        ok &= ~inside | ((digit >= 0) & (digit <= 9))
        value = np.where(inside, value * 10 + digit, value)
    return value, ok


def _parse_sizes(np, a, lo, hi, allow_wildcard: bool):
    """Sizes (WILDCARD for ``*`` where allowed) and where they parsed."""
    value, ok = _parse_digits(np, a, lo, hi, 18)
    star = (hi - lo == 1) & (a[np.minimum(lo, len(a) - 1)] == ord("*"))
    if allow_wildcard:
        value = np.where(star, WILDCARD, value)
        ok |= star
    return value, ok


class _Table:
    """One algorithm's sorted table, read in place from memoryviews.

    A lookup first bisects the fence (every FENCE-th size, a few hundred KB that stay
    resident), then one FENCE-row block of the sizes: about one page of the mapped table per
    file instead of one per bisection step, so a long sweep does not page in whole columns.
    """

    __slots__ = (
        "count",
        "digests",
        "fence",
        "ids",
        "sizes",
        "wcount",
        "wdigests",
        "wids",
        "width",
    )

    def __init__(self, width, sizes, digests, ids, wdigests, wids, fence=None):
        self.width = width
        self.sizes = sizes.cast("Q")
        self.digests = digests
        self.ids = ids.cast("I")
        self.wdigests = wdigests
        self.wids = wids.cast("I")
        self.count = len(self.sizes)
        self.wcount = len(self.wids)
        self.fence = fence.cast("Q") if fence is not None and len(fence) else None

    def size_range(self, size: int) -> tuple[int, int]:
        """Rows [lo, hi) whose size is ``size`` (empty when none is)."""
        sizes, fence, count = self.sizes, self.fence, self.count
        if fence is None:
            lo = bisect.bisect_left(sizes, size)
            return lo, bisect.bisect_right(sizes, size, lo)
        j = bisect.bisect_left(fence, size)
        lo = bisect.bisect_left(sizes, size, max(0, (j - 1) * FENCE), min(count, j * FENCE + 1))
        if lo >= count or sizes[lo] != size:
            return lo, lo
        j = bisect.bisect_right(fence, size, j)
        return lo, bisect.bisect_right(sizes, size, max(lo, (j - 1) * FENCE),
                                       min(count, j * FENCE))

    def has_size(self, size: int) -> bool:
        if self.wcount:
            return True
        if not self.count:
            return False
        lo, hi = self.size_range(size)
        return lo < hi

    def find(self, size: int, digest: bytes) -> int | None:
        """Name id of a signature with this size and digest, or None."""
        w = self.width
        if self.count:
            lo, hi = self.size_range(size)
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
                section(f"{prefix}.{algo}.fence"),
            )
            if t.count or t.wcount:
                self.tables.append((algo, t))
        self._names = section(f"{prefix}.names")
        self._nameoffs = section(f"{prefix}.nameoffs").cast("Q")
        self._source_starts = section(f"{prefix}.sourcestarts").cast("Q")
        self._source_blob = section(f"{prefix}.sourcenames")
        self._source_names: list[str] | None = None
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
        """(signature name, source file) of a name id."""
        raw = bytes(self._names[self._nameoffs[nid]:self._nameoffs[nid + 1]])
        if not self._source_starts:  # a cache written before sources were kept apart
            name, _, source = raw.decode("utf-8", "replace").partition("\t")
            return name, source
        if self._source_names is None:
            self._source_names = bytes(self._source_blob).decode().split("\n")
        source = self._source_names[bisect.bisect_right(self._source_starts, nid) - 1]
        return raw.decode("utf-8", "replace"), source
