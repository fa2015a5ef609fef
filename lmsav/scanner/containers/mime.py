"""MIME structure by byte offsets: entities, multipart splitting, transfer decoding, and the
raw reading of a message that can be read more than one way.

Header lines are parsed by the stdlib ``email`` package, at most MAX_HEADER_SIZE bytes of them
per entity; their parameters by a linear parser of this module (``email``'s own is quadratic in
the number of parameters). Bodies are located with ``bytes.find`` on the one message buffer and
decoded with ``binascii``, so the mail handler, the editing code (mimeedit.py) and the ClamAV
reading (mail_clamav.py) share one view of where each part lies in the raw message, and where
its header ends (``split_head``).

A message is split into at most MAX_MIME_PARTS entities; the parts past that are left as
*overflow* regions, read by the raw reading. The raw reading (``raw_parts``) cuts a region at
every line that looks like a MIME delimiter, whatever boundary the headers declare: it is how
parts a mail client would still show are found when the structure says otherwise (a boundary
that matches no delimiter, a boundary reused by a nested multipart, parts after the closing
delimiter). ``Reading.doubts`` says when a message needs it; ordinary mail does not.
"""

from __future__ import annotations

import binascii
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message

from ..limits import MAX_HEADER_PARAMS, MAX_HEADER_SIZE, MAX_MIME_PARTS
from . import uu


@dataclass(slots=True)
class Entity:
    """One MIME entity located in the message by byte offsets (``raw[start:end]`` is all of it).

    ``raw[start:header_end]`` are its header lines, ``raw[body_start:end]`` its body. Inside a
    multipart, ``delimiter`` is where its ``--boundary`` line starts and ``line_break`` where the
    line break before that line starts (the break belongs to the delimiter, RFC 2046 5.1.1).
    ``children`` is None for a leaf, the parts in order for a multipart that was split.
    """

    part: Message
    start: int
    header_end: int
    body_start: int
    end: int
    delimiter: int = -1
    line_break: int = -1
    children: list[Entity] | None = None


@dataclass(slots=True)
class Reading:
    """A message as the structure reads it, and where that reading is in doubt.

    ``overflow``: regions (start, end) of multipart bodies past the MAX_MIME_PARTS-th entity,
    never split into entities. ``doubts``: why the structure may not be what a mail client
    shows (empty when it is plainly what it says).
    """

    root: Entity
    leaves: list[Entity]
    overflow: list[tuple[int, int]] = field(default_factory=list)
    doubts: set[str] = field(default_factory=set)


def read_message(raw: bytes, check: Callable[[], None] | None = None,
                 max_parts: int = MAX_MIME_PARTS) -> Reading:
    """The message ``raw`` split into entities; ``check`` is called now and then (a time
    budget raises from it)."""
    state = _Parse(max_parts, check)
    root = _parse(raw, 0, len(raw), 0, state, ())
    return Reading(root, leaf_entities(root), state.overflow, state.doubts)


def parse_entity(raw: bytes, depth: int = 0) -> Entity:
    """The message ``raw`` with its multipart tree split (not below nesting ``depth``)."""
    return _parse(raw, 0, len(raw), depth, _Parse(MAX_MIME_PARTS, None), ())


def leaf_name(part: Message, n: int) -> str:
    """The child name of leaf ``n``: "2:invoice.zip", or "1:part1.plain" when it has no name."""
    return f"{n}:{_filename(part) or _generated_name(part, n)}"


def leaf_entities(root: Entity) -> list[Entity]:
    """The leaves in message order; an attached message is one leaf. Leaf n is ``[n - 1]``."""
    out: list[Entity] = []
    stack = [root]
    while stack:
        entity = stack.pop()
        if entity.children is None:
            out.append(entity)
        else:
            stack.extend(reversed(entity.children))
    return out


# -- the structure ---------------------------------------------------------------------------

