"""A database directory as freshclam and a third-party feed leave it, used by `lmsav scan -d`.

The directory holds official containers (ClamAV's genuine signed ``bytecode.cvd``; a ``daily.cld``
repacked from the genuine ``test-3.cvd`` as freshclam repacks after incremental updates), an
unsigned ``main.cud`` built with Debian's ``sigtool --build --unsigned`` holding every signature
kind, and third-party ``.ndb/.ldb/.hsb/.yar`` files. The same directory goes to ``clamscan -d``
and to ``lmsav scan -d`` (the command, as an administrator runs it); file by file the names found
must be the same — bare samples and samples inside zip, tar.gz and mail.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from .test_cvd import DATA, members_of, sigtool_cud, write_cld
from .test_exe_headers import sample as exe_sample

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("clamscan") is None or shutil.which("sigtool") is None,
                       reason="ClamAV's clamscan and sigtool are not installed"),
]

BODY = b"lmsav-e2e body sample: the quick brown fox\n"
HASHED = b"lmsav-e2e hashed sample, found by its MD5\n"
SHA = b"lmsav-e2e hashed sample, found by its SHA-256\n"
LOGICAL = b"first part ...... lmsav-e2e ...... second part\n"
ALLOWED = b"lmsav-e2e body sample: the quick brown fox, but allow-listed\n"
IGNORED = b"lmsav-e2e ignored-name sample\n"
FEED = b"third-party feed sample lmsav-e2e-feed\n"
YARA = b"this text carries lmsav-yara-marker inside\n"
CLEAN = b"nothing to find here, plain text\n"
EICAR = base64.b64decode(
    "WDVPIVAlQEFQWzRcUFpYNTQoUF4pN0NDKTd9JEVJQ0FSLVNUQU5EQVJELUFOVElWSVJVUy1URVNULUZJTEUhJEgrSCo=")


def hexs(data: bytes) -> str:
    return data.hex()


def main_databases(pe: bytes | None) -> dict[str, bytes]:
    """The unsigned container's members: one file per signature kind."""
    dbs = {
        "main.hdb": f"{hashlib.md5(HASHED).hexdigest()}:{len(HASHED)}:Lmsav.E2E.Md5\n",
        "main.hsb": f"{hashlib.sha256(SHA).hexdigest()}:{len(SHA)}:Lmsav.E2E.Sha256\n",
        "main.ndb": f"Lmsav.E2E.Body:0:*:{hexs(b'quick brown fox')}\n"
                    f"Lmsav.E2E.Ignored:0:*:{hexs(b'ignored-name sample')}\n",
        "main.ldb": f"Lmsav.E2E.Logical;Engine:81-255,Target:0;0&1;{hexs(b'first part')};"
                    f"{hexs(b'second part')}\n",
        "main.cdb": "Lmsav.E2E.Container:CL_TYPE_ZIP:*:^invoice\\.scr$:*:*:*:*:*:*\n",
        "main.fp": f"{hashlib.md5(ALLOWED).hexdigest()}:{len(ALLOWED)}:Lmsav.E2E.Allowed\n",
        "main.ign2": "Lmsav.E2E.Ignored\n",
    }
    if pe is not None:
        import pefile

        parsed = pefile.PE(data=pe)
        text = parsed.sections[0]
        raw = pe[text.PointerToRawData:text.PointerToRawData + text.SizeOfRawData]
        dbs["main.mdb"] = f"{len(raw)}:{hashlib.md5(raw).hexdigest()}:Lmsav.E2E.Section\n"
        entry = parsed.get_offset_from_rva(parsed.OPTIONAL_HEADER.AddressOfEntryPoint)
        dbs["main.ndb"] += f"Lmsav.E2E.EntryPoint:1:EP+0:{pe[entry:entry + 16].hex()}\n"
    return {name: text.encode() for name, text in dbs.items()}


