"""Shared fixtures: test samples built at run time (no live sample is stored in the tree)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.sysroot"]  # the `sysroot` fixture: lmsav on its default system paths

# Built from pieces so this file itself never matches a signature.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
BODY_SAMPLE = b"xx LMSAV" + b"-BODY-TEST:" + b"\xaa\xbb" + b"-SAMPLE xx"
YARA_SAMPLE = b"xx LMSAV" + b"-YARA-TEST-" + b"SAMPLE xx"
HASH_SAMPLE = b"lmsav hash signature test" + b" sample\n"


@pytest.fixture(scope="session", autouse=True)
def private_tmpdir(tmp_path_factory):
    """This test process, and every process it starts, keeps its temporary files ($TMPDIR) in a
    directory of the session, removed at its end: nothing a test forgets (a scan context left
    without cleanup, a killed process's files) stays behind in /tmp. Sticky and
    world-writable like /tmp, because tests run lmsav as other users too."""
    tmp_path_factory.getbasetemp()  # pytest's own tmp_path directories stay where they are
    path = tempfile.mkdtemp(prefix="lmsav-tests-")
    os.chmod(path, 0o1777)
    saved = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = tempfile.tempdir = path
    try:
        yield path
    finally:
        if saved[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[0]
        tempfile.tempdir = saved[1]
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def eicar() -> bytes:
    return EICAR


@pytest.fixture
def bundled_db_dir() -> Path:
    from lmsav import paths

    return Path(paths.bundled_database_dir())


def write_db(directory: Path, files: dict[str, str]) -> Path:
    """Write a signature database directory from {file name: text}."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def md5_line(data: bytes, name: str) -> str:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n"
