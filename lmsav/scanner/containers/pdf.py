"""Decodes every stream of a PDF (filters, predictors, object streams) and its embedded files.

The decoders are written here rather than taken from pypdf: pypdf decodes a whole stream into
memory before anyone can look at its size, so a Flate bomb would be inflated in full before the
context's compression-ratio limit could stop it. Here every filter is a generator of blocks,
chained, and the context reads the last one, so a bomb stops one block after the limit. Damaged
input decodes as far as it goes (a truncated Flate stream still yields its readable part).

A PDF encrypted with the standard security handler and an empty user password (the usual case
for "cannot print / cannot copy" documents) is decrypted when it uses RC4 (R2-R4); AES (AESV2,
AESV3) documents and those with a real user password yield one PROTECTED member.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import zlib
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..limits import Context
from ..objects import Child, ScanObject, Status
from .base import Corrupted

log = logging.getLogger(__name__)

# An object header or a "stream"/"trailer" keyword; streams' bodies are skipped, not searched.
_TOKEN = re.compile(
    rb"(?<![0-9])([0-9]{1,10})[ \t\r\n\f\x00]+([0-9]{1,5})[ \t\r\n\f\x00]+obj(?![A-Za-z])"
    rb"|stream(?:\r\n|\n|\r)|trailer(?![A-Za-z])"
)
_EF = re.compile(rb"/EF[ \t\r\n\f\x00]*<<")

_WHITESPACE = b" \t\r\n\f\x00"
_DELIMITERS = b"()<>[]{}/%"
_NOT_REGULAR = frozenset(_WHITESPACE + _DELIMITERS)
_MAX_NESTING = 32
BLOCK = 1 << 16

# Full names and the inline-image abbreviations some writers use for streams too.
_FILTER_ALIASES = {
    "Fl": "FlateDecode", "AHx": "ASCIIHexDecode", "A85": "ASCII85Decode", "LZW": "LZWDecode",
    "RL": "RunLengthDecode", "DCT": "DCTDecode", "CCF": "CCITTFaxDecode",
}
# Image codecs: their output is pixels, never a file a signature targets, so they are skipped.
_IMAGE_FILTERS = frozenset({"DCTDecode", "JPXDecode", "JBIG2Decode", "CCITTFaxDecode"})


class Name(str):
    """A PDF name object (``/Type``), without the slash."""


@dataclass(frozen=True)
class Ref:
    num: int
    gen: int


class _ParseError(Exception):
    pass


@dataclass
class _Stream:
    num: int
    gen: int
    info: dict
    raw: bytes
    truncated: bool = False


@dataclass
class _Damage:
    """What went wrong while decoding, collected so the rest of the document is still read."""

    reasons: list[str] = field(default_factory=list)

    def add(self, what: str) -> None:
        if len(self.reasons) < 20:
            self.reasons.append(what)


class PdfHandler:
    """Yields each decoded stream as ``obj<N>`` and embedded files under their own names."""

    types = frozenset({"pdf"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        data = bytes(obj.data)
        streams, trailers, objects, damage = _scan_objects(data)
        if not streams and not objects:
            raise Corrupted("no PDF objects")
        decrypt = None
        encrypt = _encryption(trailers, objects, data)
        if encrypt is not None:
            decrypt = _rc4_decryptor(encrypt, trailers, objects, data)
            if decrypt is None:
                yield Child("encrypted", status=Status.PROTECTED, reason="encrypted")
                return
        names = _embedded_names(data, objects, decrypt)
        skipped_images = 0
        # Object streams first: filespecs inside them name the embedded files yielded after.
        ordered = sorted(streams, key=lambda s: _type_of(s.info) != "ObjStm")
        for stream in ordered:
            ctype = _type_of(stream.info)
            if ctype == "XRef":
                continue  # cross-reference data: offsets, never content
            filters, parms = _filters(stream.info)
            if filters and filters[-1] in _IMAGE_FILTERS:
                skipped_images += 1
                continue
            raw = stream.raw
            if decrypt is not None and not _is_identity_crypt(filters):
                raw = decrypt(stream.num, stream.gen, raw)
            name = names.get(stream.num) or f"obj{stream.num}"
            errors = _Damage()
            blocks = _decode_chain(raw, filters, parms, errors)
            child = ctx.member(name, blocks, packed_size=max(len(raw), 1))
            if stream.truncated:
                errors.add("stream truncated")
            if child.status is not None or child.size:
                yield child
            for reason in errors.reasons:
                damage.add(f"obj{stream.num}: {reason}")
            if ctype == "ObjStm" and child.data:
                names.update(_names_in(child.data, None))
        if skipped_images:
            log.debug("%s: %d image streams not decoded", obj.name, skipped_images)
        if damage.reasons:
            raise Corrupted("; ".join(damage.reasons[:3]))


# -- the object layer -------------------------------------------------------------------------


def _scan_objects(data: bytes):
    """One pass over the file: stream objects, trailer dictionaries, object body offsets."""
    streams: list[_Stream] = []
    trailers: list[dict] = []
    objects: dict[int, tuple[int, int]] = {}  # object number → (generation, body offset)
    damage = _Damage()
    current: tuple[int, int, int] | None = None  # (num, gen, body offset)
    last_end = 0
    pos = 0
    size = len(data)
    while True:
        m = _TOKEN.search(data, pos)
        if m is None:
            break
        if m.group(1) is not None:
            num, gen = int(m.group(1)), int(m.group(2))
            current = (num, gen, m.end())
            objects[num] = (gen, m.end())
            pos = m.end()
            continue
        if m.group(0) == b"trailer":
            value = _parse_at(data, m.end(), min(size, m.end() + 65536))
            if isinstance(value, dict):
                trailers.append(value)
            pos = m.end()
            continue
        # "stream": only a keyword when it follows a dictionary inside an object.
        if current is None or not data[max(current[2], m.start() - 64):m.start()].rstrip(
            _WHITESPACE
        ).endswith(b">>"):
            pos = m.end()
            continue
        num, gen, body = current
        info = _parse_at(data, body, m.start())
        if not isinstance(info, dict):
            info = {}
        start = m.end()
        end, truncated = _stream_end(data, start, info.get("Length"))
        streams.append(_Stream(num, gen, info, data[start:end], truncated))
        if _type_of(info) == "XRef":
            trailers.append(info)
        current = None
        pos = last_end = min(size, end + 9)
    if streams and data.rfind(b"%%EOF") < last_end:
        damage.add("truncated (no %%EOF after the last stream)")
    return streams, trailers, objects, damage


def _stream_end(data: bytes, start: int, length) -> tuple[int, bool]:
    """Where a stream's data ends: /Length when it lands on ``endstream``, else the keyword."""
    if isinstance(length, int) and 0 <= length <= len(data) - start:
        after = data[start + length:start + length + 32].lstrip(_WHITESPACE)
        if after.startswith(b"endstream"):
            return start + length, False
    end = data.find(b"endstream", start)
    if end < 0:
        return len(data), True
    if data[end - 2:end] == b"\r\n" and end - 2 >= start:
        end -= 2
    elif data[end - 1:end] in (b"\n", b"\r") and end - 1 >= start:
        end -= 1
    return end, False


