"""ClamAV's HTML normaliser: nocomment and notags forms, encoded scripts, inline data and links.

ClamAV never matches HTML as written: it rewrites the file into a lower-cased form without
comments ("nocomment"), a text-only form ("notags"), the script bodies, and the ``data:`` URIs it
finds, and matches those. Signatures written against these forms only hit when the forms are
reproduced byte for byte, quirks included, so this module follows libclamav's normaliser
(htmlnorm.c) state by state: 8 KiB chunks cut after a space, leading white space dropped per
chunk, entities decoded to Latin-1 bytes or ``&#xNNNN;``, JScript.Encode blocks decrypted in
place. The same pass collects the links of ``<a>``, ``<img>``, ``<iframe>``, ``<area>`` and
``<form>`` tags with the text shown for them, for the phishing checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ..limits import check_running_time
from .html_entities import ENTITIES

CHUNK = 8192  # libclamav reads HTML in chunks of at most CHUNK - 1 bytes
CHUNKS_PER_TIME_CHECK = 32  # the scan's clock is read every 256 KiB
STR_MAX = 1024  # tag names, attribute names and values, entities, link texts are cut here

# States of the normaliser (htmlnorm.c's html_state).
(BAD, NORM, EIGHTBIT, COMMENT, CHAR_REF, ENTITY_REF, SKIP_WS, TRIM_WS, TAG, TAG_ARG, TAG_ARG_VAL,
 TAG_ARG_EQUAL, PROCESS_TAG, CHAR_REF_DECODE, LOOKFOR_SCRENC, JSDECODE, JSDECODE_LENGTH,
 JSDECODE_DECRYPT, RFC2397_TYPE, RFC2397_INIT, RFC2397_DATA, RFC2397_FINISH, RFC2397_ESC,
 ESCAPE_CHAR) = range(24)

OUTSIDE, IN_SCRIPT, IN_STYLE = 0, 1, 2  # what the text being read belongs to
NOT_QUOTED, SINGLE_QUOTED, DOUBLE_QUOTED = 0, 1, 2

_SPACE = frozenset(b" \t\n\v\f\r")
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_ENTITY_CHARS = _ALNUM | frozenset(b"_:-")
_DIGITS = frozenset(b"0123456789")
_XDIGITS = frozenset(b"0123456789abcdefABCDEF")
_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))
# Full-width and ideographic full stops (UTF-8, and GB2312's A1 43/44/4F) are shown as '.'.
_DOTS = (0xE38082, 0xEFBC8E, 0xEFB992)

# Text outside tags needing no state change: printable ASCII but '<' and '&'.
_PLAIN = re.compile(rb"[\x21-\x25\x27-\x3b\x3d-\x7f]+")
# Runs inside a tag handled alike character by character: tag and attribute names, values.
_SPACES = re.compile(rb"[\x09-\x0d\x20]+")
_NAME_RUN = re.compile(rb"[^\x09-\x0d\x20>]+")
_ARG_RUN = re.compile(rb"[^\x09-\x0d\x20=>]+")
_VALUE_RUN = re.compile(rb"[^\x00-\x20>&'\"\\\x80-\xff]+")

# MS Script Encoder ("JScript.Encode"): three substitution tables over 7-bit characters, used
# in a fixed order of 64, and a base64 length prefix. Published by Andreas Marx's analysis.
_SCRENC_ORDER = bytes(int(c) for c in
                      "0210212112120121012100211201211200121210100210120121002110021012")
_SCRENC_TABLES = tuple(bytes.fromhex(t) for t in (
    ("000102030405060708570a0b0c0d0e0f101112131415161718191a1b1c1d1e1f2e477a56426a2f264941343"
     "25b7672433839704568714f09624423753c7e3e5eff774a615d224b6f4e3b4c50672a7d74542b2d2c306e6b"
     "66352521644d52633f7b7829287359337f6d55537c3a5f65465831696c5a48275c3d24793760512036"),
    ("0001020304050607087b0a0b0c0d0e0f101112131415161718191a1b1c1d1e1f323021295b38333d583a356"
     "5395c5673664e456b6259785e7d4a6d713c603e53ff422748727531374d5222546a47642d207f2e4c5d7e6c"
     "6f797443267625242b28234134092a443f773b55696163506751494f46687c36706e7a2f5f4b5a2c57"),
    ("0001020304050607086e0a0b0c060e0f101112131415161718191a1b1c1d1e1f2d755260715e495c627d293"
     "6207c7a7f6b63332b68516676316454433c3a3e7eff452c2a7427374479592f6f26726a397b3f3877675347"
     "34785d30235a5b6c485570692e4c21244e5009567335614b583b57226d4d2528464a32413d5f4f4265"),
))
_SCRENC_ESCAPES = {0x21: 0x3C, 0x23: 0x0D, 0x24: 0x40, 0x26: 0x0A, 0x2A: 0x3E}
_B64 = {c: i for i, c in enumerate(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


@dataclass
class Link:
    """One link found in HTML: the tag kind ("href", "src", "form" …), its URL, shown text."""

    tag: bytes
    value: bytes | None
    contents: bytes | None = None


@dataclass
class Normalised:
    # The forms as the normaliser built them (bytearrays: a page of tens of MiB is not copied
    # once more to become bytes).
    nocomment: bytes | bytearray = b""
    notags: bytes | bytearray = b""
    # Script texts as handed to the JavaScript normaliser: one list of chunk pieces a script.
    scripts: list[list[bytes]] = field(default_factory=list)
    data_files: list[bytes] = field(default_factory=list)  # data: URIs as ClamAV saves them
    links: list[Link] = field(default_factory=list)


def chunks(data) -> list[bytearray]:
    """The input as libclamav's chunk reader hands it over: NUL bytes dropped, at most CHUNK - 1
    bytes a chunk, a chunk that would end inside a word cut back to just after its last space."""
    return list(iter_chunks(data))


def iter_chunks(data) -> Iterator[bytearray]:
    """``chunks`` one at a time: the normaliser holds one chunk, never a copy of the input."""
    size = len(data)
    offset = 0
    room = CHUNK - 1
    while offset < size:
        take = min(size - offset, room)
        piece = data[offset:offset + take]
        nul = piece.find(b"\0")
        if nul < 0:
            chunk = bytearray(piece)
            pos = offset + take
            offset = pos
        else:
            chunk = bytearray(piece[:nul])
            pos = offset + nul
            while pos < size and len(chunk) < room:
                need = room - len(chunk)
                raw = data[pos:pos + need]
                chunk += raw.replace(b"\0", b"")
                pos += len(raw)
            offset = pos
        if pos < size and data[pos] not in _SPACE:
            keep = _after_last_space(chunk)
            if keep < len(chunk):
                offset -= len(chunk) - keep
                del chunk[keep:]
        if not chunk:
            break
        yield chunk


def _after_last_space(chunk: bytearray) -> int:
    """Length to keep: up to and including the last white space, unless that is the first byte
    or there is none (the chunk is then kept whole)."""
    last = max(chunk.rfind(bytes([c])) for c in _SPACE)
    return last + 1 if last >= 1 else len(chunk)


def _utf16_norm(code: int) -> bytes:
    """A decoded character as ClamAV writes it: Latin-1 byte, '.', or ``&#xNNNN;``."""
    code &= 0xFFFF
    if not code:
        return b""
    if code < 0xFF:
        return bytes([code])
    if code in (0x3002, 0xFF0E, 0xFE52):
        return b"."
    return b"&#x%04x;" % code


