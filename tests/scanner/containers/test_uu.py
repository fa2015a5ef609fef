"""uudecode is byte-exact: a file uuencoded by sharutils' ``uuencode`` (plain and ``-m``) or by
other encoders decodes to the same digest, at every size around the 45-byte line, on every route
that decodes it (text files, mail parts, x-uuencode bodies) — whole-file hash signatures depend
on it. clamscan, on the same hash signature, is the oracle for the mail route."""

from __future__ import annotations

import binascii
import hashlib
import random
import subprocess
import time
from pathlib import Path

import pytest

from lmsav.scanner.containers import uu
from lmsav.scanner.containers.message import MailHandler
from lmsav.scanner.containers.textenc import TextEncodedHandler
from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import write_db
from tests.scanner.containers.helpers import explode_with

# Every size up to 200, the sizes around each multiple of 45 (one line) up to 3000, the size
# that once decoded to 549 bytes, and a stride through the rest.
SIZES = sorted(
    set(range(201))
    | {n for k in range(1, 67) for n in (45 * k - 1, 45 * k, 45 * k + 1)}
    | {544, 2999, 3000}
    | set(range(201, 3001, 97))
)
RNG = random.Random(14)


def sample(size: int) -> bytes:
    """``size`` bytes of one of three kinds: random, runs of zeros (encoded as '`' or as
    spaces) and of 0xff between text, every byte value in turn."""
    kind = size % 3
    if kind == 0:
        return RNG.randbytes(size)
    if kind == 1:
        return ((b"\x00" * 7 + b"\xff" * 5 + b"text line\n") * (size // 21 + 1))[:size]
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return {f"f{size:04d}.bin": sample(size) for size in SIZES}


@pytest.fixture(scope="module")
def sharutils(files, tmp_path_factory) -> dict[bool, bytes]:
    """All files uuencoded by sharutils (plain, and base64 when True), one block after the
    other, each in one shell run."""
    tmp = tmp_path_factory.mktemp("uu-sizes")
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    out = {}
    for base64 in (False, True):
        flag = "-m " if base64 else ""
        script = f'for f in f*.bin; do uuencode {flag}"$f" "$f"; done'
        out[base64] = subprocess.run(["sh", "-c", script], cwd=tmp, check=True,
                                     capture_output=True).stdout
    return out


def digests(pairs) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in pairs}


@pytest.mark.parametrize("base64", [False, True], ids=["uuencode", "uuencode-m"])
def test_sharutils_blocks_decode_to_the_same_digests(files, sharutils, base64):
    text = sharutils[base64]
    got = digests((b.name.decode(), b.data) for b in uu.blocks(text))
    assert got == digests(files.items())


@pytest.mark.parametrize("base64", [False, True], ids=["uuencode", "uuencode-m"])
def test_text_file_members_have_the_same_digests(files, sharutils, base64):
    text = b"Files follow.\n" + sharutils[base64] + b"That was all.\n"
    children = explode_with(TextEncodedHandler(), ScanObject("files.txt", data=text))
    got = digests((c.name.removeprefix("uu:"), c.data) for c in children
                  if c.name.startswith("uu:"))
    assert got == digests((name, data) for name, data in files.items() if data)  # not empty


def test_the_544_byte_file_is_544_bytes(tmp_path):
    data = RNG.randbytes(544)
    (tmp_path / "r544").write_bytes(data)
    for flags in ([], ["-m"]):
        text = subprocess.run(["uuencode", *flags, "r544", "r544"], cwd=tmp_path, check=True,
                              capture_output=True).stdout
        block = next(uu.blocks(text))
        assert len(block.data) == 544
        assert hashlib.md5(block.data).digest() == hashlib.md5(data).digest()


def python_uu(data: bytes, backtick: bool) -> bytes:
    lines = [binascii.b2a_uu(data[i:i + 45], backtick=backtick) for i in range(0, len(data), 45)]
    return b"begin 644 x\n" + b"".join(lines) + (b"`\n" if backtick else b" \n") + b"end\n"


def with_checksums(text: bytes) -> bytes:
    """Old encoders append a checksum character to each data line."""
    out = []
    for line in text.split(b"\n"):
        if line and line[:1] not in (b"b", b"e", b"`", b" "):
            line += bytes([32 + sum(binascii.a2b_uu(line)) % 64])
        out.append(line)
    return b"\n".join(out)


ENCODINGS = {
    "backticks": lambda d: python_uu(d, True),
    "spaces": lambda d: python_uu(d, False),
    "spaces-stripped-in-transit": lambda d: b"\n".join(
        line.rstrip(b" ") for line in python_uu(d, False).split(b"\n")),
    "crlf": lambda d: python_uu(d, True).replace(b"\n", b"\r\n"),
    "checksum-characters": lambda d: with_checksums(python_uu(d, True)),
    "no-end-line": lambda d: python_uu(d, True).removesuffix(b"end\n"),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_other_encoders_decode_exactly(encoding):
    encode = ENCODINGS[encoding]
    for size in SIZES[::3]:
        data = sample(size)
        blocks = list(uu.blocks(b"text before\n" + encode(data) + b"text after\n"))
        assert [hashlib.sha256(b.data).digest() for b in blocks] == \
            [hashlib.sha256(data).digest()], (encoding, size)


def test_a_block_without_end_stops_at_the_first_line_that_is_not_uuencoded():
    data = RNG.randbytes(100)
    text = python_uu(data, True).removesuffix(b"`\nend\n") + b"Regards,\nsomeone\n"
    block = next(uu.blocks(text))
    assert block.data == data
    assert text[block.end:] == b"Regards,\nsomeone\n"


def test_many_begin_lines_without_data_cost_linear_time():
    text = b"begin 644 x\nHello there\n" * 50_000
    started = time.monotonic()
    found = list(uu.blocks(text))
    assert time.monotonic() - started < 2
    assert len(found) == 50_000 and not any(b.data for b in found)  # empty files


def mail_with(body_headers: bytes, body: bytes) -> bytes:
    return (b"From: a@example.org\nTo: b@example.org\nSubject: files\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="B"\n\n--B\n' + body_headers + b"\n" +
            body + b"\n--B--\n")


def test_mail_routes_decode_exactly(tmp_path):
    data = RNG.randbytes(544)
    (tmp_path / "r544").write_bytes(data)
    plain = subprocess.run(["uuencode", "r544", "r544"], cwd=tmp_path, check=True,
                           capture_output=True).stdout
    base64 = subprocess.run(["uuencode", "-m", "r544", "r544"], cwd=tmp_path, check=True,
                            capture_output=True).stdout
    routes = {
        "inline": mail_with(b"Content-Type: text/plain\n", b"see below\n" + plain),
        "inline-m": mail_with(b"Content-Type: text/plain\n", b"see below\n" + base64),
        "x-uuencode": mail_with(b"Content-Type: application/octet-stream; name=r544\n"
                                b"Content-Transfer-Encoding: x-uuencode\n", plain),
    }
    want = hashlib.sha256(data).hexdigest()
    for route, raw in routes.items():
        children = explode_with(MailHandler(), ScanObject("m.eml", data=raw))
        found = [c for c in children if c.data and hashlib.sha256(c.data).hexdigest() == want]
        assert found, route


@pytest.fixture(scope="module")
def r544(tmp_path_factory) -> tuple[Path, bytes]:
    root = tmp_path_factory.mktemp("uu544")
    data = b"#!/bin/sh\n# lmsav uudecode sample\n" + random.Random(544).randbytes(544 - 34)
    assert len(data) == 544
    write_db(root / "db", {"t.hdb": f"{hashlib.md5(data).hexdigest()}:544:Lmsav.Test.Uu544\n"})
    return root, data


def test_hash_signature_matches_the_decoded_file_as_clamscan_does(r544):
    root, data = r544
    (root / "r544").write_bytes(data)
    plain = subprocess.run(["uuencode", "r544", "r544"], cwd=root, check=True,
                           capture_output=True).stdout
    samples = {
        "inline.eml": b"From: a@example.org\nTo: b@example.org\nSubject: uu\n\nhere:\n" + plain,
        "part.eml": mail_with(b"Content-Type: text/plain\n", b"here:\n" + plain),
        "x-uuencode.eml": mail_with(b"Content-Type: application/octet-stream; name=r544\n"
                                    b"Content-Transfer-Encoding: x-uuencode\n", plain),
        "file.txt": b"notes\n" + plain,
    }
    paths = []
    for name, raw in samples.items():
        (root / name).write_bytes(raw)
        paths.append(root / name)
    oracle = clamscan_found(root / "db", paths)
    engine = Engine(Database.load(str(root / "db"), cache_path=root / "c.lmsavc"))
    for path in paths:
        verdict = engine.scan_path(path)
        names = {t.name for _, t in verdict.threats}
        assert oracle.get(path.name, set()) <= names, path.name
        assert verdict.status == Status.INFECTED, path.name
    assert oracle  # clamscan decodes these too: the comparison means something
