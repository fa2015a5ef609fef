"""Where a database's compiled file goes, so that a read-only database never makes a scan fail."""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from ... import paths

MEMORY_FS = "/dev/shm"

_memory: tuple[int, Path] | None = None  # (pid, directory) of this process's private directory


def choose(directory: Path, name: str, fresh) -> Path:
    """The compiled file of ``directory``: the first of

    1. ``directory/name`` when the directory is writable (freshclam's, the admin's own);
    2. ``directory/name`` when it is up to date (``fresh(path)``), compiled there by someone
       who could write (root, for the bundled database of a root-owned installation);
    3. ``db-<hash of the path>.lmsavc`` in the cache directory of the process's layout
       (/var/cache/lmsav for root, service and system accounts, ~/.cache/lmsav for a person)
       when it is up to date there or the directory is writable or can be created;
    4. the same name in a private directory in memory, removed when the process exits: the
       database is compiled for this process alone, and the scan still happens.
    """
    beside = directory / name
    if os.access(directory, os.W_OK):
        return beside
    if fresh(beside):
        return beside
    tag = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    cached = paths.cache_dir() / f"db-{tag}.lmsavc"
    if fresh(cached) or _can_create_in(cached.parent):
        return cached
    return memory_dir() / cached.name


def _can_create_in(directory: Path) -> bool:
    """Whether a file can be written in ``directory``, creating it (and parents) if need be."""
    for candidate in (directory, *directory.parents):
        if candidate.exists():
            return candidate.is_dir() and os.access(candidate, os.W_OK | os.X_OK)
    return False


def memory_dir() -> Path:
    """This process's private directory on the memory file system (else the temporary
    directory), mode 0700, created once and removed at exit by the process that made it."""
    global _memory
    if _memory is not None and _memory[0] == os.getpid() and _memory[1].is_dir():
        return _memory[1]
    parent = MEMORY_FS if os.access(MEMORY_FS, os.W_OK | os.X_OK) else None
    path = Path(tempfile.mkdtemp(prefix="lmsav-db-", dir=parent))
    pid = os.getpid()
    _memory = (pid, path)

    def remove() -> None:
        if os.getpid() == pid:  # not in forked workers: the parent still maps the file
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)
    return path
