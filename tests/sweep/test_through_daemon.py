"""`lmsav scan --daemon` against a real lmsav daemon: result lines, JSON lines that follow the
schema, and clamdscan's summary."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import lmsav
from lmsav.cli import main
from lmsav.sweep.options import ScanParameters
from lmsav.sweep.through_daemon import Reply, print_reply
from tests.conftest import EICAR
from tests.daemon.conftest import daemon  # noqa: F401 - the running daemon fixture

pytestmark = pytest.mark.integration

SCHEMA = json.loads((Path(lmsav.__file__).parent / "data" / "scan-result.schema.json")
                    .read_text())


@pytest.fixture
def files(tmp_path) -> Path:
    root = tmp_path / "files"
    (root / "sub").mkdir(parents=True)
    (root / "clean.txt").write_bytes(b"just text\n")
    (root / "sub" / "eicar.com").write_bytes(EICAR)
    return root


@pytest.fixture
def scan(daemon):  # noqa: F811 - the fixture imported above
    def invoke(*args):
        return CliRunner().invoke(
            main, ["--config", str(daemon.config), "scan", "--daemon", "--socket",
                   str(daemon.sock), *map(str, args)], catch_exceptions=False)

    return invoke


def check_schema(lines: list[dict]) -> None:
    validator = jsonschema.Draft202012Validator(SCHEMA)
    for line in lines:
        assert not [e.message for e in validator.iter_errors(line)], line


def test_json_is_one_line_per_reply_then_the_summary(scan, files, tmp_path):
    missing = tmp_path / "missing"
    result = scan("--json", files, missing)
    assert result.exit_code == 1
    lines = [json.loads(line) for line in result.output.splitlines()]
    check_schema(lines)
    eicar = str(files / "sub" / "eicar.com")
    assert lines[:2] == [
        {"path": eicar, "status": "infected",
         "threats": [{"path": eicar, "name": "Eicar-Test-Signature"}]},
        {"path": str(missing), "status": "error", "threats": [],
         "reason": "lstat() failed: No such file or directory."},
    ]
    summary = lines[2]["summary"]
    assert (summary["infected_files"], summary["errors"]) == (1, 1)
    assert len(lines) == 3


def test_json_stream_has_a_line_per_file_with_verbose(scan, files):
    result = scan("--json", "--stream", "-v", "--no-summary", files)
    lines = [json.loads(line) for line in result.output.splitlines()]
    check_schema(lines)
    assert sorted((Path(line["path"]).name, line["status"]) for line in lines) == [
        ("clean.txt", "clean"), ("eicar.com", "infected")]
    assert result.exit_code == 1


def test_text_mode_prints_the_clamdscan_summary(scan, files):
    result = scan(files)
    lines = result.output.splitlines()
    assert lines[0] == f"{files}/sub/eicar.com: Eicar-Test-Signature FOUND"
    assert lines[1:4] == ["", "----------- SCAN SUMMARY -----------", "Infected files: 1"]
    assert re.fullmatch(r"Time: \d+\.\d{3} sec \(\d+ m \d+ s\)", lines[4])
    assert lines[5].startswith("Start Date: ") and lines[6].startswith("End Date:   ")
    assert len(lines) == 7 and result.exit_code == 1


def test_errors_are_counted_in_the_summary_and_no_summary_drops_it(scan, files, tmp_path):
    missing = tmp_path / "missing"
    result = scan("-i", files / "clean.txt", missing)
    lines = result.output.splitlines()
    # -i, as clamscan's: errors are still printed.
    assert lines[0] == f"{missing}: lstat() failed: No such file or directory. ERROR"
    assert "Infected files: 0" in lines and "Total errors: 1" in lines
    assert result.exit_code == 2
    quiet = scan("--no-summary", "-v", files / "clean.txt")
    assert quiet.output.splitlines() == [f"{files}/clean.txt: OK"]
    assert quiet.exit_code == 0


def test_found_and_error_replies_are_coloured_only_when_asked(capsys):
    params = ScanParameters(targets=("x",), use_daemon=True)
    found = Reply("/d/e", "FOUND", "Eicar-Test-Signature", "/d/e: Eicar-Test-Signature FOUND")
    error = Reply("/d/m", "ERROR", "lstat() failed", "/d/m: lstat() failed ERROR")
    for reply in (found, error):
        print_reply(reply, params, colour=True)
        print_reply(reply, params, colour=False)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "\x1b[31m\x1b[1m/d/e: Eicar-Test-Signature FOUND\x1b[0m"
    assert out[1] == "/d/e: Eicar-Test-Signature FOUND"
    assert out[2] == "\x1b[33m\x1b[1m/d/m: lstat() failed ERROR\x1b[0m"
    assert out[3] == "/d/m: lstat() failed ERROR"
