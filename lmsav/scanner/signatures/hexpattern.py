"""ClamAV's hex signature language (the pattern of an .ndb line and of a logical subsignature):
checked as ClamAV checks it and rendered as byte regexes.

``parse_hex`` turns a pattern into an exact Python regex, what Hyperscan compiles (the same or a
superset: gaps too large for Hyperscan are relaxed and the hit confirmed in Python), its length
bounds and the segments a confirmation matches one by one. The (B), (L) and (W) markers consume
a byte (or CRLF) inside a ClamAV sub-pattern and are zero-width assertions at its edges.

An anchored byte (``aa[n-m]core`` or ``core[n-m]aa``, next to one byte at the edge of a ClamAV
sub-pattern) is a lookaround: the match starts at the core, as ClamAV counts offsets.

Where ClamAV refuses to add a pattern to its matchers — a sub-pattern shorter than two bytes or
without two consecutive fixed bytes, a bad anchor, a plain pattern under three bytes for the
Boyer-Moore matcher, a marker or multi-byte alternative among the first elements of a
sub-pattern for the prefiltered targets 0, 1, 4 and 7 — ``check_pattern`` and
``check_subpattern`` raise Invalid, and the whole file is refused, as ClamAV refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

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

_HEX = frozenset("0123456789abcdefABCDEF")
_HEX_RUN = re.compile(r"[0-9a-fA-F]+")
_GAP = re.compile(r"^(\d*)(-?)(\d*)$")


class Unsupported(Exception):
    """A valid ClamAV construct lmsav cannot match; the signature is skipped and reported."""


class Invalid(Exception):
    """Not a valid .ndb signature."""



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


def pair_values(pair: str, hexsig: str) -> range | list[int]:
    """The byte values one two-character hex pair (``4a``, ``??``, ``4?``, ``?a``) stands for."""
    hi, lo = pair
    if hi == "?" and lo == "?":
        return range(256)
    if hi == "?":
        if lo not in _HEX:
            raise Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
        return [h << 4 | int(lo, 16) for h in range(16)]
    if hi not in _HEX:
        raise Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
    if lo == "?":
        return range(int(hi, 16) << 4, (int(hi, 16) << 4) + 16)
    if lo not in _HEX:
        raise Invalid(f"bad hex pair {pair!r} in {hexsig!r}")
    return [int(pair, 16)]


def pairs(text: str, hexsig: str) -> list[range | list[int]]:
    """Hex pairs only (the body of an alternative)."""
    for ch in "*{}[]()!":
        if ch in text:
            raise Unsupported(f"{ch!r} inside an alternative in {hexsig!r}")
    if len(text) % 2:
        raise Invalid(f"odd number of hex digits in {text!r} (in {hexsig!r})")
    return [pair_values(text[i:i + 2], hexsig) for i in range(0, len(text), 2)]


def render(values: range | list[int]) -> str:
    return "." if len(values) == 256 else _byte_class(values)


def repeat(lo: int, hi: int | None) -> str:
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
                raise Invalid(f"a gap inside an alternative in {text!r}")
            if token[0] == "{" and token[-1] != "}":
                raise Invalid(f"unterminated '{{' in {text!r}")
            spans.append((start, found.start()))
            start = found.end()
    spans.append((start, len(text)))
    return spans


def _anchor_range(text: str, part: str) -> tuple[int, int]:
    """``[n-m]`` as sscanf("%u-%u") reads it (``[n]`` is n-n)."""
    first = scan_uint(text, 0)
    if first is None:
        raise Invalid(f"bad range [{text}] in {part!r}: need n-m")
    n, i = first
    second = scan_uint(text, i + 1) if text[i:i + 1] == "-" else None
    m = n if second is None else second[0]
    if n > m or m > MAX_ANCHOR:
        raise Invalid(f"bad range [{text}] in {part!r}: need n-m with n <= m <= {MAX_ANCHOR}")
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
            raise Invalid(f"missing ']' in {part!r}")
        n, m = _anchor_range(part[bracket + 1:close], part)
        if bracket - begin == 2 and not turn:
            left, begin = (part[begin:bracket], n, m), close + 1
        elif end - close - 1 == 2 and bracket - begin != 2:
            right, end = (part[close + 1:end], n, m), bracket
            break
        else:
            raise Invalid(f"bad anchored byte in {part!r}: ClamAV takes only aa[n-m] before "
                           "a sub-pattern and [n-m]aa after it")
    for anchor in (left, right):
        if anchor is not None:
            pair_values(anchor[0], part)  # a bad pair is refused
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
    byte = render(pair_values(pair, pair))
    if side == "left":  # lookbehinds need a fixed width: one per distance
        look = "|".join(f"(?<={byte}{repeat(k, k)})" for k in range(n, m + 1))
    else:
        look = f"(?={repeat(n, m)}{byte})"
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
            out.append("()")  # unterminated: parse_hex reports it
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
    """Raise Invalid where ClamAV refuses to add one sub-pattern to the matcher of ``target``
    (``plain``: written without the ::i/w/f/a modifiers of logical subsignatures)."""
    if len(part) // 2 < MIN_DEPTH:
        raise Invalid(f"sub-pattern {part!r} is too short: ClamAV needs {MIN_DEPTH} bytes")
    if "[" in part:
        _, begin, end, _ = anchor_layout(part)
        part = part[begin:end]
    flat = _flatten(part, plain) if "(" in part else part
    if len(flat) // 2 < MIN_DEPTH:
        raise Invalid(f"sub-pattern {part!r} is too short: ClamAV needs {MIN_DEPTH} bytes")
    if target in PREFILTER_TARGETS and "(" in flat and not _prefilter_accepts(flat):
        raise Invalid(f"sub-pattern {part!r} starts with a marker or multi-byte alternative "
                       f"among its first {MIN_DEPTH} elements: ClamAV's prefilter for target "
                       f"{target} refuses it")
    if not _STATIC_RUN.match(flat):
        raise Invalid(f"sub-pattern {part!r} has no two consecutive fixed bytes")


def check_pattern(hexsig: str, target: int, offset_text: str) -> None:
    """Raise Invalid where ClamAV refuses an .ndb pattern (cli_add_content_match_pattern)."""
    static = not any(ch in hexsig for ch in "?([{*")
    if (static and target in BM_TARGETS and "VI" not in offset_text and "$" not in offset_text
            and not (target == 1 and (offset_text == "*" or "," in offset_text))):
        # The Boyer-Moore matcher takes it.
        if len(hexsig) // 2 < BM_MIN_LENGTH:
            raise Invalid(f"pattern {hexsig!r} is too short: ClamAV needs {BM_MIN_LENGTH} bytes")
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


def parse_hex(hexsig: str) -> tuple[str, str, int, int | None, tuple]:
    """(exact regex, Hyperscan regex, min length, max length or None, confirmation segments)."""
    if not hexsig:
        raise Invalid("empty hex signature")
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
                raise Invalid(f"odd number of hex digits in {hexsig!r}")
            values = pair_values(hexsig[i:i + 2], hexsig)
            pieces.append(render(values))
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
                raise Invalid(f"unterminated {ch!r} in {hexsig!r}")
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
                    raise Invalid(f"'!' must be followed by '(' in {hexsig!r}")
                i += 1
            end = hexsig.find(")", i)
            if end < 0:
                raise Invalid(f"unterminated '(' in {hexsig!r}")
            body = hexsig[i + 1:end]
            if body in ("B", "L", "W"):
                # ClamAV tests "ends its sub-pattern" first, then "starts it" (unnegated only).
                if end + 1 == size or end + 1 in splits or end + 1 in right_anchors:
                    edge = "right"
                    if opened == part_start:  # ClamAV refuses it (check_subpattern)
                        raise Invalid(f"sub-pattern made of the marker ({body}) alone "
                                       f"in {hexsig!r} is too short")
                elif opened == part_start and not negate:
                    edge = "left"
                else:
                    edge = ""
                piece, lo, hi = _marker(body, negate, edge)
                fixed = fixed or not edge
            else:
                piece, lo, hi = alternatives(body, negate, hexsig)
                fixed = True
            pieces.append(piece)
            min_len += lo
            max_len = None if max_len is None else max_len + hi
            i = end + 1
        else:
            raise Invalid(f"unexpected character {ch!r} at position {i} in {hexsig!r}")
    if not fixed:
        raise Invalid(f"signature {hexsig!r} has no fixed bytes: it would match anything")
    exact = "".join(_exact(p) for p in pieces)
    return exact, "".join(_relax(pieces)), min_len, max_len, _segments(pieces)


def _exact(piece) -> str:
    if isinstance(piece, str):
        return piece
    if isinstance(piece, _Loose):
        return piece.exact
    return repeat(*piece)


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
            current.append(repeat(*p) + ("?" if p[0] != p[1] else ""))
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
        else (".*" if n in loose else repeat(*p))
        for n, p in enumerate(pieces)
    ]


def _parse_gap(text: str, hexsig: str) -> tuple[int, int | None]:
    """``{n}``, ``{-n}``, ``{n-}`` or ``{n-m}``: (least, most or None) bytes."""
    found = _GAP.match(text)
    if not found or not text or text == "-":
        raise Invalid(f"bad range {{{text}}} in {hexsig!r}: need n, -n, n- or n-m")
    lo_text, dash, hi_text = found.groups()
    if not dash:
        return int(lo_text), int(lo_text)
    lo = int(lo_text) if lo_text else 0
    hi = int(hi_text) if hi_text else None
    if hi is not None and lo > hi:
        raise Invalid(f"bad range {{{text}}} in {hexsig!r}: {lo} is more than {hi}")
    return lo, hi


def alternatives(body: str, negate: bool, hexsig: str) -> tuple[str, int, int]:
    """Regex, min and max length of ``(a|b|…)`` or ``!(a|b|…)``."""
    options = body.split("|")
    if any(not o for o in options):
        raise Invalid(f"empty alternative in ({body}) in {hexsig!r}")
    parsed = [pairs(o, hexsig) for o in options]
    lengths = [len(p) for p in parsed]
    if not negate:
        regex = "|".join("".join(render(v) for v in p) for p in parsed)
        return f"(?:{regex})", min(lengths), max(lengths)
    if len(set(lengths)) != 1:
        raise Invalid(f"negated alternatives !({body}) must all have the same length")
    if "?" in body:  # ClamAV: "Can't apply negation operation to generic alternate strings"
        raise Invalid(f"negated alternatives !({body}) cannot contain wildcards")
    width = lengths[0]
    if width == 1:
        excluded = set().union(*(p[0] for p in parsed))
        if len(excluded) == 256:
            raise Invalid(f"!({body}) excludes every byte")
        return _byte_class(excluded, negate=True), 1, 1
    words = {bytes(v[0] for v in p) for p in parsed}
    return f"(?:{_complement(words, width)})", width, width


def _complement(words: set[bytes], width: int) -> str:
    """Regex for every ``width``-byte string not in ``words`` (all that wide), as a trie walk."""
    firsts = {w[0] for w in words}
    parts = []
    if len(firsts) < 256:
        parts.append(_byte_class(firsts, negate=True) + repeat(width - 1, width - 1))
    if width > 1:
        for b in sorted(firsts):
            rest = {w[1:] for w in words if w[0] == b}
            sub = _complement(rest, width - 1)
            if sub:
                parts.append(_byte(b) + f"(?:{sub})")
    return "|".join(parts)