def _type_of(info: dict) -> str:
    value = info.get("Type")
    return str(value) if isinstance(value, Name) else ""


def _filters(info: dict) -> tuple[list[str], list[dict]]:
    flt = info.get("Filter", info.get("F") if not isinstance(info.get("F"), bytes) else None)
    parms = info.get("DecodeParms", info.get("DP"))
    if isinstance(flt, Name):
        flt = [flt]
    if not isinstance(flt, list):
        return [], []
    if not isinstance(parms, list):
        parms = [parms]
    names = [_FILTER_ALIASES.get(str(f), str(f)) for f in flt if isinstance(f, Name)]
    parms = [p if isinstance(p, dict) else {} for p in parms]
    parms += [{}] * (len(names) - len(parms))
    return names, parms


def _is_identity_crypt(filters: list[str]) -> bool:
    return bool(filters) and filters[0] == "Crypt"


def _object_value(data: bytes, objects: dict, ref) -> object:
    if not isinstance(ref, Ref) or ref.num not in objects:
        return ref
    _gen, body = objects[ref.num]
    return _parse_at(data, body, min(len(data), body + 65536))


def _parse_at(data: bytes, pos: int, end: int):
    try:
        return _Parser(data, end).value(pos)[0]
    except (_ParseError, IndexError, ValueError, RecursionError):
        return None


