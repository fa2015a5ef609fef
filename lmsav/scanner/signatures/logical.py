"""Logical signatures (.ldb, .ldu): subsignatures, match counts and expressions, as ClamAV.

``Name;TargetDescription;Expression;Subsig0;Subsig1;…`` names up to 64 subsignatures — hex
patterns (the .ndb syntax, with an optional ``offset:`` and ``::iwfa`` modifiers), PCRE
(pcre.py) or byte compares (bytecmp.py) — and an expression over how often each matched
(logical_expr.py). The target description limits file type, size, entry point, section count
and the containers the file sits in.

Matching mirrors ClamAV's engine, because counts decide verdicts:

* every hex subsignature of every signature is one Hyperscan expression in one database, so a
  file where nothing hits costs one scan;
* a hit is then counted the way ClamAV's Aho-Corasick matcher counts: once per distinct start
  offset, in file order, never counting a start at or before the last one counted; a pattern
  split by ``*`` or ``{n-m}`` gaps into parts follows ClamAV's part-chaining (8 tracked starts
  of each part), so ``AB*CD`` over ``AB CD CD`` counts 2;
* byte compares run next, reading at the trigger's last counted match; PCREs run last, each
  when its trigger expression holds, counted the same way;
* the expression is evaluated for every signature with a hit, and for those whose expression
  holds with no match at all (``0=0``), on every file of their target;
* a macro subsignature ``${min-max}group$`` checks the subsignature before it against the
  .ndb lines with a ``$group$`` offset of the same target (body.macro_patterns), as ClamAV's
  lsig_sub_matched does (see _Tally).

Differences from ClamAV (each skipped with a reason or noted): image fuzzy hashes, icon
groups, handler types and user-written (B)/(L) boundary markers are skipped; a file is matched
whole, where ClamAV counts in 128 KiB windows (a split pattern's last part seen twice in a
window overlap counts twice there); patterns that differ only in an anchored byte's distance
are matched each on its own, where ClamAV lets one stand for all (across signatures); a macro
group member split by gaps joins its group by its first sub-pattern only (ClamAV also lets its
later ones in once other signatures have matched that far).
"""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass, field

import hyperscan

from . import body, bytecmp, exe_headers, hexpattern, logical_expr, logical_hex, pcre
from .clamav_types import KNOWN_TYPES
from .errors import SignatureError
from .hexpattern import MIN_DEPTH
from .hyperscan_rejects import first_rejected
from .levels import FUNCTIONALITY_LEVEL
from .logical_hex import Bad, Part, Skip, atoi, isnumber
from .rowtable import RowTable, pack_rows

MAX_SUBSIGS = logical_expr.MAX_SUBSIGS
TRACKLEN = 8  # starts of each part ClamAV remembers for a split pattern
MACRO_GROUPS = 32
_OFF_NONE = 0xFFFFFFFE  # ClamAV's "no offset" (CLI_OFF_NONE)
_M32 = 0xFFFFFFFF
_NEW_ATTRIBUTES_LEVEL = 51  # attributes beyond Target need Engine:51 or later

TABLE, SIGS, EXPRS, DATABASE, META = "ldb.table", "ldb.sigs", "ldb.exprs", "ldb.hs", "ldb.meta"

# How a Hyperscan hit is used.
PRESENCE, ENDS, CONFIRM = 0, 1, 2


# -- parsed form -------------------------------------------------------------------------------

@dataclass(slots=True)
class Subsig:
    kind: str  # "hex", "pcre", "bcomp" or "macro"
    offset: str = "*"
    variants: list[tuple[bool, list[Part]]] = field(default_factory=list)  # (wide, parts)
    pcre: pcre.PcreSub | None = None
    bcomp: bytecmp.ByteCompare | None = None
    macro: tuple[int, int, int] | None = None  # (least, most distance, group)


@dataclass(slots=True)
class LogicalSig:
    name: str
    source: str
    line: int
    target: int
    expression: list
    subsigs: list[Subsig]
    filesize: tuple[int, int] | None = None
    entry_point: tuple[int, int] | None = None
    sections: tuple[int, int] | None = None
    container: str | None = None
    intermediates: tuple[str, ...] | None = None


# -- parsing -----------------------------------------------------------------------------------

