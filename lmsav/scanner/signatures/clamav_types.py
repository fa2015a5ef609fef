"""ClamAV's file types: the CL_TYPE_* name of each sniffed type, and .ftm file-type magic.

Signatures that name a file type (a .cdb container type, an .ldb ``Container:`` or
``Intermediates:``) must see the type ClamAV would give the same file. Most of the time that
is one dict lookup from lmsav's sniffed type (``clamav_type``). Where the sniffed type does not
decide it (plain text or data, a zip that is an OOXML document, a cpio variant) or where the
database carries .ftm entries, ``FtmMatcher.classify`` types a buffer the way ClamAV does:

1. magic entries (.ftm kind 0) compared at fixed offsets within the first 1024 bytes, the
   entry loaded last first; with none matching, the bytes are ASCII or UTF-16 text or binary
   data (and a tar header checksum gives an old or POSIX tar);
2. for text or binary data only, body entries (kind 1, ClamAV hex patterns) searched in those
   bytes; the type ClamAV ranks highest wins, except that a self-extractor or executable
   match replaces what came before it and an "ignored" match ends the search;
3. a zip whose first members are ``word/``, ``xl/``, ``ppt/`` … is an OOXML document.

ClamAV's built-in table (below) applies when no loaded .ftm file has a kind-0 entry: a
database's own magic entries replace the built-in ones entirely, as in ClamAV.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from array import array
from dataclasses import dataclass

from .errors import SignatureError
from .hexpattern import Invalid, Unsupported, parse_hex
from .levels import skip_reason

# ClamAV's cli_file_t in declaration order (libclamav/clamav_types.h). The order is a priority:
# in body-pattern typing a later type replaces an earlier one. CL_TYPE_ANY is 0, the rest
# count up from 500.
TYPE_ORDER: tuple[str, ...] = tuple(
    f"CL_TYPE_{t}" for t in (
        "ANY", "TEXT_ASCII", "TEXT_UTF8", "TEXT_UTF16LE", "TEXT_UTF16BE", "BINARY_DATA",
        "ERROR", "MSEXE", "ELF", "MACHO", "MACHO_UNIBIN", "POSIX_TAR", "OLD_TAR", "CPIO_OLD",
        "CPIO_ODC", "CPIO_NEWC", "CPIO_CRC", "GZ", "ZIP", "BZ", "RAR", "ARJ", "MSSZDD",
        "MSOLE2", "MSCAB", "MSCHM", "SIS", "SCRENC", "GRAPHICS", "GIF", "PNG", "JPEG", "TIFF",
        "RIFF", "BINHEX", "TNEF", "CRYPTFF", "PDF", "UUENCODED", "SCRIPT", "HTML_UTF16", "RTF",
        "7Z", "SWF", "JAVA", "XAR", "XZ", "OOXML_WORD", "OOXML_PPT", "OOXML_XL", "INTERNAL",
        "HWP3", "OOXML_HWP", "PS", "EGG", "ONENOTE", "PYTHON_COMPILED", "LHA_LZH", "PART_ANY",
        "PART_HFSPLUS", "MBR", "HTML", "MAIL", "SFX", "ZIPSFX", "RARSFX", "7ZSFX", "CABSFX",
        "ARJSFX", "EGGSFX", "NULSFT", "AUTOIT", "ISHIELD_MSI", "ISO9660", "DMG", "GPT", "APM",
        "XDP", "XML_WORD", "XML_XL", "XML_HWP", "HWPOLE2", "MHTML", "LNK", "UDF", "ALZ",
        "OTHER", "IGNORED",
    )
)
RANK = {name: i for i, name in enumerate(TYPE_ORDER)}

# Names a signature may use: every type but the two ClamAV keeps internal.
KNOWN_TYPES = frozenset(TYPE_ORDER) - {"CL_TYPE_ERROR", "CL_TYPE_OTHER"}

ANY = "CL_TYPE_ANY"
BINARY = "CL_TYPE_BINARY_DATA"
TEXT_TYPES = ("CL_TYPE_TEXT_ASCII", "CL_TYPE_TEXT_UTF8", "CL_TYPE_TEXT_UTF16LE",
              "CL_TYPE_TEXT_UTF16BE", BINARY)
_SFX = frozenset({"CL_TYPE_ZIPSFX", "CL_TYPE_ARJSFX", "CL_TYPE_RARSFX", "CL_TYPE_EGGSFX",
                  "CL_TYPE_CABSFX", "CL_TYPE_7ZSFX"})
_SFX_RANK = RANK["CL_TYPE_SFX"]
_MSEXE = "CL_TYPE_MSEXE"
_IGNORED = "CL_TYPE_IGNORED"

# What ClamAV calls each type lmsav's sniffer (filetype.sniff) answers, for the usual file of
# that type. ClamAV has no type of its own for zstd, lzma, ar, rpm, Unix compress, KWAJ or
# Symbian 9 installers: it sees their bytes as binary data.
_SNIFFED: dict[str, str] = {
    "zip": "CL_TYPE_ZIP",
    "7z": "CL_TYPE_7Z",
    "rar": "CL_TYPE_RAR",
    "cab": "CL_TYPE_MSCAB",
    "gzip": "CL_TYPE_GZ",
    "bzip2": "CL_TYPE_BZ",
    "xz": "CL_TYPE_XZ",
    "zstd": BINARY,
    "lzma": BINARY,
    "ar": BINARY,
    "rpm": BINARY,
    "compress": BINARY,
    "cpio": "CL_TYPE_CPIO_NEWC",  # the usual variant; classify() tells the four apart
    "tar": "CL_TYPE_POSIX_TAR",
    "iso9660": "CL_TYPE_ISO9660",
    "arj": "CL_TYPE_ARJ",
    "lha": "CL_TYPE_LHA_LZH",
    "chm": "CL_TYPE_MSCHM",
    "szdd": "CL_TYPE_MSSZDD",
    "sis": "CL_TYPE_SIS",
    "tnef": "CL_TYPE_TNEF",
    "binhex": "CL_TYPE_BINHEX",
    "ole2": "CL_TYPE_MSOLE2",
    "rtf": "CL_TYPE_RTF",
    "pdf": "CL_TYPE_PDF",
    "pe": "CL_TYPE_MSEXE",
    "msdos": "CL_TYPE_MSEXE",
    "elf": "CL_TYPE_ELF",
    "macho": "CL_TYPE_MACHO",
    "mail": "CL_TYPE_MAIL",
    "onenote": "CL_TYPE_ONENOTE",
    "nsis": "CL_TYPE_NULSFT",
    "autoit": "CL_TYPE_AUTOIT",
    "installshield": "CL_TYPE_ISHIELD_MSI",
    "mbox": "CL_TYPE_MAIL",
    "html": "CL_TYPE_HTML",
    "text": "CL_TYPE_TEXT_ASCII",
    "binary": BINARY,
}


def clamav_type(lmsav_type: str) -> str:
    """ClamAV's type name for a sniffed type (binary data for a type ClamAV does not know)."""
    return _SNIFFED.get(lmsav_type, BINARY)


