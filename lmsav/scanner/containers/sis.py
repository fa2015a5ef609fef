"""Extracts the files of an EPOC / Symbian OS (before v9) SIS installer package."""

from __future__ import annotations

import posixpath
import zlib
from typing import Iterator

from ..limits import CHUNK, Context
from ..objects import Child, ScanObject
from .base import Corrupted, Unsupported

EPOC_UID3 = 0x10000419
SIS9_UID1 = 0x10201A7A  # Symbian OS 9 packages: a different, field-tree format
_UID2_RELEASE6 = 0x10003A12  # EPOC release 6: compressed files and original lengths

# Header fields (little endian) after the four UIDs and the checksum (Thoukydides' SIS notes,
# read the same way by ClamAV and deark).
_OFF_LANGUAGES = 18
_OFF_FILES = 20
_OFF_OPTIONS = 36
_OFF_LANGUAGES_PTR = 48
_OFF_FILES_PTR = 52
_HEADER = 56  # enough to reach the file records

_OPT_UNICODE = 0x0001
_OPT_NO_COMPRESS = 0x0008

# File record types, and the file type that has no data (created at install time).
_REC_FILE, _REC_LANG_FILE, _REC_OPTIONS, _REC_IF, _REC_ELSEIF, _REC_ELSE, _REC_ENDIF = range(7)
_FILE_NULL = 4


