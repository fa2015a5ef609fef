"""URL handling of ClamAV's phishing checks: what is a URL, its host and domain, cleanup, hashes.

These functions reproduce libclamav's phishcheck.c on byte strings, including the places where it
works in place on a C string and leaves stale bytes behind: the verdicts depend on them. A
``CString`` is a mutable buffer ending in NUL; positions are indexes into it.
"""

from __future__ import annotations

import hashlib

# IANA top-level and country-code domains as libclamav knows them (iana_tld.h, iana_cctld.h).
TLDS = frozenset(b"""
ac ad ae aero af ag ai al am an ao aq ar arpa as asia at au aw ax az ba bb bd be bf bg bh bi biz
bj bm bn bo br bs bt bv bw by bz ca cat cc cd cf cg ch ci ck cl cm cn co com coop cr cu cv cx cy
cz de dj dk dm do dz ec edu ee eg er es et eu fi fj fk fm fo fr ga gb gd ge gf gg gh gi gl gm gn
gov gp gq gr gs gt gu gw gy hk hm hn hr ht hu id ie il im in info int io iq ir is it je jm jo jobs
jp ke kg kh ki km kn kp kr kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc md me mg mh mil mk ml
mm mn mo mobi mp mq mr ms mt mu museum mv mw mx my mz na name nc ne net nf ng ni nl no np nr nu
nz om org pa pe pf pg ph pk pl pm pn pr pro ps pt pw py qa re ro rs ru rw sa sb sc sd se sg sh si
sj sk sl sm sn so sr st su sv sy sz tc td tel tf tg th tj tk tl tm tn to tp tr travel tt tv tw
tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws xn--0zwm56d xn--11b5bs3a9aj6g xn--80akhbyknj4f
xn--9t4b11yi5a xn--deba0ad xn--g6w251d xn--hgbk6aj7f53bba xn--hlcj6aya9esc7a xn--jxalpdlp
xn--kgbechtv xn--zckzah ye yt yu za zm zw
""".split())
CCTLDS = (frozenset(t for t in TLDS if len(t) == 2 and t not in (b"eu", b"su", b"ac", b"tp")
                    ) | frozenset({b"ac", b"eu", b"su", b"tp", b"bl", b"eh", b"mf", b"um"}))

_SPACE = frozenset(b" \t\n\v\f\r")
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_XDIGIT = frozenset(b"0123456789abcdefABCDEF")
_ALPHA = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# URI character classes of isURL (RFC 1738's xalpha/xpalpha without the dot).
_XALPHA = _ALNUM | frozenset(b"!\"$%&'()*,-@_")
_XPALPHA = _XALPHA | frozenset(b"#+")
_LOWER = bytes(c + 32 if 65 <= c <= 90 else c for c in range(256))


def in_tld_set(name: bytes) -> bool:
    return name in TLDS


class CString:
    """A NUL-terminated byte buffer; reading past the end gives NUL, like a zeroed C buffer."""

    def __init__(self, data: bytes, room: int = 0):
        self.buf = bytearray(data) + b"\0" * (room + 1)

    def __getitem__(self, i: int) -> int:
        return self.buf[i] if 0 <= i < len(self.buf) else 0

    def __setitem__(self, i: int, value: int) -> None:
        if i >= len(self.buf):
            self.buf += b"\0" * (i - len(self.buf) + 1)
        self.buf[i] = value

    def strlen(self, i: int = 0) -> int:
        end = self.buf.find(b"\0", i)
        return (len(self.buf) if end < 0 else end) - i

    def string(self, i: int = 0) -> bytes:
        return bytes(self.buf[i:i + self.strlen(i)])

    def move(self, dst: int, src: int, count: int) -> None:
        if count > 0:
            chunk = bytes(self.buf[src:src + count]).ljust(count, b"\0")
            if dst + count > len(self.buf):
                self.buf += b"\0" * (dst + count - len(self.buf))
            self.buf[dst:dst + count] = chunk


def _hex2int(a: int, b: int) -> int:
    # "%00" becomes 0x01, not NUL: the cloaking check looks for that byte.
    if a == 0x30 and b == 0x30:
        return 1
    return (_hexval(a) << 4 | _hexval(b)) & 0xFF


def _hexval(c: int) -> int:
    return int(chr(c), 16) if c in _XDIGIT else 0