def _multibyte(mbchar: int) -> bytes:
    c0, c1, c2 = (mbchar >> 16) & 0xFF, (mbchar >> 8) & 0xFF, mbchar & 0xFF
    return (bytes([c0]) if c0 else b"") + (bytes([c1]) if c0 or c1 else b"") + bytes([c2])


class _Normaliser:
    """One pass over one HTML document; ``outputs`` off collects links only (as for phishing)."""

    def __init__(self, outputs: bool, links: bool, notags: bool = True):
        self.o2 = bytearray() if outputs else None
        self.text = bytearray() if outputs and notags else None
        self.want_links = links
        self.want_scripts = outputs
        self.result = Normalised()
        self.state, self.next_state, self.saved_next_state = NORM, BAD, BAD
        self.in_tag = OUTSIDE
        self.tag = bytearray()
        self.tag_arg = bytearray()
        self.tag_val = bytearray()
        self.tag_args: list[list] = []
        self.entity = bytearray()
        self.quoted = NOT_QUOTED
        self.escape = False
        self.value = 0
        self.hex = False
        self.length = 0
        self.text_space = False
        self.mbchar = 0
        self.mbchar2 = 0
        self.binary = False
        self.look_for_screnc = False
        self.in_screnc = False
        self.screnc_at: int | None = None
        self.screnc_len = 0
        self.screnc_pos = 0
        self.data_file: bytearray | None = None
        self.script: list[bytes] | None = None
        self.script_begin: int | None = None
        self.script_end: int | None = None
        self.in_ahref = 0  # index + 1 of the <a> link whose text is being read
        self.href_begin: int | None = None
        self.href_end: int | None = None
        self.contents = bytearray()
        self.form_action: bytes | None = None
        self.line = bytearray()

    # -- small helpers -------------------------------------------------------------------------

    def out(self, data: bytes) -> None:
        if self.o2 is not None:
            self.o2 += data

    def out_text(self, data: bytes) -> None:
        if self.text is not None:
            self.text += data

    def val_add(self, data: bytes) -> None:
        room = STR_MAX - len(self.tag_val)
        if room > 0:
            self.tag_val += data[:room]

    def add_arg(self, value: bytes | None) -> None:
        self.tag_args.append([bytes(self.tag_arg), _arg_value(value)])

    def arg(self, name: bytes) -> bytes | None:
        for arg_name, value in self.tag_args:
            if arg_name == name:
                return value
        return None

    def add_link(self, tag: bytes, value: bytes | None) -> None:
        self.result.links.append(Link(tag, _arg_value(value)))

    def contents_append(self, data) -> None:
        """Shown text of a link, multibyte full stops folded to '.', cut at STR_MAX bytes."""
        out = self.contents
        mbchar = 0
        for c in data:
            if len(out) >= STR_MAX:
                break
            if mbchar and (c < 0x80 or mbchar >= 0x10000):
                if mbchar in _DOTS or (mbchar == 0xA1 and c in (0x43, 0x44, 0x4F)):
                    out.append(0x2E)
                    if mbchar == 0xA1:
                        mbchar = 0
                        continue
                else:
                    for b in _multibyte(mbchar):
                        if len(out) + 1 < STR_MAX:
                            out.append(b)
                mbchar = 0
            if c >= 0x80:
                mbchar = ((mbchar << 8) | c) & 0xFFFFFFFF
            elif len(out) < STR_MAX:
                out.append(c)

    def contents_done(self, index: int) -> None:
        text = bytes(self.contents)
        nul = text.find(b"\0")
        self.result.links[index - 1].contents = text if nul < 0 else text[:nul]
        self.contents = bytearray()

    def form_link(self, value: bytes) -> None:
        """Inside a <form>: the action is the real target, the tag's URL the shown one."""
        if self.form_action is not None:
            self.add_link(b"form", value)
            self.contents = bytearray()
            self.contents_append(self.form_action)
            self.contents_done(len(self.result.links))

    # -- the pass ------------------------------------------------------------------------------

    def run(self, data) -> Normalised:
        lines = iter_chunks(data)
        index = 0
        line = next(lines, None)
        pos = 0
        while line is not None:
            if self.href_begin is not None:
                self.href_begin = pos
            while pos < len(line) and line[pos] in _SPACE:
                pos += 1
            pos = self.run_line(line, pos)
            if pos < 0:
                break
            if self.want_links and self.in_ahref and self.href_begin is not None:
                self.contents_append(line[self.href_begin:pos])
            self.href_end = None
            if self.script is not None:
                self.script_take(line, pos)
            if self.look_for_screnc and self.screnc_at is not None:
                pos, self.screnc_at = self.screnc_at, None
                self.state, self.next_state = JSDECODE_LENGTH, BAD
                continue
            index += 1
            if index % CHUNKS_PER_TIME_CHECK == 0:
                check_running_time()
            line = next(lines, None)
            pos = 0
            if self.in_screnc:
                self.state, self.next_state = JSDECODE_DECRYPT, BAD
            elif self.look_for_screnc and self.screnc_at is None and self.state != LOOKFOR_SCRENC:
                self.saved_next_state = self.next_state
                self.next_state = self.state
                self.state = LOOKFOR_SCRENC
            if self.next_state == self.state:
                self.next_state = BAD
        else:
            self.finish_entity()
        return self.finish()

    def finish_entity(self) -> None:
        # A document ending inside an entity still gets it decoded.
        name = bytes(self.entity)
        if name in ENTITIES:
            self.out(_utf16_norm(ENTITIES[name]))
        elif name:
            self.out(b"&" + name.lower())

    def finish(self) -> Normalised:
        if self.in_ahref:
            self.contents_done(self.in_ahref)
        if self.script is not None:
            self.result.scripts.append(self.script)
            self.script = None
        if self.data_file is not None:
            self.result.data_files.append(bytes(self.data_file))
            self.data_file = None
        if self.o2 is not None:
            self.result.nocomment, self.o2 = self.o2, None
        if self.text is not None:
            self.result.notags, self.text = self.text, None
        return self.result

    def script_take(self, line: bytearray, pos: int) -> None:
        """Hand the script text of this chunk to the script collector (js_process)."""
        begin = 0 if self.script_begin is None else self.script_begin
        end = pos if self.script_end is None else self.script_end
        if end > begin:
            self.script.append(bytes(line[begin:end]))
        self.script_begin = self.script_end = None
        if self.in_tag == OUTSIDE:
            self.result.scripts.append(self.script)
            self.script = None

    def run_line(self, line: bytearray, pos: int) -> int:
        """Process one chunk from ``pos``; returns where it stopped, or -1 on an engine error."""
        self.line = line
        o2 = self.o2
        while pos < len(line):
            c = line[pos]
            if not self.binary:
                if c == 0x0A:
                    line[pos] = c = 0x20
                elif c == 0x0D:
                    pos += 1
                    continue
            state = self.state
            if state == NORM:
                if c == 0x3C:  # '<'
                    self.href_end = pos
                    self.out(b"<")
                    if self.in_tag == OUTSIDE and not self.text_space:
                        self.out_text(b" ")
                        self.text_space = True
                    if self.want_links and self.in_ahref and self.href_begin is not None:
                        self.contents_append(line[self.href_begin:pos])
                        self.href_begin = None
                    pos += 1
                    self.state, self.next_state = SKIP_WS, TAG
                    self.tag = bytearray()
                elif c in _SPACE:
                    if not self.text_space and self.in_tag == OUTSIDE:
                        self.out_text(b" ")
                        self.text_space = True
                    self.state, self.next_state = TRIM_WS, NORM
                elif c == 0x26:  # '&'
                    if not self.text_space and self.in_tag == OUTSIDE:
                        self.out_text(b" ")
                        self.text_space = True
                    self.state, self.next_state = CHAR_REF, NORM
                    pos += 1
                elif c >= 0x80:
                    self.state, self.next_state = EIGHTBIT, NORM
                    self.mbchar = c
                    pos += 1
                else:
                    run = _PLAIN.match(line, pos)
                    if run is None:  # a control character: a space in the text form
                        self.out(bytes([c]))
                        if self.in_tag == OUTSIDE and not self.text_space:
                            self.out_text(b" ")
                            self.text_space = True
                        pos += 1
                        continue
                    lowered = run.group().translate(_LOWER)
                    if self.in_tag == OUTSIDE:
                        self.out(lowered)
                        self.out_text(lowered)
                        self.text_space = False
                    else:  # scripts: quotes normalised to '"'
                        self.out(lowered.replace(b"'", b'"'))
                    pos = run.end()
            elif state == SKIP_WS:
                if c in _SPACE:
                    pos = self.skip_spaces(line, pos)
                else:
                    self.state, self.next_state = self.next_state, BAD
            elif state == TRIM_WS:
                if c in _SPACE:
                    pos = self.skip_spaces(line, pos)
                else:
                    if self.in_tag == OUTSIDE:
                        self.out(b" ")
                    self.state, self.next_state = self.next_state, BAD
            elif state == TAG:
                if self.in_tag == OUTSIDE and (self.tag or c != 0x21):
                    run = _NAME_RUN.match(line, pos)
                    if run is not None:
                        lowered = run.group().translate(_LOWER)
                        self.out(lowered)
                        self.tag += lowered[:STR_MAX - len(self.tag)]
                        pos = run.end()
                        continue
                pos = self.do_tag(line, pos, c)
            elif state == TAG_ARG:
                if self.tag_arg:
                    run = _ARG_RUN.match(line, pos)
                    if run is not None:
                        lowered = run.group().translate(_LOWER)
                        self.out(lowered)
                        self.tag_arg += lowered[:STR_MAX - len(self.tag_arg)]
                        pos = run.end()
                        continue
                pos = self.do_tag_arg(pos, c)
            elif state == TAG_ARG_EQUAL:
                if c == 0x3D:
                    self.out(b"=")
                    pos += 1
                    self.start_value()
                else:
                    if self.tag_arg:
                        self.add_arg(None)
                    self.tag_arg = bytearray()
                    self.state, self.next_state = TAG_ARG, BAD
            elif state == TAG_ARG_VAL:
                # Past 6 characters a value can no longer be a "data:" URI; plain runs then
                # need no per-character care (the escape flag looks at the next character).
                if len(self.tag_val) > 6 and not self.mbchar2:
                    run = _VALUE_RUN.match(line, pos)
                    if run is not None:
                        self.out(run.group().translate(_LOWER))
                        self.val_add(run.group())
                        pos = run.end()
                        self.escape = pos < len(line) and line[pos] == 0x5C
                        continue
                pos = self.do_tag_arg_val(line, pos, c)
                if pos < 0:  # the 0xA1 full stop case skips the escape update
                    pos = -pos
                    continue
                self.escape = pos < len(line) and line[pos] == 0x5C
            elif state == COMMENT:
                end = line.find(b">", pos)
                stop = len(line) if end < 0 else end + 1
                if not self.binary:
                    _newlines_to_spaces(line, pos, stop)
                if self.in_tag != OUTSIDE and o2 is not None:
                    part = bytes(line[pos:stop]).translate(_LOWER, b" \t\n\v\f\r")
                    o2 += part.replace(b"'", b'"')
                if end >= 0:
                    self.state, self.next_state = SKIP_WS, NORM
                pos = stop
            elif state == PROCESS_TAG:
                self.process_tag(pos)
            elif state == EIGHTBIT:
                if c < 0x80 or self.mbchar >= 0x10000:
                    mb = self.mbchar
                    if mb in _DOTS or (mb == 0xA1 and c in (0x43, 0x44, 0x4F)):
                        self.out(b".")
                        self.out_text(b".")
                        if mb == 0xA1:
                            pos += 1
                            self.mbchar = 0
                            continue
                    else:
                        c0, c1, c2 = (mb >> 16) & 0xFF, (mb >> 8) & 0xFF, mb & 0xFF
                        if c0:
                            self.out(bytes([c0]))
                            self.out_text(bytes([c0]))
                        if c0 or c1:
                            self.out(bytes([c1]))
                            self.out_text(bytes([c1]))
                        self.out(bytes([c2]))
                        self.out_text(bytes([c1]))  # sic: libclamav writes the middle byte
                    self.mbchar = 0
                    self.state, self.next_state = self.next_state, NORM
                else:
                    self.mbchar = ((self.mbchar << 8) | c) & 0xFFFFFFFF
                    pos += 1
            elif state == CHAR_REF:
                if c == 0x23:  # '#'
                    self.value, self.hex = 0, False
                    self.state = CHAR_REF_DECODE
                    pos += 1
                else:
                    self.state = ENTITY_REF
            elif state == ENTITY_REF:
                pos = self.do_entity(pos, c)
            elif state == CHAR_REF_DECODE:
                pos = self.do_char_ref(pos, c)
            elif state == LOOKFOR_SCRENC:
                self.look_for_screnc = True
                found = line.find(b"#@~^", pos)
                if found >= 0:
                    line[found:found + 2] = b"//"
                    self.screnc_at = found + 4
                self.state, self.next_state = self.next_state, self.saved_next_state
            elif state == JSDECODE:
                if line[pos:pos + 4] == b"#@~^":
                    line[pos:pos + 2] = b"//"
                    pos += 4
                    self.state, self.next_state = JSDECODE_LENGTH, BAD
                else:
                    self.out(bytes([_LOWER[c]]))
                    pos += 1
            elif state == JSDECODE_LENGTH:
                if len(line) - pos < 8:
                    self.state, self.next_state = NORM, BAD
                else:
                    self.screnc_len = _screnc_length(line[pos:pos + 6])
                    self.screnc_pos = 0
                    self.state, self.next_state = JSDECODE_DECRYPT, BAD
                    self.in_screnc = True
                    line[pos + 7] = 0x0A
                    pos += 8
            elif state == JSDECODE_DECRYPT:
                self.screnc_decode(line, pos)
                if not self.screnc_len:
                    self.in_screnc = False
                self.state, self.next_state = NORM, BAD
            elif state in (RFC2397_TYPE, RFC2397_INIT, RFC2397_DATA, RFC2397_FINISH,
                           RFC2397_ESC, ESCAPE_CHAR):
                pos = self.do_rfc2397(line, pos, c)
            else:  # BAD: libclamav gives up on the document here
                return -1
        return pos

    def skip_spaces(self, line: bytearray, pos: int) -> int:
        end = _SPACES.match(line, pos).end()
        if not self.binary:
            _newlines_to_spaces(line, pos, end)
        return end

    # -- tags ----------------------------------------------------------------------------------

    def do_tag(self, line: bytearray, pos: int, c: int) -> int:
        if not self.tag and c == 0x21:  # "<!": a comment
            if self.in_tag != OUTSIDE:
                self.out(b"!")
            elif self.o2:
                del self.o2[-1]  # take back the '<'
            self.state, self.next_state = COMMENT, BAD
            return pos + 1
        if c == 0x3E:
            self.out(b">")
            self.state, self.next_state = SKIP_WS, PROCESS_TAG
            return pos + 1
        if c not in _SPACE:
            lower = _LOWER[c]
            self.out(bytes([lower]))
            if self.in_tag != OUTSIDE and not self.tag and c != 0x2F:
                self.state = NORM  # inside a script only "</…" is a tag
            if len(self.tag) < STR_MAX:
                self.tag.append(lower)
            return pos + 1
        self.tag_arg = bytearray()
        self.state = SKIP_WS
        self.next_state = TAG_ARG if self.in_tag == OUTSIDE else PROCESS_TAG
        return pos

    def start_value(self) -> None:
        self.state, self.next_state = SKIP_WS, TAG_ARG_VAL
        self.escape = False
        self.quoted = NOT_QUOTED
        self.tag_val = bytearray()

    def do_tag_arg(self, pos: int, c: int) -> int:
        if c == 0x3D:  # '='
            self.out(b"=")
            self.start_value()
            return pos + 1
        if c in _SPACE:
            self.state, self.next_state = SKIP_WS, TAG_ARG_EQUAL
            return pos + 1
        if c == 0x3E:
            self.out(b">")
            if self.tag_arg:
                self.add_arg(None)
            self.state, self.next_state = PROCESS_TAG, BAD
            return pos + 1
        if not self.tag_arg:
            self.out(b" ")  # each attribute preceded by one space
        lower = _LOWER[c]
        self.out(bytes([lower]))
        if len(self.tag_arg) < STR_MAX:
            self.tag_arg.append(lower)
        return pos + 1

    def end_value(self) -> None:
        self.add_arg(bytes(self.tag_val))
        self.state, self.next_state = SKIP_WS, TAG_ARG
        self.tag_arg = bytearray()

    def do_tag_arg_val(self, line: bytearray, pos: int, c: int) -> int:
        """Returns the new position, negated when the escape flag must not be updated."""
        if self.tag_val in (b"data:", b'"data:'):
            if self.o2:
                del self.o2[-1]
            if self.quoted != NOT_QUOTED:
                self.out(b'"')
            self.tag_val = bytearray()
            self.state, self.next_state = RFC2397_TYPE, TAG_ARG
            return pos
        if c == 0x26:  # '&'
            self.state, self.next_state = CHAR_REF, TAG_ARG_VAL
            return pos + 1
        if c in (0x27, 0x22):
            kind = SINGLE_QUOTED if c == 0x27 else DOUBLE_QUOTED
            self.out(b'"')
            if not self.tag_val:
                self.quoted = kind
                self.val_add(b'"')
            elif not self.escape and self.quoted == kind:
                self.val_add(b'"')
                self.end_value()
            else:
                self.val_add(b'"')
            return pos + 1
        if c in _SPACE or c == 0x3E:
            if self.quoted == NOT_QUOTED:
                self.end_value()
                return pos
            self.out(bytes([c]))
            self.val_add(b" " if c in _SPACE else b">")
            self.state, self.next_state = SKIP_WS, TAG_ARG_VAL
            self.escape = False
            self.quoted = NOT_QUOTED  # sic: a quoted value ends its quoting at white space
            return pos + 1
        mb = self.mbchar2
        if mb and (c < 0x80 or mb >= 0x10000):
            if mb in _DOTS or (mb == 0xA1 and c in (0x43, 0x44, 0x4F)):
                self.out(b".")
                self.val_add(b".")
                if mb == 0xA1:
                    self.mbchar2 = 0
                    return -(pos + 1)
            else:
                self.out(_multibyte(mb))
                self.val_add(_multibyte(mb))
            self.mbchar2 = 0
        if c >= 0x80:
            self.mbchar2 = ((self.mbchar2 << 8) | c) & 0xFFFFFFFF
        else:
            self.out(bytes([_LOWER[c]]))
            self.val_add(bytes([c]))
        return pos + 1

    def process_tag(self, pos: int) -> None:
        self.state, self.next_state = SKIP_WS, NORM
        tag = bytes(self.tag)
        links = self.want_links
        if tag.startswith(b"/"):
            if tag == b"/script":
                self.in_tag = OUTSIDE
                if self.script is not None:
                    self.script_end = pos
                    self.script_take(self.line, pos)
            elif tag == b"/style" and self.in_tag == IN_STYLE:
                self.in_tag = OUTSIDE
            if links and self.in_ahref:
                if tag == b"/a":
                    self.contents_done(self.in_ahref)
                    self.in_ahref = 0
                self.href_begin = pos
            if tag == b"/form":
                self.form_action = None
        elif tag == b"script":
            language = (self.arg(b"language") or b"").lower()
            if language in (b"jscript.encode", b"vbscript.encode"):
                for item in self.tag_args:
                    if item[0] == b"language":
                        item[1] = b"javascript" if language == b"jscript.encode" else b"vbscript"
                        break
                self.state, self.next_state = SKIP_WS, JSDECODE
                self.out(_tag_text(tag, self.tag_args))
            self.in_tag = IN_SCRIPT
            if self.want_scripts and self.script is None:
                self.script = []
                self.script_begin, self.script_end = pos, None
        elif tag == b"style":
            self.in_tag = IN_STYLE
        elif tag == b"%@":
            language = (self.arg(b"language") or b"").lower()
            if language in (b"jscript.encode", b"vbscript.encode"):
                self.saved_next_state = self.next_state
                self.next_state = self.state
                self.look_for_screnc = False
                self.state = LOOKFOR_SCRENC
        elif links:
            self.collect_link(tag, pos)
        elif tag in (b"a", b"img"):
            target = self.arg(b"href" if tag == b"a" else b"src")
            if target:
                self.out_text(target + b" ")
                self.text_space = True
        self.tag_args = []

    def collect_link(self, tag: bytes, pos: int) -> None:
        result = self.result.links
        if self.in_ahref and self.href_begin is None:
            self.href_begin = pos
        if tag == b"a":
            href = self.arg(b"href")
            if not href:
                return
            if self.in_ahref and self.href_begin is not None:
                # A nested <a>: the previous one ends here.
                if self.href_end is not None:
                    self.contents_append(self.line[self.href_begin:self.href_end])
                self.contents_done(self.in_ahref)
                self.in_ahref = 0
            title = self.arg(b"title")
            if title is not None:
                self.add_link(b"href_title", title)
                self.contents_append(href)
                self.contents_done(len(result))
            if self.form_action is not None:
                self.add_link(b"form", href)
                self.contents = bytearray()
                self.contents_append(self.form_action)
                self.contents_done(len(result))
            self.add_link(b"href", href)
            self.in_ahref = len(result)
            self.href_begin = pos
            self.contents = bytearray()
        elif tag == b"form":
            action = self.arg(b"action")
            if action is not None:
                self.form_action = action
        elif tag in (b"img", b"iframe", b"area"):
            names = {b"img": ((b"src", b"src"), (b"dynsrc", b"dynsrc")),
                     b"iframe": ((b"src", b"iframe"),), b"area": ((b"href", b"area"),)}[tag]
            for attribute, kind in names:
                value = self.arg(attribute)
                if value:
                    self.add_link(kind, value)
                    if self.in_ahref:
                        # The "text" of an image inside a link is that link's URL.
                        result[-1].contents = result[self.in_ahref - 1].value
                    self.form_link(value)

    # -- character references ------------------------------------------------------------------

    def do_entity(self, pos: int, c: int) -> int:
        in_value = self.next_state == TAG_ARG_VAL
        if c == 0x3B:  # ';'
            name = bytes(self.entity)
            if name in ENTITIES:
                decoded = _utf16_norm(ENTITIES[name])
            else:
                decoded = b"&" + name.lower() + b";"
            self.out(decoded)
            if in_value:
                self.val_add(decoded)
            self.entity = bytearray()
            self.state, self.next_state = self.next_state, BAD
            return pos + 1
        if c in _ENTITY_CHARS and len(self.entity) < STR_MAX:
            self.entity.append(c)
            return pos + 1
        written = b"&" + bytes(self.entity).lower()
        self.out(written)
        if in_value:
            self.val_add(written)
        self.state, self.next_state = self.next_state, BAD
        self.entity = bytearray()
        return pos

    def do_char_ref(self, pos: int, c: int) -> int:
        if self.value == 0 and c in (0x78, 0x58):  # 'x'
            self.hex = True
            return pos + 1
        if c == 0x3B:
            if self.next_state == TAG_ARG_VAL:
                self.val_add(bytes([self.value & 0xFF]))
            if self.value < 0x80:
                self.out(bytes([_LOWER[self.value]]))
            else:
                self.out(_utf16_norm(self.value))
            self.state, self.next_state = self.next_state, BAD
            return pos + 1
        if c in _DIGITS or (self.hex and c in _XDIGITS):
            limit = (1 << 63) - 1
            base = 16 if self.hex and self.value < limit // 16 else 10
            if self.value >= limit // base:
                self.out(bytes([self.value & 0xFF]))
                self.state, self.next_state = self.next_state, BAD
                return pos + 1
            self.value = self.value * base + int(chr(c), 16)
            return pos + 1
        self.out(bytes([self.value & 0xFF]))
        self.state, self.next_state = self.next_state, BAD
        return pos

    # -- JScript.Encode --------------------------------------------------------------------------

    def screnc_decode(self, line: bytearray, pos: int) -> None:
        """Decrypt in place from ``pos`` while encoded characters remain (screnc_decode)."""
        src, dst, end = pos, pos, len(line)
        length, table_pos = self.screnc_len, self.screnc_pos
        while length > 0 and src < end:
            ch = line[src]
            if ch in (0x0A, 0x0D):
                src += 1
                continue
            if ch < 0x80:
                value = _SCRENC_TABLES[_SCRENC_ORDER[table_pos]][ch]
                if value == 0xFF:
                    src += 1
                    length = (length - 1) & 0xFFFFFFFF
                    if src >= end:
                        src -= 1
                    else:
                        value = _SCRENC_ESCAPES.get(line[src], 0xFF)
                line[dst] = value
                dst += 1
                table_pos = (table_pos + 1) % 64
            else:
                line[dst] = ch
                dst += 1
                src += 1
                if src >= end:
                    dst -= 1
                    break
                line[dst] = line[src]
                dst += 1
            src += 1
            length = (length - 1) & 0xFFFFFFFF
        self.screnc_len, self.screnc_pos = length, table_pos
        if not length:
            if end - src >= 12:
                src += 12  # checksum and "^#~@" terminator
            line[dst:] = line[src:]
        else:
            del line[dst:]

    # -- data: URIs ------------------------------------------------------------------------------

    def do_rfc2397(self, line: bytearray, pos: int, c: int) -> int:
        state = self.state
        if state == RFC2397_TYPE:
            if c in (0x27, 0x22):
                kind = SINGLE_QUOTED if c == 0x27 else DOUBLE_QUOTED
                pos += 1
                if not self.escape and self.quoted == kind:  # value ended before the data
                    self.state, self.next_state = SKIP_WS, TAG_ARG
                    self.tag_arg = bytearray()
                else:
                    self.val_add(b'"')
            elif c in _SPACE or c == 0x3E:
                if self.quoted == NOT_QUOTED:
                    self.state, self.next_state = SKIP_WS, TAG_ARG
                    self.tag_arg = bytearray()
                else:
                    self.val_add(b" " if c in _SPACE else b">")
                    self.state, self.next_state = SKIP_WS, RFC2397_TYPE
                    self.escape = False
                    self.quoted = NOT_QUOTED
                    pos += 1
            elif c == 0x2C:  # ',': the data starts
                self.state, self.next_state = RFC2397_INIT, BAD
                self.escape = False
                pos += 1
            else:
                self.val_add(bytes([_LOWER[c]]))
                pos += 1
            self.escape = pos < len(line) and line[pos] == 0x5C
        elif state == RFC2397_INIT:
            if self.data_file is not None:
                self.result.data_files.append(bytes(self.data_file))
            if self.o2 is not None:
                media = bytes(self.tag_val)
                header = b"From html-normalise\nContent-type: " + media + b"\n"
                if b";base64" in media:
                    header += b"Content-transfer-encoding: base64\n"
                self.data_file = bytearray(header + b"\n")
            else:
                self.data_file = None
            self.state = RFC2397_DATA
            self.binary = True
        elif state == RFC2397_DATA:
            if c == 0x26:
                self.state, self.next_state = CHAR_REF, RFC2397_DATA
            elif c == 0x25:  # '%'
                self.length = self.value = 0
                self.state, self.next_state = ESCAPE_CHAR, RFC2397_ESC
            elif c in (0x27, 0x22):
                kind = SINGLE_QUOTED if c == 0x27 else DOUBLE_QUOTED
                if not self.escape and self.quoted == kind:
                    self.state = RFC2397_FINISH
                else:
                    self.data_out(bytes([c]))
            elif c in _SPACE or c == 0x3E:
                if self.quoted == NOT_QUOTED:
                    self.state = RFC2397_FINISH
                else:
                    self.data_out(bytes([c]))
            else:
                self.data_out(bytes([c]))
            pos += 1
            self.escape = pos < len(line) and line[pos] == 0x5C
        elif state == RFC2397_FINISH:
            if self.data_file is not None:
                self.result.data_files.append(bytes(self.data_file))
                self.data_file = None
            self.state, self.next_state = SKIP_WS, TAG_ARG
            self.escape = False
            self.quoted = NOT_QUOTED
            self.binary = False
        elif state == RFC2397_ESC:
            if self.length == 2:
                self.data_out(bytes([self.value & 0xFF]))
            elif self.length == 1:
                self.data_out(b"%" + bytes([(self.value + 0x30) & 0xFF]))
            else:
                self.data_out(b"%")
            self.state = RFC2397_DATA
        else:  # ESCAPE_CHAR: one of two hex digits after '%'
            if self.value >= ((1 << 63) - 1) // 16:
                self.state, self.next_state = self.next_state, BAD
                return pos + 1
            self.value *= 16
            self.length += 1
            if c in _XDIGITS:
                self.value += int(chr(c), 16)
            else:
                self.state = self.next_state
            if self.length == 2:
                self.state = self.next_state
            pos += 1
        return pos

    def data_out(self, data: bytes) -> None:
        if self.data_file is not None:
            self.data_file += data


