"""How ClamAV's mail parser reads a message: the MemberMeta of each leaf part.

ClamAV describes a saved mail part to .cdb rules by a name and size of its own making and checks
links only in some parts (mbox.c, message.c, blob.c, text.c, uuencode.c); this module follows
those rules, so lmsav describes and checks exactly the parts ClamAV does.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message

from ..limits import MAX_HEADER_PARAMS
from ..signatures.subject import MAIL_LINKS, MAIL_LINKS_ONLY, MAIL_UNREAD, MemberMeta
from .mime import Entity, _boundary, _maintype, _transfer_encoding

LINKS_MAX_SIZE = 100 * 1024  # ClamAV looks for links only in parts up to this size

_MIME_TYPES = frozenset({"text", "multipart", "application", "audio", "image", "message", "video"})
_ENCODINGS = {
    b"7bit": "none", b"text/plain": "none", b"us-ascii": "none", b"quoted-printable": "qp",
    b"base64": "base64", b"8bit": "8bit", b"binary": "binary", b"x-uuencode": "uuencode",
    b"x-uue": "uuencode", b"x-yencode": "yencode", b"x-binhex": "binhex",
}
# Multipart subtypes ClamAV knows by another name, and those (text subtypes) whose parts it
# drops; any other subtype it reads as mixed (mbox.c mimeSubtypes).
_MULTIPART_ALIASES = {"fax-message": "mixed", "x-bfile": "related"}
_MULTIPART_DROPPED = frozenset({"plain", "enriched", "html", "richtext"})
# Only these arguments are kept (message.c usefulArg).
_USEFUL_ARGS = (b"name", b"filename", b"boundary", b"protocol", b"id", b"number", b"total",
                b"type")
_LINE_END = re.compile(rb"\n\r?|\r\n?")
_ENCODING_LINE = re.compile(
    rb"(?:^|(?<=[\r\n]))(?i:content-transfer-encoding)(?![^\r\n]*7bit)")
_BASE64_CUT = re.compile(rb"=[^\r\n]*")
_NOT_BASE64 = bytes(c for c in range(256) if not (chr(c).isascii() and (chr(c).isalnum()
                                                                         or chr(c) in "+/")))
_NAME_UNSAFE = re.compile(rb"[^0-9A-Za-z._]")
_SEMICOLONS = re.compile(rb";+")
_CLEAR_TOP_BIT = bytes(c & 0x7F for c in range(256))
_NOT_ALPHA = bytes(c for c in range(256) if not (chr(c).isascii() and chr(c).isalpha()))
_MAX_LINE = 999  # ClamAV reads a mail in lines of at most this many bytes
_UU_BEGIN_LINE = re.compile(rb"b(?i:egin) [0-9]{3} ")
_SOME_TEXT = re.compile(rb"[^\r\n\0]")
_SPACES_LINE = re.compile(rb"[ \t\v\f]+(?:\n|$)")
_SPACES_NEXT_LINE = re.compile(rb"\n[ \t\v\f]+(?:\n|$)")
_UU_NEXT_LINE = re.compile(rb"\nb(?i:egin) [0-9]{3} ")
_ARGUMENT_GAP = re.compile(rb"[\s;]*+")
_SPACES = re.compile(rb"\s*+")
_NOT_SPACES = re.compile(rb"\S*+")


class ClamavReading:
    """How ClamAV's mail parser treats each leaf of one message, as ``MemberMeta``.

    ClamAV walks a message part by part (mbox.c parseEmailBody, do_multipart). A part it saves
    as a file is described to .cdb rules by its file name (sanitised) and saved size, always at
    position 0; it checks links in text parts shown inline and in a message that is text only,
    but not in attachments, parts over 100 KiB, nor in what an attached archive holds. An
    attached message is read in place, as a file of its own, or not at all. Parts it does not
    look at get no MemberMeta.
    """

    def __init__(self, raw: bytes, root: Entity, unread: bool = False, attached: bool = False,
                 check: Callable[[], None] | None = None):
        """``attached``: the message is a part of another one, which ClamAV reads from its own
        copy of the part's lines (each ended by a line break, blank runs already once).
        ``check`` is called for each multipart read (a time budget raises from it)."""
        self._raw = raw
        self._root = root
        self._attached = attached
        self._check = check
        self._metas: dict[int, MemberMeta] = {}
        self._line_cache: dict[int, list[bytes | None]] = {}
        self._segments: dict[int, bytes] = {}
        if unread:
            self._skip(root)
            return
        mime = _Mime.of(root.part)
        # ClamAV stores a run of blank lines once, except in a message that is all text.
        self._collapse = mime.type != "text"
        self._body(root, mime)

    def meta(self, leaf: Entity) -> MemberMeta | None:
        return self._metas.get(id(leaf))

    # -- the walk (mbox.c) -------------------------------------------------------------------
    def _body(self, entity: Entity, mime: _Mime) -> bool:
        """A message or a part read as one (parseEmailBody); True when ClamAV reports that it
        saved nothing, which only a multipart can."""
        if entity.children is not None:
            return self._multipart(entity, mime)
        kind = mime.type
        if (kind, mime.subtype) in (("text", "plain"), ("message", "rfc822-headers")):
            kind = ""  # read as text without MIME
        if kind in ("", "text"):
            links = self._links(entity, mime)
            self._record(entity, mime, links, self._saved_text(entity, mime))
        elif kind in ("multipart", "audio", "video", "image"):  # (a multipart without parts)
            self._record(entity, mime, None, self._saved_text(entity, mime))
        elif kind == "message":
            if mime.subtype in ("rfc822", "delivery-status") and \
                    mime.first_encoding in ("none", "8bit", "binary"):
                return  # read in place (still encoded, if it is, and so unreadable)
            if mime.subtype == "disposition-notification" and self._encoding_line(entity):
                self._record(entity, mime, None, self._saved_text(entity, mime))
            else:
                self._metas[id(entity)] = MemberMeta(mail_use=MAIL_UNREAD)
        else:  # application and unknown types: saved as an attachment
            saved = mime.export()
            self._record(entity, mime, None, saved if saved.keeps_context else None)
        return False

    def _multipart(self, entity: Entity, mime: _Mime) -> bool:
        children = entity.children or []
        if self._check is not None:
            self._check()
        mimes = [_Mime.of(child.part) for child in children]
        subtype = mime.subtype or "alternative"
        subtype = _MULTIPART_ALIASES.get(subtype, subtype)
        if subtype in _MULTIPART_DROPPED:
            for child in children:
                self._skip(child)
            return False
        if subtype in ("signed", "parallel"):  # only the text part is read
            chosen = _text_part(mimes)
            for i, child in enumerate(children):
                if i == (0 if chosen is None else chosen):
                    self._body(child, mimes[i])
                else:
                    self._skip(child)
            return False
        if subtype == "related":  # the text part first, then all the others
            chosen = _text_part(mimes)
            if chosen is None:
                chosen = next((i for i, m in enumerate(mimes) if m.type == "multipart"), None)
            again = chosen is not None and self._body(children[chosen], mimes[chosen])
            for i, child in enumerate(children):
                if again and i == 0:
                    continue  # ClamAV's "nothing saved" status makes it pass over part 0 …
                if i == chosen and not again:
                    continue  # … and read a multipart it chose a second time
                self._part(child, _Mime.of(child.part) if i == chosen else mimes[i])
            return False
        # Parts read as they are split are not kept: ClamAV then says it saved nothing,
        # unless an inline text part made it keep the empty part after the closing line.
        inline = any(m.type == "" or (m.type == "text" and m.disposition in ("", "inline"))
                     for m in mimes)
        for i, child in enumerate(children):
            self._part(child, mimes[i])
        return subtype != "encrypted" and not (inline and self._closed(entity))

    def _closed(self, entity: Entity) -> bool:
        """Whether the multipart ends with its closing delimiter line."""
        last = entity.children[-1] if entity.children else None
        start = last.end if last is not None else entity.body_start
        close = b"--" + _boundary(entity.part) + b"--"
        return self._raw.find(close, start, entity.end) >= 0

    def _part(self, entity: Entity, mime: _Mime) -> None:
        """One part of a multipart read as an attachment or inline text (do_multipart)."""
        kind = mime.type
        if kind == "multipart":
            self._body(entity, mime)
        elif kind == "text":
            if mime.disposition == "attachment":
                self._record(entity, mime, None, mime.export())
            elif mime.disposition in ("", "inline"):
                links = None
                if mime.subtype != "plain" or mime.first_encoding != "none":
                    links = self._links(entity, mime)
                    mime.add(b"filename=mixedtextportion")
                self._record(entity, mime, links, mime.export())
            # any other disposition: ClamAV leaves the part alone
        elif kind == "message":
            if mime.first_encoding in ("none", "8bit", "binary") and \
                    not self._encoding_line(entity):
                self._metas[id(entity)] = MemberMeta(mail_use=MAIL_UNREAD)
            else:  # saved (its text copy at least), then read as a message of its own
                mime.add(b"filename=textportion")
                saved = mime.export()
                self._record(entity, mime, None, saved if saved.keeps_context else None)
        else:
            self._record(entity, mime, None, mime.export())

    def _skip(self, entity: Entity) -> None:
        """A part ClamAV never looks at; an attached message in it is marked unread."""
        if entity.children is not None:
            for child in entity.children:
                self._skip(child)
        elif _maintype(entity.part) == "message":
            self._metas[id(entity)] = MemberMeta(mail_use=MAIL_UNREAD)

    # -- what one part becomes ---------------------------------------------------------------
    def _links(self, entity: Entity, mime: _Mime) -> _Export | None:
        """How ClamAV reads the part to look for links (checkURLs), None if it finds none to
        look at: an empty or too large part, or text it decodes as base64 when lmsav does not
        (noise), or the other way round (base64 digits)."""
        export = mime.export()
        if not _same_decoding(export, entity):
            return None
        return export if 0 < self._size(entity, export.encoding) <= LINKS_MAX_SIZE else None

    def _saved_text(self, entity: Entity, mime: _Mime) -> _Export | None:
        """How the part is saved as a text portion (saveTextPart), None if no .cdb rule sees
        it: not saved when it holds a Content-Transfer-Encoding line, and the saved file keeps
        its scan context only when decoded in one pass."""
        if self._encoding_line(entity):
            return None
        mime.add(b"filename=textportion")
        saved = mime.export()
        return saved if saved.keeps_context else None

    def _record(self, entity: Entity, mime: _Mime, links: _Export | None,
                saved: _Export | None) -> None:
        if (links is None and saved is None) or self._empty(entity):  # empty: not saved
            return
        if links is None:
            use = ""
        else:
            use = MAIL_LINKS if saved is not None else MAIL_LINKS_ONLY
        size = self._size(entity, (saved or links).encoding)
        self._metas[id(entity)] = MemberMeta(name=mime.file_name(), size=size, mail_use=use)

    # -- the part's text as ClamAV holds it ----------------------------------------------------
    def _segment(self, entity: Entity) -> bytes:
        found = self._segments.get(id(entity))
        if found is None:
            found = self._segments[id(entity)] = self._cut(entity)
        return found

    def _cut(self, entity: Entity) -> bytes:
        raw = self._raw
        end = entity.end
        if entity is self._root:
            return raw[entity.body_start:end] + (b"\n" if self._attached else b"")
        if raw[end:end + 1] in (b"\r", b"\n"):
            end += 2 if raw[end:end + 2] in (b"\r\n", b"\n\r") else 1  # its last line's end
        return raw[entity.body_start:end]

    def _lines(self, entity: Entity) -> list[bytes | None]:
        found = self._line_cache.get(id(entity))
        if found is None:
            in_part = entity is not self._root
            if self._attached:  # the other message's lines, copied and read again
                found = _reread(_clamav_lines(self._segment(entity), True, True),
                                self._collapse, in_part)
            else:
                found = _clamav_lines(self._segment(entity), self._collapse, in_part)
            self._line_cache[id(entity)] = found
        return found

    def _empty(self, entity: Entity) -> bool:
        # Any byte besides line ends and NULs makes a line; otherwise count what is left.
        return not _SOME_TEXT.search(self._segment(entity)) and not self._lines(entity)

    def _encoding_line(self, entity: Entity) -> bool:
        segment = self._segment(entity)
        return b"content-transfer-encoding" in segment.lower() and \
            _ENCODING_LINE.search(segment) is not None

    def _size(self, entity: Entity, encoding: str) -> int:
        if encoding == "base64":
            return _base64_size(self._segment(entity))
        if encoding == "qp":
            return sum(_qp_line_size(line) for line in self._lines(entity))
        segment = self._segment(entity)
        if _plain_lines(segment):
            # Each line as it is with one line break: the bytes, and a last break if missing.
            return len(segment) + (0 if segment.endswith(b"\n") or not segment else 1)
        return sum(len(line) + 1 if line else 1 for line in self._lines(entity))


def _same_decoding(export: _Export, entity: Entity) -> bool:
    """Whether ClamAV and lmsav both decode the part as base64, or both do not."""
    return (export.encoding == "base64") == (_transfer_encoding(entity.part) == "base64")


def _text_part(mimes: list[_Mime]) -> int | None:
    """The part ClamAV reads first: the first HTML part, else the last text part."""
    found = None
    for i, mime in enumerate(mimes):
        if mime.type == "text":
            if mime.subtype == "html":
                return i
            found = i
    return found


@dataclass(slots=True)
class _Export:
    encoding: str  # the last transfer encoding ClamAV decodes the part with
    keeps_context: bool  # the saved file keeps the scan context, so .cdb rules see it


@dataclass(slots=True)
class _Mime:
    """A part's MIME headers as ClamAV reads them (mbox.c parseMimeHeader, message.c)."""

    type: str = ""  # "" when there is no (usable) Content-Type
    subtype: str = ""
    encodings: list[str] = field(default_factory=list)
    disposition: str = ""
    args: list[bytes] = field(default_factory=list)  # the arguments ClamAV keeps, in order
    # The kept arguments in lower case: a new one is compared with them in one look-up, not
    # with each in turn (a header of 20,000 arguments took seconds).
    kept: set[bytes] = field(default_factory=set)

    @classmethod
    def of(cls, part: Message) -> _Mime:
        mime = cls()
        for key, value in part.raw_items():
            kind = key.strip().lower()
            if kind not in ("content-type", "content-transfer-encoding", "content-disposition"):
                continue
            text = str(value).encode("utf-8", "surrogateescape")
            text = _uncomment(_rfc2047(text.replace(b"\r", b"").replace(b"\n", b"")))
            if kind == "content-type":
                mime._content_type(text)
            elif kind == "content-transfer-encoding":
                mime._encoding(text)
            else:
                mime._disposition(text)
        return mime

    @property
    def first_encoding(self) -> str:
        return self.encodings[0] if self.encodings else "none"

    def _set_type(self, token: bytes) -> bool:
        token = token.lstrip(_NOT_ALPHA)
        if not token:
            return False
        name = token.decode("latin-1").lower()
        if name in _MIME_TYPES:
            self.type = name
            return True
        if self.type:
            return False
        self.type = "x" if name.startswith("x-") else "text" if name == "plain" else \
            "application"  # ClamAV's guess by similarity is not followed
        return True

    def _content_type(self, text: bytes) -> None:
        if b"/" not in text:
            return
        value = text.lstrip()
        if value.startswith(b'"'):
            value = value[1:]
        first = value.split(b";", 1)[0]
        if first and not first.startswith(b"/"):
            main, _, sub = first.lstrip(b"/").partition(b"/")
            if self._set_type(main):
                sub = sub.strip()
                if sub.endswith(b'"'):
                    sub = sub[:-1].strip()
                if sub:
                    self.subtype = sub.split(b" ", 1)[0].decode("latin-1").lower()
        # Past MAX_HEADER_PARAMS arguments a header is not read further (ClamAV reads on; no
        # mail client writes that many, and each costs this parser time).
        for piece in _fields(text)[1:1 + MAX_HEADER_PARAMS]:
            if piece is None:
                break
            self._add_arguments(piece)

    def _encoding(self, text: bytes) -> None:
        text = text.lstrip(b" \t")
        if text.lower() == b"8 bit":
            text = b"8bit"
        for token in re.split(rb"[ \t]+", text):
            found = _ENCODINGS.get(token.lower())
            if found is not None and found not in self.encodings:
                self.encodings.append(found)

    def _disposition(self, text: bytes) -> None:
        fields = _fields(text) + [None]
        if fields[0] and fields[0].strip():
            self.disposition = fields[0].strip().decode("latin-1").lower()
            self.add(fields[1] or b"")  # ClamAV keeps only the first argument
        if not self.has_filename():
            self.add(b"filename=unknown")

    def _add_arguments(self, text: bytes) -> None:
        """``key=value`` pairs of a Content-Type, quoted values unquoted (messageAddArguments)."""
        pos = 0
        for _ in range(MAX_HEADER_PARAMS):
            pos = _ARGUMENT_GAP.match(text, pos).end()
            if pos >= len(text):
                return
            key = pos
            eq = text.find(b"=", pos)
            if eq < 0:
                eq = text.find(b":", pos)
                if eq < 0:
                    return
            pos = _SPACES.match(text, eq + 1).end()
            if text[pos:pos + 1] == b'"':
                close = text.find(b'"', pos + 1)
                value = text[pos + 1:] if close < 0 else text[pos + 1:close]
                pos = len(text) if close < 0 else close + 1
                name = text[key:eq]
                if name.lower().startswith(_USEFUL_ARGS):
                    self.add(name + b"=" + value)
            else:
                if pos >= len(text):
                    return  # an empty value ends the header's arguments
                pos = _NOT_SPACES.match(text, pos + 1).end()
                self.add(text[key:pos])

    def add(self, arg: bytes) -> None:
        """messageAddArgument: kept when useful and new, RFC 2231 decoded."""
        arg = arg.lstrip()
        if not arg or not arg.lower().startswith(_USEFUL_ARGS):
            return
        if arg.lower() in self.kept:
            return
        value = _rfc2231(arg)
        if b"=" not in value:
            if not (value.startswith(b"filename") and len(value) > 8):
                return
            value = value[:8] + b"=" + value[9:]
        self.args.append(value)
        self.kept.add(value.lower())
        if not self.type and value.lower().startswith((b"filename=", b"name=")):
            self.type = "application"

    def find(self, key: bytes) -> bytes | None:
        """messageFindArgument: the value of the first argument named like ``key``, unquoted;
        None when there is none, or when that first one has no '='."""
        for arg in self.args:
            if arg[:len(key)].lower() != key:
                continue
            rest = arg[len(key):].lstrip()
            if not rest.startswith(b"="):
                return None
            value = rest[1:]
            if len(value) > 1 and value[:1] == b'"' and b'"' in value[1:]:
                value = value[1:].split(b'"', 1)[0]
            return value
        return None

    def has_filename(self) -> bool:
        return self.find(b"filename") is not None or self.find(b"file") is not None

    def file_name(self) -> str:
        """The name ClamAV gives the saved part: its file name, else its name, sanitised."""
        found = self.find(b"filename")
        if found is None:
            found = self.find(b"name")
        return _NAME_UNSAFE.sub(b"_", found or b"attachment").decode("ascii")

    def export(self) -> _Export:
        """What ClamAV's messageExport does to the part: text without a transfer encoding is
        copied, unless it has only a name; then, as text with a name and no encoding, it is
        decoded as base64. The arguments and encodings it adds stay."""
        if not self.encodings:
            if self.find(b"filename") is None:
                if self.find(b"name") is None:
                    self.add(b"name=attachment")
                    return _Export("none", False)
                self.encodings.append("none")
            else:
                return _Export("none", False)
        i = 0
        while i < len(self.encodings):
            if self.encodings[i] == "uuencode":
                self.encodings[i] = "none"
            name = self.find(b"filename")
            if name is None:
                name = self.find(b"name")
            if name is None:
                self.add(b"name=attachment")
            elif self.encodings[i] == "none" and "base64" not in self.encodings:
                self.encodings.append("base64")
            i += 1
        last = self.encodings[-1]
        # Each further encoding starts a new file without the context; copied text drops it.
        return _Export(last, len(self.encodings) == 1 and last != "none")