def parse_ldb(text: str, source: str) -> tuple[list[LogicalSig], list[str]]:
    """Signatures lmsav can match, and "source:line: name: reason" for valid ones it skips."""
    sigs, skipped = [], []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the text ended with a newline
    for lineno, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if line.startswith("#"):
            continue
        try:
            sigs.append(_parse_line(line, source, lineno))
        except Skip as why:
            name = line.split(";", 1)[0]
            skipped.append(f"{source}:{lineno}: {name}: {why}")
        except Bad as err:
            raise SignatureError(source, lineno, str(err)) from None
    return sigs, skipped


def _tokenize(line: str, limit: int, pcre_from: int) -> list[str]:
    """Split at ';' except inside a /regex/ of a token at index ``pcre_from`` or later."""
    tokens, current, inside = [], [], False
    for i, ch in enumerate(line):
        if ch == ";" and not inside:
            tokens.append("".join(current))
            current = []
            if len(tokens) == limit:
                return tokens
            continue
        if len(tokens) >= pcre_from and ch == "/" and i > 0 and line[i - 1] != "\\":
            inside = not inside
        current.append(ch)
    tokens.append("".join(current))
    return tokens


def _parse_line(line: str, source: str, lineno: int) -> LogicalSig:
    tokens = _tokenize(line, MAX_SUBSIGS + 4, 2)
    if len(tokens) < 4:
        raise Bad("expected Name;TargetDescription;Expression;Subsig0[;Subsig1…]")
    name = tokens[0].split(" (Clam)")[0]
    if not name:
        raise Bad("empty signature name")
    try:
        expression = logical_expr.parse(tokens[2])
    except logical_expr.ExprError as err:
        raise Bad(f"bad logical expression {tokens[2]!r}: {err}") from None
    count = logical_expr.max_id(expression) + 1
    if count != len(tokens) - 3:
        raise Bad(f"{len(tokens) - 3} subsignatures, but the expression names {count}")
    tdb = _parse_target(tokens[1])  # may skip the signature before its subsignatures are read
    subsigs = []
    reasons = []
    for index, text in enumerate(tokens[3:]):
        try:
            subsigs.append(_parse_subsig(text, index, tdb["Target"]))
        except Skip as why:
            reasons.append(f"subsignature {index}: {why}")
            subsigs.append(Subsig("hex"))
    if reasons:
        raise Skip("; ".join(reasons))
    return LogicalSig(name, source, lineno, tdb["Target"], expression, subsigs,
                      tdb.get("FileSize"), tdb.get("EntryPoint"), tdb.get("NumberOfSections"),
                      tdb.get("Container"), tdb.get("Intermediates"))


_RANGES = ("Engine", "FileSize", "EntryPoint", "NumberOfSections")
_KNOWN_ATTRIBUTES = _RANGES + ("Target", "Container", "Intermediates", "IconGroup1",
                               "IconGroup2", "HandlerType")


def _parse_target(text: str) -> dict:
    """The target description block, checked in ClamAV's order."""
    tdb: dict = {}
    tokens = text.split(",")[:10]  # ClamAV reads at most ten attributes
    new_attributes = False
    for i, token in enumerate(tokens):
        if ":" not in token:
            raise Bad(f"bad attribute {token!r} in the target description: need Name:Value")
        key, value = token.split(":", 1)
        if key not in _KNOWN_ATTRIBUTES:
            raise Skip(f"unknown target description attribute {key!r}")
        if key == "Engine" and i:
            raise Bad("Engine must be the first attribute of the target description")
        if key not in ("Engine", "Target"):
            new_attributes = True
        if key == "Target":
            if not isnumber(value):
                raise Bad(f"bad Target {value!r}: need a number")
            tdb[key] = atoi(value)
        elif key in _RANGES:
            if "-" not in value:
                raise Bad(f"bad {key} {value!r}: need min-max")
            lo, hi = value.split("-", 1)
            if not isnumber(lo) or not isnumber(hi):
                raise Bad(f"bad {key} {value!r}: need min-max")
            tdb[key] = (atoi(lo), atoi(hi))
        elif key in ("Container", "HandlerType"):
            if value not in KNOWN_TYPES:
                raise Skip(f"unknown file type {value!r} in {key}")
            tdb[key] = value
        elif key == "Intermediates":
            layers = [t for t in value.split(">")[:16]]
            for t in layers:
                if t not in KNOWN_TYPES:
                    raise Skip(f"unknown file type {t!r} in Intermediates")
            tdb[key] = tuple(layers)
        else:
            tdb[key] = value
    if not tokens or not text:
        raise Bad("empty target description")
    if new_attributes and ("Engine" not in tdb or tdb["Engine"][0] < _NEW_ATTRIBUTES_LEVEL):
        raise Bad(f"attributes other than Target need Engine:{_NEW_ATTRIBUTES_LEVEL} or later "
                   "as the first attribute")
    if "Engine" in tdb:
        lo, hi = tdb["Engine"]
        if lo > FUNCTIONALITY_LEVEL:
            raise Skip(f"needs engine level {lo} (lmsav: {FUNCTIONALITY_LEVEL})")
        if hi < FUNCTIONALITY_LEVEL:
            raise Skip(f"retired at engine level {hi}")
    if "Target" not in tdb:
        raise Bad("the target description has no Target")
    target = tdb["Target"]
    if target >= body.CLAMAV_TARGETS:
        raise Skip(f"target type {target} is unknown to ClamAV")
    if ("IconGroup1" in tdb or "IconGroup2" in tdb) and target != 1:
        raise Bad("IconGroup is only valid for target 1 (PE)")
    if ("EntryPoint" in tdb or "NumberOfSections" in tdb) and target not in exe_headers.EXE_TARGETS:
        raise Bad("EntryPoint and NumberOfSections are only valid for PE, ELF and Mach-O")
    if body.TARGETS.get(target, frozenset()) == frozenset():
        raise Skip(f"target type {target} is never sniffed by lmsav")
    if "IconGroup1" in tdb or "IconGroup2" in tdb:
        raise Skip("icon groups (.idb icon matching) are not supported")
    if "HandlerType" in tdb:
        raise Skip("HandlerType (re-scan as another type) is not supported")
    return tdb


