"""The setup manifest: every change recorded at once, re-runs update entries in place."""

from __future__ import annotations

import json

import pytest

from lmsav.setup.manifest import Manifest, ManifestError, file_hash


def test_record_saves_at_once_and_updates_in_place(tmp_path):
    manifest = Manifest.load(tmp_path / "setup")
    manifest.record("file", "file:/etc/x", path="/etc/x", created=True, sha256="a")
    on_disk = json.loads((tmp_path / "setup" / "manifest.json").read_text())
    assert on_disk["entries"] == [{"kind": "file", "key": "file:/etc/x", "path": "/etc/x",
                                   "created": True, "sha256": "a"}]
    # A second run did not create what the first one did, and finds a newer hash.
    manifest.record("file", "file:/etc/x", created=False, sha256="b")
    again = Manifest.load(tmp_path / "setup")
    assert len(again.entries) == 1
    assert again.get("file:/etc/x")["created"] is True
    assert again.get("file:/etc/x")["sha256"] == "b"
    assert (tmp_path / "setup" / "manifest.json").stat().st_mode & 0o777 == 0o600


def test_original_bytes_are_never_overwritten(tmp_path):
    manifest = Manifest.load(tmp_path / "setup")
    manifest.record("mta-file", "mta-file:/etc/postfix/main.cf", original_hash="first")
    manifest.record("mta-file", "mta-file:/etc/postfix/main.cf", original_hash="second",
                    after_hash="later")
    entry = Manifest.load(tmp_path / "setup").get("mta-file:/etc/postfix/main.cf")
    assert entry["original_hash"] == "first" and entry["after_hash"] == "later"


def test_waits_for_the_state_directory(tmp_path):
    """Before setup has made /var/lib/lmsav with its owner, nothing is written (and nothing
    creates that directory with the wrong owner); the next save writes everything."""
    state = tmp_path / "state"
    manifest = Manifest(state / "setup" / "manifest.json")
    manifest.record("user", "user:lmsav", name="lmsav", created=True)
    assert not state.exists()
    state.mkdir()
    manifest.record("dir", "dir:/var/lib/lmsav", path="/var/lib/lmsav", created=True)
    assert [e["key"] for e in Manifest.load(state / "setup").entries] == [
        "user:lmsav", "dir:/var/lib/lmsav"]


def test_forget_and_delete(tmp_path):
    manifest = Manifest.load(tmp_path / "setup")
    manifest.record("unit", "unit:a", name="a")
    manifest.forget("unit:a")
    assert Manifest.load(tmp_path / "setup").entries == []
    manifest.delete()
    assert not (tmp_path / "setup").exists()


@pytest.mark.parametrize("text", ["{", "[]", '{"format": 99, "entries": []}'])
def test_unreadable_manifest_is_an_error(tmp_path, text):
    (tmp_path / "setup").mkdir()
    (tmp_path / "setup" / "manifest.json").write_text(text)
    with pytest.raises(ManifestError, match="manifest"):
        Manifest.load(tmp_path / "setup")


def test_file_hash(tmp_path):
    assert file_hash(tmp_path / "absent") is None
    (tmp_path / "f").write_bytes(b"abc")
    assert file_hash(tmp_path / "f") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
