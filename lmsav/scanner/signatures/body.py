"""Body signatures (.ndb): ClamAV hex patterns compiled into one Hyperscan database.

Each ``Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]`` line becomes a byte regex. Every
signature is in one block-mode database scanned once per file; a callback only collects ids, and
the few hits are then filtered by target type and, where the Hyperscan form is only a superset of
the signature, confirmed with Python's ``re`` at the exact start positions.

Offsets are enforced without Hyperscan's start-of-match tracking: SOM_LEFTMOST reports only the
leftmost start per end offset, so a variable-length match starting at the required offset can be
hidden behind an earlier one. Instead: small start offsets become an anchored ``^.{n,n+m}``
prefix, fixed-length patterns use the extended ``min_offset``/``max_offset`` bounds on the end,
fixed-length ``EOF-n`` patterns end in ``.{a,b}\\z``, and everything else is a Hyperscan
prefilter confirmed in Python.

Offsets relative to an executable (EP+n, EP-n, Sx+n, SL+n, SEx, VI) are resolved only when a
hit needs them: Hyperscan runs the pattern unanchored, and the hit is confirmed in Python inside
the window ClamAV computes from the parsed PE, ELF or Mach-O (exe_headers.py). A file of an
executable type that ClamAV cannot parse loses EOF-n signatures too, as in ClamAV. Markers
((B), (L), (W)) and anchored bytes are lookarounds checked in Python (hexpattern.py reads the
pattern language and refuses what ClamAV refuses).

A line with a macro offset (``$n$``) is no detection of its own: its pattern joins macro group
n, which logical signatures (logical.py) check with ``${min-max}n$``; the patterns are kept in
this blob's metadata (``macro_patterns``).

Differences from ClamAV: a right-edge marker sees the end of the file where ClamAV sees the end
of its scan buffer.
"""

from __future__ import annotations

import json
import os
import re
import struct
from dataclasses import dataclass

import hyperscan

from . import exe_headers, logical_hex
from .errors import SignatureError
from .hexpattern import (
    REPEAT_LIMIT,
    Invalid,
    Unsupported,
    check_pattern,
    parse_hex,
    repeat,
)
from .hyperscan_rejects import first_rejected
from .levels import skip_reason
from .rowtable import RowTable, pack_rows

# ClamAV target type → sniffed types it applies to; None means any file, an empty set never.
TARGETS: dict[int, frozenset[str] | None] = {
    0: None,
    1: frozenset({"pe", "msdos"}),  # ClamAV's PE target takes every MZ file
    2: frozenset({"ole2"}),
    3: frozenset({"html-norm"}),  # normalised HTML only, never the raw page (normalise.py)
    4: frozenset({"mail", "mbox"}),
    5: frozenset(),  # graphics: the sniffer has no image types
    6: frozenset({"elf"}),
    7: frozenset({"text-norm"}),  # folded text only (normalise.py), as ClamAV
    9: frozenset({"macho"}),
    10: frozenset({"pdf"}),
}
_NEVER: frozenset[str] = frozenset()

# Offset kinds; EXE: relative to the parsed executable; MACRO: a ``$n$`` macro group member.
ANY, START, EOF, EXE, MACRO = 0, 1, 2, 3, 4
CLAMAV_TARGETS = 15  # ClamAV skips a line whose target is beyond its table (matcher.h)

SECTION = "body"  # the database section holding compile_body's blob

ANCHOR_LIMIT = 256  # largest n+m written as an anchored ^.{n,n+m} prefix

MAGIC = b"LMSAVBD2"
_HEADER = struct.Struct("<8sIII")
_HS_FLAGS = hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
_NO_EXT = hyperscan.ExpressionExt(flags=0)


@dataclass(frozen=True, slots=True)
class BodySig:
    """One parsed .ndb line; ``unsupported`` says why lmsav skips it (empty when usable)."""

    name: str
    source: str
    line: int
    target: int
    kind: int = ANY  # ANY, START, EOF or EXE
    n: int = 0
    m: int = 0
    pattern: str = ""  # exact regex over bytes (\xHH escapes, for DOTALL)
    hs_pattern: str = ""  # what Hyperscan compiles: ``pattern`` or a superset of it
    min_len: int = 0
    max_len: int | None = None  # None: unbounded
    segments: tuple[tuple[int, str], ...] = ()  # (min gap before, lazy regex) split at n- gaps
    offset_kind: str = ""  # for EXE: exe_headers.EP_PLUS, SX_PLUS, SE, VERSION …
    section: int = 0  # for EXE: the x of Sx+n and SEx
    unsupported: str = ""
    hexsig: str = ""  # for MACRO: the pattern as written (``n`` is the macro group)

    @property
    def exact(self) -> bool:
        return self.pattern == self.hs_pattern


