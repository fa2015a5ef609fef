"""Shared fixtures: test samples built at run time (no live sample is stored in the tree)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

# Built from pieces so this file itself never matches a signature.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$" + b"EICAR-STANDARD-ANTIVIRUS-" + b"TEST-FILE!$H+H*"
BODY_SAMPLE = b"xx LMSAV" + b"-BODY-TEST:" + b"\xaa\xbb" + b"-SAMPLE xx"
YARA_SAMPLE = b"xx LMSAV" + b"-YARA-TEST-" + b"SAMPLE xx"
HASH_SAMPLE = b"lmsav hash signature test" + b" sample\n"


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
