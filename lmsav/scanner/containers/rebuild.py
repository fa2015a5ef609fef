"""Rebuilds MIME messages, zips and tars without some members: how "cure", "delete" and "warn"
change a message without any other module knowing the formats.

Messages are edited in place by byte offsets from the same splitting ``MailHandler`` uses (so
leaf ``n`` here is always child ``n:…`` there): what is not changed is copied byte for byte.
Archives are rebuilt by copying each kept member's stored record raw, so nothing is
recompressed, dates, names, comments and encryption survive, and only offsets are rewritten.
"""

from __future__ import annotations

import base64
import binascii
import email.header
import io
import re
import struct
import tarfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field

from ..filetype import sniff
from .mime import (
    Entity, _boundary, _decode, _filename, _maintype, leaf_entities, leaf_name, parse_entity,
)

__all__ = [
    "RebuildError", "MailLeaf", "mail_leaves", "rebuild_mail", "replace_with_text",
    "replace_header", "headers_of", "rebuild_archive",
]


class RebuildError(Exception):
    """The container cannot be rebuilt (its format, or damage): the caller falls back."""


@contextmanager
def _malformed(what: str):
    """Whatever a damaged input makes the parsing trip over becomes a RebuildError."""
    try:
        yield
    except RebuildError:
        raise
    except RecursionError:
        raise RebuildError(f"{what}: nesting too deep") from None
    except Exception as err:
        raise RebuildError(f"{what}: {err.__class__.__name__}: {err}") from err


# -- MIME messages ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MailLeaf:
    """One leaf part of a message, numbered and named exactly as MailHandler's children."""

    index: int  # 1-based: the n of MailHandler's child name "n:filename"
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
    with _malformed("unreadable message"):
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


def rebuild_mail(raw: bytes, changes: dict[int, bytes | None]) -> bytes:
    """``raw`` with leaf parts deleted (``None``) or given new decoded content (bytes).

    A deleted part goes with its delimiter line; a multipart left with no parts goes too. When
    every leaf is deleted, leaf 1 stays as an empty text/plain part (a message keeps a body).
    New content keeps the part's transfer encoding when that carries it exactly, and becomes
    base64 otherwise (a message/* part, which may not be base64, raises RebuildError then).
    Everything not named is copied byte for byte; the top-level headers change only when the
    message is a single part, whose own Content-* headers they are.
    """
    with _malformed("cannot rebuild the message"):
        root, leaves = _parse(raw)
        _check_indexes(changes, leaves)
        eol = _eol(raw)
        boundaries = _boundaries(root)
        dead = {id(leaves[i - 1]) for i, new in changes.items() if new is None}
        edits: list[tuple[int, int, bytes]] = []
        if leaves and len(dead) == len(leaves):
            # Every leaf goes: leaf 1 stays, emptied, so the result is still a message.
            dead.discard(id(leaves[0]))
            edits.append((leaves[0].start, leaves[0].end,
                          _text_entity(raw, leaves[0], "", eol, boundaries, leaves[0] is root)))
        for n, new in changes.items():
            leaf = leaves[n - 1]
            if new is not None:
                edits.append((leaf.start, leaf.end,
                              _content_entity(raw, leaf, bytes(new), eol, boundaries)))
        _collect_deletions(raw, root, _liveness(root, dead), edits, eol)
        return _apply(raw, edits, eol)


def replace_with_text(raw: bytes, index: int, text: str) -> bytes:
    """``raw`` with leaf ``index`` turned into an inline text/plain; charset=utf-8 part holding
    ``text`` (its Content-Type, Content-Transfer-Encoding and Content-Disposition, and so its
    file name, are replaced; its other headers stay). Used by the "warn" action."""
    with _malformed("cannot rebuild the message"):
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
    with _malformed("cannot change the message's headers"):
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
    with _malformed("unreadable message headers"):
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


# -- archives --------------------------------------------------------------------------------


def rebuild_archive(data: bytes, remove: set[str]) -> bytes:
    """The zip or tar ``data`` without the members named in ``remove`` (names as ArchiveHandler
    yields them). Every kept member is copied as stored: nothing is recompressed, so
    compression methods, dates, comments, attributes and encryption stay as they were.
    A name that matches no member is an error: the member would otherwise silently stay.
    """
    data = bytes(data)
    ftype = sniff(data, len(data))
    if ftype == "zip":
        with _malformed("cannot rebuild the zip"):
            return _rebuild_zip(data, set(remove))
    if ftype == "tar":
        with _malformed("cannot rebuild the tar"):
            return _rebuild_tar(data, set(remove))
    raise RebuildError(f"cannot rebuild {ftype} archives")


_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"