def _fields(text: bytes) -> list[bytes | None]:
    """A header value cut at ';', runs of ';' as one, an empty field as None (str.c
    cli_strtok: ClamAV stops at the first empty one)."""
    return [field or None for field in _SEMICOLONS.split(text)]


def _uncomment(text: bytes) -> bytes:
    """RFC 822 comments removed outside quotes (mbox.c rfc822comments)."""
    if b"(" not in text:
        return text
    out = bytearray()
    escaped = quoted = False
    level = 0
    for c in text.lstrip():
        if escaped:
            if level == 0:
                out.append(c)
            escaped = False
        elif c == 0x5C:
            escaped = True
        elif c == 0x22:
            out.append(c)
            quoted = not quoted
        elif c == 0x28 and not quoted:
            level += 1
        elif c == 0x29 and not quoted:
            level = max(level - 1, 0)
        elif level == 0:
            out.append(c)
    if escaped:
        out.append(0x5C)
    return bytes(out)


def _rfc2047(text: bytes) -> bytes:
    """Encoded words decoded the way ClamAV does (mbox.c rfc2047): Q as its quoted-printable
    (no '_' for space), B as its base64; anything else keeps the header as written."""
    if b"=?" not in text or b"?=" not in text:
        return text
    out = bytearray()
    pos = 0
    while pos < len(text):
        start = text.find(b"=?", pos)
        if start < 0:
            out += text[pos:]
            break
        out += text[pos:start]
        pos = text.find(b"?", start + 2)
        if pos < 0:
            break
        kind = text[pos + 1:pos + 2].lower()
        if kind not in (b"q", b"b"):
            return text
        if text[pos + 2:pos + 3] != b"?" or pos + 3 >= len(text):
            break
        end = text.find(b"?=", pos + 3)
        if end < 0:
            break
        word = text[pos + 3:end]
        pos = end + 2
        if kind == b"q":
            decoded = _qp_line(word)[0] if word.strip(b" \t\v\f") else word[:1]
        else:
            decoded = _clamav_base64(_BASE64_CUT.sub(b"", word).translate(None, _NOT_BASE64))
        out += decoded[:-1] if decoded.endswith(b"\n") else decoded
    return bytes(out)


