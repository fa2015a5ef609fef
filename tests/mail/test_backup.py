"""Backup store: originals kept byte for byte, durably, readable by the owner only."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from lmsav.mail.backup import (
    BackupEntry,
    BackupError,
    BackupStore,
    id_time,
    new_id,
)
from lmsav.scanner.objects import Status, Threat

T0 = 1_795_614_301.25  # 2026-11-25 13:45:01.25 UTC


class Clock:
    """A settable clock, so tests control creation times."""

    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def info(**over) -> dict:
    base = {
        "envelope": {"sender": "alice@example.org", "recipients": ["bob@example.com"]},
        "group": "default",
        "status": "infected",
        "verdict": {"status": "infected", "path": "mail.eml",
                    "children": [{"path": "mail.eml//2:invoice.zip", "status": "infected"}]},
        "actions": ["backup", "warn"],
        "time": T0,
        "database_version": "2026112501",
        "subject": "Invoice",
        "message_id": "<1@example.org>",
        "threats": ["Eicar-Test-Signature"],
    }
    base.update(over)
    return base


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> BackupStore:
    return BackupStore(tmp_path / "state" / "backup", clock=clock)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


MESSAGES = {
    "crlf": b"From: a@b\r\nTo: c@d\r\nSubject: hi\r\n\r\nline one\r\nline two\r\n",
    "binary": bytes(range(256)) * 4,
    "latin1": "Subject: caf\u00e9\n\n\u00e9t\u00e9\n".encode("latin-1") + b"\xff\xfe\x00",
    "no-final-newline": b"Subject: x\n\nbody without newline",
    "empty": b"",
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_round_trip_is_byte_exact(store: BackupStore, name: str):
    message = MESSAGES[name]
    entry_id = store.save(message, info())
    assert store.extract(entry_id) == message
    assert (store.root / entry_id / "message.eml").read_bytes() == message


def test_show_returns_info_plus_id_created_size(store: BackupStore, clock: Clock):
    message = MESSAGES["crlf"]
    given = info(subject="Caf\u00e9 \u2603")
    entry_id = store.save(message, given)
    shown = store.show(entry_id)
    for key, value in given.items():
        assert shown[key] == value
    assert shown["id"] == entry_id
    assert shown["created"] == T0
    assert shown["size"] == len(message)
    json.dumps(shown)  # JSON-friendly for `lmsav backup show --json`
    assert given == info(subject="Caf\u00e9 \u2603")  # the caller's dict is left alone


def test_undecodable_header_text_in_info_is_kept(store: BackupStore):
    # Headers decoded with surrogateescape carry lone surrogates; they must not break a backup.
    subject = b"Caf\xe9".decode("utf-8", "surrogateescape")
    entry_id = store.save(b"Subject: Caf\xe9\n\n", info(subject=subject))
    assert store.show(entry_id)["subject"] == subject
    assert store.list()[0].subject == subject


def test_id_format_and_time(store: BackupStore):
    entry_id = store.save(b"x", info())
    assert entry_id.startswith("20261125T134501Z-")
    assert len(entry_id.split("-")[1]) == 12
    assert id_time(entry_id) == pytest.approx(T0, abs=1e-6)


def test_ids_sort_by_time_within_one_second():
    ids = [new_id(T0 + i / 1000) for i in range(50)]
    assert sorted(ids) == ids
    assert len({new_id(T0) for _ in range(200)}) == 200


def test_list_is_newest_first_with_fields(store: BackupStore, clock: Clock):
    saved = []
    for i, when in enumerate([T0 + 10, T0, T0 + 86_400, T0 + 0.5]):
        clock.now = when
        saved.append((when, store.save(b"m" * (i + 1), info(subject=f"s{i}"))))
    entries = store.list()
    assert [e.id for e in entries] == [i for _, i in sorted(saved, reverse=True)]
    newest = entries[0]
    assert newest == BackupEntry(
        id=saved[2][1], created=T0 + 86_400, size=3, sender="alice@example.org",
        recipients=("bob@example.com",), subject="s2", status="infected", group="default",
        threats=("Eicar-Test-Signature",),
    )


def test_flat_envelope_keys_are_understood(store: BackupStore):
    flat = info(sender="carol@example.net", recipients=["dave@example.com", "eve@example.com"])
    del flat["envelope"]
    store.save(b"x", flat)
    [entry] = store.list()
    assert entry.sender == "carol@example.net"
    assert entry.recipients == ("dave@example.com", "eve@example.com")


def test_list_of_missing_store_is_empty(tmp_path: Path):
    store = BackupStore(tmp_path / "nowhere")
    assert store.list() == []
    assert not (tmp_path / "nowhere").exists()


def test_permissions_are_owner_only_whatever_the_umask(store: BackupStore):
    old = os.umask(0)
    try:
        entry_id = store.save(b"secret mail", info())
    finally:
        os.umask(old)
    assert mode(store.root) == 0o700
    assert mode(store.root / entry_id) == 0o700
    assert mode(store.root / entry_id / "message.eml") == 0o600
    assert mode(store.root / entry_id / "info.json") == 0o600
    assert sorted(os.listdir(store.root / entry_id)) == ["info.json", "message.eml"]


def test_delete(store: BackupStore, clock: Clock):
    keep = store.save(b"keep", info())
    clock.now += 1
    gone = store.save(b"gone", info())
    store.delete(gone)
    assert [e.id for e in store.list()] == [keep]
    assert sorted(os.listdir(store.root)) == [keep]
    with pytest.raises(BackupError, match=f"no backup entry '{gone}'"):
        store.extract(gone)


def test_unknown_id(store: BackupStore):
    store.save(b"x", info())
    unknown = "20200101T000000Z-000000000000"
    for op in (store.show, store.extract, store.delete):
        with pytest.raises(BackupError) as err:
            op(unknown)
        assert str(err.value) == f"no backup entry '{unknown}'"


@pytest.mark.parametrize("bad", [
    "../x", "..", ".", "", "/etc/passwd", "20261125T134501Z-0b3f2a9c41de/../../x",
    "../20261125T134501Z-0b3f2a9c41de", ".tmp-20261125T134501Z-0b3f2a9c41de",
    "20261125T134501Z-0B3F2A9C41DE", "20261125T134501Z-0b3f2a9c41de\n",
    "20261125T134501Z-0b3f2a9c41d", "x" * 300, None, 5,
])
def test_invalid_ids_are_refused_before_touching_the_filesystem(tmp_path: Path, bad):
    # A store whose root is not even there: only validation can answer.
    store = BackupStore(tmp_path / "absent")
    for op in (store.show, store.extract, store.delete):
        with pytest.raises(BackupError, match="invalid backup id"):
            op(bad)
    assert not (tmp_path / "absent").exists()


def test_traversal_cannot_reach_a_real_file(tmp_path: Path, store: BackupStore):
    store.save(b"x", info())
    (tmp_path / "state" / "info.json").write_text('{"stolen": true}')
    with pytest.raises(BackupError, match="invalid backup id"):
        store.show("..")


def test_crash_leftover_tmp_dir_is_not_listed(store: BackupStore, clock: Clock):
    real = store.save(b"complete", info())
    # What a crash between writing the files and the final rename leaves behind.
    leftover = store.root / ".tmp-20261125T134502Z-00000abcdef1"
    leftover.mkdir(mode=0o700)
    (leftover / "message.eml").write_bytes(b"half")
    (store.root / ".del-20261125T134503Z-00000abcdef2").mkdir()
    assert [e.id for e in store.list()] == [real]
    with pytest.raises(BackupError, match="invalid backup id"):
        store.extract(leftover.name)


def test_damaged_entry_is_listed_not_hidden(store: BackupStore):
    entry_id = store.save(b"x", info())
    (store.root / entry_id / "info.json").write_text("{not json")
    [entry] = store.list()
    assert entry.id == entry_id and entry.status == "damaged" and entry.size == 1
    with pytest.raises(BackupError, match="is damaged"):
        store.show(entry_id)
    assert store.extract(entry_id) == b"x"  # the original is still recoverable
    store.delete(entry_id)
    assert store.list() == []


def test_prune(store: BackupStore, clock: Clock):
    old = [store.save(b"old", info())]
    clock.now += 1
    old.append(store.save(b"old2", info()))
    clock.now = T0 + 10 * 86_400
    new = store.save(b"new", info())
    stale_tmp = store.root / ".tmp-20261125T134502Z-00000abcdef1"
    stale_tmp.mkdir()
    os.utime(stale_tmp, (T0, T0))
    fresh_tmp = store.root / f".tmp-{new[:-1]}0"
    fresh_tmp.mkdir()
    os.utime(fresh_tmp, (T0 + 10 * 86_400 - 60,) * 2)

    assert store.prune(86_400, now=T0 + 10 * 86_400) == 2
    assert [e.id for e in store.list()] == [new]
    assert not stale_tmp.exists()
    assert fresh_tmp.exists()  # may be a save in progress
    assert store.prune(86_400, now=T0 + 10 * 86_400) == 0


def test_typed_values_in_info_are_stored_as_json(store: BackupStore):
    entry_id = store.save(b"x", info(status=Status.INFECTED,
                                     threats=[Threat("Eicar-Test-Signature", "main.hdb")],
                                     spool=Path("/var/lib/lmsav/nqueue/1")))
    shown = store.show(entry_id)
    assert shown["status"] == "infected"
    assert shown["threats"] == [{"name": "Eicar-Test-Signature", "source": "main.hdb"}]
    assert shown["spool"] == "/var/lib/lmsav/nqueue/1"
    [entry] = store.list()
    assert entry.threats == ("Eicar-Test-Signature",)


def test_unserialisable_info_fails_without_leaving_anything(store: BackupStore):
    with pytest.raises(BackupError, match="not JSON-serialisable"):
        store.save(b"x", info(verdict=object()))
    assert store.list() == []


def test_unwritable_root_is_an_error_not_a_silent_success(tmp_path: Path):
    # A file where the state directory should be: fails even for root.
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(BackupError, match="cannot create backup directory"):
        BackupStore(tmp_path / "state" / "backup").save(b"x", info())