MAX_NESTING = 64
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LEADING_CR = re.compile(rb"\r*+")
_HEADER_PARSER = email.parser.BytesParser(policy=email.policy.compat32)
_CHECK_EVERY = 256  # delimiter runs of the raw reading between two calls of the time check
_NOT_SPACE = re.compile(rb"\S")
_ENCODING_LINE = re.compile(rb"^(?i:content-transfer-encoding)[ \t]*+:", re.MULTILINE)
# What makes a preamble or an epilogue worth a second look: MIME headers, a delimiter line, the
# start of a uuencoded file or a line of base64.
_HIDDEN_PART = re.compile(
    rb"^(?:(?i:content-(?:type|transfer-encoding|disposition))[ \t]*:|--\S|b(?i:egin)[ -]"
    rb"|[A-Za-z0-9+/]{60})", re.MULTILINE)


class _Parse:
    """What one parse counts and notices as it goes."""

    __slots__ = ("check", "count", "doubts", "max_parts", "overflow")

    def __init__(self, max_parts: int, check: Callable[[], None] | None):
        self.max_parts = max_parts
        self.check = check
        self.count = 0
        self.doubts: set[str] = set()
        self.overflow: list[tuple[int, int]] = []

    def count_entity(self) -> None:
        self.count += 1
        if self.check is not None:
            self.check()

    @property
    def full(self) -> bool:
        return bool(self.max_parts) and self.count >= self.max_parts


def _parse(raw: bytes, start: int, end: int, depth: int, state: _Parse,
           boundaries: tuple[bytes, ...]) -> Entity:
    """The entity ``raw[start:end]``, its multipart tree split (``boundaries``: those of the
    multiparts around it)."""
    state.count_entity()
    part, header_end, body_start = _split_headers(raw, start, end, state)
    entity = Entity(part, start, header_end, body_start, end)
    multipart = _maintype(part) == "multipart"
    boundary = _boundary(part)
    if _repeated_mime_header(part):
        state.doubts.add("repeated header")
    if not multipart:
        if boundary:
            state.doubts.add("boundary on a leaf")
        elif _maintype(part) == "text" and _encoding_in_text(raw, body_start, end):
            state.doubts.add("headers in a text body")
        return entity
    if not boundary:
        state.doubts.add("multipart without boundary")
        return entity
    if depth >= MAX_NESTING:
        state.doubts.add("nesting")
        return entity
    if boundary in boundaries or any(b.startswith(boundary) or boundary.startswith(b)
                                     for b in boundaries):
        state.doubts.add("boundary reused")
    entity.children = []
    split = _Split(raw, body_start, end, boundary)
    for delimiter, line_break, part_start, part_end in split:
        if state.full:
            state.overflow.append((delimiter, end))
            break
        child = _parse(raw, part_start, part_end, depth + 1, state, boundaries + (boundary,))
        child.delimiter, child.line_break = delimiter, line_break
        entity.children.append(child)
    if not entity.children:
        state.doubts.add("no parts")
    elif _HIDDEN_PART.search(raw, body_start, entity.children[0].line_break) is not None:
        state.doubts.add("preamble")
    if split.closed_at >= 0 and _HIDDEN_PART.search(raw, split.closed_at, end) is not None:
        state.doubts.add("epilogue")
    return entity


def _encoding_in_text(raw: bytes, start: int, end: int) -> bool:
    """Whether a text body holds a Content-Transfer-Encoding line: a message bounced or
    forwarded as text, whose parts ClamAV decodes from there."""
    if raw.find(b"ransfer-", start, end) < 0 and raw.find(b"RANSFER-", start, end) < 0:
        return False  # the usual text: two fast scans and no regex
    return _ENCODING_LINE.search(raw, start, end) is not None


def _repeated_mime_header(part: Message) -> bool:
    """Whether Content-Type or Content-Transfer-Encoding is given more than once."""
    seen = set()
    for key in part:  # the header names, in order
        key = key.lower()
        if key in ("content-type", "content-transfer-encoding"):
            if key in seen:
                return True
            seen.add(key)
    return False


