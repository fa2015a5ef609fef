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
the window ClamAV computes from the parsed PE, ELF or Mach-O (executable.py). A file of an
executable type that ClamAV cannot parse loses EOF-n signatures too, as in ClamAV. The (B), (L)
and (W) markers consume a byte (or CRLF) inside a ClamAV sub-pattern and are zero-width
assertions at its edges, checked in Python.

An anchored byte (``aa[n-m]core`` or ``core[n-m]aa``, next to one byte at the edge of a ClamAV
sub-pattern) is a lookaround checked in Python: the match starts at the core, as ClamAV counts
offsets. A line with a macro offset (``$n$``) is no detection of its own: its pattern joins macro
group n, which logical signatures (logical.py) check with ``${min-max}n$``; the patterns are kept
in this blob's metadata (``macro_patterns``).

Where ClamAV refuses to add a pattern to its matchers — a sub-pattern shorter than two bytes or
without two consecutive fixed bytes, a bad anchor, a plain pattern under three bytes for the
Boyer-Moore matcher, a marker or multi-byte alternative among the first elements of a
sub-pattern for the prefiltered targets 0, 1, 4 and 7 — the whole file is refused, as ClamAV
refuses it.

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

from . import executable
from .errors import SignatureError
from .levels import FUNCTIONALITY_LEVEL
from .rowtable import RowTable, pack_rows

ENGINE_LEVEL = FUNCTIONALITY_LEVEL  # what MinFL/MaxFL are compared with

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
EXE_TARGETS = {1: "pe", 6: "elf", 9: "macho"}  # targets ClamAV applies to a parsed executable
CLAMAV_TARGETS = 15  # ClamAV skips a line whose target is beyond its table (matcher.h)

SECTION = "body"  # the database section holding compile_body's blob

# What ClamAV's matchers take (matcher-ac.c, matcher-bm.c, filtering.c): each sub-pattern at
# least MIN_DEPTH elements with MIN_DEPTH consecutive fixed bytes somewhere, an anchored byte at
# most MAX_ANCHOR bytes away; a plain pattern of target 0 or 1 goes to the Boyer-Moore matcher,
# which needs BM_MIN_LENGTH bytes; the roots of PREFILTER_TARGETS refuse a sub-pattern whose
# first MIN_DEPTH elements (after leading markers and multi-byte alternatives) hold one.
MIN_DEPTH = 2
MAX_ANCHOR = 32
BM_MIN_LENGTH = 3
BM_TARGETS = frozenset({0, 1})
PREFILTER_TARGETS = frozenset({0, 1, 4, 7})

# Hyperscan rejects bounded repeats above 32767 and compiles large ones slowly (≈25 µs per unit
# of bound per pattern); above these limits a repeat is relaxed and the hit confirmed in Python.
REPEAT_LIMIT = 2048
REPEAT_BUDGET = 12000  # all gaps of one pattern together (see _relax)
GAP_LIMIT = 16  # gaps other than * kept exact in one pattern
ANCHOR_LIMIT = 256  # largest n+m written as an anchored ^.{n,n+m} prefix

MAGIC = b"LMSAVBD2"
_HEADER = struct.Struct("<8sIII")
_HS_FLAGS = hyperscan.HS_FLAG_DOTALL | hyperscan.HS_FLAG_SINGLEMATCH
_NO_EXT = hyperscan.ExpressionExt(flags=0)

_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_RUN = re.compile(r"[0-9a-fA-F]+")
_GAP = re.compile(r"^(\d*)(-?)(\d*)$")


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
    offset_kind: str = ""  # for EXE: executable.EP_PLUS, SX_PLUS, SE, VERSION …
    section: int = 0  # for EXE: the x of Sx+n and SEx
    unsupported: str = ""
    hexsig: str = ""  # for MACRO: the pattern as written (``n`` is the macro group)

    @property
    def exact(self) -> bool:
        return self.pattern == self.hs_pattern


class _Unsupported(Exception):
    """A valid ClamAV construct lmsav cannot match; the signature is skipped and reported."""


class _Invalid(Exception):
    """Not a valid .ndb signature."""


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
        except _Invalid as err:
            raise SignatureError(source, lineno, str(err)) from None
    return sigs


