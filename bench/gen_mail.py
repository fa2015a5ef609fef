"""An archive-heavy mail corpus for the benchmarks: messages with zip, 7z, tar.gz, PDF and
OLE2 attachments (seeded, reproducible), a few of them carrying the EICAR test file."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import tarfile
import tempfile
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

# Assembled at run time so this file never matches a signature itself.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"

WORDS = ("invoice order shipment payment account report meeting agenda quarterly budget "
         "delivery contract signed attached please review regards customer support ticket").split()


def _text(rnd: random.Random, n: int) -> bytes:
    return " ".join(rnd.choice(WORDS) for _ in range(n)).encode()


def _member(rnd: random.Random) -> tuple[str, bytes]:
    if rnd.random() < 0.6:
        return f"doc{rnd.randint(1, 999)}.txt", _text(rnd, rnd.randint(200, 4000))
    return f"data{rnd.randint(1, 999)}.bin", rnd.randbytes(rnd.randint(2_000, 60_000))


def make_zip(rnd: random.Random, infected: bool) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for _ in range(rnd.randint(2, 6)):
            zf.writestr(*_member(rnd))
        if infected:
            zf.writestr("readme.com", EICAR)
    return buf.getvalue()


def make_targz(rnd: random.Random) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for _ in range(rnd.randint(2, 6)):
            name, data = _member(rnd)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_pdf(rnd: random.Random) -> bytes:
    """A small valid PDF whose pages are Flate-compressed content streams."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    pages = rnd.randint(1, 4)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(pages))
    objs.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    for i in range(pages):
        objs.append(f"<< /Type /Page /Parent 2 0 R /Contents {4 + 2 * i} 0 R >>".encode())
        content = b"BT /F1 12 Tf 72 712 Td (" + _text(rnd, rnd.randint(50, 400)) + b") Tj ET"
        packed = zlib.compress(content)
        objs.append(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(packed)
                    + packed + b"\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def make_doc(rnd: random.Random) -> bytes:
    """An OLE2 document (Word-like streams, sometimes a VBA project), via the tests' writer."""
    from tests.scanner.containers.test_ole2 import build_cfb, macro_source, vba_storage

    streams = {"WordDocument": _text(rnd, rnd.randint(300, 3000)),
               "\x05SummaryInformation": rnd.randbytes(rnd.randint(200, 800))}
    if rnd.random() < 0.3:
        streams.update(vba_storage("Macros", {"Module1": macro_source(_text(rnd, 80))}))
    return build_cfb(streams)


def make_7z_pool(rnd: random.Random, count: int) -> list[bytes]:
    """7z archives made by the real 7z tool (a pool, reused: creating one per message is slow)."""
    if not shutil.which("7z"):
        return []
    pool = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(count):
            src = Path(tmp) / f"s{i}"
            src.mkdir()
            for _ in range(rnd.randint(2, 5)):
                name, data = _member(rnd)
                (src / name).write_bytes(data)
            out = Path(tmp) / f"a{i}.7z"
            subprocess.run(["7z", "a", "-bso0", "-bsp0", str(out), "."], cwd=src, check=True)
            pool.append(out.read_bytes())
    return pool


def write_mail_corpus(dest: Path, count: int, seed: int = 7, infected_every: int = 50) -> int:
    """Write ``count`` .eml files under ``dest``; returns how many carry EICAR."""
    rnd = random.Random(seed)
    sevenzips = make_7z_pool(rnd, 20)
    dest.mkdir(parents=True, exist_ok=True)
    infected = 0
    for i in range(count):
        msg = EmailMessage()
        msg["From"] = f"sender{rnd.randint(1, 500)}@example.org"
        msg["To"] = f"user{rnd.randint(1, 500)}@example.net"
        msg["Subject"] = " ".join(rnd.choice(WORDS) for _ in range(5))
        msg["Message-ID"] = f"<bench.{seed}.{i}@example.org>"
        msg.set_content(_text(rnd, rnd.randint(30, 300)).decode())
        bad = infected_every and i % infected_every == 0
        infected += bool(bad)
        kinds = rnd.sample(["zip", "7z", "targz", "pdf", "doc"], rnd.randint(1, 3))
        if bad and "zip" not in kinds:
            kinds.append("zip")
        for kind in kinds:
            if kind == "zip":
                data, sub, name = make_zip(rnd, bad), "zip", "files.zip"
            elif kind == "7z" and sevenzips:
                data, sub, name = rnd.choice(sevenzips), "x-7z-compressed", "files.7z"
            elif kind == "doc":
                data, sub, name = make_doc(rnd), "msword", "letter.doc"
            elif kind == "pdf":
                data, sub, name = make_pdf(rnd), "pdf", "report.pdf"
            else:
                data, sub, name = make_targz(rnd), "gzip", "files.tar.gz"
            msg.add_attachment(data, maintype="application", subtype=sub, filename=name)
        (dest / f"msg{i:06d}.eml").write_bytes(msg.as_bytes())
    return infected