def _newlines_to_spaces(line: bytearray, begin: int, end: int) -> None:
    """What libclamav does to every newline it steps over: scripts see them as spaces."""
    part = line[begin:end]
    if b"\n" in part:
        line[begin:end] = part.replace(b"\n", b" ")


def _arg_value(value: bytes | None) -> bytes | None:
    """An attribute value as stored: a leading quote and the last character dropped."""
    if value is None:
        return None
    value = value.split(b"\0", 1)[0]  # stored as C strings
    if value.startswith(b'"'):
        return value[1:-1] if len(value) > 1 else b""
    return value


def _tag_text(tag: bytes, args: list[list]) -> bytes:
    out = b"<" + tag
    for name, value in args:
        out += b" " + name
        if value is not None:
            out += b'="' + value.translate(_LOWER) + b'"'
    return out + b">"


def _screnc_length(prefix: bytes) -> int:
    """The decoded length libclamav reads from the 6 base64 characters after "#@~^"."""
    b = [_B64.get(c, -1) for c in prefix]
    total = (b[0] << 2) if b[0] >= 0 else 0
    total += b[1] >> 4
    total += (b[1] & 0x0F) << 12
    total += max(b[2] >> 2, 0) << 8
    total += (b[2] & 0x03) << 22
    total += (b[3] << 16) if b[3] >= 0 else 0
    total += ((b[4] << 2) if b[4] >= 0 else 0) << 24
    total += max(b[5] >> 4, 0) << 24
    return total & 0xFFFFFFFF


def normalise(data, outputs: bool = True, links: bool = False,
              notags: bool = True) -> Normalised:
    """Run the normaliser over ``data`` (bytes or a buffer); ``notags`` off leaves the text
    form empty (it is not matched above MAX_HTML_NOTAGS, and would cost a copy of the page).

    Inside a scan, the scan's time budget is checked as the document is read."""
    return _Normaliser(outputs, links, notags).run(data)


__all__ = ["Link", "Normalised", "chunks", "iter_chunks", "normalise"]