def _rfc2231(arg: bytes) -> bytes:
    """An argument as ClamAV stores it (message.c rfc2231): ``key*=charset'lang'%XX`` decoded,
    anything else with the top bit of each byte cleared."""
    if b"*0*=" in arg:  # continuations: ClamAV gives up at the first '='
        out = bytearray()
        pos = 0
        while pos < len(arg):
            c = arg[pos]
            if c == 0x2A:
                pos = arg.find(b"*", pos + 1)
                if pos < 0:
                    break
                pos += 1
                continue
            if c == 0x3D:
                out += b"=rfc2231failure"
                break
            out.append(c)
            pos += 1
        return bytes(out)
    mark = arg.find(b"*0=")
    field = 2 if mark >= 0 else 0
    if mark < 0:
        mark = arg.find(b"*=")
    if mark < 0:
        return arg.translate(_CLEAR_TOP_BIT)
    out = bytearray(arg[:mark] + b"=")
    rest = arg[arg.index(b"=", mark) + 1:]
    pos = 0
    while pos < len(rest):
        c = rest[pos]
        if field < 2:
            field += c == 0x27
        elif c == 0x25:
            if pos + 1 >= len(rest):
                break
            byte = _hex(rest[pos + 1])
            if pos + 2 >= len(rest):
                out.append(byte)
                break
            out.append(((byte << 4) + _hex(rest[pos + 2])) & 0xFF)
            pos += 2
        else:
            out.append(c)
        pos += 1
    return bytes(out) if field == 2 else b""


