"""Compressed streams decompress into one member, named as the user would name the file."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import subprocess
import tarfile

import pytest
import zstandard

from lmsav.scanner.containers import Corrupted, RebuildError, handler_for, rebuilder_for
from lmsav.scanner.containers.compressed import CompressedHandler
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Status
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_until, explode_with

PAYLOAD = b"compressed payload\n" * 500


def explode(obj: ScanObject, limits: Limits = Limits()) -> list:
    return explode_with(CompressedHandler(), obj, limits)


def explode_until_error(obj: ScanObject, limits: Limits = Limits()):
    return explode_until(Corrupted, CompressedHandler(), obj, limits)


def gzip_named(data: bytes, fname: str) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(filename=fname, mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def test_registered_for_every_compressor():
    for ftype in ("gzip", "bzip2", "xz", "lzma", "zstd"):
        assert isinstance(handler_for(ftype), CompressedHandler)


def test_gzip_member_takes_the_stored_original_name():
    got = explode(ScanObject("mail.eml//2:upload.gz", data=gzip_named(PAYLOAD, "invoice.exe")))
    assert [(c.name, c.data) for c in got] == [("invoice.exe", PAYLOAD)]


def test_gzip_tool_output_from_file(tmp_path):
    src = tmp_path / "report.txt"
    src.write_bytes(PAYLOAD)
    subprocess.run(["gzip", "-k", str(src)], check=True)
    got = explode(ScanObject.from_path(tmp_path / "report.txt.gz", name="report.txt.gz"))
    assert [(c.name, c.data) for c in got] == [("report.txt", PAYLOAD)]


def test_gzip_without_stored_name_strips_the_suffix():
    data = gzip.compress(PAYLOAD, mtime=0)  # no FNAME field
    assert explode(ScanObject("dir/notes.txt.gz", data=data))[0].name == "notes.txt"
    assert explode(ScanObject("backup.tgz", data=data))[0].name == "backup.tar"
    assert explode(ScanObject("stream", data=data))[0].name == "data"


def test_multi_member_gzip_is_one_concatenated_member():
    data = gzip.compress(b"part one,", mtime=0) + gzip.compress(b" part two", mtime=0)
    got = explode(ScanObject("joined.gz", data=data))
    assert [(c.name, c.data) for c in got] == [("joined", b"part one, part two")]


@pytest.mark.parametrize(
    "cmd, suffix",
    [(["bzip2", "-k"], ".bz2"), (["xz", "-k"], ".xz"), (["xz", "-k", "--format=lzma"], ".lzma"),
     (["zstd", "-q", "-k"], ".zst")],
)
def test_real_tool_streams(tmp_path, cmd, suffix):
    src = tmp_path / "sample.bin"
    src.write_bytes(PAYLOAD)
    subprocess.run([*cmd, str(src)], check=True)
    packed = tmp_path / ("sample.bin" + suffix)
    got = explode(ScanObject.from_path(packed, name=packed.name))
    assert [(c.name, c.data) for c in got] == [("sample.bin", PAYLOAD)]


def test_multi_frame_zstd_and_multi_stream_bzip2():
    z = zstandard.ZstdCompressor()
    data = z.compress(b"frame one ") + z.compress(b"frame two")
    assert explode(ScanObject("f.zst", data=data))[0].data == b"frame one frame two"
    data = bz2.compress(b"stream one ") + bz2.compress(b"stream two")
    assert explode(ScanObject("f.bz2", data=data))[0].data == b"stream one stream two"


def test_gzip_bomb_stops_at_the_compression_ratio_limit(tmp_path):
    bomb = tmp_path / "zeros.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as gz:
        for _ in range(50):
            gz.write(b"\0" * (1 << 20))
    assert bomb.stat().st_size < 100_000
    got = explode(ScanObject.from_path(bomb, name="zeros.gz"), Limits(max_compression_ratio=100))
    assert [(c.name, c.status, c.reason) for c in got] == [
        ("zeros", Status.ERROR, "limit: compression ratio 100")
    ]
    # Stopped one block after the cap (packed size x 100), not after inflating all 50 MiB.
    assert got[0].size <= bomb.stat().st_size * 100 + (64 << 10)


def test_zstd_bomb_stops_at_the_file_size_limit():
    data = zstandard.ZstdCompressor(level=19).compress(b"\0" * (64 << 20))
    got = explode(ScanObject("z.zst", data=data), Limits(max_file_size=8 << 20))
    assert got[0].status == Status.ERROR and got[0].reason == "limit: filesize 8388608"


def test_truncated_gzip_yields_the_readable_part_then_corrupted():
    data = gzip_named(EICAR + bytes(range(256)) * 200, "e.com")
    got, reason = explode_until_error(ScanObject("e.gz", data=data[: len(data) - 40]))
    assert len(got) == 1 and got[0].name == "e.com"
    assert got[0].data.startswith(EICAR)
    assert reason == "truncated compressed stream"


def test_corrupt_gzip_body_is_corrupted():
    data = bytearray(gzip_named(bytes(range(256)) * 200, "x.bin"))
    data[30:60] = b"\xff" * 30
    got, reason = explode_until_error(ScanObject("x.gz", data=bytes(data)))
    assert all(c.name == "x.bin" for c in got)
    assert reason


def test_gzip_with_bad_crc_is_corrupted_but_content_is_scanned():
    data = bytearray(gzip.compress(PAYLOAD, mtime=0))
    data[-8] ^= 0xFF  # CRC32 of the trailer
    got, reason = explode_until_error(ScanObject("c.gz", data=bytes(data)))
    assert got[0].data == PAYLOAD or PAYLOAD.startswith(got[0].data)
    assert "CRC" in reason


@pytest.mark.parametrize(
    "name, compress",
    [("t.bz2", bz2.compress), ("t.xz", lzma.compress),
     ("t.zst", lambda d: zstandard.ZstdCompressor().compress(d))],
)
def test_truncated_streams_are_corrupted(name, compress):
    data = compress(bytes(range(256)) * 400)
    got, reason = explode_until_error(ScanObject(name, data=data[: len(data) // 2]))
    assert all((bytes(range(256)) * 400).startswith(c.data) for c in got)
    assert reason


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_in_tar_gz(engine):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("pkg/eicar.com")
        info.size = len(EICAR)
        tf.addfile(info, io.BytesIO(EICAR))
    verdict = engine.scan_bytes(buf.getvalue(), "pkg.tar.gz")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("pkg.tar.gz//pkg.tar//pkg/eicar.com", "Eicar-Test-Signature")
    ]


def test_engine_reports_gzip_bomb_as_limit(engine, tmp_path):
    from lmsav.scanner.engine import Engine

    strict = Engine(engine.db, Limits(max_compression_ratio=100))
    verdict = strict.scan_bytes(gzip.compress(b"\0" * (50 << 20), 9), "bomb.gz")
    assert verdict.status == Status.ERROR
    assert [r.reason for r in verdict.findings()] == ["limit: compression ratio 100"]


def test_engine_corrupt_gzip_is_corrupted(engine):
    data = gzip_named(EICAR + bytes(range(256)) * 50, "e.com")
    verdict = engine.scan_bytes(data[:-40], "e.gz")
    assert verdict.root.status == Status.CORRUPTED
    assert verdict.status == Status.INFECTED


# -- the rebuilder: member 0 replaced, never removed -------------------------------------------

DECOMPRESS = {
    "gzip": gzip.decompress,
    "bzip2": bz2.decompress,
    "xz": lzma.decompress,
    "lzma": lzma.decompress,
    "zstd": lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d),
}
COMPRESS = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE),
    "zstd": lambda d: zstandard.ZstdCompressor().compress(d),
}


@pytest.mark.parametrize("ftype", sorted(COMPRESS))
def test_rebuilder_replaces_the_one_member_in_the_same_format(ftype):
    original = COMPRESS[ftype](PAYLOAD)
    obj = ScanObject("x", data=original)
    assert obj.type == ftype
    assert [c.member for c in explode(obj)] == [0]
    rebuild = rebuilder_for(ftype)
    out = rebuild(original, {0: b"new content\n"})
    assert ScanObject("y", data=out).type == ftype
    assert DECOMPRESS[ftype](out) == b"new content\n"
    assert rebuild(original, {}) == original
    with pytest.raises(RebuildError, match=f"cannot remove the only member of a {ftype} stream"):
        rebuild(original, {0: None})
    with pytest.raises(RebuildError, match="has no member 1"):
        rebuild(original, {1: b"x"})


def test_rebuilt_gzip_keeps_the_stored_name_and_time():
    buf = io.BytesIO()
    with gzip.GzipFile(filename="report.tar", mode="wb", fileobj=buf, mtime=1_234_567) as gz:
        gz.write(PAYLOAD)
    out = rebuilder_for("gzip")(buf.getvalue(), {0: b"cured"})
    assert out[4:8] == (1_234_567).to_bytes(4, "little")
    assert [c.name for c in explode(ScanObject("x.gz", data=out))] == ["report.tar"]
    assert gzip.decompress(out) == b"cured"