def _parse_subsig(text: str, index: int, target: int) -> Subsig:
    if text.startswith("$"):
        return Subsig("macro", macro=_parse_macro(text))
    if "/" in text:
        try:
            sub = pcre.parse(text, index)
        except pcre.PcreError as err:
            raise Bad(f"subsignature {index}: {err}") from None
        if pcre.unavailable():
            raise Skip(pcre.unavailable())
        if logical_hex.parse_offset(sub.offset, target).kind == exe_headers.VERSION:
            raise Skip("a PCRE anchored at version information (VI) is not supported")
        return Subsig("pcre", sub.offset, pcre=sub)
    if bytecmp.looks_like(text):
        try:
            return Subsig("bcomp", bcomp=bytecmp.parse(text))
        except bytecmp.ByteCompareError as err:
            raise Bad(f"subsignature {index}: {err}") from None
    if text.startswith("fuzzy_img#"):
        if not re.fullmatch(r"fuzzy_img#[0-9a-fA-F]{16}(#\d+)?", text):
            raise Bad(f"subsignature {index}: bad image fuzzy hash {text!r}")
        raise Skip("image fuzzy hashes are not supported")
    try:
        offset, variants = logical_hex.parse(text, target)
    except Bad as err:
        raise Bad(f"subsignature {index}: {err}") from None
    return Subsig("hex", offset, variants)


def _parse_macro(text: str) -> tuple[int, int, int]:
    """``${min-max}group$`` as ClamAV reads it (sscanf, distances kept in 16 bits)."""
    if not text.endswith("$"):
        raise Bad(f"macro subsignature {text!r} lacks its closing '$'")
    values, i = [], 2
    if text.startswith("${"):
        for after in "-}$":
            found = hexpattern.scan_uint(text, i)
            if found is None:
                break
            values.append(found[0])
            if text[found[1]:found[1] + 1] != after:
                break
            i = found[1] + 1
    if len(values) < 3:
        raise Bad(f"bad macro subsignature {text!r}: need ${{min-max}}group$")
    smin, smax, group = values
    if group >= MACRO_GROUPS:
        raise Bad(f"macro group {group} is out of range (0-{MACRO_GROUPS - 1})")
    return smin & 0xFFFF, smax & 0xFFFF, group


def compile_ldb(sigs: list[LogicalSig]) -> dict[str, bytes]:
    """Sections "ldb.table" (sources, index), "ldb.sigs" and "ldb.exprs" (row tables),
    "ldb.hs" (Hyperscan) and "ldb.meta"."""
    sources = sorted({s.source for s in sigs})
    source_ids = {s: i for i, s in enumerate(sources)}
    rows, expressions = [], []  # expressions: (regex, flags, ext, [sig, subsig, mode, length])
    for sig_id, sig in enumerate(sigs):
        rows.append(_sig_row(sig, source_ids[sig.source]))
        sensitive = _count_sensitive(sig)
        for j, sub in enumerate(sig.subsigs):
            if sub.kind != "hex":
                continue
            for wide, parts in sub.variants:
                expressions.append(_expression(sig_id, j, sub, parts, j in sensitive))
    hs_blob, skipped = _compile_hyperscan(expressions, sigs)
    # Rows and expressions are read in place (rowtable): a process decodes only what hits.
    sig_rows, sig_index = pack_rows(rows)
    expr_rows, expr_index = pack_rows([e[3] for e in expressions])
    table = {"sources": sources, "always": [i for i, s in enumerate(sigs) if _always(s)],
             "sig_index": sig_index, "expr_index": expr_index}
    meta = {"count": len(sigs), "skipped": skipped}
    return {TABLE: json.dumps(table, separators=(",", ":")).encode(), SIGS: sig_rows,
            EXPRS: expr_rows, DATABASE: hs_blob, META: json.dumps(meta).encode()}


