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

from . import body, bytecmp, executable, logical_expr, pcre
from .errors import SignatureError
from .filetypes import KNOWN_TYPES
from .rowtable import RowTable, pack_rows

ENGINE_LEVEL = body.ENGINE_LEVEL
MAX_SUBSIGS = logical_expr.MAX_SUBSIGS
TRACKLEN = 8  # starts of each part ClamAV remembers for a split pattern
MIN_DEPTH = body.MIN_DEPTH  # ClamAV's shortest Aho-Corasick pattern
MAX_DEPTH = 3  # bytes of a pattern in ClamAV's trie: a match is reported after them
MACRO_GROUPS = 32
_OFF_NONE = 0xFFFFFFFE  # ClamAV's "no offset" (CLI_OFF_NONE)
_M32 = 0xFFFFFFFF
_NEW_ATTRIBUTES_LEVEL = 51  # attributes beyond Target need Engine:51 or later
_EXE_TARGETS = frozenset({1, 6, 9})
_EXE_KIND = {1: "pe", 6: "elf", 9: "macho"}  # ClamAV's executable targets

TABLE, SIGS, EXPRS, DATABASE, META = "ldb.table", "ldb.sigs", "ldb.exprs", "ldb.hs", "ldb.meta"

# How a Hyperscan hit is used.
PRESENCE, ENDS, CONFIRM = 0, 1, 2

_HEXPAIR = re.compile(r"[0-9a-fA-F?]{2}")
_BOUNDARY = re.compile(r"\((B|L|W)\)")
_SMALL_GAP = re.compile(r"\{\s*\+?(\d+)\}")


class _Skip(Exception):
    """A valid signature lmsav does not use; the message is the reason."""


class _Bad(Exception):
    """Not a valid .ldb line (ClamAV refuses the whole database)."""


# -- parsed form -------------------------------------------------------------------------------

@dataclass(slots=True)
class Part:
    """One Aho-Corasick pattern of a hex subsignature (split at * and {n-m} gaps)."""

    regex: str  # exact Python regex of the part's bytes
    hs: str  # what Hyperscan compiles (the same or a superset)
    length: int  # fixed length, or -1 when it varies
    mindist: int = 0  # gap from the previous part's end (0: none)
    maxdist: int = 0  # 0: unbounded
    left: list | None = None  # anchored byte before: [allowed bytes, n, m]
    right: list | None = None  # anchored byte after: [allowed bytes, n, m]
    word_left: bool = False  # fullword boundary markers
    word_right: bool = False
    prefix: list | None = None  # [reversed regex, widest length]: matched backwards (see
    # _trie_start) because it holds alternatives of different lengths
    lead: int = 0  # bytes from the match start to ClamAV's trie start; -1: where ``regex``
    # starts (after a prefix matched backwards)
    depth: int = MIN_DEPTH  # fixed bytes at the trie start: ClamAV reports a match after them

    def row(self) -> list:
        return [self.regex, self.length, self.mindist, self.maxdist, self.left, self.right,
                self.word_left, self.word_right, self.prefix, self.lead, self.depth]


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
        except _Skip as why:
            name = line.split(";", 1)[0]
            skipped.append(f"{source}:{lineno}: {name}: {why}")
        except _Bad as err:
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
        raise _Bad("expected Name;TargetDescription;Expression;Subsig0[;Subsig1…]")
    name = tokens[0].split(" (Clam)")[0]
    if not name:
        raise _Bad("empty signature name")
    try:
        expression = logical_expr.parse(tokens[2])
    except logical_expr.ExprError as err:
        raise _Bad(f"bad logical expression {tokens[2]!r}: {err}") from None
    count = logical_expr.max_id(expression) + 1
    if count != len(tokens) - 3:
        raise _Bad(f"{len(tokens) - 3} subsignatures, but the expression names {count}")
    tdb = _parse_target(tokens[1])  # may skip the signature before its subsignatures are read
    subsigs = []
    reasons = []
    for index, text in enumerate(tokens[3:]):
        try:
            subsigs.append(_parse_subsig(text, index, tdb["Target"]))
        except _Skip as why:
            reasons.append(f"subsignature {index}: {why}")
            subsigs.append(Subsig("hex"))
    if reasons:
        raise _Skip("; ".join(reasons))
    return LogicalSig(name, source, lineno, tdb["Target"], expression, subsigs,
                      tdb.get("FileSize"), tdb.get("EntryPoint"), tdb.get("NumberOfSections"),
                      tdb.get("Container"), tdb.get("Intermediates"))