def split_head(raw: bytes, start: int = 0, end: int | None = None) -> tuple[int, int]:
    """Where the header lines of the entity ``raw[start:end]`` end and where its body starts.

    The header ends at the first empty line, whatever each line's ending (LF or CRLF, mixed):
    the first value is where the line break of the last header line starts, the second just
    past the empty line. An entity starting with an empty line has no headers (``start``);
    one without an empty line is all headers (``end``, ``end``). The one definition every
    reader of a message's header block uses (the parser here, mimeedit.header_end).
    """
    end = len(raw) if end is None else end
    if raw[start:start + 1] in (b"\n", b"\r"):  # no headers at all: the whole entity is body
        return start, min(end, _LEADING_CR.match(raw, start, end).end() + 1)
    m = _HEADER_END.search(raw, start, end)
    return (m.start(), m.end()) if m else (end, end)


def _split_headers(raw: bytes, start: int, end: int, state: _Parse) -> tuple[Message, int, int]:
    """The entity's headers parsed by ``email`` (at most MAX_HEADER_SIZE bytes of them), where
    they end, and where its body starts."""
    header_end, body_start = split_head(raw, start, end)
    if header_end == start and body_start > start:
        return Message(), header_end, body_start
    cut = header_end
    if cut - start > MAX_HEADER_SIZE:
        state.doubts.add("header size")
        cut = raw.rfind(b"\n", start, start + MAX_HEADER_SIZE)
        cut = start + MAX_HEADER_SIZE if cut < 0 else cut
    part = _HEADER_PARSER.parsebytes(raw[start:cut] + b"\n\n", headersonly=True)
    return part, header_end, body_start


class _Split:
    """The parts of a multipart body ``raw[start:end]`` between ``--boundary`` delimiter lines:
    (delimiter line start, start of the line break before it, part start, part end). A missing
    close ends the last part at the body's end; ``closed_at`` is where the text after the
    closing delimiter line starts (-1 while not closed)."""

    def __init__(self, raw: bytes, start: int, end: int, boundary: bytes):
        self.raw, self.start, self.end = raw, start, end
        self.delim = b"--" + boundary
        self.closed_at = -1

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        raw, end, delim = self.raw, self.end, self.delim
        pos = self.start
        part_start = None
        opened = opened_break = 0
        while True:
            i = raw.find(delim, pos, end)
            if i < 0:
                break
            if i != self.start and raw[i - 1:i] != b"\n":
                pos = i + len(delim)
                continue
            line_break = i - 1 if i > self.start else i
            if line_break > self.start and raw[line_break - 1:line_break] == b"\r":
                line_break -= 1
            if part_start is not None:
                yield opened, opened_break, part_start, max(line_break, part_start)
            after = i + len(delim)
            if raw[after:after + 2] == b"--":  # the closing delimiter
                nl = raw.find(b"\n", after, end)
                self.closed_at = end if nl < 0 else nl + 1
                return
            nl = raw.find(b"\n", after, end)
            if nl < 0:
                return
            opened, opened_break = i, line_break
            part_start = pos = nl + 1
        if part_start is not None and part_start < end:
            yield opened, opened_break, part_start, end


# -- headers and parameters --------------------------------------------------------------------

_PARAM_TOKENS = re.compile(r'\\"|"|;')


def _parse_params(value: str) -> list[tuple[str, str]]:
    """``value`` cut at ';' outside quotes into (name, value) pairs, the first being the value
    itself — what ``email.message`` does, in linear time and for the first MAX_HEADER_PARAMS
    fields only."""
    out: list[tuple[str, str]] = []
    pos, size = 0, len(value)
    while pos <= size and len(out) < MAX_HEADER_PARAMS:
        end = size
        quoted = False
        for token in _PARAM_TOKENS.finditer(value, pos):
            text = token.group()
            if text == '"':
                quoted = not quoted
            elif text == ";" and not quoted:
                end = token.start()
                break
        name, eq, val = value[pos:end].partition("=")
        out.append((name.strip().lower(), val.strip()) if eq else (name.strip(), ""))
        pos = end + 1
    return out