def _hex(c: int) -> int:
    """A hex digit's value; anything else reads as '=' (message.c hex)."""
    if 0x30 <= c <= 0x39:
        return c - 0x30
    if 0x41 <= c <= 0x46 or 0x61 <= c <= 0x66:
        return (c | 0x20) - 0x61 + 10
    return 0x3D


def _qp_line(line: bytes) -> tuple[bytes, bool]:
    """One line decoded as ClamAV's quoted-printable does, and whether it ends softly."""
    out = bytearray()
    pos, size = 0, len(line)
    while True:
        eq = line.find(b"=", pos)
        if eq < 0:
            out += line[pos:]
            return bytes(out), False
        out += line[pos:eq]
        if eq + 1 >= size:
            return bytes(out), True
        byte = _hex(line[eq + 1])
        if eq + 2 >= size:
            out.append(byte)
            return bytes(out), False
        if byte != 0x3D:
            out.append(((byte << 4) | _hex(line[eq + 2])) & 0xFF)
            pos = eq + 3
        else:  # '=' before a non-hex character stands for itself
            out.append(0x3D)
            pos = eq + 1


def _qp_line_size(line: bytes | None) -> int:
    """The size of one line decoded by ClamAV, with its line end unless it ends softly."""
    if not line:
        return 1
    if b"=" not in line:
        return len(line) + 1
    decoded, soft = _qp_line(line)
    return len(decoded) + (0 if soft else 1)


