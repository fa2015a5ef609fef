"""The normalised forms ClamAV matches HTML and text in, and which signature targets see which.

ClamAV does not match body signatures of target 3 (HTML) or 7 (ASCII text) against a file as
written. An HTML file is rewritten by the HTML normaliser (htmlnorm.py) and only its forms are
matched; a text file is additionally matched in a folded form: lower case, control and 8-bit
bytes dropped, runs of white space as one space. Which targets see which buffer:

==============================  =====================================================
buffer                          targets matched
==============================  =====================================================
raw bytes, file typed text      0 only (never 7)
raw bytes, file typed HTML      none when the HTML marker is in the first 1024 bytes
                                (ClamAV types it HTML before the raw pass and skips
                                the raw pass); 0 only when found later in the file
nocomment form of HTML          0 and 3
notags form of HTML             0 and 3 (files up to MAX_HTML_NOTAGS only)
javascript form of HTML         0 and 3, and again 0 and 7 (only with <script> elements)
text_view of a text file        0 and 7 (files up to MAX_SCRIPT_NORMALISE only)
==============================  =====================================================

``data:`` URIs found in HTML are separate objects (``HtmlForms.data_files``), scanned like any
extracted file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import htmlnorm, jsnorm

# ClamAV's defaults (clamscan --max-htmlnormalize, --max-htmlnotags, --max-scriptnormalize).
MAX_HTML_NORMALISE = 40 * 1024 * 1024
MAX_HTML_NOTAGS = 8 * 1024 * 1024
MAX_SCRIPT_NORMALISE = 20 * 1024 * 1024

HTML_TARGETS = frozenset({0, 3})
TEXT_TARGETS = frozenset({0, 7})
RAW_TEXT_TARGETS = frozenset({0})

# Text folding: upper case to lower, tab/newline/vertical tab/form feed/CR to space, other
# control bytes and every byte above 0x7f dropped.
_FOLD = bytes(
    c + 32 if 65 <= c <= 90 else 32 if c in (9, 10, 11, 12, 13) else c for c in range(256)
)
_DROP = bytes(c for c in range(256) if (c < 32 and c not in (9, 10, 11, 12, 13)) or c > 127)
_SPACES = re.compile(b"  +")


@dataclass(frozen=True)
class View:
    """One buffer to match and the signature targets that apply to it."""

    name: str
    data: bytes | bytearray  # HTML forms stay the normaliser's bytearrays: no extra copy
    targets: frozenset[int]


def text_view(data) -> bytes:
    """The folded form ClamAV matches target-7 (and target-0) signatures against in text files;
    empty above MAX_SCRIPT_NORMALISE, where ClamAV does not fold."""
    if len(data) > MAX_SCRIPT_NORMALISE:
        return b""
    folded = bytes(data).translate(_FOLD, _DROP)
    return _SPACES.sub(b" ", folded)


@dataclass(frozen=True)
class HtmlForms:
    """What ClamAV derives from one HTML file: the views to match and the extracted files."""

    views: tuple[View, ...]
    data_files: tuple[bytes, ...]  # data: URIs as small MIME messages, scanned as children


def html_forms(data) -> HtmlForms:
    """Normalise an HTML file once (nothing above MAX_HTML_NORMALISE, as in ClamAV).

    Memory stays a small multiple of the page: the page is read chunk by chunk, the text form
    is made only where it is matched, and the script text is let go as it is normalised."""
    if len(data) > MAX_HTML_NORMALISE:
        return HtmlForms((), ())
    with_notags = len(data) <= MAX_HTML_NOTAGS
    forms = htmlnorm.normalise(data, notags=with_notags)
    views = [View("nocomment", forms.nocomment, HTML_TARGETS)]
    if with_notags:
        views.append(View("notags", forms.notags, HTML_TARGETS))
    script = jsnorm.normalise_scripts(forms.scripts)
    if script is not None:  # matched twice by ClamAV: as HTML, then as text
        views.append(View("javascript", script, HTML_TARGETS))
        views.append(View("javascript", script, TEXT_TARGETS))
    return HtmlForms(tuple(views), tuple(forms.data_files))


def html_views(data) -> list[bytes]:
    """The buffers ClamAV matches for an HTML file, in its order: nocomment, notags, and the
    normalised scripts (listed twice: matched once for targets 0/3, once for 0/7)."""
    return [view.data for view in html_forms(data).views]


def text_scan_views(data) -> list[View]:
    """The buffers ClamAV matches for a text file besides its raw bytes (which see target 0)."""
    if len(data) > MAX_SCRIPT_NORMALISE:
        return []
    return [View("text", text_view(data), TEXT_TARGETS)]


__all__ = [
    "HTML_TARGETS", "MAX_HTML_NORMALISE", "MAX_HTML_NOTAGS", "MAX_SCRIPT_NORMALISE",
    "RAW_TEXT_TARGETS", "TEXT_TARGETS", "HtmlForms", "View", "html_forms", "html_views",
    "text_scan_views", "text_view",
]
