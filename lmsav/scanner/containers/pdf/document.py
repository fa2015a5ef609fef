"""The object layer of a PDF: one pass finds the stream objects, trailer dictionaries and
object offsets; helpers read a stream's type and filters and resolve references."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .damage import Damage
from .lengths import LengthResolver
from .syntax import WHITESPACE, Name, Ref, parse_at

# An object header or a "stream"/"trailer" keyword; streams' bodies are skipped, not searched.
_TOKEN = re.compile(
    rb"(?<![0-9])([0-9]{1,10})[ \t\r\n\f\x00]+([0-9]{1,5})[ \t\r\n\f\x00]+obj(?![A-Za-z])"
    rb"|stream(?:\r\n|\n|\r)|trailer(?![A-Za-z])"
)

# Full names and the inline-image abbreviations some writers use for streams too.
_FILTER_ALIASES = {
    "Fl": "FlateDecode", "AHx": "ASCIIHexDecode", "A85": "ASCII85Decode", "LZW": "LZWDecode",
    "RL": "RunLengthDecode", "DCT": "DCTDecode", "CCF": "CCITTFaxDecode",
}


@dataclass
class Stream:
    num: int
    gen: int
    info: dict
    raw: bytes
    truncated: bool = False


def scan_objects(data: bytes):
    """One pass over the file: stream objects, trailer dictionaries, object body offsets."""
    streams: list[Stream] = []
    trailers: list[dict] = []
    objects: dict[int, tuple[int, int]] = {}  # object number → (generation, body offset)
    damage = Damage()
    lengths = LengthResolver(data)
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
            value = parse_at(data, m.end(), min(size, m.end() + 65536))
            if isinstance(value, dict):
                trailers.append(value)
            pos = m.end()
            continue
        # "stream": only a keyword when it follows a dictionary inside an object.
        if current is None or not data[max(current[2], m.start() - 64):m.start()].rstrip(
            WHITESPACE
        ).endswith(b">>"):
            pos = m.end()
            continue
        num, gen, body = current
        info = parse_at(data, body, m.start())
        if not isinstance(info, dict):
            info = {}
        start = m.end()
        length = info.get("Length")
        candidates = lengths.candidates(length) if isinstance(length, Ref) else [length]
        end, truncated = _stream_end(data, start, candidates)
        streams.append(Stream(num, gen, info, data[start:end], truncated))
        if type_of(info) == "XRef":
            trailers.append(info)
        current = None
        pos = last_end = min(size, end + 9)
    if streams and data.rfind(b"%%EOF") < last_end:
        damage.add("truncated (no %%EOF after the last stream)")
    return streams, trailers, objects, damage


def _stream_end(data: bytes, start: int, lengths: list) -> tuple[int, bool]:
    """Where a stream's data ends: the first of the /Length values that lands on ``endstream``,
    else the keyword."""
    for length in lengths:
        if isinstance(length, int) and 0 <= length <= len(data) - start:
            after = data[start + length:start + length + 32].lstrip(WHITESPACE)
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


def type_of(info: dict) -> str:
    value = info.get("Type")
    return str(value) if isinstance(value, Name) else ""


def stream_filters(info: dict) -> tuple[list[str], list[dict]]:
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


def object_value(data: bytes, objects: dict, ref) -> object:
    if not isinstance(ref, Ref) or ref.num not in objects:
        return ref
    _gen, body = objects[ref.num]
    return parse_at(data, body, min(len(data), body + 65536))
