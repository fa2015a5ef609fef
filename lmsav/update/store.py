"""The updated databases on disk: versions side by side, one ``current`` link, one lock.

::

    <dir>/                      [update] dir, default <state_dir>/bases
      current -> daily-27001_main-62      the active version (a relative symbolic link)
      daily-27001_main-62/      one complete, verified, compiled database directory
        daily.cld main.cvd main-62.cvd.sign .compiled.lmsavc .lmsav-update.json
      daily-27000_main-62/      kept for --rollback (keep_versions, the active one included)
      .update.lock              held by the one update running (lockf)
      .update-state.json        last check, last success, mirrors' cool-downs
      .staging-XXXX/            an update in progress (removed by the next run if interrupted)

A version directory is built and compiled under ``.staging-*``, renamed into place whole, then
``current`` is replaced atomically (a new link renamed over the old one): a process that opens
``current/…`` sees the old database or the new one, never a mix, and a ``kill -9`` at any moment
leaves the old one active. Every step is fsynced before the next.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir, remove_dir
from .errors import Busy, StagingError

CURRENT = "current"
LOCK = ".update.lock"
STAGING_PREFIX = ".staging-"
META = ".lmsav-update.json"  # inside a version directory: what it holds, when it came
LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")


@dataclass(frozen=True)
class Version:
    label: str
    path: Path
    meta: dict

    @property
    def installed_at(self) -> float:
        return float(self.meta.get("installed_at", 0))


class Store:
    """One managed directory of database versions."""

    def __init__(self, root: Path):
        self.root = Path(root)

    # -- reading ----------------------------------------------------------------------------
    def current_label(self) -> str | None:
        """The active version's label, or None (no link yet, or one pointing at nothing)."""
        try:
            target = os.readlink(self.root / CURRENT)
        except OSError:
            return None
        if not LABEL.fullmatch(target) or not (self.root / target / META).is_file():
            return None
        return target

    def current(self) -> Version | None:
        label = self.current_label()
        return self.version(label) if label else None

    def version(self, label: str) -> Version | None:
        if not LABEL.fullmatch(label) or label == CURRENT:
            return None
        path = self.root / label
        try:
            meta = json.loads((path / META).read_text())
        except (OSError, ValueError):
            return None
        return Version(label, path, meta if isinstance(meta, dict) else {})

    def versions(self) -> list[Version]:
        """Every complete version, oldest installation first."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        found = [v for v in map(self.version, names) if v is not None and not
                 (self.root / v.label).is_symlink()]
        return sorted(found, key=lambda v: (v.installed_at, v.label))

    # -- the lock and what an interrupted run left ------------------------------------------
    @contextmanager
    def locked(self):
        """Hold the update lock for the block, or raise Busy at once.

        A POSIX record lock (lockf), not flock: children do not inherit it, so when an update
        is killed its compiling child, which may run on a moment, does not hold the next run
        off. (The process must not open and close the lock file elsewhere meanwhile.)"""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise StagingError(f"{self.root}: {err.strerror}") from None
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    raise Busy(f"another lmsav update is running"
                               f"{f' (pid {holder})' if holder.isdigit() else ''}; "
                               f"{self.root / LOCK} is locked") from None
                raise StagingError(f"{self.root / LOCK}: {err.strerror}") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            yield
        finally:
            os.close(fd)

    def clean(self) -> list[str]:
        """Remove what interrupted runs left (staging directories, a half-made link); call with
        the lock held. Returns the names removed."""
        removed = []
        for name in os.listdir(self.root):
            path = self.root / name
            if name.startswith((STAGING_PREFIX, ".del-")) and path.is_dir() \
                    and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
                removed.append(name)
            elif name.startswith(".current-") and path.is_symlink():
                path.unlink()
                removed.append(name)
        return removed

    # -- changing ---------------------------------------------------------------------------
    def staging(self) -> Path:
        try:
            return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.root))
        except OSError as err:
            raise StagingError(f"{self.root}: {err.strerror}") from None

    def install(self, built: Path, label: str) -> Path:
        """Move a complete version directory (fsynced by the caller) into place as ``label``."""
        if not LABEL.fullmatch(label) or label == CURRENT:
            raise StagingError(f"{label!r} cannot name a version directory")
        target = self.root / label
        if label == self.current_label():
            raise StagingError(f"{label} is the active version; it cannot be replaced")
        if os.path.lexists(target):
            remove_dir(self.root, label)  # a kept copy of the same versions, or a stray one
        os.rename(built, target)
        fsync_dir(self.root)
        return target

    def switch(self, label: str) -> None:
        """Make ``label`` the active version, atomically and durably."""
        if self.version(label) is None:
            raise StagingError(f"{self.root / label}: not a complete version directory")
        link = self.root / f".current-{os.getpid()}"
        if os.path.lexists(link):
            link.unlink()
        os.symlink(label, link)
        os.replace(link, self.root / CURRENT)
        fsync_dir(self.root)

    def prune(self, keep: int) -> list[str]:
        """Remove the oldest versions beyond ``keep`` (never the active one)."""
        current = self.current_label()
        versions = self.versions()
        others = [v for v in versions if v.label != current]
        room = max(0, keep - (1 if current else 0))
        doomed = others[:max(0, len(others) - room)]
        for version in doomed:
            remove_dir(self.root, version.label)
        return [v.label for v in doomed]


def write_meta(directory: Path, meta: dict) -> None:
    """The version's description, written and fsynced with the rest of the directory."""
    path = directory / META
    with open(path, "w") as fh:
        json.dump(meta, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())


def sync_tree(directory: Path) -> None:
    """fsync every file of a directory, then the directory itself."""
    for entry in os.scandir(directory):
        if entry.is_file(follow_symlinks=False):
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_dir(directory)


__all__ = ["CURRENT", "META", "Store", "Version", "sync_tree", "write_meta"]