# -- parsing -----------------------------------------------------------------------------------

def parse_ndb(text: str, source: str) -> list[BodySig]:
    """Parse .ndb lines; unusable-but-valid signatures come back with ``unsupported`` set."""
    sigs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            continue
        line = line.strip()
        if not line:
            raise SignatureError(source, lineno, "blank line (ClamAV refuses the file)")
        try:
            sigs.append(_parse_line(line, source, lineno))
        except Invalid as err:
            raise SignatureError(source, lineno, str(err)) from None
    return sigs


def _parse_line(line: str, source: str, lineno: int) -> BodySig:
    fields = line.split(":")
    if len(fields) < 4 or len(fields) > 6:
        raise Invalid("expected Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]")
    name, target_text, offset_text, hexsig = (f.strip() for f in fields[:4])
    if not name:
        raise Invalid("empty signature name")
    target = int(target_text) if target_text.isdigit() else 0  # ClamAV reads "*" and "" as 0
    base = BodySig(name, source, lineno, target)
    # Levels first, as ClamAV: a line outside the engine's level is skipped unparsed (old
    # databases carry retired lines whose "pattern" is plain text for old engines to show).
    skip = skip_reason([f.strip() for f in fields[4:]], source, lineno)
    if skip:
        return _replace(base, unsupported=skip)
    if target_text not in ("*", "") and not (target_text.isdigit() and target_text.isascii()):
        raise Invalid(f"bad target type {target_text!r}: need a number")
    if target >= CLAMAV_TARGETS:  # ClamAV skips the line before reading its pattern
        return _replace(base, unsupported=f"target type {target} is unknown to ClamAV")
    kind, offset = _parse_offset(offset_text, target)
    try:
        pattern, hs_pattern, min_len, max_len, segments = parse_hex(hexsig)
        skip = ""
    except Unsupported as err:
        skip = str(err)
    check_pattern(hexsig, target, offset_text)  # refused by ClamAV, even if lmsav skips it
    try:
        if kind == MACRO and not skip:
            _check_macro_pattern(hexsig, target)
    except Unsupported as err:
        skip = str(err)
    if skip:
        return _replace(base, unsupported=skip)
    return BodySig(
        name, source, lineno, target, kind, offset.n, offset.shift, pattern, hs_pattern,
        min_len, max_len, segments, offset_kind=offset.kind if kind == EXE else "",
        section=offset.section, hexsig=hexsig if kind == MACRO else "",
    )


def _check_macro_pattern(hexsig: str, target: int) -> None:
    """A macro group member is matched by the logical matcher, sub-pattern by sub-pattern: it
    must be a pattern that matcher can take."""
    try:
        reason = logical_hex.macro_pattern_problem(hexsig, target)
    except ValueError as err:
        raise Invalid(str(err)) from None
    if reason:
        raise Unsupported(reason)


def _replace(sig: BodySig, unsupported: str) -> BodySig:
    return BodySig(sig.name, sig.source, sig.line, sig.target, unsupported=unsupported)


def _parse_offset(text: str, target: int) -> tuple[int, exe_headers.Offset]:
    """(offset kind, parsed offset) as ClamAV reads the field; Invalid where ClamAV refuses."""
    try:
        offset = exe_headers.parse_offset(text, target)
    except ValueError as err:
        raise Invalid(str(err)) from None
    kind = {exe_headers.ANY: ANY, exe_headers.ABSOLUTE: START, exe_headers.EOF_MINUS: EOF,
            exe_headers.MACRO: MACRO}
    return kind.get(offset.kind, EXE), offset


# -- compiling ---------------------------------------------------------------------------------

