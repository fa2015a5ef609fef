"""The SMTP/LMTP listener as a child of `lmsav spool watch`: started with it, restarted when it
dies, stopped with it.

A separate process (``lmsav spool listen``) rather than a thread: its asyncio loop never shares
the interpreter lock with the watcher's dispatching, and the watcher keeps forking workers
without an event loop in the way. The watcher registers ``fd`` (a pidfd) in its selector, so it
learns of the child's death at once.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

log = logging.getLogger("lmsav.spool")

MAX_BACKOFF = 60.0
# The listener's own grace for transfers in progress (listener.STOP_GRACE, 30 s), and some; not
# imported, so the watcher does not load the SMTP library it never uses itself.
STOP_WAIT = 35.0
STABLE_AFTER = 10.0  # a child that ran this long had no start-up problem: backoff resets


class ListenerChild:
    """One `lmsav spool listen` child for the addresses of ``[spool] listen``."""

    def __init__(self, config_path, profile: str | None, listen: tuple[str, ...],
                 log_file=None):
        self.config_path = config_path
        self.profile = profile
        self.listen = tuple(listen)
        self.log_file = log_file
        self.proc: subprocess.Popen | None = None
        self.fd = -1  # pidfd of the running child, for the watcher's selector
        self._started = 0.0
        self._failures = 0
        self.restart_at: float | None = None  # when a dead child is started again

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "lmsav"]
        if self.config_path is not None:
            argv += ["--config", str(self.config_path)]
        if self.profile:
            argv += ["--profile", self.profile]
        argv += ["spool", "listen"]
        for address in self.listen:
            argv += ["--listen", address]
        if self.log_file is not None:
            argv += ["--log-file", str(self.log_file)]
        return argv

    def start(self) -> None:
        self.restart_at = None
        try:
            # Own session: a Ctrl-C at the terminal stops the watcher, which then stops this.
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as err:
            log.error("cannot start the listener: %s", err)
            self._schedule(time.monotonic())
            return
        self._started = time.monotonic()
        self.fd = os.pidfd_open(self.proc.pid)
        log.info("listener %d started for %s", self.proc.pid, ", ".join(self.listen))

    def reap(self) -> bool:
        """After the pidfd became readable: the child is gone; schedule its restart. True if
        it had exited."""
        if self.proc is None or self.proc.poll() is None:
            return False
        status = self.proc.returncode
        self._close_fd()
        ran = time.monotonic() - self._started
        self._failures = 0 if ran >= STABLE_AFTER else self._failures + 1
        log.error("listener %d exited (%s) after %.1f s; mail for it waits at the MTA",
                  self.proc.pid, _describe(status), ran)
        self.proc = None
        self._schedule(time.monotonic())
        return True

    def _schedule(self, now: float) -> None:
        delay = 0.0 if self._failures == 0 else min(MAX_BACKOFF, 2.0 ** self._failures)
        self.restart_at = now + delay
        if delay:
            log.info("restarting the listener in %.0f s", delay)

    def due(self) -> bool:
        return (self.proc is None and self.restart_at is not None
                and time.monotonic() >= self.restart_at)

    def stop(self) -> None:
        """SIGTERM, then wait for transfers in progress to finish (the listener's own grace)."""
        self.restart_at = None
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._close_fd()

    def _close_fd(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _describe(status: int) -> str:
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"status {status}"