_RANGES = ("Engine", "FileSize", "EntryPoint", "NumberOfSections")
_KNOWN_ATTRIBUTES = _RANGES + ("Target", "Container", "Intermediates", "IconGroup1",
                               "IconGroup2", "HandlerType")


def _isnumber(text: str) -> bool:
    return all(c in "0123456789" for c in text)  # ClamAV's test: "" counts as a number


def _atoi(text: str) -> int:
    found = re.match(r"\s*[+-]?\d+", text)
    return int(found[0]) if found else 0


def _parse_target(text: str) -> dict:
    """The target description block, checked in ClamAV's order."""
    tdb: dict = {}
    tokens = text.split(",")[:10]  # ClamAV reads at most ten attributes
    new_attributes = False
    for i, token in enumerate(tokens):
        if ":" not in token:
            raise _Bad(f"bad attribute {token!r} in the target description: need Name:Value")
        key, value = token.split(":", 1)
        if key not in _KNOWN_ATTRIBUTES:
            raise _Skip(f"unknown target description attribute {key!r}")
        if key == "Engine" and i:
            raise _Bad("Engine must be the first attribute of the target description")
        if key not in ("Engine", "Target"):
            new_attributes = True
        if key == "Target":
            if not _isnumber(value):
                raise _Bad(f"bad Target {value!r}: need a number")
            tdb[key] = _atoi(value)
        elif key in _RANGES:
            if "-" not in value:
                raise _Bad(f"bad {key} {value!r}: need min-max")
            lo, hi = value.split("-", 1)
            if not _isnumber(lo) or not _isnumber(hi):
                raise _Bad(f"bad {key} {value!r}: need min-max")
            tdb[key] = (_atoi(lo), _atoi(hi))
        elif key in ("Container", "HandlerType"):
            if value not in KNOWN_TYPES:
                raise _Skip(f"unknown file type {value!r} in {key}")
            tdb[key] = value
        elif key == "Intermediates":
            layers = [t for t in value.split(">")[:16]]
            for t in layers:
                if t not in KNOWN_TYPES:
                    raise _Skip(f"unknown file type {t!r} in Intermediates")
            tdb[key] = tuple(layers)
        else:
            tdb[key] = value
    if not tokens or not text:
        raise _Bad("empty target description")
    if new_attributes and ("Engine" not in tdb or tdb["Engine"][0] < _NEW_ATTRIBUTES_LEVEL):
        raise _Bad(f"attributes other than Target need Engine:{_NEW_ATTRIBUTES_LEVEL} or later "
                   "as the first attribute")
    if "Engine" in tdb:
        lo, hi = tdb["Engine"]
        if lo > ENGINE_LEVEL:
            raise _Skip(f"needs engine level {lo} (lmsav: {ENGINE_LEVEL})")
        if hi < ENGINE_LEVEL:
            raise _Skip(f"retired at engine level {hi}")
    if "Target" not in tdb:
        raise _Bad("the target description has no Target")
    target = tdb["Target"]
    if target >= 15:
        raise _Skip(f"target type {target} is unknown to ClamAV")
    if ("IconGroup1" in tdb or "IconGroup2" in tdb) and target != 1:
        raise _Bad("IconGroup is only valid for target 1 (PE)")
    if ("EntryPoint" in tdb or "NumberOfSections" in tdb) and target not in _EXE_TARGETS:
        raise _Bad("EntryPoint and NumberOfSections are only valid for PE, ELF and Mach-O")
    if body.TARGETS.get(target, frozenset()) == frozenset():
        raise _Skip(f"target type {target} is never sniffed by lmsav")
    if "IconGroup1" in tdb or "IconGroup2" in tdb:
        raise _Skip("icon groups (.idb icon matching) are not supported")
    if "HandlerType" in tdb:
        raise _Skip("HandlerType (re-scan as another type) is not supported")
    return tdb


