"""lmsav.spool.listing: the console's view of the spool — depth per state, pages held first,
only the page's entries opened, one entry's details, and the actions of `lmsav ctl queue`."""

from __future__ import annotations

import os
import time

import pytest

from lmsav.mail.envelope import Envelope
from lmsav.spool import listing
from lmsav.spool.nqueue import Spool, SpoolError
from lmsav.spool.queue_ops import HELD_REASON, QueueOps


@pytest.fixture
def spool(tmp_path) -> Spool:
    spool = Spool(tmp_path / "nqueue")
    spool.ensure()
    return spool


def enqueue(spool: Spool, n: int = 0, body: bytes = b"") -> str:
    message = f"From: Ann <ann@example.org>\nSubject: =?utf-8?q?caf=C3=A9_{n}?=\n\n".encode()
    return spool.enqueue(Envelope("ann@example.org", (f"u{n}@example.org", "b@example.org"),
                                  arrived=time.time() - 120),
                         message + (body or f"body {n}\n".encode()), queue_id=f"Q{n}")


def test_depth_and_order_held_first_oldest_first(spool):
    ids = [enqueue(spool, n) for n in range(5)]
    ops = QueueOps(spool)
    ops.hold(ids[3], "looked odd")
    ops.hold(ids[1])
    spool.claim(ids[4])
    page = listing.read_page(spool.root)
    assert page.depth == {"new": 2, "work": 1, "hold": 2}
    assert [(r.state, r.id) for r in page.rows] == [
        ("hold", ids[1]), ("hold", ids[3]), ("work", ids[4]), ("new", ids[0]), ("new", ids[2])]
    held = page.rows[1]
    assert held.reason == "looked odd" and page.rows[0].reason == HELD_REASON
    assert held.sender == "ann@example.org"
    assert held.recipients == ("u3@example.org", "b@example.org")
    assert held.queue_id == "Q3"
    assert held.size == len(spool.message(spool.get(ids[3])))
    assert 100 < held.age() < 1000


def test_pages_and_state_filter(spool):
    ids = [enqueue(spool, n) for n in range(7)]
    first = listing.read_page(spool.root, page=1, per_page=3)
    last = listing.read_page(spool.root, page=99, per_page=3)
    assert (first.pages, first.total, [r.id for r in first.rows]) == (3, 7, ids[:3])
    assert (last.page, [r.id for r in last.rows]) == (3, ids[6:])
    QueueOps(spool).hold(ids[5])
    held = listing.read_page(spool.root, states=("hold",))
    assert [r.id for r in held.rows] == [ids[5]] and held.total == 1
    assert held.depth["new"] == 6  # depth counts every state whatever is listed


def test_only_the_page_is_opened(spool, monkeypatch):
    for n in range(30):
        enqueue(spool, n)
    opened = []
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        if str(path).startswith(str(spool.root)):
            opened.append(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    page = listing.read_page(spool.root, page=2, per_page=10)
    assert len(page.rows) == 10 and len(opened) == 10


def test_a_duplicate_is_listed_once_where_its_newest_revision_is(spool):
    entry_id = enqueue(spool)
    QueueOps(spool).hold(entry_id, "x")
    held_name = os.listdir(spool.root / "hold")[0]
    # A crash between the rename of the new revision and the unlink of the old one.
    with open(spool.root / "new" / entry_id, "wb") as fh:
        fh.write((spool.root / "hold" / held_name).read_bytes())
    page = listing.read_page(spool.root)
    assert [(r.state, r.id) for r in page.rows] == [("hold", entry_id)]
    assert page.depth == {"new": 0, "work": 0, "hold": 1}


def test_a_damaged_entry_is_a_row_to_delete(spool):
    entry_id = enqueue(spool)
    (spool.root / "hold" / "1733300000000000000.1.deadbeef").write_bytes(b"garbage\n")
    (spool.root / "hold" / "not-an-entry").write_bytes(b"ignored")
    rows = listing.read_page(spool.root).rows
    assert [r.id for r in rows] == ["1733300000000000000.1.deadbeef", entry_id]
    assert rows[0].damaged and rows[0].reason.startswith("damaged:")
    assert rows[0].arrived == pytest.approx(1733300000.0)
    assert listing.apply(QueueOps(spool), "delete", rows[0].id) == "deleted from hold/"
    assert listing.read_page(spool.root).depth["hold"] == 0


def test_a_spool_not_set_up_is_empty(tmp_path):
    page = listing.read_page(tmp_path / "missing")
    assert (page.rows, page.depth, page.pages) == ([], {"new": 0, "work": 0, "hold": 0}, 1)


def test_details_read_the_head_only(spool):
    entry_id = enqueue(spool, 7, body=b"x" * (3 << 20))
    detail = listing.read_entry(spool.root, entry_id)
    assert detail.row.state == "new" and detail.path.parent.name == "new"
    assert dict(detail.headers) == {"From": "Ann <ann@example.org>", "Subject": "café 7"}
    assert detail.row.size > 3 << 20
    with pytest.raises(SpoolError, match="invalid spool entry id"):
        listing.read_entry(spool.root, "../../etc/passwd")
    with pytest.raises(SpoolError, match="no spool entry"):
        listing.read_entry(spool.root, "1733300000000000000.1.deadbeef")


def test_actions_are_queue_ops(spool):
    entry_id = enqueue(spool)
    ops = QueueOps(spool)
    assert listing.apply(ops, "hold", entry_id, "checking") == "held from new/"
    assert spool.get(entry_id).reason == "checking"
    assert listing.apply(ops, "release", entry_id) == "released"
    assert spool.pending() == [entry_id]
    with pytest.raises(SpoolError, match="is not held"):
        listing.apply(ops, "release", entry_id)
    with pytest.raises(SpoolError, match="unknown spool action"):
        listing.apply(ops, "explode", entry_id)
    with pytest.raises(SpoolError, match="invalid spool entry id"):
        listing.apply(ops, "delete", "../x")
    spool.claim(entry_id)
    # An entry a worker holds (the watcher's lock taken) is left alone.
    import fcntl

    fd = os.open(spool.root / "watch.lock", os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        pid = os.fork()
        if pid == 0:  # another process: flock is per open file, a child's request conflicts
            try:
                listing.apply(QueueOps(Spool(spool.root)), "delete", entry_id)
                os._exit(1)
            except SpoolError as err:
                os._exit(0 if "being processed" in str(err) else 3)
        assert os.waitpid(pid, 0)[1] == 0
    finally:
        os.close(fd)
    assert listing.apply(ops, "delete", entry_id) == "deleted from work/"
    assert listing.read_page(spool.root).total == 0


def test_a_page_of_100000_is_fast(spool):
    names = [f"{1733300000000000000 + n:019d}.1.{n:08x}" for n in range(100_000)]
    header = (b'LMSAVQ1 {"sender": "a@b", "recipients": ["c@d"], "queue_id": "", '
              b'"arrived": 1.0, "attempts": 0, "not_before": 0.0, "reason": ""}\n')
    for name in names:
        fd = os.open(spool.root / "new" / name, os.O_WRONLY | os.O_CREAT, 0o640)
        os.write(fd, header + b"Subject: x\n\nx\n")
        os.close(fd)
    start = time.perf_counter()
    page = listing.read_page(spool.root, page=1000)
    elapsed = time.perf_counter() - start
    assert page.total == 100_000 and len(page.rows) == 50
    assert page.rows[0].id == names[49_950]
    assert elapsed < 0.5, elapsed