def _clamav_base64(chars: bytes) -> bytes:
    """Base64 digits decoded as ClamAV does, its own way with a short last group."""
    whole = len(chars) // 4 * 4
    out = bytearray(binascii.a2b_base64(chars[:whole])) if whole else bytearray()
    rest = [binascii.a2b_base64(b"AAA" + bytes([c]))[2] & 0x3F for c in chars[whole:]]
    if len(rest) == 1:
        out.append((rest[0] << 2) & 0xFF)
    elif len(rest) == 2:
        out.append(((rest[0] << 2) | (rest[1] >> 4)) & 0xFF)
        if rest[1] & 0x0F:
            out.append((rest[1] << 4) & 0xFF)
    elif len(rest) == 3:
        out.append(((rest[0] << 2) | (rest[1] >> 4)) & 0xFF)
        out.append(((rest[1] << 4) | (rest[2] >> 2)) & 0xFF)
        if rest[2] & 0x03:
            out.append((rest[2] << 6) & 0xFF)
    return bytes(out)


def _base64_size(segment: bytes) -> int:
    """The size ClamAV decodes a base64 body to: each line up to its first '=', the digits
    only, a short last group flushed its own way."""
    eq = segment.find(b"=")
    if eq < 0 or not segment[eq:].strip(b"=\r\n"):  # no '=' but the padding at the end
        chars = segment[:eq if eq >= 0 else len(segment)].translate(None, _NOT_BASE64)
    else:
        chars = _BASE64_CUT.sub(b"", segment).translate(None, _NOT_BASE64)
    whole = len(chars) // 4 * 4
    return whole // 4 * 3 + len(_clamav_base64(chars[whole:]))


