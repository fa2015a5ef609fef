"""Content filtering of a message's attachments: by name, by real type, by size.

Runs after the anti-virus scan, on the message's leaves and on the names of members the engine
found inside them (so `report.zip//invoice.pdf.exe` is filtered by `*.exe` like a top-level
attachment). The result is, per leaf, the reasons it is filtered; the caller applies
``filtered_action`` to those leaves.
"""

from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass

from ..scanner.filetype import precise_type
from ..scanner.objects import PATH_SEP, Verdict
from .groups import match_pattern

# Real types that are programs. A part whose content is one of these while its declared type
# or its file name says something else is a disguised executable; other disagreements between
# libmagic and senders are too common to mean anything (text/plain vs text/x-c, zip vs docx …).
EXECUTABLE_TYPES = frozenset({
    "application/x-dosexec", "application/x-msdownload", "application/x-executable",
    "application/x-sharedlib", "application/x-pie-executable", "application/x-mach-binary",
    "application/vnd.microsoft.portable-executable", "application/x-elf",
})


@dataclass(frozen=True)
class Filtered:
    leaf: int  # the message leaf (1-based index, as in the child names "n:…")
    object: str  # the filtered object's path in container notation
    reason: str  # e.g. "name *.exe", "type application/x-dosexec", "size 31457280 > 10485760"


def member_names(verdict: Verdict) -> dict[int, list[tuple[str, str]]]:
    """Per leaf index, (object path, file name) of the leaf and every member found inside it."""
    out: dict[int, list[tuple[str, str]]] = {}
    root = verdict.root.path
    for res in verdict.walk():
        if not res.path.startswith(root + PATH_SEP):
            continue
        rel = res.path[len(root) + len(PATH_SEP):]
        first = rel.split(PATH_SEP, 1)[0]
        index = leaf_index(first)
        if index is None:
            continue
        name = rel.rsplit(PATH_SEP, 1)[-1]
        if PATH_SEP not in rel:
            name = name.split(":", 1)[1] if ":" in name else name
        out.setdefault(index, []).append((res.path, posixpath.basename(name)))
    return out


def leaf_index(child_name: str) -> int | None:
    """The leaf number of a mail child name: "2:a.zip" → 2, "3.1:x.exe" (uuencoded) → 3."""
    head = child_name.split(":", 1)[0]
    number = head.split(".", 1)[0]
    return int(number) if number.isdigit() and ":" in child_name else None


def find_filtered(policy, leaves, verdict: Verdict) -> list[Filtered]:
    """Every leaf (or member inside one) the group's content filter catches."""
    found: list[Filtered] = []
    names = member_names(verdict)
    root = verdict.root.path
    for leaf in leaves:
        leaf_path = f"{root}{PATH_SEP}{leaf.name}"
        reason = _by_name(policy, names.get(leaf.index, []))
        if reason:
            found.append(Filtered(leaf.index, reason[0], reason[1]))
            continue
        if policy.filter_max_size and leaf.size > policy.filter_max_size:
            found.append(Filtered(leaf.index, leaf_path,
                                  f"size {leaf.size} > {policy.filter_max_size}"))
            continue
        if not leaf.is_attachment or not (policy.filter_types or policy.filter_type_mismatch):
            continue
        real = precise_type(leaf.decoded())
        hit = next((p for p in policy.filter_types if match_pattern(p, real)), None)
        if hit:
            found.append(Filtered(leaf.index, leaf_path, f"type {real}"))
        elif policy.filter_type_mismatch and _disguised(leaf, real):
            found.append(Filtered(leaf.index, leaf_path,
                                  f"type mismatch: declared {leaf.content_type or '?'}, "
                                  f"name {leaf.filename or '?'}, real {real}"))
    # Parts only the raw reading of a doubtful message found ("raw<k>:name"): filtered by name
    # as well, under leaf 0 (no part of the parsed structure to cut out).
    reason = _by_name(policy, _unplaced_names(verdict))
    if reason:
        found.append(Filtered(UNPLACED, reason[0], reason[1]))
    return found


UNPLACED = 0  # the leaf of what lies outside the parsed parts


def _unplaced_names(verdict: Verdict) -> list[tuple[str, str]]:
    root = verdict.root.path
    out = []
    for res in verdict.walk():
        if not res.path.startswith(root + PATH_SEP):
            continue
        rel = res.path[len(root) + len(PATH_SEP):]
        first = rel.split(PATH_SEP, 1)[0]
        if leaf_index(first) is not None:
            continue
        name = rel.rsplit(PATH_SEP, 1)[-1]
        if PATH_SEP not in rel:
            name = name.split(":", 1)[1] if ":" in name else ""
        out.append((res.path, posixpath.basename(name)))
    return out


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
    claims = {t for t in (leaf.content_type, by_name) if t and t != "application/octet-stream"}
    # A program sent as a program is not disguised; one dressed as anything else is.
    return bool(claims) and not (claims & EXECUTABLE_TYPES)
