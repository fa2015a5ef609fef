"""Container metadata signatures (.cdb): rules on how an archive describes one of its members.

A line reads ``VirusName:ContainerType:ContainerSize:FileNameREGEX:FileSizeInContainer:
FileSizeReal:IsEncrypted:FilePos:Res1:Res2[:MinFL[:MaxFL]]``. Every field but the name may be
``*``; sizes and the position are a number or a range ``x-y`` (``0`` on either side leaves that
side open); IsEncrypted is 0 or 1; the name is a POSIX extended regular expression searched in
the member's name (``(?i)`` in front makes it case-insensitive). Res1 and Res2 are not used.

ClamAV checks these rules while it walks an archive's directory, member by member, and reports
the detection on the archive. Which containers take part and how each presents its members is
ClamAV's, kept here (``_VIEWS``): zip members are numbered from 1 in central-directory order
(directories included), 7z from 0 with no packed size, cab and chm from 0 with no packed size,
tar and cpio give the real size for both sizes, ISO 9660 and mail attachments are always at
position 0. Handlers fill ``MemberMeta`` (subject.py) with what the format records, numbering
members from 1 the way ClamAV counts them for that format; this module turns it into ClamAV's
view. Containers whose handler fills no ``MemberMeta`` (gzip, OLE2, PDF …) are not checked,
as in ClamAV.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .clamav_types import KNOWN_TYPES
from .errors import SignatureError
from .levels import skip_reason
from .subject import MAIL_LINKS_ONLY, MAIL_UNREAD

NOT_DESCRIBED = frozenset({MAIL_LINKS_ONLY, MAIL_UNREAD})

ANY_TYPE = "CL_TYPE_ANY"
# ClamAV keeps sizes as 32-bit unsigned numbers; all ones is its "any" marker.
_OFF_ANY = 0xFFFFFFFF
ENCRYPTED_ANY = 2


@dataclass(frozen=True, slots=True)
class ContainerSig:
    name: str
    source: str
    line: int
    container: str  # CL_TYPE_* or CL_TYPE_ANY
    container_size: tuple[int, int] | None  # None: any
    regex: str | None  # the Python bytes regex (as latin-1 text); None: any name
    packed_size: tuple[int, int] | None
    size: tuple[int, int] | None
    encrypted: int  # 0, 1 or ENCRYPTED_ANY
    position: tuple[int, int] | None


class _Malformed(Exception):
    pass


class _Untranslatable(Exception):
    pass


# -- parsing -----------------------------------------------------------------------------------

def parse_cdb(text: str, source: str) -> tuple[list[ContainerSig], list[str]]:
    """Parse .cdb lines; a line for another engine level or a name pattern lmsav cannot
    express is skipped with its reason."""
    sigs, skipped = [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if not 10 <= len(fields) <= 12:
            raise SignatureError(source, lineno, "expected VirusName:ContainerType:ContainerSize:"
                                 "FileNameREGEX:FileSizeInContainer:FileSizeReal:IsEncrypted:"
                                 "FilePos:Res1:Res2[:MinFL[:MaxFL]]")
        name = fields[0]
        levels = fields[10:]
        reason = skip_reason(levels, source, lineno)
        if reason:
            skipped.append(f"{source}:{lineno}: {name}: {reason}")
            continue
        try:
            sig = _parse_fields(fields, source, lineno)
        except _Malformed as err:
            raise SignatureError(source, lineno, f"{name}: {err}") from None
        except _Untranslatable as err:
            skipped.append(f"{source}:{lineno}: {name}: {err}")
            continue
        sigs.append(sig)
    return sigs, skipped


def _parse_fields(fields: list[str], source: str, lineno: int) -> ContainerSig:
    name, ctype, csize, regex, packed, size, encrypted, position = fields[:8]
    if ctype == "*":
        ctype = ANY_TYPE
    elif ctype not in KNOWN_TYPES:
        raise _Malformed(f"unknown container type {ctype!r}")
    if encrypted == "*":
        enc = ENCRYPTED_ANY
    elif encrypted in ("0", "1"):
        enc = int(encrypted)
    else:
        raise _Malformed(f"bad encryption flag {encrypted!r}: need 0, 1 or *")
    return ContainerSig(
        name, source, lineno, ctype, _range(csize),
        None if regex == "*" else translate_regex(regex),
        _range(packed), _range(size), enc, _range(position),
    )


_UINT = re.compile(r"\s*([+-]?)(\d+)")


def _range(text: str) -> tuple[int, int] | None:
    """A size or position field as ClamAV reads it: (low, high), equal for an exact value."""
    if text == "*":
        return None
    if "-" in text:
        # ClamAV reads "%u-%u": optional spaces and sign before each number, junk after.
        first = _UINT.match(text)
        if first is None or text[first.end():first.end() + 1] != "-":
            raise _Malformed(f"bad range {text!r}: need x-y")
        second = _UINT.match(text, first.end() + 1)
        if second is None:
            raise _Malformed(f"bad range {text!r}: need x-y")
        low, high = _as_uint(first), _as_uint(second)
    elif text == "" or text.isdigit():
        low = high = int(text or 0) & 0xFFFFFFFF  # ClamAV reads an empty field as 0
    else:
        raise _Malformed(f"bad value {text!r}: need a number, x-y or *")
    if low == _OFF_ANY:
        return None  # ClamAV's own "any" value
    return low, high


def _as_uint(found: re.Match) -> int:
    value = int(found[2]) & 0xFFFFFFFF
    return (-value) & 0xFFFFFFFF if found[1] == "-" else value


# -- POSIX extended regular expressions --------------------------------------------------------

_CLASSES = {
    "alnum": b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "alpha": b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
    "blank": b" \t",
    "cntrl": bytes(range(32)) + b"\x7f",
    "digit": b"0123456789",
    "graph": bytes(range(33, 127)),
    "lower": b"abcdefghijklmnopqrstuvwxyz",
    "print": bytes(range(32, 127)),
    "punct": bytes(c for c in range(33, 127) if not chr(c).isalnum()),
    "space": b"\t\n\v\f\r ",
    "upper": b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "xdigit": b"0123456789ABCDEFabcdef",
}
_DUP_MAX = 255


def translate_regex(pattern: str) -> str:
    """The Python bytes regex (as latin-1 text) that matches what ClamAV's POSIX ERE does.

    ClamAV compiles the name pattern with its copy of Henry Spencer's regex library; this
    follows that parser: a backslash makes the next character literal (``\\<`` and ``\\>``
    are word edges), ``{`` is literal unless a digit follows, bracket expressions take
    ``[:class:]``, ``[=c=]`` and ``[.c.]``, and a leading ``(?i)`` ignores case. Errors that
    parser reports make the line malformed.
    """
    icase = pattern.startswith("(?i)")
    if icase:
        pattern = pattern[4:]
    raw = pattern.encode("utf-8", "surrogateescape")
    return _EreParser(raw, icase).parse().decode("latin-1")


class _EreParser:
    def __init__(self, text: bytes, icase: bool):
        self.text = text
        self.pos = 0
        self.icase = icase

    def parse(self) -> bytes:
        if not self.text:
            raise _Malformed("empty name pattern")
        out = self._alternatives(stop=None)
        return out

    def _peek(self, ahead: int = 0) -> int | None:
        i = self.pos + ahead
        return self.text[i] if i < len(self.text) else None

    def _alternatives(self, stop: int | None) -> bytes:
        branches = []
        while True:
            pieces = []
            while self._peek() is not None and self._peek() not in (ord("|"), stop):
                pieces.append(self._piece())
            if not pieces:
                raise _Malformed("empty alternative in name pattern")
            branches.append(b"".join(pieces))
            if self._peek() != ord("|"):
                break
            self.pos += 1
        return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"

    def _piece(self) -> bytes:
        c = self.text[self.pos]
        self.pos += 1
        caret = False
        if c == ord("("):
            if self._peek() is None:
                raise _Malformed("unmatched ( in name pattern")
            inner = b"" if self._peek() == ord(")") else self._alternatives(stop=ord(")"))
            if self._peek() != ord(")"):
                raise _Malformed("unmatched ( in name pattern")
            self.pos += 1
            atom = b"(?:" + inner + b")"
        elif c == ord("^"):
            atom, caret = rb"\A", True
        elif c == ord("$"):
            atom = rb"\Z"
        elif c in b"*+?":
            raise _Malformed(f"{chr(c)!r} repeats nothing in name pattern")
        elif c == ord("."):
            atom = b"."
        elif c == ord("["):
            atom = self._bracket()
        elif c == ord("\\"):
            if self._peek() is None:
                raise _Malformed("trailing backslash in name pattern")
            c = self.text[self.pos]
            self.pos += 1
            atom = rb"\b(?=\w)" if c == ord("<") else rb"\b(?<=\w)" if c == ord(">") \
                else self._literal(c)
        elif c == ord("{") and self._peek() is not None and chr(self._peek()).isdigit():
            raise _Malformed("'{' repeats nothing in name pattern")
        else:
            atom = self._literal(c)
        return atom + self._repeat(caret)

    def _repeat(self, caret: bool) -> bytes:
        c = self._peek()
        if not self._is_repeat(c):
            return b""
        if caret:
            raise _Malformed("'^' cannot repeat in name pattern")
        self.pos += 1
        if c != ord("{"):
            quantifier = bytes([c])
        else:
            low = self._count()
            high = low
            if self._peek() == ord(","):
                self.pos += 1
                high = self._count() if self._peek() is not None and \
                    chr(self._peek()).isdigit() else None
                if high is not None and low > high:
                    raise _Malformed("bad repeat bounds in name pattern")
            if self._peek() != ord("}"):
                raise _Malformed("unterminated {} in name pattern")
            self.pos += 1
            quantifier = b"{%d}" % low if high == low else \
                b"{%d,}" % low if high is None else b"{%d,%d}" % (low, high)
        if self._is_repeat(self._peek()):
            raise _Malformed("repeat of a repeat in name pattern")
        return quantifier

    def _is_repeat(self, c: int | None) -> bool:
        if c is None:
            return False
        if c in b"*+?":
            return True
        nxt = self._peek(1)
        return c == ord("{") and nxt is not None and chr(nxt).isdigit()

    def _count(self) -> int:
        start = self.pos
        while self._peek() is not None and chr(self._peek()).isdigit():
            self.pos += 1
        digits = self.text[start:self.pos]
        if not digits or int(digits) > _DUP_MAX:
            raise _Malformed(f"bad repeat count in name pattern (at most {_DUP_MAX})")
        return int(digits)

    def _literal(self, c: int) -> bytes:
        if self.icase and chr(c).isascii() and chr(c).isalpha():
            return _render({c, ord(chr(c).swapcase())})
        return b"\\x%02x" % c

    def _bracket(self) -> bytes:
        rest = self.text[self.pos:]
        if rest.startswith(b"[:<:]]"):
            self.pos += 6
            return rb"\b(?=\w)"
        if rest.startswith(b"[:>:]]"):
            self.pos += 6
            return rb"\b(?<=\w)"
        members: set[int] = set()
        invert = self._peek() == ord("^")
        if invert:
            self.pos += 1
        if self._peek() in (ord("]"), ord("-")):
            members.add(self.text[self.pos])
            self.pos += 1
        while self._peek() is not None and self._peek() != ord("]") and not (
                self._peek() == ord("-") and self._peek(1) == ord("]")):
            self._bracket_term(members)
        if self._peek() == ord("-"):
            members.add(ord("-"))
            self.pos += 1
        if self._peek() != ord("]"):
            raise _Malformed("unmatched [ in name pattern")
        self.pos += 1
        if self.icase:
            members |= {ord(chr(c).swapcase()) for c in members if chr(c).isascii()
                        and chr(c).isalpha()}
        if invert:
            members = set(range(1, 256)) - members
        if not members:
            return b"(?!)"
        return _render(members)

    def _bracket_term(self, members: set[int]) -> None:
        c = self._peek()
        if c == ord("-"):
            raise _Malformed("bad range in name pattern bracket")
        if c == ord("[") and self._peek(1) == ord(":"):
            self.pos += 2
            end = self.text.find(b":]", self.pos)
            name = self.text[self.pos:end].decode("latin-1") if end >= 0 else ""
            if end < 0 or name not in _CLASSES:
                raise _Malformed(f"unknown character class [:{name}:] in name pattern")
            members.update(_CLASSES[name])
            self.pos = end + 2
            return
        if c == ord("[") and self._peek(1) == ord("="):
            self.pos += 2
            members.add(self._collating(ord("=")))
            return
        start = self._symbol()
        if self._peek() == ord("-") and self._peek(1) not in (None, ord("]")):
            self.pos += 1
            if self._peek() == ord("-"):
                self.pos += 1
                finish = ord("-")
            else:
                finish = self._symbol()
        else:
            finish = start
        # ClamAV compares plain chars, signed: a range reaching above 0x7f from below is empty
        # of meaning there and an error.
        low, high = _signed(start), _signed(finish)
        if low > high:
            raise _Malformed("bad range in name pattern bracket")
        members.update(v & 0xFF for v in range(low, high + 1))

    def _symbol(self) -> int:
        if self._peek() is None:
            raise _Malformed("unmatched [ in name pattern")
        if self._peek() == ord("[") and self._peek(1) == ord("."):
            self.pos += 2
            return self._collating(ord("."))
        c = self.text[self.pos]
        self.pos += 1
        return c

    def _collating(self, end_char: int) -> int:
        end = self.text.find(bytes([end_char, ord("]")]), self.pos)
        if end < 0:
            raise _Malformed("unmatched [ in name pattern")
        name = self.text[self.pos:end]
        self.pos = end + 2
        if len(name) == 1:
            return name[0]
        raise _Untranslatable(f"named collating element [{chr(end_char)}{name.decode()}"
                              f"{chr(end_char)}] in the name pattern")


def _signed(c: int) -> int:
    return c - 256 if c >= 128 else c


def _render(values: set[int]) -> bytes:
    ordered = sorted(values)
    if len(ordered) == 1:
        return b"\\x%02x" % ordered[0]
    parts, i = [], 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(b"\\x%02x" % ordered[i] if i == j else
                     b"\\x%02x-\\x%02x" % (ordered[i], ordered[j]))
        i = j + 1
    return b"[" + b"".join(parts) + b"]"


# -- compiling ---------------------------------------------------------------------------------

def compile_cdb(sigs: list[ContainerSig]) -> dict[str, bytes]:
    """One section of JSON lines, rules in the order ClamAV tries them (the last loaded
    first), so a matcher counts them without parsing."""
    lines = [json.dumps([s.name, s.source, s.container, s.container_size, s.regex,
                         s.packed_size, s.size, s.encrypted, s.position],
                        separators=(",", ":")) + "\n" for s in reversed(sigs)]
    return {"cdb.rules": "".join(lines).encode()} if lines else {}


# -- how ClamAV presents a member, per container type ------------------------------------------

@dataclass(frozen=True, slots=True)
class _View:
    first: int | None = 1  # the number ClamAV gives the first member; None: always 0
    packed: str = "packed"  # "packed" as recorded, "none" (0) or "size" (the real size)
    name_limit: int | None = None  # ClamAV copies at most this many bytes of the name
    name_fold: str = ""  # "low-bytes", "cpio" or "mail": how ClamAV rewrites the name


_CPIO = _View(packed="size", name_limit=512, name_fold="cpio")
_TAR = _View(packed="size", name_limit=100)
_VIEWS: dict[str, _View] = {
    "CL_TYPE_ZIP": _View(name_limit=255),
    "CL_TYPE_RAR": _View(name_limit=1024),
    "CL_TYPE_ARJ": _View(),
    "CL_TYPE_EGG": _View(),
    # 7-Zip names are UTF-16; ClamAV keeps the low byte of each unit.
    "CL_TYPE_7Z": _View(first=0, packed="none", name_fold="low-bytes"),
    "CL_TYPE_MSCAB": _View(first=0, packed="none"),
    "CL_TYPE_MSCHM": _View(first=0, packed="none"),
    "CL_TYPE_LHA_LZH": _View(first=0),
    "CL_TYPE_ISHIELD_MSI": _View(first=0, packed="size"),
    "CL_TYPE_POSIX_TAR": _TAR,
    "CL_TYPE_OLD_TAR": _TAR,
    "CL_TYPE_CPIO_OLD": _CPIO,
    "CL_TYPE_CPIO_ODC": _CPIO,
    "CL_TYPE_CPIO_NEWC": _CPIO,
    "CL_TYPE_CPIO_CRC": _CPIO,
    "CL_TYPE_ISO9660": _View(first=None, packed="size"),
    "CL_TYPE_MAIL": _View(first=None, packed="size", name_fold="mail"),
}
_DEFAULT_VIEW = _View()
_CPIO_UNSAFE = re.compile(rb"[\x80-\xff%\\\t\n\r]")
_MAIL_UNSAFE = re.compile(rb"[^0-9A-Za-z._]")


def clamav_view(container: str, member) -> tuple[bytes, int, int, int, int]:
    """(name, packed size, real size, position, encrypted) as ClamAV passes them to its
    container-metadata check for a member of a ``container`` (a CL_TYPE_* name)."""
    view = _VIEWS.get(container, _DEFAULT_VIEW)
    name = member.name or ""
    if view.name_fold == "low-bytes":
        encoded = name.encode("utf-16-le", "surrogatepass")
        raw = encoded[::2]
    else:
        raw = name.encode("utf-8", "surrogateescape")
    raw = raw.split(b"\0", 1)[0]  # ClamAV's names are C strings
    if view.name_limit is not None:
        raw = raw[:view.name_limit]
    if view.name_fold == "cpio":
        raw = _CPIO_UNSAFE.sub(b"_", raw)
    elif view.name_fold == "mail":
        raw = _MAIL_UNSAFE.sub(b"_", raw)
    size = member.size or 0
    packed = 0 if view.packed == "none" else size if view.packed == "size" else \
        member.packed_size or 0
    position = 0 if view.first is None else max(member.index + view.first - 1, 0)
    return raw, packed, size, position, 1 if member.encrypted else 0


# -- matching ----------------------------------------------------------------------------------

def _within(bounds, value: int) -> bool:
    """ClamAV's range test: an exact value, or low/high limits where 0 leaves a side open."""
    if bounds is None:
        return True
    low, high = bounds
    if low == high:
        return value == low
    return not ((low and low > value) or (high and high < value))


class ContainerMetaMatcher:
    """Checks each archive member's metadata against the .cdb rules of its container's type.

    Of a Subject it reads ``member`` (MemberMeta, None for anything not an archive member),
    ``container`` (ClamAV's type of the archive) and ``container_size`` (the archive's size in
    bytes; a rule with a ContainerSize never matches a subject that does not carry it).
    """

    def __init__(self, section):
        self._blob = section("cdb.rules")
        self.count = bytes(self._blob).count(b"\n")
        self._by_type: dict[str, list] | None = None
        self._for_type: dict[str, list] = {}

    def _rules_for(self, container: str) -> list:
        """The rules that apply to members of this container type, in ClamAV's order; the
        table is read on first use and each type's list is made once."""
        found = self._for_type.get(container)
        if found is None:
            if self._by_type is None:
                self._by_type = {}
                for order, line in enumerate(bytes(self._blob).splitlines()):
                    name, source, ctype, csize, regex, packed, size, enc, pos = json.loads(line)
                    compiled = re.compile(regex.encode("latin-1"), re.DOTALL) if regex else None
                    self._by_type.setdefault(ctype, []).append(
                        (order, name, source, csize, compiled, packed, size, enc, pos))
            merged = self._by_type.get(container, []) + (
                self._by_type.get(ANY_TYPE, []) if container != ANY_TYPE else [])
            found = self._for_type[container] = [rule[1:] for rule in sorted(merged)]
        return found

    def match(self, subject) -> list[tuple[str, str]]:
        member = subject.member
        # Mail parts ClamAV reads only for their links, or never opens, it describes to no rule.
        if member is None or member.mail_use in NOT_DESCRIBED or not self.count:
            return []
        container = subject.container
        candidates = self._rules_for(container)
        if not candidates:
            return []
        name, packed, size, position, encrypted = clamav_view(container, member)
        container_size = getattr(subject, "container_size", None)
        hits = []
        for rule_name, source, csize, regex, packed_range, size_range, enc, pos in candidates:
            if enc != ENCRYPTED_ANY and enc != encrypted:
                continue
            if csize is not None and (container_size is None or
                                      not _within(csize, container_size)):
                continue
            if not (_within(packed_range, packed) and _within(size_range, size)
                    and _within(pos, position)):
                continue
            if regex is not None and regex.search(name) is None:
                continue
            hits.append((rule_name, source))
        return hits