def _parse_line(line: str, source: str, lineno: int) -> BodySig:
    fields = line.split(":")
    if len(fields) < 4 or len(fields) > 6:
        raise _Invalid("expected Name:TargetType:Offset:HexSignature[:MinFL[:MaxFL]]")
    name, target_text, offset_text, hexsig = (f.strip() for f in fields[:4])
    if not name:
        raise _Invalid("empty signature name")
    target = int(target_text) if target_text.isdigit() else 0  # ClamAV reads "*" and "" as 0
    base = BodySig(name, source, lineno, target)
    levels = [f.strip() for f in fields[4:]]
    for text in levels:
        if text and not text.isdigit():
            raise _Invalid(f"bad functionality level {text!r}: need a number")
    # Levels first, as ClamAV: a line outside the engine's level is skipped unparsed (old
    # databases carry retired lines whose "pattern" is plain text for old engines to show).
    if levels and levels[0] and int(levels[0]) > ENGINE_LEVEL:
        return _replace(base, unsupported=f"needs engine level {levels[0]} (lmsav: {ENGINE_LEVEL})")
    if len(levels) > 1 and levels[1] and int(levels[1]) < ENGINE_LEVEL:
        return _replace(base, unsupported=f"retired at engine level {levels[1]}")
    if target_text not in ("*", "") and not (target_text.isdigit() and target_text.isascii()):
        raise _Invalid(f"bad target type {target_text!r}: need a number")
    if target >= CLAMAV_TARGETS:  # ClamAV skips the line before reading its pattern
        return _replace(base, unsupported=f"target type {target} is unknown to ClamAV")
    kind, offset = _parse_offset(offset_text, target)
    try:
        pattern, hs_pattern, min_len, max_len, segments = _parse_hex(hexsig)
        skip = ""
    except _Unsupported as err:
        skip = str(err)
    _check_subpatterns(hexsig, target, offset_text)  # refused by ClamAV, even if lmsav skips it
    try:
        if kind == MACRO and not skip:
            _check_macro_pattern(hexsig, target)
    except _Unsupported as err:
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
    from . import logical  # logical.py builds on this module; it is needed only here

    try:
        reason = logical.macro_pattern_problem(hexsig, target)
    except ValueError as err:
        raise _Invalid(str(err)) from None
    if reason:
        raise _Unsupported(reason)


def _replace(sig: BodySig, unsupported: str) -> BodySig:
    return BodySig(sig.name, sig.source, sig.line, sig.target, unsupported=unsupported)


def _parse_offset(text: str, target: int) -> tuple[int, executable.Offset]:
    """(offset kind, parsed offset) as ClamAV reads the field; _Invalid where ClamAV refuses."""
    try:
        offset = executable.parse_offset(text, target)
    except ValueError as err:
        raise _Invalid(str(err)) from None
    kind = {executable.ANY: ANY, executable.ABSOLUTE: START, executable.EOF_MINUS: EOF,
            executable.MACRO: MACRO}
    return kind.get(offset.kind, EXE), offset


def _byte(b: int) -> str:
    return f"\\x{b:02x}"


def _byte_class(values, negate: bool = False) -> str:
    values = sorted(set(values))
    if not negate and len(values) == 1:
        return _byte(values[0])
    if not negate and len(values) == 256:
        return "."
    # Collapse consecutive values into ranges to keep the class short.
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(_byte(values[i]) if i == j else f"{_byte(values[i])}-{_byte(values[j])}")
        i = j + 1
    return f"[{'^' if negate else ''}{''.join(parts)}]"


def _pair_values(pair: str, hexsig: str) -> range | list[int]:
    """The byte values one two-character hex pair (``4a``, ``??``, ``4?``, ``?a``) stands for."""
    hi, lo = pair
    if hi == "?" and lo == "?":
        return range(256)
    if hi == "?":
        if lo not in _HEX:
            raise _Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
        return [h << 4 | int(lo, 16) for h in range(16)]
    if hi not in _HEX:
        raise _Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
    if lo == "?":
        return range(int(hi, 16) << 4, (int(hi, 16) << 4) + 16)
    if lo not in _HEX:
        raise _Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
    return [int(pair, 16)]