def _rebuild_zip(data: bytes, remove: set[str]) -> bytes:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as err:
        raise RebuildError(f"damaged zip: {err}") from None
    infos = zf.infolist()
    eocd = data.rfind(_EOCD, max(0, len(data) - 22 - 65535))
    if eocd < 0:
        raise RebuildError("damaged zip: no end of central directory")
    disk, cd_disk = struct.unpack_from("<2H", data, eocd + 4)
    if disk or cd_disk:
        raise RebuildError("cannot rebuild multi-volume zips")
    comment = data[eocd + 22:eocd + 22 + struct.unpack_from("<H", data, eocd + 20)[0]]
    zip64 = eocd >= 20 and data[eocd - 20:eocd - 16] == _EOCD64_LOCATOR
    centrals = _central_records(data, zf.start_dir, len(infos))

    offsets = sorted(info.header_offset for info in infos)
    if len(set(offsets)) != len(offsets) or any(o >= zf.start_dir for o in offsets):
        raise RebuildError("damaged zip: members overlap or follow the central directory")
    ends = dict(zip(offsets, offsets[1:] + [zf.start_dir]))
    if not offsets:
        ends = {}
    found: set[str] = set()
    keep = []
    for info, (record, raw_name) in zip(infos, centrals):
        if data[info.header_offset:info.header_offset + 4] != _LOCAL:
            raise RebuildError(f"damaged zip: no local header for {info.filename!r}")
        names = _zip_names(info, raw_name) & remove
        if names:
            found |= names
        else:
            keep.append((info, record))
    _check_found(remove, found)

    prefix_end = offsets[0] if offsets else zf.start_dir
    out = io.BytesIO()
    out.write(data[:prefix_end])  # a self-extractor's stub, if any
    moved: dict[int, int] = {}
    for info, _ in sorted(keep, key=lambda k: k[0].header_offset):
        moved[info.header_offset] = out.tell()
        out.write(data[info.header_offset:ends[info.header_offset]])
    # Offsets in the file may count from the start of the zip rather than of the file.
    concat = zf.start_dir - _recorded_cd_offset(data, eocd, zip64)
    cd_start = out.tell()
    for info, record in keep:
        out.write(_move_central(record, moved[info.header_offset] - concat))
    cd_size = out.tell() - cd_start
    count = len(keep)
    if zip64:
        end64 = out.tell()
        out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count,
                              cd_size, cd_start - concat))
        out.write(struct.pack("<4sLQL", _EOCD64_LOCATOR, 0, end64 - concat, 1))
    out.write(struct.pack("<4s4H2LH", _EOCD, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                          min(cd_size, 0xFFFFFFFF), min(cd_start - concat, 0xFFFFFFFF),
                          len(comment)))
    out.write(comment)
    return out.getvalue()


def _central_records(data: bytes, start: int, count: int) -> list[tuple[bytes, bytes]]:
    """The raw central directory records (and raw names), in zipfile's infolist order."""
    out = []
    pos = start
    for _ in range(count):
        if data[pos:pos + 4] != _CENTRAL:
            raise RebuildError("damaged zip: broken central directory")
        n, m, k = struct.unpack_from("<3H", data, pos + 28)
        end = pos + 46 + n + m + k
        out.append((data[pos:end], data[pos + 46:pos + 46 + n]))
        pos = end
    return out


def _recorded_cd_offset(data: bytes, eocd: int, zip64: bool) -> int:
    offset = struct.unpack_from("<L", data, eocd + 16)[0]
    if zip64:
        end64 = struct.unpack_from("<Q", data, eocd - 20 + 8)[0]
        for at in (end64, data.rfind(b"PK\x06\x06", 0, eocd - 20)):
            if 0 <= at and data[at:at + 4] == b"PK\x06\x06":
                return struct.unpack_from("<Q", data, at + 48)[0]
    return offset


def _move_central(record: bytes, offset: int) -> bytes:
    """The central record pointing at its local header's new ``offset``."""
    stored = struct.unpack_from("<L", record, 42)[0]
    if stored != 0xFFFFFFFF:
        return record[:42] + struct.pack("<L", offset) + record[46:]
    # The offset lives in the zip64 extra field, after the sizes that overflowed.
    usize, csize = struct.unpack_from("<2L", record, 20)[::-1]
    n, m = struct.unpack_from("<2H", record, 28)
    extra_at = 46 + n
    pos = extra_at
    while pos + 4 <= extra_at + m:
        tag, size = struct.unpack_from("<2H", record, pos)
        if tag == 1:
            at = pos + 4 + 8 * ((usize == 0xFFFFFFFF) + (csize == 0xFFFFFFFF))
            return record[:at] + struct.pack("<Q", offset) + record[at + 8:]
        pos += 4 + size
    raise RebuildError("damaged zip: zip64 offset without its extra field")


def _zip_names(info: zipfile.ZipInfo, raw_name: bytes) -> set[str]:
    """The names a member may go by: zipfile's, and libarchive's readings of the raw bytes."""
    return {info.filename, raw_name.decode("utf-8", "replace"), raw_name.decode("cp437"),
            info.filename or "unnamed"}


def _rebuild_tar(data: bytes, remove: set[str]) -> bytes:
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
        members = tf.getmembers()
    except (tarfile.TarError, EOFError) as err:
        raise RebuildError(f"damaged tar: {err}") from None
    end = tf.offset  # where the end-of-archive blocks start
    found: set[str] = set()
    gone: set[str] = set()
    spans = []
    for i, member in enumerate(members):
        stop = members[i + 1].offset if i + 1 < len(members) else end
        names = _tar_names(member) & remove
        if names:
            found |= names
            gone.add(member.name)
        else:
            spans.append((member, member.offset, stop))
    _check_found(remove, found)
    out = []
    for member, start, stop in spans:
        if member.islnk() and member.linkname in gone:
            continue  # a hard link to a removed file carries no data and would dangle
        out.append(data[start:stop])
    out.append(data[end:])  # the end-of-archive blocks and record padding, as they were
    return b"".join(out)


def _tar_names(member: tarfile.TarInfo) -> set[str]:
    name = member.name
    return {name, name.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
            name or "unnamed"}


def _check_found(remove: set[str], found: set[str]) -> None:
    missing = remove - found
    if missing:
        raise RebuildError(f"no member named {sorted(missing)[0]!r} in the archive")
