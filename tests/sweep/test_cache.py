"""Incremental sweeps: unchanged files are not read again; any change, a new database or a
corrupt cache means scanning again. Real files on disk, real sweeps, a real SQLite file."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sqlite3
import stat
import subprocess
import sys
import time

import pytest

from lmsav.scanner.engine import Engine
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from lmsav.sweep import cache as scancache
from lmsav.sweep.cache import ScanCache
from lmsav.sweep.run import SweepOptions, Tally, sweep
from tests.conftest import EICAR

CLEAN_NAMES = ["a.txt", "sub/b.txt", "sub/deeper/c.bin", "z.txt"]


@pytest.fixture(autouse=True)
def files_written_just_now_count(monkeypatch):
    """The files here are written right before each sweep; the real margin would (rightly)
    keep them out of the cache. Tests that change a file wait a clock tick first."""
    monkeypatch.setattr(scancache, "RACY_MARGIN_NS", 0)


@pytest.fixture(scope="module")
def engine():
    from lmsav import paths

    return Engine(Database.load(paths.bundled_database_dir()))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub" / "deeper").mkdir(parents=True)
    for i, name in enumerate(CLEAN_NAMES):
        (root / name).write_bytes(b"x" * 68 if name == "a.txt" else f"clean {i}\n".encode())
    return root


@pytest.fixture
def cache_file(tmp_path):
    return tmp_path / "state" / "scancache.sqlite"


def run(engine, root, cache_file, **kw):
    """One incremental sweep; returns the tally and the reports in order."""
    kw.setdefault("database_version", "1")
    opts = SweepOptions(incremental=True, cache_path=str(cache_file), **kw)
    tally, reports = Tally(), []
    sweep(engine, [str(root)], opts, tally, reports.append)
    return tally, reports


def names(root, reports):
    return [os.path.relpath(r.path, root) for r in reports]


def assert_ctime_moved(path, before: os.stat_result) -> None:
    """Fail loudly if a change did not move ctime (the cache relies on it)."""
    assert os.stat(path).st_ctime_ns != before.st_ctime_ns


def wait_a_tick():
    """Let the file system's (coarse) clock move past the files' creation."""
    time.sleep(0.02)


def test_unchanged_files_are_not_read_again(engine, tree, cache_file, monkeypatch):
    first, reports = run(engine, tree, cache_file)
    assert first.files == 4 and first.unchanged == 0
    assert names(tree, reports) == ["a.txt", "z.txt", "sub/b.txt", "sub/deeper/c.bin"]

    opened = []
    real = engine.scan_path
    monkeypatch.setattr(engine, "scan_path", lambda p, n=None: opened.append(p) or real(p, n))
    second, reports = run(engine, tree, cache_file)
    assert opened == []
    assert second.unchanged == 4 and second.files == 0 and second.bytes == 0
    assert reports == []  # counted only, unless asked for
    assert second.directories == 3

    third, reports = run(engine, tree, cache_file, report_unchanged=True)
    assert third.unchanged == 4 and opened == []
    assert names(tree, reports) == ["a.txt", "z.txt", "sub/b.txt", "sub/deeper/c.bin"]
    assert all(r.unchanged and r.status == Status.CLEAN and not r.skipped for r in reports)


def test_cache_file_is_private_and_its_directory_created(engine, tree, cache_file):
    run(engine, tree, cache_file)
    assert stat.S_IMODE(os.stat(cache_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache_file.parent).st_mode) == 0o700


def test_touched_file_is_scanned_again(engine, tree, cache_file):
    run(engine, tree, cache_file)
    target = tree / "sub" / "b.txt"
    before = os.stat(target)
    wait_a_tick()
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    assert_ctime_moved(target, before)
    tally, reports = run(engine, tree, cache_file)
    assert names(tree, reports) == ["sub/b.txt"]
    assert tally.files == 1 and tally.unchanged == 3


def test_file_replaced_with_same_size_and_mtime_is_scanned_again(engine, tree, cache_file):
    run(engine, tree, cache_file)
    target = tree / "a.txt"
    before = os.stat(target)
    wait_a_tick()
    # Another inode, same size and mtime, renamed over the clean file.
    planted = tree / ".planted"
    planted.write_bytes(EICAR)
    assert len(EICAR) == before.st_size
    os.utime(planted, ns=(before.st_atime_ns, before.st_mtime_ns))
    os.rename(planted, target)
    tally, reports = run(engine, tree, cache_file)
    assert tally.by_status[Status.INFECTED] == 1 and tally.unchanged == 3
    assert names(tree, reports) == ["a.txt"]


def test_content_rewritten_in_place_with_mtime_put_back_is_scanned_again(engine, tree,
                                                                         cache_file):
    run(engine, tree, cache_file)
    target = tree / "a.txt"
    before = os.stat(target)
    wait_a_tick()
    with open(target, "r+b") as fh:  # same inode, same size
        fh.write(EICAR)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(target)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)
    assert_ctime_moved(target, before)
    tally, _ = run(engine, tree, cache_file)
    assert tally.by_status[Status.INFECTED] == 1 and tally.unchanged == 3


@pytest.mark.parametrize("change", ["chmod", "chown"])
def test_metadata_change_alone_is_scanned_again(engine, tree, cache_file, change):
    run(engine, tree, cache_file)
    target = tree / "z.txt"
    before = os.stat(target)
    wait_a_tick()
    if change == "chmod":
        os.chmod(target, 0o600)
    else:
        os.chown(target, before.st_uid, before.st_gid)  # same owner: still a ctime change
    assert_ctime_moved(target, before)
    tally, reports = run(engine, tree, cache_file)
    assert names(tree, reports) == ["z.txt"] and tally.unchanged == 3


def test_new_database_version_scans_everything_again(engine, tree, cache_file):
    run(engine, tree, cache_file, database_version="2026112401")
    assert run(engine, tree, cache_file, database_version="2026112401")[0].unchanged == 4
    tally, _ = run(engine, tree, cache_file, database_version="2026112501")
    assert tally.files == 4 and tally.unchanged == 0
    con = sqlite3.connect(cache_file)  # the old verdicts are gone, not just ignored
    assert con.execute("SELECT count(*) FROM files").fetchone() == (4,)
    assert con.execute("SELECT count(*) FROM versions").fetchone() == (1,)
    con.close()
    # The new version's verdicts replaced the old ones.
    assert run(engine, tree, cache_file, database_version="2026112501")[0].unchanged == 4
    assert run(engine, tree, cache_file, database_version="2026112401")[0].unchanged == 0


def test_archives_off_verdicts_do_not_count_for_a_sweep_with_archives(engine, tree, cache_file):
    no_archives = Engine(engine.db, scan_archives=False)
    run(no_archives, tree, cache_file)
    assert run(no_archives, tree, cache_file)[0].unchanged == 4
    assert run(engine, tree, cache_file)[0].unchanged == 0


def test_infected_files_are_never_cached(engine, tree, cache_file):
    (tree / "sub" / "eicar.com").write_bytes(EICAR)
    for _ in range(3):
        tally, reports = run(engine, tree, cache_file)
        assert tally.by_status[Status.INFECTED] == 1
        assert [r.findings[0][2] for r in reports if r.status == Status.INFECTED] == [
            ["Eicar-Test-Signature"]]
    assert tally.unchanged == 4


def test_file_found_infected_loses_its_clean_record(engine, tree, cache_file):
    """A clean verdict of an older database is dropped when a newer one finds the file."""
    run(engine, tree, cache_file, database_version="1")
    target = tree / "z.txt"
    before = os.stat(target)
    wait_a_tick()
    with open(target, "r+b") as fh:
        fh.write(EICAR)
    assert_ctime_moved(target, before)
    assert run(engine, tree, cache_file)[0].by_status[Status.INFECTED] == 1
    con = sqlite3.connect(cache_file)
    inodes = {row[0] for row in con.execute("SELECT ino FROM files")}
    con.close()
    assert os.stat(target).st_ino not in inodes


@pytest.mark.parametrize("workers", [1, 2])
def test_parallel_sweeps_record_everything_and_keep_walk_order(engine, tree, cache_file,
                                                               workers):
    (tree / "sub" / "eicar.com").write_bytes(EICAR)
    first, reports = run(engine, tree, cache_file, workers=2)
    assert first.files == 5
    order = names(tree, reports)
    assert order == ["a.txt", "z.txt", "sub/b.txt", "sub/eicar.com", "sub/deeper/c.bin"]

    second, _ = run(engine, tree, cache_file, workers=workers)
    assert second.unchanged == 4 and second.files == 1

    before = os.stat(tree / "z.txt")
    wait_a_tick()
    os.chmod(tree / "z.txt", 0o640)
    assert_ctime_moved(tree / "z.txt", before)
    third, reports = run(engine, tree, cache_file, workers=workers, report_unchanged=True)
    assert names(tree, reports) == order
    assert [r.unchanged for r in reports] == [True, False, True, False, True]
    assert third.files == 2 and third.unchanged == 3


@pytest.mark.parametrize("batch, max_waiting", [(32, 4096), (3, 5)])
def test_walk_order_kept_whatever_mix_of_scanned_and_unchanged(engine, tmp_path, cache_file,
                                                               monkeypatch, batch, max_waiting):
    from lmsav.sweep import run as sweep_mod

    monkeypatch.setattr(sweep_mod, "BATCH", batch)
    monkeypatch.setattr(sweep_mod, "MAX_WAITING", max_waiting)
    root = tmp_path / "many"
    for d in range(6):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (root / f"d{d}" / f"f{f:02}").write_bytes(b"%d %d" % (d, f))
    os.mkfifo(root / "d3" / "fifo")
    expected = [i[0] if isinstance(i, tuple) else i.path
                for i in sweep_mod.inputs([str(root)], SweepOptions(), Tally())]
    run(engine, root, cache_file, workers=2)
    changed = expected[::7]
    wait_a_tick()
    for path in changed:
        if not path.endswith("fifo"):
            os.chmod(path, 0o640)
    tally, reports = run(engine, root, cache_file, workers=2, report_unchanged=True)
    assert [r.path for r in reports] == expected
    assert tally.files == len([p for p in changed if not p.endswith("fifo")])
    assert tally.skipped == 1 and tally.unchanged == 240 - tally.files


def _record_in_child(cache: ScanCache, paths: list[str]) -> None:
    for path in paths:
        cache.record_clean(os.stat(path))
    cache.close()


def test_cache_shared_by_forked_writers(tmp_path, cache_file):
    """Workers forked after the parent wrote each use a connection of their own."""
    files = []
    for i in range(200):
        f = tmp_path / f"f{i}"
        f.write_bytes(b"%d" % i)
        files.append(str(f))
    parent = ScanCache(cache_file, "v")
    parent.record_clean(os.stat(files[0]))
    parent.flush()  # the parent now holds an open connection
    mp = multiprocessing.get_context("fork")
    children = [mp.Process(target=_record_in_child, args=(parent, files[1 + k::2]))
                for k in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    parent.record_clean(os.stat(files[-1]))
    parent.close()
    fresh = ScanCache(cache_file, "v")
    assert all(fresh.is_unchanged(os.stat(f)) for f in files)
    fresh.close()


def test_corrupt_cache_file_is_moved_aside_and_rebuilt(engine, tree, cache_file, caplog):
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"this is not an SQLite database, " * 200)
    with caplog.at_level(logging.WARNING, logger="lmsav.sweep.cache"):
        tally, _ = run(engine, tree, cache_file)
    assert tally.files == 4
    assert [r.getMessage() for r in caplog.records] == [
        (f"scan cache {cache_file}: unreadable (file is not a database); moved to "
         f"{cache_file}.corrupt, starting afresh")]
    assert (cache_file.parent / "scancache.sqlite.corrupt").exists()
    assert run(engine, tree, cache_file)[0].unchanged == 4


def test_unusable_cache_location_means_scanning_without_a_cache(engine, tree, tmp_path, caplog):
    (tmp_path / "not-a-dir").write_text("")
    cache_file = tmp_path / "not-a-dir" / "scancache.sqlite"
    with caplog.at_level(logging.WARNING, logger="lmsav.sweep.cache"):
        for _ in range(2):
            tally, _ = run(engine, tree, cache_file)
            assert tally.files == 4 and tally.unchanged == 0
    assert all("scanning without it" in r.getMessage() for r in caplog.records)


def test_file_changed_just_before_the_sweep_is_not_vouched_for(engine, tree, cache_file,
                                                               monkeypatch):
    """Written within the clock margin: its ctime could still stay the same after a change."""
    monkeypatch.setattr(scancache, "RACY_MARGIN_NS", 3_600 * 10**9)
    run(engine, tree, cache_file)
    assert run(engine, tree, cache_file)[0].unchanged == 0


def test_plain_sweeps_do_not_load_the_cache(tree):
    code = (
        "import sys;from lmsav import paths;"
        "from lmsav.scanner.engine import Engine;"
        "from lmsav.scanner.signatures.database import Database;"
        "from lmsav.sweep.run import SweepOptions, Tally, sweep;"
        "e=Engine(Database.load(paths.bundled_database_dir()));t=Tally();"
        f"sweep(e,[{str(tree)!r}],SweepOptions(workers=2),t,lambda r:None);"
        "assert t.files==4, t;"
        "print(sorted(m for m in ('sqlite3','lmsav.sweep.cache') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_device_and_inode_numbers_past_signed_64_bits(cache_file):
    def fake(dev, ino, ctime_ns):  # mode, ino, dev, nlink, uid, gid, size, times, ns times
        return os.stat_result((0o100644, ino, dev, 1, 0, 0, 10, 1, 2, 3, 1.0, 2.0, 3.0,
                               1_000, 2_000, ctime_ns))

    big = [fake(2**63 + 7, 2**64 - 5, 3_000), fake(5, 2**63, 3_000), fake(5, 6, 3_000)]
    with ScanCache(cache_file, "v") as cache:
        for st in big:
            cache.record_clean(st)
    with ScanCache(cache_file, "v") as cache:
        assert all(cache.is_unchanged(st) for st in big)
        assert not cache.is_unchanged(fake(5, 2**63, 4_000))
        cache.forget(big[0])
    with ScanCache(cache_file, "v") as cache:
        assert [cache.is_unchanged(st) for st in big] == [False, True, True]


def test_file_dated_past_2262_is_scanned_not_cached(engine, tree, cache_file):
    """Nanosecond times past 2**63 (utime can set them) fit neither SQLite nor the cache."""
    far = (2**63 // 10**9 + 86_400) * 10**9
    try:
        os.utime(tree / "z.txt", ns=(far, far))
    except OSError:
        pytest.skip("file system cannot store such a time")
    if os.stat(tree / "z.txt").st_mtime_ns < 2**63:
        pytest.skip("file system clamps the time")
    run(engine, tree, cache_file)
    tally, reports = run(engine, tree, cache_file)
    assert names(tree, reports) == ["z.txt"] and tally.unchanged == 3


def _big_tree(root, subdirs=6):
    for d in range(subdirs):
        for e in range(3):
            sub = root / f"d{d}" / f"e{e}"
            sub.mkdir(parents=True)
            for f in range(4):
                (sub / f"f{f}.txt").write_bytes(f"file {d} {e} {f}\n".encode())
        (root / f"d{d}" / "top.txt").write_bytes(b"top\n")
    (root / "root.txt").write_bytes(b"root\n")


def test_repeated_sweep_split_over_walkers_keeps_walk_order_and_finds_changes(
        engine, tmp_path, cache_file):
    root = tmp_path / "big"
    _big_tree(root)
    first, reports = run(engine, root, cache_file, workers=2, report_unchanged=True)
    order = names(root, reports)
    assert first.files == 6 * 13 + 1 and first.unchanged == 0
    wait_a_tick()
    (root / "d3" / "e1" / "f2.txt").write_bytes(EICAR)  # changed deep in the fourth subtree
    (root / "d5" / "new.txt").write_bytes(b"new\n")  # new in the last one
    (root / "d0" / "e0" / "f0.txt").unlink()
    second, reports = run(engine, root, cache_file, workers=2, report_unchanged=True)
    expected = [n for n in order if n != "d0/e0/f0.txt"]
    expected.insert(expected.index("d5/top.txt"), "d5/new.txt")  # files by name, then subdirs
    assert names(root, reports) == expected  # the same walk order as one process
    by_name = {n: r for n, r in zip(names(root, reports), reports)}
    assert by_name["d3/e1/f2.txt"].status is Status.INFECTED and not by_name["d3/e1/f2.txt"].unchanged
    assert not by_name["d5/new.txt"].unchanged
    assert by_name["d1/e2/f3.txt"].unchanged
    assert second.unchanged == len(expected) - 2 and second.files == 2
    assert second.directories == first.directories
    # Counted, not reported, without report_unchanged: the same numbers.
    third, reports = run(engine, root, cache_file, workers=2)
    assert names(root, reports) == ["d3/e1/f2.txt"]  # still infected: never cached
    assert third.unchanged == len(expected) - 1 and third.directories == first.directories


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable directories")
def test_split_walk_reports_an_unreadable_subtree(engine, tmp_path, cache_file):
    root = tmp_path / "big"
    _big_tree(root, subdirs=3)
    run(engine, root, cache_file, workers=2)
    (root / "d1" / "e1").chmod(0)
    try:
        _tally, reports = run(engine, root, cache_file, workers=2)
    finally:
        (root / "d1" / "e1").chmod(0o755)
    assert [r.status for r in reports] == [Status.ERROR]
    assert "cannot read directory" in reports[0].findings[0][3]