def _clamav_lines(segment: bytes, collapse: bool, in_multipart: bool) -> list[bytes | None]:
    """The lines ClamAV keeps of a body: read at most 999 bytes at a time without NULs, line
    ends stripped, blank lines as None (runs of them once when ``collapse``; in a multipart
    none right after the part's headers), lines of only spaces as one space, and uuencoded
    blocks taken out up to their first line that is not uuencoded data (mbox.c)."""
    pieces = _LINE_END.split(segment)
    ends = len(pieces) - 1  # pieces before this one were ended by a line break
    if pieces[-1] == b"":
        pieces.pop()
    lines: list[bytes | None] = []
    last_blank = in_multipart
    in_uu = False
    for index, piece in enumerate(pieces):
        if in_uu:  # ClamAV reads these whole, without the 999-byte limit
            in_uu = _uu_data_line(piece.rstrip(b"\r"))
            continue
        if len(piece) >= _MAX_LINE:
            chunks = [piece[i:i + _MAX_LINE] for i in range(0, len(piece), _MAX_LINE)]
            if len(piece) % _MAX_LINE == 0 and index < ends:
                chunks.append(b"")  # the line break is read as a line of its own
        else:
            chunks = [piece]
        for chunk in chunks:
            if b"\0" in chunk:
                chunk = chunk.replace(b"\0", b"")
            if not chunk:
                if collapse and last_blank:
                    continue
                lines.append(None)
                last_blank = True
                continue
            if _UU_BEGIN_LINE.match(chunk) and len(chunk.split(b" ")) > 2:
                in_uu = True
                continue
            if not chunk.strip(b" \t\v\f"):
                chunk = b" "
            lines.append(chunk)
            last_blank = False
    return lines