def _sig_row(sig: LogicalSig, source_id: int) -> dict:
    subs = []
    for sub in sig.subsigs:
        if sub.kind == "hex":
            subs.append(["h", sub.offset, [[w, [p.row() for p in parts]]
                                           for w, parts in sub.variants]])
        elif sub.kind == "pcre":
            subs.append(["p", sub.offset, sub.pcre.to_row()])
        elif sub.kind == "macro":
            subs.append(["m", "*", list(sub.macro)])
        else:
            subs.append(["b", "*", sub.bcomp.to_row()])
    return {"n": sig.name, "s": source_id, "t": sig.target, "e": sig.expression, "ss": subs,
            "fs": sig.filesize, "ep": sig.entry_point, "ns": sig.sections,
            "c": sig.container, "im": sig.intermediates}


def _count_sensitive(sig: LogicalSig) -> set[int]:
    """Subsignatures whose every match matters (counts, or offsets a byte compare reads)."""
    out = logical_expr.count_sensitive(sig.expression)
    for j, sub in enumerate(sig.subsigs):
        if sub.kind == "pcre":
            out |= logical_expr.count_sensitive(sub.pcre.trigger)
        elif sub.kind == "bcomp":
            out.add(sub.bcomp.ref)
        elif sub.kind == "macro" and j:
            out.add(j - 1)  # each later match of it checks the macro
    return out


def _always(sig: LogicalSig) -> bool:
    """Can the signature match a file where no hex subsignature hits? (``0=0``, ``0<1`` …)"""
    zeros = [0] * len(sig.subsigs)
    if logical_expr.matches(sig.expression, zeros):
        return True
    return any(s.kind == "pcre" and logical_expr.matches(s.pcre.trigger, zeros)
               for s in sig.subsigs)


_FLAGS = hyperscan.HS_FLAG_DOTALL
_NO_EXT = hyperscan.ExpressionExt(flags=0)


def _expression(sig_id: int, j: int, sub: Subsig, parts: list[Part], sensitive: bool) -> list:
    """[regex, flags, ext, [sig, subsig, mode, length, report]] for one variant of a hex
    subsignature; ``report``: from a match's start to where ClamAV reports it."""
    one = parts[0]
    plain = (len(parts) == 1 and one.regex == one.hs and one.length > 0 and not one.left
             and not one.right and not one.word_left and not one.word_right and one.lead >= 0)
    report = one.lead + one.depth
    if plain and not sensitive and sub.offset == "*":
        return [one.hs, _FLAGS | hyperscan.HS_FLAG_SINGLEMATCH, _NO_EXT,
                [sig_id, j, PRESENCE, one.length, report]]
    if plain:
        return [one.hs, _FLAGS, _NO_EXT, [sig_id, j, ENDS, one.length, report]]
    # A superset of the subsignature (parts joined by their gaps' lower bounds) triggers the
    # exact count in Python.
    pieces = []
    for k, p in enumerate(parts):
        if k:
            near = 0 < p.mindist <= hexpattern.REPEAT_LIMIT
            pieces.append(f".{{{p.mindist},}}" if near else ".*")
        pieces.append(f"(?:{p.hs})")
    return ["".join(pieces), _FLAGS | hyperscan.HS_FLAG_SINGLEMATCH, _NO_EXT,
            [sig_id, j, CONFIRM, -1, 0]]


