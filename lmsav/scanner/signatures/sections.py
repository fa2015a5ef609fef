"""PE section hashes (.mdb .msb, PUA .mdu .msu) and import-table hashes (.imp), as ClamAV 1.4.

``PESectionSize:Hash:MalwareName[:MinFL[:MaxFL]]`` names a PE section by the MD5, SHA1 or
SHA256 of its raw bytes and its raw size as ClamAV computes it (aligned to the file alignment,
cut at the end of the file); ``ImportTableHash:Size:MalwareName[:MinFL[:MaxFL]]`` names a PE32
by the hash of its import list (``dll.function`` names, lower case, comma separated; the size
is that string's length). The compiled form is hashes.py's size-sorted tables, so millions of
section hashes cost no parsing at load, and a section is hashed only when its size is one some
signature names. The PE is parsed only for PE/MZ files and only when signatures are loaded.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from typing import NamedTuple

from . import hashes
from .errors import SignatureError
from .exe_headers import parse_pe_scan
from .levels import FUNCTIONALITY_LEVEL

SECTION_EXTENSIONS = (".mdb", ".msb", ".mdu", ".msu")  # .mdu/.msu: only when PUA is wanted
IMPORT_EXTENSIONS = (".imp",)
PE_TYPES = frozenset({"pe", "msdos"})  # what ClamAV types as a PE (any MZ file)
WILDCARD_LEVEL = 73  # ClamAV reads a "*" section size only from signatures this level requires

_HEX = re.compile(r"[0-9A-Fa-f]+")
_SIZE = re.compile(r"[ \t\n\v\f\r]*\+?[0-9]+")  # what C's strtoul takes whole (minus signs aside)
_HASH_LENGTHS = (32, 40, 64)
_MAX_SIZE = 0xFFFFFFFE


class SectionSig(NamedTuple):
    """One parsed line: hashes.HashSig's fields plus the table it belongs to, "mdb" (sections)
    or "imp" (imports). A tuple, not a dataclass: a real database has a million of them."""

    table: str
    digest: bytes
    size: int  # hashes.WILDCARD for "*"
    name: str
    source: str


def parse(text: str, source: str, ext: str) -> tuple[list[SectionSig], list[str]]:
    """Parse one .mdb/.msb/.mdu/.msu or .imp file (``ext`` says which): (signatures, skipped
    lines as "source:line: name: reason"). A line ClamAV would refuse raises SignatureError."""
    sigs: list[SectionSig] = []
    table = _table_of(source, ext)

    def plain(line: str, size: str, digest: str, name: str) -> None:
        sigs.append(SectionSig(table, bytes.fromhex(digest), int(size), name, source))

    return sigs, _read_lines(text, source, table, plain, sigs.append)


def parse_columns(text: str, source: str, ext: str) -> tuple[list[SectionColumns], list[str]]:
    """The same as ``parse`` with the signatures in hashes.HashTableBuilder columns, never an
    object per line: ClamAV's database has millions of section hashes."""
    table = _table_of(source, ext)
    layout = hashes.SIZE_FIRST if table == "mdb" else hashes.HASH_FIRST
    columns = hashes.HashTableBuilder(table)
    pending: list[str] = []

    def plain(line: str, size: str, digest: str, name: str) -> None:
        pending.append(line)
        if len(pending) >= _CHUNK:  # plain lines go to the column parser in bulk
            columns.add_text("\n".join(pending), source, False, layout)
            pending.clear()

    skipped = _read_lines(text, source, table, plain, columns.add_sig)
    if pending:
        columns.add_text("\n".join(pending), source, False, layout)
    return [SectionColumns(table, columns)], skipped


class SectionColumns(NamedTuple):
    """One file's signatures in columns; ``len()`` is their number."""

    table: str  # "mdb" (sections) or "imp" (imports)
    columns: hashes.HashTableBuilder

    def __len__(self) -> int:
        return len(self.columns)


def _table_of(source: str, ext: str) -> str:
    if ext.lower() in IMPORT_EXTENSIONS:
        return "imp"
    if ext.lower() in SECTION_EXTENSIONS:
        return "mdb"
    raise ValueError(f"{source}: not a section or import hash file ({ext!r})")


_HASH_FIELD = "([0-9A-Fa-f]{32}|[0-9A-Fa-f]{40}|[0-9A-Fa-f]{64})"
# The plain three-field line (most of a real database), read without the general parser.
_PLAIN = {
    "mdb": re.compile(f"([0-9]{{1,10}}):{_HASH_FIELD}:([^:]+)"),
    "imp": re.compile(f"{_HASH_FIELD}:([0-9]{{1,10}}):([^:]+)"),
}
_CHUNK = 1 << 16


def _read_lines(text: str, source: str, table: str, plain, other) -> list[str]:
    """Hand plain lines to ``plain(line, size, digest, name)`` and every other signature to
    ``other(sig)``; return the skipped lines."""
    skipped: list[str] = []
    size_first = table == "mdb"
    match_plain = _PLAIN[table].fullmatch
    for lineno, line in enumerate(text.splitlines(), 1):
        found = match_plain(line)
        if found is not None:
            size, digest = (found[1], found[2]) if size_first else (found[2], found[1])
            name = found[3]
            # Names with blanks at their ends go the general way: the column parser would
            # strip them, ClamAV keeps them.
            if 0 < int(size) <= _MAX_SIZE and name.strip(" \t") == name:
                plain(line, size, digest, name)
                continue
        if line.startswith("#"):
            continue
        if not line.strip():
            raise SignatureError(source, lineno, "blank line (ClamAV refuses the file)")
        try:
            sig = _parse_line(line.rstrip("\r\n"), source, table)
        except ValueError as err:
            raise SignatureError(source, lineno, str(err)) from None
        if isinstance(sig, str):
            skipped.append(f"{source}:{lineno}: {sig}")
        else:
            other(sig)
    return skipped


