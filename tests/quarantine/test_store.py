"""The quarantine store on a real file system: durable entries, private modes, faithful restore."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest

from lmsav.quarantine.store import FileStore, StoreError, file_facts, replace_file

ROOT = os.geteuid() == 0


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def store(tmp_path) -> FileStore:
    return FileStore(tmp_path / "state" / "quarantine")


def keep(store: FileStore, path, **extra) -> str:
    st = os.lstat(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        return store.put(fd, {**file_facts(str(path), st), "status": "infected",
                              "threats": ["X"], "action": "quarantine", **extra})
    finally:
        os.close(fd)


def test_put_keeps_content_and_record_privately(store, tmp_path):
    src = tmp_path / "f.bin"
    data = bytes(range(256)) * 4097  # more than one copy chunk
    src.write_bytes(data)
    os.chmod(src, 0o755)
    fd = os.open(src, os.O_RDONLY)
    os.lseek(fd, 1000, os.SEEK_SET)  # put reads from the start whatever the offset
    entry_id = store.put(fd, {**file_facts(str(src), os.stat(src)), "status": "infected"})
    os.close(fd)
    entry = store.root / entry_id
    assert (entry / "content").read_bytes() == data
    assert mode(store.root) == mode(entry) == 0o700
    assert mode(entry / "content") == mode(entry / "info.json") == 0o600
    info = store.info(entry_id)
    assert info["id"] == entry_id and info["size"] == len(data)
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["md5"] == hashlib.md5(data).hexdigest()
    assert info["original_path"] == str(src) and info["mode"] == 0o755
    assert info["owner"] and info["mode_octal"] == "0755"
    assert not [p for p in store.root.iterdir() if p.name.startswith(".")]


def test_put_bytes_and_list_newest_first(store):
    clock = iter([1000.0, 3000.0, 2000.0])
    store = FileStore(store.root, clock=lambda: next(clock))
    ids = [store.put(b"x" * n, {"original_path": f"/f{n}", "threats": ["T"],
                                "status": "infected", "action": "delete"}) for n in (1, 2, 3)]
    entries = store.list()
    assert [e.id for e in entries] == [ids[1], ids[2], ids[0]]
    assert entries[0].to_json() == {"id": ids[1], "created": 3000.0, "size": 2,
                                    "original_path": "/f2", "status": "infected",
                                    "threats": ["T"], "action": "delete"}


def test_damaged_entries_are_listed_and_leftovers_are_not(store):
    good = store.put(b"a", {"original_path": "/a"})
    bad = store.put(b"b", {"original_path": "/b"})
    (store.root / bad / "info.json").write_text("{not json")
    (store.root / ".tmp-20261125T134501Z-0b3f2a9c41de").mkdir()
    entries = {e.id: e for e in store.list()}
    assert set(entries) == {good, bad}
    assert entries[bad].status == "damaged"
    with pytest.raises(StoreError, match="is damaged"):
        store.info(bad)
    store.delete(bad)
    assert [e.id for e in store.list()] == [good]


def test_unknown_and_malformed_ids_are_one_line_errors(store):
    with pytest.raises(StoreError, match=r"^no quarantine entry '20261125T134501Z-0b3f2a9c41de'"):
        store.info("20261125T134501Z-0b3f2a9c41de")
    for bad in ("../etc", "", "x" * 5):
        with pytest.raises(StoreError, match="^no quarantine entry"):
            store.restore(bad)
    with pytest.raises(StoreError, match="^no quarantine entry"):
        store.delete("20261125T134501Z-0b3f2a9c41de")


def test_restore_puts_back_content_mode_and_times(store, tmp_path):
    src = tmp_path / "dir" / "file.txt"
    src.parent.mkdir()
    src.write_bytes(b"content\n")
    os.chmod(src, 0o2750)
    os.utime(src, ns=(1_300_000_000_000_000_007, 1_400_000_000_000_000_009))
    entry_id = keep(store, src)
    src.unlink()
    restored = store.restore(entry_id)
    assert restored.path == str(src) and restored.warnings == []
    st = os.lstat(src)
    assert src.read_bytes() == b"content\n"
    assert stat.S_IMODE(st.st_mode) == 0o2750
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_300_000_000_000_000_007,
                                               1_400_000_000_000_000_009)
    assert sorted(os.listdir(src.parent)) == ["file.txt"]  # no temporary file left
    assert store.info(entry_id)  # the store keeps it; the command deletes it afterwards


def test_restore_never_overwrites_unless_forced(store, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"kept")
    entry_id = keep(store, src)
    src.write_bytes(b"newer")
    with pytest.raises(StoreError, match=r"f exists; use --force to overwrite it$"):
        store.restore(entry_id)
    assert src.read_bytes() == b"newer"
    store.restore(entry_id, force=True)
    assert src.read_bytes() == b"kept"
    other = tmp_path / "elsewhere"
    store.restore(entry_id, to=str(other))
    assert other.read_bytes() == b"kept"
    with pytest.raises(StoreError, match="is a directory"):
        store.restore(entry_id, to=str(tmp_path), force=True)
    with pytest.raises(StoreError, match="does not exist"):
        store.restore(entry_id, to=str(tmp_path / "no" / "such" / "f"))


def test_restore_refuses_tampered_content(store, tmp_path):
    src = tmp_path / "f"
    src.write_bytes(b"original")
    entry_id = keep(store, src)
    src.unlink()
    (store.root / entry_id / "content").write_bytes(b"tampered")
    with pytest.raises(StoreError, match="does not match the recorded sha256"):
        store.restore(entry_id)
    assert not src.exists() and os.listdir(tmp_path) == ["state"]


def test_restore_without_the_right_to_chown_warns(store, tmp_path, monkeypatch):
    src = tmp_path / "f"
    src.write_bytes(b"x")
    entry_id = keep(store, src)
    src.unlink()

    def refuse(*_args):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    restored = store.restore(entry_id)
    assert src.read_bytes() == b"x"
    assert len(restored.warnings) == 1 and "not restored" in restored.warnings[0]


def test_replace_file_is_atomic_and_keeps_owner_and_mode(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    os.chmod(target, 0o604)
    if ROOT:
        os.chown(target, 65534, 65534)
    like = os.lstat(target)
    replace_file(str(target), b"new", like)
    st = os.lstat(target)
    assert target.read_bytes() == b"new" and stat.S_IMODE(st.st_mode) == 0o604
    assert (st.st_uid, st.st_gid) == (like.st_uid, like.st_gid)

    def abort():
        raise RuntimeError("changed")

    with pytest.raises(RuntimeError):
        replace_file(str(target), b"newer", os.lstat(target), abort)
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f"]


def test_record_is_json_and_must_be(store):
    with pytest.raises(StoreError, match="not JSON"):
        store.put(b"x", {"bad": object()})
    assert store.list() == []
    entry_id = store.put(b"x", {"verdict": {"nested": [1, 2]}})
    assert json.loads((store.root / entry_id / "info.json").read_text())["verdict"] == {
        "nested": [1, 2]}
