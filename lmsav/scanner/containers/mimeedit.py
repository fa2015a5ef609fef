"""Edits a MIME message by byte offsets: parts removed or given new content, a part turned into a
text, top-level headers replaced, and where the header block ends.

Offsets come from the same splitting the mail handler uses (mime.py), so leaf ``n`` here is
always the handler's child ``n:…`` and its ``Child.member`` n. What is not changed is copied
byte for byte. ``rebuild_mail`` is the message's rebuilder in the handlers' registry.
"""

from __future__ import annotations

import base64
import binascii
import email.header
import re
from dataclasses import dataclass, field

from .base import RebuildError, rebuild_errors
from .mime import (
    Entity,
    _boundary,
    _decode,
    _filename,
    _maintype,
    leaf_entities,
    leaf_name,
    parse_entity,
    split_head,
)

__all__ = [
    "MailLeaf", "RebuildError", "header_end", "headers_of", "mail_leaves", "rebuild_mail",
    "replace_header", "replace_with_text",
]


def header_end(raw: bytes) -> int:
    """Offset just past the message's last header line (where the empty line ending the header
    block starts): ``raw[:header_end(raw)]`` is every header line with its line break.

    The header block ends at the first empty line whatever the line endings, as the parser
    reads it; ``len(raw)`` when there is none, 0 when the message starts with one.
    """
    stop, body = split_head(raw)
    if stop == body:
        return stop  # no empty line: the whole message is headers
    if stop == 0 and raw[:1] in (b"\n", b"\r"):
        return 0
    return stop + (2 if raw[stop:stop + 2] == b"\r\n" else 1)


@dataclass(frozen=True)
class MailLeaf:
    """One leaf part of a message, numbered and named exactly as MailHandler's children."""

    index: int  # 1-based: the n of MailHandler's child name "n:filename", its Child.member
    name: str  # that child name, "n:filename" or "n:partN.subtype"
    filename: str  # the attachment's file name, or ""
    content_type: str  # as declared, lower case ("text/plain" when none is declared)
    size: int  # decoded size
    is_attachment: bool  # Content-Disposition attachment, or it has a file name
    _data: bytes = field(repr=False, compare=False)

    def decoded(self) -> bytes:
        """The content decoded from its transfer encoding, as MailHandler yields it."""
        return self._data


def mail_leaves(raw: bytes) -> list[MailLeaf]:
    """Every leaf part of ``raw`` in MailHandler's order (uuencoded blocks are not leaves)."""
    with rebuild_errors("unreadable message"):
        leaves = leaf_entities(parse_entity(raw))
        out = []
        for n, leaf in enumerate(leaves, 1):
            data = _decode(leaf.part, raw[leaf.body_start:leaf.end])
            filename = _filename(leaf.part)
            out.append(MailLeaf(
                index=n,
                name=leaf_name(leaf.part, n),
                filename=filename,
                content_type=_content_type(leaf.part),
                size=len(data),
                is_attachment=bool(filename) or _disposition(leaf.part) == "attachment",
                _data=data,
            ))
        return out


def rebuild_mail(raw: bytes, edits: dict[int, bytes | None]) -> bytes:
    """``raw`` with leaf parts deleted (``None``) or given new decoded content (bytes); the
    message's rebuilder (``edits``: leaf number, from 1, as mail_leaves and the handler's
    ``Child.member`` number them → new content or None).

    A deleted part goes with its delimiter line; a multipart left with no parts goes too. When
    every leaf is deleted, leaf 1 stays as an empty text/plain part (a message keeps a body).
    New content keeps the part's transfer encoding when that carries it exactly, and becomes
    base64 otherwise (a message/* part, which may not be base64, raises RebuildError then).
    Everything not named is copied byte for byte; the top-level headers change only when the
    message is a single part, whose own Content-* headers they are.
    """
    with rebuild_errors("cannot rebuild the message"):
        root, leaves = _parse(raw)
        _check_indexes(edits, leaves)
        eol = _eol(raw)
        boundaries = _boundaries(root)
        dead = {id(leaves[i - 1]) for i, new in edits.items() if new is None}
        spans: list[tuple[int, int, bytes]] = []
        if leaves and len(dead) == len(leaves):
            # Every leaf goes: leaf 1 stays, emptied, so the result is still a message.
            dead.discard(id(leaves[0]))
            spans.append((leaves[0].start, leaves[0].end,
                          _text_entity(raw, leaves[0], "", eol, boundaries, leaves[0] is root)))
        for n, new in edits.items():
            leaf = leaves[n - 1]
            if new is not None:
                spans.append((leaf.start, leaf.end,
                              _content_entity(raw, leaf, bytes(new), eol, boundaries)))
        _collect_deletions(raw, root, _liveness(root, dead), spans, eol)
        return _apply(raw, spans, eol)


