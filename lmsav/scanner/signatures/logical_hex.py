"""Hex subsignatures of logical signatures: ``[offset:]hexsig[::iwfa]`` split into ClamAV's
Aho-Corasick parts (``Part``), with ClamAV's fullword and wide rewrites, its trie start and its
checks; also used for .ndb macro group members (``macro_pattern_problem``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from . import exe_headers, hexpattern
from .hexpattern import MIN_DEPTH

MAX_DEPTH = 3  # bytes of a pattern in ClamAV's trie: a match is reported after them

_HEXPAIR = re.compile(r"[0-9a-fA-F?]{2}")
_BOUNDARY = re.compile(r"\((B|L|W)\)")
_SMALL_GAP = re.compile(r"\{\s*\+?(\d+)\}")


class Skip(Exception):
    """A valid signature lmsav does not use; the message is the reason."""


class Bad(Exception):
    """Not a valid .ldb line (ClamAV refuses the whole database)."""


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


def isnumber(text: str) -> bool:
    return all(c in "0123456789" for c in text)  # ClamAV's test: "" counts as a number


def atoi(text: str) -> int:
    found = re.match(r"\s*[+-]?\d+", text)
    return int(found[0]) if found else 0


def macro_pattern_problem(hexsig: str, target: int) -> str:
    """Why an .ndb macro group member (matched here, its first sub-pattern on its own) cannot
    be used, or "" when it can; ValueError where ClamAV refuses the pattern."""
    try:
        parse(hexsig, target)
    except Skip as why:
        return str(why)
    except Bad as err:
        raise ValueError(str(err)) from None
    return ""


def parse_offset(text: str, target: int) -> exe_headers.Offset:
    try:
        found = exe_headers.parse_offset(text, target)
    except ValueError as err:
        raise Bad(str(err)) from None
    if found.kind == exe_headers.MACRO:  # a subsignature starting with '$' is a macro one
        raise Bad(f"macro offset {text!r} in a logical subsignature")
    return found


_OPTIONS = {"i": "nocase", "f": "fullword", "w": "wide", "a": "ascii"}


def parse(text: str, target: int) -> tuple[str, list[tuple[bool, list[Part]]]]:
    """(offset, variants) of a hex subsignature ``[offset:]hexsig[::modifiers]``: each variant
    (wide, parts) as ClamAV adds it to its matcher."""
    tokens = text.split(":")
    if len(tokens) > 4:
        tokens = tokens[:1]  # ClamAV then reads only the first field, without offset or options
    offset = tokens[0] if len(tokens) % 2 == 0 else "*"
    hexsig = tokens[1] if len(tokens) % 2 == 0 else tokens[0]
    options = tokens[-1] if len(tokens) >= 3 else ""
    for ch in options:
        if ch not in _OPTIONS:
            raise Bad(f"unknown subsignature modifier {ch!r}")
    parse_offset(offset, target)
    variants = []
    for variant, wide in _variants(hexsig, set(options)):
        if "!" in variant and options:
            raise Bad("negated alternatives cannot take modifiers")
        variants.append((wide, _parts(variant, "i" in options, wide, target, not options)))
    return offset, variants


def _variants(hexsig: str, options: set[str]) -> list[tuple[str, bool]]:
    """The hex strings ClamAV adds for one subsignature, after fullword and wide rewriting."""
    if "f" in options:
        if hexsig.count("[") != hexsig.count("]"):
            raise Bad("unmatched '['")
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
                raise Bad("truncated alternative")
            if hexsig[i + 1] in "BLW":
                if hexsig[i + 2] != ")":
                    raise Bad(f"bad marker in {hexsig!r}")
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
            raise Bad("an alternative cannot contain a gap")
    if hexsig.count("{") != hexsig.count("}"):
        raise Bad("unmatched '{'")
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
        if not isnumber(inner):
            raise Bad(f"bad gap {text}")
        return atoi(inner), atoi(inner)
    if _strtok(inner, 2) is not None:
        raise Bad(f"bad gap {text}")
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
    if not isnumber(text):
        raise Bad(f"bad gap {gap}")
    return int(text)


def _part(text: str, nocase: bool, wide: bool, mindist: int, maxdist: int, target: int,
          plain: bool) -> Part:
    """One Aho-Corasick pattern; ``plain``: the subsignature has no ::i/w/f/a modifiers."""
    try:
        hexpattern.check_subpattern(text, target, plain)
        left, begin, end, right = hexpattern.anchor_layout(text)
    except hexpattern.Invalid as err:
        raise Bad(str(err)) from None
    core = text[begin:end]
    word_left = core.startswith("(W)")
    word_right = core.endswith("(W)") and len(core) > 3
    core = core[3 if word_left else 0:len(core) - (3 if word_right else 0)]
    if _BOUNDARY.search(core):
        raise Skip(f"boundary markers (B)/(L)/(W) inside {text!r} are not supported")
    elements = _elements(core)
    try:
        _, hs, min_len, max_len, _ = hexpattern.parse_hex(core)
        split = _trie_start(elements, nocase)
        forward = "".join(_element_regex(e, core, False) for e in elements[split:])
        prefix = [_element_regex(e, core, True) for e in reversed(elements[:split])]
    except hexpattern.Unsupported as why:
        raise Skip(str(why)) from None
    except hexpattern.Invalid as err:
        raise Bad(str(err)) from None
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
                raise Bad(f"unterminated '(' in {core!r}")
            elements.append((core[i:end + 1], False, -1))
            i = end + 1
        elif _HEXPAIR.match(core, i):
            pair = core[i:i + 2]
            static = "?" not in pair
            elements.append((pair, static, int(pair, 16) if static else -1))
            i += 2
        else:
            raise Bad(f"unexpected character {core[i]!r} in {core!r}")
    if len(elements) < MIN_DEPTH:
        raise Bad(f"pattern {core!r} is shorter than {MIN_DEPTH} bytes")
    if not any(a[1] and b[1] for a, b in itertools.pairwise(elements)):
        raise Bad(f"pattern {core!r} has no two consecutive fixed bytes")
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
        return hexpattern.render(hexpattern.pair_values(text, core))
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
        return hexpattern.alternatives("|".join(options), negate, core)[0]
    rendered = ["".join(hexpattern.render(v) for v in hexpattern.pairs(o, core)) for o in options]
    return ("(?>" if atomic else "(?:") + "|".join(rendered) + ")"


def _max_width(elements: list) -> int:
    width = 0
    for text, _, _ in elements:
        width += max(len(a) for a in text.strip("!()").split("|")) // 2 if text.endswith(
            ")") else 1
    return width


def _anchor(anchor: tuple | None, nocase: bool) -> list | None:
    """[allowed bytes, n, m] of an anchored byte (hexpattern.anchor_layout), or None when there is
    none or ClamAV does not check it."""
    if anchor is None or not hexpattern.anchor_checked(anchor[0]):
        return None
    pair, n, m = anchor
    values = set(hexpattern.pair_values(pair, pair))
    if nocase and len(values) == 1:
        only = next(iter(values))
        if chr(only).isascii() and chr(only).isalpha():
            values.add(only ^ 0x20)
    return [sorted(values), n, m]


_LITERAL = re.compile(r"\\x([0-9a-f]{2})|\[(?:\\.|[^\]\\])*\]|\\.|.", re.DOTALL)


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
