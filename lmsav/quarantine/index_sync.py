"""Keeping a StoresIndex in step from a background thread: a round every few seconds, and one at
once when a reader asks for fresh rows. The reader waits a moment for that round (three stats
when nothing changed) but never for a long one (the first filling, a store listed again): it
then reads what is indexed so far."""

from __future__ import annotations

import logging
import threading

from .index import IndexUnavailable, StoresIndex

log = logging.getLogger("lmsav.web")


class IndexSyncer:
    def __init__(self, index: StoresIndex, interval: float = 3.0):
        self.index = index
        self.interval = interval
        self.error: str | None = None  # the last round's failure, for the page to show
        self.ready = threading.Event()  # set after the first complete round
        self._cond = threading.Condition()
        self._asked = 0  # requests for a round so far
        self._served = 0  # the requests a completed round started after
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lmsav-stores-index",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def fresh(self, timeout: float = 0.1) -> bool:
        """Ask for a round and wait up to ``timeout`` for it; True if it completed."""
        with self._cond:
            self._asked += 1
            ticket = self._asked
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._served >= ticket, timeout)

    def sync_now(self) -> None:
        """One round in the caller's thread (where no background thread runs)."""
        self._round()

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping or self._asked > self._served,
                                        self.interval)
                    if self._stopping:
                        return
                    ticket = self._asked
                self._round()
                with self._cond:
                    self._served = ticket
                    self._cond.notify_all()
        finally:
            self.index.close()

    def _round(self) -> None:
        try:
            report = self.index.sync()
            self.error = "; ".join(report.problems) or None
        except IndexUnavailable as err:
            if err.args[0] != self.error:
                log.error("%s", err)
            self.error = str(err)
        except Exception as err:  # the thread must outlive one bad round (logged)
            log.exception("indexing the stores failed")
            self.error = f"indexing the stores failed: {err}"
        self.ready.set()