def replace_with_text(raw: bytes, index: int, text: str) -> bytes:
    """``raw`` with leaf ``index`` turned into an inline text/plain; charset=utf-8 part holding
    ``text`` (its Content-Type, Content-Transfer-Encoding and Content-Disposition, and so its
    file name, are replaced; its other headers stay). Used by the "warn" action."""
    with rebuild_errors("cannot rebuild the message"):
        root, leaves = _parse(raw)
        _check_indexes({index: None}, leaves)
        leaf = leaves[index - 1]
        eol = _eol(raw)
        entity = _text_entity(raw, leaf, text, eol, _boundaries(root), leaf is root)
        return _apply(raw, [(leaf.start, leaf.end, entity)], eol)


def replace_header(raw: bytes, name: str, value: str | None) -> bytes:
    """``raw`` with every top-level ``name`` header removed (folded lines included) and, unless
    ``value`` is None, one ``name: value`` in place of the first; when there was none, after the
    last header (before a broken line, which would end the header for parsers). The value cannot
    inject lines; non-ASCII values are RFC 2047 encoded; long ones fold. Everything else in the
    message stays byte for byte."""
    if not _FIELD_NAME.fullmatch(name):
        raise RebuildError(f"not a header name: {name!r}")
    with rebuild_errors("cannot change the message's headers"):
        entity = _top_entity(raw)
        eol = _eol(raw)
        stop = _head_stop(raw, entity)
        line = _header_line(name, value, eol) if value is not None else b""
        head = _edited_head(raw, entity, stop, {name.strip().lower()}, line, eol)
        return head + raw[stop:]


def headers_of(raw: bytes) -> list[tuple[str, str]]:
    """The top-level headers in order as (name, value): values unfolded and stripped, not RFC
    2047 decoded (so a value read here can be written back with replace_header unchanged).
    Bytes are read as UTF-8, or Latin-1 where they are not UTF-8."""
    with rebuild_errors("unreadable message headers"):
        entity = _top_entity(raw)
        out = []
        for start, end, fname in _fields(raw, entity.start, _head_stop(raw, entity)):
            text = _text(raw[start:end])
            if fname is None:
                continue
            value = text.split(":", 1)[1]
            value = re.sub(r"\r?\n(?=[ \t])", "", value).strip()
            out.append((text.split(":", 1)[0].strip(), value))
        return out


def _parse(raw: bytes) -> tuple[Entity, list[Entity]]:
    root = parse_entity(raw)
    return root, leaf_entities(root)


def _top_entity(raw: bytes) -> Entity:
    """The message's own header span, without splitting its body."""
    return parse_entity(raw, depth=1 << 30)


def _check_indexes(changes, leaves) -> None:
    for n in changes:
        if not isinstance(n, int) or not 1 <= n <= len(leaves):
            raise RebuildError(f"the message has no part {n} (it has {len(leaves)})")


def _liveness(root: Entity, dead: set[int]) -> dict[int, bool]:
    """Whether each entity keeps something: a leaf not deleted, or a multipart with such a
    leaf (a multipart split into no parts at all is left alone, so it counts as kept)."""
    out: dict[int, bool] = {}

    def visit(entity: Entity) -> bool:
        if entity.children is None:
            keep = id(entity) not in dead
        else:
            keep = not entity.children
            for child in entity.children:
                keep = visit(child) or keep
        out[id(entity)] = keep
        return keep

    visit(root)
    return out


def _collect_deletions(raw: bytes, entity: Entity, alive: dict[int, bool], edits: list,
                        eol: bytes) -> None:
    """Byte spans removing each run of deleted parts with their delimiter lines."""
    kids = entity.children
    if not kids:
        return
    i = 0
    while i < len(kids):
        if alive[id(kids[i])]:
            _collect_deletions(raw, kids[i], alive, edits, eol)
            i += 1
            continue
        j = i
        while j + 1 < len(kids) and not alive[id(kids[j + 1])]:
            j += 1
        if i > 0:
            # From the line break before part i's delimiter to the end of part j: the next
            # delimiter (or the closing one) then follows part i - 1 as before.
            end = kids[j].end
            if raw[end:end + 2] == b"--":
                # Part j is empty and shares its delimiter line's break with the next delimiter:
                # stop before that break so the next delimiter keeps it.
                end = kids[j].start - (2 if raw[kids[j].start - 2:kids[j].start] == b"\r\n" else 1)
            close = b""
            if j == len(kids) - 1 and kids[j].end == entity.end:
                # The multipart was never closed: the remaining parts need a closing delimiter,
                # or an empty last one would no longer count as a part.
                close = eol + b"--" + _boundary(entity.part) + b"--"
            edits.append((max(kids[i].line_break, kids[i - 1].end), end, close))
        else:
            # The first parts: from their delimiter to the next kept part's delimiter.
            edits.append((kids[0].delimiter, kids[j + 1].delimiter, b""))
        i = j + 1