# -- embedded files --------------------------------------------------------------------------


def _embedded_names(data: bytes, objects: dict, decrypt) -> dict[int, str]:
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
        value = _parse_at(data, body, end)
        strings = (lambda s: decrypt(num, gen, s)) if decrypt is not None else None
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


def _names_in(content: bytes, strings) -> dict[int, str]:
    """File specifications among the objects of a decoded object stream."""
    if b"/EF" not in content:
        return {}
    names: dict[int, str] = {}
    parser = _Parser(content, len(content))
    pos = 0
    for _ in range(10000):
        try:
            value, pos = parser.value(pos)
        except (_ParseError, IndexError, ValueError, RecursionError):
            break
        if value is _END:
            break
        names.update(_filespecs(value, strings))
    return names


def _filespecs(value, strings, depth: int = 0) -> dict[int, str]:
    found: dict[int, str] = {}
    if depth > _MAX_NESTING:
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


# -- a small parser for PDF objects (dictionaries, arrays, strings, names, numbers, refs) ------

_END = object()  # a closing delimiter where a value was expected
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("f"): 12}


class _Parser:
    def __init__(self, data: bytes, end: int):
        self.data = data
        self.end = end
        self.depth = 0

    def skip(self, pos: int) -> int:
        data, end = self.data, self.end
        while pos < end:
            c = data[pos]
            if c in _WHITESPACE:
                pos += 1
            elif c == 0x25:  # % comment to end of line
                while pos < end and data[pos] not in (10, 13):
                    pos += 1
            else:
                break
        return pos

    def value(self, pos: int):
        data, end = self.data, self.end
        pos = self.skip(pos)
        if pos >= end:
            raise _ParseError("end of data")
        c = data[pos]
        if c == 0x2F:  # /
            return self.name(pos + 1)
        if c == 0x3C:  # <
            if data[pos + 1:pos + 2] == b"<":
                return self.dictionary(pos + 2)
            close = data.find(b">", pos, end)
            if close < 0:
                raise _ParseError("unterminated hex string")
            digits = bytes(b for b in data[pos + 1:close] if b not in _WHITESPACE)
            return _unhex(digits)[0], close + 1
        if c == 0x5B:  # [
            return self.array(pos + 1)
        if c == 0x28:  # (
            return self.literal(pos + 1)
        if c in (0x5D, 0x3E, 0x29, 0x7B, 0x7D):  # ] > ) { }
            return _END, pos + (2 if data[pos:pos + 2] == b">>" else 1)
        token_end = pos
        while token_end < end and data[token_end] not in _NOT_REGULAR:
            token_end += 1
        token = data[pos:token_end]
        if not token:
            raise _ParseError("unexpected byte")
        number = _number(token)
        if isinstance(number, int) and number >= 0:
            ref = self.reference(number, token_end)
            if ref is not None:
                return ref
        if number is not None:
            return number, token_end
        keywords = {b"true": True, b"false": False, b"null": None}
        return keywords.get(token, Name(token.decode("latin-1"))), token_end

    def reference(self, num: int, pos: int):
        """``N G R`` after an integer N, else None."""
        data = self.data
        p = self.skip(pos)
        q = p
        while q < self.end and 0x30 <= data[q] <= 0x39:
            q += 1
        if q == p or q - p > 5:
            return None
        r = self.skip(q)
        if data[r:r + 1] == b"R" and (r + 1 >= self.end or data[r + 1] in _NOT_REGULAR):
            return Ref(num, int(data[p:q])), r + 1
        return None

    def name(self, pos: int):
        data, end = self.data, self.end
        stop = pos
        while stop < end and data[stop] not in _NOT_REGULAR:
            stop += 1
        raw = data[pos:stop]
        if b"#" in raw:
            raw = re.sub(rb"#([0-9A-Fa-f]{2})", lambda m: bytes([int(m.group(1), 16)]), raw)
        return Name(raw.decode("latin-1")), stop

    def nested(self):
        self.depth += 1
        if self.depth > _MAX_NESTING:
            raise _ParseError("nesting too deep")

    def dictionary(self, pos: int):
        self.nested()
        out: dict = {}
        while True:
            key, pos = self.value(pos)
            if key is _END:
                break
            if not isinstance(key, Name):
                continue  # junk where a key belongs: skip it, keep reading
            value, pos = self.value(pos)
            if value is _END:
                break
            out[str(key)] = value
        self.depth -= 1
        return out, pos

    def array(self, pos: int):
        self.nested()
        out: list = []
        while True:
            value, pos = self.value(pos)
            if value is _END:
                break
            out.append(value)
        self.depth -= 1
        return out, pos

    def literal(self, pos: int):
        data, end = self.data, self.end
        out = bytearray()
        level = 1
        while pos < end:
            c = data[pos]
            pos += 1
            if c == 0x5C:  # backslash
                if pos >= end:
                    break
                e = data[pos]
                pos += 1
                if e in _ESCAPES:
                    out.append(_ESCAPES[e])
                elif 0x30 <= e <= 0x37:
                    octal = bytes([e])
                    while len(octal) < 3 and pos < end and 0x30 <= data[pos] <= 0x37:
                        octal += data[pos:pos + 1]
                        pos += 1
                    out.append(int(octal, 8) & 0xFF)
                elif e == 13:
                    if data[pos:pos + 1] == b"\n":
                        pos += 1
                elif e != 10:
                    out.append(e)
                continue
            if c == 0x28:
                level += 1
            elif c == 0x29:
                level -= 1
                if level == 0:
                    return bytes(out), pos
            out.append(c)
        raise _ParseError("unterminated string")