@pytest.fixture(scope="module")
def clamav_dir(tmp_path_factory) -> Path:
    """/var/lib/clamav as freshclam leaves it, plus a third-party feed."""
    work = tmp_path_factory.mktemp("clamav")
    pe = _pe_or_none()
    db = work / "clamav"
    db.mkdir()
    shutil.copy(DATA / "bytecode.cvd", db / "bytecode.cvd")
    write_cld(db / "daily.cld", members_of(DATA / "test-3.cvd"))
    shutil.copy(sigtool_cud(work, main_databases(pe), "main.cud", version=9), db / "main.cud")
    (db / "feed.ndb").write_text(f"Feed.E2E.Body:0:*:{hexs(b'lmsav-e2e-feed')}\n")
    (db / "feed.hsb").write_text(f"{hashlib.sha256(CLEAN).hexdigest()}:*:Feed.E2E.AnySize:73\n")
    (db / "feed.ldb").write_text(
        f"Feed.E2E.Logical;Engine:81-255,Target:0;0>1;{hexs(b'lmsav-e2e')}\n")
    (db / "rules.yar").write_text(
        'rule lmsav_marker { strings: $a = "lmsav-yara-marker" condition: $a }\n')
    return db


def _pe_or_none() -> bytes | None:
    try:
        return exe_sample("pe64")
    except pytest.skip.Exception:
        return None


def zipped(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, data)
    return out.getvalue()


