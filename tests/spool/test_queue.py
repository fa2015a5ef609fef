"""The nqueue/ spool: entries are complete or absent, claimed once, retried, held, recovered."""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.spool import nqueue as queue_mod
from lmsav.spool.nqueue import SUBDIRS, Spool, SpoolEntry, SpoolError

ENV = Envelope(sender="ann@example.org", recipients=("bob@example.org", "cy@example.net"),
               arrived=0.0)
QUEUE_ID = "4XyZ1"

MESSAGES = {
    "crlf": b"From: ann@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
    "nul and no final newline": b"Subject: x\n\nab\x00cd\xff\xfe",
    "empty": b"",
    "only newlines": b"\n\n\n",
    "looks like a header": b"LMSAVQ1 {\"sender\": \"evil\"}\nSubject: y\n\nz",
    "large": os.urandom(3 << 20),
}


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    s = Spool(tmp_path / "nqueue")
    s.ensure()
    return s


def files(spool: Spool, state: str) -> list[str]:
    return sorted(os.listdir(spool.root / state))


class Crash(BaseException):
    """A process dying at this exact point: nothing after it runs, no cleanup is attempted."""


# -- layout and round trip -----------------------------------------------------------------------

def test_ensure_creates_the_four_directories_and_is_idempotent(tmp_path):
    spool = Spool(tmp_path / "a" / "nqueue")
    spool.ensure()
    spool.ensure()
    assert sorted(os.listdir(spool.root)) == sorted(SUBDIRS)
    # rwxrws---: the MTA's pipe user and the watcher share them through the group.
    for name in SUBDIRS:
        assert stat.S_IMODE(os.stat(spool.root / name).st_mode) == 0o2770
    assert stat.S_IMODE(os.stat(spool.root).st_mode) == 0o2770


def test_ensure_under_a_regular_file_is_a_spool_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SpoolError, match="cannot create spool"):
        Spool(tmp_path / "file" / "nqueue").ensure()


@pytest.mark.parametrize("name", MESSAGES)
def test_message_and_envelope_come_back_byte_exact(spool, name):
    data = MESSAGES[name]
    entry_id = spool.enqueue(ENV, data, QUEUE_ID)
    entry = spool.claim(entry_id)
    assert entry is not None
    assert spool.message(entry) == data
    assert entry.envelope.sender == ENV.sender
    assert entry.envelope.recipients == ENV.recipients
    assert entry.queue_id == QUEUE_ID
    assert entry.envelope.arrived == pytest.approx(time.time(), abs=60)
    assert (entry.attempts, entry.not_before, entry.reason) == (0, 0.0, "")


def test_a_stream_is_copied_in_chunks_byte_exact(spool):
    data = MESSAGES["large"] + b"\r\n.\r\n\x00"
    entry_id = spool.enqueue(ENV, io.BytesIO(data))
    assert spool.message(spool.get(entry_id)) == data


def test_unusual_envelopes_round_trip(spool):
    env = Envelope(sender="", recipients=("j\u00fcrgen@b\u00fccher.example", "\"a b\"@x.org"),
                   arrived=1_700_000_000.5)
    entry = spool.get(spool.enqueue(env, b"x"))
    assert entry.envelope == env


def test_entry_file_is_one_header_line_then_the_message(spool):
    entry_id = spool.enqueue(ENV, b"Subject: s\r\n\r\nb")
    path = spool.root / "new" / entry_id
    raw = path.read_bytes()
    header, message = raw.split(b"\n", 1)
    assert header.startswith(b"LMSAVQ1 {") and header.isascii()
    assert message == b"Subject: s\r\n\r\nb"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert files(spool, "tmp") == []


def test_ids_sort_by_arrival(spool):
    ids = [spool.enqueue(ENV, b"%d" % i) for i in range(20)]
    assert spool.pending() == ids
    assert [entry.id for _state, entry in spool.list()] == ids


@pytest.mark.parametrize("env", [
    Envelope("a@b", ()),
    Envelope("a@b", ("",)),
    Envelope("a@b", ("x@y\r\nRCPT TO:<z@w>",)),
    Envelope("a\nb@c", ("x@y",)),
    Envelope("a@b", ("x@y\x00",)),
    Envelope("a@b", ("x" * 999,)),
])
def test_bad_envelopes_are_refused_before_touching_the_disk(spool, env):
    with pytest.raises(SpoolError):
        spool.enqueue(env, b"x")
    assert files(spool, "new") == [] and files(spool, "tmp") == []