def _pairs(text: str, hexsig: str) -> list[range | list[int]]:
    """Hex pairs only (the body of an alternative)."""
    for ch in "*{}[]()!":
        if ch in text:
            raise _Unsupported(f"{ch!r} inside an alternative in {hexsig!r}")
    if len(text) % 2:
        raise _Invalid(f"odd number of hex digits in {text!r} (in {hexsig!r})")
    return [_pair_values(text[i:i + 2], hexsig) for i in range(0, len(text), 2)]


def _render(values: range | list[int]) -> str:
    return "." if len(values) == 256 else _byte_class(values)


def _repeat(lo: int, hi: int | None) -> str:
    if hi is None:
        return ".*" if lo == 0 else f".{{{lo},}}"
    if lo == hi:
        return "" if lo == 0 else ("." if lo == 1 else f".{{{lo}}}")
    return f".{{{lo},{hi}}}"


@dataclass(frozen=True, slots=True)
class _Loose:
    """A piece Hyperscan cannot express exactly: ``exact`` for Python, ``loose`` (a superset,
    possibly empty) for Hyperscan."""

    exact: str
    loose: str


# ClamAV's boundary classes: (B) in the middle consumes any of these bytes; at the left edge
# of a sub-pattern the byte before must be one of _LEFT (or the file starts), at the right
# edge the byte after one of _RIGHT (or the data ends).
_BOUNDARY = b"\n\r \"'-./<=>@_"
_LEFT = b" -./<@_"
_RIGHT = b"\n\r \"'-/=>_"
_ALNUM = "0-9A-Za-z"


def _marker(body: str, negate: bool, edge: str) -> tuple[str | _Loose, int, int]:
    """Regex piece, min and max length of (B), (L) or (W); ``edge`` is "left", "right" or ""
    (inside a sub-pattern, where the marker consumes input)."""
    if edge == "left":  # never negated: ClamAV reads !(x) at a left edge as a consuming one
        before = {"B": _byte_class(_LEFT, negate=True), "L": "[^\\n]", "W": f"[{_ALNUM}]"}
        return _Loose(f"(?<!{before[body]})", ""), 0, 0
    if edge == "right":
        # Positive: the data ends or the next byte qualifies; negated: a next byte that does not.
        after = {"B": _byte_class(_RIGHT, negate=True), "L": "\\n|\\r\\n|\\Z",
                 "W": f"[{_ALNUM}]"}[body]
        if body == "L":
            look = f"(?!{after})" if negate else f"(?={after})"
        else:
            look = f"(?={after})" if negate else f"(?!{after})"
        return _Loose(look, ""), 0, 0
    if body == "B":
        return _byte_class(_BOUNDARY, negate=negate), 1, 1
    if body == "W":
        return (f"[{_ALNUM}]" if negate else f"[^{_ALNUM}]"), 1, 1
    if negate:  # one byte that is neither LF nor the CR of a CRLF
        return _Loose("(?:[^\\n\\r]|\\r(?!\\n))", "[^\\n]"), 1, 1
    return "(?:\\n|\\r\\n)", 1, 2


# -- ClamAV's sub-patterns -----------------------------------------------------------------------

_SHORT_GAP = re.compile(r"\{[ \t\n\v\f\r]*\+?([0-9]+)\}")  # what sscanf("{%zu}") takes
_UINT = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")


def scan_uint(text: str, pos: int) -> tuple[int, int] | None:
    """sscanf's ``%u`` at ``pos``: (value as the uint32 C stores, index after it) or None."""
    found = _UINT.match(text, pos)
    if found is None:
        return None
    value = min(int(found[2]), 2 ** 64 - 1)  # strtoul saturates
    if found[1] == "-":
        value = -value % 2 ** 64
    return value & 0xFFFFFFFF, found.end()