def _parse_subsig(text: str, index: int, target: int) -> Subsig:
    if text.startswith("$"):
        return Subsig("macro", macro=_parse_macro(text))
    if "/" in text:
        try:
            sub = pcre.parse(text, index)
        except pcre.PcreError as err:
            raise _Bad(f"subsignature {index}: {err}") from None
        if pcre.unavailable():
            raise _Skip(pcre.unavailable())
        if _offset(sub.offset, target).kind == executable.VERSION:
            raise _Skip("a PCRE anchored at version information (VI) is not supported")
        return Subsig("pcre", sub.offset, pcre=sub)
    if bytecmp.looks_like(text):
        try:
            return Subsig("bcomp", bcomp=bytecmp.parse(text))
        except bytecmp.ByteCompareError as err:
            raise _Bad(f"subsignature {index}: {err}") from None
    if text.startswith("fuzzy_img#"):
        if not re.fullmatch(r"fuzzy_img#[0-9a-fA-F]{16}(#\d+)?", text):
            raise _Bad(f"subsignature {index}: bad image fuzzy hash {text!r}")
        raise _Skip("image fuzzy hashes are not supported")
    try:
        return _parse_hex_subsig(text, target)
    except _Bad as err:
        raise _Bad(f"subsignature {index}: {err}") from None


def _parse_macro(text: str) -> tuple[int, int, int]:
    """``${min-max}group$`` as ClamAV reads it (sscanf, distances kept in 16 bits)."""
    if not text.endswith("$"):
        raise _Bad(f"macro subsignature {text!r} lacks its closing '$'")
    values, i = [], 2
    if text.startswith("${"):
        for after in "-}$":
            found = body.scan_uint(text, i)
            if found is None:
                break
            values.append(found[0])
            if text[found[1]:found[1] + 1] != after:
                break
            i = found[1] + 1
    if len(values) < 3:
        raise _Bad(f"bad macro subsignature {text!r}: need ${{min-max}}group$")
    smin, smax, group = values
    if group >= MACRO_GROUPS:
        raise _Bad(f"macro group {group} is out of range (0-{MACRO_GROUPS - 1})")
    return smin & 0xFFFF, smax & 0xFFFF, group


def macro_pattern_problem(hexsig: str, target: int) -> str:
    """Why an .ndb macro group member (matched here, its first sub-pattern on its own) cannot
    be used, or "" when it can; ValueError where ClamAV refuses the pattern."""
    try:
        _parse_hex_subsig(hexsig, target)
    except _Skip as why:
        return str(why)
    except _Bad as err:
        raise ValueError(str(err)) from None
    return ""


def _offset(text: str, target: int) -> executable.Offset:
    try:
        found = executable.parse_offset(text, target)
    except ValueError as err:
        raise _Bad(str(err)) from None
    if found.kind == executable.MACRO:  # a subsignature starting with '$' is a macro one
        raise _Bad(f"macro offset {text!r} in a logical subsignature")
    return found


_OPTIONS = {"i": "nocase", "f": "fullword", "w": "wide", "a": "ascii"}


def _parse_hex_subsig(text: str, target: int) -> Subsig:
    tokens = text.split(":")
    if len(tokens) > 4:
        tokens = tokens[:1]  # ClamAV then reads only the first field, without offset or options
    offset = tokens[0] if len(tokens) % 2 == 0 else "*"
    hexsig = tokens[1] if len(tokens) % 2 == 0 else tokens[0]
    options = tokens[-1] if len(tokens) >= 3 else ""
    for ch in options:
        if ch not in _OPTIONS:
            raise _Bad(f"unknown subsignature modifier {ch!r}")
    _offset(offset, target)
    variants = []
    for variant, wide in _variants(hexsig, set(options)):
        if "!" in variant and options:
            raise _Bad("negated alternatives cannot take modifiers")
        variants.append((wide, _parts(variant, "i" in options, wide, target, not options)))
    return Subsig("hex", offset, variants)


def _variants(hexsig: str, options: set[str]) -> list[tuple[str, bool]]:
    """The hex strings ClamAV adds for one subsignature, after fullword and wide rewriting."""
    if "f" in options:
        if hexsig.count("[") != hexsig.count("]"):
            raise _Bad("unmatched '['")
        hexsig = "(W)" + hexsig.replace("[", "{").replace("]", "}") + "(W)"
    if "w" not in options:
        return [(hexsig, False)]
    out = [(_widen(hexsig), True)]
    if "a" in options:
        out.append((hexsig, False))
    return out


