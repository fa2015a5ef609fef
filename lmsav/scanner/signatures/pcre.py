"""PCRE subsignatures of .ldb signatures (``[Offset:]Trigger/Regex/[Flags]``), run as in ClamAV.

The regexes run on the system's PCRE2 library (libpcre2-8, the one clamscan itself links),
called through ctypes with ClamAV's settings: no JIT, match limit 100000, depth limit 2000,
compile options from the flags, ANCHORED when an offset is given without a shift and without
``r``. Python's ``re`` and the PyPI binding were set aside because they differ from ClamAV on
patterns real signatures use (``\\x{..}``, ``(?<name>…)``, ``$`` rules, UNGREEDY, the limits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass

from . import logical_expr

# PCRE2 option bits (pcre2.h)
CASELESS, DOLLAR_ENDONLY, DOTALL, EXTENDED = 0x8, 0x10, 0x20, 0x80
MULTILINE, UNGREEDY, ANCHORED = 0x400, 0x40000, 0x80000000
_COMPILE_FLAGS = {"i": CASELESS, "s": DOTALL, "m": MULTILINE, "x": EXTENDED, "A": ANCHORED,
                  "E": DOLLAR_ENDONLY, "U": UNGREEDY}
GLOBAL, ROLLING, ENCOMPASS = 1, 2, 4
_MATCHER_FLAGS = {"g": GLOBAL, "r": ROLLING, "e": ENCOMPASS}

MATCH_LIMIT = 100000  # ClamAV's defaults (--pcre-match-limit, --pcre-recmatch-limit)
DEPTH_LIMIT = 2000
MAX_FILESIZE = 100 * 1024 * 1024  # --pcre-max-filesize: larger files run no regex at all

_ERROR_NOMATCH = -1


class PcreError(ValueError):
    """Not a PCRE subsignature ClamAV accepts."""


@dataclass(frozen=True, slots=True)
class PcreSub:
    trigger: list  # logical_expr tree over earlier subsignatures
    pattern: bytes
    options: int  # PCRE2 compile options
    flags: int  # GLOBAL | ROLLING | ENCOMPASS
    offset: str  # ClamAV offset text ("*" when none)

    def to_row(self) -> list:
        return [self.trigger, self.pattern.decode("latin-1"), self.options, self.flags, self.offset]

    @classmethod
    def from_row(cls, row) -> PcreSub:
        return cls(row[0], row[1].encode("latin-1"), row[2], row[3], row[4])


def split(text: str) -> tuple[str, str, str, str]:
    """(offset, trigger, regex, flags) of a subsignature ClamAV reads as a PCRE one.

    ``:`` separates an offset only outside the regex; the regex runs from the first ``/`` to
    the last one, so ``/`` inside it needs no escape.
    """
    tokens = _tokenize(text)
    offset, sig = (tokens[0], tokens[1]) if len(tokens) == 2 else ("*", tokens[0])
    start, end = sig.find("/"), sig.rfind("/")
    if start == end:
        raise PcreError("mismatched '/' delimiters")
    if text.startswith("/"):
        raise PcreError("a PCRE subsignature needs a logical trigger before the regex")
    return offset, sig[:start], sig[start + 1:end], sig[end + 1:]


def _tokenize(text: str) -> list[str]:
    """Split at ':' outside /regex/ (an unescaped '/' opens or closes it), at most 5 tokens."""
    tokens, current, inside = [], [], False
    for i, ch in enumerate(text):
        if ch == ":" and not inside:
            tokens.append("".join(current))
            current = []
            if len(tokens) == 4:
                # ClamAV keeps 5 tokens and drops the rest; only 1 or 2 are meaningful.
                current = list(text[i + 1:].split(":")[0])
                break
            continue
        if ch == "/" and i > 0 and text[i - 1] != "\\":
            inside = not inside
        current.append(ch)
    tokens.append("".join(current))
    return tokens


def parse(text: str, index: int) -> PcreSub:
    """Parse subsignature number ``index``; its trigger may only name earlier subsignatures."""
    offset, trigger_text, regex, flags_text = split(text)
    if not trigger_text or not regex:
        raise PcreError("trigger and regex must not be empty")
    try:
        trigger = logical_expr.parse(trigger_text)
    except logical_expr.ExprError as err:
        raise PcreError(f"bad trigger {trigger_text!r}: {err}") from None
    highest = logical_expr.max_id(trigger)
    if highest >= index:
        what = "itself" if highest == index else f"a later subsignature ({highest})"
        raise PcreError(f"the trigger of subsignature {index} refers to {what}")
    options = flags = 0
    for ch in flags_text:
        if ch in _COMPILE_FLAGS:
            options |= _COMPILE_FLAGS[ch]
        elif ch in _MATCHER_FLAGS:
            flags |= _MATCHER_FLAGS[ch]
        else:
            raise PcreError(f"unknown PCRE flag {ch!r}")
    pattern = regex.encode("latin-1", errors="replace")
    compile_pattern(pattern, options)  # a regex PCRE2 refuses makes ClamAV refuse the database
    return PcreSub(trigger, pattern, options, flags, offset)


# -- the library -------------------------------------------------------------------------------

class _Library:
    """libpcre2-8 through ctypes, loaded once per process on first use."""

    def __init__(self):
        name = ctypes.util.find_library("pcre2-8") or "libpcre2-8.so.0"
        lib = ctypes.CDLL(name)
        p, sz, u32, i32 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_int
        self._sig(lib.pcre2_compile_8, p, [ctypes.c_char_p, sz, u32, ctypes.POINTER(i32),
                                           ctypes.POINTER(sz), p])
        self._sig(lib.pcre2_get_error_message_8, i32, [i32, ctypes.c_char_p, sz])
        self._sig(lib.pcre2_match_data_create_from_pattern_8, p, [p, p])
        self._sig(lib.pcre2_match_8, i32, [p, ctypes.c_char_p, sz, sz, u32, p, p])
        self._sig(lib.pcre2_get_ovector_pointer_8, ctypes.POINTER(sz), [p])
        self._sig(lib.pcre2_match_context_create_8, p, [p])
        self._sig(lib.pcre2_set_match_limit_8, i32, [p, u32])
        self._sig(lib.pcre2_set_depth_limit_8, i32, [p, u32])
        self._sig(lib.pcre2_code_free_8, None, [p])
        self._sig(lib.pcre2_match_data_free_8, None, [p])
        self.lib = lib
        self.context = lib.pcre2_match_context_create_8(None)
        lib.pcre2_set_match_limit_8(self.context, MATCH_LIMIT)
        lib.pcre2_set_depth_limit_8(self.context, DEPTH_LIMIT)

    @staticmethod
    def _sig(fn, restype, argtypes):
        fn.restype, fn.argtypes = restype, argtypes


_lib: _Library | None = None
_lib_lock = threading.Lock()
_lib_error = ""


def library() -> _Library | None:
    """The loaded library, or None (with ``unavailable()`` saying why) when it is missing."""
    global _lib, _lib_error
    with _lib_lock:
        if _lib is None and not _lib_error:
            try:
                _lib = _Library()
            except (OSError, AttributeError) as err:
                _lib_error = f"libpcre2-8 cannot be loaded: {err}"
        return _lib


def unavailable() -> str:
    library()
    return _lib_error


class Regex:
    """One compiled PCRE2 pattern with its match data; freed with the object."""

    def __init__(self, lib: _Library, code):
        self._lib = lib
        self._code = code
        self._data = lib.lib.pcre2_match_data_create_from_pattern_8(code, None)

    def search(self, subject: bytes, start: int, anchored: bool) -> tuple[int, int] | None:
        """(match start, match end) in ``subject`` from ``start``, or None (also on a limit)."""
        rc = self._lib.lib.pcre2_match_8(self._code, subject, len(subject), start,
                                         ANCHORED if anchored else 0, self._data,
                                         self._lib.context)
        if rc <= 0:
            return None  # no match, match or depth limit reached, or another error
        ovector = self._lib.lib.pcre2_get_ovector_pointer_8(self._data)
        return ovector[0], ovector[1]

    def __del__(self):
        try:
            self._lib.lib.pcre2_match_data_free_8(self._data)
            self._lib.lib.pcre2_code_free_8(self._code)
        except Exception:  # interpreter shutdown
            pass


def compile_pattern(pattern: bytes, options: int) -> Regex | None:
    """Compile with PCRE2; PcreError on a pattern it refuses, None if the library is missing."""
    lib = library()
    if lib is None:
        return None
    code_err, where = ctypes.c_int(), ctypes.c_size_t()
    code = lib.lib.pcre2_compile_8(pattern, len(pattern), options, ctypes.byref(code_err),
                                   ctypes.byref(where), None)
    if not code:
        buf = ctypes.create_string_buffer(256)
        lib.lib.pcre2_get_error_message_8(code_err.value, buf, len(buf))
        raise PcreError(f"PCRE2 cannot compile it at offset {where.value}: "
                        f"{buf.value.decode(errors='replace')}")
    return Regex(lib, code)


def run(regex: Regex, sub: PcreSub, data, size: int, window: tuple[int, int] | None,
        any_offset: bool) -> list[int]:
    """Start offsets of the matches ClamAV counts, in order.

    ``window`` is (offset, shift) from the subsignature's offset; ``any_offset`` for ``*``.
    """
    if size > MAX_FILESIZE or (window is None and not any_offset):
        return []
    base, shift = (0, 0) if any_offset else window
    anchored = not sub.flags & ROLLING and not shift and not any_offset
    if base >= size:
        return []
    if sub.flags & ENCOMPASS and shift:
        length = min(shift, size - base)
    else:
        length = size - base
    subject = bytes(data[base:base + length])
    found, start = [], 0
    while True:
        hit = regex.search(subject, start, anchored)
        if hit is None:
            break
        if not sub.flags & ENCOMPASS and shift and hit[0] > shift:
            break  # past the allowed shift
        found.append(base + hit[0])
        if not sub.flags & GLOBAL or hit[1] >= length:
            break
        if hit[0] == hit[1]:
            break  # ClamAV would find this empty match again and again until its time limit
        start = hit[1]
    return found


__all__ = ["PcreError", "PcreSub", "Regex", "compile_pattern", "parse", "run", "split",
           "unavailable"]