def _plan(sig: BodySig) -> tuple[str, object, list | None]:
    """(Hyperscan pattern, extended parameters, Python check or None when Hyperscan is exact)."""
    body = sig.hs_pattern
    exact = sig.exact
    fixed_len = sig.min_len if sig.max_len == sig.min_len else None
    ext = _NO_EXT
    if sig.kind == ANY:
        return body, ext, None if exact else _check(sig)
    if sig.kind == EXE:  # the window depends on the file: Hyperscan finds, Python places
        return body, ext, _check(sig)
    if sig.kind == START:
        if fixed_len is not None and exact:
            lo, hi = sig.n + fixed_len, sig.n + sig.m + fixed_len
            flags = hyperscan.HS_EXT_FLAG_MIN_OFFSET | hyperscan.HS_EXT_FLAG_MAX_OFFSET
            return body, hyperscan.ExpressionExt(flags, min_offset=lo, max_offset=hi), None
        if sig.n + sig.m <= ANCHOR_LIMIT:
            prefix = repeat(sig.n, sig.n + sig.m)
            return f"^{prefix}(?:{body})", ext, None if exact else _check(sig)
        floor = sig.n + sig.min_len
        ext = hyperscan.ExpressionExt(hyperscan.HS_EXT_FLAG_MIN_OFFSET, min_offset=floor)
        return body, ext, _check(sig)
    # EOF-n,m: the match starts in [size-n, size-n+m].
    if fixed_len is not None and exact and fixed_len <= sig.n and sig.n <= REPEAT_LIMIT:
        tail = repeat(max(0, sig.n - sig.m - fixed_len), sig.n - fixed_len)
        return f"(?:{body}){tail}\\z", ext, None
    return body, ext, _check(sig)


def _check(sig: BodySig) -> list:
    """Confirmation row: [kind, n, m, [[gap, regex], …]] (EXE rows add the offset kind and
    section); parts are matched in order, the first one anywhere (ANY), from the signature's
    start offset onward by up to m bytes (START, EOF), or inside the window the executable
    gives (EXE, searched from the window's start)."""
    parts = [list(p) for p in sig.segments]
    if sig.kind == EXE:
        if sig.segments[0][0]:
            parts[0][1] = f".{{{sig.segments[0][0]},}}?(?:{parts[0][1]})"
        return [EXE, sig.n, sig.m, parts, sig.offset_kind, sig.section]
    if sig.kind != ANY:
        lead = repeat(0, sig.m) + ("?" if sig.m else "")
        parts[0][1] = f"{lead}(?:{parts[0][1]})"
        if sig.segments[0][0]:  # the signature starts with an n- gap: a floor on the first part
            parts[0][1] = f".{{{sig.segments[0][0]},}}?{parts[0][1]}"
    return [sig.kind, sig.n, sig.m, parts]


# A signature that is not one plain literal gives Hyperscan only its longest literal, this
# long at least, and is confirmed in Python on a hit. Whole regexes cost Hyperscan about 3 ms
# each to compile and ~5 KB each of database (150,000 ClamAV-shaped signatures: over 15
# minutes and 6 GB); their literals compile in seconds, and a literal of 4+ bytes is rarely
# hit where the whole signature does not match.
FACTOR_MIN = 4


# Tokens of a regex written by parse_hex: a run of literal bytes, a class, a repeat count, an
# escape, a parenthesis, or any other character.
_TOKEN = re.compile(r"((?:\\x[0-9a-f]{2})+)|\[[^\]]*\]|\{[^}]*\}|\\.|([()])|.", re.DOTALL)


def _literal_runs(pattern: str) -> list[str]:
    """Runs of ``\\xHH`` bytes outside any group or class of a regex from parse_hex."""
    runs, depth = [], 0
    for token in _TOKEN.finditer(pattern):
        run, paren = token.group(1, 2)
        if run and depth == 0:
            runs.append(run)
        elif paren:
            depth += 1 if paren == "(" else -1
    return runs


def _factor(sig: BodySig, plan: list) -> None:
    """Replace ``plan``'s Hyperscan pattern by the signature's longest literal (see FACTOR_MIN)."""
    runs = _literal_runs(sig.pattern)
    best = max(runs, key=len, default="")
    size = len(best) // 4  # bytes: each is written \\xHH
    if sig.kind == ANY and sig.exact and len(runs) == 1 and size == sig.min_len == sig.max_len:
        return  # one plain literal already: Hyperscan's answer is final
    if size < FACTOR_MIN:
        return
    plan[0] = best
    plan[1] = _NO_EXT  # offset bounds cost Hyperscan as much as a regex: Python checks them
    if plan[2] is None:
        plan[2] = _check(sig)