def _expand_short_gaps(hexsig: str) -> str:
    """ClamAV's first rewrite of a pattern: while its first ``{…}`` is a short ``{n}``
    (0 < n < 128) that becomes n ``??``; every ``{…}`` from the first other one is a split."""
    while True:
        brace = hexsig.find("{")
        found = _SHORT_GAP.match(hexsig, brace) if brace >= 0 else None
        if found is None or not 0 < int(found[1]) < 128:
            return hexsig
        hexsig = hexsig[:brace] + "??" * int(found[1]) + hexsig[found.end():]


_GAP_OR_GROUP = re.compile(r"[()*]|\{[^}]*\}?")
_STATIC_RUN = re.compile(r"(?:..)*?[0-9A-Fa-f]{4}")  # two fixed bytes at a pair boundary


def _subpattern_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each ClamAV sub-pattern of ``text`` (short gaps expanded): the pieces
    between ``*`` and ``{…}`` gaps. ClamAV refuses a gap inside an alternative."""
    spans, start, depth = [], 0, 0
    for found in _GAP_OR_GROUP.finditer(text):
        token = found[0]
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        else:
            if depth:
                raise _Invalid(f"a gap inside an alternative in {text!r}")
            if token[0] == "{" and token[-1] != "}":
                raise _Invalid(f"unterminated '{{' in {text!r}")
            spans.append((start, found.start()))
            start = found.end()
    spans.append((start, len(text)))
    return spans


def _anchor_range(text: str, part: str) -> tuple[int, int]:
    """``[n-m]`` as sscanf("%u-%u") reads it (``[n]`` is n-n)."""
    first = scan_uint(text, 0)
    if first is None:
        raise _Invalid(f"bad range [{text}] in {part!r}: need n-m")
    n, i = first
    second = scan_uint(text, i + 1) if text[i:i + 1] == "-" else None
    m = n if second is None else second[0]
    if n > m or m > MAX_ANCHOR:
        raise _Invalid(f"bad range [{text}] in {part!r}: need n-m with n <= m <= {MAX_ANCHOR}")
    return n, m


def anchor_layout(part: str) -> tuple[tuple | None, int, int, tuple | None]:
    """ClamAV's reading of ``[n-m]`` in one sub-pattern: (left anchor, core start, core end,
    right anchor), an anchor being (hex pair, n, m). ClamAV takes one byte before the core
    (``aa[n-m]core``) and one after it (``core[n-m]aa``); any other bracket is refused."""
    left = right = None
    begin, end = 0, len(part)
    for turn in range(2):
        bracket = part.find("[", begin, end)
        if bracket < 0:
            break
        close = part.find("]", bracket, end)
        if close < 0:
            raise _Invalid(f"missing ']' in {part!r}")
        n, m = _anchor_range(part[bracket + 1:close], part)
        if bracket - begin == 2 and not turn:
            left, begin = (part[begin:bracket], n, m), close + 1
        elif end - close - 1 == 2 and bracket - begin != 2:
            right, end = (part[close + 1:end], n, m), bracket
            break
        else:
            raise _Invalid(f"bad anchored byte in {part!r}: ClamAV takes only aa[n-m] before "
                           "a sub-pattern and [n-m]aa after it")
    for anchor in (left, right):
        if anchor is not None:
            _pair_values(anchor[0], part)  # a bad pair is refused
    return left, begin, end, right


def anchor_checked(pair: str) -> bool:
    """Whether ClamAV's matcher checks an anchored byte: never for ``??`` nor a high nibble
    (``4?``), whose encodings carry its "ignore" bit."""
    return pair != "??" and not (pair[0] != "?" and pair[1] == "?")


def _anchor_piece(anchor: tuple, side: str) -> _Loose | None:
    """A zero-width check for an anchored byte ``n``…``m`` bytes before or after the core."""
    pair, n, m = anchor
    if not anchor_checked(pair):
        return None
    byte = _render(_pair_values(pair, pair))
    if side == "left":  # lookbehinds need a fixed width: one per distance
        look = "|".join(f"(?<={byte}{_repeat(k, k)})" for k in range(n, m + 1))
    else:
        look = f"(?={_repeat(n, m)}{byte})"
    return _Loose(f"(?:{look})", "")


def _closing(text: str, opened: int) -> int:
    """Index of the ``)`` closing the ``(`` at ``opened`` (nesting counted), or -1."""
    depth = 0
    for i in range(opened, len(text)):
        depth += (text[i] == "(") - (text[i] == ")")
        if not depth:
            return i
    return -1


def _single_bytes(inner: str) -> bool:
    """Alternatives ClamAV stores as one-byte choices: all one plain byte, no nesting."""
    return "(" not in inner and "?" not in inner and all(len(a) == 2 for a in inner.split("|"))


def _flatten(core: str, plain: bool) -> str:
    """A sub-pattern's core as ClamAV lays out its elements, two characters each: hex pairs as
    written, ``<>`` for alternatives of single plain bytes (only when ``plain``: without
    modifiers), ``()`` for other alternatives and inner markers; edge markers are flags and
    leave nothing."""
    out, i, size = [], 0, len(core)
    while i < size:
        opened = core.find("(", i)
        if opened < 0:
            out.append(core[i:])
            break
        negated = opened > i and core[opened - 1] == "!"
        out.append(core[i:opened - negated])
        close = _closing(core, opened)
        if close < 0:
            out.append("()")  # unterminated: _parse_hex reports it
            break
        inner = core[opened + 1:close]
        i = close + 1
        if inner in ("B", "L", "W") and (i == size or opened == 0):
            continue  # at the right edge, or an unnegated one at the left edge
        out.append("<>" if plain and inner not in ("B", "L", "W") and _single_bytes(inner)
                   else "()")
    return "".join(out)


def _prefilter_accepts(flat: str) -> bool:
    """ClamAV's prefilter (filtering.c) needs MIN_DEPTH elements it can read — fixed bytes,
    wildcards, one-byte alternatives — after any leading markers and other alternatives."""
    i, size = 0, len(flat)
    while i < size and flat[i] == "(":
        i += 2
    readable = 0
    while i < size and flat[i] != "(" and readable < MIN_DEPTH:
        readable += 1
        i += 2
    return readable >= MIN_DEPTH


def check_subpattern(part: str, target: int, plain: bool = True) -> None:
    """Raise _Invalid where ClamAV refuses to add one sub-pattern to the matcher of ``target``
    (``plain``: written without the ::i/w/f/a modifiers of logical subsignatures)."""
    if len(part) // 2 < MIN_DEPTH:
        raise _Invalid(f"sub-pattern {part!r} is too short: ClamAV needs {MIN_DEPTH} bytes")
    if "[" in part:
        _, begin, end, _ = anchor_layout(part)
        part = part[begin:end]
    flat = _flatten(part, plain) if "(" in part else part
    if len(flat) // 2 < MIN_DEPTH:
        raise _Invalid(f"sub-pattern {part!r} is too short: ClamAV needs {MIN_DEPTH} bytes")
    if target in PREFILTER_TARGETS and "(" in flat and not _prefilter_accepts(flat):
        raise _Invalid(f"sub-pattern {part!r} starts with a marker or multi-byte alternative "
                       f"among its first {MIN_DEPTH} elements: ClamAV's prefilter for target "
                       f"{target} refuses it")
    if not _STATIC_RUN.match(flat):
        raise _Invalid(f"sub-pattern {part!r} has no two consecutive fixed bytes")


def _check_subpatterns(hexsig: str, target: int, offset_text: str) -> None:
    """Raise _Invalid where ClamAV refuses an .ndb pattern (cli_add_content_match_pattern)."""
    static = not any(ch in hexsig for ch in "?([{*")
    if (static and target in BM_TARGETS and "VI" not in offset_text and "$" not in offset_text
            and not (target == 1 and (offset_text == "*" or "," in offset_text))):
        # The Boyer-Moore matcher takes it.
        if len(hexsig) // 2 < BM_MIN_LENGTH:
            raise _Invalid(f"pattern {hexsig!r} is too short: ClamAV needs {BM_MIN_LENGTH} bytes")
        return
    text = _expand_short_gaps(hexsig)
    for start, end in _subpattern_spans(text):
        check_subpattern(text[start:end], target)


def _separators(hexsig: str) -> set[int]:
    """Positions of the gaps that split a signature into ClamAV sub-patterns: every ``*``, and
    every ``{…}`` from the first one that is not a short ``{n}`` (0 < n < 128; ClamAV expands
    those into ``??`` bytes, keeping them inside a sub-pattern)."""
    out, splitting = set(), False
    for found in re.finditer(r"\*|\{([^}]*)\}?", hexsig):
        if found[0] == "*":
            out.add(found.start())
            continue
        short = found[1] is not None and found[1].isdigit() and 0 < int(found[1]) < 128
        splitting = splitting or not short or not found[0].endswith("}")
        if splitting:
            out.add(found.start())
    return out


def _parse_hex(hexsig: str) -> tuple[str, str, int, int | None, tuple]:
    """(exact regex, Hyperscan regex, min length, max length or None, confirmation segments)."""
    if not hexsig:
        raise _Invalid("empty hex signature")
    pieces: list[str | tuple[int, int | None] | _Loose] = []  # regex, (lo, hi) gap, or _Loose
    min_len, max_len, fixed = 0, 0, False
    anchors: dict[int, tuple[int, _Loose | None, bool]] = {}  # at → (after, piece, left side)
    if "[" in hexsig:
        hexsig = _expand_short_gaps(hexsig)  # as ClamAV, before it reads the anchors
        for start, end in _subpattern_spans(hexsig):
            left, begin, stop, right = anchor_layout(hexsig[start:end])
            if left:
                anchors[start] = (start + begin, _anchor_piece(left, "left"), True)
            if right:
                anchors[start + stop] = (end, _anchor_piece(right, "right"), False)
    splits = _separators(hexsig) if "(" in hexsig else set()
    right_anchors = {at for at, (_, _, left) in anchors.items() if not left}
    part_start = 0  # where the current ClamAV sub-pattern's core starts in hexsig
    i, size = 0, len(hexsig)
    while i < size:
        if i in anchors:
            after, piece, left = anchors[i]
            if piece is not None:
                pieces.append(piece)
            if left:
                part_start = after
            i = after
            continue
        ch = hexsig[i]
        run = _HEX_RUN.match(hexsig, i)
        if run and run.end() - i >= 2:  # fast path: a run of plain hex bytes
            end = i + (run.end() - i) // 2 * 2
            pieces.append("".join(f"\\x{hexsig[j:j + 2].lower()}" for j in range(i, end, 2)))
            min_len += (end - i) // 2
            max_len = None if max_len is None else max_len + (end - i) // 2
            fixed = True
            i = end
        elif ch in _HEX or ch == "?":
            if i + 1 >= size or not (hexsig[i + 1] in _HEX or hexsig[i + 1] == "?"):
                raise _Invalid(f"odd number of hex digits in {hexsig!r}")
            values = _pair_values(hexsig[i:i + 2], hexsig)
            pieces.append(_render(values))
            min_len += 1
            max_len = None if max_len is None else max_len + 1
            fixed = fixed or len(values) < 256
            i += 2
        elif ch == "*":
            pieces.append((0, None))
            max_len = None
            i += 1
            part_start = i
        elif ch == "{":
            end = hexsig.find("}", i)
            if end < 0:
                raise _Invalid(f"unterminated {ch!r} in {hexsig!r}")
            lo, hi = _parse_gap(hexsig[i + 1:end], hexsig)
            pieces.append((lo, hi))
            min_len += lo
            max_len = None if max_len is None or hi is None else max_len + hi
            if i in splits:
                part_start = end + 1
            i = end + 1
        elif ch == "!" or ch == "(":
            negate = ch == "!"
            opened = i
            if negate:
                if i + 1 >= size or hexsig[i + 1] != "(":
                    raise _Invalid(f"'!' must be followed by '(' in {hexsig!r}")
                i += 1
            end = hexsig.find(")", i)
            if end < 0:
                raise _Invalid(f"unterminated '(' in {hexsig!r}")
            body = hexsig[i + 1:end]
            if body in ("B", "L", "W"):
                # ClamAV tests "ends its sub-pattern" first, then "starts it" (unnegated only).
                if end + 1 == size or end + 1 in splits or end + 1 in right_anchors:
                    edge = "right"
                    if opened == part_start:  # ClamAV refuses it (check_subpattern)
                        raise _Invalid(f"sub-pattern made of the marker ({body}) alone "
                                       f"in {hexsig!r} is too short")
                elif opened == part_start and not negate:
                    edge = "left"
                else:
                    edge = ""
                piece, lo, hi = _marker(body, negate, edge)
                fixed = fixed or not edge
            else:
                piece, lo, hi = _alternatives(body, negate, hexsig)
                fixed = True
            pieces.append(piece)
            min_len += lo
            max_len = None if max_len is None else max_len + hi
            i = end + 1
        else:
            raise _Invalid(f"unexpected character {ch!r} at position {i} in {hexsig!r}")
    if not fixed:
        raise _Invalid(f"signature {hexsig!r} has no fixed bytes: it would match anything")
    exact = "".join(_exact(p) for p in pieces)
    return exact, "".join(_relax(pieces)), min_len, max_len, _segments(pieces)


def _exact(piece) -> str:
    if isinstance(piece, str):
        return piece
    if isinstance(piece, _Loose):
        return piece.exact
    return _repeat(*piece)


def _segments(pieces: list) -> tuple[tuple[int, str], ...]:
    """Split at unbounded gaps for confirmation in Python.

    One backtracking regex over ``a.*b.*c…`` is exponential on a near miss; matched part by
    part, each from the end of the previous one plus its gap, the cost stays linear. Bounded
    gaps are lazy so each part ends as early as possible, leaving the most room for the next.
    """
    out, gap, current = [], 0, []
    for p in pieces:
        if isinstance(p, tuple) and p[1] is None:
            if current:
                out.append((gap, "".join(current)))
                current, gap = [], 0
            gap += p[0]
        elif isinstance(p, tuple):
            current.append(_repeat(*p) + ("?" if p[0] != p[1] else ""))
        else:
            current.append(_exact(p))
    if current:
        out.append((gap, "".join(current)))
    return tuple(out)


def _relax(pieces: list) -> list[str]:
    """Hyperscan's form: gaps too large for it become ``.*`` (the hit is confirmed in Python).

    Hyperscan refuses bounded repeats over 32767, in 0.9.1 crashes scanning a pattern whose
    bounded repeats add up to about 30000, and compiles chains of ``.{n,}`` in quadratic time;
    so each gap stays under REPEAT_LIMIT, their sum under REPEAT_BUDGET and their number under
    GAP_LIMIT, relaxing the largest first.
    """
    gaps = sorted(
        (max(p[0], p[1] or 0), n)
        for n, p in enumerate(pieces) if isinstance(p, tuple) and p != (0, None)
    )
    loose = set()
    total = sum(width for width, _ in gaps)
    while gaps and (total > REPEAT_BUDGET or gaps[-1][0] > REPEAT_LIMIT or len(gaps) > GAP_LIMIT):
        width, n = gaps.pop()
        total -= width
        loose.add(n)
    return [
        p if isinstance(p, str) else p.loose if isinstance(p, _Loose)
        else (".*" if n in loose else _repeat(*p))
        for n, p in enumerate(pieces)
    ]


def _parse_gap(text: str, hexsig: str) -> tuple[int, int | None]:
    """``{n}``, ``{-n}``, ``{n-}`` or ``{n-m}``: (least, most or None) bytes."""
    found = _GAP.match(text)
    if not found or not text or text == "-":
        raise _Invalid(f"bad range {{{text}}} in {hexsig!r}: need n, -n, n- or n-m")
    lo_text, dash, hi_text = found.groups()
    if not dash:
        return int(lo_text), int(lo_text)
    lo = int(lo_text) if lo_text else 0
    hi = int(hi_text) if hi_text else None
    if hi is not None and lo > hi:
        raise _Invalid(f"bad range {{{text}}} in {hexsig!r}: {lo} is more than {hi}")
    return lo, hi


def _alternatives(body: str, negate: bool, hexsig: str) -> tuple[str, int, int]:
    """Regex, min and max length of ``(a|b|…)`` or ``!(a|b|…)``."""
    options = body.split("|")
    if any(not o for o in options):
        raise _Invalid(f"empty alternative in ({body}) in {hexsig!r}")
    parsed = [_pairs(o, hexsig) for o in options]
    lengths = [len(p) for p in parsed]
    if not negate:
        regex = "|".join("".join(_render(v) for v in p) for p in parsed)
        return f"(?:{regex})", min(lengths), max(lengths)
    if len(set(lengths)) != 1:
        raise _Invalid(f"negated alternatives !({body}) must all have the same length")
    if "?" in body:  # ClamAV: "Can't apply negation operation to generic alternate strings"
        raise _Invalid(f"negated alternatives !({body}) cannot contain wildcards")
    width = lengths[0]
    if width == 1:
        excluded = set().union(*(p[0] for p in parsed))
        if len(excluded) == 256:
            raise _Invalid(f"!({body}) excludes every byte")
        return _byte_class(excluded, negate=True), 1, 1
    words = {bytes(v[0] for v in p) for p in parsed}
    return f"(?:{_complement(words, width)})", width, width


def _complement(words: set[bytes], width: int) -> str:
    """Regex for every ``width``-byte string not in ``words`` (all that wide), as a trie walk."""
    firsts = {w[0] for w in words}
    parts = []
    if len(firsts) < 256:
        parts.append(_byte_class(firsts, negate=True) + _repeat(width - 1, width - 1))
    if width > 1:
        for b in sorted(firsts):
            rest = {w[1:] for w in words if w[0] == b}
            sub = _complement(rest, width - 1)
            if sub:
                parts.append(_byte(b) + f"(?:{sub})")
    return "|".join(parts)


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
            prefix = _repeat(sig.n, sig.n + sig.m)
            return f"^{prefix}(?:{body})", ext, None if exact else _check(sig)
        floor = sig.n + sig.min_len
        ext = hyperscan.ExpressionExt(hyperscan.HS_EXT_FLAG_MIN_OFFSET, min_offset=floor)
        return body, ext, _check(sig)
    # EOF-n,m: the match starts in [size-n, size-n+m].
    if fixed_len is not None and exact and fixed_len <= sig.n and sig.n <= REPEAT_LIMIT:
        tail = _repeat(max(0, sig.n - sig.m - fixed_len), sig.n - fixed_len)
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
        lead = _repeat(0, sig.m) + ("?" if sig.m else "")
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


# Tokens of a regex written by _parse_hex: a run of literal bytes, a class, a repeat count, an
# escape, a parenthesis, or any other character.
_TOKEN = re.compile(r"((?:\\x[0-9a-f]{2})+)|\[[^\]]*\]|\{[^}]*\}|\\.|([()])|.", re.DOTALL)


def _literal_runs(pattern: str) -> list[str]:
    """Runs of ``\\xHH`` bytes outside any group or class of a regex from _parse_hex."""
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
            bad = _find_rejected(list(range(len(plans))), plans, flags)
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


def _find_rejected(indexes: list[int], plans: list[list], flags: list[int]) -> int | None:
    """Bisect to one pattern that fails to compile on its own, or None."""
    while len(indexes) > 1:
        half = len(indexes) // 2
        left = indexes[:half]
        try:
            _build(left, plans, flags)
            indexes = indexes[half:]
        except hyperscan.error:
            indexes = left
    try:
        _build(indexes, plans, flags)
    except hyperscan.error:
        return indexes[0]
    return None


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
    def from_blob(cls, blob) -> "BodyMatcher":
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
            if target in EXE_TARGETS and executable.exe_kind(data, ftype) != EXE_TARGETS[target]:
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
            if offset_kind == executable.VERSION:  # starts at a version-information key
                starts = sorted(exe.version_info) if exe is not None else ()
                return any(_rest(compiled, data, found.end())
                           for found in (first.match(data, pos) for pos in starts) if found)
            offset = executable.Offset(offset_kind, n, m, section)
            window = executable.resolve_offset(offset, size, exe)
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
    return executable.exe_kind(subject.data, subject.ftype) is None or subject.exe is not None


__all__ = ["SECTION", "TARGETS", "BodyMatcher", "BodySig", "compile_body", "macro_patterns",
           "parse_ndb"]