def _number(token: bytes):
    try:
        return int(token)
    except ValueError:
        pass
    if re.fullmatch(rb"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)", token):
        return float(token)
    return None


# -- filters: each one turns an iterator of blocks into an iterator of blocks ----------------

Decoder = Callable[[Iterator[bytes], dict, _Damage], Iterator[bytes]]


def _decode_chain(raw: bytes, filters: list[str], parms: list[dict], errors: _Damage):
    blocks: Iterator[bytes] = iter((raw,))
    for name, parm in zip(filters, parms):
        if name in ("Crypt",):
            continue
        decoder = _DECODERS.get(name)
        if decoder is None:
            # An unknown filter: hand on what is decoded so far, as ClamAV does.
            errors.add(f"unsupported filter {name}")
            break
        blocks = decoder(blocks, parm, errors)
        if name in ("FlateDecode", "LZWDecode"):
            blocks = _predicted(blocks, parm, errors)
    return blocks


def _flate(blocks: Iterator[bytes], _parm: dict, errors: _Damage) -> Iterator[bytes]:
    d = zlib.decompressobj()
    seen: list[bytes] = []  # input so far, for the careful second pass after an error
    produced = 0
    for block in blocks:
        seen.append(block)
        data = block
        while data:
            try:
                out = d.decompress(data, BLOCK)
            except zlib.error as err:
                # zlib drops a failing call's output: redo the stream carefully from the start.
                yield from _flate_salvage(b"".join(seen), produced, err, errors)
                return
            if out:
                produced += len(out)
                yield out
            if d.eof:
                return
            data = d.unconsumed_tail
    if not d.eof:
        errors.add("FlateDecode: truncated")


