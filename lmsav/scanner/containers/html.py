"""Decodes what an HTML page carries encoded: base64 ``data:`` URIs and literal blobs in scripts
(html_encoded.py).

A page is text too: the uuencoded, yEnc and base64 blocks written in it are decoded as in a
plain text file (textenc.py).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..limits import Context
from ..objects import Child, ScanObject
from .html_encoded import html_files
from .textenc import encoded_files


class HtmlHandler:
    """Yields base64 ``data:`` URIs as ``data<N>``, encoded script blobs as ``script<N>``."""

    types = frozenset({"html"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        yield from html_files(bytes(obj.data), ctx)
        yield from encoded_files(obj, ctx)
