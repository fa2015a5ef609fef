"""`lmsav scan --json` against its documented schema (lmsav/data/scan-result.schema.json) and
the README's rule: every object's status is the worst of its own and its members'."""

from __future__ import annotations

import base64
import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import lmsav
from lmsav.cli import main
from tests.conftest import EICAR

SCHEMA_FILE = Path(lmsav.__file__).parent / "data" / "scan-result.schema.json"
ORDER = ["clean", "error", "corrupted", "protected", "suspicious", "infected"]
RANK = {status: n for n, status in enumerate(ORDER)}


def tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_of(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def mail_with_attachment(data: bytes) -> bytes:
    return (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: invoice\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=BB\r\n\r\n"
            b"--BB\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            b"--BB\r\nContent-Type: application/octet-stream; name=e.com\r\n"
            b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.b64encode(data) +
            b"\r\n--BB--\r\n")


def zip_with_wrong_size(members: dict[str, bytes], damaged: str) -> bytes:
    """A zip whose member ``damaged`` claims 7 bytes more than it holds, in both headers:
    libarchive's complaint about it ends with a newline."""
    data = bytearray(zip_of(members))
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        info = zf.getinfo(damaged)
    local = info.header_offset
    central = next(i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)
                   and data[i + 46:i + 46 + len(damaged)] == damaged.encode())
    struct.pack_into("<I", data, local + 22, info.file_size + 7)
    struct.pack_into("<I", data, central + 24, info.file_size + 7)
    return bytes(data)


@pytest.fixture
def inputs(tmp_path) -> Path:
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "clean.txt").write_text("hello\n")
    (root / "eicar.com").write_bytes(EICAR)
    (root / "eicar.zip").write_bytes(zip_of({"eicar.com": EICAR}))
    (root / "eicar.tar.gz").write_bytes(tar_gz({"eicar.com": EICAR}))
    (root / "msg.eml").write_bytes(mail_with_attachment(EICAR))
    inner = tar_gz({"docs/readme.txt": b"fine\n", "bin/eicar.com": EICAR})
    (root / "nested.zip").write_bytes(zip_of({"readme.txt": b"fine\n", "inner.tar.gz": inner}))
    text = b"hello world " * 2000
    (root / "corrupted.zip").write_bytes(zip_with_wrong_size({"a.txt": text}, "a.txt"))
    (root / "corrupted-infected.zip").write_bytes(
        zip_with_wrong_size({"eicar.com": EICAR, "a.txt": text}, "a.txt"))
    return root


def scan_json(tmp_path, *args) -> list[dict]:
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    result = CliRunner().invoke(main, ["--config", str(config), "scan", "--json",
                                       *map(str, args)], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def check_worst_rule(node: dict) -> None:
    """``status`` is the worst of the node's own status and its children's, at every level."""
    children = node.get("children", [])
    for child in children:
        check_worst_rule(child)
    own = node.get("own_status", node["status"])
    assert own != node["status"] or "own_status" not in node, node["path"]
    worst = max([RANK[own], *(RANK[child["status"]] for child in children)])
    assert node["status"] == ORDER[worst], node["path"]


def tree_threats(node: dict) -> list[dict]:
    found = [{"path": node["path"], **t} for t in node["threats"]]
    for child in node.get("children", []):
        found += tree_threats(child)
    return found


def test_schema_is_valid_draft_2020_12():
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_line_matches_the_schema_and_every_node_the_worst_status_rule(tmp_path, inputs):
    missing = tmp_path / "does-not-exist"
    lines = scan_json(tmp_path, "-j", "2", inputs, missing)
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for line in lines:
        errors = [e.message for e in validator.iter_errors(line)]
        assert not errors, (line, errors)
    summary = lines.pop()["summary"]
    assert all("summary" not in line for line in lines)
    by_name = {Path(line["path"]).name: line for line in lines}
    assert set(by_name) == {"clean.txt", "eicar.com", "eicar.zip", "eicar.tar.gz", "msg.eml",
                            "nested.zip", "corrupted.zip", "corrupted-infected.zip",
                            "does-not-exist"}
    for line in lines:
        check_worst_rule(line["result"])
        assert line["status"] == line["result"]["status"], line["path"]
        assert line["threats"] == tree_threats(line["result"]), line["path"]
    for name in ("eicar.zip", "eicar.tar.gz", "msg.eml", "nested.zip", "eicar.com"):
        assert by_name[name]["result"]["status"] == "infected", name
    # Each container level on the way to the threat says so, not only the top.
    nested = by_name["nested.zip"]["result"]
    inner = next(c for c in nested["children"] if c["path"].endswith("//inner.tar.gz"))
    assert inner["status"] == "infected" and inner["own_status"] == "clean"
    assert by_name["clean.txt"]["status"] == "clean"
    assert by_name["does-not-exist"]["status"] == "error"
    damaged = by_name["corrupted.zip"]["result"]
    assert damaged["status"] == "corrupted" and "own_status" not in damaged
    both = by_name["corrupted-infected.zip"]["result"]
    assert (both["status"], both["own_status"]) == ("infected", "corrupted")
    assert "\n" not in both["reason"] and "expected" in both["reason"]
    assert summary["infected_files"] == 6 and summary["errors"] == 1


def test_the_schema_rejects_a_multi_line_reason_and_an_unknown_status():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    node = {"path": "a.zip", "type": "zip", "size": 1, "status": "corrupted", "threats": [],
            "reason": "corrupted: wrong size\n"}
    line = {"path": "a.zip", "status": "corrupted", "threats": [], "result": node}
    assert not validator.is_valid(line)
    node["reason"] = "corrupted: wrong size"
    assert validator.is_valid(line)
    assert not validator.is_valid({**line, "status": "broken"})