def _plain_lines(segment: bytes) -> bool:
    """Whether ClamAV's lines of ``segment`` are simply its bytes cut at line feeds: no CRs,
    NULs, blank lines at the start or in runs, lines of only spaces, 999-byte lines nor
    uuencoded blocks."""
    if b"\r" in segment or b"\0" in segment or b"\n\n\n" in segment or \
            segment.startswith(b"\n"):
        return False
    if _SPACES_LINE.match(segment) or _SPACES_NEXT_LINE.search(segment):
        return False
    if _UU_BEGIN_LINE.match(segment) or _UU_NEXT_LINE.search(segment):
        return False
    return len(segment) < _MAX_LINE or max(map(len, segment.split(b"\n"))) < _MAX_LINE


def _reread(lines: list[bytes | None], collapse: bool, in_multipart: bool) -> list[bytes | None]:
    """ClamAV's copy of ``lines`` (each ended by a line break) read again: a full 999-byte
    line leaves its line break as a blank line, and blank runs are kept once when
    ``collapse``."""
    out: list[bytes | None] = []
    last_blank = in_multipart
    for line in lines:
        for piece in (line, None) if line is not None and len(line) == _MAX_LINE else (line,):
            if piece is None:
                if collapse and last_blank:
                    continue
                last_blank = True
            else:
                last_blank = False
            out.append(piece)
    return out


def _uu_data_line(line: bytes) -> bool:
    """Whether ClamAV reads on after this line of a uuencoded block (uuencode.c): it stops
    after "end", an empty line or a line that decodes to nothing."""
    if not line or line.lower() == b"end" or (line[0] & 0x3F) == 0x20:
        return False
    length = (line[0] - 0x20) & 0xFF
    return 0 < length <= 62 and length <= len(line) - 1
