"""Explodes archives only 7-Zip reads (ARJ, CHM, zip with deflate64/implode) by running `7z x`."""

from __future__ import annotations

import functools
import io
import os
import re
import resource
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import zipfile
from contextlib import contextmanager
from typing import Iterator

from ..limits import Context, LimitExceeded
from ..objects import Child, ScanObject, Status
from ..signatures.subject import MemberMeta
from .base import Corrupted, Encrypted, Unsupported
from .sfx import explode_embedded

# Zip compression methods libarchive cannot decode and 7-Zip can.
_ZIP_METHODS_FOR_7Z = frozenset({6, 9})  # implode, deflate64

# Per-member errors 7z prints on stderr as "ERROR: <message> : <member>".
_ITEM_ERROR = re.compile(r"^ERROR: (.+?) : (.+)$", re.M)
_DAMAGE = ("Data Error", "CRC Failed", "Unexpected end", "Headers Error", "There are data after")

# 7-Zip before 22 (the original p7zip 16.02) extracts symbolic links as they are stored, so a
# later member could be written through one outside the extract dir; later ones confine them.
_MIN_VERSION = 22

# While 7z runs, the extract dir is measured this often against the scan's size budget: 7z
# writes members before the context can read them, so this is what stops a bomb on disk.
_POLL = 0.05


class SevenZipHandler:
    """Extracts with 7z into the scan's temp dir and hands each regular file to the context."""

    types = frozenset({"arj", "chm"})

    def explode(self, obj: ScanObject, ctx: Context) -> Iterator[Child]:
        ftype, offset = obj.type, obj.offset
        if offset:
            # Behind other bytes: the archive is read on its own, from its first byte.
            yield from explode_embedded(obj, ctx, ftype, offset)
            return
        yield from explode_7z(obj, ctx, ftype)


def zip_needs_7z(obj: ScanObject) -> bool:
    """True when a zip has a member compressed with a method only 7-Zip decodes."""
    try:
        source = obj.path if obj.path is not None else io.BytesIO(obj.data)
        with zipfile.ZipFile(source) as zf:
            return any(info.compress_type in _ZIP_METHODS_FOR_7Z for info in zf.infolist())
    except Exception:  # a directory zipfile cannot read is libarchive's to report
        return False


_ZIP_UTF8 = 0x800  # general purpose flag: the name is UTF-8 (else code page 437)
_ZIP_ENCRYPTED = 0x1


def zip_members(obj: ScanObject) -> list[MemberMeta]:
    """Every central-directory entry, directories included, numbered from 1 in directory
    order, with the name as stored (bytes kept through surrogate escapes): how ClamAV counts
    and names zip members for .cdb rules. Empty when the directory is unreadable."""
    try:
        source = obj.path if obj.path is not None else io.BytesIO(obj.data)
        with zipfile.ZipFile(source) as zf:
            infos = zf.infolist()
    except Exception:  # a damaged directory is libarchive's or 7-Zip's to report
        return []
    members = []
    for position, info in enumerate(infos, 1):
        encoding = "utf-8" if info.flag_bits & _ZIP_UTF8 else "cp437"
        raw = info.orig_filename.encode(encoding, "surrogateescape")
        members.append(MemberMeta(
            raw.decode("utf-8", "surrogateescape"), position, info.compress_size,
            info.file_size, info.CRC, bool(info.flag_bits & _ZIP_ENCRYPTED), info.compress_type,
        ))
    return members


def explode_7z(obj: ScanObject, ctx: Context, label: str) -> Iterator[Child]:
    """Extract ``obj`` with 7z and yield its regular files; ``label`` names the format in errors."""
    exe = shutil.which("7z")
    if exe is None:
        raise Unsupported(f"{label}: 7z not installed")
    version = _version(exe)
    if version < _MIN_VERSION:
        raise Unsupported(f"{label}: 7z {version} writes through archive links; need 7-Zip 22+")
    with _input(obj, ctx) as fd:
        yield from _extract(exe, fd, obj, ctx, label)