def _widen(hexsig: str) -> str:
    """Each byte followed by 00; gaps, alternatives and markers kept (ClamAV's wide rewrite)."""
    out, i, n = [], 0, len(hexsig)
    while i < n:
        ch = hexsig[i]
        if ch in "*|)":
            out.append(ch)
        elif ch in "[{":
            close = "]" if ch == "[" else "}"
            end = hexsig.find(close, i)
            end = n if end < 0 else end
            out.append("{" + hexsig[i + 1:end] + "}")
            i = end
        elif ch in "!(":
            if ch == "!":
                out.append("!")
                i += 1
            out.append(hexsig[i:i + 1])
            if i + 2 >= n:
                raise _Bad("truncated alternative")
            if hexsig[i + 1] in "BLW":
                if hexsig[i + 2] != ")":
                    raise _Bad(f"bad marker in {hexsig!r}")
                out.append(hexsig[i + 1:i + 3])
                i += 2
        else:
            out.append(hexsig[i:i + 2] + "00")
            i += 1
        i += 1
    return "".join(out)


def _parts(hexsig: str, nocase: bool, wide: bool, target: int, plain: bool) -> list[Part]:
    """Split like ClamAV: small {n} become ??; other {…} and * separate Aho-Corasick parts."""
    while True:
        brace = hexsig.find("{")
        if brace < 0:
            break
        small = _SMALL_GAP.match(hexsig, brace)
        if not small or not 0 < int(small[1]) < 128:
            break
        close = hexsig.find("}", brace)
        hexsig = hexsig[:brace] + "??" * int(small[1]) + hexsig[close + 1:]
    if "{" not in hexsig and "*" not in hexsig:
        return [_part(hexsig, nocase, wide, 0, 0, target, plain)]
    depth = 0
    for ch in hexsig:
        depth += (ch == "(") - (ch == ")")
        if depth and ch in "{*":
            raise _Bad("an alternative cannot contain a gap")
    if hexsig.count("{") != hexsig.count("}"):
        raise _Bad("unmatched '{'")
    # An empty piece (leading, trailing or doubled gap) is refused as too short below.
    pieces = re.split(r"(\{[^}]*\}|\*)", hexsig)
    texts, gaps = pieces[0::2], pieces[1::2]
    parts, lo, hi = [], 0, 0
    for k, text in enumerate(texts):
        parts.append(_part(text, nocase, wide, lo, hi, target, plain))
        if k < len(gaps):
            lo, hi = _gap(gaps[k])
    return parts


def _gap(text: str) -> tuple[int, int]:
    """(mindist, maxdist) of a part gap; 0 means no bound, as in ClamAV."""
    if text == "*":
        return 0, 0
    inner = text[1:-1]
    if "-" not in inner:
        if not _isnumber(inner):
            raise _Bad(f"bad gap {text}")
        return _atoi(inner), _atoi(inner)
    if _strtok(inner, 2) is not None:
        raise _Bad(f"bad gap {text}")
    first, second = _strtok(inner, 0), _strtok(inner, 1)
    return (_num(first, text) if first else 0), (_num(second, text) if second else 0)


def _strtok(line: str, fieldno: int, delim: str = "-") -> str | None:
    """ClamAV's cli_strtok: field ``fieldno`` (runs of delimiters count once), None if empty."""
    i, counter = 0, 0
    while i < len(line) and counter != fieldno:
        if line[i] in delim:
            counter += 1
            while i + 1 < len(line) and line[i + 1] in delim:
                i += 1
        i += 1
    if i >= len(line):
        return None
    j = i
    while j < len(line) and line[j] not in delim:
        j += 1
    return line[i:j] or None


def _num(text: str, gap: str) -> int:
    if not _isnumber(text):
        raise _Bad(f"bad gap {gap}")
    return int(text)


