"""lmsav.spool.queue_ops on a real spool: hold, release, requeue and delete keep nqueue's rules
(one rename takes an entry from the watcher, work/ is touched only while nobody holds the
watch lock), and a worker's claim and the administrator never both get an entry."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import time

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.spool.nqueue import Spool, SpoolError
from lmsav.spool.queue_ops import HELD_REASON, QueueOps, list_entries
from lmsav.spool.watcher import DeliveredStore


@pytest.fixture
def spool(tmp_path) -> Spool:
    spool = Spool(tmp_path / "nqueue")
    spool.ensure()
    return spool


def enqueue(spool: Spool, n: int = 0) -> str:
    return spool.enqueue(Envelope("ann@example.org", (f"u{n}@example.org",)),
                         f"Subject: {n}\n\nbody {n}\n".encode(), queue_id=f"Q{n}")


def where(spool: Spool, entry_id: str) -> list[str]:
    """Every directory holding a file of the entry (two would be a duplicate)."""
    return sorted(state for state in ("new", "work", "hold")
                  for name in os.listdir(spool.root / state) if name.startswith(entry_id))


def test_hold_then_release_resets_and_keeps_the_message(spool):
    entry_id = enqueue(spool)
    ops = QueueOps(spool)
    assert ops.hold(entry_id) == "held from new/"
    assert where(spool, entry_id) == ["hold"]
    held = spool.get(entry_id)
    assert (held.reason, held.attempts, held.queue_id) == (HELD_REASON, 0, "Q0")
    assert ops.hold(entry_id) == "already held"
    assert spool.pending() == []  # the watcher no longer sees it

    assert ops.release(entry_id) == "released"
    assert where(spool, entry_id) == ["new"]
    assert spool.pending() == [entry_id]
    assert spool.message(spool.get(entry_id)) == b"Subject: 0\n\nbody 0\n"
    with pytest.raises(SpoolError, match="is not held"):
        ops.release(entry_id)


def test_requeue_makes_a_waiting_entry_due_now_with_no_attempts(spool):
    entry_id = enqueue(spool)
    claimed = spool.claim(entry_id)
    spool.retry(claimed, "451 try later", delay=3600, max_attempts=5)
    waiting = spool.get(entry_id)
    assert waiting.attempts == 1 and waiting.not_before > time.time() + 3000
    assert spool.pending() == []

    assert QueueOps(spool).requeue(entry_id) == "requeued from new/"
    again = spool.get(entry_id)
    assert (again.attempts, again.not_before, again.reason) == (0, 0.0, "")
    assert spool.pending() == [entry_id] and where(spool, entry_id) == ["new"]


def test_hold_keeps_attempts_and_takes_a_reason(spool):
    entry_id = enqueue(spool)
    spool.retry(spool.claim(entry_id), "451 try later", delay=0, max_attempts=5)
    QueueOps(spool).hold(entry_id, "wait for the customer")
    held = spool.get(entry_id)
    assert (held.attempts, held.reason) == (1, "wait for the customer")
    assert QueueOps(spool).hold(entry_id, "wait for the customer") == "already held"
    assert QueueOps(spool).hold(entry_id, "call the sender") == "already held; reason changed"
    assert spool.get(entry_id).reason == "call the sender" and where(spool, entry_id) == ["hold"]
    assert QueueOps(spool).requeue(entry_id) == "requeued from hold/"
    assert spool.get(entry_id).attempts == 0


def _hold_watch_lock(root, ready, done):
    fd = os.open(root / "watch.lock", os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    done.wait(30)


def test_work_entries_are_left_alone_while_a_watcher_holds_the_lock(spool):
    entry_id = enqueue(spool, 1)
    other = enqueue(spool, 2)
    assert spool.claim(entry_id) is not None  # a worker is on it
    ctx = multiprocessing.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_watch_lock, args=(spool.root, ready, done))
    holder.start()
    try:
        assert ready.wait(10)
        ops = QueueOps(spool)
        for action in (ops.hold, ops.requeue, ops.delete):
            with pytest.raises(SpoolError, match=f"spool entry {entry_id} is in work/ and a "
                                                 "spool watcher holds .*watch.lock: it is being "
                                                 "processed; left alone"):
                action(entry_id)
            assert where(spool, entry_id) == ["work"]
        assert ops.hold(other) == "held from new/"  # new/ is fine while the watcher runs
    finally:
        done.set()
        holder.join(10)

    # The watcher is gone: what it left in work/ may be handled now.
    assert ops.requeue(entry_id) == "requeued from work/"
    assert where(spool, entry_id) == ["new"] and spool.get(entry_id).attempts == 0
    spool.claim(entry_id)
    assert ops.delete(entry_id) == "deleted from work/"
    assert where(spool, entry_id) == []


def test_the_watch_lock_is_made_like_the_watchers_and_released(spool):
    entry_id = enqueue(spool)
    spool.claim(entry_id)
    assert not (spool.root / "watch.lock").exists()
    QueueOps(spool).hold(entry_id)
    lock = spool.root / "watch.lock"
    assert oct(lock.stat().st_mode & 0o777) == oct(0o640)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a watcher starting now gets it
    finally:
        os.close(fd)


def test_a_claim_and_a_hold_never_both_get_an_entry(spool):
    ids = [enqueue(spool, n) for n in range(60)]
    ops = QueueOps(spool)
    ctx = multiprocessing.get_context("fork")
    claims, locked, finished = ctx.Queue(), ctx.Event(), ctx.Event()

    def worker():  # as the watcher's workers: the watch lock held, claiming oldest first
        fd = os.open(spool.root / "watch.lock", os.O_RDWR | os.O_CREAT, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX)
        locked.set()
        mine = Spool(spool.root)
        got = [e.id for e in (mine.claim(i) for i in ids) if e is not None]
        claims.put(got)
        finished.wait(30)  # still "processing" them: the lock stays held

    process = ctx.Process(target=worker)
    process.start()
    assert locked.wait(10)
    held, refused = [], []
    for entry_id in reversed(ids):
        try:
            ops.hold(entry_id)
            held.append(entry_id)
        except SpoolError as err:
            assert "being processed" in str(err) or "claimed" in str(err), err
            refused.append(entry_id)
    claimed = claims.get(timeout=30)
    finished.set()
    process.join(10)
    # Where they met depends on the scheduler; that each entry went one way only does not.
    assert not set(held) & set(claimed) and set(refused) <= set(claimed)
    assert set(held) | set(claimed) == set(ids)
    for entry_id in ids:
        assert where(spool, entry_id) == (["hold"] if entry_id in held else ["work"])


def test_delete_forgets_the_deliveries_made_and_refuses_what_is_not_there(spool):
    entry_id = enqueue(spool)
    delivered = DeliveredStore(spool.root)
    delivered.save(entry_id, {"clean": ["u0@example.org"]})
    ops = QueueOps(spool)
    assert ops.delete(entry_id) == "deleted from new/"
    assert where(spool, entry_id) == [] and delivered.ids() == []
    with pytest.raises(SpoolError, match=f"no spool entry {entry_id}"):
        ops.delete(entry_id)
    with pytest.raises(SpoolError, match="invalid spool entry id '../x'"):
        ops.hold("../x")


def test_a_damaged_entry_can_be_held_and_deleted(spool):
    entry_id = enqueue(spool)
    path = spool.root / "new" / entry_id
    path.write_bytes(b"not a spool entry\n")
    ops = QueueOps(spool)
    assert ops.hold(entry_id) == "held from new/ (damaged: its metadata was kept as it is)"
    assert where(spool, entry_id) == ["hold"]
    assert [state for state, _e in list_entries(spool, ("hold",))] == ["hold"]
    assert ops.delete(entry_id) == "deleted from hold/"