def _extract(exe: str, fd: int, obj: ScanObject, ctx: Context, label: str) -> Iterator[Child]:
    source = f"/proc/self/fd/{fd}"  # as 7z, which inherits the descriptor, opens it
    outdir = ctx.new_extract_dir()
    try:
        errors = _run_7z(exe, source, outdir, ctx, fd)
        archive_err = _archive_error(errors)
        if archive_err == "failed":
            raise RuntimeError(f"7z failed: {' '.join(errors.split())[:200]}")
        if archive_err == "encrypted":
            raise Encrypted(f"{label}: encrypted headers")
        if archive_err == "unreadable":
            raise Corrupted(f"not a readable {label} archive")
        per_item = _item_errors(errors, outdir)
        encrypted = _encrypted_members(exe, source, fd) if per_item else set()
        described = _described(label, obj, exe, source, fd)
        failure = archive_err
        seen: set[str] = set()
        for rel, path in _regular_files(outdir):
            seen.add(rel)
            problem = per_item.get(rel)
            meta = described.get(rel)
            if problem is not None and (rel in encrypted or "password" in problem.lower()):
                os.unlink(path)
                yield Child(rel, status=Status.PROTECTED, reason="encrypted", meta=meta)
                continue
            if problem is not None and "Unsupported Method" in problem:
                os.unlink(path)
                yield Child(rel, status=Status.ERROR, reason=f"unsupported: {label} method",
                            meta=meta)
                continue
            child = _read_member(ctx, rel, path, obj.size)
            child.meta = meta
            if problem is not None and problem.startswith(_DAMAGE):
                failure = failure or f"{problem}: {rel}"
                if child.size:
                    yield child  # the readable start may still hold a detection
                continue
            yield child
        for rel, problem in per_item.items():
            if rel not in seen and (rel in encrypted or "password" in problem.lower()):
                yield Child(rel, status=Status.PROTECTED, reason="encrypted",
                            meta=described.get(rel))
        if failure:
            raise Corrupted(failure)
    finally:
        shutil.rmtree(outdir, ignore_errors=True)


@functools.lru_cache(maxsize=4)
def _version(exe: str) -> int:
    """7-Zip's major version from its banner ("7-Zip [64] 26.02 : …"); 0 when unknown."""
    try:
        out = subprocess.run(
            [exe], stdin=subprocess.DEVNULL, capture_output=True, timeout=10,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(rb"7-Zip(?: \(a\))?(?: \[\d+\])? (\d+)\.\d+", out)
    return int(found.group(1)) if found else 0


@contextmanager
def _input(obj: ScanObject, ctx: Context) -> Iterator[int]:
    """A descriptor of the input for 7z to inherit: the object's own file, or its bytes written
    into the temp dir and unlinked at once. A descriptor, not a path, because the path may be
    readable by this process alone (/proc/self/fd/N of a descriptor a daemon client passed)."""
    if obj.path is not None:
        fd = os.open(obj.path, os.O_RDONLY | os.O_CLOEXEC)
    else:
        fd, path = tempfile.mkstemp(prefix="in", dir=ctx.tmpdir)
        try:
            os.unlink(path)
            with os.fdopen(os.dup(fd), "wb") as fh:
                fh.write(obj.data)
        except BaseException:
            os.close(fd)
            raise
    try:
        yield fd
    finally:
        os.close(fd)


def _run_7z(exe: str, source: str, outdir: str, ctx: Context, fd: int) -> str:
    """Run the extraction within the scan's time and size budget; return 7z's error text."""
    lim = ctx.limits
    file_cap = lim.max_file_size + 1 if lim.max_file_size else resource.RLIM_INFINITY
    budget = lim.max_scan_size - ctx.scanned_bytes if lim.max_scan_size else None
    cmd = [
        exe, "x", "-y", "-p-", "-bd", "-bso0", "-bsp0", "-bb0",
        "-aou",  # a second member of the same name is renamed, never overwrites the first
        "-sccUTF-8", f"-o{outdir}", "--", source,
    ]

    def confine() -> None:
        # A member larger than max_file_size is cut there (EFBIG instead of SIGXFSZ), so one
        # huge member cannot fill the disk; the context then reports it as over the limit.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_cap, file_cap))

    errpath = outdir + ".err"
    try:
        with open(errpath, "w+b") as err:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": outdir},
                cwd=outdir, close_fds=True, pass_fds=(fd,), preexec_fn=confine,
            )
            try:
                _wait(proc, outdir, ctx, budget)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
            err.seek(0)
            return err.read().decode("utf-8", "replace")
    finally:
        os.unlink(errpath)


