"""`lmsav db build|info|test --json`: JSON Lines as lmsav(1) MACHINE OUTPUT defines them — one
line for build and info, one line per self-test sample."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import write_db
from tests.jsonlines import one_object, records

NDB = "Custom.Sig:0:*:637573746f6d2d6d61726b6572\n"


@pytest.fixture
def run(tmp_path, monkeypatch):
    (tmp_path / "none.toml").write_text("")
    monkeypatch.setenv("LMSAV_CONFIG", str(tmp_path / "none.toml"))
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_build_and_info_print_one_line(run, tmp_path):
    db = write_db(tmp_path / "db", {"x.ndb": NDB, "broken.ndb": "Broken:0:*:zz\n"})
    failed = run("db", "build", db, "--json")
    assert failed.exit_code == 2 and failed.stdout == ""
    assert failed.stderr.startswith("lmsav: error: broken.ndb:1:")
    (db / "broken.ndb").unlink()

    built = run("db", "build", db, "--json")
    assert built.exit_code == 0
    result = one_object(built.stdout)
    assert result["signatures"] == 1 and result["directory"] == str(db)
    info = run("db", "info", "-d", db, "--json")
    assert info.exit_code == 0
    assert one_object(info.stdout)["counts"] == {"ndb": 1}


def test_selftest_prints_a_line_per_sample(run, bundled_db_dir):
    tested = run("db", "test", "-d", bundled_db_dir, "--json")
    assert tested.exit_code == 0
    samples = records(tested.stdout)
    assert samples and all(s["ok"] is True for s in samples)
    eicar = next(s for s in samples if s["expected"] == "Eicar-Test-Signature")
    assert eicar["found"] == ["Eicar-Test-Signature"]
    assert any(s["expected"] is None and s["found"] == [] for s in samples)  # a clean sample


def test_selftest_failure_is_in_the_records_and_the_exit_status(run, tmp_path, bundled_db_dir):
    db = tmp_path / "db"
    db.mkdir()
    (db / "selftest.toml").write_bytes((bundled_db_dir / "selftest.toml").read_bytes())
    (db / "x.ndb").write_text(NDB)
    tested = run("db", "test", "-d", db, "--json")
    assert tested.exit_code == 2
    samples = records(tested.stdout)
    assert any(s["ok"] is False and s["found"] == [] for s in samples)