def _compile_hyperscan(expressions: list[list], sigs: list[LogicalSig]) -> tuple[bytes, list]:
    if not expressions:
        return b"", []
    flags = [e[1] for e in expressions]
    for attempt in range(len(expressions) + 1):
        try:
            return hyperscan.dumpb(_build(expressions, flags)), []
        except hyperscan.error:
            bad = first_rejected(list(range(len(expressions))),
                                 lambda ids: _build(expressions, flags, ids))
            if bad is None:
                raise SignatureError(sigs[0].source, 0,
                                     "Hyperscan cannot compile the logical signatures together")
            sig = sigs[expressions[bad][3][0]]
            if flags[bad] & hyperscan.HS_FLAG_PREFILTER:
                raise SignatureError(sig.source, sig.line,
                                     f"{sig.name}: Hyperscan cannot compile a subsignature")
            # Prefilter mode accepts more; the hit is then always counted in Python.
            flags[bad] |= hyperscan.HS_FLAG_PREFILTER | hyperscan.HS_FLAG_SINGLEMATCH
            expressions[bad][3][2] = CONFIRM
    raise SignatureError(sigs[0].source, 0, "Hyperscan cannot compile the logical signatures")


def _build(expressions: list[list], flags: list[int], only: list[int] | None = None):
    ids = list(range(len(expressions))) if only is None else only
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[expressions[i][0].encode() for i in ids], ids=ids,
               elements=len(ids), flags=[flags[i] for i in ids],
               ext=[expressions[i][2] for i in ids])
    return db


# -- matching ----------------------------------------------------------------------------------

def _collect(expr_id, start, end, flags, hits):
    hits.append((expr_id, end))


