"""Hypothesis strategies that mutate seed files: flip, insert, delete, overwrite, truncate,
repeat and splice bytes. Each drawn input carries a readable recipe, so a failure names its seed
and every step that led to it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypothesis import strategies as st

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"

# Values that sit on the edges parsers get wrong: sizes, counts, offsets, signs.
INTERESTING = (
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\xff\x7f", b"\x00\x80",
    b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
    b"\x01\x00\x00\x00", b"\x00\x00\x01\x00", b"\xfe\xff\xff\xff",
    b"\xff\xff\xff\xff\xff\xff\xff\xff", b"\x00\x00\x00\x00\x00\x00\x00\x80",
)
# Tokens of the text formats in the corpus, where structure lives in words, not offsets.
TOKENS = (
    b"\r\n", b"\n", b"\r", b"\n\n", b"--", b"=", b";", b'"', b"\\", b"%", b"{", b"}", b"<", b">",
    b"boundary=", b"Content-Type: multipart/mixed; boundary=\"", b"Content-Transfer-Encoding: ",
    b"base64", b"quoted-printable", b"message/rfc822", b"begin 644 x\n", b"\nend\n", b"=?",
    b"?=", b"filename*0*=", b"From ", b"<html>", b"<script>", b"data:;base64,", b"%PDF-",
    b"obj", b"endobj", b"stream\r\n", b"endstream", b"/FlateDecode", b"/Length 999999999",
    b"/ObjStm", b"\\objdata ", b"\\bin999999 ", b"\\object", b"PK\x03\x04", b"PK\x01\x02",
    b"PK\x05\x06", b"7z\xbc\xaf\x27\x1c", b"Rar!\x1a\x07\x00", b"MSCF\x00\x00\x00\x00",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"\x1f\x8b\x08", b"ustar",
)


def load_corpus(root: Path = CORPUS_DIR) -> dict[str, bytes]:
    """{"zip/deflate.zip": bytes, …}: every seed, by its path under the corpus directory."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class FuzzInput:
    """A mutated input and how it was made (printed by Hypothesis when it fails)."""

    data: bytes
    recipe: str

    def __repr__(self) -> str:
        return f"FuzzInput({self.recipe}; {len(self.data)} bytes)"


def _position(draw, data: bytearray, end: bool = False) -> int:
    return draw(st.integers(0, len(data) if end else max(len(data) - 1, 0)))


def _flip(draw, data: bytearray, corpus) -> str:
    if not data:
        return "flip (empty)"
    at, bit = _position(draw, data), draw(st.integers(0, 7))
    data[at] ^= 1 << bit
    return f"flip {at}.{bit}"


def _overwrite(draw, data: bytearray, corpus) -> str:
    at = _position(draw, data)
    value = draw(st.sampled_from(INTERESTING) | st.binary(min_size=1, max_size=8))
    data[at:at + len(value)] = value
    return f"overwrite {at} {value.hex()}"


def _insert(draw, data: bytearray, corpus) -> str:
    at = _position(draw, data, end=True)
    value = draw(st.sampled_from(TOKENS) | st.sampled_from(INTERESTING)
                 | st.binary(min_size=1, max_size=64))
    data[at:at] = value
    return f"insert {at} {value!r}"


def _delete(draw, data: bytearray, corpus) -> str:
    at = _position(draw, data)
    n = draw(st.integers(1, 256))
    del data[at:at + n]
    return f"delete {at}+{n}"


def _truncate(draw, data: bytearray, corpus) -> str:
    keep = _position(draw, data, end=True)
    del data[keep:]
    return f"truncate {keep}"


def _repeat(draw, data: bytearray, corpus) -> str:
    # Repeated records stress counts and loops (many members, many parts, nested groups).
    at = _position(draw, data)
    n = draw(st.integers(1, 512))
    times = draw(st.integers(2, 64))
    data[at:at] = bytes(data[at:at + n]) * (times - 1)
    return f"repeat {at}+{n} x{times}"


def _splice(draw, data: bytearray, corpus) -> str:
    # Another seed's bytes inside this one: archives in mail, mail in archives, mixed headers.
    other_name = draw(st.sampled_from(sorted(corpus)))
    other = corpus[other_name]
    start = draw(st.integers(0, max(len(other) - 1, 0)))
    stop = draw(st.integers(start, len(other)))
    at = _position(draw, data, end=True)
    if draw(st.booleans()):
        data[at:at] = other[start:stop]
        return f"splice {other_name}[{start}:{stop}] at {at}"
    del data[at:]
    data.extend(other[start:])
    return f"cut at {at} + {other_name}[{start}:]"


OPERATIONS = (_flip, _overwrite, _insert, _delete, _truncate, _repeat, _splice)


@st.composite
def fuzz_inputs(draw, corpus: dict[str, bytes], max_steps: int = 6) -> FuzzInput:
    """One seed of ``corpus`` changed by one to ``max_steps`` mutations."""
    seed = draw(st.sampled_from(sorted(corpus)))
    data = bytearray(corpus[seed])
    steps = [seed]
    for op in draw(st.lists(st.sampled_from(OPERATIONS), min_size=1, max_size=max_steps)):
        steps.append(op(draw, data, corpus))
    return FuzzInput(bytes(data), "; ".join(steps))
