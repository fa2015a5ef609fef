"""Finding a flock's holder in /proc/locks, also where overlayfs names another device."""

from __future__ import annotations

import fcntl
import os

from lmsav import proclocks


def test_the_holder_of_a_real_lock_is_found_and_confirmed(tmp_path):
    lock = tmp_path / "watch.lock"
    with open(lock, "w") as fh:
        assert proclocks.holders(lock) == []
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert proclocks.holders(lock) == [(os.getpid(), True)]
    assert proclocks.holders(lock) == []


def test_another_device_counts_only_when_the_process_holds_the_file_open(tmp_path):
    lock = tmp_path / "watch.lock"
    lock.touch()
    st = os.stat(lock)
    same = (os.major(st.st_dev), os.minor(st.st_dev))
    upper = (same[0], same[1] + 7)  # what /proc/locks says on an overlay
    with open(lock):
        entries = [(os.getpid(), *upper, st.st_ino)]
        assert proclocks.holders(lock, entries) == [(os.getpid(), True)]
    # Nobody has it open: a lock on another device with the same inode is another file.
    assert proclocks.holders(lock, [(os.getpid(), *upper, st.st_ino)]) == []
    # On the same device it is this file, even when its holder cannot be confirmed (a killed
    # parent's workers keep the lock under its pid).
    assert proclocks.holders(lock, [(999999999, *same, st.st_ino)]) == [(999999999, False)]
    assert proclocks.holders(lock, [(os.getpid(), *same, st.st_ino + 1)]) == []


def test_a_missing_file_is_no_answer(tmp_path):
    assert proclocks.holders(tmp_path / "none") is None
