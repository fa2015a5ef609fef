"""Decodes the files an HTML page carries encoded: base64 ``data:`` URIs and literal blobs in
scripts.

Linear by construction: one pattern finds ``data:`` URIs and script openings in a single pass,
the end of a script is found by a search (never a lazy ``.*?`` that could rescan the rest of the
page for every unclosed ``<script``), and the runs of encoded characters are matched with
possessive quantifiers, so no run is ever scanned twice.

Both the HTML handler and the text handler (for HTML written into a text file) use it.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

from ..limits import Context
from ..objects import Child

_DOCUMENT = re.compile(
    # A data: URI with a base64 payload, in src=, href=, CSS url(…) or anywhere else. Browsers
    # drop tabs and newlines from URLs, so the payload may be wrapped.
    rb"data:[\w.+/-]{0,100}+(?:;[\w.+=-]{0,100}+){0,8};base64,([A-Za-z0-9+/=_%\r\n\t-]++)"
    rb"|<script\b[^>]{0,2000}+>",
    re.IGNORECASE,
)
_SCRIPT_END = re.compile(rb"</script", re.IGNORECASE)
_SCRIPT_BLOB = re.compile(
    # atob("…") of any useful length, a long quoted run of base64 or hex, or \xNN escapes.
    rb"atob\(\s*+([\"'`])([A-Za-z0-9+/=_-]{4,}+)\1"
    rb"|([\"'`])([A-Za-z0-9+/_-]{64,}+={0,2})\3"
    rb"|((?:\\x[0-9A-Fa-f]{2}){32,}+)"
)
# Tested with translate, not a regex: a repeated group costs the regex engine memory for each
# repetition (gigabytes for a 40 MB string).
_HEX_DIGITS = b"0123456789ABCDEFabcdef"


def html_files(data: bytes, ctx: Context) -> Iterator[Child]:
    """The files ``data`` carries as base64 ``data:`` URIs and as encoded script blobs."""
    uris = scripts = 0
    pos = 0
    while True:
        m = _DOCUMENT.search(data, pos)
        if m is None:
            return
        if m.group(1) is not None:
            pos = m.end()
            payload = _base64(m.group(1))
            if payload:
                uris += 1
                yield _member(ctx, f"data{uris}", payload, m)
            continue
        # A script: its blobs and its data: URIs, then on after its end (a "<script" written
        # by the script itself must not start a second pass over the same text).
        body = m.end()
        end = _SCRIPT_END.search(data, body)
        pos = end.end() if end else len(data)
        stop = end.start() if end else len(data)
        found = sorted(
            [(b.start(), "script", b) for b in _SCRIPT_BLOB.finditer(data, body, stop)]
            + [(u.start(), "data", u) for u in _DOCUMENT.finditer(data, body, stop)
               if u.group(1) is not None]
        )
        for _start, kind, hit in found:
            if kind == "data":
                payload = _base64(hit.group(1))
                if payload:
                    uris += 1
                    yield _member(ctx, f"data{uris}", payload, hit)
            else:
                payload = _decode_blob(hit)
                if payload:
                    scripts += 1
                    yield _member(ctx, f"script{scripts}", payload, hit)
        ctx.check_time()


def _member(ctx: Context, name: str, payload: bytes, m: re.Match) -> Child:
    return ctx.member(name, [payload], packed_size=m.end() - m.start())


def _decode_blob(m: re.Match) -> bytes:
    if m.group(2) is not None:
        return _base64(m.group(2))
    if m.group(4) is not None:
        text = m.group(4)
        if len(text) % 2 == 0 and not text.translate(None, _HEX_DIGITS):
            return binascii.unhexlify(text)
        return _base64(text)
    return binascii.unhexlify(m.group(5).replace(b"\\x", b""))


def _base64(text: bytes) -> bytes:
    if b"%" in text:
        text = unquote_to_bytes(text)
    text = re.sub(rb"[^A-Za-z0-9+/_-]", b"", text.split(b"=", 1)[0])
    text = text.replace(b"-", b"+").replace(b"_", b"/")  # the URL-safe alphabet
    if len(text) % 4 == 1:
        text = text[:-1]
    try:
        return binascii.a2b_base64(text + b"=" * (-len(text) % 4))
    except binascii.Error:
        return b""