class LogicalMatcher:
    """Matches the compiled logical signatures; cheap to build, tables load on first use."""

    def __init__(self, section):
        meta = bytes(section(META))
        info = json.loads(meta) if meta else {"count": 0, "skipped": []}
        self.count: int = info["count"]
        self.skipped: list[str] = info["skipped"]
        self._section = section
        self._table: dict | None = None
        self._db = None
        self._scratch = None
        self._pid = 0
        self._regexes: dict = {}
        self._macros: dict | None = None  # (target, group) → first parts of .ndb members

    def _load(self) -> dict:
        table = json.loads(bytes(self._section(TABLE)))
        table["sigs"] = RowTable(self._section(SIGS), table["sig_index"])
        table["exprs"] = RowTable(self._section(EXPRS), table["expr_index"])
        self._table = table
        blob = bytes(self._section(DATABASE))
        self._db = hyperscan.loadb(blob, hyperscan.HS_MODE_BLOCK) if blob else None
        return self._table

    def match(self, subject) -> list[tuple[str, str]]:
        """(name, source) of each logical signature matching ``subject``."""
        if not self.count:
            return []
        table = self._table if self._table is not None else self._load()
        hits: dict[int, list] = {}
        if self._db is not None:
            if self._pid != os.getpid():
                # Scratch space is per process: a forked child must not share its parent's.
                self._scratch = hyperscan.Scratch(self._db)
                self._pid = os.getpid()
            raw: list = []
            self._db.scan(subject.data, match_event_handler=_collect, context=raw,
                          scratch=self._scratch)
            exprs = table["exprs"]
            for expr_id, end in raw:
                sig_id = exprs[expr_id][0]
                hits.setdefault(sig_id, []).append((expr_id, end))
        candidates = set(hits) | set(table["always"])
        found = []
        for sig_id in sorted(candidates):
            row = table["sigs"][sig_id]
            target = row["t"]
            wanted = body.TARGETS.get(target, frozenset())
            if wanted is not None and subject.ftype not in wanted:
                continue
            if target in exe_headers.EXE_TARGETS and exe_headers.exe_kind(
                    subject.data, subject.ftype) != exe_headers.EXE_TARGETS[target]:
                continue  # e.g. a Java class, which shares the universal binary's magic
            if not _context_ok(row, subject):
                continue
            if self._evaluate(row, table["exprs"], hits.get(sig_id, []), subject):
                found.append((row["n"], table["sources"][row["s"]]))
        return found

    def _evaluate(self, row: dict, exprs: list, hits: list, subject) -> bool:
        subs = row["ss"]
        # Subsignature j followed by a macro subsignature j+1: its matches check the macro.
        links = {j - 1: sub[2] for j, sub in enumerate(subs) if sub[0] == "m" and j}
        tally = _Tally(len(subs), links)
        macros = _MacroTrack(self, row["t"], subject)
        by_subsig: dict[int, list] = {}
        for expr_id, end in hits:
            info = exprs[expr_id]
            report = info[4] if len(info) > 4 else 0
            by_subsig.setdefault(info[1], []).append((info[2], info[3], end, report))
        linked: list[tuple[int, int, bool, int]] = []  # (report, offset, partial, subsig)
        for j, found in by_subsig.items():
            sub = subs[j]
            window = _window(sub[1], row["t"], subject)
            if window is _NEVER:
                continue
            if all(mode == PRESENCE for mode, _, _, _ in found):
                tally.counts[j] = 1
                continue
            events = sorted(self._events(sub, found, subject, window), key=lambda e: e[0])
            if j in links:
                linked += [(report, offset, partial, j) for report, offset, partial in events]
            else:
                for _, offset, partial in events:
                    tally.add(j, offset, partial)
        # In the order ClamAV reports them, each seeing the macro matches reported before it.
        for report, offset, partial, j in sorted(linked, key=lambda e: e[0]):
            tally.add(j, offset, partial, lambda group, at=report: macros.before(group, at))
        size = subject.size
        for j, sub in enumerate(subs):
            if sub[0] == "b":
                bc = bytecmp.ByteCompare.from_row(sub[2])
                if bc.ref < len(subs) and tally.counts[bc.ref]:
                    at = tally.last[bc.ref]
                    if bytecmp.check(bc, subject.data, size, at if at is not None else 0):
                        tally.counts[j] += 1
        for j, sub in enumerate(subs):
            if sub[0] == "p":
                ps = pcre.PcreSub.from_row(sub[2])
                if not logical_expr.matches(ps.trigger, tally.counts):
                    continue
                window = _window(sub[1], row["t"], subject)
                if window is _NEVER:
                    continue
                regex = self._regex(ps)
                if regex is None:
                    continue
                shift = None if window is _ANY else (window[0], window[1] - window[0])
                for start in pcre.run(regex, ps, subject.data, size, shift, window is _ANY):
                    tally.add(j, start, False, macros.last)
        tally.finish(macros.last)
        return logical_expr.matches(row["e"], tally.counts)

    def macro_parts(self) -> dict:
        """(target, group) → the first sub-pattern of each .ndb macro group member."""
        if self._macros is None:
            self._macros = {}
            for target, group, hexsig in body.macro_patterns(self._section(body.SECTION)):
                # A member's later sub-patterns count only after other signatures' partial
                # matches (ClamAV's min_partno); the first one always does.
                _offset, variants = logical_hex.parse(hexsig, target)
                first = variants[0][1][0]
                self._macros.setdefault((target, group), []).append(first)
        return self._macros

    def _regex(self, ps: pcre.PcreSub):
        key = (ps.pattern, ps.options)
        if key not in self._regexes:
            try:
                self._regexes[key] = pcre.compile_pattern(ps.pattern, ps.options)
            except pcre.PcreError:
                self._regexes[key] = None
        return self._regexes[key]

    def _events(self, sub: list, found: list, subject, window) -> list:
        """(report position, start offset, partial) of every match ClamAV would report."""
        data = subject.data
        events = []
        ends_by_length: dict[tuple[int, int], list[int]] = {}
        confirm = False
        for mode, length, end, report in found:
            if mode == ENDS:
                ends_by_length.setdefault((length, report), []).append(end)
            else:
                confirm = True
        if ends_by_length and not confirm:
            for (length, report), ends in ends_by_length.items():
                for end in ends:
                    start = end - length
                    if _inside(window, start):
                        events.append((start + report, start, False))
            return events
        for wide, parts in sub[2]:
            parsed = [_part_from_row(p) for p in parts]
            if len(parsed) == 1:
                for start, _, report in self._part_matches(parsed[0], data, wide, subject.size):
                    if _inside(window, start):
                        events.append((report, start, False))
            else:
                per_part = [self._part_matches(p, data, wide, subject.size) for p in parsed]
                events += _chain(parsed, per_part, window)
        return events

    def _part_matches(self, part: Part, data, wide: bool,
                      size: int) -> list[tuple[int, int, int]]:
        """(start, end, report position) of each match of one part, ClamAV's checks applied."""
        rx = self._regexes.get(part.regex)
        if rx is None:
            rx = self._regexes[part.regex] = re.compile(part.regex.encode(), re.DOTALL)
        back = None
        if part.prefix:
            back = self._regexes.get(part.prefix[0])
            if back is None:
                back = self._regexes[part.prefix[0]] = re.compile(part.prefix[0].encode(),
                                                                  re.DOTALL)
        out = []
        for start, end in _every_start(rx, data):
            report = (start if part.lead < 0 else start + part.lead) + part.depth
            if back is not None:
                # The prefix is matched backwards from the trie start, as ClamAV does.
                chunk = bytes(data[max(0, start - part.prefix[1]):start])[::-1]
                found = back.match(chunk)
                if found is None:
                    continue
                start -= found.end()
            if part.left and not _anchor_ok(part.left, data, start - 1, -1, size):
                continue
            if part.right and not _anchor_ok(part.right, data, end, 1, size):
                continue
            if part.word_left and not _word_left(data, start, wide):
                continue
            if part.word_right and not _word_right(data, end, wide, size):
                continue
            out.append((start, end, report))
        return out