def _param(part: Message, name: str, header: str = "content-type") -> str | None:
    """A parameter's value, RFC 2231 decoded as ``email`` decodes it; None when absent."""
    value = part.get(header)
    if value is None:
        return None
    value = str(value)
    if name not in value.lower():
        return None  # most headers, most names: no parameters to parse
    for key, found in email.utils.decode_params(_parse_params(value)):
        if key.lower() == name:
            if isinstance(found, tuple):
                found = (found[0], found[1], email.utils.unquote(found[2]))
                return str(email.utils.collapse_rfc2231_value(found))
            return email.utils.unquote(found)
    return None


def _boundary(part: Message) -> bytes:
    try:
        b = _param(part, "boundary")
    except Exception:
        return b""
    return b.rstrip().encode("utf-8", "surrogateescape") if b else b""


def _maintype(part: Message) -> str:
    try:
        return part.get_content_maintype()
    except Exception:
        return "text"


def _transfer_encoding(part: Message) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _filename(part: Message) -> str:
    try:
        name = _param(part, "filename", "content-disposition")
        if name is None:
            name = _param(part, "name")
    except Exception:
        return ""
    if not name:
        return ""
    name = name.strip()
    if "=?" in name:
        try:
            name = str(make_header(decode_header(name)))
        except Exception:
            pass
    return name.replace("\r", "").replace("\n", "").strip()


def _generated_name(part: Message, n: int) -> str:
    try:
        subtype = part.get_content_subtype()
    except Exception:
        subtype = "bin"
    return f"part{n}.{re.sub(r'[^A-Za-z0-9.+-]', '_', subtype) or 'bin'}"


# -- transfer encodings ------------------------------------------------------------------------

_UUENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_BLANK_AFTER_DIGITS = re.compile(
    rb"(?<=[A-Za-z0-9+/=])[ \t]*+\r?\n[ \t]*+\r?\n(?=[ \t\r\n]*+\S)")


def _decode(part: Message, body: bytes) -> bytes:
    """The body decoded by its transfer encoding; bad encodings decode as far as possible."""
    return decode_body(_transfer_encoding(part), body)


def decode_body(cte: str, body: bytes) -> bytes:
    """``body`` decoded from the transfer encoding named ``cte`` (lower case)."""
    try:
        if cte == "base64":
            return _a2b_base64_lenient(body)
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
        if cte in _UUENCODINGS:
            # Without a "begin" line there is no file: the body is text, as ClamAV reads it.
            block = next(uu.blocks(body), None)
            return block.data if block is not None else body
    except (binascii.Error, ValueError):
        pass
    return body


def base64_readings(body: bytes) -> list[bytes]:
    """A base64 body decoded whole, and — when text follows a blank line after the digits, as
    when the part's end is not known — up to that blank line."""
    whole = decode_body("base64", body)
    m = _BLANK_AFTER_DIGITS.search(body)
    if m is None:
        return [whole]
    cut = decode_body("base64", body[:m.start()])
    return [cut, whole] if cut != whole else [whole]