def _flate_salvage(data: bytes, skip: int, err: zlib.error, errors: _Damage) -> Iterator[bytes]:
    """Raw deflate in small steps: a headerless stream decodes in full, a damaged one up to the
    damage; output already handed on (``skip`` bytes) is not repeated."""
    start = 2 if len(data) > 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0 else 0
    d = zlib.decompressobj(-15)
    done = 0
    for pos in range(start, len(data), 512):
        try:
            out = d.decompress(data[pos:pos + 512])
        except zlib.error:
            break
        if done + len(out) > skip:
            yield out[max(0, skip - done):]
        done += len(out)
        if d.eof:
            if start:  # the zlib layer itself failed (bad checksum): the content is suspect
                errors.add(f"FlateDecode: {err}")
            return  # else: deflate data without the zlib header, as some writers produce
    errors.add(f"FlateDecode: {err}" if done else f"FlateDecode: {err} (nothing decoded)")


def _ascii_hex(blocks: Iterator[bytes], _parm: dict, errors: _Damage) -> Iterator[bytes]:
    carry = b""
    for block in blocks:
        close = block.find(b">")
        digits = carry + block[: close if close >= 0 else len(block)].translate(None, _WHITESPACE)
        keep = len(digits) & ~1
        out, bad = _unhex(digits[:keep])
        if bad:
            errors.add("ASCIIHexDecode: invalid digit")
        carry = digits[keep:]
        if out:
            yield out
        if close >= 0:
            break
    if carry:
        yield _unhex(carry + b"0")[0]


def _unhex(digits: bytes) -> tuple[bytes, bool]:
    """Hex digits to bytes; non-hex bytes are dropped (and reported)."""
    if len(digits) & 1:
        digits += b"0"
    try:
        return binascii.unhexlify(digits), False
    except (binascii.Error, ValueError):
        clean = re.sub(rb"[^0-9A-Fa-f]", b"", digits)
        if len(clean) & 1:
            clean += b"0"
        return binascii.unhexlify(clean), True


_A85_GROUPS = re.compile(rb"(?:z|[!-u]{5})*")


def _ascii85(blocks: Iterator[bytes], _parm: dict, errors: _Damage) -> Iterator[bytes]:
    buf = b""
    started = False
    for block in blocks:
        block = block.translate(None, _WHITESPACE)
        if not started and block:
            started = True
            block = block[2:] if block.startswith(b"<~") else block
        close = block.find(b"~")
        buf += block[: close if close >= 0 else len(block)]
        whole = _A85_GROUPS.match(buf).end()
        if whole < len(buf) - 4:  # something other than a pending partial group
            bad = buf[whole]
            errors.add(f"ASCII85Decode: invalid byte 0x{bad:02x}")
            buf = buf[:whole]
            close = 0
        if whole:
            try:
                yield base64.a85decode(buf[:whole])
            except ValueError as err:  # a group above 2**32
                errors.add(f"ASCII85Decode: {err}")
                return
            buf = buf[whole:]
        if close >= 0:
            break
    if buf:
        if len(buf) == 1:
            errors.add("ASCII85Decode: stray final byte")
        else:
            try:
                yield base64.a85decode(buf)
            except ValueError as err:
                errors.add(f"ASCII85Decode: {err}")


def _lzw(blocks: Iterator[bytes], parm: dict, errors: _Damage) -> Iterator[bytes]:
    data = b"".join(blocks)  # LZW input is never larger than its (already bounded) source
    early = parm.get("EarlyChange", 1)
    early = 0 if early == 0 else 1
    table: list[bytes] = [bytes([i]) for i in range(256)] + [b"", b""]
    width = 9
    previous: bytes | None = None
    out: list[bytes] = []
    pending = 0
    bits = 0
    nbits = 0
    for byte in data:
        bits = (bits << 8) | byte
        nbits += 8
        while nbits >= width:
            nbits -= width
            code = (bits >> nbits) & ((1 << width) - 1)
            bits &= (1 << nbits) - 1
            if code == 256:
                del table[258:]
                width = 9
                previous = None
                continue
            if code == 257:
                if out:
                    yield b"".join(out)
                return
            if code < len(table):
                entry = table[code]
                if previous is not None:
                    table.append(previous + entry[:1])
            elif previous is not None and code == len(table):
                entry = previous + previous[:1]
                table.append(entry)
            else:
                errors.add("LZWDecode: invalid code")
                if out:
                    yield b"".join(out)
                return
            out.append(entry)
            pending += len(entry)
            previous = entry
            if len(table) + early >= (1 << width) and width < 12:
                width += 1
            if pending >= BLOCK:
                yield b"".join(out)
                out, pending = [], 0
    if out:
        yield b"".join(out)