def _every_start(rx: re.Pattern, data):
    """(start, end) of a match at every offset where one starts, overlapping ones included.

    One search per match keeps ``re``'s fast scan for a literal prefix, which a lookahead
    tried at every offset would lose.
    """
    pos = 0
    while True:
        found = rx.search(data, pos)
        if found is None:
            return
        yield found.start(), found.end()
        pos = found.start() + 1


def _part_from_row(row: list) -> Part:
    lead, depth = row[9:11] if len(row) > 10 else (0, MIN_DEPTH)
    return Part(row[0], row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8],
                lead, depth)


class _Tally:
    """ClamAV's bookkeeping of one signature's subsignature matches (lsig_sub_matched).

    A match counts only past the last counted offset (a split pattern's report may repeat it).
    When a macro subsignature ``${min-max}g$`` follows subsignature j, every later counted match
    of j checks the previous one: the last match of macro group g reported so far must start
    min…max bytes after it, or that previous match is taken back; when it does, the macro
    subsignature counts one. The check runs once more at the end (``finish``), which is why a
    single match of j never satisfies a macro.
    """

    def __init__(self, size: int, links: dict[int, list]):
        self.counts = [0] * size
        self.last: list[int | None] = [None] * size
        self._links = links

    def add(self, j: int, offset: int, partial: bool, macro_last=None) -> None:
        last = self.last[j]
        if last is not None and (offset < last if partial else offset <= last):
            return
        self.counts[j] += 1
        if self.counts[j] <= 1 or j not in self._links:
            self.last[j] = offset
        self._check(j, offset, macro_last)

    def finish(self, macro_last) -> None:
        for j in range(len(self.counts)):
            self._check(j, None, macro_last)

    def _check(self, j: int, offset: int | None, macro_last) -> None:
        link = self._links.get(j)
        if link is None or self.counts[j] <= 1:
            return
        least, most, group = link
        macro = macro_last(group)
        previous = _OFF_NONE if self.last[j] is None else self.last[j]
        if (macro is None or (previous + least) & _M32 > macro
                or (previous + most) & _M32 < macro):
            self.counts[j] -= 1
            self.last[j] = offset
        else:
            self.counts[j + 1] += 1
            self.last[j + 1] = macro


class _MacroTrack:
    """Where the .ndb macro group members of one target match in one subject, found only when
    a macro check asks: (report position, start) in report order, per group."""

    def __init__(self, matcher: LogicalMatcher, target: int, subject):
        self._matcher = matcher
        self._target = target
        self._subject = subject
        self._events: dict[int, list[tuple[int, int]]] = {}

    def _of(self, group: int) -> list[tuple[int, int]]:
        found = self._events.get(group)
        if found is None:
            subject = self._subject
            found = []
            for part in self._matcher.macro_parts().get((self._target, group), ()):
                for start, _, report in self._matcher._part_matches(part, subject.data, False,
                                                                    subject.size):
                    found.append((report, start))
            found.sort()
            self._events[group] = found
        return found

    def before(self, group: int, report: int) -> int | None:
        """Start of the group's last match reported before ``report``, or None. A member
        reported at the same position comes after: ClamAV handles the subsignature's pattern
        first there (checked with clamscan)."""
        events = self._of(group)
        i = bisect.bisect_left(events, (report, -1))
        return events[i - 1][1] if i else None

    def last(self, group: int) -> int | None:
        """Start of the group's last match in the subject, or None."""
        events = self._of(group)
        return events[-1][1] if events else None