def _a2b_base64_lenient(body: bytes) -> bytes:
    try:
        return binascii.a2b_base64(body)
    except binascii.Error:
        # Bad padding or a truncated quantum: decode the whole quanta that are there.
        clean = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        return binascii.a2b_base64(clean[: len(clean) // 4 * 4] or b"")


# -- the raw reading -----------------------------------------------------------------------------

# Where the raw reading cuts: a run of delimiter-like lines ("--" and then anything but a
# blank), each perhaps followed by a blank line (the empty parts between them are passed over in
# one match); or a MIME header line, which starts a part unless the line before it is a header
# too (a message bounced or forwarded as text carries its parts' headers in its body).
_CUT = re.compile(
    rb"(?P<run>(?:^--(?=\S)[^\r\n]*+(?:\r?\n|\Z)(?:[ \t]*+\r?\n)?)++)"
    rb"|^(?i:content-(?:type|transfer-encoding|disposition))[ \t]*+:", re.MULTILINE)
_HEADER_LINE = re.compile(rb"[!-9;-~]+[ \t]*:")
_RAW_HEADER = re.compile(
    rb"^(content-(?:type|transfer-encoding|disposition))[ \t]*:[ \t]*+"
    rb"([^\r\n]*+(?:\r?\n[ \t][^\r\n]*+)*+)", re.MULTILINE | re.IGNORECASE)


@dataclass(slots=True)
class RawPart:
    """One part of the raw reading: its body ``raw[body_start:end]``, the transfer encodings
    its headers name (in order, each once) and its name."""

    body_start: int
    end: int
    encodings: list[str]
    name: str
    subtype: str


def raw_parts(raw: bytes, start: int, end: int,
              check: Callable[[], None] | None = None) -> Iterator[RawPart]:
    """The parts of ``raw[start:end]`` cut at every delimiter-like line and before every MIME
    header block, empty ones passed over.

    A part after a delimiter starts with header lines unless a blank line follows the
    delimiter; the text before the first cut is a part without headers."""
    pos, headers = start, False
    for seen, cut in enumerate(_CUT.finditer(raw, start, end), 1):
        if check is not None and seen % _CHECK_EVERY == 0:
            check()
        if cut.group("run") is None:  # a header line
            if cut.start() == pos or _after_header_line(raw, cut.start(), pos):
                continue  # the part's own header block, or inside one
            part = _raw_part(raw, pos, _line_break_before(raw, cut.start(), pos), headers)
            pos, headers = cut.start(), True
        else:
            part = _raw_part(raw, pos, _line_break_before(raw, cut.start(), pos), headers)
            pos = cut.end()
            headers = not _ends_blank(raw, cut.start(), pos)
        if part is not None:
            yield part
    part = _raw_part(raw, pos, end, headers)
    if part is not None:
        yield part


def _after_header_line(raw: bytes, at: int, floor: int) -> bool:
    """Whether the line before the one at ``at`` is a header line (or its folded part)."""
    end = _line_break_before(raw, at, floor)
    if end <= floor:
        return False
    text = raw[max(raw.rfind(b"\n", floor, end) + 1, floor):end]
    if not text.strip():
        return False  # a blank line: a header block may start after it
    return text[:1] in (b" ", b"\t") or _HEADER_LINE.match(text) is not None


def _line_break_before(raw: bytes, at: int, floor: int) -> int:
    if at > floor and raw[at - 1:at] == b"\n":
        at -= 1
        if at > floor and raw[at - 1:at] == b"\r":
            at -= 1
    return at


def _ends_blank(raw: bytes, start: int, end: int) -> bool:
    """Whether the run ``raw[start:end]`` ends with a blank line (its last part has no headers)."""
    last = raw.rfind(b"\n", start, end - 1)
    return last >= start and not raw[last + 1:end].strip(b" \t\r\n") and \
        not raw.startswith(b"--", last + 1)


def _raw_part(raw: bytes, start: int, end: int, headers: bool) -> RawPart | None:
    if start >= end or _NOT_SPACE.search(raw, start, end) is None:
        return None
    if not headers or _HEADER_LINE.match(raw, start) is None:
        return RawPart(start, end, [], "", "plain")
    header_end, body_start = split_head(raw, start, end)
    if body_start >= end:
        return None  # headers only: nothing to scan
    header_end = min(header_end, start + MAX_HEADER_SIZE)
    found: dict[str, list[str]] = {}
    for h in _RAW_HEADER.finditer(raw, start, header_end):
        text = re.sub(rb"\r?\n[ \t]", b" ", h.group(2)).decode("latin-1")
        found.setdefault(h.group(1).lower().decode(), []).append(text)
    encodings: list[str] = []
    for text in found.get("content-transfer-encoding", []):
        cte = text.strip().lower()
        if cte not in encodings:
            encodings.append(cte)
    part = Message()
    for key in ("content-type", "content-disposition"):
        if key in found:
            part[key] = found[key][-1]
    return RawPart(body_start, end, encodings, _filename(part), part.get_content_subtype())