def tar_gz(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def mail_with(name: str, data: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = "files"
    msg.set_content("see the attachment\n")
    msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return bytes(msg)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    samples = {"body": BODY, "hashed": HASHED, "sha": SHA, "logical": LOGICAL,
               "allowed": ALLOWED, "ignored": IGNORED, "feed": FEED, "yara": YARA,
               "clean": CLEAN, "eicar": EICAR, "twice": b"lmsav-e2e, and lmsav-e2e again\n"}
    pe = _pe_or_none()
    if pe is not None:
        samples["pe64"] = pe
    for name, data in samples.items():
        (root / f"{name}.bin").write_bytes(data)
        (root / f"{name}.zip").write_bytes(zipped(f"{name}.bin", data))
        (root / f"{name}.tar.gz").write_bytes(tar_gz(f"{name}.bin", data))
        (root / f"{name}.eml").write_bytes(mail_with(f"{name}.bin", data))
    (root / "invoice.zip").write_bytes(zipped("invoice.scr", b"a screensaver, they say\n"))
    return root


def clamscan_names(db: Path, corpus: Path) -> dict[str, set[str]]:
    done = subprocess.run(["clamscan", "--no-summary", "--allmatch", "-d", str(db), str(corpus)],
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return _found(done.stdout)


def lmsav_scan(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["lmsav", "scan", *args], capture_output=True, text=True, env=env)


def lmsav_names(db: Path, corpus: Path) -> dict[str, set[str]]:
    done = lmsav_scan("--no-summary", "-d", str(db), str(corpus))
    assert done.returncode in (0, 1), done.stderr
    return _found(done.stdout)


def _found(stdout: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for line in stdout.splitlines():
        path, _, verdict = line.rpartition(": ")
        if verdict.endswith(" FOUND"):
            top = Path(path.split("//")[0]).name
            found.setdefault(top, set()).add(verdict.removesuffix(" FOUND"))
    return found


def test_lmsav_finds_what_clamscan_finds_in_a_freshclam_directory(clamav_dir, corpus):
    theirs = clamscan_names(clamav_dir, corpus)
    ours = lmsav_names(clamav_dir, corpus)
    # The oracle found what the corpus was built for, so the comparison means something.
    assert theirs["eicar.zip"] == {"Eicar-Test-Signature"}  # official: no suffix
    assert "Lmsav.E2E.Logical.UNOFFICIAL" in theirs["logical.eml"]
    assert "YARA.lmsav_marker.UNOFFICIAL" in theirs["yara.tar.gz"]
    assert theirs["invoice.zip"] == {"Lmsav.E2E.Container.UNOFFICIAL"}
    assert "allowed.bin" not in theirs and "ignored.bin" not in theirs
    assert theirs["twice.zip"] == {"Feed.E2E.Logical.UNOFFICIAL"}
    assert ours == theirs


def test_db_info_lists_containers_types_and_what_is_not_used(clamav_dir):
    done = subprocess.run(["lmsav", "db", "info", "-d", str(clamav_dir)], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "bytecode.cvd: version 19, built 14 May 2010 09-57 -0400 by nervous, 3 signatures, " \
           "functionality level 51, verified (ClamAV key)" in out
    assert "daily.cld: version 3" in out and "main.cud: version 9" in out
    assert "unsigned (.cud)" in out
    assert "Not used: 767944.cbc: bytecode signatures are not executed" in out
    assert "Not used: test.hdu: potentially unwanted application (PUA) signatures are off" in out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith("  .")}
    assert rows[".ldb"][0] == "2" and rows[".cbc"] == ["0", "3"]


def test_tampered_update_is_refused_and_the_previous_database_stays_in_use(clamav_dir, corpus,
                                                                          tmp_path):
    db = tmp_path / "clamav"
    shutil.copytree(clamav_dir, db)
    first = lmsav_scan("--no-summary", "-d", str(db), str(corpus / "eicar.bin"))
    assert first.returncode == 1 and "Eicar-Test-Signature FOUND" in first.stdout
    data = bytearray((db / "daily.cld").read_bytes())
    data[len(data) // 2] ^= 0x20  # an update damaged in transit
    (db / "daily.cld").write_bytes(bytes(data))
    again = lmsav_scan("--no-summary", "-d", str(db), str(corpus / "eicar.bin"))
    assert again.returncode == 1 and "Eicar-Test-Signature FOUND" in again.stdout
    warning = [line for line in again.stderr.splitlines() if "daily.cld" in line]
    assert len(warning) == 1 and "still using the database compiled before" in warning[0]
    # Without a previous compiled database there is nothing to fall back on: one clear error.
    (db / ".compiled.lmsavc").unlink()
    fresh = lmsav_scan("--no-summary", "-d", str(db), str(corpus / "eicar.bin"))
    assert fresh.returncode == 2
    assert fresh.stderr.count("\n") == 1 and "daily.cld: " in fresh.stderr


@pytest.fixture
def var_lib_clamav(clamav_dir):
    """/var/lib/clamav as the README's commands name it: the machine's own if it holds a
    database, else (as root) this module's freshclam-style directory put there for the test."""
    real = Path("/var/lib/clamav")
    if real.is_dir() and any(p.suffix in (".cvd", ".cld") for p in real.iterdir()):
        yield real
        return
    if os.geteuid() != 0:
        pytest.skip("/var/lib/clamav holds no database and only root may create one")
    created = not real.exists()
    real.mkdir(parents=True, exist_ok=True)
    placed = []
    for item in clamav_dir.iterdir():
        if not item.name.startswith("."):
            shutil.copy(item, real / item.name)
            placed.append(real / item.name)
    try:
        yield real
    finally:
        for path in placed + [real / ".compiled.lmsavc"]:
            path.unlink(missing_ok=True)
        if created:
            shutil.rmtree(real, ignore_errors=True)


def test_readme_commands_on_var_lib_clamav(var_lib_clamav, corpus, tmp_path):
    """README, "Using ClamAV's database", literally: the same findings as clamscan -d."""
    target = tmp_path / "srv"
    target.mkdir()
    for name in ("eicar.zip", "clean.bin", "logical.eml"):
        shutil.copy(corpus / name, target / name)
    theirs = clamscan_names(var_lib_clamav, target)
    scan = subprocess.run(["lmsav", "scan", "-d", "/var/lib/clamav", str(target)],
                          capture_output=True, text=True)
    assert scan.returncode == (1 if theirs else 0), scan.stderr
    assert _found(scan.stdout) == theirs
    info = subprocess.run(["lmsav", "db", "info", "-d", "/var/lib/clamav"], capture_output=True,
                          text=True)
    assert info.returncode == 0 and "Directory: /var/lib/clamav" in info.stdout
    # The same directory from the configuration file, as the README's lmsav.toml snippet sets it.
    config = tmp_path / "lmsav.toml"
    config.write_text('[paths]\ndatabase = "/var/lib/clamav"\n')
    scan = subprocess.run(["lmsav", "--config", str(config), "scan", str(target)],
                          capture_output=True, text=True)
    assert _found(scan.stdout) == theirs