def _chain(parts: list[Part], per_part: list[list], window) -> list:
    """Reports of a split pattern, replaying ClamAV's bookkeeping of part matches.

    Each part keeps the ends of its last TRACKLEN matches (a ring whose first slot stays put);
    a match of part k chains to the first remembered end of part k-1 it may follow; the last
    part reports the start of the first part's first slot, which part 2 swaps to the slot it
    chained to.
    """
    total = len(parts)
    events = sorted((start, k, end, report) for k, matches in enumerate(per_part)
                    for start, end, report in matches)
    slots: list[list[int]] | None = None
    reports = []
    for start, k, end, report in events:
        if k == 0 and not _inside(window, start):
            continue
        if k and (slots is None or not slots[k - 1][0]):
            continue
        if slots is None:
            slots = [[0] + [-1] * (TRACKLEN + 1) for _ in range(total)]
        found = 0
        if k:
            part = parts[k]
            prev = slots[k - 1]
            for j in range(1, TRACKLEN + 2):
                if prev[j] == -1:
                    break
                ok = start >= prev[j]
                if ok and part.maxdist and start - prev[j] > part.maxdist:
                    ok = False
                if ok and part.mindist and start - prev[j] < part.mindist:
                    ok = False
                if ok:
                    found = j
                    break
        if k == 1 and found > 1:
            first, realoffs = slots[0], slots[total - 1]
            first[1], first[found] = first[found], first[1]
            realoffs[1], realoffs[found] = realoffs[found], realoffs[1]
        if k == 0 or (found and k != total - 1):
            own = slots[k]
            if own[0] == TRACKLEN + 1:
                own[0] = 1  # the ring wraps to slot 2, keeping slot 1
            own[0] += 1
            own[own[0]] = end
            if k == 0:
                slots[total - 1][own[0]] = start
        elif found and k == total - 1:
            reports.append((report, slots[total - 1][1], True))
    return reports


def _anchor_ok(anchor: list, data, edge: int, step: int, size: int) -> bool:
    allowed, n, m = anchor
    for distance in range(n, m + 1):
        pos = edge + step * distance
        if pos < 0 or pos >= size:
            return False
        if data[pos] in allowed:
            return True
    return False


def _alnum(b: int) -> bool:
    return 0x30 <= b <= 0x39 or 0x41 <= (b & ~0x20) <= 0x5A


def _word_left(data, start: int, wide: bool) -> bool:
    """ClamAV's left fullword check (its wide form toggles twice, kept as it is)."""
    if start == 0:
        return True
    if not wide:
        return not _alnum(data[start - 1])
    ok = False
    if start == 1:
        ok = not ok
    if start >= 2 and not (_alnum(data[start - 2]) and data[start - 1] == 0):
        ok = not ok
    return ok


def _word_right(data, end: int, wide: bool, size: int) -> bool:
    if end == size:
        return True
    if wide and end + 1 < size:
        return not (_alnum(data[end]) and data[end + 1] == 0)
    return not _alnum(data[end])


_ANY, _NEVER = "any", "never"


def _window(offset: str, target: int, subject):
    """Where a match may start: (first, last), a frozenset of starts (VI), _ANY, or _NEVER
    (e.g. EOF-n in a shorter file, EP+n in a file that is no executable)."""
    if offset == "*":
        return _ANY
    parsed = exe_headers.parse_offset(offset, target)
    exe, failed = None, False
    # EOF- and executable-relative offsets fail in an executable ClamAV cannot parse.
    if (parsed.kind not in (exe_headers.ANY, exe_headers.ABSOLUTE)
            and exe_headers.exe_kind(subject.data, subject.ftype) is not None):
        exe = subject.exe
        failed = exe is None
    if parsed.kind == exe_headers.VERSION:
        return exe.version_info if exe is not None else _NEVER
    found = exe_headers.resolve_offset(parsed, subject.size, exe, failed)
    if found is None:
        return _NEVER
    return found[0], found[0] + found[1]


def _inside(window, start: int) -> bool:
    if window is _ANY:
        return True
    if isinstance(window, frozenset):
        return start in window
    return window[0] <= start <= window[1]


def _context_ok(row: dict, subject) -> bool:
    """Target description conditions other than the file type."""
    if row["c"] is not None and row["c"] != subject.container:
        return False
    layers = row["im"]
    if layers is not None:
        ancestry = subject.ancestry
        if len(ancestry) < len(layers):
            return False
        for want, have in zip(reversed(layers), reversed(ancestry)):
            if want != "CL_TYPE_ANY" and want != have:
                return False
    if row["fs"] is not None and not row["fs"][0] <= subject.size <= row["fs"][1]:
        return False
    if row["ep"] is not None or row["ns"] is not None:
        exe = subject.exe
        if exe is None:
            return False
        if row["ep"] is not None and not row["ep"][0] <= exe.entry_point <= row["ep"][1]:
            return False
        if row["ns"] is not None and not row["ns"][0] <= len(exe.sections) <= row["ns"][1]:
            return False
    return True


__all__ = ["LogicalMatcher", "LogicalSig", "compile_ldb", "parse_ldb"]