def _run_length(blocks: Iterator[bytes], _parm: dict, errors: _Damage) -> Iterator[bytes]:
    data = b"".join(blocks)  # input is bounded by its source; output grows at most 64x
    out = bytearray()
    pos, size = 0, len(data)
    while pos < size:
        n = data[pos]
        pos += 1
        if n == 128:
            break
        if n < 128:
            out += data[pos:pos + n + 1]
            if pos + n + 1 > size:
                errors.add("RunLengthDecode: truncated")
            pos += n + 1
        else:
            if pos >= size:
                errors.add("RunLengthDecode: truncated")
                break
            out += data[pos:pos + 1] * (257 - n)
            pos += 1
        if len(out) >= BLOCK:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def _predicted(blocks: Iterator[bytes], parm: dict, errors: _Damage) -> Iterator[bytes]:
    predictor = parm.get("Predictor", 1)
    if not isinstance(predictor, int) or predictor < 2:
        return blocks
    colors = _int(parm.get("Colors"), 1, 1, 32)
    bpc = _int(parm.get("BitsPerComponent"), 8, 1, 16)
    columns = _int(parm.get("Columns"), 1, 1, 1 << 20)
    if predictor == 2:
        return _tiff(blocks, colors, bpc, columns)
    return _png(blocks, colors, bpc, columns, errors)


def _int(value, default: int, low: int, high: int) -> int:
    return value if isinstance(value, int) and low <= value <= high else default