def _parse_line(line: str, source: str, table: str) -> SectionSig | str:
    """One line as ClamAV's cli_loadhash reads it; a str is the reason it is skipped."""
    size_first = table == "mdb"
    fields = line.split(":")
    layout = "PESectionSize:Hash:MalwareName" if size_first else "ImportTableHash:Size:MalwareName"
    if len(fields) < 3 or len(fields) > 5:
        raise ValueError(f"expected {layout}[:MinFL[:MaxFL]]")
    hash_text, size_text = (fields[1], fields[0]) if size_first else (fields[0], fields[1])
    name = fields[2]
    if not name:
        raise ValueError("empty signature name")
    # Levels are read as C's atoi reads them (no digits: 0) and checked before anything else.
    min_level = _atoi(fields[3]) if len(fields) > 3 else 0
    if min_level > FUNCTIONALITY_LEVEL:
        return f"{name}: needs engine level {min_level} (lmsav: {FUNCTIONALITY_LEVEL})"
    if len(fields) == 5 and _atoi(fields[4]) < FUNCTIONALITY_LEVEL:
        return f"{name}: retired at engine level {_atoi(fields[4])}"
    if size_text == "*":
        # .imp always allowed "*"; section hashes only from signatures of level 73 up.
        if size_first and (len(fields) < 4 or min_level < WILDCARD_LEVEL):
            raise ValueError(f"size '*' needs a minimum engine level of at least "
                             f"{WILDCARD_LEVEL} (field 4)")
        size = hashes.WILDCARD
    else:
        if not _SIZE.fullmatch(size_text) or not 0 < int(size_text) <= _MAX_SIZE:
            raise ValueError(f"bad size {size_text!r}: need a number from 1 to {_MAX_SIZE} "
                             "or '*'")
        size = int(size_text)
    if len(hash_text) not in _HASH_LENGTHS or not _HEX.fullmatch(hash_text):
        raise ValueError(f"bad hash {hash_text!r}: need 32, 40 or 64 hex digits")
    return SectionSig(table, bytes.fromhex(hash_text), size, name, source)


def _atoi(text: str) -> int:
    """C's atoi as glibc computes it, stored in ClamAV's unsigned level variables."""
    found = re.match(r"[ \t\n\v\f\r]*([+-]?[0-9]+)", text)
    if not found:
        return 0
    return max(min(int(found[1]), 0x7FFFFFFFFFFFFFFF), -0x8000000000000000) & 0xFFFFFFFF


# -- compiling ---------------------------------------------------------------------------------

def compile_sections(parts: list) -> dict[str, bytes]:
    """Section and import hashes as named binary sections ("mdb.…" and "imp.…"), from
    ``parse_columns`` blocks or ``parse``'s signatures."""
    out: dict[str, bytes] = {}
    for table in ("mdb", "imp"):
        builder = hashes.HashTableBuilder(table)
        for part in parts:
            if isinstance(part, SectionColumns):
                if part.table == table:
                    builder.extend(part.columns)
            elif part.table == table:
                builder.add_sig(part)  # SectionSig carries all a HashSig has
        out.update(builder.sections())
    return out


# -- matching ----------------------------------------------------------------------------------

class SectionHashMatcher:
    """Names the .mdb/.msb and .imp signatures a PE matches; parses the PE only when some are
    loaded, hashes a section only when its raw size is one a signature names."""

    def __init__(self, section):
        self._sections = hashes.HashMatcher(section, "mdb")
        self._imports = hashes.HashMatcher(section, "imp")
        self.section_count = self._sections.count
        self.import_count = self._imports.count
        self.count = self.section_count + self.import_count

    def match(self, subject) -> list[tuple[str, str]]:
        """(name, source) of each section or import hash signature ``subject`` matches."""
        if not self.count or subject.ftype not in PE_TYPES:
            return []
        pe = subject.view("pe.scan", parse_pe_scan)
        if pe is None:
            return []
        found: list[tuple[str, str]] = []
        if self.section_count:
            for index, size in pe.hashed_sizes():
                for algo, table in self._sections.tables:
                    if table.has_size(size):
                        digest = pe.section_digest(index, algo)
                        found += map(self._sections.name, _lookup(table, size, digest))
        if self.import_count:
            imports = pe.import_table()
            if imports is not None:
                size = len(imports)
                for algo, table in self._imports.tables:
                    if table.has_size(size):
                        digest = hashlib.new(algo, imports).digest()
                        found += map(self._imports.name, _lookup(table, size, digest))
        return found


def _lookup(table, size: int, digest: bytes) -> list[int]:
    """Name ids of the signature with this size and digest and of the "*" size one: ClamAV
    looks in both tables and, reporting all matches, names both."""
    ids = []
    if table.count:
        lo = bisect.bisect_left(table.sizes, size)
        hi = bisect.bisect_right(table.sizes, size, lo)
        hit = hashes._bisect_digest(table.digests, table.width, lo, hi, digest)
        if hit is not None:
            ids.append(table.ids[hit])
    if table.wcount:
        hit = hashes._bisect_digest(table.wdigests, table.width, 0, table.wcount, digest)
        if hit is not None:
            ids.append(table.wids[hit])
    return ids


__all__ = [
    "IMPORT_EXTENSIONS", "SECTION_EXTENSIONS", "SectionHashMatcher", "SectionSig",
    "compile_sections", "parse",
]