# Containers ClamAV finds by a scan through the file, not from its first bytes.
_FOUND_INSIDE = frozenset({"iso9660"})

_CPIO_MAGICS = ((b"070701", "CL_TYPE_CPIO_NEWC"), (b"070702", "CL_TYPE_CPIO_CRC"),
                (b"070707", "CL_TYPE_CPIO_ODC"))


def container_type(lmsav_type: str, data) -> str:
    """ClamAV's type for a container lmsav explodes, from a look at its first bytes where the
    sniffed type alone does not tell: an OOXML document among zips, the cpio variant, a mail
    ClamAV reads as MHTML (or not as mail at all). This is the type .cdb rules and
    ``Container:`` conditions name; it costs a dict lookup for most containers."""
    if lmsav_type == "zip":
        return _zip_type(data, bytes(data[:MAGIC_BUFFER]))
    if lmsav_type == "cpio":
        head = bytes(data[:6])
        return next((t for magic, t in _CPIO_MAGICS if head == magic), "CL_TYPE_CPIO_OLD")
    if lmsav_type in ("mail", "mbox"):
        return classify(data)
    return _SNIFFED.get(lmsav_type, BINARY)


# -- .ftm entries ------------------------------------------------------------------------------

MAGIC, BODY, PARTITION = 0, 1, 4  # the kinds ClamAV reads; others are skipped, as it does
MAGIC_BUFFER = 1024  # ClamAV types a file from this many leading bytes
_HEX_TEXT = re.compile(r"^(?:[0-9a-fA-F]{2})+$")


@dataclass(frozen=True, slots=True)
class FtmSig:
    """One .ftm line: ``kind:offset:magic:name:required type:detected type[:MinFL[:MaxFL]]``."""

    kind: int
    offset: str  # a number for kinds 0 and 4; a body offset (*, n, n,m …) for kind 1
    magic: str  # hex bytes (kinds 0, 4) or a ClamAV hex pattern (kind 1)
    name: str
    required: str  # the type the file must already have (kind 1); CL_TYPE_ANY for any
    detected: str
    source: str
    line: int
    # kind 1: Python bytes regexes of the pattern up to its last part, and of the last part
    # (ClamAV matches a pattern split at its gaps part by part; a match counts where its last
    # part is found).
    head: str = ""
    last: str = ""


def parse_ftm(text: str, source: str) -> tuple[list[FtmSig], list[str]]:
    """Parse .ftm lines. A line for another engine level or an unknown kind is skipped."""
    sigs, skipped = [], []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        if not 6 <= len(fields) <= 8:
            raise SignatureError(source, lineno, "expected MagicType:Offset:HexSig:Name:"
                                 "RequiredType:DetectedType[:MinFL[:MaxFL]]")
        kind_text, offset, magic, name, required, detected = fields[:6]
        levels = fields[6:]
        reason = skip_reason(levels, source, lineno)
        if reason:
            skipped.append(f"{source}:{lineno}: {name}: {reason}")
            continue
        for type_name in (required, detected):
            if type_name not in KNOWN_TYPES:
                raise SignatureError(source, lineno, f"unknown file type {type_name!r}")
        if not kind_text.isdigit():
            raise SignatureError(source, lineno, f"bad magic type {kind_text!r}: need a number")
        kind = int(kind_text)
        sig = FtmSig(kind, offset, magic, name, required, detected, source, lineno)
        if kind in (MAGIC, PARTITION):
            if not offset.isdigit() and offset != "":  # ClamAV reads an empty number as 0
                raise SignatureError(source, lineno, f"bad offset {offset!r}: need a number")
            if not _HEX_TEXT.match(magic):
                raise SignatureError(source, lineno, f"bad magic {magic!r}: need hex bytes")
        elif kind == BODY:
            head, last, reason = _body_regex(magic, offset, source, lineno)
            if reason:
                skipped.append(f"{source}:{lineno}: {name}: {reason}")
                continue
            sig = FtmSig(kind, offset, magic, name, required, detected, source, lineno, head,
                         last)
        else:
            skipped.append(f"{source}:{lineno}: {name}: magic type {kind} is not one ClamAV reads")
            continue
        sigs.append(sig)
    return sigs, skipped


_START_OFFSET = re.compile(r"^(\d+)(?:,(\d+))?$")


def _body_regex(hexsig: str, offset: str, source: str, lineno: int) -> tuple[str, str, str]:
    """(regex up to the last part, regex of the last part, reason it is unusable or "")."""
    if offset != "*" and not _START_OFFSET.match(offset):
        if re.match(r"^EOF-\d+(,\d+)?$|^(EP[+-]|S\d+[+-]|SL[+-]|SE\d+|VI$)", offset, re.IGNORECASE):
            # ClamAV types a file from its first bytes alone, where such offsets never resolve.
            return "", "", f"offset {offset!r} never applies when typing a file"
        raise SignatureError(source, lineno, f"bad offset {offset!r}")
    split = _last_part_at(hexsig)
    try:
        parse_hex(hexsig)  # the whole pattern must be valid (the .ndb pattern language)
        head = parse_hex(hexsig[:split])[0] if split else ""
        return head, parse_hex(hexsig[split:])[0], ""
    except Unsupported as err:
        return "", "", str(err)
    except Invalid as err:
        raise SignatureError(source, lineno, str(err)) from None