def _wait(proc: subprocess.Popen, outdir: str, ctx: Context, budget: int | None) -> None:
    lim = ctx.limits
    while True:
        try:
            proc.wait(timeout=_POLL)
            return
        except subprocess.TimeoutExpired:
            pass
        if ctx.deadline is not None and time.monotonic() > ctx.deadline:
            raise LimitExceeded(f"limit: time {lim.max_scan_time:g}s", whole_input=True)
        if budget is not None and _disk_usage(outdir) > budget:
            raise LimitExceeded(f"limit: scansize {lim.max_scan_size}", whole_input=True)


def _archive_error(errors: str) -> str:
    """Classify 7z's whole-archive complaints: "encrypted", "unreadable", "failed", damage or ""."""
    if "System ERROR" in errors:
        return "failed"  # 7z itself could not run (memory, I/O): not the archive's fault
    if "Cannot open encrypted archive" in errors:
        return "encrypted"
    if "Cannot open the file as" in errors or "Is not archive" in errors:
        return "unreadable"
    for line in errors.splitlines():
        line = line.strip()
        if line.startswith(("Unexpected end of archive", "Headers Error", "Data Error")):
            return line
    return ""


def _item_errors(errors: str, outdir: str) -> dict[str, str]:
    """Member path (relative to the extract dir) → 7z's message about it."""
    found: dict[str, str] = {}
    prefix = outdir + os.sep
    for message, name in _ITEM_ERROR.findall(errors):
        if " : " in name:  # "Cannot open output file : errno=… : path": not about a member
            continue
        found[name.removeprefix(prefix)] = message
    return found


def _encrypted_members(exe: str, source: str, fd: int) -> set[str]:
    """Members the listing flags "Encrypted = +"; asked only once extraction reported errors."""
    return {item["Path"] for item in _listing(exe, source, fd)
            if item.get("Encrypted") == "+" and "Path" in item}


def _listing(exe: str, source: str, fd: int) -> list[dict[str, str]]:
    """7z's technical listing: one dict of "Key = value" fields per item, in archive order."""
    try:
        proc = subprocess.run(
            [exe, "l", "-slt", "-ba", "-p-", "-sccUTF-8", "--", source],
            stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}, pass_fds=(fd,),
        )
    except subprocess.TimeoutExpired:
        return []
    items: list[dict[str, str]] = []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(" = ")
        if not sep:
            continue
        if key == "Path":
            items.append({})
        if items:
            items[-1][key] = value
    return items


def _described(label: str, obj: ScanObject, exe: str, source: str,
               fd: int) -> dict[str, MemberMeta]:
    """Member path -> how the archive describes it, for .cdb rules (zip and ARJ; ClamAV's
    CHM view numbers names 7-Zip does not list the same way, so CHM members carry none)."""
    if label == "zip":
        return {m.name: m for m in reversed(zip_members(obj))}  # a repeated name: the first
    if label != "arj":
        return {}
    found: dict[str, MemberMeta] = {}
    for position, item in enumerate(_listing(exe, source, fd), 1):
        path = item.get("Path", "")
        if item.get("Folder") == "+" or path in found:
            continue
        found[path] = MemberMeta(
            path, position, _number(item.get("Packed Size")), _number(item.get("Size")),
            int(item["CRC"], 16) if re.fullmatch(r"[0-9A-Fa-f]{1,8}", item.get("CRC", ""))
            else None, item.get("Encrypted") == "+", _number(item.get("Method")),
        )
    return found


def _number(text: str | None) -> int | None:
    return int(text) if text and text.isdigit() else None


def _regular_files(root: str) -> Iterator[tuple[str, str]]:
    """Every regular file under ``root`` in name order, never following a link."""
    stack = [root]
    while stack:
        top = stack.pop()
        try:
            entries = sorted(os.scandir(top), key=lambda e: e.name)
        except OSError:
            continue
        subdirs = []
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                # Archives may carry mode 000 directories; the scan must still enter them.
                os.chmod(entry.path, 0o700)
                subdirs.append(entry.path)
            elif stat.S_ISREG(st.st_mode):
                yield os.path.relpath(entry.path, root).replace(os.sep, "/"), entry.path
            # links, fifos and devices are never opened
        stack.extend(reversed(subdirs))


def _read_member(ctx: Context, rel: str, path: str, packed: int) -> Child:
    os.chmod(path, 0o600)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            # The whole archive's size bounds each member's packed size, for the ratio limit.
            return ctx.member(rel, fh.read, declared_size=size, packed_size=packed or None)
    finally:
        os.unlink(path)  # deleted as soon as read, bounding temp disk use


def _disk_usage(root: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total
