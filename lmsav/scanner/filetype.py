"""Fast file type sniffing by magic numbers; libmagic only when a precise type is asked for.

``sniff`` answers every type the engine dispatches on (containers) or a signature targets (PE,
ELF, mail, PDF …) from a few bytes at fixed offsets. It costs a handful of slice compares per
file, which is why the hot path never calls libmagic.
"""

from __future__ import annotations

import re

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
_HTML = re.compile(rb"^\s*(<!doctype html|<html|<head|<body|<script|<iframe)", re.I)


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
    if b"(This file must be converted with BinHex" in head[:1024]:
        return "binhex"
    if _HTML.match(head):
        return "html"
    if head and not _looks_binary(head):
        return "text"
    return "binary"


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head[:1024]


def precise_type(data) -> str:
    """libmagic's MIME type, for content filters that need more than the engine's sniff."""
    import magic  # imported on demand: not needed on the hot path

    return magic.from_buffer(bytes(data[:65536]), mime=True)