def compile_body(sigs: list[BodySig]) -> bytes:
    """One Hyperscan database plus the id → (name, source, target, check) table, as bytes.

    Macro group members are no detections: only their patterns are kept, in the metadata, for
    the logical matcher (``macro_patterns``)."""
    usable = [s for s in sigs if not s.unsupported]
    macros = [[s.target, s.n, s.hexsig] for s in usable if s.kind == MACRO]
    count = len(usable)
    usable = [s for s in usable if s.kind != MACRO]
    sources = sorted({s.source for s in usable})
    source_ids = {s: i for i, s in enumerate(sources)}
    unsupported = [f"{s.source}:{s.line}: {s.name}: {s.unsupported}" for s in sigs if s.unsupported]
    plans = [list(_plan(s)) for s in usable]
    for sig, plan in zip(usable, plans):
        _factor(sig, plan)
    db_blob = _compile_hyperscan(usable, plans) if usable else b""
    # The last field marks offsets ClamAV drops when an executable fails to parse.
    rows = [[s.name, source_ids[s.source], s.target, p[2], int(s.kind in (EOF, EXE))]
            for s, p in zip(usable, plans)]
    # A process decodes only the rows of signatures that hit, never the whole table.
    table, index = pack_rows(rows)
    meta = {"count": count, "sources": sources, "unsupported": unsupported,
            "row_index": index, "macros": macros}
    meta = json.dumps(meta).encode()
    header = _HEADER.pack(MAGIC, len(meta), len(table), len(db_blob))
    return header + meta + table + db_blob


def _compile_hyperscan(sigs: list[BodySig], plans: list[list]) -> bytes:
    """Compile all patterns at once; a pattern Hyperscan rejects is found by bisection, then
    retried in prefilter mode (confirmed in Python) or reported as the signature's error."""
    flags = [_HS_FLAGS] * len(plans)
    while True:
        try:
            return hyperscan.dumpb(_build(range(len(plans)), plans, flags))
        except hyperscan.error as err:
            bad = first_rejected(list(range(len(plans))), lambda ids: _build(ids, plans, flags))
            if bad is None:
                raise SignatureError(sigs[0].source, 0, f"Hyperscan cannot compile the body "
                                     f"signatures together: {err}") from None
            sig, message = sigs[bad], _rejection(bad, plans, flags)
            if flags[bad] & hyperscan.HS_FLAG_PREFILTER:
                message = f"{sig.name}: Hyperscan cannot compile it: {message}"
                raise SignatureError(sig.source, sig.line, message) from None
            flags[bad] |= hyperscan.HS_FLAG_PREFILTER
            if plans[bad][2] is None:
                plans[bad][2] = _check(sig)


def _rejection(index: int, plans: list[list], flags: list[int]) -> str:
    try:
        _build([index], plans, flags)
    except hyperscan.error as err:
        return str(err)
    return "rejected only together with other signatures"


def _build(indexes, plans: list[list], flags: list[int]) -> hyperscan.Database:
    indexes = list(indexes)
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(
        expressions=[plans[i][0].encode() for i in indexes],
        ids=indexes,
        elements=len(indexes),
        flags=[flags[i] for i in indexes],
        ext=[plans[i][1] for i in indexes],
    )
    return db


def macro_patterns(blob) -> list[tuple[int, int, str]]:
    """(target, macro group, hex pattern) of each .ndb line with a ``$n$`` offset in a blob
    from compile_body; read from its metadata alone."""
    blob = memoryview(blob).cast("B")
    if len(blob) < _HEADER.size:
        return []
    magic, meta_len, _, _ = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise ValueError("not a compiled body signature blob")
    meta = json.loads(bytes(blob[_HEADER.size:_HEADER.size + meta_len]))
    return [(target, group, hexsig) for target, group, hexsig in meta.get("macros", ())]


# -- matching ----------------------------------------------------------------------------------

def _collect(sig_id, start, end, flags, hits):
    hits.append(sig_id)