_SHORT_GAP = re.compile(r"\{(\d+)\}")


def _last_part_at(hexsig: str) -> int:
    """Where ClamAV's last part of a body pattern starts (0 for a one-part pattern).

    ClamAV first writes out leading ``{n}`` gaps under 128 as ``??`` bytes; once it meets any
    other ``{...}`` it splits the pattern at every ``{...}`` and ``*``; without one, at ``*``.
    """
    pos = 0
    while True:
        brace = hexsig.find("{", pos)
        if brace < 0:
            return hexsig.rfind("*") + 1
        short = _SHORT_GAP.match(hexsig, brace)
        if not (short and 0 < int(short[1]) < 128):
            break
        pos = short.end()
    cut = max(hexsig.rfind("*"), hexsig.rfind("}"))
    return cut + 1 if cut >= brace else 0


def compile_ftm(sigs: list[FtmSig]) -> dict[str, bytes]:
    """The entries in load order, one JSON row per line (a matcher counts them unparsed)."""
    lines = [json.dumps([s.kind, s.offset, s.magic if s.kind != BODY else [s.head, s.last],
                         s.name, s.required, s.detected,
                         _lead(s.magic) if s.kind == BODY else ""], separators=(",", ":"))
             + "\n" for s in sigs]
    return {"ftm.entries": "".join(lines).encode()} if lines else {}


def _lead(hexsig: str) -> str:
    """The plain bytes a body pattern starts with (hex): a cheap test before the regex."""
    run = re.match(r"(?:[0-9a-fA-F]{2})*", hexsig)[0]
    return run.lower()


class FtmMatcher:
    """Types buffers as ClamAV does under the loaded .ftm entries (plus the built-in table
    when they carry no magic entry). Cheap to build; the tables are made on first use."""

    def __init__(self, section=None):
        self._blob = bytes(section("ftm.entries")) if section is not None else b""
        self.count = self._blob.count(b"\n")
        self._tables = None

    def match(self, subject) -> list[tuple[str, str]]:
        return []  # file types name no threat

    def type_of(self, data, lmsav_type: str) -> str:
        """ClamAV's type for an object: the dict answer unless a loaded .ftm could change it."""
        if not self.count:
            return clamav_type(lmsav_type)
        return self.classify(data)

    def container_type(self, lmsav_type: str, data) -> str:
        """ClamAV's type for a container (see the module function of that name), typed in full
        when the database's .ftm entries could change it."""
        if not self.count or lmsav_type in _FOUND_INSIDE:
            return container_type(lmsav_type, data)
        return self.classify(data)

    def classify(self, data) -> str:
        """The type ClamAV gives a file whose content is ``data`` (bytes, mmap or memoryview)."""
        tables = self._tables or self._build()
        buf = bytes(data[:MAGIC_BUFFER])
        found = tables.magic_type(buf)
        if found is None:
            found = text_type(buf)
            if found == BINARY and len(buf) >= 512:
                found = _tar_type(buf) or found
        elif found == "CL_TYPE_ZIP":
            return _zip_type(data, buf)
        if found not in TEXT_TYPES:
            return found
        by_body = tables.body_type(buf, found)
        if by_body is not None and by_body not in _SFX:
            return by_body
        if len(buf) >= 2 and tables.body_type(_utf16_low_bytes(buf), TEXT_TYPES[0]) == \
                "CL_TYPE_HTML":
            return "CL_TYPE_HTML_UTF16"
        wide = _wide_text(buf)
        if wide and tables.body_type(wide, ANY) == "CL_TYPE_HTML":
            return "CL_TYPE_HTML"
        return found

    def _build(self) -> _Tables:
        rows = [json.loads(line) for line in self._blob.splitlines()]
        if not any(r[0] == MAGIC for r in rows):
            rows = rows + builtin_rows()
        self._tables = _Tables(rows)
        return self._tables


class _Tables:
    """Magic entries indexed by offset and first byte; body entries as compiled regexes."""

    def __init__(self, rows: list):
        # ClamAV puts each new magic entry at the head of its list: the last loaded wins.
        self.magic: dict[int, dict[int, list[tuple[int, bytes, str]]]] = {}
        order = 0
        for kind, offset, magic, _name, _required, detected, _lead_hex in reversed(rows):
            if kind != MAGIC:
                continue
            raw = bytes.fromhex(magic)
            if not raw:
                continue
            self.magic.setdefault(int(offset or 0), {}).setdefault(raw[0], []).append(
                (order, raw, detected))
            order += 1
        self.body = []
        for kind, offset, (head, last), _name, required, detected, lead_hex in (
                r for r in rows if r[0] == BODY):
            # One regex per pattern: the greedy lead-in puts the match as late as it goes, so
            # group 1 is where the last part is last found (with the start offset kept).
            found = _START_OFFSET.match(offset)
            lead_in = ".*" if offset == "*" else \
                f".{{{found[1]},{int(found[1]) + int(found[2] or 0)}}}"
            regex = f"{lead_in}(?:{head})({last})".encode("latin-1")
            self.body.append((re.compile(regex, re.DOTALL), required, detected,
                              bytes.fromhex(lead_hex)))

    def magic_type(self, buf: bytes) -> str | None:
        best = None
        for offset, by_byte in self.magic.items():
            if offset >= len(buf):
                continue
            for order, raw, detected in by_byte.get(buf[offset], ()):
                if (best is None or order < best[0]) and offset + len(raw) <= len(buf) and \
                        buf[offset:offset + len(raw)] == raw:
                    best = (order, detected)
                    break  # entries are in check order: the first one here is this offset's
        return best[1] if best else None

    def body_type(self, buf: bytes, current: str) -> str | None:
        """The type ClamAV's body-pattern pass settles on, or None when nothing matched.

        ClamAV takes matches in order of position: a match of higher rank replaces the type,
        a self-extractor or executable always does, an ignored type ends the search. So the
        outcome is the last such "replacing" match, raised to the highest-ranked type matched
        after it.
        """
        hits = []
        for n, (pattern, required, detected, lead) in enumerate(self.body):
            if lead not in buf or (required != ANY and required != current):
                continue
            found = pattern.match(buf)
            if found is None:
                continue
            if detected == _IGNORED:
                return _IGNORED
            hits.append((found.start(1), n, detected))
        if not hits:
            return None
        hits.sort()
        result, result_rank = None, -1
        for _start, _n, detected in hits:
            rank = RANK[detected]
            if rank > result_rank or rank >= _SFX_RANK or detected == _MSEXE:
                result, result_rank = detected, rank
        return result


