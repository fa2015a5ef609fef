"""Phishing signatures (.pdb, .gdb, .wdb) and ClamAV's check of the links in mail.

.pdb and .gdb list the protected domains (``R:`` real:displayed regexes, ``H:`` displayed hosts)
and URL hashes (``S:F:`` full hashes, ``S:W:`` allowed ones, ``S:P:`` host prefixes); .wdb lists
allowed real/displayed pairs (``X:``/``Y:`` regexes, ``M:`` host pairs). Only the mail parts
ClamAV looks at for links are checked — the mail handler marks them (``MemberMeta.mail_use``):
text shown inline or a message that is text only, up to 100 KiB, never an attachment nor what an
attached archive holds. Each link of the part (``<a href>`` and the text shown for it, images,
frames, areas, form actions) is checked or, in a part without any, each URL written as text.
A link is reported when its target's hash is listed, or when the text shown for it names a
protected domain while the link leads to another domain and no allow entry covers the pair.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass

from . import htmlnorm, urls
from .errors import SignatureError
from .levels import FUNCTIONALITY_LEVEL
from .subject import MAIL_LINKS, MAIL_LINKS_ONLY

SPOOFED = "Heuristics.Phishing.Email.SpoofedDomain"
SSL_SPOOF = "Heuristics.Phishing.Email.SSL-Spoof"
CLOAKED_NULL = "Heuristics.Phishing.Email.Cloaked.Null"
# Hash hits are named by the character after "S" (S1:, S2:, or none).
HASH_NAMES = {
    "1": "Heuristics.Phishing.URL.Blocked",
    "2": "Heuristics.Safebrowsing.Suspected-phishing_safebrowsing.clamav.net",
}
HASH_DEFAULT = "Heuristics.Safebrowsing.Suspected-malware_safebrowsing.clamav.net"

DOMAIN, ALLOW = "domain", "allow"
CHECK_SSL, CHECK_CLOAKING, CLEANUP_URL, CHECK_IMG_URL = 1, 2, 4, 8
ALL_CHECKS = CLEANUP_URL | CHECK_SSL | CHECK_CLOAKING | CHECK_IMG_URL

_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+$")
_LEVELS = re.compile(r"^(\d*)-(\d*)$")
_RECORD = struct.Struct("<32scH")  # digest, flag character, source index
_COUNTS = struct.Struct("<II")
_TEXT_URL = re.compile(rb"[hH][tT][tT][pP]|[fF][tT][pP][\x1a:]")


@dataclass(frozen=True)
class PhishSig:
    """One usable line: ``kind`` is its letter; ``pattern`` ends with '/' (hash lines: hex)."""

    list: str  # DOMAIN or ALLOW
    kind: str  # R, H, X, Y, M, or S
    pattern: str
    source: str
    line: int
    flag: str = ""  # S lines: W (allowed), or the name character ('1', '2', ':')


# -- parsing ---------------------------------------------------------------------------------------

def parse_pdb(text: str, source: str) -> tuple[list[PhishSig], list[str]]:
    """Protected domains: ``R:RealURLRegex:DisplayedURLRegex`` and ``H:DisplayedHost``."""
    return _parse(text, source, allow=False)


def parse_gdb(text: str, source: str) -> tuple[list[PhishSig], list[str]]:
    """URL hashes; ClamAV reads .gdb exactly like .pdb, so domain lines are accepted too."""
    return _parse(text, source, allow=False)


def parse_wdb(text: str, source: str) -> tuple[list[PhishSig], list[str]]:
    """Allowed links: ``X:RealURLRegex:DisplayedURLRegex`` (``Y:`` alike) and
    ``M:RealHost:DisplayedHost``."""
    return _parse(text, source, allow=True)


def _parse(text: str, source: str, allow: bool) -> tuple[list[PhishSig], list[str]]:
    sigs, skipped = [], []
    prefixes = 0
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.rstrip("\r\n")
        if not line or line.startswith("#"):
            continue
        line, reason = _levels(line)
        if reason:
            skipped.append(f"{source}:{number}: {line}: {reason}")
            continue
        colon = line.find(":")
        if colon < 0:
            raise SignatureError(source, number, "expected Type:Pattern (no ':' in the line)")
        kind, flags, pattern = line[0], line[1:colon], line[colon + 1:]
        lst = ALLOW if allow else DOMAIN
        if kind in ("X", "Y") if allow else kind == "R":
            sigs.append(_regex_sig(lst, kind, pattern, source, number, skipped))
        elif kind == ("M" if allow else "H"):
            sigs.append(PhishSig(lst, kind, pattern + "/", source, number))
        elif kind == "S" and (not allow or pattern.startswith("W")):
            sig = _hash_sig(flags, pattern, source, number)
            if allow:
                skipped.append(f"{source}:{number}: S:W: an allowed hash in a .wdb has no effect "
                               "(ClamAV only consults the hashes of .pdb/.gdb files)")
            elif sig.flag == "P":
                prefixes += 1
            else:
                sigs.append(sig)
        else:
            expected = "X:, Y:, M: or S:W:" if allow else "R:, H: or S:"
            raise SignatureError(source, number, f"unknown line type {line[:colon + 1]!r}: "
                                 f"expected {expected}")
    if prefixes:
        skipped.append(f"{source}: {prefixes} S:P: host-prefix hashes: ClamAV loads them but "
                       "never matches on them")
    return [s for s in sigs if s is not None], skipped


def _levels(line: str) -> tuple[str, str]:
    """A trailing ``:min-max`` functionality level: stripped, or the reason to skip the line."""
    tail = line.rfind(":")
    found = _LEVELS.match(line[tail + 1:]) if tail >= 0 else None
    if not found:
        return line, ""
    low = int(found[1] or 0)
    high = int(found[2]) if found[2] else None
    if low > FUNCTIONALITY_LEVEL:
        return line, f"needs engine level {low} (lmsav: {FUNCTIONALITY_LEVEL})"
    if high is not None and high < FUNCTIONALITY_LEVEL:
        return line, f"retired at engine level {high}"
    return line[:tail], ""


def _regex_sig(lst, kind, pattern, source, number, skipped) -> PhishSig | None:
    pattern += "/"
    # Only the host is matched, so a trailing "any path" part is dropped (as libclamav does).
    for tail in ("([/?].*)?/", "([/?].*)/"):
        if len(pattern) > len(tail) + 1 and pattern.endswith(tail):
            pattern = pattern[:-len(tail)] + "/"
    try:
        re.compile(posix_to_python(pattern), re.DOTALL)
    except (ValueError, re.error) as err:
        skipped.append(f"{source}:{number}: {kind}:{pattern[:-1]}: regex lmsav cannot use: {err}")
        return None
    return PhishSig(lst, kind, pattern, source, number)


def _hash_sig(flags: str, pattern: str, source: str, number: int) -> PhishSig:
    if len(pattern) < 2 or pattern[0] not in "WFP" or pattern[1] != ":":
        raise SignatureError(source, number, "expected S:F:, S:W: or S:P: followed by a hash")
    digest = pattern[2:].strip()
    if pattern[0] == "P":
        if not _HEX.match(digest):
            raise SignatureError(source, number, f"bad host-prefix hash {digest!r}")
        return PhishSig(DOMAIN, "S", digest.lower(), source, number, "P")
    if not _HEX64.match(digest):
        raise SignatureError(source, number, f"bad SHA-256 {digest!r}: need 64 hex digits")
    flag = "W" if pattern[0] == "W" else (flags[:1] or ":")
    return PhishSig(DOMAIN, "S", digest.lower(), source, number, flag)


_CLASSES = {
    "alpha": "a-zA-Z", "digit": "0-9", "alnum": "a-zA-Z0-9", "upper": "A-Z", "lower": "a-z",
    "space": " \\t\\n\\r\\f\\v", "blank": " \\t", "xdigit": "0-9A-Fa-f",
    "cntrl": "\\x00-\\x1f\\x7f", "print": "\\x20-\\x7e", "graph": "\\x21-\\x7e",
    "punct": re.escape("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
}


def posix_to_python(pattern: str) -> str:
    """A POSIX extended regex (as libclamav's regcomp reads it) in Python's syntax."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 >= len(pattern):
                raise ValueError("trailing backslash")
            out.append(re.escape(pattern[i + 1]))
            i += 2
        elif c == "[":
            i, text = _bracket(pattern, i)
            out.append(text)
        elif c in ".^$|()*+?{}":
            out.append(c)
            i += 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def _bracket(pattern: str, i: int) -> tuple[int, str]:
    """A bracket expression from ``[`` (backslash is literal inside, as in POSIX)."""
    j = i + 1
    negate = j < len(pattern) and pattern[j] == "^"
    if negate:
        j += 1
    items, first = [], True
    while j < len(pattern):
        c = pattern[j]
        if c == "]" and not first:
            body = "".join(items)
            return j + 1, f"[{'^' if negate else ''}{body}]"
        first = False
        if c == "[" and j + 1 < len(pattern) and pattern[j + 1] in ":=.":
            kind = pattern[j + 1]
            end = pattern.find(kind + "]", j + 2)
            if end < 0:
                raise ValueError("unterminated [: in bracket expression")
            name = pattern[j + 2:end]
            if kind == ":":
                if name not in _CLASSES:
                    raise ValueError(f"unknown character class [:{name}:]")
                items.append(_CLASSES[name])
            else:
                items.append(re.escape(name))
            j = end + 2
        elif c == "-" and items and j + 1 < len(pattern) and pattern[j + 1] != "]":
            items.append("-")
            j += 1
        else:
            items.append("\\" + c if c in "\\]^-[" else c)
            j += 1
    raise ValueError("unterminated bracket expression")


# -- compiling -------------------------------------------------------------------------------------

def compile_phishing(sigs: list[PhishSig]) -> dict[str, bytes]:
    """Sections: "phishing.counts" (domain entries, listed hashes), "phishing.lists" (JSON:
    sources, domain and allow entries) and "phishing.hashes" (sorted fixed-size records:
    SHA-256, flag, source index)."""
    sources = sorted({s.source for s in sigs})
    ids = {s: i for i, s in enumerate(sources)}
    lists = {DOMAIN: [], ALLOW: []}
    records = {}
    for sig in sigs:
        if sig.kind == "S":
            digest = bytes.fromhex(sig.pattern)
            # An allowed hash wins over a listed one, whichever file comes first.
            if digest not in records or sig.flag == "W":
                records[digest] = _RECORD.pack(digest, sig.flag.encode(), ids[sig.source])
        else:
            lists[sig.list].append([sig.kind, sig.pattern, ids[sig.source]])
    meta = {"sources": sources, DOMAIN: lists[DOMAIN], ALLOW: lists[ALLOW]}
    listed = sum(1 for r in records.values() if r[32:33] != b"W")
    return {
        "phishing.counts": _COUNTS.pack(len(lists[DOMAIN]), listed),
        "phishing.lists": json.dumps(meta, separators=(",", ":")).encode(),
        "phishing.hashes": b"".join(records[d] for d in sorted(records)),
    }


# -- matching --------------------------------------------------------------------------------------

@dataclass
class _Entry:
    kind: str
    pattern: bytes
    source: str
    regex: object = None


class PhishingChecker:
    """Checks the links of mail text parts against the compiled lists (cheap to build: the
    lists are decoded on first use, the hash table is searched in place)."""

    def __init__(self, section):
        self._section = section
        counts = section("phishing.counts")
        domains, hashes = _COUNTS.unpack(counts) if len(counts) == _COUNTS.size else (0, 0)
        self._hashes = section("phishing.hashes")
        self.count: int = domains + hashes
        self._sources: list[str] | None = None
        self._lists: dict[str, list[_Entry]] | None = None

    def _load(self) -> None:
        raw = bytes(self._section("phishing.lists"))
        meta = json.loads(raw) if raw else {"sources": [], DOMAIN: [], ALLOW: []}
        self._sources = meta["sources"]
        self._lists = {
            key: [_Entry(kind, pattern.encode("latin-1"), self._sources[source])
                  for kind, pattern, source in meta[key]]
            for key in (DOMAIN, ALLOW)
        }

    @property
    def sources(self) -> list[str]:
        if self._sources is None:
            self._load()
        return self._sources

    def _entries(self, name: str) -> list[_Entry]:
        if self._lists is None:
            self._load()
        return self._lists[name]

    def match(self, subject) -> list[tuple[str, str]]:
        """(name, source) per suspicious link of a mail part ClamAV reads for links, in
        document order; ClamAV stops at the first unless all matches are asked for."""
        member = subject.member
        if not self.count or member is None or \
                member.mail_use not in (MAIL_LINKS, MAIL_LINKS_ONLY):
            return []
        if subject.container != "CL_TYPE_MAIL":  # a part of the message itself, nothing deeper
            return []
        data = bytes(subject.data[:subject.size])
        links = htmlnorm.normalise(data, outputs=False, links=True).links
        if not links:
            links = text_links(data)
        found = []
        for link in links:
            hit = self.check_link(link)
            if hit:
                found.append(hit)
        return found

    def check_link(self, link: htmlnorm.Link) -> tuple[str, str] | None:
        real = link.value or b""
        shown = link.contents or b""
        flags = ALL_CHECKS if link.tag == b"href" else ALL_CHECKS & ~CHECK_SSL
        image = link.tag == b"src"
        if link.tag != b"href":
            real, shown = shown, real
        return self.check(real, shown, flags, image)

    def check(self, real: bytes, shown: bytes, flags: int = ALL_CHECKS,
              image: bool = False) -> tuple[str, str] | None:
        """phishingCheck: the verdict for one real/shown pair, or None when clean."""
        if not urls.is_url(urls.CString(real), False):
            return None
        if len(self._hashes):  # any S:F:/S:W: line: ClamAV then looks every link up
            candidates = urls.url_hash_candidates(real)
            if candidates is None:
                return None
            for candidate in candidates:
                hit = self._hash_lookup(urls.sha256(candidate))
                if hit:
                    return hit
        if real == shown or not shown:
            return None
        real, _ = urls.cleanup(real, True)
        shown, pre_shown = urls.cleanup(shown, False)
        if real == shown:
            return None
        shown_c = urls.CString(shown)
        if not urls.is_url(shown_c, True):
            return None
        shown = shown_c.string()
        if self._list_match(ALLOW, real, shown):
            return None
        listed = self._list_match(DOMAIN, real, shown)
        display = urls.get_host(shown, False, False)
        shown_host = b"." + shown[display[0]:display[1]]
        if b" " in shown_host:
            return None
        pre_shown = (pre_shown or b"")[:display[1]]
        host_start = display[0]
        start, end, mailto = urls.get_host(real, True, False)
        real_host = b"." + real[start:end]
        if b".." in real_host or mailto or b" " in real_host:
            return None
        if real == shown:
            return None
        if self._list_match(ALLOW, real_host, shown_host, host_only=True):
            return None
        shown_buf = bytearray(shown_host)
        host_hit = self._list_match(DOMAIN, shown_buf, real_host, host_only=True,
                                    pre=(pre_shown, host_start))
        if host_hit:
            listed = listed or host_hit
        else:
            flags = 0  # only the always-on checks remain, and lmsav enables none by default
        if image and not flags & CHECK_IMG_URL:
            return None
        if flags & CHECK_CLOAKING and b"\x01" in real:
            return CLOAKED_NULL, (listed or host_hit)
        if flags & CHECK_SSL and shown.startswith(b"https:") and not real.startswith(b"https:"):
            return SSL_SPOOF, (listed or host_hit)
        if not listed:
            return None
        if urls.get_domain(real_host) == urls.get_domain(bytes(shown_buf).split(b"\0")[0]):
            return None
        return SPOOFED, listed

    def _hash_lookup(self, digest: bytes) -> tuple[str, str] | None:
        table = self._hashes
        size = _RECORD.size
        low, high = 0, len(table) // size
        while low < high:
            mid = (low + high) // 2
            key = bytes(table[mid * size:mid * size + 32])
            if key < digest:
                low = mid + 1
            elif key > digest:
                high = mid
            else:
                _, flag, source = _RECORD.unpack_from(table, mid * size)
                flag = flag.decode("latin-1")
                if flag == "W":
                    return None
                return HASH_NAMES.get(flag, HASH_DEFAULT), self.sources[source]
        return None

    def _list_match(self, name: str, real, shown: bytes, host_only: bool = False,
                    pre: tuple[bytes, int] | None = None) -> str:
        """regex_list_match: the source file of the first entry matching, or ""."""
        entries = self._entries(name)
        if not entries:
            return ""
        is_allow = name == ALLOW
        orig = real
        real = bytes(real).split(b"\0")[0]
        skip = 1 if real.startswith(b".") else 0
        real = real[skip:]
        shown = shown[1:] if shown.startswith(b".") else shown
        if host_only and not is_allow:
            buffer = real + b"/"
        else:
            buffer = real + b":" + shown + b"/"
        if len(buffer) < 3:
            return ""
        text = buffer.decode("latin-1")
        for entry in entries:
            if entry.kind in ("H", "M"):
                if entry.pattern in buffer and _subdomain_ok(
                        entry.pattern, buffer, pre if host_only else None):
                    if host_only and not is_allow and isinstance(orig, bytearray):
                        _insert_dot(orig, len(real), len(entry.pattern) - 1)
                    return entry.source
            else:
                if entry.regex is None:
                    entry.regex = re.compile(posix_to_python(entry.pattern.decode("latin-1")),
                                             re.DOTALL)
                if entry.regex.search(text):
                    return entry.source
        return ""


def _char_at(buffer: bytes, pos: int, pre: tuple[bytes, int] | None) -> int:
    """get_char_at_pos_with_skip: the character before ``pos`` (1-based), counted in the shown
    link as written (with its spaces) when ``pre`` is given."""
    if pre is None:
        if pos <= len(buffer):
            return buffer[pos - 1 if pos > 0 else 0]
        return 0
    text, host_start = pre
    s = urls.CString(text)
    realpos = 0
    pos += host_start
    while s[realpos] and s[realpos] not in _ALNUM:
        realpos += 1
    while s[realpos] and pos > 0:
        while s[realpos] == 0x20:
            realpos += 1
        realpos += 1
        pos -= 1
    while s[realpos] == 0x20:
        realpos += 1
    if pos > 0 and not s[realpos]:
        return 0
    return s[realpos - 1 if realpos > 0 else 0]


def _subdomain_ok(pattern: bytes, buffer: bytes, pre) -> bool:
    """A listed host matches the whole shown host or one of its subdomains."""
    size = len(buffer)
    after = _char_at(buffer, size + 1, pre)
    if after not in (0x20, 0, 0x2F, 0x3F):
        return False
    if len(pattern) == size:
        return True
    return len(pattern) < size and _char_at(buffer, size - len(pattern), pre) in (0x2E, 0x20)


def _insert_dot(host: bytearray, real_len: int, match_len: int) -> None:
    """A shown host like "wwwbank.com" (from "www bank.com") becomes "www.bank.com", written
    over the leading '.' the host buffer carries, as libclamav does."""
    if real_len >= match_len + 1:
        pos = real_len - match_len - 1
        if host[1 + pos] != 0x2E:
            orig_len = len(host)
            host[0:orig_len - match_len - 1] = host[1:orig_len - match_len]
            host[orig_len - match_len - 1] = 0x2E


def text_links(data: bytes) -> list[htmlnorm.Link]:
    """URLs written as text (http:, ftp:) up to the next space, tab or newline."""
    links, size, off = [], len(data), 0
    while off + 10 < size:
        found = _TEXT_URL.search(data, off, size - 7)
        if found is None or found.start() + 10 >= size:
            break
        off = found.start()
        head = data[off:off + 4]
        is_http = head.lower() == b"http"
        if (is_http and (data[off + 4] == 0x3A or (data[off + 5] == 0x73 and data[off + 6] == 0x3A))
                or not is_http):
            length = 4
            while off + length < size and length < 1023 and data[off + length] not in b" \n\t":
                length += 1
            links.append(htmlnorm.Link(b"href", data[off:off + length].split(b"\0")[0]))
            off += length
        off += 1
    return links


__all__ = [
    "CLOAKED_NULL",
    "HASH_DEFAULT",
    "HASH_NAMES",
    "SPOOFED",
    "SSL_SPOOF",
    "PhishSig",
    "PhishingChecker",
    "compile_phishing",
    "parse_gdb",
    "parse_pdb",
    "parse_wdb",
    "posix_to_python",
    "text_links",
]
