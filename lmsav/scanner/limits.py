"""Scan limits and the per-input context that enforces them — the one place limits live.

Handlers never carry limits of their own: they pass every member they extract through
``Context.member``, which reads it within the limits and spills large members into the scan's
private temporary directory under a generated name (never the member's own name).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .objects import Child, Status

CHUNK = 1 << 16
# Members at most this large stay in memory; larger ones go to the private temp dir.
SPILL_THRESHOLD = 8 << 20

# What the mail parser structures of one message. Past MAX_MIME_PARTS entities the rest is
# still read part by part (a cheaper raw reading) and the limit is reported; header lines past
# MAX_HEADER_SIZE bytes of one entity and parameters past MAX_HEADER_PARAMS of one header are
# not interpreted (the raw reading then reads the message too). Postfix's header_size_limit
# is 100 KiB; real headers carry a handful of parameters.
MAX_MIME_PARTS = 10000
MAX_HEADER_SIZE = 256 << 10
MAX_HEADER_PARAMS = 64


@dataclass(frozen=True)
class Limits:
    """Every limit of one scan; 0 means unlimited."""

    max_scan_depth: int = 16
    max_file_size: int = 100 << 20
    max_scan_size: int = 400 << 20  # total bytes extracted and scanned for one input
    max_files: int = 10000  # members per container
    max_scan_time: float = 120.0  # seconds per input
    max_compression_ratio: int = 250  # unpacked / packed, per member
    limit_status: Status = Status.ERROR  # what hitting a limit yields (SUSPICIOUS when strict)


class LimitExceeded(Exception):
    """A limit was hit; ``reason`` reads like ``limit: depth 16``."""

    def __init__(self, reason: str, whole_input: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.whole_input = whole_input


class Context:
    """State of scanning one input: its budget, its clock and its private temp dir."""

    def __init__(self, limits: Limits, tmp_root: str | None = None):
        self.limits = limits
        self.started = time.monotonic()
        self.deadline = self.started + limits.max_scan_time if limits.max_scan_time else None
        self.scanned_bytes = 0
        self._tmp_root = tmp_root
        self._tmpdir: str | None = None
        self._spill_seq = 0

    # -- checks the engine makes ---------------------------------------------------------------
    def check_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise LimitExceeded(f"limit: time {self.limits.max_scan_time:g}s", whole_input=True)

    def check_depth(self, depth: int) -> None:
        if self.limits.max_scan_depth and depth > self.limits.max_scan_depth:
            raise LimitExceeded(f"limit: depth {self.limits.max_scan_depth}")

    def check_file_size(self, size: int) -> None:
        if self.limits.max_file_size and size > self.limits.max_file_size:
            raise LimitExceeded(f"limit: filesize {self.limits.max_file_size}")

    def check_files(self, count: int) -> None:
        if self.limits.max_files and count > self.limits.max_files:
            raise LimitExceeded(f"limit: files {self.limits.max_files}")

    def account(self, nbytes: int) -> None:
        """Charge scanned bytes against the per-input budget."""
        self.scanned_bytes += nbytes
        if self.limits.max_scan_size and self.scanned_bytes > self.limits.max_scan_size:
            raise LimitExceeded(f"limit: scansize {self.limits.max_scan_size}", whole_input=True)

    # -- what handlers call --------------------------------------------------------------------
    @property
    def tmpdir(self) -> str:
        """The scan's private temp dir (mode 0700), created on first use."""
        if self._tmpdir is None:
            self._tmpdir = tempfile.mkdtemp(prefix="lmsav-", dir=self._tmp_root)
        return self._tmpdir

    def member(
        self,
        name: str,
        blocks: Iterable[bytes] | Callable[[int], bytes],
        declared_size: int | None = None,
        packed_size: int | None = None,
    ) -> Child:
        """Read one member within the limits and return it as a Child.

        ``blocks`` is an iterable of byte blocks or a ``read(n)`` function. A member that breaks
        a per-member limit (size, compression ratio) comes back as a Child carrying the limit
        status, so the container's other members are still scanned; a whole-input limit (time,
        total size) raises LimitExceeded.
        """
        lim = self.limits
        if declared_size is not None and lim.max_file_size and declared_size > lim.max_file_size:
            return self._limited(name, f"limit: filesize {lim.max_file_size}", declared_size)
        ratio_cap = None
        if lim.max_compression_ratio and packed_size and packed_size > 0:
            # Small members may legitimately compress very well; allow a floor of 1 MiB.
            ratio_cap = max(packed_size * lim.max_compression_ratio, 1 << 20)
        if callable(blocks):
            read = blocks
            blocks = iter(lambda: read(CHUNK), b"")
        parts: list[bytes] = []
        total = 0
        spill = None
        try:
            for block in blocks:
                if not block:
                    continue
                total += len(block)
                if lim.max_file_size and total > lim.max_file_size:
                    return self._limited(name, f"limit: filesize {lim.max_file_size}", total)
                if ratio_cap is not None and total > ratio_cap:
                    return self._limited(
                        name, f"limit: compression ratio {lim.max_compression_ratio}", total
                    )
                self.account(len(block))
                self.check_time()
                if spill is None and total > SPILL_THRESHOLD:
                    spill = self._spill_file()
                    for p in parts:
                        spill[1].write(p)
                    parts = []
                if spill is not None:
                    spill[1].write(block)
                else:
                    parts.append(block)
        finally:
            if spill is not None:
                spill[1].close()
        if spill is not None:
            return Child(name, path=spill[0], size=total)
        return Child(name, data=b"".join(parts), size=total)

    def _limited(self, name: str, reason: str, size: int) -> Child:
        return Child(name, status=self.limits.limit_status, reason=reason, size=size)

    def _spill_file(self):
        self._spill_seq += 1
        path = Path(self.tmpdir) / f"m{self._spill_seq:06d}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return path, os.fdopen(fd, "wb")

    def new_extract_dir(self) -> str:
        """A fresh directory inside the private temp dir, for tools that must write files."""
        self._spill_seq += 1
        path = os.path.join(self.tmpdir, f"x{self._spill_seq:06d}")
        os.mkdir(path, 0o700)
        return path

    def cleanup(self) -> None:
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None


# The context of the scan running in this thread. Code the engine reaches without handing it a
# Context — the HTML and script normalisers, called by the signature matchers — checks the time
# budget through it.
_running: ContextVar[Context | None] = ContextVar("lmsav_running_scan", default=None)


@contextmanager
def running(ctx: Context) -> Iterator[Context]:
    """Make ``ctx`` the running scan's context for ``check_running_time``."""
    token = _running.set(ctx)
    try:
        yield ctx
    finally:
        _running.reset(token)


def check_running_time() -> None:
    """Raise LimitExceeded when the running scan is out of time; nothing outside a scan."""
    ctx = _running.get()
    if ctx is not None:
        ctx.check_time()
