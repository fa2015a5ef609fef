"""Evasive variants of one mail carrying an attachment: the same file, hidden the ways mail
parsers disagree about.

A message is described by a ``Shape`` (one value per aspect: MIME structure, line ends, how the
filename is written, duplicated headers, transfer encoding, message/rfc822 nesting) and rendered
by ``render``. Each ``Transform`` sets one aspect; ``variants`` gives the plain message, every
transform alone and every pair of transforms of different aspects, deterministically and without
duplicates. The attachment is ``payload()``; ``database()`` holds a body and a hash signature
for it, in ClamAV's formats, so lmsav and clamscan can be asked the same question.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import random
from dataclasses import dataclass, replace

_rnd = random.Random(1401)
SIGNATURE = bytes(_rnd.randrange(128, 256) for _ in range(16))
FILENAME = "invoice.bin"
BOUNDARY = "XYZ-1"


def payload() -> bytes:
    """The attachment: bytes that never occur in the mail undecoded, a body signature inside."""
    rnd = random.Random(1402)
    return rnd.randbytes(300) + SIGNATURE + rnd.randbytes(300)


def database() -> dict[str, str]:
    """{file name: text} of a signature database that finds ``payload()`` (two names)."""
    data = payload()
    return {
        "evasion.ndb": f"Evasion.Body.Sample:0:*:{SIGNATURE.hex()}\n",
        "evasion.hdb": f"{hashlib.md5(data).hexdigest()}:{len(data)}:Evasion.Hash.Sample\n",
    }


THREATS = frozenset({"Evasion.Body.Sample", "Evasion.Hash.Sample"})


@dataclass(frozen=True)
class Shape:
    structure: str = "plain"
    newline: str = "lf"
    filename: str = "plain"
    duplicate: str = "none"
    encoding: str = "base64"
    nesting: int = 0


@dataclass(frozen=True)
class Transform:
    name: str
    aspect: str
    value: object
    description: str


TRANSFORMS = (
    Transform("boundary-mismatch", "structure", "boundary-mismatch",
              'boundary="XYZ-1" declared, parts delimited by --XYZ-2'),
    Transform("reused-boundary", "structure", "reused-boundary",
              "a nested multipart/alternative reuses its parent's boundary; attachment after it"),
    Transform("html-boundary-same", "structure", "html-boundary-same",
              "a text/html part carries the parent's boundary parameter; attachment after it"),
    Transform("html-boundary-other", "structure", "html-boundary-other",
              "a text/html part carries a boundary parameter of its own; attachment after it"),
    Transform("crlf", "newline", "crlf", "every line ends in CRLF"),
    Transform("crlf-headers-lf-body", "newline", "crlf-headers",
              "header lines end in CRLF, body lines in LF"),
    Transform("alternating-eol", "newline", "alternating", "lines end in CRLF and LF in turn"),
    Transform("folded-filename", "filename", "folded",
              "Content-Type and Content-Disposition folded, the filename on its own line"),
    Transform("rfc2047-filename", "filename", "rfc2047",
              "filename as two RFC 2047 encoded words folded over two lines"),
    Transform("rfc2231-filename", "filename", "rfc2231",
              "filename as RFC 2231 continuations (filename*0*=UTF-8''…; filename*1=…)"),
    Transform("dup-ct-text-first", "duplicate", "ct-text-first",
              "two Content-Type headers on the message: text/plain, then multipart/mixed"),
    Transform("dup-ct-multipart-first", "duplicate", "ct-multipart-first",
              "two Content-Type headers on the message: multipart/mixed, then text/plain"),
    Transform("dup-cte-7bit-first", "duplicate", "cte-7bit-first",
              "two Content-Transfer-Encoding headers on the attachment: 7bit, then the real one"),
    Transform("dup-cte-7bit-last", "duplicate", "cte-7bit-last",
              "two Content-Transfer-Encoding headers on the attachment: the real one, then 7bit"),
    Transform("base64-junk-chars", "encoding", "base64-junk-chars",
              "base64 with characters outside its alphabet (! * . ~ space) inside the lines"),
    Transform("base64-junk-lines", "encoding", "base64-junk-lines",
              "base64 with lines of non-alphabet junk between its lines"),
    Transform("x-uuencode-part", "encoding", "x-uuencode",
              "the attachment with Content-Transfer-Encoding: x-uuencode (begin/end block)"),
    Transform("uuencode-in-text", "encoding", "uuencode-in-text",
              "no attachment part: the file uuencoded in the text/plain body"),
    Transform("rfc822-depth-3", "nesting", 3, "the message forwarded as message/rfc822, 3 deep"),
    Transform("rfc822-depth-8", "nesting", 8, "the message forwarded as message/rfc822, 8 deep"),
    Transform("rfc822-depth-15", "nesting", 15,
              "the message forwarded as message/rfc822, 15 deep (clamscan's deepest)"),
)


@dataclass(frozen=True)
class Variant:
    name: str  # also the file name stem: "v012-crlf+rfc2231-filename"
    description: str
    data: bytes


def variants() -> list[Variant]:
    """The plain message, each transform, each pair of transforms of different aspects; a
    combination that renders the same bytes as an earlier one is left out."""
    combos: list[tuple[Transform, ...]] = [()]
    combos += [(t,) for t in TRANSFORMS]
    combos += [pair for pair in itertools.combinations(TRANSFORMS, 2)
               if pair[0].aspect != pair[1].aspect]
    out, seen = [], set()
    for combo in combos:
        shape = Shape()
        for t in combo:
            shape = replace(shape, **{t.aspect: t.value})
        data = render(shape)
        if data in seen:
            continue
        seen.add(data)
        label = "+".join(t.name for t in combo) or "plain"
        description = "; ".join(t.description for t in combo) or "the plain message"
        out.append(Variant(f"v{len(out):03d}-{label}", description, data))
    return out


# -- rendering --------------------------------------------------------------------------------
#
# A message is built as lines tagged header or body (the CRLF/LF mixes treat them apart), then
# joined with the line ends the shape asks for.

Line = tuple[str, bool]  # (text, is a header line)


def render(shape: Shape) -> bytes:
    lines = _message(shape)
    for level in range(shape.nesting, 0, -1):
        lines = _forward(lines, level)
    return _join(lines, shape.newline).encode("ascii")


def _join(lines: list[Line], newline: str) -> str:
    out = []
    for n, (text, is_header) in enumerate(lines):
        if newline == "crlf" or (newline == "crlf-headers" and is_header) or (
                newline == "alternating" and n % 2 == 0):
            out.append(text + "\r\n")
        else:
            out.append(text + "\n")
    return "".join(out)


def _headers(*texts: str) -> list[Line]:
    return [(line, True) for text in texts for line in text.split("\n")]


def _body(*texts: str) -> list[Line]:
    return [(line, False) for text in texts for line in text.split("\n")]


def _message(shape: Shape) -> list[Line]:
    declared = BOUNDARY
    used = "XYZ-2" if shape.structure == "boundary-mismatch" else BOUNDARY
    folded = shape.filename == "folded"
    multipart = (f'Content-Type: multipart/mixed;\n boundary="{declared}"' if folded
                 else f'Content-Type: multipart/mixed; boundary="{declared}"')
    content_types = [multipart]
    if shape.duplicate == "ct-text-first":
        content_types.insert(0, "Content-Type: text/plain; charset=us-ascii")
    elif shape.duplicate == "ct-multipart-first":
        content_types.append("Content-Type: text/plain; charset=us-ascii")
    lines = _headers("From: Accounts <accounts@example.org>", "To: user@example.net",
                     "Subject: Invoice 2291", "Date: Tue, 14 Jan 2025 09:12:44 +0000",
                     "Message-ID: <inv2291@example.org>", "MIME-Version: 1.0", *content_types)
    lines += _body("", "This is a multi-part message in MIME format.")
    uu_in_text = shape.encoding == "uuencode-in-text"
    text = _text_part(uu_in_text)
    html = _html_part(shape.structure)
    if shape.structure == "reused-boundary":
        inner = _headers(f'Content-Type: multipart/alternative; boundary="{used}"')
        inner += _body("") + _multipart_body([text, _html_part("plain")], used)
        parts = [inner]
    elif shape.structure.startswith("html-boundary"):
        parts = [text, html]
    else:
        parts = [text]
    if not uu_in_text:
        parts.append(_attachment(shape))
    return lines + _multipart_body(parts, used)


def _multipart_body(parts: list[list[Line]], boundary: str) -> list[Line]:
    lines: list[Line] = []
    for part in parts:
        lines += _body(f"--{boundary}") + part
    return lines + _body(f"--{boundary}--", "")


def _text_part(with_uu: bool) -> list[Line]:
    lines = _headers("Content-Type: text/plain; charset=us-ascii") + _body(
        "", "Please find the invoice attached.", "")
    if with_uu:
        lines += _body(_uuencoded(payload()), "")
    return lines


def _html_part(structure: str) -> list[Line]:
    param = {"html-boundary-same": f'; boundary="{BOUNDARY}"',
             "html-boundary-other": '; boundary="HTML-7"'}.get(structure, "")
    return _headers(f"Content-Type: text/html; charset=us-ascii{param}") + _body(
        "", "<html><body><p>Please find the invoice attached.</p></body></html>", "")


def _attachment(shape: Shape) -> list[Line]:
    name_param, disposition = _filename_headers(shape.filename)
    cte = "x-uuencode" if shape.encoding == "x-uuencode" else "base64"
    encodings = [f"Content-Transfer-Encoding: {cte}"]
    if shape.duplicate == "cte-7bit-first":
        encodings.insert(0, "Content-Transfer-Encoding: 7bit")
    elif shape.duplicate == "cte-7bit-last":
        encodings.append("Content-Transfer-Encoding: 7bit")
    lines = _headers(f"Content-Type: application/octet-stream;{name_param}", disposition,
                     *encodings)
    return lines + _body("", _encoded(shape.encoding), "")


def _filename_headers(style: str) -> tuple[str, str]:
    """(the Content-Type's name parameter, with its separator; the Content-Disposition)."""
    stem, ext = FILENAME.rsplit(".", 1)
    if style == "folded":
        return (f'\n name="{FILENAME}"',
                f'Content-Disposition: attachment;\n\tfilename=\n\t"{FILENAME}"')
    if style == "rfc2047":
        b64 = base64.b64encode(stem[:5].encode()).decode()
        words = f"=?UTF-8?B?{b64}?=\n =?UTF-8?Q?{stem[5:]}=2E{ext}?="
        return (f'\n name="{words}"', f'Content-Disposition: attachment;\n filename="{words}"')
    if style == "rfc2231":
        first = "UTF-8''" + "".join(f"%{ord(c):02X}" if c == "o" else c for c in stem)
        disposition = f"Content-Disposition: attachment;\n filename*0*={first};\n filename*1="
        return f"\n name*0*={first};\n name*1=\".{ext}\"", f"{disposition}\".{ext}\""
    return (f' name="{FILENAME}"', f'Content-Disposition: attachment; filename="{FILENAME}"')


def _encoded(encoding: str) -> str:
    data = payload()
    if encoding == "x-uuencode":
        return _uuencoded(data)
    lines = base64.encodebytes(data).decode().rstrip("\n").split("\n")
    if encoding == "base64-junk-chars":
        junk = "!*.~ "
        lines = [line[:9] + junk[n % 5] + line[9:40] + "!~" + line[40:] + " *"
                 for n, line in enumerate(lines)]
    elif encoding == "base64-junk-lines":
        lines = [x for n, line in enumerate(lines)
                 for x in ((line, "!!! ~~~ *** ... !!!") if n % 2 else (line,))]
    return "\n".join(lines)


def _uuencoded(data: bytes) -> str:
    body = "".join(binascii.b2a_uu(data[i:i + 45], backtick=True).decode()
                   for i in range(0, len(data), 45))
    return f"begin 644 {FILENAME}\n{body}`\nend"


def _forward(inner: list[Line], level: int) -> list[Line]:
    boundary = f"FWD-{level}"
    lines = _headers(f"From: relay{level}@example.org", "To: user@example.net",
                     f"Subject: Fwd ({level})", "MIME-Version: 1.0",
                     f'Content-Type: multipart/mixed; boundary="{boundary}"')
    text = _headers("Content-Type: text/plain; charset=us-ascii") + _body("", "Forwarded.", "")
    attached = _headers("Content-Type: message/rfc822",
                        f'Content-Disposition: attachment; filename="forward{level}.eml"')
    return lines + _body("") + _multipart_body([text, attached + _body("") + inner], boundary)