def _png(blocks, colors: int, bpc: int, columns: int, errors: _Damage) -> Iterator[bytes]:
    bpp = max(1, colors * bpc // 8)
    rowlen = (columns * colors * bpc + 7) // 8
    prior = bytes(rowlen)
    buf = b""
    for block in blocks:
        buf += block
        rows = len(buf) // (rowlen + 1)
        if not rows:
            continue
        out = []
        for i in range(rows):
            line = buf[i * (rowlen + 1):(i + 1) * (rowlen + 1)]
            prior = _unfilter(line[0], line[1:], prior, bpp, errors)
            out.append(prior)
        buf = buf[rows * (rowlen + 1):]
        yield b"".join(out)
    if len(buf) > 1:
        yield _unfilter(buf[0], buf[1:].ljust(rowlen, b"\0"), prior, bpp, errors)[: len(buf) - 1]


def _unfilter(kind: int, row: bytes, prior: bytes, bpp: int, errors: _Damage) -> bytes:
    if kind == 0:
        return row
    if kind == 2:
        return bytes((a + b) & 0xFF for a, b in zip(row, prior))
    out = bytearray(row)
    n = len(out)
    if kind == 1:
        for i in range(bpp, n):
            out[i] = (out[i] + out[i - bpp]) & 0xFF
    elif kind == 3:
        for i in range(n):
            left = out[i - bpp] if i >= bpp else 0
            out[i] = (out[i] + ((left + prior[i]) >> 1)) & 0xFF
    elif kind == 4:
        for i in range(n):
            a = out[i - bpp] if i >= bpp else 0
            b = prior[i]
            c = prior[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            out[i] = (out[i] + pred) & 0xFF
    else:
        errors.add(f"PNG predictor: unknown row filter {kind}")
    return bytes(out)


def _tiff(blocks, colors: int, bpc: int, columns: int) -> Iterator[bytes]:
    if bpc != 8:
        yield from blocks  # sub-byte and 16-bit TIFF prediction: rare, passed on undone
        return
    rowlen = columns * colors
    buf = b""
    for block in blocks:
        buf += block
        rows = len(buf) // rowlen
        out = bytearray(buf[: rows * rowlen])
        for r in range(rows):
            base = r * rowlen
            for i in range(base + colors, base + rowlen):
                out[i] = (out[i] + out[i - colors]) & 0xFF
        buf = buf[rows * rowlen:]
        if out:
            yield bytes(out)
    if buf:
        yield buf


_DECODERS: dict[str, Decoder] = {
    "FlateDecode": _flate,
    "ASCIIHexDecode": _ascii_hex,
    "ASCII85Decode": _ascii85,
    "LZWDecode": _lzw,
    "RunLengthDecode": _run_length,
}


# -- encryption: the standard security handler, RC4 with an empty user password --------------

_PAD = bytes.fromhex("28bf4e5e4e758a4164004e56fffa01082e2e00b6d0683e802f0ca9fe6453697a")


def _encryption(trailers: list[dict], objects: dict, data: bytes) -> dict | None:
    for trailer in reversed(trailers):
        if "Encrypt" in trailer:
            value = _object_value(data, objects, trailer["Encrypt"])
            return value if isinstance(value, dict) else {}
    return None


def _rc4_decryptor(encrypt: dict, trailers: list[dict], objects: dict, data: bytes):
    """A ``decrypt(num, gen, bytes)`` when the document opens with an empty password, else None."""
    if encrypt.get("Filter") != "Standard":
        return None
    version, revision = encrypt.get("V", 0), encrypt.get("R", 0)
    if version == 4:
        crypt = encrypt.get("CF", {})
        std = crypt.get(str(encrypt.get("StmF", "StdCF"))) if isinstance(crypt, dict) else None
        if not isinstance(std, dict) or std.get("CFM") != "V2":
            return None  # AESV2/AESV3: needs AES, which the standard library has not
    elif version not in (1, 2):
        return None
    if revision not in (2, 3, 4):
        return None
    owner = encrypt.get("O")
    user = encrypt.get("U")
    perms = encrypt.get("P")
    if not isinstance(owner, bytes) or not isinstance(user, bytes) or not isinstance(perms, int):
        return None
    ident = b""
    for trailer in reversed(trailers):
        ids = trailer.get("ID")
        if isinstance(ids, list) and ids and isinstance(ids[0], bytes):
            ident = ids[0]
            break
    length = encrypt.get("Length", 40) if revision >= 3 else 40
    if version == 4 and isinstance(std, dict) and isinstance(std.get("Length"), int):
        length = std["Length"] * 8 if std["Length"] <= 16 else std["Length"]
    n = max(5, min(16, (length if isinstance(length, int) else 40) // 8))
    digest = hashlib.md5(_PAD + owner[:32] + (perms & 0xFFFFFFFF).to_bytes(4, "little") + ident)
    if revision >= 4 and encrypt.get("EncryptMetadata") is False:
        digest.update(b"\xff\xff\xff\xff")
    key = digest.digest()[:n]
    if revision >= 3:
        for _ in range(50):
            key = hashlib.md5(key).digest()[:n]
    # Check the key against /U: a real user password makes this fail.
    if revision == 2:
        ok = _rc4(key, _PAD) == user[:32]
    else:
        check = _rc4(key, hashlib.md5(_PAD + ident).digest())
        for i in range(1, 20):
            check = _rc4(bytes(b ^ i for b in key), check)
        ok = check == user[:16]
    if not ok:
        return None

    def decrypt(num: int, gen: int, payload: bytes) -> bytes:
        obj_key = hashlib.md5(key + num.to_bytes(4, "little")[:3] + gen.to_bytes(2, "little"))
        return _rc4(obj_key.digest()[: min(n + 5, 16)], payload)

    return decrypt


def _rc4(key: bytes, payload: bytes) -> bytes:
    s = list(range(256))
    j = 0
    klen = len(key)
    for i in range(256):
        j = (j + s[i] + key[i % klen]) & 0xFF
        s[i], s[j] = s[j], s[i]
    out = bytearray(len(payload))
    i = j = 0
    for k, byte in enumerate(payload):
        i = (i + 1) & 0xFF
        si = s[i]
        j = (j + si) & 0xFF
        sj = s[j]
        s[i], s[j] = sj, si
        out[k] = byte ^ s[(si + sj) & 0xFF]
    return bytes(out)

