"""The magic-number sniffer: every type the engine dispatches on, from a few bytes."""

import gzip
import io
import tarfile
import zipfile

import pytest

from lmsav.scanner import filetype


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("a", "b")
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        info = tarfile.TarInfo("a")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    return buf.getvalue()


def _pe() -> bytes:
    head = bytearray(b"MZ" + b"\0" * 0x3E)
    head[0x3C:0x40] = (0x40).to_bytes(4, "little")
    return bytes(head) + b"PE\0\0" + b"\0" * 64


@pytest.mark.parametrize("data, expected", [
    (_zip(), "zip"),
    (_tar(), "tar"),
    (gzip.compress(b"x", mtime=0), "gzip"),
    (b"BZh91AY&SY", "bzip2"),
    (b"\xfd7zXZ\x00\x00", "xz"),
    (b"\x28\xb5\x2f\xfd\x00", "zstd"),
    (b"7z\xbc\xaf\x27\x1c\x00\x04", "7z"),
    (b"Rar!\x1a\x07\x00", "rar"),
    (b"MSCF\0\0\0\0", "cab"),
    (b"!<arch>\ndebian-binary   ", "ar"),
    (b"070701" + b"0" * 100, "cpio"),
    (b"\x7fELF\x02\x01\x01", "elf"),
    (b"%PDF-1.7\n", "pdf"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\0" * 32769 + b"CD001", "iso9660"),
    (_pe(), "pe"),
    (b"MZ" + b"\0" * 100, "msdos"),
    (b"From alice@example.org Mon Jan  1 00:00:00 2026\nSubject: x\n\nhi\n", "mbox"),
    (b"Received: from x\n\tby y\nSubject: hi\n\nbody\n", "mail"),
    (b"<!DOCTYPE html><html></html>", "html"),
    (b"{\\rtf1\\ansi hello}", "rtf"),
    (b"\x60\xea\x29\x00" + b"\0" * 60, "arj"),
    (b"\x20\x00-lh5-" + b"\0" * 30, "lha"),
    (b"SZDD\x88\xf0\x27\x33A", "szdd"),
    (b"\x1f\x9d\x90", "compress"),
    (b"\xed\xab\xee\xdb\x03\x00", "rpm"),
    (b"\x78\x9f\x3e\x22\x00", "tnef"),
    (b"ITSF\x03\x00\x00\x00", "chm"),
    (b"(This file must be converted with BinHex 4.0)\n:abc", "binhex"),
    (b"just some words\n", "text"),
    (b"\x00\x01\x02binary", "binary"),
    (b"", "binary"),
])
def test_sniff(data, expected):
    assert filetype.sniff(data, len(data)) == expected


def test_text_starting_with_to_is_not_mail():
    assert filetype.sniff(b"To: do list\nbuy milk and eggs\n") == "text"


def test_sniff_accepts_mmap(tmp_path):
    import mmap

    p = tmp_path / "z"
    p.write_bytes(_zip())
    with open(p, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert filetype.sniff(mm) == "zip"


def test_precise_type_uses_libmagic():
    assert filetype.precise_type(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n") == "application/pdf"
