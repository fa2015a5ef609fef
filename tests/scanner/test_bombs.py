"""Decompression bombs end within the limits: a clear ERROR with the limit's reason, bounded
work, and nothing left behind in the temporary directory."""

from __future__ import annotations

import gzip
import io
import os
import struct
import zipfile
import zlib

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database

MiB = 1 << 20


@pytest.fixture(scope="module")
def bundled():
    from lmsav import paths

    return Database.load(paths.bundled_database_dir())


def limit_reasons(verdict) -> set[str]:
    return {r.reason.split(" ")[1] for r in verdict.walk() if r.reason.startswith("limit: ")}


def zeros_zip(name: str, size: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open(name, "w", force_zip64=True) as fh:
            block = bytes(MiB)
            for _ in range(size // MiB):
                fh.write(block)
    return buf.getvalue()


def copies_zip(member: bytes, copies: int, stem: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(copies):
            zf.writestr(f"{stem}{i}.zip", member)
    return buf.getvalue()


def scan(bundled, data: bytes, name: str, tmp_path, **limits):
    tmp_root = tmp_path / "scan-tmp"
    tmp_root.mkdir()
    verdict = Engine(bundled, Limits(**limits), tmp_root=str(tmp_root)).scan_bytes(data, name)
    assert os.listdir(tmp_root) == []  # the private temp dir is gone, spilled members too
    return verdict


@pytest.mark.integration
def test_42zip_style_layers_stop_at_the_total_size_limit(bundled, tmp_path):
    # 16^4 copies of a 256 MiB file of zeros: 16 TiB if unpacked, about 60 KB on disk.
    data = zeros_zip("0.bin", 256 * MiB)
    for depth in range(4):
        data = copies_zip(data, 16, f"l{depth}-")
    assert len(data) < 200_000
    verdict = scan(bundled, data, "42.zip", tmp_path)
    assert verdict.status == Status.ERROR
    assert limit_reasons(verdict) & {"scansize", "compression", "filesize"}
    assert sum(1 for _ in verdict.walk()) < 200  # stopped long before the 65,536 leaves


def test_nested_zip_bomb_stops_at_depth(bundled, tmp_path):
    data = b"x"
    for i in range(40):
        data = copies_zip(data, 1, f"n{i}-")
    verdict = scan(bundled, data, "nested.zip", tmp_path)
    assert verdict.status == Status.ERROR
    assert limit_reasons(verdict) == {"depth"}


def overlapping_zip(entries: int, size: int) -> bytes:
    """Many central-directory entries pointing at one local file (an overlapping-member bomb)."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = b"".join(raw.compress(bytes(MiB)) for _ in range(size // MiB)) + raw.flush()
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(bytes(MiB), crc)
    name = b"kernel.bin"
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), size,
                        len(name), 0) + name + body
    central = b""
    for i in range(entries):
        n = f"f{i:05d}.bin".encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc,
                               len(body), size, len(n), 0, 0, 0, 0, 0, 0) + n
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, entries, entries, len(central),
                      len(local), 0)
    return local + central + end


def test_overlapping_member_zip_stops_at_a_limit(bundled, tmp_path):
    data = overlapping_zip(2000, 64 * MiB)
    verdict = scan(bundled, data, "overlap.zip", tmp_path)
    assert verdict.status == Status.ERROR
    assert limit_reasons(verdict) & {"scansize", "compression"}
    assert len(verdict.root.children) < 2000


def test_ten_thousand_members(bundled, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10_000):
            zf.writestr(f"m{i:05d}.txt", b"member %d\n" % i)
    data = buf.getvalue()
    whole = scan(bundled, data, "many.zip", tmp_path)
    assert whole.status == Status.CLEAN and len(whole.root.children) == 10_000
    (tmp_path / "scan-tmp").rmdir()
    cut = scan(bundled, data, "many.zip", tmp_path, max_files=1000)
    assert cut.status == Status.ERROR and limit_reasons(cut) == {"files"}


def test_gzip_of_ten_gigabytes_of_zeros(bundled, tmp_path):
    member = gzip.compress(bytes(64 * MiB), compresslevel=9)
    data = member * 160  # multi-member gzip: 10 GiB of zeros in about 10 MB
    assert len(data) < 20 * MiB
    verdict = scan(bundled, data, "zeros.gz", tmp_path)
    assert verdict.status == Status.ERROR
    assert limit_reasons(verdict) & {"filesize", "compression"}