def hex_to_char(s: CString, begin: int, end: int) -> tuple[int, int]:
    """Decode %XX escapes in place between ``begin`` and ``end`` (str_hex_to_char), repeating
    while a decoded '%' could start a new escape. Returns the new (begin, end)."""
    if end <= begin + 1:
        return begin, end
    if s[begin] == 0x25:
        s[begin + 2] = _hex2int(s[begin + 1], s[begin + 2])
        begin += 2
    start = begin + 1
    while True:
        pos, first_hex = start, None
        while pos + 3 <= end:
            if s[pos] == 0x25 and s[pos + 1] in _XDIGIT and s[pos + 2] in _XDIGIT:
                s[pos] = _hex2int(s[pos + 1], s[pos + 2])
                if s[pos] == 0x25 and first_hex is None:
                    first_hex = pos
                s.move(pos + 1, pos + 3, end - (pos + 3) + 1)
                end -= 2
            pos += 1
        if first_hex is None:
            return begin, end


def strip(s: CString, begin: int, end: int, what: bytes) -> tuple[int, int]:
    """Remove ``what`` between ``begin`` and ``end`` inclusive (str_strip): once at the start,
    repeatedly at the end, and everywhere strictly inside."""
    size = len(what)
    if end <= begin or s.strlen(begin) < size:
        return begin, end
    if bytes(s.buf[begin:begin + size]) == what:
        begin += size
    if size <= end - begin:
        tail = end - size + 1
        while tail > begin and bytes(s.buf[tail:tail + size]) == what:
            end -= size
            tail -= size
    pos = begin + 1
    while pos + size <= end:
        while pos + size <= end and bytes(s.buf[pos:pos + size]) == what:
            s.move(pos, pos + size, end - (pos + size) + 1)
            end -= size
        pos += 1
    return begin, end


def is_url(url: CString, accept_anyproto: bool) -> bool:
    """isURL: a scheme with "//", or host labels ending in a known TLD. With ``accept_anyproto``
    a URL whose last label is no TLD but an earlier one is gets cut after that label."""
    p = 0
    while url[p] == 0x20:
        p += 1
    head = url.string(p)
    start = None
    for scheme in (b"https:", b"http:", b"ftp:", b"mailto://"):
        if head.startswith(scheme):
            start = p + len(scheme) - 1
            break
    if start is not None and url[start + 1] == 0x2F and url[start + 2] == 0x2F:
        return True
    base = p
    has_proto = False
    if accept_anyproto:
        colon = head.find(b":")
        start = base + colon if colon >= 0 else None
    if start is not None:
        if _valid_scheme(url, base, start):
            if url[start + 1] == 0x2F:
                start += 2
                if url[start] == 0x2F:
                    start += 1
            else:
                start += 1
            has_proto = True
        else:
            start = base
    else:
        start = base
    p = start
    rest = url.string(p)
    slash = rest.find(b"/")
    end = p + (slash if slash >= 0 else len(rest))
    if not has_proto:
        at = bytes(url.buf[p:end]).find(b"@")
        if at >= 0:
            q = p + at
            q2 = q - 1
            while q2 > p and url[q2] != 0x2E:
                q2 -= 1
            if q2 == p or not in_tld_set(bytes(url.buf[q2 + 1:q])):
                return False
    last_tld_end = None
    while True:
        dot = url.string(p).find(b".")
        q = p + dot if dot >= 0 else None
        if q is not None and q > end:
            break
        if q is None:
            break
        label = bytes(url.buf[p:q])
        if not label or any(c not in _XPALPHA for c in label):
            return False
        if accept_anyproto and in_tld_set(label):
            last_tld_end = q
        p = q + 1
    if p == start:
        return False
    end = max(end, p)
    while url[end] == 0x20 and end > p:
        end -= 1
    if in_tld_set(bytes(url.buf[p:end])):
        return True
    if not accept_anyproto:
        return False
    if last_tld_end is not None:
        url[last_tld_end] = 0
        return True
    return False


def _valid_scheme(url: CString, begin: int, end: int) -> bool:
    if begin >= end or url[begin] not in _ALPHA:
        return False
    return all(url[i] in _XALPHA for i in range(begin + 1, end))


def _strcspn(s: CString, i: int, chars: bytes) -> int:
    n = 0
    while True:
        c = s[i + n]
        if c == 0 or c in chars:
            return n
        n += 1


def clear_msb(s: CString, begin: int) -> None:
    i = begin
    while s[i]:
        c = s[i] & 0x7F
        s[i] = max(c, 32)
        i += 1


