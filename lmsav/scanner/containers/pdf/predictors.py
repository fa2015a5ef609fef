"""PNG and TIFF predictors, undone after a Flate or LZW filter."""

from __future__ import annotations

from collections.abc import Iterator

from .damage import Damage


def predicted(blocks: Iterator[bytes], parm: dict, errors: Damage) -> Iterator[bytes]:
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


def _png(blocks, colors: int, bpc: int, columns: int, errors: Damage) -> Iterator[bytes]:
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


def _unfilter(kind: int, row: bytes, prior: bytes, bpp: int, errors: Damage) -> bytes:
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
