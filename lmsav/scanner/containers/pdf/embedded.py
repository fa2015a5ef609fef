"""The names of a PDF's embedded files, read from their file specifications."""

from __future__ import annotations

import functools
import re

from .syntax import END, MAX_NESTING, ParseError, Parser, Ref, parse_at

_EF = re.compile(rb"/EF[ \t\r\n\f\x00]*<<")


def embedded_names(data: bytes, objects: dict, decrypt) -> dict[int, str]:
    """Object number of each /EmbeddedFile stream → the file name its file specification gives."""
    names: dict[int, str] = {}
    starts = sorted((body, num, gen) for num, (gen, body) in objects.items())
    for m in _EF.finditer(data):
        # The object that holds this /EF: the last object header before it.
        index = _last_before(starts, m.start())
        if index < 0:
            continue
        body, num, gen = starts[index]
        end = data.find(b"endobj", body)
        end = len(data) if end < 0 else end
        value = parse_at(data, body, end)
        strings = functools.partial(decrypt, num, gen) if decrypt is not None else None
        names.update(_filespecs(value, strings))
    return names


def _last_before(starts: list[tuple[int, int, int]], pos: int) -> int:
    lo, hi = 0, len(starts)
    while lo < hi:
        mid = (lo + hi) // 2
        if starts[mid][0] <= pos:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1


def names_in(content: bytes, strings) -> dict[int, str]:
    """File specifications among the objects of a decoded object stream."""
    if b"/EF" not in content:
        return {}
    names: dict[int, str] = {}
    parser = Parser(content, len(content))
    pos = 0
    for _ in range(10000):
        try:
            value, pos = parser.value(pos)
        except (ParseError, IndexError, ValueError, RecursionError):
            break
        if value is END:
            break
        names.update(_filespecs(value, strings))
    return names


def _filespecs(value, strings, depth: int = 0) -> dict[int, str]:
    found: dict[int, str] = {}
    if depth > MAX_NESTING:
        return found
    if isinstance(value, dict):
        ef = value.get("EF")
        if isinstance(ef, dict):
            name = _file_name(value.get("UF"), strings) or _file_name(value.get("F"), strings)
            for key in ("UF", "F"):
                ref = ef.get(key)
                if isinstance(ref, Ref) and name:
                    found[ref.num] = name
        children = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return found
    for child in children:
        if isinstance(child, (dict, list)):
            found.update(_filespecs(child, strings, depth + 1))
    return found


def _file_name(value, strings) -> str:
    if not isinstance(value, bytes):
        return ""
    if strings is not None:
        value = strings(value)
    if value.startswith(b"\xfe\xff"):
        text = value[2:].decode("utf-16-be", "replace")
    elif value.startswith(b"\xef\xbb\xbf"):
        text = value[3:].decode("utf-8", "replace")
    else:
        text = value.decode("latin-1")
    # A label, never a path: keep the last component, drop control characters.
    text = re.split(r"[\\/:]", text)[-1]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text[:255]