def _apply(raw: bytes, edits: list[tuple[int, int, bytes]], eol: bytes) -> bytes:
    """``raw`` with each span replaced; the spans never overlap."""
    edits = sorted(edits, key=lambda e: (e[0], e[1]))
    out = []
    pos = 0
    for k, (start, end, new) in enumerate(edits):
        if start < pos:
            raise RebuildError("overlapping changes")
        out.append(raw[pos:start])
        out.append(new)
        pos = end
        if new:
            # An empty part shares the line break ending its delimiter line with the next
            # delimiter; a new entity there needs its own, or its last line would be lost.
            follow, after = end, None
            for s, e, n in edits[k + 1:]:
                if s != follow:
                    break
                if n:
                    after = n
                    break
                follow = e
            if (raw[follow:follow + 2] if after is None else after[:2]) == b"--":
                out.append(eol)
    out.append(raw[pos:])
    return b"".join(out)


def _content_entity(raw: bytes, leaf: Entity, data: bytes, eol: bytes, boundaries) -> bytes:
    """The leaf with ``data`` as its content, in its own encoding when that carries it exactly."""
    cte = _cte(leaf.part)
    if cte == "base64":
        return _entity_bytes(raw, leaf, _base64(data, eol), eol)
    if cte in ("", "7bit", "8bit") and _literal_ok(data, cte != "8bit", eol, boundaries):
        return _entity_bytes(raw, leaf, data, eol)
    if cte == "quoted-printable":
        encoded = _quoted_printable(data, eol, boundaries)
        if encoded is not None:
            return _entity_bytes(raw, leaf, encoded, eol)
    if _maintype(leaf.part) in ("message", "multipart"):
        # RFC 2045 6.4: a composite type is never base64; its new content must go as it is.
        raise RebuildError(f"the new content of a {_content_type(leaf.part)} part is not "
                           f"valid unencoded in this message")
    return _entity_bytes(raw, leaf, _base64(data, eol), eol, {"content-transfer-encoding"},
                         [("Content-Transfer-Encoding", "base64")])


def _text_entity(raw: bytes, leaf: Entity, text: str, eol: bytes, boundaries, top: bool) -> bytes:
    """The leaf as an inline text/plain; charset=utf-8 part holding ``text``."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    data = eol.join(line.encode("utf-8") for line in lines)
    if _literal_ok(data, True, eol, boundaries):
        body, cte = data, "7bit"
    else:
        body, cte = _quoted_printable(data, eol, boundaries), "quoted-printable"
        if body is None:
            body, cte = _base64(data, eol), "base64"
    add = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Transfer-Encoding", cte),
           ("Content-Disposition", "inline")]
    if top and leaf.part.get("mime-version") is None:
        add.insert(0, ("MIME-Version", "1.0"))
    drop = {"content-type", "content-transfer-encoding", "content-disposition"}
    return _entity_bytes(raw, leaf, body, eol, drop, add)


def _entity_bytes(raw: bytes, leaf: Entity, body: bytes, eol: bytes,
                  drop: set[str] = frozenset(), add: list[tuple[str, str]] = ()) -> bytes:
    """The leaf's header lines (minus ``drop``, plus ``add``), its separator, then ``body``."""
    stop = _head_stop(raw, leaf)
    separator = raw[stop:leaf.body_start]
    if drop or add:
        added = b"".join(_header_line(n, v, eol) for n, v in add)
        head = _edited_head(raw, leaf, stop, drop, added, eol)
    else:
        head = raw[leaf.start:stop]
    if not separator.endswith(b"\n") or separator.strip(b"\r\n"):
        # An entity that was all headers (or nothing, or began with a stray CR): the body
        # needs a blank line before it.
        if head and not head.endswith(b"\n"):
            head += eol
        separator = eol
    return head + separator + body


def _edited_head(raw: bytes, entity: Entity, stop: int, drop: set[str], added: bytes,
                 eol: bytes) -> bytes:
    """The entity's header lines without the fields named in ``drop``, and with ``added`` where
    the first dropped one was, or else after the last field that parsers read: a broken line
    ends the header for them, so a field placed after one would be invisible."""
    out = []
    for start, end, name in _fields(raw, entity.start, stop):
        if name in drop:
            if added:
                out.append(added)
                added = b""
            continue
        if added and _broken(raw[start:end]) and not (start == 0 and raw[:5] == b"From "):
            out.append(added)
            added = b""
        out.append(raw[start:end])
    if out and not out[-1].endswith(b"\n"):
        out[-1] += eol  # a head that ran to the data's end, its last line unterminated
    out.append(added)
    return b"".join(out)


