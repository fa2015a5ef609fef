"""Durability helpers shared by everything that must not lose mail or files (spool, backup,
quarantine)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path


def fsync_dir(directory: Path | str) -> None:
    """Make a rename or unlink in ``directory`` survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def entry_dirs(root: Path, pattern) -> list[str]:
    """The directories of ``root`` whose names ``pattern`` matches (links are not entries);
    [] when ``root`` does not exist yet. Other errors raise OSError."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        if pattern.match(name):
            try:
                if stat.S_ISDIR(os.lstat(os.path.join(root, name)).st_mode):
                    out.append(name)
            except FileNotFoundError:
                continue  # deleted while we looked
    return out


def remove_dir(root: Path, name: str, doomed_prefix: str = ".del-") -> None:
    """Remove the directory ``root/name`` so that it is gone from listings at once, even if
    the removal is cut short: renamed aside (durably) first, then deleted. Raises OSError."""
    doomed = os.path.join(root, doomed_prefix + name)
    if os.path.lexists(doomed):
        shutil.rmtree(doomed)
    os.rename(os.path.join(root, name), doomed)
    fsync_dir(root)
    shutil.rmtree(doomed)


def _stat_or_none(path: Path):
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def write_atomic(path: Path | str, data: bytes, mode: int | None = 0o644) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new one, never part of
    one, and the new one survives a crash. The temporary file is a dot name beside it (cron
    skips those in /etc/cron.d; systemd does not load them as units). ``mode`` None keeps the
    mode and owner of the file replaced (an MTA's configuration), 0644 for a new one."""
    import tempfile

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        old = _stat_or_none(path) if mode is None else None
        os.chmod(tmp, 0o644 if old is None and mode is None
                 else stat.S_IMODE(old.st_mode) if old is not None else mode)
        if old is not None and os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)
