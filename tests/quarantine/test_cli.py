"""`lmsav quarantine list|show|restore|delete` as an administrator uses them."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from lmsav.cli import main
from tests.conftest import EICAR
from tests.jsonlines import one_object, records


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
    listed = records(run("quarantine", "list", "--store", store, "--json").output)
    return path, next(e["id"] for e in listed if e["original_path"] == str(path))


def test_list_and_show(env):
    run, files = env
    path, entry_id = quarantined(run, files)
    out = run("quarantine", "list").output.splitlines()
    assert out[0].split() == ["ID", "DATE", "(UTC)", "STATUS", "THREATS", "SIZE", "ORIGINAL",
                              "PATH"]
    assert out[1].startswith(entry_id) and out[1].endswith(f"68  {path}")
    assert "infected  Eicar-Test-Signature" in out[1]
    [entry] = records(run("quarantine", "list", "--json").output)
    assert entry["id"] == entry_id and entry["threats"] == ["Eicar-Test-Signature"]
    assert entry["action"] == "quarantine" and entry["size"] == len(EICAR)

    shown = run("quarantine", "show", entry_id).output
    assert f"Original path:    {path}" in shown
    assert "Threats:          Eicar-Test-Signature" in shown
    assert "MD5:              44d88612fea8a8f36de82e1278abb02f" in shown
    record = one_object(run("quarantine", "show", "--json", entry_id).output)
    assert record["original_path"] == str(path) and record["verdict"]["status"] == "infected"


def test_json_is_one_object_a_line_and_nothing_for_no_entries(env):
    run, files = env
    assert run("quarantine", "list").output.splitlines() == [
        "ID  DATE (UTC)  STATUS  THREATS  SIZE  ORIGINAL PATH"]
    assert run("quarantine", "list", "--json").output == ""
    quarantined(run, files, "a.com")
    quarantined(run, files, "b.com")
    listed = records(run("quarantine", "list", "--json").output)
    assert [e["original_path"] for e in listed] == [str(files / "b.com"), str(files / "a.com")]


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
    assert run("quarantine", "list", "--json").output == ""


def test_restore_to_another_path_and_keep(env):
    run, files = env
    path, entry_id = quarantined(run, files)
    other = files / "inspect.bin"
    result = run("quarantine", "restore", "--keep", "--to", other, entry_id)
    assert result.exit_code == 0
    assert result.output.strip() == f"restored {entry_id} to {other}"
    assert other.read_bytes() == EICAR and not path.exists()
    assert len(records(run("quarantine", "list", "--json").output)) == 1


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
    assert run("quarantine", "list", "--json").output == ""


def test_backup_store_holds_originals_of_deleted_files(env):
    run, files = env
    path, entry_id = quarantined(run, files, action="delete", store="backup")
    assert not path.exists()
    assert run("quarantine", "list", "--json").output == ""  # not in quarantine
    record = one_object(run("quarantine", "show", "--store", "backup", "--json",
                            entry_id).output)
    assert record["action"] == "delete"
    assert run("quarantine", "restore", "--store", "backup", entry_id).exit_code == 0
    assert path.read_bytes() == EICAR
    assert os.listdir(files) == ["eicar.com"]


def test_the_man_page_examples_run_as_written(env, monkeypatch):
    """Each EXAMPLES line of lmsav-quarantine(1), the page's id replaced by a real one."""
    page = (Path(__file__).resolve().parents[2] / "man" / "lmsav-quarantine.1").read_text()
    block = page.split(".SH EXAMPLES\n.nf\n", 1)[1].split(".fi\n", 1)[0].replace("\\-", "-")
    run, files = env
    monkeypatch.chdir(files)
    _path, entry_id = quarantined(run, files)
    for line in block.splitlines():
        words = shlex.split(line.replace("20261125T134501Z-0b3f2a9c41de", entry_id))
        assert words[:2] == ["lmsav", "quarantine"], line
        result = run(*words[1:])
        assert result.exit_code == 0, (line, result.output)
    assert (files / "inspect.bin").read_bytes() == EICAR
