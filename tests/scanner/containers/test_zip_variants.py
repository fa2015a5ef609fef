"""Zip variants: members with data descriptors (sizes after the data, as streaming writers
produce them) are read like any other."""

from __future__ import annotations

import io
import zipfile


from lmsav.scanner.objects import Status
from tests.conftest import EICAR


class _Unseekable(io.RawIOBase):
    """A write-only stream without tell/seek: zipfile then writes data descriptors."""

    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def streamed_zip(members: dict[str, bytes]) -> bytes:
    out = _Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            with zf.open(name, "w") as fh:
                fh.write(data)
    return bytes(out.buf)


def test_data_descriptor_members_are_scanned(engine):
    data = streamed_zip({"a.txt": b"hello " * 100, "b/eicar.com": EICAR})
    flags = [i.flag_bits for i in zipfile.ZipFile(io.BytesIO(data)).infolist()]
    assert all(f & 0x08 for f in flags)  # bit 3: sizes and CRC follow the data
    verdict = engine.scan_bytes(data, "stream.zip")
    assert verdict.status == Status.INFECTED
    assert [p for p, _ in verdict.threats] == ["stream.zip//b/eicar.com"]
    assert {c.path for c in verdict.root.children} == {"stream.zip//a.txt", "stream.zip//b/eicar.com"}
