"""A durable store of whole files with their metadata: ``quarantine/`` and ``backup/files/``.

Layout, none of it readable by others::

    <root>/                              0700
        20261125T134501Z-0b3f2a9c41de/   0700
            content                      0600  the file, byte for byte (never executable)
            info.json                    0600  where it was, owner, mode, times, hashes,
                                               verdict, action, database version
        .tmp-<id>/                       an entry being written (or left by a crash): not listed
        .del-<id>/                       an entry being deleted: not listed

An entry is assembled under ``.tmp-<id>`` (each file fsynced, then the directory) and renamed
into place, so a crash never leaves half an entry visible, and the caller removes the original
only after ``put`` returned. Restoring writes a temporary file beside the target, gives it the
original owner, mode and times, fsyncs it and links it into place, so the target either appears
whole or not at all, and an existing file is never replaced unless asked.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import entry_dirs, fsync_dir, remove_dir
from ..mail.backup import ID_RE, id_time, new_id

CONTENT_FILE = "content"
INFO_FILE = "info.json"
TMP_PREFIX = ".tmp-"
DEL_PREFIX = ".del-"
DIR_MODE = 0o700
FILE_MODE = 0o600
CHUNK = 1 << 20

_ID_ATTEMPTS = 16
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | os.O_CLOEXEC
_O_READ = os.O_RDONLY | _NOFOLLOW | os.O_CLOEXEC


class StoreError(Exception):
    """A store operation failed; the message is one line a person can act on."""


@dataclass(frozen=True)
class StoredFile:
    """One kept file, as ``lmsav quarantine list`` and ``lmsav backup list`` show it."""

    id: str
    created: float
    size: int
    original_path: str
    status: str
    threats: tuple[str, ...]
    action: str  # why it was kept: quarantine, cure or delete

    def to_json(self) -> dict:
        return {"id": self.id, "created": self.created, "size": self.size,
                "original_path": self.original_path, "status": self.status,
                "threats": list(self.threats), "action": self.action}


@dataclass
class Restored:
    """Where a restore wrote the file, and what it could not put back (as a non-root user)."""

    path: str
    warnings: list[str] = field(default_factory=list)


def file_facts(path: str, st: os.stat_result) -> dict:
    """What a store keeps about a file besides its bytes: enough to put it back as it was."""
    return {
        "original_path": os.path.abspath(path),
        "uid": st.st_uid,
        "gid": st.st_gid,
        "owner": _user_name(st.st_uid),
        "group": _group_name(st.st_gid),
        "mode": stat.S_IMODE(st.st_mode),
        "mode_octal": f"{stat.S_IMODE(st.st_mode):04o}",
        "atime_ns": st.st_atime_ns,
        "mtime_ns": st.st_mtime_ns,
        "size": st.st_size,
        "device": st.st_dev,
        "inode": st.st_ino,
    }


class FileStore:
    """One store directory; ``kind`` names it in messages ("quarantine", "backup")."""

    def __init__(self, root: Path | str, kind: str = "quarantine", *,
                 clock: Callable[[], float] = time.time):
        self.root = Path(root)
        self.kind = kind
        self._clock = clock

    # -- writing -------------------------------------------------------------------------------

    def put(self, source: int | bytes, info: dict) -> str:
        """Keep ``source`` (an open file descriptor, read from its start, or bytes) with ``info``
        durably and return the new entry's id. The store sets ``id``, ``created``, ``size``,
        ``sha256`` and ``md5`` from what it actually wrote."""
        created = float(self._clock())
        try:
            record = json.loads(json.dumps(info))
        except (TypeError, ValueError) as err:
            raise StoreError(f"cannot keep the file: its record is not JSON: {err}") from None
        self._ensure_root()
        for _ in range(_ID_ATTEMPTS):
            entry_id = new_id(created)
            tmp = self.root / f"{TMP_PREFIX}{entry_id}"
            try:
                os.mkdir(tmp, DIR_MODE)
            except FileExistsError:
                continue
            except OSError as err:
                raise StoreError(f"cannot write to {self.root}: {_reason(err)}") from None
            try:
                os.chmod(tmp, DIR_MODE)
                size, sha256, md5 = _copy_in(source, tmp / CONTENT_FILE)
                record.update(id=entry_id, created=created, size=size, sha256=sha256, md5=md5)
                _write_new(tmp / INFO_FILE, (json.dumps(record, indent=2) + "\n").encode())
                fsync_dir(tmp)
                final = self.root / entry_id
                if os.path.lexists(final):
                    shutil.rmtree(tmp, ignore_errors=True)
                    continue
                os.rename(tmp, final)
                fsync_dir(self.root)
                return entry_id
            except OSError as err:
                shutil.rmtree(tmp, ignore_errors=True)
                if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue
                raise StoreError(f"cannot write to {self.root}: {_reason(err)}") from None
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        raise StoreError(f"cannot write to {self.root}: no free entry id")

    def _ensure_root(self) -> None:
        try:
            if self.root.is_dir():
                return
            os.makedirs(self.root.parent, DIR_MODE, exist_ok=True)
            try:
                os.mkdir(self.root, DIR_MODE)
            except FileExistsError:
                return
            os.chmod(self.root, DIR_MODE)
            fsync_dir(self.root.parent)
        except OSError as err:
            raise StoreError(f"cannot create {self.kind} directory {self.root}: "
                             f"{_reason(err)}") from None

    # -- reading -------------------------------------------------------------------------------

    def list(self) -> list[StoredFile]:
        """Every complete entry, newest first; a damaged one too, so it can be deleted."""
        entries = [self._entry(entry_id) for entry_id in self._ids()]
        entries.sort(key=lambda e: (e.created, e.id), reverse=True)
        return entries

    def info(self, entry_id: str) -> dict:
        """The entry's record: what ``put`` was given plus id, created, size and hashes."""
        directory = self._existing(entry_id)
        try:
            with open(os.open(directory / INFO_FILE, _O_READ), "rb") as fh:
                record = json.loads(fh.read())
        except FileNotFoundError:
            raise StoreError(f"{self.kind} entry '{entry_id}' is damaged: "
                             f"{INFO_FILE} is missing") from None
        except OSError as err:
            raise StoreError(f"cannot read {self.kind} entry '{entry_id}': "
                             f"{_reason(err)}") from None
        except ValueError as err:
            raise StoreError(f"{self.kind} entry '{entry_id}' is damaged: {INFO_FILE}: {err}") \
                from None
        if not isinstance(record, dict):
            raise StoreError(f"{self.kind} entry '{entry_id}' is damaged: {INFO_FILE} is not "
                             f"an object")
        record["id"] = entry_id
        return record

    def content_path(self, entry_id: str) -> Path:
        return self._existing(entry_id) / CONTENT_FILE

    def exists(self, entry_id: str) -> bool:
        """Whether ``entry_id`` names an entry of this store (a malformed id names none)."""
        if not isinstance(entry_id, str) or not ID_RE.match(entry_id):
            return False
        try:
            return stat.S_ISDIR(os.lstat(self.root / entry_id).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as err:
            raise StoreError(f"cannot read {self.kind} entry '{entry_id}': "
                             f"{_reason(err)}") from None

    # -- restoring and removing ----------------------------------------------------------------

    def restore(self, entry_id: str, to: str | None = None, force: bool = False) -> Restored:
        """Put the file back with its owner, mode and times, at its original path or ``to``.

        An existing file there is an error unless ``force``; a directory always is. The content
        is checked against the recorded sha256 before it appears at the target.
        """
        record = self.info(entry_id)
        target = os.path.abspath(to or record.get("original_path") or "")
        if not (to or record.get("original_path")):
            raise StoreError(f"{self.kind} entry '{entry_id}' has no original path: use --to")
        try:
            existing = os.lstat(target)
        except FileNotFoundError:
            existing = None
        except OSError as err:
            raise StoreError(f"cannot restore to {target}: {_reason(err)}") from None
        if existing is not None:
            if stat.S_ISDIR(existing.st_mode):
                raise StoreError(f"cannot restore to {target}: it is a directory")
            if not force:
                raise StoreError(f"{target} exists; use --force to overwrite it")
        directory = os.path.dirname(target)
        if not os.path.isdir(directory):
            raise StoreError(f"cannot restore to {target}: directory {directory} does not exist")
        warnings: list[str] = []
        try:
            src = os.open(self.content_path(entry_id), _O_READ)
        except OSError as err:
            raise StoreError(f"cannot read {self.kind} entry '{entry_id}': "
                             f"{_reason(err)}") from None
        tmp = None
        try:
            tmp, fd = _temp_beside(target, "restore")
            try:
                digest = hashlib.sha256()
                while chunk := os.read(src, CHUNK):
                    digest.update(chunk)
                    _write_all(fd, chunk)
                if record.get("sha256") and digest.hexdigest() != record["sha256"]:
                    raise StoreError(f"{self.kind} entry '{entry_id}' is damaged: its content "
                                     f"does not match the recorded sha256")
                warnings += _set_owner_mode_times(fd, record)
                os.fsync(fd)
            finally:
                os.close(fd)
            if existing is None:
                _link_new(tmp, target)
            else:
                os.rename(tmp, target)
            tmp = None
            fsync_dir(directory)
        except FileExistsError:
            raise StoreError(f"{target} exists; use --force to overwrite it") from None
        except OSError as err:
            raise StoreError(f"cannot restore to {target}: {_reason(err)}") from None
        finally:
            os.close(src)
            if tmp is not None:
                _unlink_quietly(tmp)
        return Restored(target, warnings)

    def delete(self, entry_id: str) -> None:
        """Remove one entry; it disappears from ``list`` at once, even if removal is cut short."""
        self._existing(entry_id)
        try:
            remove_dir(self.root, entry_id, DEL_PREFIX)
        except OSError as err:
            raise StoreError(f"cannot delete {self.kind} entry '{entry_id}': "
                             f"{_reason(err)}") from None

    # -- helpers -------------------------------------------------------------------------------

    def _ids(self) -> list[str]:
        try:
            return entry_dirs(self.root, ID_RE)
        except OSError as err:
            raise StoreError(f"cannot read {self.kind} directory {self.root}: "
                             f"{_reason(err)}") from None

    def _existing(self, entry_id: str) -> Path:
        if not isinstance(entry_id, str) or not ID_RE.match(entry_id):
            raise StoreError(f"no {self.kind} entry '{entry_id}' (ids look like "
                             f"20261125T134501Z-0b3f2a9c41de)")
        directory = self.root / entry_id
        try:
            if stat.S_ISDIR(os.lstat(directory).st_mode):
                return directory
        except FileNotFoundError:
            pass
        except OSError as err:
            raise StoreError(f"cannot read {self.kind} entry '{entry_id}': "
                             f"{_reason(err)}") from None
        raise StoreError(f"no {self.kind} entry '{entry_id}' in {self.root}")

    def _entry(self, entry_id: str) -> StoredFile:
        try:
            record = self.info(entry_id)
        except StoreError:
            try:
                size = os.lstat(self.root / entry_id / CONTENT_FILE).st_size
            except OSError:
                size = 0
            return StoredFile(entry_id, id_time(entry_id), size, "", "damaged", (), "")
        threats = record.get("threats") or ()
        created = record.get("created")
        return StoredFile(
            id=entry_id,
            created=float(created) if isinstance(created, (int, float)) else id_time(entry_id),
            size=record.get("size") if isinstance(record.get("size"), int) else 0,
            original_path=str(record.get("original_path") or ""),
            status=str(record.get("status") or ""),
            threats=tuple(str(t) for t in threats) if isinstance(threats, list) else (),
            action=str(record.get("action") or ""),
        )


# -- writing files ---------------------------------------------------------------------------

def replace_file(path: str, data: bytes, like: os.stat_result,
                 check: Callable[[], None] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically, keeping ``like``'s owner and mode.

    A temporary file in the same directory is written, given the owner and mode, fsynced, then
    ``check()`` runs (it raises to abort, e.g. when the file changed meanwhile) and the temporary
    file is renamed over ``path``. Readers see the old file or the new one, never a half-written
    one; on any failure the old file is left as it was.
    """
    tmp, fd = _temp_beside(path, "cure")
    try:
        try:
            _write_all(fd, data)
            st = os.fstat(fd)
            if (st.st_uid, st.st_gid) != (like.st_uid, like.st_gid):
                os.fchown(fd, like.st_uid, like.st_gid)
            os.fchmod(fd, stat.S_IMODE(like.st_mode))  # after chown, which clears set-id bits
            os.fsync(fd)
        finally:
            os.close(fd)
        if check is not None:
            check()
        os.rename(tmp, path)
        tmp = None
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    finally:
        if tmp is not None:
            _unlink_quietly(tmp)


def _temp_beside(path: str, what: str) -> tuple[str, int]:
    directory, name = os.path.split(os.path.abspath(path))
    for _ in range(_ID_ATTEMPTS):
        tmp = os.path.join(directory, f".{name[:200]}.lmsav-{what}-{os.urandom(4).hex()}")
        try:
            return tmp, os.open(tmp, _O_NEW, FILE_MODE)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", directory)


def _copy_in(source: int | bytes, dest: Path) -> tuple[int, str, str]:
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    fd = os.open(dest, _O_NEW, FILE_MODE)
    size = 0
    try:
        os.fchmod(fd, FILE_MODE)  # explicitly: neither the umask nor the original decides
        if isinstance(source, (bytes, bytearray, memoryview)):
            chunks = [bytes(source)]
        else:
            chunks = _read_chunks(source)
        for chunk in chunks:
            sha256.update(chunk)
            md5.update(chunk)
            _write_all(fd, chunk)
            size += len(chunk)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size, sha256.hexdigest(), md5.hexdigest()


def _read_chunks(fd: int):
    offset = 0
    while chunk := os.pread(fd, CHUNK, offset):
        offset += len(chunk)
        yield chunk


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, _O_NEW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _set_owner_mode_times(fd: int, record: dict) -> list[str]:
    """Owner, then mode (chown clears set-id bits), then times; what failed, as warnings."""
    warnings = []
    uid, gid = record.get("uid"), record.get("gid")
    if isinstance(uid, int) and isinstance(gid, int):
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            warnings.append(f"owner {record.get('owner') or uid}:{record.get('group') or gid} "
                            f"not restored (only root can give files away)")
    mode = record.get("mode")
    os.fchmod(fd, mode & 0o7777 if isinstance(mode, int) else FILE_MODE)
    atime, mtime = record.get("atime_ns"), record.get("mtime_ns")
    if isinstance(atime, int) and isinstance(mtime, int):
        os.utime(fd, ns=(atime, mtime))
    return warnings


def _link_new(tmp: str, target: str) -> None:
    """Make ``tmp`` appear as ``target`` only if nothing is there (no race with a creator)."""
    try:
        os.link(tmp, target)
    except OSError as err:
        if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A file system without hard links: the lstat in restore() was the check.
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, "exists", target) from None
        os.rename(tmp, target)
        return
    os.unlink(tmp)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def _reason(err: OSError) -> str:
    return err.strerror or str(err)

