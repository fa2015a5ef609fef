"""`lmsav quarantine list|show|restore|delete` as an administrator uses them."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR


@pytest.fixture
def env(tmp_path, monkeypatch):
    cfg = tmp_path / "lmsav.toml"
    cfg.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setenv("LMSAV_CONFIG", str(cfg))
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False)

    files = tmp_path / "files"
    files.mkdir()
    return run, files


def quarantined(run, files, name="eicar.com", action="quarantine", store="quarantine"):
    path = files / name
    path.write_bytes(EICAR)
    assert run("scan", "--action", action, path).exit_code == 1
    listed = json.loads(run("quarantine", "list", "--store", store, "--json").output)
    return path, next(e["id"] for e in listed if e["original_path"] == str(path))


def test_list_and_show(env):
    run, files = env
    path, entry_id = quarantined(run, files)
    out = run("quarantine", "list").output.splitlines()
    assert out[0].split() == ["ID", "DATE", "(UTC)", "STATUS", "THREATS", "SIZE", "ORIGINAL",
                              "PATH"]
    assert out[1].startswith(entry_id) and out[1].endswith(f"68  {path}")
    assert "infected  Eicar-Test-Signature" in out[1]
    [entry] = json.loads(run("quarantine", "list", "--json").output)
    assert entry["id"] == entry_id and entry["threats"] == ["Eicar-Test-Signature"]
    assert entry["action"] == "quarantine" and entry["size"] == len(EICAR)

    shown = run("quarantine", "show", entry_id).output
    assert f"Original path:    {path}" in shown
    assert "Threats:          Eicar-Test-Signature" in shown
    assert "MD5:              44d88612fea8a8f36de82e1278abb02f" in shown
    record = json.loads(run("quarantine", "show", "--json", entry_id).output)
    assert record["original_path"] == str(path) and record["verdict"]["status"] == "infected"


def test_restore_refuses_to_overwrite_without_force(env):
    run, files = env
    path, entry_id = quarantined(run, files)
    path.write_text("a new file with the same name\n")
    result = run("quarantine", "restore", entry_id)
    assert result.exit_code == 2
    assert result.output == f"lmsav: error: {path} exists; use --force to overwrite it\n"
    assert path.read_text() == "a new file with the same name\n"
    result = run("quarantine", "restore", "--force", entry_id)
    assert result.exit_code == 0 and path.read_bytes() == EICAR
    assert json.loads(run("quarantine", "list", "--json").output) == []


def test_restore_to_another_path_and_keep(env):
    run, files = env
    path, entry_id = quarantined(run, files)
    other = files / "inspect.bin"
    result = run("quarantine", "restore", "--keep", "--to", other, entry_id)
    assert result.exit_code == 0
    assert result.output.strip() == f"restored {entry_id} to {other}"
    assert other.read_bytes() == EICAR and not path.exists()
    assert len(json.loads(run("quarantine", "list", "--json").output)) == 1


def test_unknown_ids_are_one_line_errors(env):
    run, _files = env
    for command in (("show",), ("restore",), ("delete",)):
        result = run("quarantine", *command, "20261125T134501Z-0b3f2a9c41de")
        assert result.exit_code == 2
        assert result.output.startswith(
            "lmsav: error: no quarantine entry '20261125T134501Z-0b3f2a9c41de'")
        assert result.output.count("\n") == 1
    result = run("quarantine", "show", "../../etc/passwd")
    assert result.exit_code == 2 and "no quarantine entry '../../etc/passwd'" in result.output


def test_delete(env):
    run, files = env
    _path, first = quarantined(run, files, "a.com")
    _path, second = quarantined(run, files, "b.com")
    result = run("quarantine", "delete", first, second)
    assert result.output.splitlines() == [f"deleted {first}", f"deleted {second}"]
    assert json.loads(run("quarantine", "list", "--json").output) == []


def test_backup_store_holds_originals_of_deleted_files(env):
    run, files = env
    path, entry_id = quarantined(run, files, action="delete", store="backup")
    assert not path.exists()
    assert json.loads(run("quarantine", "list", "--json").output) == []  # not in quarantine
    record = json.loads(run("quarantine", "show", "--store", "backup", "--json",
                            entry_id).output)
    assert record["action"] == "delete"
    assert run("quarantine", "restore", "--store", "backup", entry_id).exit_code == 0
    assert path.read_bytes() == EICAR
    assert os.listdir(files) == ["eicar.com"]
