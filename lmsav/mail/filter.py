"""Content filtering of a message's attachments: by name, by real type, by size.

Runs after the anti-virus scan, on the message's leaves and on the names of members the engine
found inside them (so `report.zip//invoice.pdf.exe` is filtered by `*.exe` like a top-level
attachment). The result is, per leaf, the reasons it is filtered; the caller applies
``filtered_action`` to those leaves.
"""

from __future__ import annotations

import mimetypes
import posixpath
import re
from dataclasses import dataclass

from ..scanner.filetype import precise_type
from ..scanner.objects import PATH_SEP, ObjectResult, Verdict
from .groups import match_pattern

# Real types that are programs: libmagic names a Windows program application/x-dosexec up to
# 5.43 and application/vnd.microsoft.portable-executable from 5.44 on.
EXECUTABLE_TYPES = frozenset({
    "application/x-dosexec", "application/x-msdownload", "application/x-executable",
    "application/x-sharedlib", "application/x-pie-executable", "application/x-mach-binary",
    "application/vnd.microsoft.portable-executable", "application/x-elf",
    "application/x-ms-ne-executable", "application/x-msdos-program",
})
SCRIPT_TYPES = frozenset({
    "text/x-shellscript", "application/x-shellscript", "text/x-msdos-batch", "application/x-bat",
    "text/x-python", "text/x-script.python", "application/x-python-code", "text/x-perl",
    "application/x-perl", "text/x-php", "application/x-php", "text/x-ruby", "text/x-tcl",
    "text/x-awk", "text/x-lua", "application/javascript", "text/javascript",
    "application/x-javascript", "text/vbscript", "text/x-vbscript", "application/hta",
    "application/x-powershell", "text/x-powershell",
})
ARCHIVE_TYPES = frozenset({
    "application/zip", "application/x-zip-compressed", "application/x-7z-compressed",
    "application/x-rar", "application/vnd.rar", "application/x-rar-compressed",
    "application/x-tar", "application/x-gtar", "application/gzip", "application/x-gzip",
    "application/x-bzip2", "application/x-xz", "application/zstd", "application/x-lzma",
    "application/x-lzip", "application/x-compress", "application/x-cpio", "application/x-arj",
    "application/x-lha", "application/x-lzh-compressed", "application/vnd.ms-cab-compressed",
    "application/x-ace-compressed", "application/x-iso9660-image", "application/java-archive",
    "application/x-archive", "application/x-stuffit", "application/x-xar",
})
# Office formats that carry macros by definition (the OOXML "macroEnabled" types); other Office
# documents belong to the family when they hold a VBA project (see _has_macros).
MACRO_TYPES = frozenset({
    "application/vnd.ms-word.document.macroenabled.12",
    "application/vnd.ms-word.template.macroenabled.12",
    "application/vnd.ms-excel.sheet.macroenabled.12",
    "application/vnd.ms-excel.template.macroenabled.12",
    "application/vnd.ms-excel.addin.macroenabled.12",
    "application/vnd.ms-excel.sheet.binary.macroenabled.12",
    "application/vnd.ms-powerpoint.presentation.macroenabled.12",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.12",
    "application/vnd.ms-powerpoint.template.macroenabled.12",
    "application/vnd.ms-powerpoint.addin.macroenabled.12",
})
OFFICE_TYPES = frozenset({
    "application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
    "application/vnd.ms-office", "application/cdfv2", "application/x-ole-storage",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/zip", "application/octet-stream",
})
# filter_types may name a family instead of a MIME type: the family's types, whatever version of
# libmagic names them.
TYPE_FAMILIES = {"executable": EXECUTABLE_TYPES, "script": SCRIPT_TYPES,
                 "archive": ARCHIVE_TYPES, "office-macro": MACRO_TYPES}
# Declared types that say nothing about the content: an attachment sent as one of these never
# disagrees with what it holds.
GENERIC_TYPES = frozenset({"application/octet-stream", "application/x-download",
                           "application/download", "application/force-download",
                           "application/binary", "application/unknown", "binary/octet-stream"})


def type_matches(pattern: str, real: str, data: bytes = b"") -> bool:
    """Whether a filter_types entry (a family name or a MIME type pattern) matches a part whose
    libmagic type is ``real``."""
    family = TYPE_FAMILIES.get(pattern.lower())
    if family is None:
        return match_pattern(pattern, real)
    if real.lower() in family:
        return True
    return family is MACRO_TYPES and real.lower() in OFFICE_TYPES and _has_macros(data)


_VBA_OLE = "_VBA_PROJECT".encode("utf-16-le")