# -- text, tar and OOXML tests ClamAV applies after the magic table ----------------------------

# Byte classes of ClamAV's text detector: 0 never in text, 1 plain ASCII text, 2 ISO-8859,
# 3 non-ISO extended ASCII (Mac, IBM PC).
_CLASS = bytes(
    [0] * 7 + [1, 1, 1, 1, 0, 1, 1, 0, 0] + [0] * 11 + [1, 0, 0, 0, 0] + [1] * 95 + [0]
    + [3] * 5 + [1] + [3] * 26 + [2] * 96
)
_NEVER_TEXT = bytes(i for i in range(256) if _CLASS[i] == 0)


def text_type(buf: bytes) -> str:
    """ASCII or UTF-16 text, or binary data, as ClamAV's text detector decides.

    ClamAV also has a UTF-8 test, but it comes after the ASCII test, which already accepts
    every byte from 0x80 up; the UTF-8 test rejects what the ASCII test rejects (control
    characters), so ClamAV never answers CL_TYPE_TEXT_UTF8 and neither does this.
    """
    if len(buf.translate(None, _NEVER_TEXT)) == len(buf):
        return "CL_TYPE_TEXT_ASCII"
    return _utf16_kind(buf) or BINARY


def _utf16_kind(buf: bytes) -> str | None:
    if len(buf) < 2:
        return None
    if buf[:2] == b"\xff\xfe":
        big, bom = False, True
    elif buf[:2] == b"\xfe\xff":
        big, bom = True, True
    else:
        big, bom = True, False  # without a byte order mark ClamAV reads big-endian
    units = (len(buf) - 2) // 2
    first, second = buf[2:2 + 2 * units:2], buf[3:3 + 2 * units:2]
    high, low = (first, second) if big else (second, first)
    pos = high.find(b"\xff")
    while pos >= 0:
        if low[pos] == 0xFE:
            return None  # U+FFFE: a byte-swapped mark, never text
        pos = high.find(b"\xff", pos + 1)
    bad, pos = 0, high.find(b"\0")
    while pos >= 0:  # units below 128: must be plain text characters
        if _CLASS[low[pos]] != 1 and low[pos] < 128:
            if not bom:
                return None
            bad += 1
        pos = high.find(b"\0", pos + 1)
    if bom and bad >= len(buf) // 2:
        return None
    return "CL_TYPE_TEXT_UTF16BE" if big else "CL_TYPE_TEXT_UTF16LE"


@functools.cache
def _fold_table() -> bytes:
    """ClamAV folds a UTF-16 unit (first byte, second byte) to one byte as (second << 4) +
    first, cut to 8 bits; this table holds that for every unit read as little-endian."""
    return bytes(((unit >> 8 << 4) + (unit & 0xFF)) & 0xFF for unit in range(0x10000))


def _utf16_low_bytes(buf: bytes) -> bytes:
    """ClamAV's quick UTF-16 to ASCII folding used to spot UTF-16 HTML."""
    units = array("H", buf[:len(buf) - len(buf) % 2])
    if sys.byteorder == "big":
        units.byteswap()
    return bytes(map(_fold_table().__getitem__, units))