def cleanup(url: bytes, is_real: bool) -> tuple[bytes, bytes | None]:
    """cleanupURL: keep scheme and host, host lower-cased, escapes decoded, junk removed.
    Returns (url, the shown URL before its spaces were squeezed out — None for real URLs)."""
    s = CString(url)
    clear_msb(s, 0)
    begin = 0
    while s[begin] in _SPACE and s[begin]:
        begin += 1
    length = s.strlen(begin)
    if length == 0:
        return b"", b""
    end = begin + length - 1
    if begin >= end:
        return b"", b""
    while s[end] in _SPACE:
        end -= 1
    text = s.string(begin)
    if text.startswith((b".net", b"ado.net", b"asp.net")):
        return b"", b""
    for i in range(begin, end + 1):
        if s[i] == 0x5C:
            s[i] = 0x2F
    colon = text.find(b":")
    if colon < 0:
        host = begin
    else:
        host = begin + colon
        while host < end and s[host + 1] == 0x2F:
            host += 1
        host += 1
    host_len = _strcspn(s, host, b":/?")
    if host + host_len > end + 1:
        host_len = end - host + 1
    else:
        end = host + host_len - 1
    s[host + host_len] = 0
    for i in range(host, host + host_len):
        s[i] = _LOWER[s[i]]
    for i in range(begin, end + 1):
        if s[i] in b'<>";':
            s[i] = 0x20
    begin, end = strip(s, begin, end, b"&lt")
    begin, end = strip(s, begin, end, b"&gt")
    begin, end = hex_to_char(s, begin, end)
    if is_real:
        begin, end = strip(s, begin, end, b" ")
        return bytes(s.buf[begin:end + 1]).split(b"\0", 1)[0], None
    while begin <= end and s[begin] == 0x20:
        begin += 1
    while begin <= end and s[end] == 0x20:
        end -= 1
    shown = bytes(s.buf[begin:end + 1]).split(b"\0", 1)[0]
    begin, end = _fixup_spaces(s, begin, end)
    return bytes(s.buf[begin:end + 1]).split(b"\0", 1)[0], shown


def _fixup_spaces(s: CString, begin: int, end: int) -> tuple[int, int]:
    """Shown links like "w w w . b a n k . c o m": spaces and leading/trailing junk removed."""
    if end < begin:
        return begin, end
    begin, end = strip(s, begin, end, b" ")
    while s[begin] not in _ALNUM and begin <= end:
        begin += 1
    while s[end] not in _ALNUM and end >= begin:
        end -= 1
    if s[end + 1] == 0x2F:
        end += 1
    return begin, end


def get_host(url: bytes, is_real: bool, real_is_mailto: bool) -> tuple[int, int, bool] | None:
    """get_host: (start, end, real link is mailto) of the host in ``url``, past any user@."""
    mailto = 0
    sep = url.find(b"://")
    end = None
    if sep < 0:
        if url.startswith(b"mailto:"):
            start, mailto = 7, 1
        elif not is_real and real_is_mailto:
            end = len(url) + 1
            start = _span_not(url, 0, b": ") + 1
            if start == end:
                start = 0
            mailto = 1
        else:
            start = 0
            if not is_real:
                mailto = 2
    else:
        start = sep + 3
    if not mailto or not is_real:
        while True:
            end = start + _span_not(url, start, b":/?")
            at = url.find(b"@", start)
            if at < 0 or (start != end and at > end):
                break
            # libclamav looks the part after the last dot up with its dot, so it is never a TLD
            # and "user@host" links are never reported as such.
            start = at + 1
    elif mailto and is_real:
        real_is_mailto = True
    if end is None:
        end = start + _span_not(url, start, b":/?")
    return start, end, real_is_mailto


def _span_not(data: bytes, start: int, chars: bytes) -> int:
    n = start
    while n < len(data) and data[n] not in chars:
        n += 1
    return n - start


def get_domain(host: bytes) -> bytes:
    """The registered domain of a host: one label under the TLD, two under "co.uk"-like ones."""
    dot = host.rfind(b".")
    if dot < 0:
        return host
    tld = dot
    if host[dot + 1:] in CCTLDS:
        country = dot + 1
        tld = _rfind(host, 0x2E, dot - 1)
        if tld < 0:
            return host
        if not in_tld_set(host[tld + 1:country - 1]):
            return host[tld + 1:]
    domain = _rfind(host, 0x2E, tld - 1)
    if domain < 0:
        return host
    return host[domain + 1:]