def _part(text: str, nocase: bool, wide: bool, mindist: int, maxdist: int, target: int,
          plain: bool) -> Part:
    """One Aho-Corasick pattern; ``plain``: the subsignature has no ::i/w/f/a modifiers."""
    try:
        body.check_subpattern(text, target, plain)
        left, begin, end, right = body.anchor_layout(text)
    except body._Invalid as err:
        raise _Bad(str(err)) from None
    core = text[begin:end]
    word_left = core.startswith("(W)")
    word_right = core.endswith("(W)") and len(core) > 3
    core = core[3 if word_left else 0:len(core) - (3 if word_right else 0)]
    if _BOUNDARY.search(core):
        raise _Skip(f"boundary markers (B)/(L)/(W) inside {text!r} are not supported")
    elements = _elements(core)
    try:
        _, hs, min_len, max_len, _ = body._parse_hex(core)
        split = _trie_start(elements, nocase)
        forward = "".join(_element_regex(e, core, False) for e in elements[split:])
        prefix = [_element_regex(e, core, True) for e in reversed(elements[:split])]
    except body._Unsupported as why:
        raise _Skip(str(why)) from None
    except body._Invalid as err:
        raise _Bad(str(err)) from None
    backward = any(e[0].endswith(")") and _generic(e) for e in elements[:split])
    if not backward:
        forward = "".join(_element_regex(e, core, False) for e in elements)
        prefix = []
    if nocase:
        hs, forward = _nocase(hs), _nocase(forward)
        prefix = [_nocase(x) for x in prefix]
    length = min_len if max_len == min_len else -1
    depth = 0
    while split + depth < len(elements) and depth < MAX_DEPTH and elements[split + depth][1]:
        depth += 1
    part = Part(forward, hs, length, mindist, maxdist, _anchor(left, nocase),
                _anchor(right, nocase), word_left, word_right,
                lead=-1 if backward else _max_width(elements[:split]), depth=depth)
    if prefix:
        part.prefix = ["".join(prefix), _max_width(elements[:split])]
    return part


def _elements(core: str) -> list[tuple[str, bool, int]]:
    """(text, static, value) per Aho-Corasick element: a hex pair or one (…) group.

    ClamAV needs two consecutive plain bytes in each part to put it in its trie.
    """
    elements, i = [], 0
    while i < len(core):
        if core[i] == "!" or core[i] == "(":
            end = core.find(")", i)
            if end < 0:
                raise _Bad(f"unterminated '(' in {core!r}")
            elements.append((core[i:end + 1], False, -1))
            i = end + 1
        elif _HEXPAIR.match(core, i):
            pair = core[i:i + 2]
            static = "?" not in pair
            elements.append((pair, static, int(pair, 16) if static else -1))
            i += 2
        else:
            raise _Bad(f"unexpected character {core[i]!r} in {core!r}")
    if len(elements) < MIN_DEPTH:
        raise _Bad(f"pattern {core!r} is shorter than {MIN_DEPTH} bytes")
    if not any(a[1] and b[1] for a, b in zip(elements, elements[1:])):
        raise _Bad(f"pattern {core!r} has no two consecutive fixed bytes")
    return elements


def _trie_start(elements: list, nocase: bool) -> int:
    """Where ClamAV starts the trie part of a pattern; the elements before it (its "prefix")
    are matched backwards from there. Shifted when the first three elements hold a wildcard
    or are all zero bytes, to the last run of plain bytes found within the first ones."""
    n = len(elements)
    # Under ::i every plain byte carries a flag, so none counts as zero.
    value = [(e[2] if e[1] and not nocase else 1) for e in elements]
    head = elements[:3]
    if all(e[1] for e in head) and any(v != 0 for v in value[:3]):
        return 0
    plen = ppos = nzplen = nzpos = 0
    for i in range(n - MIN_DEPTH + 1):
        for j in range(i, min(i + 3, n)):
            if not elements[j][1]:
                break
            if j - i + 1 >= plen:
                plen, ppos = j - i + 1, i
            if value[ppos] != 0 or (ppos + 1 < n and value[ppos + 1] != 0):
                if plen >= 3:
                    break
                if plen >= MIN_DEPTH and plen > nzplen:
                    nzplen, nzpos = plen, ppos
        if plen >= 3 and (value[ppos] != 0 or (ppos + 1 < n and value[ppos + 1] != 0)):
            break
    if nzplen and ppos + 1 < n and value[ppos] == 0 and value[ppos + 1] == 0:
        ppos = nzpos
    return ppos