# UTF-16 and UTF-32 text ClamAV recognises from its first four bytes (byte order mark or
# "<?" written wide), with the codec it reads it through. Byte orders Python has no codec
# for (UCS-4 2143 and 3412) are left out.
_WIDE_STARTS = (
    (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\x00\x00\x00\x3c", "utf-32-be"),
    (b"\x00\x3c\x00\x3f", "utf-16-be"), (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff\x00\x00", None), (b"\xfe\xff", "utf-16-be"),
    (b"\x3c\x00\x00\x00", "utf-32-le"), (b"\x3c\x00\x3f\x00", "utf-16-le"),
)


def _wide_text(buf: bytes) -> bytes:
    """Wide text folded to bytes the way ClamAV does before looking for HTML in it."""
    if len(buf) < 4:
        return b""
    codec = next((c for start, c in _WIDE_STARTS if buf.startswith(start)), None)
    if codec is None:
        return b""
    # Re-encoded as UTF-16BE, each unit folds to (first byte << 4) + second byte.
    units = array("H", buf.decode(codec, "ignore").encode("utf-16-be"))
    if sys.byteorder == "little":
        units.byteswap()  # the fold table reads a unit's second byte as its high one
    return bytes(map(_fold_table().__getitem__, units)).replace(b"\0", b"")


def _tar_type(buf: bytes) -> str | None:
    """Old or POSIX tar when the first 512 bytes are a header with a correct checksum."""
    header = buf[:512]
    recorded = _octal(header[148:156])
    if recorded is None:
        return None
    if sum(header) - sum(header[148:156]) + 8 * 0x20 != recorded:
        return None
    # The magic ClamAV compares is GNU's "ustar  " (POSIX "ustar" headers never get here:
    # the magic table names them first).
    return "CL_TYPE_POSIX_TAR" if header[257:265].split(b"\0", 1)[0] == b"ustar  " \
        else "CL_TYPE_OLD_TAR"


def _octal(field: bytes) -> int | None:
    text = field.lstrip(b" \t\n\r\v\f")
    if not text:
        return None
    digits = re.match(rb"[0-7]*", text)[0]
    rest = text[len(digits):]
    if rest and rest[:1] not in b" \t\n\r\v\f\0":
        return None
    return int(digits, 8) if digits else 0


# Member names that mark a zip as an OOXML or HWP document when one of the first three local
# headers carries them; the other names make a document likely, which ClamAV then settles
# from the whole archive (here: from the member names in the central directory).
_OOXML_NAMES = ((b"xl/", "CL_TYPE_OOXML_XL"), (b"ppt/", "CL_TYPE_OOXML_PPT"),
                (b"word/", "CL_TYPE_OOXML_WORD"), (b"Contents/content.hpf", "CL_TYPE_OOXML_HWP"))
_LIKELY_OOXML = (b"BinData", b"mimetype", b"Contents", b"docProps/", b"customXml/",
                 b"version.xml", b"settings.xml", b"_.rels/.rels", b"[ContentTypes].xml",
                 b"[Content_Types].xml", b"Preview/PrvText.txt", b"META-INF/container.xml")
_LOCAL_HEADER = b"PK\x03\x04"
_NAME_AT = 30  # a local header's fixed part; the member name follows it
_NAME_WINDOW = 22  # the longest name compared
_ZIP_LOOKAHEAD = 32 * MAGIC_BUFFER  # ClamAV reads on in windows, 32 at most


def _zip_type(data, buf: bytes) -> str:
    """CL_TYPE_ZIP, or the OOXML/HWP type its first member names show."""
    if len(buf) <= 2 * (_NAME_AT + 5):
        return "CL_TYPE_ZIP"
    head = bytes(data[:_ZIP_LOOKAHEAD])
    pos, likely = 0, False
    for _ in range(3):
        pos = head.find(_LOCAL_HEADER, pos)
        if pos < 0 or pos + _NAME_AT + _NAME_WINDOW >= len(head):
            break
        name = head[pos + _NAME_AT:pos + _NAME_AT + _NAME_WINDOW]
        for prefix, ooxml in _OOXML_NAMES:
            if name.startswith(prefix):
                return ooxml
        likely = likely or name.startswith(_LIKELY_OOXML)
        pos += _NAME_AT
    if likely:
        return _ooxml_by_names(data) or "CL_TYPE_ZIP"
    return "CL_TYPE_ZIP"


def _ooxml_by_names(data) -> str | None:
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
            names = [i.orig_filename for i in zf.infolist()]
    except Exception:  # not readable as a whole: stays a zip, as in ClamAV
        return None
    for prefix, ooxml in _OOXML_NAMES:
        if any(n.startswith(prefix.decode()) for n in names):
            return ooxml
    return None


# -- ClamAV's built-in table -------------------------------------------------------------------

_builtin: list | None = None


def builtin_rows() -> list:
    """The built-in entries in load order, as compile_ftm rows (parsed once per process)."""
    global _builtin
    if _builtin is None:
        sigs, _skipped = parse_ftm(BUILTIN_FTM, "built-in")
        _builtin = [json.loads(line) for line in compile_ftm(sigs)["ftm.entries"].splitlines()]
    return _builtin


def classify(data) -> str:
    """ClamAV's type for ``data`` under its built-in table alone."""
    return _DEFAULT.classify(data)


_DEFAULT = FtmMatcher()


# The file types ClamAV recognises when its database brings no .ftm file: the data of
# libclamav/filetypes_int.h (ClamAV 1.4, GPL-2.0), which mirrors daily.ftm.
BUILTIN_FTM = """\
0:0:1f8b:GZip:CL_TYPE_ANY:CL_TYPE_GZ
0:0:23407e5e:SCRENC:CL_TYPE_ANY:CL_TYPE_SCRENC
0:0:28546869732066696c65206d75737420626520636f6e76657274656420776974682042696e48657820342e3029:BinHex:CL_TYPE_ANY:CL_TYPE_BINHEX
0:0:2e524d46:Real Media File:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:3e46726f6d20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:424d:BMP:CL_TYPE_ANY:CL_TYPE_GRAPHICS
0:0:425a68:BZip:CL_TYPE_ANY:CL_TYPE_BZ
0:0:446174653a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:44656c6976657265642d546f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:44656c69766572792d646174653a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:456e76656c6f70652d746f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:466f723a20:Eserv mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:46726f6d20:MBox:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:46726f6d3a20:Exim mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:48692e20546869732069732074686520716d61696c2d73656e64:Qmail bounce:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:494433:MP3:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:49545346:MS CHM:CL_TYPE_ANY:CL_TYPE_MSCHM
0:0:4d5a:MS-EXE/DLL:CL_TYPE_ANY:CL_TYPE_MSEXE
0:0:4d6573736167652d49443a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:4d6573736167652d49643a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:4f676753:Ogg Stream:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:504b0304:ZIP:CL_TYPE_ANY:CL_TYPE_ZIP
0:0:504b3030504b0304:ZIP:CL_TYPE_ANY:CL_TYPE_ZIP
0:0:52494646:RIFF:CL_TYPE_ANY:CL_TYPE_RIFF
0:0:52494658:RIFX:CL_TYPE_ANY:CL_TYPE_RIFF
0:0:52617221:RAR:CL_TYPE_ANY:CL_TYPE_RAR
0:0:52656365697665643a20:Raw mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:52657475726e2d506174683a20:Maildir:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:52657475726e2d706174683a20:Maildir:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:535a4444:compress.exed:CL_TYPE_ANY:CL_TYPE_MSSZDD
0:0:5375626a6563743a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:546f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d4170706172656e746c792d546f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d455653:EVS mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d456e76656c6f70652d46726f6d3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d4f726967696e616c2d546f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d5265616c2d546f3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d53696576653a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d53796d616e7465632d:Symantec:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:582d5549444c3a20:Mail:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:60ea:ARJ:CL_TYPE_ANY:CL_TYPE_ARJ
0:0:626567696e20:UUencoded:CL_TYPE_ANY:CL_TYPE_UUENCODED
0:0:763a0a52656365697665643a20:VPOP3 Mail (UNIX):CL_TYPE_ANY:CL_TYPE_MAIL
0:0:763a0d0a52656365697665643a20:VPOP3 Mail (DOS):CL_TYPE_ANY:CL_TYPE_MAIL
0:0:789f3e22:TNEF:CL_TYPE_ANY:CL_TYPE_TNEF
0:0:7f454c46:ELF:CL_TYPE_ANY:CL_TYPE_ELF
0:0:b6b9acaefeffffff:CryptFF:CL_TYPE_ANY:CL_TYPE_CRYPTFF
0:0:d0cf11e0a1b11ae1:OLE2 container:CL_TYPE_ANY:CL_TYPE_MSOLE2
0:0:fffb90:MP3:CL_TYPE_ANY:CL_TYPE_IGNORED
1:*:3c4120*(68|48)(72|52)4546:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c4120*(68|48)(72|52)6566:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c484541443e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c48544d4c3e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c486561643e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c48746d6c3e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c494652414d45:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c494d47:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c496d67:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c4f424a454354:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c4f626a656374:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c534352495054:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c536372697074:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c5441424c45:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c6120*(68|48)(72|52)4546:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c6120*(68|48)(72|52)6566:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c686561643e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c68746d6c3e:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c696672616d65:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c696d67:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c6f626a656374:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c736372697074:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:3c7461626c65:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
1:*:4d5a{60-300}50450000:PE:CL_TYPE_ANY:CL_TYPE_MSEXE
1:*:504b0304:ZIP-SFX:CL_TYPE_ANY:CL_TYPE_ZIPSFX
1:*:526172211a0700:RAR-SFX:CL_TYPE_ANY:CL_TYPE_RARSFX
1:*:60ea{7}0002:ARJ-SFX:CL_TYPE_ANY:CL_TYPE_ARJSFX
1:*:60ea{7}0102:ARJ-SFX:CL_TYPE_ANY:CL_TYPE_ARJSFX
1:*:60ea{7}0202:ARJ-SFX:CL_TYPE_ANY:CL_TYPE_ARJSFX
1:*:a3484bbe986c4aa9994c530a86d6487d41553321454130(35|36):AUTOIT:CL_TYPE_ANY:CL_TYPE_AUTOIT
1:*:efbeadde4e756c6c736f6674496e7374:NSIS:CL_TYPE_ANY:CL_TYPE_NULSFT
0:0:5349502d48495420285349502f48:SIP log:CL_TYPE_ANY:CL_TYPE_IGNORED
1:0:3c2540204c414e4755414745203d:HTML data:CL_TYPE_ANY:CL_TYPE_HTML
0:257:7573746172:TAR-POSIX:CL_TYPE_ANY:CL_TYPE_POSIX_TAR
0:0:5b616c69617365735d:mirc ini:CL_TYPE_ANY:CL_TYPE_SCRIPT
1:0,1024:0a(46|66)726f6d3a20{-1024}0a(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
1:0,1024:0a(46|66)726f6d3a20{-2048}0a(43|63)6f6e74656e742d(54|74)7970653a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
1:0,1024:0a(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20{-2048}0a(43|63)6f6e74656e742d(54|74)7970653a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
1:0,1024:0a(4d|6d)6573736167652d(49|69)643a20{-1024}0a(43|63)6f6e74656e742d(54|74)7970653a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:cefaedfe:Mach-O LE:CL_TYPE_ANY:CL_TYPE_MACHO:45
0:0:cffaedfe:Mach-O LE 64-bit:CL_TYPE_ANY:CL_TYPE_MACHO:45
0:0:feedface:Mach-O BE:CL_TYPE_ANY:CL_TYPE_MACHO:45
0:0:feedfacf:Mach-O BE 64-bit:CL_TYPE_ANY:CL_TYPE_MACHO:45
0:0:377abcaf271c:7zip:CL_TYPE_ANY:CL_TYPE_7Z:47
0:0:52656365697665642d5350463a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
1:0,2048:0a(52|72)656365697665643a20{-2048}0a(43|63)6f6e74656e742d(54|74)7970653a20:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:303730373031:CPIO NEWC:CL_TYPE_ANY:CL_TYPE_CPIO_NEWC:45
0:0:303730373032:CPIO CRC:CL_TYPE_ANY:CL_TYPE_CPIO_CRC:45
0:0:303730373037:CPIO ODC:CL_TYPE_ANY:CL_TYPE_CPIO_ODC:45
0:0:71c7:CPIO OLD BINARY BE:CL_TYPE_ANY:CL_TYPE_CPIO_OLD:45
0:0:c771:CPIO OLD BINARY LE:CL_TYPE_ANY:CL_TYPE_CPIO_OLD:45
1:*:496e7374616c6c536869656c6400{292}0600000000000000????????????????0000000001:ISHIELD-MSI:CL_TYPE_ANY:CL_TYPE_ISHIELD_MSI:45
0:0:255044462d:PDF document:CL_TYPE_ANY:CL_TYPE_PDF:55
1:*:255044462d??2e:PDF:CL_TYPE_ANY:CL_TYPE_PDF:55
1:*:257064662d??2e:PDF:CL_TYPE_ANY:CL_TYPE_PDF:55
0:0:53594d430100:SYM DATFILE:CL_TYPE_ANY:CL_TYPE_IGNORED
1:0,128:2f5247420a49440affffffffffffffffffffffffffffffffffffffffffffffff:PDF image:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:377f0682002de218:SQLite WAL:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:377f0683002de218:SQLite WAL:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:53514c69746520666f726d6174203300:SQLite database:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:d9d505f920a163d7:SQLite journal:CL_TYPE_ANY:CL_TYPE_IGNORED
0:0:465753:SWF (uncompressed):CL_TYPE_ANY:CL_TYPE_SWF:71
0:0:4d53434600000000:MS CAB:CL_TYPE_ANY:CL_TYPE_MSCAB
1:*:4d53434600000000:CAB-SFX:CL_TYPE_ANY:CL_TYPE_CABSFX
1:*:014344303031{2043-2443}4344303031:ISO9660:CL_TYPE_ANY:CL_TYPE_ISO9660:71
1:0,32768:004245413031:UDF:CL_TYPE_ANY:CL_TYPE_UDF:180
0:0:5b616c69617365735d:TAR-POSIX-CVE-2012-1419:CL_TYPE_ANY:CL_TYPE_POSIX_TAR
1:8,12:19040010:SIS:CL_TYPE_ANY:CL_TYPE_SIS
1:0,1024:44656c6976657265642d546f3a{-256}52656365697665643a:Mail file:CL_TYPE_ANY:CL_TYPE_MAIL
0:0:0000000c6a5020200d0a870a:JPEG2000:CL_TYPE_ANY:CL_TYPE_GRAPHICS
0:0:000001b3:MPEG video stream:CL_TYPE_ANY:CL_TYPE_BINARY_DATA
0:0:000001ba:MPEG sys stream:CL_TYPE_ANY:CL_TYPE_BINARY_DATA
1:0:cafebabe0000000?:Universal Binary:CL_TYPE_ANY:CL_TYPE_MACHO_UNIBIN:75
1:0:cafebabe0000001?:Universal Binary:CL_TYPE_ANY:CL_TYPE_MACHO_UNIBIN:75
1:0:cafebabe0000002?:Java class file:CL_TYPE_ANY:CL_TYPE_JAVA:75
1:0:cafebabe0000003?:Java class file:CL_TYPE_ANY:CL_TYPE_JAVA:75
0:0:78617221:XAR container file:CL_TYPE_ANY:CL_TYPE_XAR:75
1:EOF-512:6b6f6c79:DMG container file:CL_TYPE_ANY:CL_TYPE_DMG:75
0:0:fd377a585a00:XZ container file:CL_TYPE_ANY:CL_TYPE_XZ:76
4:1024:482B0004:HFS+ partition:CL_TYPE_PART_ANY:CL_TYPE_PART_HFSPLUS:75
4:1024:48580005:HFSX partition:CL_TYPE_PART_ANY:CL_TYPE_PART_HFSPLUS:75
1:0:3c3f786d6c2076657273696f6e3d22312e3022{0-1024}3c576f726b626f6f6b:Microsoft Excel 2003 XML Document:CL_TYPE_ANY:CL_TYPE_XML_XL:80
1:0:3c3f786d6c2076657273696f6e3d22312e3022{0-1024}3c776f7264446f63756d656e74:Microsoft Word 2003 XML Document:CL_TYPE_ANY:CL_TYPE_XML_WORD:80
1:0:3c3f786d6c2076657273696f6e3d22312e3022{0-1024}3c??3a576f726b626f6f6b:Microsoft Excel 2003 XML Document:CL_TYPE_ANY:CL_TYPE_XML_XL:80
1:0:3c3f786d6c2076657273696f6e3d22312e3022{0-1024}3c??3a776f7264446f63756d656e74:Microsoft Word 2003 XML Document:CL_TYPE_ANY:CL_TYPE_XML_WORD:80
0:512:4546492050415254:Disk Image - GUID Partition Table:CL_TYPE_ANY:CL_TYPE_GPT:77
1:*:3c7864703a786470:Adobe XDP - Embedded PDF:CL_TYPE_ANY:CL_TYPE_XDP:79
1:0:4552{510}504d0000:Disk Image - Apple Partition Map:CL_TYPE_ANY:CL_TYPE_APM:77
1:510:55aa:Disk Image - Master Boot Record:CL_TYPE_ANY:CL_TYPE_MBR:77
0:4:d0cf11e0a1b11ae1:HWP embedded OLE2:CL_TYPE_ANY:CL_TYPE_HWPOLE2:82
1:0:efbbbf3c3f786d6c2076657273696f6e3d22312e3022*3c4857504d4c:HWPML Document:CL_TYPE_ANY:CL_TYPE_XML_HWP:82
0:0:48575020446f63756d656e742046696c652056332e3030201a0102030405:HWP3 Document:CL_TYPE_ANY:CL_TYPE_HWP3:82
0:0:7b5c7274:RTF:CL_TYPE_ANY:CL_TYPE_RTF:30
0:0:cafebabe:Universal Binary/Java Bytecode:CL_TYPE_ANY:CL_TYPE_MACHO_UNIBIN:46:74
0:0:252150532d41646f62652d:PostScript:CL_TYPE_ANY:CL_TYPE_ANY:51:82
0:0:252150532d41646f62652d:PostScript:CL_TYPE_ANY:CL_TYPE_PS:83:83
0:0:252150532d41646f62652d:PostScript:CL_TYPE_ANY:CL_TYPE_PS:90
1:0:(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20{-1024}0a(43|63)6f6e74656e742d(54|74)7970653a20:MHTML file:CL_TYPE_ANY:CL_TYPE_MHTML:83:83
1:*:0a(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20{-1024}0a(43|63)6f6e74656e742d(54|74)7970653a20:MHTML file:CL_TYPE_ANY:CL_TYPE_MHTML:83:83
1:0:(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20{-1024}0a(43|63)6f6e74656e742d(54|74)7970653a20:MHTML file:CL_TYPE_ANY:CL_TYPE_MHTML:90
1:*:0a(4d|6d)(49|69)(4d|6d)(45|65)2d(56|76)657273696f6e3a20{-1024}0a(43|63)6f6e74656e742d(54|74)7970653a20:MHTML file:CL_TYPE_ANY:CL_TYPE_MHTML:90
0:0:252150532d41646f62652d:PostScript:CL_TYPE_ANY:CL_TYPE_ANY:84:85
0:0:4C0000000114020000000000C000000000000046:Microsoft Windows Shortcut File:CL_TYPE_ANY:CL_TYPE_LNK:100
0:0:435753:SWF (zlib compressed):CL_TYPE_ANY:CL_TYPE_SWF:71
0:0:45474741:Egg Archive:CL_TYPE_ANY:CL_TYPE_EGG:115
0:0:89504e47:PNG:CL_TYPE_ANY:CL_TYPE_GRAPHICS::121
0:0:89504e47:PNG:CL_TYPE_ANY:CL_TYPE_PNG:122
0:0:474946:GIF:CL_TYPE_ANY:CL_TYPE_GRAPHICS::121
0:0:474946:GIF:CL_TYPE_ANY:CL_TYPE_GIF:122
0:0:ffd8ff:JPEG:CL_TYPE_ANY:CL_TYPE_GRAPHICS::121
0:0:ffd8ff:JPEG:CL_TYPE_ANY:CL_TYPE_JPEG:122
0:0:49492a00:TIFF Little Endian:CL_TYPE_ANY:CL_TYPE_TIFF:122
0:0:4d4d:TIFF Big Endian:CL_TYPE_ANY:CL_TYPE_TIFF:122
0:0:7b20224d61676963223a2022434c414d4a534f4e763022:Internal properties:CL_TYPE_ANY:CL_TYPE_INTERNAL:78:119
0:0:7b0a2020224d61676963223a22434c414d4a534f4e763022:Internal properties:CL_TYPE_ANY:CL_TYPE_INTERNAL:120
0:0:5a5753:SWF (LZMA compressed):CL_TYPE_ANY:CL_TYPE_SWF:81
0:0:49492a00:TIFF Little Endian:CL_TYPE_ANY:CL_TYPE_GRAPHICS:81:121
0:0:4d4d:TIFF Big Endian:CL_TYPE_ANY:CL_TYPE_GRAPHICS:81:121
1:*:377abcaf271c:7zip-SFX:CL_TYPE_ANY:CL_TYPE_7ZSFX:74
1:0:3c3f786d6c2076657273696f6e3d22312e3022{0-1024}70726f6769643d22576f72642e446f63756d656e74223f3e:Microsoft Word 2003 XML Document:CL_TYPE_ANY:CL_TYPE_XML_WORD:80
0:0:e4525c7b8cd8a74daeb15378d02996d3:Microsoft OneNote Document:CL_TYPE_ANY:CL_TYPE_ONENOTE:200
0:0:02099900:Python 1.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:03099900:Python 1.1/1.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:892e0d0a:Python 1.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:04170d0a:Python 1.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:994e0d0a:Python 1.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:fcc40d0a:Python 1.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:fdc40d0a:Python 1.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:87c60d0a:Python 2.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:88c60d0a:Python 2.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2aeb0d0a:Python 2.1 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2beb0d0a:Python 2.1 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2ded0d0a:Python 2.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2eed0d0a:Python 2.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:3bf20d0a:Python 2.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:3cf20d0a:Python 2.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:45f20d0a:Python 2.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:59f20d0a:Python 2.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:63f20d0a:Python 2.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:6df20d0a:Python 2.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:6ef20d0a:Python 2.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:77f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:81f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:8bf20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:8cf20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:95f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:9ff20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:a9f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:b3f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:b4f20d0a:Python 2.5 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:c7f20d0a:Python 2.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:d1f20d0a:Python 2.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:d2f20d0a:Python 2.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:dbf20d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:e5f20d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:eff20d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:f9f20d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:03f30d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:04f30d0a:Python 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:0af30d0a:PyPy 2.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:b80b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:c20b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:cc0b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:d60b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:e00b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:ea0b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:f40b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:f50b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:ff0b0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:090c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:130c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:1d0c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:1f0c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:270c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:3b0c0d0a:Python 3.0 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:450c0d0a:Python 3.1 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:4f0c0d0a:Python 3.1 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:580c0d0a:Python 3.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:620c0d0a:Python 3.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:6c0c0d0a:Python 3.2 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:760c0d0a:Python 3.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:800c0d0a:Python 3.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:8a0c0d0a:Python 3.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:940c0d0a:Python 3.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:9e0c0d0a:Python 3.3 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:b20c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:bc0c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:c60c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:d00c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:da0c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:e40c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:ee0c0d0a:Python 3.4 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:f80c0d0a:Python 3.5.1- byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:020d0d0a:Python 3.5.1- byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:0c0d0d0a:Python 3.5.1- byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:160d0d0a:Python 3.5.1- byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:170d0d0a:Python 3.5.2+ byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:200d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:210d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2a0d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2b0d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2c0d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2d0d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:2f0d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:300d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:310d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:320d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:330d0d0a:Python 3.6 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:3e0d0d0a:Python 3.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:3f0d0d0a:Python 3.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:f00d0d0a:PyPy 3.7 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:00010d0a:PyPy 3.8 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
0:0:50010d0a:PyPy 3.9 byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
1:0:??0d0d0a:Python 3.7 or newer byte-compiled (.pyc):CL_TYPE_ANY:CL_TYPE_PYTHON_COMPILED:200
1:2:2d6c68(30|31|32|33|34|35|36|37|64|78)2d:LHA or LZH archive:CL_TYPE_ANY:CL_TYPE_LHA_LZH:210
1:2:2d6c7a(73|34|35)2d:LHA archive using .LZS extension:CL_TYPE_ANY:CL_TYPE_LHA_LZH:210
1:2:2d706d302d:LHA archive using PMarc (.PMA) extension:CL_TYPE_ANY:CL_TYPE_LHA_LZH:210
0:0:414c5a01:ALZ:CL_TYPE_ANY:CL_TYPE_ALZ:210
"""
