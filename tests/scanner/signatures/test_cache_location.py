"""A database directory lmsav cannot write to never makes a scan fail: it is compiled into the
cache directory of the layout (/var/cache/lmsav for service accounts, ~/.cache/lmsav for a
person), an up-to-date compiled file already there or beside it is used, else it is compiled
into memory for the process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.scanner.signatures import cachedir
from lmsav.scanner.signatures.database import CACHE_NAME, Database, default_cache_path
from tests.conftest import EICAR


@pytest.fixture
def read_only(tmp_path, monkeypatch):
    """The bundled database copied to a directory this process is told it cannot write (root
    can write anywhere, so it is told), and a cache directory of its own."""
    db = tmp_path / "db"
    shutil.copytree(paths.bundled_database_dir(), db, ignore=shutil.ignore_patterns(".compiled*"))
    real_access = os.access
    monkeypatch.setattr(cachedir.os, "access",
                        lambda path, mode: Path(path) != db and real_access(path, mode))
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache" / "lmsav")
    return db


def test_compiled_into_the_layouts_cache_directory(read_only, tmp_path):
    db = Database.load(read_only)
    assert db.cache_path.parent == tmp_path / "cache" / "lmsav"
    assert not (read_only / CACHE_NAME).exists()
    assert Database.load(read_only).loaded_from_cache


def test_an_up_to_date_file_beside_the_database_is_used_as_it_is(read_only, tmp_path):
    Database.load(read_only, cache_path=read_only / CACHE_NAME)  # as root compiled it
    assert default_cache_path(read_only) == read_only / CACHE_NAME
    assert Database.load(read_only).loaded_from_cache
    assert not (tmp_path / "cache").exists()


def test_with_no_writable_cache_it_is_compiled_into_memory_and_still_scans(read_only, tmp_path,
                                                                        monkeypatch):
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    real_access = cachedir.os.access
    monkeypatch.setattr(cachedir.os, "access", lambda path, mode: not str(path).startswith(
        (str(read_only), str(blocked))) and real_access(path, mode))
    monkeypatch.setattr(paths, "cache_dir", lambda: blocked / "lmsav")
    from lmsav.scanner.engine import Engine

    db = Database.load(read_only)
    assert db.cache_path.parent == cachedir.memory_dir()
    names = [t.name for _, t in Engine(db).scan_bytes(EICAR).threats]
    assert names == ["Eicar-Test-Signature"]
    assert not (blocked / "lmsav").exists() and not (read_only / CACHE_NAME).exists()


def test_the_memory_directory_goes_away_with_the_process(tmp_path):
    code = ("from lmsav.scanner.signatures import cachedir; "
            "print(cachedir.memory_dir() == cachedir.memory_dir(), cachedir.memory_dir())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == "True"
    assert not Path(out[1]).exists()


# -- on a server's paths, as its accounts -----------------------------------------------------------


@pytest.fixture
def served(sysroot):
    """A root-owned database directory (as /var/lib/clamav is clamav's) and a file to scan, in a
    tests.sysroot namespace; the service account lmsav and a person, ann."""
    root = Path(tempfile.mkdtemp(prefix="lmsav-rodb-", dir="/tmp"))
    root.chmod(0o755)
    db = root / "db"
    shutil.copytree(paths.bundled_database_dir(), db, ignore=shutil.ignore_patterns(".compiled*"))
    sample = root / "eicar.com"
    sample.write_bytes(EICAR)
    sample.chmod(0o644)
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.run("useradd", "--create-home", "--home-dir", str(root / "ann"), "--shell",
                "/bin/bash", "ann")
    try:
        yield sysroot, db, sample, root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def lmsav_as(sysroot, user: str, *args: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMSAV_", "XDG_"))}
    return sysroot.run(sysroot.program("lmsav"), *args, user=user, env=env, check=False)


def cache_of(sysroot, user: str, db: Path) -> str:
    proc = lmsav_as(sysroot, user, "db", "info", "-d", str(db), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["cache"]


@pytest.mark.integration
def test_the_service_user_scans_a_read_only_database(served):
    sysroot, db, sample, _root = served
    # No /var/cache/lmsav yet, and /var/cache is root's: compiled in memory, and found.
    scan = lmsav_as(sysroot, "lmsav", "scan", "-d", str(db), str(sample))
    assert scan.returncode == 1, scan.stdout + scan.stderr
    assert "Eicar-Test-Signature FOUND" in scan.stdout
    in_memory = cache_of(sysroot, "lmsav", db)
    assert not Path(in_memory).exists() and not (db / CACHE_NAME).exists()
    # With the system cache directory there (lmsav spool check asks for it): compiled there once.
    sysroot.run("install", "-d", "-o", "lmsav", "-g", "lmsav", "-m", "2770", "/var/cache/lmsav")
    cached = cache_of(sysroot, "lmsav", db)
    assert Path(cached).parent == Path("/var/cache/lmsav")
    assert sysroot.path(cached).is_file()
    assert lmsav_as(sysroot, "lmsav", "scan", "-d", str(db), str(sample)).returncode == 1


@pytest.mark.integration
def test_a_person_compiles_into_their_own_cache(served):
    sysroot, db, sample, root = served
    assert Path(cache_of(sysroot, "ann", db)).parent == root / "ann" / ".cache" / "lmsav"
    scan = lmsav_as(sysroot, "ann", "scan", "-d", str(db), str(sample))
    assert scan.returncode == 1 and "Eicar-Test-Signature FOUND" in scan.stdout