def _generic(element: tuple) -> bool:
    """A (…) group ClamAV matches by trying its alternatives in order: different lengths."""
    text = element[0]
    if text.startswith("!"):
        return False
    lengths = {len(a) for a in text[1:-1].split("|")}
    return len(lengths) > 1


def _element_regex(element: tuple, core: str, reverse: bool) -> str:
    """The regex of one element; ``reverse`` for matching the prefix backwards (reversed)."""
    text = element[0]
    if not text.endswith(")"):
        return body._render(body._pair_values(text, core))
    negate = text[0] == "!"
    written = text[2 if negate else 1:-1].split("|")
    # ClamAV commits to the first alternative that matches unless one alternative begins
    # another as written (then it backtracks): an atomic group does the same.
    atomic = not any(a != b and (a.startswith(b) or b.startswith(a))
                     for a in written for b in written)
    options = written
    if reverse:
        options = ["".join(reversed([o[i:i + 2] for i in range(0, len(o), 2)])) for o in written]
    if not _generic(element):
        return body._alternatives("|".join(options), negate, core)[0]
    rendered = ["".join(body._render(v) for v in body._pairs(o, core)) for o in options]
    return ("(?>" if atomic else "(?:") + "|".join(rendered) + ")"


def _max_width(elements: list) -> int:
    width = 0
    for text, _, _ in elements:
        width += max(len(a) for a in text.strip("!()").split("|")) // 2 if text.endswith(
            ")") else 1
    return width


def _anchor(anchor: tuple | None, nocase: bool) -> list | None:
    """[allowed bytes, n, m] of an anchored byte (body.anchor_layout), or None when there is
    none or ClamAV does not check it."""
    if anchor is None or not body.anchor_checked(anchor[0]):
        return None
    pair, n, m = anchor
    values = set(body._pair_values(pair, pair))
    if nocase and len(values) == 1:
        only = next(iter(values))
        if chr(only).isascii() and chr(only).isalpha():
            values.add(only ^ 0x20)
    return [sorted(values), n, m]


_LITERAL = re.compile(r"\\x([0-9a-f]{2})|\[(?:\\.|[^\]\\])*\]|\\.|.", re.S)


def _nocase(regex: str) -> str:
    """Letters written as single bytes match either case; classes and wildcards do not change
    (ClamAV folds only plain bytes under ``::i``)."""
    out = []
    for token in _LITERAL.finditer(regex):
        hexbyte = token[1]
        if hexbyte and chr(int(hexbyte, 16)).isascii() and chr(int(hexbyte, 16)).isalpha():
            v = int(hexbyte, 16)
            out.append(f"[\\x{v | 0x20:02x}\\x{v & ~0x20:02x}]")
        else:
            out.append(token[0])
    return "".join(out)


# -- compiling ---------------------------------------------------------------------------------

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
            pieces.append(f".{{{p.mindist},}}" if 0 < p.mindist <= body.REPEAT_LIMIT else ".*")
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
            bad = _find_rejected(expressions, flags)
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


def _find_rejected(expressions: list[list], flags: list[int]) -> int | None:
    ids = list(range(len(expressions)))
    while len(ids) > 1:
        left = ids[:len(ids) // 2]
        try:
            _build(expressions, flags, left)
            ids = ids[len(ids) // 2:]
        except hyperscan.error:
            ids = left
    try:
        _build(expressions, flags, ids)
    except hyperscan.error:
        return ids[0]
    return None


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
            if target in _EXE_KIND and executable.exe_kind(
                    subject.data, subject.ftype) != _EXE_KIND[target]:
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
                first = _parse_hex_subsig(hexsig, target).variants[0][1][0]
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
    parsed = executable.parse_offset(offset, target)
    exe, failed = None, False
    if parsed.kind not in (executable.ANY, executable.ABSOLUTE):
        # EOF- and executable-relative offsets fail in an executable ClamAV cannot parse.
        if executable.exe_kind(subject.data, subject.ftype) is not None:
            exe = subject.exe
            failed = exe is None
    if parsed.kind == executable.VERSION:
        return exe.version_info if exe is not None else _NEVER
    found = executable.resolve_offset(parsed, subject.size, exe, failed)
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
