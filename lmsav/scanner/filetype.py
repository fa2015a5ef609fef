"""Fast file type sniffing by magic numbers; libmagic only when a precise type is asked for.

``sniff`` answers every type the engine dispatches on (containers) or a signature targets (PE,
ELF, mail, PDF …) from a few bytes at fixed offsets. It costs a handful of slice compares per
file, which is why the hot path never calls libmagic.

Text or data of no known type may carry an archive after other bytes (junk or text put in front
of a zip to hide it, a self-extractor's stub): that file is typed as the archive, found the way
ClamAV finds one — a zip by the end-of-central-directory record at its tail, the others by their
signature, checked against the header's own CRC or fields, within the first EMBEDDED_WINDOW
bytes. ``locate`` also says where the archive starts.
"""

from __future__ import annotations

import os
import re
import struct
import zlib

# (offset, magic, type), checked in order; the first match wins.
_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"PK\x03\x04", "zip"),
    (0, b"PK\x05\x06", "zip"),  # empty zip
    (0, b"PK\x07\x08", "zip"),  # spanned marker
    (0, b"7z\xbc\xaf\x27\x1c", "7z"),
    (0, b"Rar!\x1a\x07", "rar"),
    (0, b"MSCF\x00\x00\x00\x00", "cab"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"BZh", "bzip2"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
    (0, b"!<arch>\n", "ar"),
    (0, b"070701", "cpio"),
    (0, b"070702", "cpio"),
    (0, b"070707", "cpio"),
    (0, b"\xc7\x71", "cpio"),  # binary cpio, little endian
    (0, b"\x71\xc7", "cpio"),  # binary cpio, big endian
    (0, b"\x7fELF", "elf"),
    (0, b"%PDF-", "pdf"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
    (0, b"\xfe\xed\xfa\xce", "macho"),
    (0, b"\xfe\xed\xfa\xcf", "macho"),
    (0, b"\xce\xfa\xed\xfe", "macho"),
    (0, b"\xcf\xfa\xed\xfe", "macho"),
    (0, b"\xca\xfe\xba\xbe", "macho"),  # universal binary (also Java class; both are binaries)
    (0, b"ITSF\x03\x00\x00\x00", "chm"),
    (0, b"SZDD\x88\xf0\x27\x33", "szdd"),
    (0, b"KWAJ\x88\xf0\x27\xd1", "szdd"),  # the same family's later variant
    (0, b"\x1f\x9d", "compress"),  # Unix .Z
    (0, b"\xed\xab\xee\xdb", "rpm"),
    (0, b"\x78\x9f\x3e\x22", "tnef"),
    (0, b"{\\rtf", "rtf"),
    (0, b"\x7a\x1a\x20\x10", "sis"),  # Symbian 9 installer (UID1 0x10201A7A)
    (8, b"\x19\x04\x00\x10", "sis"),  # EPOC installer: UID3 0x10000419
    (0, b"\xe4\x52\x5c\x7b\x8c\xd8\xa7\x4d\xae\xb1\x53\x78\xd0\x29\x96\xd3", "onenote"),
    # Payloads the executable handler cuts out of a setup program, each from its first byte:
    (0, b"\xa3\x48\x4b\xbe\x98\x6c\x4a\xa9\x99\x4c\x53\x0a\x86\xd6\x48\x7dAU3!EA0", "autoit"),
    (0, b"InstallShield\x00", "installshield"),
    (4, b"\xef\xbe\xad\xdeNullsoftInst", "nsis"),  # after the first header's flags word
    (257, b"ustar", "tar"),
    (32769, b"CD001", "iso9660"),
    (34817, b"CD001", "iso9660"),
)

# Header names that, at the very start of a file, say "this is an RFC 822 message".
_MAIL_HEADERS = (
    b"received:", b"return-path:", b"from:", b"to:", b"subject:", b"date:", b"message-id:",
    b"mime-version:", b"delivered-to:", b"x-", b"reply-to:", b"content-type:", b"dkim-signature:",
    b"authentication-results:", b"arc-", b"cc:", b"sender:", b"x-original-to:",
)
_HEADER_LINE = re.compile(rb"^[!-9;-~]+:[ \t]?[^\r\n]*\r?$")
_MBOX_FROM = re.compile(rb"^From \S+ ")
_HTML = re.compile(rb"^\s*(<!doctype html|<html|<head|<body|<script|<iframe)", re.IGNORECASE)
# ClamAV's HTML markers (its built-in "HTML data" file types), in the cases it spells them,
# anywhere in the first HTML_WINDOW bytes of text or data: a page need not start with a tag.
# An anchor counts when an href follows it.
HTML_WINDOW = 1024
_HTML_TAG = re.compile(
    rb"<(?:HEAD>|HTML>|Head>|Html>|head>|html>|IFRAME|iframe|IMG|Img|img|OBJECT|Object|object"
    rb"|SCRIPT|Script|script|TABLE|table)")
_ANCHOR = re.compile(rb"<[aA] ")
_HREF = re.compile(rb"[hH][rR](?:EF|ef)")
_ASP = b"<%@ LANGUAGE ="


def _is_pe(head: bytes) -> bool:
    if len(head) < 0x40 or head[:2] != b"MZ":
        return False
    e_lfanew = int.from_bytes(head[0x3C:0x40], "little")
    return head[e_lfanew:e_lfanew + 4] == b"PE\x00\x00" if e_lfanew + 4 <= len(head) else False


def _is_mail(head: bytes) -> bool:
    lower = head[:64].lower()
    if not lower.startswith(_MAIL_HEADERS):
        return False
    # Need a couple of well-formed header lines, not just a text file starting with "To:".
    lines = head[:2048].split(b"\n", 4)[:4]
    good = 0
    for line in lines:
        if _HEADER_LINE.match(line) or line[:1] in (b" ", b"\t"):
            good += 1
        else:
            break
    return good >= 2


# Magics at offset 0 indexed by their first byte, so a file costs one dict lookup and a compare
# or two instead of a walk through the whole table; the few at other offsets are checked after.
_BY_FIRST_BYTE: dict[int, list[tuple[bytes, str]]] = {}
for _off, _magic, _type in _MAGICS:
    if _off == 0:
        _BY_FIRST_BYTE.setdefault(_magic[0], []).append((_magic, _type))
_AT_OFFSET = tuple(m for m in _MAGICS if m[0] != 0)


def sniff(data, size: int | None = None) -> str:
    """Return the engine's type name for ``data`` (bytes or mmap)."""
    return locate(data, size)[0]


def locate(data, size: int | None = None) -> tuple[str, int]:
    """The engine's type for ``data`` and where that content starts: 0, except for an archive
    found after other bytes, which handlers read from that offset."""
    ftype = _sniff_start(data)
    if ftype in _MAY_EMBED:
        found = embedded_archive(data, len(data) if size is None else size)
        if found is not None:
            return found
    return ftype, 0


def _sniff_start(data) -> str:
    """The type the first bytes give."""
    if data[:1]:
        for magic, ftype in _BY_FIRST_BYTE.get(data[0], ()):
            if data[:len(magic)] == magic:
                return ftype
    for offset, magic, ftype in _AT_OFFSET:
        if data[offset:offset + len(magic)] == magic:
            return ftype
    head = bytes(data[:4096])
    if head[:2] == b"\x60\xea" and 0 < int.from_bytes(head[2:4], "little") <= 2600:
        return "arj"  # main header of at most 2600 bytes, as the format caps it
    if head[2:4] in (b"-l", ) and head[4:5] in (b"h", b"z") and head[6:7] == b"-":
        return "lha"  # "-lh5-" style method id at offset 2
    if head[:2] == b"MZ":
        return "pe" if _is_pe(head) else "msdos"
    if head[:5] == b"From " and _MBOX_FROM.match(head):
        return "mbox"
    if _is_mail(head):
        return "mail"
    if head[:1] == b"\x5d" and head[1:5] in (b"\x00\x00\x80\x00", b"\x00\x00\x01\x00") :
        return "lzma"  # legacy .lzma (LZMA-alone) with the usual properties byte
    if _is_powerpoint_stream(head):
        return "powerpoint"
    if b"(This file must be converted with BinHex" in head[:1024]:
        return "binhex"
    if _HTML.match(head) or _has_html_marker(head):
        return "html"
    if head and not _looks_binary(head):
        return "text"
    return "binary"


def _has_html_marker(head: bytes) -> bool:
    window = head[:HTML_WINDOW]
    if b"<" not in window:
        return False
    if _HTML_TAG.search(window) is not None or window.startswith(_ASP):
        return True
    anchor = _ANCHOR.search(window)
    if anchor is None:
        return False
    # "href" found in lower case first: a search led by a character class is slow.
    lower = window.lower()
    at = lower.find(b"href", anchor.end())
    while at >= 0:
        if _HREF.match(window, at):
            return True
        at = lower.find(b"href", at + 1)
    return False


# The records a "PowerPoint Document" stream starts with ([MS-PPT] 2.13.24 record types) and
# the record version each has (0xF: a container): the document, slides, notes, masters,
# handouts, an OLE object storage, the edit and persist-directory atoms.
_PPT_FIRST_RECORDS = {
    0x03E8: 0xF, 0x03EE: 0xF, 0x03F0: 0xF, 0x03F8: 0xF, 0x0FC9: 0xF,
    0x1011: 0x0, 0x0FF5: 0x0, 0x1772: 0x0,
}


def _is_powerpoint_stream(head: bytes) -> bool:
    if len(head) < 8:
        return False
    ver_instance, rec_type = struct.unpack_from("<HH", head)
    return _PPT_FIRST_RECORDS.get(rec_type) == ver_instance & 0xF


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head[:1024]


# -- archives after other bytes ----------------------------------------------------------------

# How far into a file an archive is looked for by its signature. ClamAV looks through the whole
# file; this bound keeps the cost of every text and data file small.
EMBEDDED_WINDOW = 16 << 20

# Types that say nothing of what follows their first bytes; a known format keeps its type.
_MAY_EMBED = frozenset({"text", "binary", "html"})

_EOCD = b"PK\x05\x06"
_EOCD_SIZE = 22
_EOCD64_LOCATOR = b"PK\x06\x07"
_ZIP_CENTRAL = b"PK\x01\x02"
_ZIP_LOCAL = b"PK\x03\x04"
# Compression methods of the zip specification (APPNOTE 4.4.5), for telling a local header
# from four bytes that merely look like one.
_ZIP_METHODS = frozenset({0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 12, 14, 18, 19, 93, 94, 95, 96, 97,
                          98, 99})
_ZIP_DATA_DESCRIPTOR = 0x08
_ARJ_MAIN_HEADER = 2
_ARJ_MAX_HEADER = 2600


def embedded_archive(data, size: int) -> tuple[str, int] | None:
    """(type, offset) of an archive that follows other bytes, or None."""
    start = _zip_by_directory(data, size)
    if start is not None:
        return "zip", start
    end = min(size, EMBEDDED_WINDOW)
    if end < 4:
        return None
    search = _search()
    state = _Search(data, size)
    with memoryview(data) as whole, whole[:end] as window:
        try:
            search.db.scan(window, match_event_handler=_candidate, context=state,
                           scratch=search.scratch)
        except search.stopped:
            pass  # the callback ended the scan: found, or enough candidates checked
    return state.found


# At most this many signature matches are checked in one file: a file made of little else
# than archive signatures costs a bounded time (and its real archive, if any, is not found).
_MAX_CANDIDATES = 4096


class _Search:
    __slots__ = ("data", "found", "seen", "size")

    def __init__(self, data, size: int):
        self.data, self.size, self.seen = data, size, 0
        self.found: tuple[str, int] | None = None


def _candidate(sig_id: int, _start: int, end: int, _flags: int, state: _Search) -> bool | None:
    length, ftype, valid = _SIGNATURES[sig_id][1:]
    at = end - length
    if at == 0:
        return None  # the first bytes were already not that type
    if valid(state.data, at, state.size):
        state.found = ftype, at
        return True  # matches come in the order they end; archives never overlap
    state.seen += 1
    return True if state.seen >= _MAX_CANDIDATES else None


class _Signatures:
    """The signatures compiled into one Hyperscan database (on first use), with scratch space
    for this process. Hyperscan reads a megabyte in about a hundred microseconds, where five
    bytes.find calls took a millisecond."""

    def __init__(self):
        import hyperscan  # the scanning processes have it loaded already

        self.hyperscan = hyperscan
        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.db.compile(
            expressions=[pattern for pattern, *_ in _SIGNATURES],
            ids=list(range(len(_SIGNATURES))), elements=len(_SIGNATURES),
            flags=[hyperscan.HS_FLAG_DOTALL] * len(_SIGNATURES),
        )
        self.stopped = hyperscan.ScanTerminated
        self.scratch = hyperscan.Scratch(self.db)
        self.pid = os.getpid()

    def for_this_process(self) -> _Signatures:
        if self.pid != os.getpid():
            # Scratch space is per process: a forked child must not share its parent's.
            self.scratch = self.hyperscan.Scratch(self.db)
            self.pid = os.getpid()
        return self


_signatures: _Signatures | None = None


def _search() -> _Signatures:
    global _signatures
    if _signatures is None:
        _signatures = _Signatures()
    return _signatures.for_this_process()


def _zip_by_directory(data, size: int) -> int | None:
    """Where a zip starts whose end-of-central-directory record ends the file, or None.

    0 when the start cannot be told from the record (zip64, offsets counted from the start of
    the file as some self-extractors write them): zip readers then find the members themselves.
    """
    if size < _EOCD_SIZE:
        return None
    floor = max(0, size - _EOCD_SIZE - 0xFFFF)  # the record, and a comment of at most 64 KiB
    # Only where the whole 22-byte record fits: the signature alone may sit in the last bytes.
    at = data.rfind(_EOCD, floor, len(data) - _EOCD_SIZE + len(_EOCD))
    while at >= 0:
        cd_size, cd_offset, comment = struct.unpack_from("<IIH", data, at + 12)
        if at + _EOCD_SIZE + comment == size:
            if cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
                return 0 if at >= 20 and data[at - 20:at - 16] == _EOCD64_LOCATOR else None
            directory = at - cd_size
            if cd_size == 0 or directory < 0 or data[directory:directory + 4] != _ZIP_CENTRAL:
                return None
            start = directory - cd_offset
            return start if start >= 0 and data[start:start + 4] == _ZIP_LOCAL else 0
        at = data.rfind(_EOCD, floor, at)  # the bytes found were part of a comment
    return None


def _zip_local_header(data, at: int, size: int) -> bool:
    """A local file header, followed (when it records its size) by the next zip record."""
    if at + 30 > size:
        return False
    needed, flags, method = struct.unpack_from("<HHH", data, at + 4)
    packed, = struct.unpack_from("<I", data, at + 18)
    name_len, extra_len = struct.unpack_from("<HH", data, at + 26)
    body = at + 30 + name_len + extra_len
    if (needed & 0xFF) > 63 or method not in _ZIP_METHODS or not name_len or body > size:
        return False
    if flags & _ZIP_DATA_DESCRIPTOR or packed == 0xFFFFFFFF:
        return True  # sizes follow the data (or live in the zip64 extra field)
    return data[body + packed:body + packed + 2] == b"PK"


def _7z_start_header(data, at: int, size: int) -> bool:
    if at + 32 > size or data[at + 6] != 0:  # major version 0
        return False
    crc, = struct.unpack_from("<I", data, at + 8)
    return zlib.crc32(data[at + 12:at + 32]) == crc


def _rar_main_header(data, at: int, size: int) -> bool:
    version = data[at + 6:at + 8]
    if version[:1] == b"\x00" and at + 20 <= size:  # RAR 1.5-4: CRC16 of the main header
        crc, kind, _flags, length = struct.unpack_from("<HBHH", data, at + 7)
        return kind == 0x73 and 13 <= length <= size - at - 7 and \
            zlib.crc32(data[at + 9:at + 7 + length]) & 0xFFFF == crc
    if version == b"\x01\x00" and at + 16 <= size:  # RAR 5: CRC32 of the first header
        crc, = struct.unpack_from("<I", data, at + 8)
        length, shift, pos = 0, 0, at + 12
        while pos < min(at + 15, size):  # the header size, a vint of at most 3 bytes
            byte = data[pos]
            length |= (byte & 0x7F) << shift
            shift += 7
            pos += 1
            if not byte & 0x80:
                return 0 < length and pos + length <= size and \
                    zlib.crc32(data[at + 12:pos + length]) == crc
        return False
    return False


def _cab_header(data, at: int, size: int) -> bool:
    if at + 36 > size:
        return False
    cabinet_size, = struct.unpack_from("<I", data, at + 8)
    return data[at + 24:at + 26] == b"\x03\x01" and cabinet_size >= 36  # version 1.3


def _arj_main_header(data, at: int, size: int) -> bool:
    if at + 12 > size:
        return False
    length, = struct.unpack_from("<H", data, at + 2)
    if not 30 <= length <= _ARJ_MAX_HEADER or at + 8 + length > size:
        return False
    if data[at + 10] != _ARJ_MAIN_HEADER:  # as ClamAV's ARJ-SFX type requires
        return False
    crc, = struct.unpack_from("<I", data, at + 4 + length)
    return zlib.crc32(data[at + 4:at + 4 + length]) == crc


# (Hyperscan pattern, its length, type, header check). ARJ's two-byte signature is narrowed as
# ClamAV's ARJ-SFX type narrows it: a main header (file type 2) of security version 0 to 2.
_SIGNATURES = (
    (rb"PK\x03\x04", 4, "zip", _zip_local_header),
    (rb"7z\xbc\xaf\x27\x1c", 6, "7z", _7z_start_header),
    (rb"Rar!\x1a\x07", 6, "rar", _rar_main_header),
    (rb"MSCF\x00\x00\x00\x00", 8, "cab", _cab_header),
    (rb"\x60\xea.{7}[\x00-\x02]\x02", 11, "arj", _arj_main_header),
)


def precise_type(data) -> str:
    """libmagic's MIME type, for content filters that need more than the engine's sniff."""
    import magic  # imported on demand: not needed on the hot path

    return magic.from_buffer(bytes(data[:65536]), mime=True)