class SisHandler:
    """Yields each file record's contents under its install path (drive letter dropped)."""

    types = frozenset({"sis"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = obj.data
        size = obj.size
        head = bytes(data[:_HEADER])
        if len(head) >= 16 and _u32(head, 0) == SIS9_UID1 and _u32(head, 8) != EPOC_UID3:
            raise Unsupported("sis9")
        if len(head) < 12 or _u32(head, 8) != EPOC_UID3:
            raise Corrupted("not an EPOC SIS package")
        if len(head) < _HEADER:
            raise Corrupted("truncated header")
        pkg = _Package(
            data, size,
            languages=_u16(head, _OFF_LANGUAGES),
            release6=_u32(head, 4) == _UID2_RELEASE6,
            options=_u16(head, _OFF_OPTIONS),
        )
        pkg.read_language_ids(_u32(head, _OFF_LANGUAGES_PTR))
        pos = _u32(head, _OFF_FILES_PTR)
        problems: list[str] = []
        for index in range(_u16(head, _OFF_FILES)):
            try:
                rectype = pkg.u32(pos)
                if rectype in (_REC_FILE, _REC_LANG_FILE):
                    record, pos = pkg.file_record(pos, rectype)
                    yield from pkg.extract(record, index, ctx, problems)
                elif rectype in (_REC_IF, _REC_ELSEIF):
                    pos += 8 + pkg.u32(pos + 4)  # the condition's expression
                elif rectype in (_REC_ELSE, _REC_ENDIF):
                    pos += 4
                elif rectype == _REC_OPTIONS:
                    # option names (a length and a pointer per language), then 128 selection bits
                    pos += 8 + pkg.u32(pos + 4) * pkg.languages * 8 + 16
                else:
                    raise _Damaged(f"unknown file record type {rectype}")
            except _Damaged as err:
                problems.append(str(err))
                break
        if problems:
            raise Corrupted("; ".join(dict.fromkeys(problems)))


class _Damaged(Exception):
    pass


class _Record:
    __slots__ = ("file_type", "name", "forks")

    def __init__(self, file_type: int, name: str, forks: list[tuple[int, int, int]]):
        self.file_type = file_type
        self.name = name
        self.forks = forks  # (language index, offset, stored length)


class _Package:
    def __init__(self, data, size: int, languages: int, release6: bool, options: int):
        self.data = data
        self.size = size
        self.languages = max(languages, 1)
        self.release6 = release6
        self.compressed = release6 and not options & _OPT_NO_COMPRESS
        self.unicode = bool(options & _OPT_UNICODE)
        self.language_ids: list[int] = []

    def u32(self, pos: int) -> int:
        if pos < 0 or pos + 4 > self.size:
            raise _Damaged("truncated file records")
        return int.from_bytes(bytes(self.data[pos:pos + 4]), "little")

    def read_language_ids(self, pos: int) -> None:
        raw = bytes(self.data[pos:pos + 2 * self.languages]) if pos else b""
        self.language_ids = [_u16(raw, i) for i in range(0, len(raw) - 1, 2)]

    def file_record(self, pos: int, rectype: int) -> tuple[_Record, int]:
        forks = self.languages if rectype == _REC_LANG_FILE else 1
        words = 6 + 2 * forks + (forks + 2 if self.release6 else 0)
        if pos + 4 + 4 * words > self.size:
            raise _Damaged("truncated file records")
        field = [self.u32(pos + 4 + 4 * i) for i in range(words)]
        file_type, _details, src_len, src_ptr, dst_len, dst_ptr = field[:6]
        lengths = field[6:6 + forks]
        offsets = field[6 + forks:6 + 2 * forks]
        name = self._string(dst_ptr, dst_len) or posixpath.basename(self._string(src_ptr, src_len))
        record = _Record(file_type, name, list(zip(range(forks), offsets, lengths)))
        return record, pos + 4 + 4 * words

    def extract(self, record: _Record, index: int, ctx: Context,
                problems: list[str]) -> Iterator[Child]:
        if record.file_type == _FILE_NULL:
            return
        name = record.name or f"file{index + 1}"
        for language, offset, length in record.forks:
            if not length:
                continue
            fork_name = name if len(record.forks) == 1 else f"{name}@{self._language(language)}"
            if offset + length > self.size:
                problems.append(f"{fork_name}: data outside the package")
                continue
            if not self.compressed:
                yield ctx.member(fork_name, _slices(self.data, offset, length),
                                 declared_size=length)
                continue
            inflater = _Inflater(self.data, offset, length)
            child = ctx.member(fork_name, inflater.blocks(), packed_size=length)
            if inflater.error is None or inflater.produced:
                yield child  # a detection in the readable part still counts
            if inflater.error is not None:
                problems.append(f"{fork_name}: {inflater.error}")

    def _language(self, index: int) -> str:
        if index < len(self.language_ids):
            return f"lang{self.language_ids[index]}"
        return f"lang#{index}"

    def _string(self, pos: int, length: int) -> str:
        if not length or pos + length > self.size:
            return ""
        raw = bytes(self.data[pos:pos + min(length, 2048)])
        text = raw.decode("utf-16-le" if self.unicode else "cp1252", "replace")
        return _install_path(text)


def _install_path(text: str) -> str:
    """``!:\\system\\apps\\x.app`` → ``system/apps/x.app``: a readable path, never a way out."""
    text = text.replace("\x00", "").replace("\\", "/")
    if len(text) >= 2 and text[1] == ":":
        text = text[2:]
    parts = [p for p in text.split("/") if p not in ("", ".", "..")]
    return "/".join(parts)


def _slices(data, start: int, length: int) -> Iterator[bytes]:
    for at in range(start, start + length, CHUNK):
        yield bytes(data[at:min(at + CHUNK, start + length)])


class _Inflater:
    """Streams one zlib-compressed file; a damaged or cut stream ends the data and is kept."""

    def __init__(self, data, start: int, length: int):
        self._data = data
        self._start = start
        self._length = length
        self.error: str | None = None
        self.produced = 0

    def blocks(self) -> Iterator[bytes]:
        inflater = zlib.decompressobj()
        try:
            for chunk in _slices(self._data, self._start, self._length):
                while chunk and not inflater.eof:  # bounded output per call: bombs meet limits
                    out = inflater.decompress(chunk, CHUNK)
                    chunk = inflater.unconsumed_tail
                    if out:
                        self.produced += len(out)
                        yield out
                if inflater.eof:
                    break
        except zlib.error as err:
            self.error = f"zlib: {err}"
            return
        if not inflater.eof:
            self.error = "truncated compressed file"


def _u32(raw: bytes, pos: int) -> int:
    return int.from_bytes(raw[pos:pos + 4], "little")


def _u16(raw: bytes, pos: int) -> int:
    return int.from_bytes(raw[pos:pos + 2], "little")
