"""lmsav and the real clamscan, same random database, same random files: same verdicts.

Hash (.hdb/.hsb) and body (.ndb) signatures are planted in plain files and inside zip, tar.gz,
tar.bz2, mail, 7z, cab, arj, cpio and OLE2 (embedded package) containers, the archives made by the
real tools; near misses (one byte changed, one byte longer) must stay clean in both.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

N_FILES = 240


def _static(rnd: random.Random, n: int) -> bytes:
    # Printable-free random bytes make accidental matches between signatures negligible.
    return bytes(rnd.randrange(128, 256) for _ in range(n))


def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("readme.txt", "nothing here")
        zf.writestr(name, data)
    return buf.getvalue()


def _targz(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _mail(name: str, data: bytes) -> bytes:
    b64 = base64.encodebytes(data).decode()
    return (
        "From: a@example.org\nTo: b@example.org\nSubject: report\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="XX"\n\n--XX\nContent-Type: text/plain\n\n'
        f"see attached\n--XX\nContent-Type: application/octet-stream\n"
        f'Content-Disposition: attachment; filename="{name}"\n'
        f"Content-Transfer-Encoding: base64\n\n{b64}--XX--\n"
    ).encode()


def _tool(argv_for, name: str, data: bytes, ext: str) -> bytes:
    """Build a container with a real archiver from a directory holding one member."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        (src / name).write_bytes(data)
        out = Path(tmp) / f"out.{ext}"  # archivers add their suffix when it is missing
        subprocess.run(argv_for(str(out), name), cwd=src, check=True, capture_output=True)
        return out.read_bytes()


def _7z(name, data):
    return _tool(lambda out, n: ["7z", "a", "-t7z", "-bd", out, n], name, data, "7z")


def _cab(name, data):
    return _tool(lambda out, n: ["gcab", "-c", "-z", out, n], name, data, "cab")


def _arj(name, data):
    return _tool(lambda out, n: ["arj", "a", "-y", out, n], name, data, "arj")


def _cpio(name, data):
    return _tool(lambda out, n: ["bsdtar", "--format", "newc", "-cf", out, n], name, data, "cpio")


def _tarbz2(name, data):
    return _tool(lambda out, n: ["bsdtar", "-cjf", out, n], name, data, "tar.bz2")


def _ole2(name, data):
    from tests.scanner.containers.test_ole2 import build_cfb, ole10native

    return build_cfb({"\x01Ole10Native": ole10native(name, data)})


WRAPPERS = [lambda n, d: d, _zip, _targz, _mail, _7z, _cab, _arj, _cpio, _tarbz2, _ole2]


def build_case(tmp_path: Path, seed: int):
    rnd = random.Random(seed)
    db = tmp_path / "db"
    files = tmp_path / "files"
    db.mkdir()
    files.mkdir()
    hdb, hsb, ndb = [], [], []
    expected_hits: dict[str, set[str]] = {}
    for i in range(N_FILES):
        kind = rnd.choice(["hdb", "hsb", "ndb", "ndb", "clean"])
        near_miss = rnd.random() < 0.25
        payload = bytearray(rnd.randbytes(rnd.randint(64, 3000)))
        name = f"Diff.{kind}.{i}"
        if kind in ("hdb", "hsb"):
            exact = bytes(payload)
            if kind == "hdb":
                hdb.append(f"{hashlib.md5(exact).hexdigest()}:{len(exact)}:{name}")
            else:
                algo = rnd.choice(["sha1", "sha256"])
                size = "*" if rnd.random() < 0.3 else str(len(exact))
                # ClamAV wants a minimum functionality level of 73 on "*" size lines.
                flevel = ":73" if size == "*" else ""
                hsb.append(f"{hashlib.new(algo, exact).hexdigest()}:{size}:{name}{flevel}")
            if near_miss:
                payload[rnd.randrange(len(payload))] ^= 0x01
        elif kind == "ndb":
            left, right = _static(rnd, rnd.randint(4, 12)), _static(rnd, rnd.randint(4, 12))
            gap = rnd.randint(0, 6)
            body = f"{left.hex()}{{{gap}}}{right.hex()}" if gap else (left + right).hex()
            ndb.append(f"{name}:0:*:{body}")
            planted = left + rnd.randbytes(gap) + right
            if near_miss:
                planted = left + rnd.randbytes(gap + 1) + right  # gap one byte too long
            at = rnd.randrange(len(payload))
            payload[at:at] = planted
        wrap = rnd.choice(WRAPPERS)
        fname = f"f{i:04d}"
        (files / fname).write_bytes(wrap(f"member{i}.bin", bytes(payload)))
        expected_hits[fname] = set() if (kind == "clean" or near_miss) else {name}
    (db / "diff.hdb").write_text("\n".join(hdb) + "\n")
    (db / "diff.hsb").write_text("\n".join(hsb) + "\n")
    (db / "diff.ndb").write_text("\n".join(ndb) + "\n")
    return db, files, expected_hits


def clamscan_names(db: Path, files: Path) -> dict[str, set[str]]:
    proc = subprocess.run(
        ["clamscan", "--no-summary", "--allmatch", "-d", str(db), str(files)],
        capture_output=True, text=True,
    )
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        if line.endswith(" FOUND"):
            path, _, rest = line.rpartition(": ")
            name = rest[: -len(" FOUND")].removesuffix(".UNOFFICIAL")
            found.setdefault(Path(path).name, set()).add(name)
    return found


def lmsav_names(db: Path, files: Path) -> dict[str, set[str]]:
    exe = Path(sys.executable).with_name("lmsav")
    proc = subprocess.run([exe, "scan", "--json", "-d", str(db), str(files)],
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr
    found: dict[str, set[str]] = {}
    for line in proc.stdout.splitlines():
        obj = json.loads(line)
        if "summary" in obj:
            continue
        names = {t["name"] for t in obj["threats"]}
        if names:
            found[Path(obj["path"]).name] = names
    return found


@pytest.mark.parametrize("seed", [11, 12])
def test_lmsav_agrees_with_clamscan_file_by_file(tmp_path, seed):
    db, files, expected = build_case(tmp_path, seed)
    clam = clamscan_names(db, files)
    ours = lmsav_names(db, files)
    disagreements = {
        f: (clam.get(f, set()), ours.get(f, set()))
        for f in expected
        if clam.get(f, set()) != ours.get(f, set())
    }
    assert disagreements == {}
    # And both agree with what was planted, so the comparison is not vacuous.
    planted = {f: n for f, n in expected.items() if n}
    assert len(planted) > N_FILES // 2
    assert {f: ours.get(f, set()) for f in expected} == expected
