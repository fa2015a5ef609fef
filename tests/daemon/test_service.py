"""The scan service's walk for CONTSCAN/MULTISCAN: the sweep's walker, clamd's reply lines."""

from __future__ import annotations

import errno
import os

from lmsav.daemon.service import ScanService


def test_walk_lists_regular_files_in_order_and_reports_unreadable_directories(tmp_path,
                                                                              monkeypatch):
    (tmp_path / "b").mkdir()
    (tmp_path / "locked").mkdir()
    (tmp_path / "b" / "2.txt").write_bytes(b"2")
    (tmp_path / "a.txt").write_bytes(b"a")
    (tmp_path / "locked" / "hidden.txt").write_bytes(b"h")
    os.symlink(tmp_path / "a.txt", tmp_path / "link.txt")  # not followed by default
    os.mkfifo(tmp_path / "fifo")

    real = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):  # what a directory root cannot read looks like
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr("lmsav.sweep.walk.os.scandir", scandir)
    files, problems = ScanService(None, True, False).walk(str(tmp_path) + "/")
    assert files == [f"{tmp_path}/a.txt", f"{tmp_path}/b/2.txt"]
    assert problems == [f"{tmp_path}/locked: lstat() failed: Permission denied. ERROR"]
