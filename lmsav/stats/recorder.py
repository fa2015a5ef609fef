"""Recording that never raises and never holds up mail.

An event is written at once when the store has been quiet for a while (a one-off command, a
quiet server: what was recorded can be read at once). Under load, events are written in
batches (one transaction for many): by the recording thread once the oldest has waited
``BATCH_DELAY``, or by a writer thread of the process for what is left when recording stops.
A busy watcher pays little per message: ``record()`` only queues the event as it is, and it
becomes its row (``events.row_of``) when its batch is written, the whole batch in one go. An
event must therefore not be changed by its caller once recorded; one that cannot be a row is
counted and logged then.

When the store cannot take events (locked, damaged, unwritable, the PostgreSQL server down)
they wait in a bounded buffer; the writer thread tries again every ``retry_interval`` seconds
and writes all that waited once the store is back; beyond the bound, events are dropped and
counted. Each such episode is logged once when it starts and once when it ends, never per
event. Mail never waits on a store that failed: after the first failure, events only join the
buffer until the store is back.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable

from .backend import StoreUnavailable
from .events import InvalidEvent, row_of

log = logging.getLogger("lmsav.stats")

RETRY_INTERVAL = 5.0
# A write within this long of the previous one goes to the writer thread, batched.
QUIET = 1.0
BATCH_DELAY = 0.5
CLOSE_WAIT = 5.0


class Recorder:
    def __init__(self, backend, node: str, buffer_size: int,
                 clock: Callable[[], float] = time.time, retry_interval: float = RETRY_INTERVAL,
                 quiet: float = QUIET):
        self.backend = backend
        self.node = node
        self.buffer_size = buffer_size
        self.clock = clock
        self.retry_interval = retry_interval
        self.quiet = quiet
        self.pending: deque = deque()  # events as recorded
        self._unwritten: list = []  # rows made of them, their write not yet done
        self._in_hand = 0  # events taken from pending, not yet rows
        self.dropped = 0  # not yet recorded as a stats_dropped event
        self.dropped_total = 0
        self.invalid = 0
        self.failing_since: float | None = None
        self.problem = ""
        self._last_write = float("-inf")
        self._batch_start = float("inf")  # monotonic time of the oldest event not written
        self._invalid_logged = False
        self._start_process()

    def _start_process(self) -> None:
        """Locks, thread and exit hook of this process (again in a child after fork())."""
        self._pid = os.getpid()
        self._lock = threading.Lock()  # the buffer and the counters
        self.write_lock = threading.RLock()  # one user of the connection at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._exit_hook = False
        self._closing = False

    # -- recording -------------------------------------------------------------------------------
    def record(self, event: dict) -> None:
        """Store ``event`` (see ``events``), buffer it or drop it; never raises."""
        try:
            self._record(event)
        except Exception:  # statistics must never take mail down with them
            if not self._invalid_logged:
                self._invalid_logged = True
                log.exception("statistics: unexpected failure while recording an event")

    def _record(self, event: dict) -> None:
        if not isinstance(event, dict):
            self._refused(InvalidEvent("an event is an object with a kind"))
            return
        if event.get("time") is None:
            event = {**event, "time": time.time()}  # when it was recorded, not written
        if self._pid != os.getpid():
            # A child after fork(): what the parent held is the parent's to write.
            self._start_process()
            self.pending.clear()
            self._unwritten = []
        with self._lock:
            if not self.pending:
                self._batch_start = time.monotonic()
            if len(self.pending) + len(self._unwritten) < self.buffer_size:
                # As it is: made a row when written, with the rest of its batch.
                self.pending.append(event)
            else:
                self._count_drop()
        now = self.clock()
        # Under load the recording thread writes each batch itself once it is BATCH_DELAY old:
        # a writer thread doing it would contend with mail processing for the interpreter lock.
        if self.failing_since is None and (now - self._last_write >= self.quiet
                                           or time.monotonic() - self._batch_start
                                           >= BATCH_DELAY) \
                and self.write_lock.acquire(blocking=False):
            try:
                self.flush(now)
            finally:
                self.write_lock.release()
            return
        self._hand_over()

    def _refused(self, err: Exception) -> None:
        self.invalid += 1
        if not self._invalid_logged:
            self._invalid_logged = True
            log.warning("statistics: an event was not recorded: %s", err)

    def _rows_of(self, events: list[dict]) -> list:
        rows = []
        for event in events:
            try:
                rows.append(row_of(event, self.node))
            except InvalidEvent as err:
                self._refused(err)
            except Exception as err:  # noqa: BLE001 - one odd event never stops the others
                self._refused(InvalidEvent(f"{type(err).__name__}: {err}"))
        return rows

    @property
    def waiting(self) -> int:
        """Events recorded and not yet written."""
        return len(self.pending) + self._in_hand + len(self._unwritten)

    def _count_drop(self) -> None:
        self.dropped += 1
        self.dropped_total += 1

    def _hand_over(self) -> None:
        """Wake the writer thread, started on first need."""
        if self._closing or (self._thread is not None and self._wake.is_set()):
            return  # told already (most events under load)
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._write_loop, name="lmsav-stats",
                                            daemon=True)
            self._thread.start()
            if not self._exit_hook:
                # A process ending (the qmail wrapper: one per message) writes what waits.
                self._exit_hook = True
                atexit.register(self._at_exit, os.getpid())
        self._wake.set()

    def _batch_age(self) -> float:
        return time.monotonic() - self._batch_start if self.pending else 0.0

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            # Gather what comes meanwhile: one transaction for many events.
            self._stop.wait(BATCH_DELAY)
            self._wake.clear()
            if self.failing_since is None and self._batch_age() < BATCH_DELAY:
                # Written by the recording thread meanwhile; what is left is the next batch's.
                if self.pending:
                    self._wake.set()
                continue
            if not self.flush():
                self._stop.wait(self.retry_interval)
                self._wake.set()  # and try again
            elif self.pending:
                self._wake.set()  # recorded while this batch was written

    # -- writing ---------------------------------------------------------------------------------
    def flush(self, now: float | None = None) -> bool:
        """Write what waits; False when the store could not take it."""
        with self.write_lock:
            now = self.clock() if now is None else now
            with self._lock:
                events = list(self.pending)
                self.pending.clear()
                self._in_hand = len(events)  # still waiting while they become rows
            if events:
                # Kept as rows until written: a store that fails does not make them again.
                self._unwritten.extend(self._rows_of(events))
            self._in_hand = 0
            rows = self._unwritten
            if not rows and not self.dropped:
                return True
            try:
                self.backend.write(rows, now)
            except StoreUnavailable as err:
                self._failed(str(err), now)
                return False
            except Exception as err:  # noqa: BLE001 - an unforeseen failure is one more episode
                self._failed(f"{type(err).__name__}: {err}", now)
                return False
            self._last_write = now
            self._unwritten = []
            with self._lock:
                dropped, self.dropped = self.dropped, 0
            if self.failing_since is not None:
                log.info("statistics store available again after %.0f s: %d waiting events "
                         "written, %d dropped", now - self.failing_since, len(rows), dropped)
                self.failing_since, self.problem = None, ""
            if dropped:
                self.record({"kind": "stats_dropped", "time": now,
                             "detail": {"dropped": dropped}})
            return True

    def _failed(self, problem: str, now: float) -> None:
        if self.failing_since is None:
            self.failing_since, self.problem = now, problem
            log.warning("statistics store unavailable: %s; events are kept in memory (up to "
                        "%d, then dropped and counted) until it is back; mail is not affected",
                        problem, self.buffer_size)
        self._hand_over()  # the writer thread tries again

    # -- ending ----------------------------------------------------------------------------------
    def _stop_thread(self) -> None:
        thread = self._thread if self._pid == os.getpid() else None
        if thread is not None and thread.is_alive():
            self._stop.set()
            self._wake.set()
            thread.join(CLOSE_WAIT)
        self._thread = None

    def _at_exit(self, pid: int) -> None:
        if pid == os.getpid():
            self._closing = True
            with contextlib.suppress(Exception):
                self._stop_thread()
                self._flush_all()

    def _flush_all(self) -> None:
        # Twice: writing what dropped records a stats_dropped event, written the second time.
        for _ in range(2):
            if (self.waiting or self.dropped) and not self.flush():
                return

    def close(self) -> None:
        """A last try for what waits (a process ending), then the connection closed."""
        self._closing = True
        try:
            self._stop_thread()
            self._flush_all()
        finally:
            self._closing = False  # recording again later starts anew
            with contextlib.suppress(Exception):  # closing never raises either
                self.backend.close()
