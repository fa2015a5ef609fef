"""Who holds a flock on a file, read from /proc/locks without taking the lock.

/proc/locks names a lock's file by device and inode. On overlayfs (container roots, private
mount namespaces) stat() reports the overlay's device while /proc/locks names the upper
layer's, so a lock on the same inode with another device counts only when the process holds
that very file open.
"""

from __future__ import annotations

import os
from pathlib import Path


def read_entries() -> list[tuple[int, int, int, int]] | None:
    """(pid, major, minor, inode) of every flock held now; None when /proc/locks is
    unreadable. Waiting requests ("->") are left out."""
    try:
        with open("/proc/locks") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    out = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "1: -> FLOCK …" is a waiter
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            out.append((int(fields[4]), int(major, 16), int(minor, 16), int(inode)))
        except ValueError:
            continue
    return out


def holders(lock: Path | str, entries=None) -> list[tuple[int, bool]] | None:
    """(pid, confirmed) of the flocks on ``lock``: confirmed when the pid is alive and holds
    the file open. A lock whose device differs is kept only when confirmed (overlayfs). None
    when the file or /proc/locks cannot be read."""
    try:
        st = os.stat(lock)
    except OSError:
        return None
    entries = read_entries() if entries is None else entries
    if entries is None:
        return None
    device = (os.major(st.st_dev), os.minor(st.st_dev))
    out = []
    for pid, major, minor, inode in entries:
        if inode != st.st_ino:
            continue
        confirmed = pid > 0 and has_open(pid, lock)
        if confirmed or (major, minor) == device:
            out.append((pid, confirmed))
    return out


def has_open(pid: int, path: Path | str) -> bool:
    """Whether ``pid`` holds ``path`` open (guards against a recycled pid)."""
    target = os.path.realpath(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False