class BodyMatcher:
    """Scans a buffer once with the compiled database and names the signatures that match."""

    def __init__(self, db, meta: dict, table: bytes):
        self._db = db
        self._table_raw = table
        self._rows: list | None = None
        self._checks: dict[int, list] = {}
        self._scratch = None
        self._pid = 0
        self.sources: list[str] = meta["sources"]
        self.unsupported: list[str] = meta["unsupported"]
        self.count: int = meta["count"]

    @classmethod
    def from_blob(cls, blob) -> BodyMatcher:
        """Load from bytes or a memoryview over the database's mmap: the row table stays in
        the mapping (shared by forked workers); only the Hyperscan database is copied."""
        blob = memoryview(blob).cast("B")
        if not blob:
            return cls(None, {"count": 0, "sources": [], "unsupported": []}, b"[]")
        try:
            magic, meta_len, table_len, db_len = _HEADER.unpack_from(blob)
        except struct.error:
            raise ValueError("body signature blob is truncated") from None
        if magic != MAGIC:
            raise ValueError("not a compiled body signature blob")
        pos = _HEADER.size
        meta = json.loads(bytes(blob[pos:pos + meta_len]))
        pos += meta_len
        table = blob[pos:pos + table_len]
        if "row_index" in meta:
            table = RowTable(table, meta["row_index"])
        pos += table_len
        db = (hyperscan.loadb(bytes(blob[pos:pos + db_len]), hyperscan.HS_MODE_BLOCK)
              if db_len else None)
        return cls(db, meta, table)

    def match(self, subject) -> list[tuple[str, str]]:
        """(name, source) of each signature matching ``subject`` (a Subject over bytes or an
        mmap), each name once. The executable is parsed only for a hit that needs it."""
        if self._db is None:
            return []
        if self._pid != os.getpid():
            # Scratch space is per process: a forked child must not share its parent's.
            self._scratch = hyperscan.Scratch(self._db)
            self._pid = os.getpid()
        data, ftype = subject.data, subject.ftype
        hits: list[int] = []
        self._db.scan(data, match_event_handler=_collect, context=hits, scratch=self._scratch)
        if not hits:
            return []
        rows = self._rows if self._rows is not None else self._load_rows()
        found, seen = [], set()
        for sig_id in sorted(hits):
            name, source_id, target, check, needs_exe = rows[sig_id]
            if name in seen:
                continue
            wanted = TARGETS.get(target, _NEVER)
            if wanted is not None and ftype not in wanted:
                continue
            if (target in exe_headers.EXE_TARGETS
                    and exe_headers.exe_kind(data, ftype) != exe_headers.EXE_TARGETS[target]):
                continue  # e.g. a Java class, which shares the universal binary's magic
            if needs_exe and not _exe_parsed(subject):
                continue
            if check is not None and not self._confirm(sig_id, check, subject):
                continue
            seen.add(name)
            found.append((name, self.sources[source_id]))
        return found

    def _load_rows(self) -> list:
        table = self._table_raw
        self._rows = table if isinstance(table, RowTable) else json.loads(bytes(table))
        self._table_raw = b""
        return self._rows

    def _confirm(self, sig_id: int, check: list, subject) -> bool:
        kind, n, m, parts = check[:4]
        data, size = subject.data, subject.size
        compiled = self._checks.get(sig_id)
        if compiled is None:
            compiled = self._checks[sig_id] = [
                (gap, re.compile(regex.encode(), re.DOTALL)) for gap, regex in parts
            ]
        first = compiled[0][1]
        if kind == EXE:
            offset_kind, section = check[4:6]
            exe = subject.exe
            if offset_kind == exe_headers.VERSION:  # starts at a version-information key
                starts = sorted(exe.version_info) if exe is not None else ()
                return any(_rest(compiled, data, found.end())
                           for found in (first.match(data, pos) for pos in starts) if found)
            offset = exe_headers.Offset(offset_kind, n, m, section)
            window = exe_headers.resolve_offset(offset, size, exe)
            if window is None:
                return False
            start, shift = window
            found = first.search(data, start)
            if found is None or found.start() > start + shift:
                return False
            return _rest(compiled, data, found.end())
        if kind == ANY:
            found = first.search(data, compiled[0][0])
        elif n > size:
            return False
        else:
            found = first.match(data, n if kind == START else size - n)
        return found is not None and _rest(compiled, data, found.end())


def _rest(compiled: list, data, end: int) -> bool:
    """Whether the parts after the first follow, each after its minimum gap."""
    for gap, rx in compiled[1:]:
        found = rx.search(data, end + gap)
        if found is None:
            return False
        end = found.end()
    return True


def _exe_parsed(subject) -> bool:
    """False when ``subject`` is of an executable type ClamAV fails to parse: it then drops
    every EOF-n and executable-relative offset, whatever the signature's target."""
    return exe_headers.exe_kind(subject.data, subject.ftype) is None or subject.exe is not None


__all__ = ["SECTION", "TARGETS", "BodyMatcher", "BodySig", "compile_body", "macro_patterns",
           "parse_ndb"]