def _rfind(data: bytes, char: int, last: int) -> int:
    i = last
    while i >= 0 and (data[i] if i < len(data) else 0) != char:
        i -= 1
    return i


# -- Safe Browsing style URL hashes (.gdb) --------------------------------------------------------

URL_MAX = 1024


def url_hash_candidates(url: bytes) -> list[bytes] | None:
    """The host-suffix + path-prefix strings whose SHA-256 ClamAV looks up for ``url``, in its
    order; None when the URL has no scheme (ClamAV then skips the link altogether)."""
    s = CString(url[:URL_MAX], room=URL_MAX + 3)
    urlend = len(url)
    colon = s.string().find(b":")
    if colon < 0:
        return None
    host = colon + 1
    while host < urlend and s[host] == 0x2F:
        host += 1
    host_len = _strcspn(s, host, b":/?")
    at = bytes(s.buf[host:host + host_len]).find(b"@")
    if at >= 0:
        host += at + 1
    start = host
    start, urlend = hex_to_char(s, start, urlend)
    host = start
    while host < urlend and s[host] == 0x2F:
        host += 1
    while s[host] == 0x2E and host < urlend:
        host += 1
    slash = s.string(host).find(b"/")
    last = host + slash if slash >= 0 else None
    p = host
    while p < urlend:
        if p + 2 < urlend and s[p] == 0x2F and s[p + 1] == 0x2E:
            if s[p + 2] == 0x2F:
                if p + 3 < urlend:
                    s.move(p + 1, p + 3, urlend - p - 3)
                urlend -= 2
            elif s[p + 2] == 0x2E and s[p + 3] in (0x2F, 0) and last is not None:
                if p + 4 < urlend:
                    s.move(last + 1, p + 4, urlend - p - 4)
                urlend -= 3 + (p - last)
        if s[p] == 0x2F:
            last = p
        p += 1
    s[urlend] = 0
    limit = URL_MAX  # dest_len after the three bytes kept for terminators
    p = host
    while p < urlend and p + 2 < start + limit and urlend < limit:
        c = s[p]
        if c <= 32 or c >= 127 or c in (0x25, 0x23):
            s.move(p + 3, p + 1, urlend - p - 1)
            s[p] = 0x25
            s[p + 1] = b"0123456789ABCDEF"[c >> 4]
            s[p + 2] = b"0123456789ABCDEF"[c & 0xF]
            p += 2
            urlend += 2
        p += 1
    s[p] = 0
    urlend = p
    length = urlend - start
    host_len = _strcspn(s, host, b":/?")
    path = host + host_len
    if host_len <= length:
        s.move(path + 2, path + 1, length - host_len)
        s[path] = 0x2F
        s[path + 1] = 0
        path += 2
    else:
        path = start + length
    if start + length >= path:
        path_len = start + length - path + 1
        hash_at = s.string(path).find(b"#")
        if hash_at >= 0:
            s[path + hash_at] = 0
            path_len = hash_at
        path_text = bytes(s.buf[path:path + path_len])
    else:
        path_len = 0
        path_text = b""
    for i in range(host, host + host_len):
        s[i] = _LOWER[s[i]]
    host_text = bytes(s.buf[host:host + host_len + 1])  # with the '/' written after it
    # Up to five host suffixes (the whole host last) …
    suffixes = []
    components = 4
    dot = host_text.rfind(b".", 0, host_len)
    j = components
    while dot >= 0 and j > 0:
        dot -= 1
        while dot > 0 and host_text[dot] != 0x2E:
            dot -= 1
        if dot < 0 or host_text[dot] != 0x2E:
            break
        suffixes.append(host_text[dot + 1:])
        j -= 1
    suffixes.append(host_text)
    # … times up to six path prefixes: the whole path, without the query, then per directory.
    prefixes = [path_len]
    if path_len:
        query = path_text.find(b"?")
        without_query = query if query >= 0 else path_len
        if without_query != path_len:
            prefixes.append(without_query)
        prefixes.append(0)
        while len(prefixes) < components + 2:
            slash = path_text.find(b"/", prefixes[-1] + 1)
            if slash > 0:
                prefixes.append(slash + 1)
            else:
                break
    out = []
    for cut in reversed(prefixes):
        for suffix in suffixes:
            out.append(suffix + path_text[:cut])
    return out


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


__all__ = [
    "CCTLDS",
    "TLDS",
    "CString",
    "cleanup",
    "get_domain",
    "get_host",
    "hex_to_char",
    "is_url",
    "sha256",
    "strip",
    "url_hash_candidates",
]