def _has_macros(data: bytes) -> bool:
    """An OLE2 document with a VBA project storage, or an OOXML one with vbaProject.bin."""
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        return _VBA_OLE in data
    if data[:4] == b"PK\x03\x04":
        return b"vbaProject.bin" in data
    return False


@dataclass(frozen=True)
class Filtered:
    leaf: int  # the message leaf (1-based, mimeedit.mail_leaves numbering); UNPLACED for none
    object: str  # the filtered object's path in container notation
    reason: str  # e.g. "name *.exe", "type application/x-dosexec", "size 31457280 > 10485760"


UNPLACED = 0  # the leaf of what lies outside the parsed parts


def parts_of(verdict: Verdict) -> dict[int, list[ObjectResult]]:
    """The message's direct children per leaf (``member``, the number mimeedit's rebuild
    uses): the part itself first, then the uuencoded files found in its text."""
    out: dict[int, list[ObjectResult]] = {}
    for child in verdict.root.children:
        if child.member is not None:
            out.setdefault(child.member, []).append(child)
    return out


def unplaced(verdict: Verdict) -> list[ObjectResult]:
    """The message's direct children that belong to no leaf (what the raw reading of a
    doubtful message found)."""
    return [c for c in verdict.root.children if c.member is None]


# The message handler names the children that are not a leaf itself "<leaf>.<n>:<file name>"
# (uuencoded files in a part's text) and "raw<n>:<file name>" (the raw reading).
_FOUND_IN_MESSAGE = re.compile(r"(?:\d+\.\d+|raw\d+):(.*)\Z", re.DOTALL)


def _named(children: list[ObjectResult], leaf=None) -> list[tuple[str, str]]:
    """(path, file name) of ``children`` — the message's direct children of one leaf, or
    those of none — and of everything found inside them. The part itself is named by its
    attachment's file name (``leaf.filename``); members by the last element of their path."""
    named = []
    for child in children:
        for res in child.walk():
            last = res.path.rsplit(PATH_SEP, 1)[-1]
            if res is not child:
                name = last
            elif leaf is not None and child is children[0]:
                name = leaf.filename
            else:
                found = _FOUND_IN_MESSAGE.match(last)
                name = found.group(1) if found else ""
            named.append((res.path, posixpath.basename(name)))
    return named


def find_filtered(policy, leaves, verdict: Verdict) -> list[Filtered]:
    """Every leaf (or member inside one) the group's content filter catches."""
    found: list[Filtered] = []
    parts = parts_of(verdict)
    root = verdict.root.path
    for leaf in leaves:
        leaf_path = f"{root}{PATH_SEP}{leaf.name}"
        reason = _by_name(policy, _named(parts.get(leaf.index, []), leaf))
        if reason:
            found.append(Filtered(leaf.index, reason[0], reason[1]))
            continue
        if policy.filter_max_size and leaf.size > policy.filter_max_size:
            found.append(Filtered(leaf.index, leaf_path,
                                  f"size {leaf.size} > {policy.filter_max_size}"))
            continue
        if not leaf.is_attachment or not (policy.filter_types or policy.filter_type_mismatch):
            continue
        data = leaf.decoded()
        real = precise_type(data)
        hit = next((p for p in policy.filter_types if type_matches(p, real, data)), None)
        if hit:
            found.append(Filtered(leaf.index, leaf_path, f"type {real}" + (
                f" ({hit})" if hit in TYPE_FAMILIES else "")))
        elif policy.filter_type_mismatch and _disguised(leaf, real):
            found.append(Filtered(leaf.index, leaf_path,
                                  f"type mismatch: declared {leaf.content_type or '?'}, "
                                  f"name {leaf.filename or '?'}, real {real}"))
    # Parts only the raw reading of a doubtful message found ("raw<k>:name"): filtered by name
    # as well, under leaf 0 (no part of the parsed structure to cut out).
    reason = _by_name(policy, _named(unplaced(verdict)))
    if reason:
        found.append(Filtered(UNPLACED, reason[0], reason[1]))
    return found


def _by_name(policy, named: list[tuple[str, str]]) -> tuple[str, str] | None:
    for path, name in named:
        if not name or any(match_pattern(p, name) for p in policy.filter_names_exclude):
            continue
        hit = next((p for p in policy.filter_names if match_pattern(p, name)), None)
        if hit:
            return path, f"name {hit}"
    return None


def _disguised(leaf, real: str) -> bool:
    if real not in EXECUTABLE_TYPES:
        return False
    by_name = mimetypes.guess_type(leaf.filename)[0] if leaf.filename else None
    claims = {t for t in (leaf.content_type, by_name) if t and t not in GENERIC_TYPES}
    # A program sent as a program is not disguised; one dressed as anything else is.
    return bool(claims) and not (claims & EXECUTABLE_TYPES)
