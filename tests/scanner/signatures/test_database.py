"""Database directories: build, compiled cache reuse and invalidation, errors, self-test data."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database, DatabaseError
from lmsav.scanner.signatures.errors import SignatureError
from tests.conftest import EICAR, md5_line, write_db

NDB = "Test.Body:0:*:6c6d7361762d646220746573742d626f6479\n"  # "lmsav-db test-body"


def test_build_then_load_uses_the_cache(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB, "b.hdb": md5_line(EICAR, "Eicar")})
    first = Database.load(db_dir)
    assert not first.loaded_from_cache
    assert first.counts["ndb"] == 1 and first.counts["hdb"] == 1
    second = Database.load(db_dir)
    assert second.loaded_from_cache
    assert Engine(second).scan_bytes(b"..lmsav-db test-body..").status == Status.INFECTED


def test_changed_source_is_recompiled(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB})
    Database.load(db_dir)
    time.sleep(0.01)
    (db_dir / "a.ndb").write_text(NDB + "Second:0:*:7365636f6e642d7369676e6174757265\n")
    db = Database.load(db_dir)
    assert not db.loaded_from_cache
    assert db.counts["ndb"] == 2
    assert Engine(db).scan_bytes(b"a second-signature b").threats[0][1].name == "Second"


def test_touched_but_unchanged_source_reuses_the_cache(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB})
    Database.load(db_dir)
    later = time.time() + 5
    os.utime(db_dir / "a.ndb", (later, later))
    assert Database.load(db_dir).loaded_from_cache


def test_malformed_line_names_file_and_line(tmp_path):
    db_dir = write_db(tmp_path / "db", {"bad.hdb": md5_line(EICAR, "Ok") + "nothex:12:Name\n"})
    with pytest.raises(SignatureError) as err:
        Database.load(db_dir)
    assert str(err.value).startswith("bad.hdb:2: ")


def test_bad_yara_rule_file_is_left_out_and_named(tmp_path):
    db_dir = write_db(tmp_path / "db", {"r.yar": "rule ok { condition: true }\n\nrule bad {",
                                        "a.ndb": NDB})
    assert Database.load(db_dir).not_used == ["r.yar: line 3: error[E001]: syntax error"]


def test_empty_or_missing_directory_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatabaseError, match="no signatures found"):
        Database.load(tmp_path / "empty")
    with pytest.raises(DatabaseError, match="not found"):
        Database.load(tmp_path / "missing")


def test_files_not_executed_are_counted_and_listed(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB, "x.cbc": "ClamBCafhm...\n",
                                        "t.crb": "Trusted.Cert-1;Trusted:a:b:c:1:0:0\n"})
    db = Database.load(db_dir)
    assert db.not_used == ["t.crb: Authenticode trust rules are not applied",
                           "x.cbc: bytecode signatures are not executed"]
    assert db.skipped == {"cbc": 1, "crb": 1} and db.counts == {"ndb": 1}


def test_pua_files_are_off_as_in_clamav(tmp_path):
    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB, "p.hdu": md5_line(EICAR, "PUA.X")})
    db = Database.load(db_dir)
    assert db.skipped == {"hdu": 1} and "p.hdu: potentially unwanted" in db.not_used[0]
    assert Engine(db).scan_bytes(EICAR).status == Status.CLEAN


def test_cache_path_falls_back_when_directory_not_writable(tmp_path, monkeypatch):
    from lmsav.scanner.signatures import database as dbmod

    from lmsav import paths

    db_dir = write_db(tmp_path / "db", {"a.ndb": NDB})
    real_access = os.access
    monkeypatch.setattr(dbmod.os, "access",
                        lambda p, mode: Path(p) != db_dir and real_access(p, mode))
    monkeypatch.setattr(paths, "cache_dir", lambda: tmp_path / "cache" / "lmsav")
    path = dbmod.default_cache_path(db_dir)
    assert path.parent == tmp_path / "cache" / "lmsav"
    db = Database.load(db_dir, cache_path=path)
    assert db.cache_path == path and path.exists()


def test_bundled_database_detects_its_samples(bundled_db_dir):
    db = Database.load(bundled_db_dir)
    eng = Engine(db)
    assert len(db.samples) >= 4
    for sample in db.samples:
        names = [t.name for _, t in eng.scan_bytes(sample.data).threats]
        assert (sample.expect in names) if sample.expect else names == []


def test_yara_rules_detect(tmp_path):
    db_dir = write_db(tmp_path / "db", {
        "r.yar": 'rule find_marker { strings: $a = "marker-123" condition: $a }\n'
    })
    verdict = Engine(Database.load(db_dir)).scan_bytes(b"xx marker-123 yy")
    assert [(t.name, t.signature_source) for _, t in verdict.threats] == [
        ("YARA.find_marker", "r.yar")
    ]


def test_build_in_child_compiles_and_reports_errors(tmp_path):
    from lmsav.scanner.signatures.errors import SignatureError
    from tests.conftest import EICAR, md5_line, write_db

    db_dir = write_db(tmp_path / "db", {"a.hdb": md5_line(EICAR, "Child.Built")})
    db = Database.load(db_dir, build_in_child=True)
    assert db.loaded_from_cache is False and db.counts["hdb"] == 1
    assert Database.load(db_dir, build_in_child=True).loaded_from_cache is True
    bad = write_db(tmp_path / "bad", {"b.ndb": "Bad:0:*:4142zz\n"})
    with pytest.raises(SignatureError) as err:
        Database.load(bad, build_in_child=True)
    assert str(err.value).startswith("b.ndb:1: ")