# What the stdlib parser takes for a header line (RFC 5322 field name, then a colon).
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]*:")
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+")
_BARE_CR = re.compile(rb"\r(?!\n)")


def _broken(field: bytes) -> bool:
    if _BARE_CR.search(field):
        return True  # the stdlib splits lines at a lone CR too
    # A leading continuation line is skipped by parsers, not the end of the header.
    return field[:1] not in (b" ", b"\t") and not _FIELD_START.match(field)


def _head_stop(raw: bytes, entity: Entity) -> int:
    """Where the entity's header lines end, the last one's line break included."""
    stop = entity.header_end
    if stop == entity.start or stop == entity.body_start:
        return stop  # no separator: the head runs to the entity's end
    if raw[stop:stop + 2] == b"\r\n":
        return stop + 2
    return stop + 1 if raw[stop:stop + 1] == b"\n" else stop


_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def _fields(raw: bytes, start: int, stop: int) -> list[tuple[int, int, str | None]]:
    """Each header field in ``raw[start:stop]`` as (start, end, lower-case name), continuation
    lines included; a line that is no field has the name None."""
    out: list[list] = []
    for m in _LINE.finditer(raw, start, stop):
        line = m.group()
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1] = m.end()
            continue
        name = None
        if b":" in line:
            name = line.split(b":", 1)[0].strip().decode("latin-1").lower()
        out.append([m.start(), m.end(), name])
    return [(s, e, n) for s, e, n in out]


def _header_line(name: str, value: str, eol: bytes) -> bytes:
    """One folded ``name: value`` line ending in ``eol``; the value cannot add lines."""
    value = re.sub(r"[\r\n]+", " ", value).strip()
    charset = "us-ascii" if value.isascii() else "utf-8"
    encoded = email.header.Header(value, charset, header_name=name).encode(
        linesep=eol.decode(), maxlinelen=78)
    # A first word too long for the first line makes Header start with a fold: keep it there.
    encoded = encoded.lstrip("\r\n \t")
    return f"{name}: {encoded}".encode("ascii") + eol


def _literal_ok(data: bytes, seven_bit: bool, eol: bytes, boundaries) -> bool:
    """Whether ``data`` can stand unencoded in the message: clean lines, no delimiter."""
    if b"\0" in data or (seven_bit and not data.isascii()):
        return False
    if eol == b"\r\n":
        if data.count(b"\n") != data.count(b"\r\n") or data.count(b"\r") != data.count(b"\r\n"):
            return False
    elif b"\r" in data:
        return False
    if any(len(line) > 998 for line in data.split(b"\n")):
        return False
    return _boundary_safe(data, boundaries)


def _boundary_safe(data: bytes, boundaries) -> bool:
    for boundary in boundaries:
        delim = b"--" + boundary
        if data.startswith(delim) or b"\n" + delim in data:
            return False
    return True


def _quoted_printable(data: bytes, eol: bytes, boundaries) -> bytes | None:
    """``data`` quoted-printable with the message's line ends, or None if that is not exact."""
    encoded = binascii.b2a_qp(data, istext=True)
    if eol == b"\r\n" and b"\r\n" not in encoded:
        encoded = encoded.replace(b"\n", b"\r\n")
    if binascii.a2b_qp(encoded) != data or not _literal_ok(encoded, True, eol, boundaries):
        return None
    return encoded


def _base64(data: bytes, eol: bytes) -> bytes:
    encoded = base64.encodebytes(data)
    return encoded.replace(b"\n", eol) if eol != b"\n" else encoded


def _boundaries(root: Entity) -> set[bytes]:
    out = set()
    stack = [root]
    while stack:
        entity = stack.pop()
        if entity.children is not None:
            out.add(_boundary(entity.part))
            stack.extend(entity.children)
    return out


def _eol(raw: bytes) -> bytes:
    """The message's line end: CRLF if its first line ends so, LF otherwise."""
    nl = raw.find(b"\n")
    return b"\r\n" if nl > 0 and raw[nl - 1:nl] == b"\r" else b"\n"


def _cte(part) -> str:
    return str(part.get("content-transfer-encoding", "")).strip().lower()


def _content_type(part) -> str:
    try:
        return part.get_content_type().lower()
    except Exception:
        return "text/plain"


def _disposition(part) -> str:
    try:
        return (part.get_content_disposition() or "").lower()
    except Exception:
        return ""


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")
