"""The index of kept originals: what the console's list pages answer from, kept in step with
the real stores (FileStore, BackupStore) on disk."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from lmsav import paths
from lmsav.mail.backup import BackupStore
from lmsav.quarantine import index as index_mod
from lmsav.quarantine import kept_row
from lmsav.quarantine.index import Filters, IndexUnavailable, StoresIndex, parse_cursor
from lmsav.quarantine.store import FileStore

T0 = 1_795_614_301.25  # 2026-11-25 13:45:01.25 UTC
LONG_AGO = 1_700_000_000  # a directory mtime old enough to be trusted


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Stores:
    """The three real stores of one state directory, entries made at chosen times."""

    def __init__(self, state: Path):
        self.state = state
        self.clock = Clock()
        self.quarantine = FileStore(paths.quarantine_dir(state), "quarantine", clock=self.clock)
        self.files = FileStore(paths.backup_files_dir(state), "backup", clock=self.clock)
        self.mail = BackupStore(paths.backup_dir(state), clock=self.clock)
        self.aged = 0

    def file(self, store: FileStore, at: float, path="/home/alice/invoice.zip",
             status="infected", threats=("Eicar-Signature",), action="quarantine") -> str:
        self.clock.now = at
        return store.put(b"content of " + path.encode(), {
            "original_path": path, "status": status, "threats": list(threats),
            "action": action})

    def message(self, at: float, sender="alice@example.org",
                recipients=("bob@example.net", "carol@example.com"), subject="Invoice 42",
                status="infected", threats=("Win.Trojan.Agent",)) -> str:
        self.clock.now = at
        return self.mail.save(b"Subject: " + subject.encode("utf-8", "surrogateescape")
                              + b"\n\nbody\n", {
            "sender": sender, "recipients": list(recipients), "subject": subject,
            "status": status, "threats": list(threats),
            "groups": [{"group": "staff", "recipients": list(recipients), "status": status,
                        "action": "cure"}],
            "actions": ["cure"], "group": "staff"})

    def age_roots(self) -> None:
        """Directory mtimes in the past, as a store left alone for a while has them (later
        ones at each call, as changes move them)."""
        self.aged += 1
        for root in (self.quarantine.root, self.files.root, self.mail.root):
            if root.exists():
                os.utime(root, (LONG_AGO + self.aged, LONG_AGO + self.aged))


@pytest.fixture
def stores(tmp_path) -> Stores:
    return Stores(tmp_path / "state")


@pytest.fixture
def index(tmp_path, stores) -> StoresIndex:
    idx = StoresIndex(tmp_path / "state" / "web" / "stores.sqlite", stores.state,
                      clock=stores.clock)
    yield idx
    idx.close()


def ids(rows) -> list[str]:
    return [r.id for r in rows]


def test_rows_carry_what_the_list_shows_newest_first(stores, index):
    q = stores.file(stores.quarantine, T0, "/srv/share/x.exe", threats=("A", "B"))
    b = stores.file(stores.files, T0 + 1, "/home/bob/doc.pdf", status="suspicious",
                    threats=("Heuristics.Phishing",), action="cure")
    m = stores.message(T0 + 2)
    report = index.sync()
    assert set(report.listed) == {"quarantine", "file", "mail"} and report.added == 3
    rows, cursor = index.search()
    assert cursor is None
    assert [(r.kind, r.id) for r in rows] == [("mail", m), ("file", b), ("quarantine", q)]
    mail, file, quarantined = rows
    assert (mail.sender, mail.recipients, mail.subject, mail.groups, mail.action) == (
        "alice@example.org", ("bob@example.net", "carol@example.com"), "Invoice 42",
        ("staff",), "cure")
    assert mail.status == "infected" and mail.threats == ("Win.Trojan.Agent",)
    assert mail.size == len(stores.mail.extract(m))
    assert (file.original_path, file.status, file.threats, file.action) == (
        "/home/bob/doc.pdf", "suspicious", ("Heuristics.Phishing",), "cure")
    assert quarantined.threats == ("A", "B") and quarantined.created == pytest.approx(T0)
    assert quarantined.size == len(b"content of /srv/share/x.exe")


def test_filters_and_count(stores, index):
    stores.file(stores.quarantine, T0, "/home/Alice/setup.exe", threats=("Win.Trojan.Agent",))
    stores.file(stores.quarantine, T0 + 10, "/tmp/readme.html", status="suspicious",
                threats=("Html.Phishing.Bank",))
    stores.file(stores.files, T0 + 20, "/srv/x.doc", threats=("Doc.Dropper.Emotet",),
                action="delete")
    stores.message(T0 + 30, sender="dave@example.org", subject="Your parcel",
                   threats=("Js.Downloader",))
    stores.message(T0 + 40, recipients=("ALICE@example.net",), subject="Payment",
                   status="suspicious", threats=("Heuristics.Encrypted.Zip",))
    index.sync()

    def subjects(**f):
        rows, _ = index.search(**f)
        assert index.count(**f) == len(rows)
        return [r.original_path or r.subject for r in rows]

    assert subjects(kind="quarantine") == ["/tmp/readme.html", "/home/Alice/setup.exe"]
    assert subjects(kind="file") == ["/srv/x.doc"]
    assert subjects(kind="mail") == ["Payment", "Your parcel"]
    assert subjects(status="suspicious") == ["Payment", "/tmp/readme.html"]
    # text: a substring of path, sender, recipients, subject or threat, whatever the case
    assert subjects(text="alice") == ["Payment", "/home/Alice/setup.exe"]
    assert subjects(text="DAVE@") == ["Your parcel"]
    assert subjects(text="parcel") == ["Your parcel"]
    assert subjects(text="emotet") == ["/srv/x.doc"]
    assert subjects(text="%") == [] and subjects(text="_") == []  # no LIKE wildcards
    assert subjects(threat="phishing") == ["/tmp/readme.html"]
    assert subjects(threat="alice") == []  # the threat filter looks at threats only
    assert subjects(since=T0 + 10, until=T0 + 30) == ["/srv/x.doc", "/tmp/readme.html"]
    assert subjects(kind="mail", status="suspicious", text="pay") == ["Payment"]
    assert index.count() == 5


def test_keyset_pages_cover_every_row_once_while_entries_arrive(stores, index):
    made = [stores.file(stores.quarantine, T0 + i, f"/f/{i}") for i in range(23)]
    made += [stores.message(T0 + i + 0.5) for i in range(7)]
    index.sync()
    seen, cursor, pages = [], None, 0
    while True:
        rows, cursor = index.search(before=cursor, limit=10)
        seen += ids(rows)
        pages += 1
        if pages == 1:  # newer entries arriving meanwhile do not shift the pages
            stores.file(stores.quarantine, T0 + 1000, "/f/new")
            stores.age_roots()
            index.sync()
        if cursor is None:
            break
    assert pages == 3
    assert seen == [e.id for e in sorted(
        [*stores.quarantine.list(), *stores.mail.list()], key=lambda e: e.created,
        reverse=True)][1:]
    assert sorted(seen) == sorted(made)


def test_entries_with_the_same_time_page_by_kind_and_id(stores, index):
    made = sorted(stores.file(stores.quarantine, T0) for _ in range(5))
    index.sync()
    first, cursor = index.search(limit=3)
    second, last = index.search(before=cursor, limit=3)
    assert ids(first) + ids(second) == made[::-1] and last is None


def test_bad_cursor_kind_and_limit(index):
    index.sync()
    for bad in ("x", "12-quarantine-../../etc", "12-other-20261125T134501Z-0b3f2a9c41de",
                "-1-mail-20261125T134501Z-0b3f2a9c41de"):
        with pytest.raises(ValueError):
            index.search(before=bad)
    with pytest.raises(ValueError):
        Filters(kind="spool")
    assert parse_cursor("12-mail-20261125T134501Z-0b3f2a9c41de") == (
        12, "mail", "20261125T134501Z-0b3f2a9c41de")
    assert index.search(limit=0) == ([], None) and index.search(limit=10**9) == ([], None)


def test_damaged_entries_are_listed_as_damaged(stores, index):
    good = stores.file(stores.quarantine, T0)
    no_info = stores.file(stores.quarantine, T0 + 1)
    (stores.quarantine.root / no_info / "info.json").unlink()
    not_json = stores.message(T0 + 2)
    (stores.mail.root / not_json / "info.json").write_bytes(b'{"status": "inf')
    not_object = stores.message(T0 + 3)
    (stores.mail.root / not_object / "info.json").write_text("[1, 2]")
    odd = stores.message(T0 + 4)
    (stores.mail.root / odd / "info.json").write_text(
        '{"created": "yesterday", "size": true, "threats": 5, "recipients": {"a": 1},'
        ' "subject": "\\udcff\\u00e9t\\u00e9", "sender": null, "groups": "staff"}')
    link = stores.file(stores.files, T0 + 5)
    info = stores.files.root / link / "info.json"
    info.rename(info.with_name("elsewhere.json"))
    info.symlink_to("elsewhere.json")  # never followed
    index.sync()
    rows = {r.id: r for r in index.search()[0]}
    assert rows[good].status == "infected"
    for damaged in (no_info, not_json, not_object, link):
        assert rows[damaged].status == "damaged" and rows[damaged].size > 0
    assert rows[odd].status == "" and rows[odd].subject == "?été"
    assert rows[odd].threats == () and rows[odd].sender == ""
    assert index.count(status="damaged") == 4


def test_sync_reads_only_new_entries_and_drops_vanished_ones(stores, index, monkeypatch):
    first = [stores.file(stores.quarantine, T0 + i) for i in range(5)]
    index.sync()
    reads = []
    original = index_mod.read_row
    monkeypatch.setattr(index_mod, "read_row",
                        lambda kind, root, i: reads.append(i) or original(kind, root, i))
    stores.age_roots()
    assert index.sync().listed == ("quarantine",)  # its mtime moved: listed once more
    assert reads == []  # but no record read again
    assert index.sync().listed == ()  # nothing changed: three stats, nothing listed
    new = stores.file(stores.quarantine, T0 + 10)
    stores.quarantine.delete(first[0])
    stores.age_roots()
    report = index.sync()
    assert (report.listed, report.added, report.dropped) == (("quarantine",), 1, 1)
    assert reads == [new]
    assert sorted(ids(index.search()[0])) == sorted([*first[1:], new])


def test_a_directory_changed_just_now_is_listed_again(stores, index):
    stores.file(stores.quarantine, T0)
    root = stores.quarantine.root
    os.utime(root, ns=(int(T0 * 1e9), int(T0 * 1e9)))
    stores.clock.now = T0 + 0.5  # the change may be followed by another in the same tick
    assert "quarantine" in index.sync().listed
    assert index.sync().listed == ("quarantine",)
    stores.clock.now = T0 + index_mod.SETTLE_SECONDS + 1
    assert index.sync().listed == ("quarantine",)
    assert index.sync().listed == ()


def test_forget_and_refresh_after_the_console_acted(stores, index):
    q = stores.file(stores.quarantine, T0)
    m = stores.message(T0 + 1)
    index.sync()
    stores.quarantine.delete(q)
    index.forget("quarantine", q)
    assert ids(index.search()[0]) == [m]
    assert index.refresh("mail", m).id == m
    stores.mail.delete(m)
    assert index.refresh("mail", m) is None and index.search() == ([], None)
    assert index.get("mail", m) is None
    with pytest.raises(ValueError):
        index.refresh("spool", m)


def test_missing_stores_and_links_are_no_entries(stores, index, tmp_path):
    assert index.sync().added == 0 and index.search() == ([], None)
    stores.file(stores.quarantine, T0)
    target = tmp_path / "elsewhere"
    target.mkdir()
    (stores.quarantine.root / "20261125T134501Z-0b3f2a9c41de").symlink_to(target)
    (stores.quarantine.root / ".tmp-20261125T134502Z-0b3f2a9c41de").mkdir()
    index.sync()
    assert index.count() == 1


def test_the_file_is_private_and_a_damaged_one_is_rebuilt(stores, index):
    stores.file(stores.quarantine, T0)
    index.sync()
    assert stat.S_IMODE(os.stat(index.db_path).st_mode) == 0o600
    index.close()
    index.db_path.write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{index.db_path}{suffix}").unlink(missing_ok=True)
    fresh = StoresIndex(index.db_path, stores.state)
    fresh.sync()
    assert fresh.count() == 1
    fresh.close()


def test_another_schema_version_is_started_afresh(stores, index):
    stores.file(stores.quarantine, T0)
    index.sync()
    index.close()
    with sqlite3.connect(index.db_path) as conn:
        conn.execute("PRAGMA user_version = 99")
    again = StoresIndex(index.db_path, stores.state)
    assert again.count() == 0  # an empty index of this version…
    again.sync()
    assert again.count() == 1  # …filled by the next sync
    again.close()


def test_an_index_that_cannot_be_written_is_one_error(tmp_path, stores):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    idx = StoresIndex(blocker / "stores.sqlite", stores.state)
    with pytest.raises(IndexUnavailable, match="stores.sqlite"):
        idx.sync()


def test_a_moved_state_directory_is_indexed_anew(stores, index, tmp_path):
    stores.file(stores.quarantine, T0)
    index.sync()
    other = Stores(tmp_path / "other")
    other.file(other.quarantine, T0 + 5, "/other")
    moved = StoresIndex(index.db_path, other.state)
    moved.sync()
    assert [r.original_path for r in moved.search()[0]] == ["/other"]
    moved.close()


def test_row_from_a_nested_envelope():
    row = kept_row.row_from_record("mail", "20261125T134501Z-0b3f2a9c41de", {
        "envelope": {"sender": "", "recipients": ["x@example.org"]},
        "threats": [{"name": "Eicar"}], "status": "infected"})
    assert (row.sender, row.recipients, row.threats) == ("", ("x@example.org",), ("Eicar",))


def test_a_store_that_cannot_be_listed_is_a_problem_reported_once(stores, index, caplog):
    stores.file(stores.quarantine, T0)
    paths.backup_dir(stores.state).mkdir(parents=True)
    paths.backup_files_dir(stores.state).write_text("not a directory")
    report = index.sync()
    assert report.problems == (f"cannot list {stores.files.root}: Not a directory",)
    assert index.count() == 1  # the other stores are indexed all the same
    index.sync()
    assert sum("cannot list" in r.getMessage() for r in caplog.records) == 1
    paths.backup_files_dir(stores.state).unlink()
    assert index.sync().problems == ()


def test_the_benchmark_fixture_writes_what_the_stores_read(tmp_path, monkeypatch):
    from bench import web_fixture

    monkeypatch.setattr(web_fixture, "DAMAGED_EVERY", 10)
    state = tmp_path / "state"
    web_fixture.populate(state, quarantine=30, mail=20, files=10)
    quarantined = FileStore(paths.quarantine_dir(state)).list()
    kept_mail = BackupStore(paths.backup_dir(state)).list()
    assert len(quarantined) == 30 and len(kept_mail) == 20
    assert sum(e.status == "damaged" for e in quarantined) == 3
    good = next(e for e in quarantined if e.status != "damaged")
    assert good.original_path.startswith("/") and good.size > 0
    mail = next(e for e in kept_mail if e.status != "damaged")
    assert mail.sender and mail.recipients and mail.subject
    index = StoresIndex(tmp_path / "stores.sqlite", state)
    assert index.sync().added == 60
    assert index.count(status="damaged") == 3 + 1 + 2
    index.close()
