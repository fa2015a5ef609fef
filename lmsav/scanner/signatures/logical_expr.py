"""Logical expressions of .ldb signatures: parsed into a tree once, evaluated on match counts.

The grammar is ClamAV's and so is its reading of it, quirks included, because a signature means
what ClamAV makes of it: at the top level an expression splits at its FIRST ``&``/``|``
(``0&1|2`` is ``0&(1|2)``) while inside one parenthesised block it splits at the LAST operator of
that block (``(0&1|2)`` is ``(0&1)|2``); ``A=X,Y`` on a single subsignature ignores ``Y``; a
block with a count modifier passes its match count up but not which subsignatures matched.

A tree is plain lists (JSON-ready): ``["id", n, mod, x]`` for subsignature ``n`` (``mod`` is
"", "=", "<" or ">") and ``["op", "&"|"|", left, right, blkmod, x, y]`` for a block.
"""

from __future__ import annotations

MAX_SUBSIGS = 64
_MODIFIERS = "<>="


class ExprError(ValueError):
    """The text is not a logical expression ClamAV accepts."""


def parse(text: str) -> list:
    """The expression tree of ``text``; raises ExprError as ClamAV would refuse it."""
    if not text:
        raise ExprError("empty logical expression")
    return _Parser(text).parse(0, len(text))


def max_id(node: list) -> int:
    """Highest subsignature number the expression names."""
    if node[0] == "id":
        return node[1]
    return max(max_id(node[2]), max_id(node[3]))


def ids(node: list) -> set[int]:
    if node[0] == "id":
        return {node[1]}
    return ids(node[2]) | ids(node[3])


def matches(node: list, counts) -> bool:
    """True when the expression holds for ``counts`` (a sequence indexed by subsignature)."""
    return _evaluate(node, counts)[0]


def _evaluate(node: list, counts) -> tuple[bool, int, int]:
    """(holds, match count, bit set of matched subsignatures) as ClamAV accumulates them."""
    if node[0] == "id":
        _, n, mod, x = node
        val = counts[n] if n < len(counts) else 0
        if mod and not _compare(mod, val, x):
            return False, 0, 0
        if not mod and not val:
            return False, 0, 0
        return True, val, 1 << n
    _, op, left, right, blkmod, x, y = node
    lok, lcnt, lids = _evaluate(left, counts)
    rok, rcnt, rids = _evaluate(right, counts)
    ok = (lok and rok) if op == "&" else (lok or rok)
    if not blkmod:
        return (True, lcnt + rcnt, lids | rids) if ok else (False, 0, 0)
    total, seen = (lcnt + rcnt, lids | rids) if ok else (0, 0)
    if not _compare(blkmod, total, x):
        return False, 0, 0
    if y and seen.bit_count() < y:
        return False, 0, 0
    return True, total, 0  # ClamAV does not pass a counted block's subsignatures upward


def _compare(mod: str, value: int, x: int) -> bool:
    if mod == "=":
        return value == x
    if mod == "<":
        return value < x
    if mod == ">":
        return value > x
    return False  # ")" read as a modifier (e.g. "1(0)"): ClamAV's comparison fails


def count_sensitive(node: list, under_block: bool = False) -> set[int]:
    """Subsignatures whose exact match count (not just "matched or not") can change the result."""
    if node[0] == "id":
        _, n, mod, x = node
        presence = not mod or (mod == "=" and x == 0) or (mod == ">" and x == 0) or (
            mod == "<" and x == 1)
        return set() if presence and not under_block else {n}
    inner = under_block or bool(node[4])
    return count_sensitive(node[2], inner) | count_sensitive(node[3], inner)


class _Parser:
    """Walks the text as ClamAV's recursive splitter does (indexes into one string, because a
    sub-expression may look one character past its own end, as the original does)."""

    def __init__(self, text: str):
        self.s = text

    def char(self, i: int) -> str:
        return self.s[i] if 0 <= i < len(self.s) else "\0"

    def uint(self, i: int) -> tuple[int, int] | None:
        """sscanf("%u") at ``i``: (value, index after it) or None."""
        s = self.s
        while i < len(s) and s[i] in " \t\n\v\f\r":
            i += 1
        sign = 1
        if i < len(s) and s[i] in "+-":
            sign = -1 if s[i] == "-" else 1
            i += 1
        start = i
        while i < len(s) and s[i].isdigit() and s[i].isascii():
            i += 1
        if i == start:
            return None
        return (sign * int(s[start:i])) % (1 << 32), i

    def parse(self, start: int, end: int) -> list:
        length = end - start
        pth = 0
        op = op1 = ""
        opoff = op1off = 0
        mod, modoff = "", 0
        blkend, blkmod, modval1, modval2 = 0, "", 0, 0
        i = 0
        while i < length:
            c = self.s[start + i]
            if c == "(":
                pth += 1
            elif c == ")":
                if not pth:
                    raise ExprError("missing opening parenthesis")
                pth -= 1
                mod, modoff = c, i
            elif c in _MODIFIERS:
                mod, modoff = c, i
            elif c in "&|":
                if not pth:
                    op, opoff = c, i
                elif pth == 1:
                    op1, op1off = c, i
            if op:
                break
            if op1 and not pth:
                blkend = i
                nxt = self.char(start + i + 1)
                if nxt in _MODIFIERS:
                    blkmod = nxt
                    modval1, second = self._block_values(start + i + 2, nxt)
                    modval2 = modval2 if second is None else second
                    i += 2
                    while i + 1 < length and (self.s[start + i + 1].isdigit()
                                              or self.s[start + i + 1] == ","):
                        i += 1
                if i + 1 == length:
                    break
                blkmod = ""
            i += 1
        if pth:
            raise ExprError("missing closing parenthesis")
        if not op and not op1:
            if self.char(start) == "(":
                return self.parse(start + 1, end - 1)
            found = self.uint(start)
            if found is None:
                raise ExprError(f"cannot read a subsignature number in {self.s[start:end]!r}")
            n = found[0]
            if n >= MAX_SUBSIGS:
                raise ExprError(f"subsignature {n} is out of range (at most {MAX_SUBSIGS})")
            if mod:
                value = self.uint(start + modoff + 1)
                if value is None:
                    raise ExprError(f"missing number after {mod!r}")
                return ["id", n, mod, value[0]]
            return ["id", n, "", 0]
        lstart, rend = start, end
        if not op:
            op, opoff = op1, op1off
            lstart, rend = start + 1, start + blkend
        if not opoff:
            raise ExprError("missing left argument")
        if opoff + 1 == length:
            raise ExprError("missing right argument")
        left = self.parse(lstart, start + opoff)
        right = self.parse(start + opoff + 1, rend)
        return ["op", op, left, right, blkmod, modval1 if blkmod else 0,
                modval2 if blkmod else 0]

    def _block_values(self, i: int, mod: str) -> tuple[int, int | None]:
        """sscanf("%u,%u") falling back to "%u": the count and, when written, the distinct one."""
        first = self.uint(i)
        if first is None:
            raise ExprError(f"missing number after {mod!r}")
        if self.char(first[1]) == ",":
            second = self.uint(first[1] + 1)
            if second is not None:
                return first[0], second[0]
        return first[0], None


__all__ = ["ExprError", "count_sensitive", "ids", "matches", "max_id", "parse"]
