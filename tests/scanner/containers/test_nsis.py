"""NSIS installers built by the real makensis are opened (``setup.exe//nsis//…``) and their files
scanned, with every compressor NSIS offers; clamscan on the same signatures is the oracle."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from lmsav.scanner.containers.executable import ExecutableHandler
from lmsav.scanner.containers.nsis import SIGNATURE
from lmsav.scanner.engine import Engine
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject, Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import EICAR, write_db
from tests.scanner.containers.helpers import explode_with
from tests.scanner.containers.test_sfx import pe_stub

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("makensis") is None, reason="makensis (nsis) not installed"),
    pytest.mark.skipif(shutil.which("7z") is None, reason="7z not installed"),
]
THREAT = "Lmsav.Test.NsisEicar"
COMPRESSORS = ["zlib", "bzip2", "lzma", "/SOLID lzma"]
SCRIPT = """
OutFile "setup.exe"
SetCompressor {compressor}
Section
SetOutPath $INSTDIR
File readme.txt
File eicar.com
SectionEnd
"""


def build(tmp_path: Path, compressor: str) -> Path:
    work = tmp_path / "nsis"
    work.mkdir(exist_ok=True)
    (work / "eicar.com").write_bytes(EICAR)
    (work / "readme.txt").write_text("Thank you for installing.\n" * 50)
    (work / "t.nsi").write_text(SCRIPT.format(compressor=compressor))
    subprocess.run(["makensis", "-V1", "t.nsi"], cwd=work, check=True, capture_output=True)
    return work / "setup.exe"


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    md5 = hashlib.md5(EICAR).hexdigest()
    return write_db(tmp_path_factory.mktemp("nsis-db"), {"t.hdb": f"{md5}:{len(EICAR)}:{THREAT}\n"})


@pytest.fixture(scope="module")
def engine(db_dir, tmp_path_factory) -> Engine:
    cache = tmp_path_factory.mktemp("nsis-cache") / "c.lmsavc"
    return Engine(Database.load(str(db_dir), cache_path=cache))


@pytest.mark.parametrize("compressor", COMPRESSORS)
def test_installer_files_are_scanned_as_clamscan_does(compressor, tmp_path, engine, db_dir):
    setup = build(tmp_path, compressor)
    # A whole-file hash signature: only the file as extracted matches (NSIS stores a small
    # file uncompressed when compressing does not pay, so its bytes may be in the .exe).
    verdict = engine.scan_path(setup, name="setup.exe")
    assert {p for p, t in verdict.threats if t.name == THREAT} == {"setup.exe//nsis//eicar.com"}
    assert clamscan_found(db_dir, [setup]) == {"setup.exe": {THREAT}}


def test_the_installer_data_is_a_member_of_its_own_type(tmp_path):
    data = build(tmp_path, "lzma").read_bytes()
    got = explode_with(ExecutableHandler(), ScanObject("setup.exe", data=data))
    assert [c.name for c in got] == ["nsis"]
    assert sniff(got[0].data) == "nsis"
    assert got[0].data[4:4 + len(SIGNATURE)] == SIGNATURE


def test_damaged_installer_data_is_corrupted_not_clean(engine):
    """A stub followed by NSIS's signature and garbage: 7-Zip cannot open it."""
    fake = pe_stub() + b"\0\0\0\0" + SIGNATURE + b"\x55" * 4000
    verdict = engine.scan(ScanObject("setup.exe", data=fake))
    nsis = next(r for r in verdict.walk() if r.path == "setup.exe//nsis")
    assert nsis.status == Status.CORRUPTED