def test_a_queue_id_with_a_newline_is_refused(spool):
    with pytest.raises(SpoolError):
        spool.enqueue(Envelope("a@b", ("x@y",)), b"x", "Q\n1")
    assert files(spool, "new") == [] and files(spool, "tmp") == []


# -- durability ----------------------------------------------------------------------------------

class FailingReader(io.RawIOBase):
    """stdin that delivers some bytes, then breaks (the MTA's pipe died mid-message)."""

    def __init__(self, before: int, error: Exception):
        self.left = before
        self.error = error

    def read(self, size=-1):
        if self.left <= 0:
            raise self.error
        n = min(self.left, 1000 if size < 0 else size, 1000)
        self.left -= n
        return b"x" * n


@pytest.mark.parametrize("error", [OSError(errno.EIO, "Input/output error"), ValueError("bad")])
def test_a_read_failure_mid_message_leaves_nothing_in_new(spool, error):
    with pytest.raises(SpoolError):
        spool.enqueue(ENV, FailingReader(5000, error))
    assert files(spool, "new") == [] and files(spool, "tmp") == []


def test_disk_full_at_fsync_leaves_nothing_in_new(spool, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(queue_mod.os, "fsync", no_space)
    with pytest.raises(SpoolError, match="No space left on device"):
        spool.enqueue(ENV, b"x" * 100_000)
    monkeypatch.undo()
    assert files(spool, "new") == [] and files(spool, "tmp") == []


def test_failure_to_sync_new_after_the_rename_withdraws_the_entry(spool, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(queue_mod.os, "fsync", fsync)
    with pytest.raises(SpoolError):
        spool.enqueue(ENV, b"x")
    monkeypatch.undo()
    assert files(spool, "new") == [] and files(spool, "tmp") == []


def test_entry_is_synced_before_it_appears_in_new_and_new_is_synced_after(spool, monkeypatch):
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", Path(src).parent.name, Path(dst).parent.name))
        real_rename(src, dst)

    monkeypatch.setattr(queue_mod.os, "fsync", fsync)
    monkeypatch.setattr(queue_mod.os, "rename", rename)
    spool.enqueue(ENV, b"x")
    assert events == [
        ("fsync", "file", events[0][2]),
        ("rename", "tmp", "new"),
        ("fsync", "dir", str(spool.root / "new")),
    ]
    assert Path(events[0][2]).parent == spool.root / "tmp"


# -- pending and claim ---------------------------------------------------------------------------

def test_pending_reads_only_the_directory(spool, monkeypatch):
    ids = [spool.enqueue(ENV, b"x") for _ in range(3)]

    def no_open(*args, **kwargs):
        raise AssertionError("pending() opened a file")

    monkeypatch.setattr(queue_mod.os, "open", no_open)
    monkeypatch.setattr("builtins.open", no_open)
    assert spool.pending() == ids


def test_pending_ignores_files_that_are_not_entries(spool):
    (spool.root / "new" / "README").write_text("x")
    entry_id = spool.enqueue(ENV, b"x")
    assert spool.pending() == [entry_id]


def test_only_one_of_two_claims_wins(spool, tmp_path):
    entry_id = spool.enqueue(ENV, b"x")
    other = Spool(spool.root)  # another worker process
    first, second = spool.claim(entry_id), other.claim(entry_id)
    assert isinstance(first, SpoolEntry) and second is None
    assert files(spool, "work") == [entry_id] and files(spool, "new") == []


def test_racing_workers_claim_every_entry_exactly_once(spool):
    ids = [spool.enqueue(ENV, b"%d" % i) for i in range(200)]
    claimed: list[list[str]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def worker(n):
        mine = Spool(spool.root)
        barrier.wait()
        for entry_id in mine.pending():
            entry = mine.claim(entry_id)
            if entry is not None:
                claimed[n].append(entry.id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for part in claimed for i in part]
    assert sorted(everything) == sorted(ids)  # each id once, none missing


def test_claim_of_a_vanished_entry_is_none_and_bad_ids_are_refused(spool):
    assert spool.claim("1795615588696002168.20996.0cdc5741") is None
    for bad in ("../../etc/passwd", "x", "1795615588696002168.20996.0cdc5741/../x", ""):
        with pytest.raises(SpoolError, match="invalid spool entry id"):
            spool.claim(bad)


def test_complete_removes_the_entry_for_good(spool):
    entry = spool.claim(spool.enqueue(ENV, b"x"))
    spool.complete(entry)
    assert spool.list() == [] and files(spool, "work") == []


def test_complete_refuses_an_entry_that_is_not_claimed(spool):
    entry = spool.get(spool.enqueue(ENV, b"x"))
    with pytest.raises(SpoolError, match="is not in"):
        spool.complete(entry)
    assert spool.pending() == [entry.id]


def test_a_damaged_entry_is_held_not_processed(spool):
    name = "1795615588696002168.20996.0cdc5741"
    (spool.root / "new" / name).write_bytes(b"garbage without a header")
    assert spool.claim(name) is None
    [(state, entry)] = spool.list()
    assert state == "hold" and entry.reason.startswith("damaged")
    spool.delete(name)
    assert spool.list() == []


# -- retry, hold, release ------------------------------------------------------------------------

def test_retry_waits_counts_and_keeps_the_message(spool):
    data = b"Subject: r\r\n\r\n\x00"
    entry = spool.claim(spool.enqueue(ENV, data))
    before = time.time()
    assert spool.retry(entry, "reinjection refused:\n451 try later", 30.0, 5) is False
    assert files(spool, "work") == [] and files(spool, "tmp") == []
    assert spool.pending() == []
    assert spool.pending(now=before + 31) == [entry.id]
    again = spool.claim(entry.id)
    assert again.attempts == 1
    assert before + 30 <= again.not_before <= time.time() + 30
    assert again.reason == "reinjection refused: 451 try later"  # one line
    assert again.envelope == entry.envelope
    assert spool.message(again) == data


def test_retry_holds_after_max_attempts(spool):
    entry_id = spool.enqueue(ENV, b"x")
    for attempt in range(1, 3):
        entry = spool.claim(entry_id)
        assert spool.retry(entry, f"fail {attempt}", 0.0, 3) is False
        assert spool.pending(now=time.time() + 1) == [entry_id]
    entry = spool.claim(entry_id)
    assert spool.retry(entry, "fail 3", 0.0, 3) is True
    assert spool.pending(now=time.time() + 3600) == []
    [held] = spool.held()
    assert (held.id, held.attempts, held.reason) == (entry_id, 3, "fail 3")
    assert spool.message(held) == b"x"


def test_hold_then_release_starts_afresh(spool):
    entry = spool.claim(spool.enqueue(ENV, b"msg"))
    entry = spool.claim(entry.id) or entry
    spool.retry(entry, "first", 0.0, 10)
    entry = spool.claim(entry.id)
    spool.hold(entry, "policy said hold")
    assert [e.reason for e in spool.held()] == ["policy said hold"]
    assert spool.pending(now=time.time() + 3600) == []
    spool.release(entry.id)
    assert spool.held() == []
    assert spool.pending() == [entry.id]
    fresh = spool.claim(entry.id)
    assert (fresh.attempts, fresh.not_before, fresh.reason) == (0, 0.0, "")
    assert spool.message(fresh) == b"msg"


def test_release_of_an_entry_that_is_not_held_is_refused(spool):
    entry_id = spool.enqueue(ENV, b"x")
    with pytest.raises(SpoolError, match="not held"):
        spool.release(entry_id)
    with pytest.raises(SpoolError, match="no spool entry"):
        spool.release("1795615588696002168.20996.0cdc5741")


def test_delete_from_hold_and_new_but_not_work(spool):
    held = spool.claim(spool.enqueue(ENV, b"1"))
    spool.hold(held, "x")
    waiting = spool.enqueue(ENV, b"2")
    busy = spool.claim(spool.enqueue(ENV, b"3"))
    spool.delete(held.id)
    spool.delete(waiting)
    with pytest.raises(SpoolError, match="being processed"):
        spool.delete(busy.id)
    with pytest.raises(SpoolError, match="no spool entry"):
        spool.delete(waiting)
    with pytest.raises(SpoolError, match="invalid"):
        spool.delete("../work/" + busy.id)
    assert [(state, e.id) for state, e in spool.list()] == [("work", busy.id)]


def test_get_and_list_find_entries_in_every_state(spool):
    a = spool.enqueue(ENV, b"a")
    b = spool.claim(spool.enqueue(ENV, b"b")).id
    c = spool.claim(spool.enqueue(ENV, b"c"))
    spool.hold(c, "why")
    assert [(state, e.id) for state, e in spool.list()] == [("new", a), ("work", b),
                                                            ("hold", c.id)]
    assert spool.get(c.id).reason == "why"
    assert spool.get(b).path.parent.name == "work"
    with pytest.raises(SpoolError):
        spool.get("nope/../../x")


# -- recovery and crashes ------------------------------------------------------------------------

def test_recover_puts_claimed_entries_back_and_clears_old_tmp_files(spool):
    ids = [spool.enqueue(ENV, b"%d" % i) for i in range(3)]
    for entry_id in ids[:2]:
        spool.claim(entry_id)
    old, young = spool.root / "tmp" / "old", spool.root / "tmp" / "young"
    old.write_bytes(b"half a message")
    young.write_bytes(b"being written")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert Spool(spool.root).recover() == 2
    assert files(spool, "work") == []
    assert spool.pending() == ids
    assert files(spool, "tmp") == ["young"]


def crash_on_unlink_of(monkeypatch, directory: Path):
    """Make the process 'die' when it unlinks the old copy of an entry in ``directory``."""
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if Path(path).parent == directory:
            raise Crash()
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(queue_mod.os, "unlink", unlink)


def test_crash_during_retry_leaves_a_duplicate_that_recovery_resolves(spool, monkeypatch):
    entry = spool.claim(spool.enqueue(ENV, b"once"))
    crash_on_unlink_of(monkeypatch, spool.root / "work")
    with pytest.raises(Crash):
        spool.retry(entry, "smtp down", 0.0, 5)
    monkeypatch.undo()
    # The entry now exists twice: the old revision in work/, the new one in new/.
    assert len(files(spool, "work")) == 1 and len(files(spool, "new")) == 1
    assert spool.get(entry.id).attempts == 1  # the newer metadata is what everyone sees

    restarted = Spool(spool.root)
    assert restarted.recover() == 0  # the stale copy was removed, not put back
    assert files(spool, "work") == []
    assert restarted.pending(now=time.time() + 1) == [entry.id]
    again = restarted.claim(entry.id)
    assert (again.attempts, again.reason) == (1, "smtp down")
    assert restarted.message(again) == b"once"
    assert restarted.claim(entry.id) is None  # no second copy left to process


def test_crash_during_hold_keeps_the_held_copy(spool, monkeypatch):
    entry = spool.claim(spool.enqueue(ENV, b"x"))
    crash_on_unlink_of(monkeypatch, spool.root / "work")
    with pytest.raises(Crash):
        spool.hold(entry, "admin must look")
    monkeypatch.undo()
    Spool(spool.root).recover()
    assert spool.pending() == [] and files(spool, "work") == []
    assert [e.reason for e in spool.held()] == ["admin must look"]


def test_two_revisions_in_new_are_one_pending_entry_and_the_newer_is_claimed(spool):
    entry = spool.claim(spool.enqueue(ENV, b"x"))
    stale = (spool.root / "work" / entry.id).read_bytes()
    spool.retry(entry, "later", 0.0, 5)
    (spool.root / "new" / entry.id).write_bytes(stale)  # the old revision, back by a crash
    assert spool.pending(now=time.time() + 1) == [entry.id]
    assert len(files(spool, "new")) == 1  # the stale revision is gone
    assert Spool(spool.root).claim(entry.id).attempts == 1


def test_a_claim_never_replaces_a_copy_still_in_work(spool, monkeypatch):
    """Worker A retries with no delay; worker B claims the new revision before A unlinks."""
    a = spool.claim(spool.enqueue(ENV, b"payload"))
    b_spool = Spool(spool.root)
    claimed = []
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if Path(path).parent == spool.root / "work" and not claimed:
            claimed.append(b_spool.claim(b_spool.pending(now=time.time() + 1)[0]))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(queue_mod.os, "unlink", unlink)
    spool.retry(a, "busy", 0.0, 5)
    monkeypatch.undo()
    [b] = claimed
    assert b is not None and b.attempts == 1
    assert files(spool, "work") == [b.path.name]  # A removed only its own, older copy
    assert b_spool.message(b) == b"payload"
