"""`lmsav spool watch`: take entries from nqueue/new/, apply mail policy, reinject the results.

One parent process and N worker processes (lmsav.workers). The parent loads the
configuration and builds the mail service (recipient groups, signature database), then forks the
workers, so they share the compiled database copy-on-write. It watches ``new/`` with inotify
(watchdog), rescans it every ``rescan_interval`` as a safety net, and hands out entry ids one at
a time; it never touches a message itself. A worker claims the entry (the rename into ``work/``
succeeds for one worker only), asks ``MailService.decide`` for the plan, reinjects every
delivery of the plan through its own reinjector connection and only then completes the entry. Any failure counts an attempt (``Spool.retry``,
backoff doubling from ``retry_delay`` up to an hour) or holds the entry; nothing is dropped.

Deliveries already made are remembered in ``<spool>/delivered/<id>.json`` when an entry is not
completed after some of its deliveries succeeded (one group reinjected, the next one refused for
now), so a retry does not send those copies again. On the fast path nothing is written: a crash
between a reinjection and the completion of its entry may still send a copy twice when the entry
is processed again: a duplicate is preferable to a loss.

A lock on ``<spool>/watch.lock`` keeps a second watcher away; workers inherit it, so after a
``kill -9`` of the parent a new watcher waits until the old workers have finished the entries
they hold (they exit as soon as they find the parent gone) before it recovers ``work/``.

The parent counts what the workers report back (the entry's result, the message's status and
actions, its scan time) into the ``lmsav_*`` metrics it serves on ``[metrics] watcher`` from a
thread of its own; the workers record each message in the statistics store themselves.

When a group's action is "hold", the entry goes to ``hold/`` with the reason once the other
deliveries of its plan are made (notices, other groups' messages), and ``delivered/<id>.json``
records the held groups: ``lmsav spool release`` (or ``lmsav ctl queue release``) sends it back
to ``new/``, and the next pass delivers the message as it was received to those groups'
recipients, nothing else again; ``lmsav spool delete`` removes it.

Signals: SIGHUP reloads the configuration, groups and database and replaces the workers once
each has finished its entry; SIGTERM and SIGINT stop handing out entries, wait for the ones in
flight and exit 0, leaving the rest in ``new/``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import heapq
import json
import logging
import os
import re
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..durable import fsync_dir as _fsync_dir
from ..mail.deliveries import Delivery
from ..mail.service import MailService, MailServiceError
from ..metrics.endpoint import MetricsError, open_endpoint
from ..metrics.families import WATCHER_RESULTS, Metrics
from ..scanner.containers.mimeedit import header_end
from ..workers import Worker, WorkerPool
from . import permissions
from .listener_child import ListenerChild
from .nqueue import DIR_MODE, NAME_RE, Spool, SpoolEntry, SpoolError
from .nqueue import depth as nqueue_depth
from .permissions import DELIVERED_DIR
from .reinject import ReinjectError, Reinjector, from_setting

log = logging.getLogger("lmsav.spool")

MAX_DELAY = 3600.0
# In delivered/<id>.json: "hold:<group>" marks a group whose message the policy held (the
# entry went to hold/); its release delivers the original as "<group>:released".
HOLD_KEY = "hold:"
RELEASED_KEY = ":released"
LOCK_NAME = "watch.lock"


class WatcherError(Exception):
    """The watcher cannot start: configuration, groups, database or spool unusable."""


@dataclass
class Result:
    """What a worker reports to the parent about one entry id."""

    entry_id: str
    result: str  # done | retry | held | gone | stuck
    delay: float = 0.0  # retry: seconds until the entry is due again
    status: str = ""  # the message's status, when the mail policy decided it
    actions: tuple[str, ...] = ()  # each group's action
    seconds: float | None = None  # the scan time of the decision
    dropped: int = 0  # statistics events this worker dropped since its last result


# -- deliveries already made, across retries -----------------------------------------------------

class DeliveredStore:
    """``<spool>/delivered/<id>.json``: delivery key → recipients the MTA already took."""

    def __init__(self, root: Path):
        self.dir = Path(root) / DELIVERED_DIR

    def _path(self, entry_id: str) -> Path:
        return self.dir / f"{entry_id}.json"

    def load(self, entry_id: str) -> dict[str, list[str]]:
        try:
            data = json.loads(self._path(entry_id).read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            # Unreadable: treat nothing as delivered. A duplicate is preferable to a loss.
            log.warning("entry=%s cannot read %s: %s", entry_id, self._path(entry_id), err)
            return {}
        return {k: list(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def save(self, entry_id: str, done: dict[str, list[str]]) -> None:
        self.dir.mkdir(mode=DIR_MODE, exist_ok=True)
        tmp = self.dir / f".{entry_id}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
        try:
            os.write(fd, json.dumps(done, sort_keys=True).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self._path(entry_id))
        _fsync_dir(self.dir)

    def discard(self, entry_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(entry_id))

    def ids(self) -> list[str]:
        try:
            return [n[:-5] for n in os.listdir(self.dir) if n.endswith(".json")]
        except FileNotFoundError:
            return []


# -- one entry, in a worker ----------------------------------------------------------------------

def retry_delay(base: float, attempts: int) -> float:
    """The wait before the next attempt after ``attempts`` earlier failures."""
    return min(MAX_DELAY, base * 2 ** min(attempts, 32))


class EntryHandler:
    """Claims, processes, reinjects and finishes one entry at a time (a worker's whole job)."""

    def __init__(self, spool: Spool, service: MailService, reinjector: Reinjector,
                 retry_base: float, max_attempts: int):
        self.spool = spool
        self.service = service
        self.reinjector = reinjector
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.delivered = DeliveredStore(spool.root)
        self._decided = None  # the outcome of the entry in hand, once decided
        self._dropped_seen = 0

    def run_job(self, entry_id: str, _fds) -> Result:
        """The worker pool's side: one entry id in, its Result out (with what the parent
        counts)."""
        self._decided = None
        result = self.handle(entry_id)
        outcome = self._decided
        if outcome is not None:
            result.status = outcome.status
            result.actions = tuple(g.action for g in outcome.groups)
            result.seconds = outcome.scan_seconds
        store = self._mail_stats()
        dropped = store.dropped if store is not None else 0
        result.dropped, self._dropped_seen = dropped - self._dropped_seen, dropped
        return result

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reinjector.close()
        store = self._mail_stats()
        if store is not None:
            # The worker leaves with os._exit, which runs no exit hook: write what waits now.
            store.close()

    def _mail_stats(self):
        return getattr(getattr(self.service, "processor", None), "stats", None)

    def handle(self, entry_id: str) -> Result:
        t0 = time.monotonic()
        try:
            entry = self.spool.claim(entry_id)
        except SpoolError as err:
            log.error("entry=%s cannot claim: %s", entry_id, err)
            return Result(entry_id, "stuck", self.retry_base)
        if entry is None:
            return Result(entry_id, "gone")
        env = entry.envelope
        line = _LogLine(entry, t0)
        try:
            raw = self.spool.message(entry)
            line.message_id = _message_id(raw)
            plan = self.service.decide(raw, env, queue_id=entry.queue_id)
            self._decided = plan.outcome
            line.outcome(plan.outcome)
            deliveries = list(plan.deliveries)  # after the queue: a refusal is a notice, too
        except Exception as err:  # a bug or a resource problem: count an attempt, keep the mail
            log.debug("entry=%s processing failed", entry_id, exc_info=True)
            return self._fail(entry, line, f"processing failed: {_describe(err)}", False)

        done = self.delivered.load(entry.id)
        # A group that holds the message: the first time the entry goes to hold/; once the
        # administrator has released it, its recipients get the message as it was received.
        to_hold = [g for g in plan.held if HOLD_KEY + g.group not in done]
        deliveries += [Delivery(f"{g.group}{RELEASED_KEY}", env.sender, tuple(g.recipients), raw)
                       for g in plan.held if HOLD_KEY + g.group in done]
        before = {k: list(v) for k, v in done.items()}
        failures: list[tuple[Delivery, ReinjectError]] = []
        for d in deliveries:
            taken = set(done.get(d.key, ()))
            remaining = [r for r in d.recipients if r not in taken]
            if not remaining:
                continue
            try:
                self.reinjector.deliver(d.sender, remaining, d.message)
                done.setdefault(d.key, []).extend(remaining)
            except ReinjectError as err:
                if err.delivered:
                    done.setdefault(d.key, []).extend(err.delivered)
                failures.append((d, err))
            except Exception as err:  # a reinjector bug must not lose the message either
                failures.append((d, ReinjectError(_describe(err), temporary=True)))

        if not failures and to_hold:
            return self._hold(entry, line, done, to_hold)
        if not failures:
            try:
                self.spool.complete(entry)
            except SpoolError as err:
                # Everything was reinjected: remember that, so reprocessing sends nothing again.
                self._remember(entry.id, done)
                line.emit("stuck", str(err), logging.ERROR)
                return Result(entry_id, "stuck", self.retry_base)
            self.delivered.discard(entry.id)
            line.emit("done")
            return Result(entry_id, "done")
        if done != before:
            self._remember(entry.id, done)
        reason = "; ".join(f"reinjecting {d.key} to <{','.join(d.recipients)}>: {err}"
                           for d, err in failures)
        permanent = any(not err.temporary for _, err in failures)
        return self._fail(entry, line, reason, permanent)

    def _hold(self, entry: SpoolEntry, line: _LogLine, done, groups) -> Result:
        """The policy holds the message for ``groups``: the entry waits in ``hold/`` with the
        reason until ``lmsav spool release`` (then those recipients get it) or ``delete``."""
        for g in groups:
            done[HOLD_KEY + g.group] = list(g.recipients)
        self._remember(entry.id, done)
        statuses = ",".join(dict.fromkeys(g.status for g in groups))
        threats = ", ".join(dict.fromkeys(t for g in groups for o in g.objects
                                          for t in o.threats))
        reason = (f"held by the anti-virus policy: group {','.join(g.group for g in groups)} "
                  f"{statuses}" + (f" ({threats})" if threats else ""))
        try:
            self.spool.hold(entry, reason)
        except SpoolError as err:
            line.emit("stuck", f"{reason}; and cannot hold: {err}", logging.ERROR)
            return Result(entry.id, "stuck", self.retry_base)
        line.emit("held", reason, logging.WARNING)
        return Result(entry.id, "held")

    def _remember(self, entry_id: str, done) -> None:
        try:
            self.delivered.save(entry_id, done)
        except OSError as err:
            log.error("entry=%s cannot record the deliveries made (a retry may duplicate "
                      "them): %s", entry_id, err)

    def _fail(self, entry: SpoolEntry, line: _LogLine, reason: str, permanent: bool) -> Result:
        """Count a failed attempt, or hold at once when trying again cannot help."""
        delay = retry_delay(self.retry_base, entry.attempts)
        try:
            if permanent:
                self.spool.hold(entry, reason)
                held = True
            else:
                held = self.spool.retry(entry, reason, delay, self.max_attempts)
        except SpoolError as err:
            line.emit("stuck", f"{reason}; and cannot requeue: {err}", logging.ERROR)
            return Result(entry.id, "stuck", self.retry_base)
        if held:
            line.emit("held", reason, logging.WARNING)
            return Result(entry.id, "held")
        line.emit("retry", reason, logging.WARNING, delay=delay)
        return Result(entry.id, "retry", delay)


class _LogLine:
    """The one log line per message: queue id, message id, envelope, groups, result, time."""

    def __init__(self, entry: SpoolEntry, t0: float):
        self.entry = entry
        self.t0 = t0
        self.message_id = ""
        self.groups = self.status = self.action = "-"

    def outcome(self, outcome) -> None:
        self.message_id = outcome.message_id or self.message_id
        self.groups = ",".join(g.group for g in outcome.groups) or "-"
        self.status = ",".join(g.status for g in outcome.groups) or outcome.status
        self.action = ",".join(g.action for g in outcome.groups) or "-"

    def emit(self, result: str, reason: str = "", level: int = logging.INFO,
             delay: float | None = None) -> None:
        env = self.entry.envelope
        extra = f" reason={json.dumps(reason, ensure_ascii=False)}" if reason else ""
        if delay is not None:
            extra = f" attempt={self.entry.attempts + 1} next_in={delay:g}s" + extra
        log.log(level, "queue_id=%s message_id=%s from=<%s> to=<%s> group=%s status=%s "
                       "action=%s time=%.3fs entry=%s result=%s%s",
                self.entry.queue_id or "-", _token(self.message_id), env.sender,
                ",".join(env.recipients), self.groups, self.status, self.action,
                time.monotonic() - self.t0, self.entry.id, result, extra)


def _token(text: str) -> str:
    return "".join(text.split()) or "-"


def _message_id(raw: bytes) -> str:
    head = raw[:header_end(raw)]
    match = re.search(rb"(?im)^message-id:[ \t]*(.*(?:\r?\n[ \t].*)*)", head)
    return match.group(1).decode("ascii", "replace").strip() if match else ""


def _describe(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# -- the watcher ---------------------------------------------------------------------------------

@dataclass
class _Loaded:
    """What the parent loads before forking and reloads on SIGHUP."""

    settings: object
    service: MailService
    workers: int

    @property
    def database(self):
        return self.service.database

    @property
    def groups(self):
        return self.service.groups


class Watcher:
    """The spool watcher: see the module docstring."""

    def __init__(self, settings, config_path, database_dir=None, *, workers: int | None = None,
                 profile: str | None = None, listen: tuple[str, ...] | None = None,
                 reinjector_factory: Callable[[object], Reinjector] | None = None):
        self.settings = settings
        self.config_path = Path(config_path) if config_path is not None else None
        self.database_dir = Path(database_dir) if database_dir else None
        self.workers_override = workers
        self.listen_override = tuple(listen) if listen else None  # --listen outlives a SIGHUP
        self.profile = profile
        self.reinjector_factory = reinjector_factory or (
            lambda settings: from_setting(settings.spool.reinject, settings.host_name()))
        self.spool = Spool(settings.spool_dir())
        self._pool: WorkerPool | None = None
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._inflight: dict[str, int] = {}  # entry id → worker pid
        self._not_before: dict[str, float] = {}  # ids a worker could not claim, wait until
        self._timers: list[float] = []
        self._dirty = True
        self._next_rescan = 0.0
        self._stop = False
        self._reload = False
        self._observer = None
        self._lock_fd: int | None = None
        self._wake_r = self._wake_w = -1
        self._selector: selectors.BaseSelector | None = None
        self._loaded: _Loaded | None = None
        self.counts: dict[str, int] = {}
        self.metrics = Metrics(WATCHER_RESULTS, self._database_in_use,
                               spool_depth=lambda: nqueue_depth(self.spool.root))
        self._metrics_endpoint = None
        self._listener: ListenerChild | None = None

    def _database_in_use(self):
        return self._loaded.database if self._loaded is not None else None

    # -- loading ---------------------------------------------------------------------------------
    def _load(self, settings) -> _Loaded:
        try:
            service = MailService.from_settings(settings, self.config_path,
                                                database_dir=self.database_dir)
        except MailServiceError as err:
            raise WatcherError(str(err)) from None
        workers = self.workers_override or settings.spool.workers or os.cpu_count() or 1
        return _Loaded(settings, service, max(1, workers))

    def _reload_now(self) -> None:
        from .. import config as config_mod

        try:
            settings = config_mod.load_settings(self.config_path, self.profile)
            loaded = self._load(settings)
        except (config_mod.ConfigError, WatcherError) as err:
            self.metrics.reloads.labels("failed").inc()
            log.error("reload failed, keeping the running configuration: %s", err)
            return
        if settings.spool_dir() != self.spool.root:
            log.warning("reload: the spool directory cannot change while running; still "
                        "watching %s", self.spool.root)
        if settings.metrics.watcher != self.settings.metrics.watcher:
            log.warning("reload: [metrics] watcher changed; restart the watcher to apply it")
        self.metrics.reloads.labels("ok").inc()
        listen_changed = self._listen_of(settings) != self._listen_of(self.settings)
        self.settings, self._loaded = settings, loaded
        if listen_changed:
            self._stop_listener()
            self._start_listener()
        self._pool.new_generation(loaded.workers)
        log.info("reloaded: database %s, groups %s, %d workers", loaded.database.version,
                 ",".join(loaded.groups.names()), loaded.workers)

    # -- running ---------------------------------------------------------------------------------
    def run(self, once: bool = False) -> int:
        """Watch until SIGTERM/SIGINT (or, with ``once``, until nothing is pending); 0 on a
        clean stop."""
        # Signals first: a SIGTERM while the database loads must stop cleanly, not kill.
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        old_handlers = self._install_signals()
        try:
            try:
                self._prepare_shared_dirs()
                self.spool.ensure()
            except SpoolError as err:
                raise WatcherError(str(err)) from None
            if not self._lock():
                return 0
            try:
                self._open_metrics()
                self._start(once)
            finally:
                self._stop_listener()  # first: no new mail while the workers finish
                self._stop_observer()
                self._shutdown_workers()
                self._close_metrics()
                self._unlock()
        finally:
            self._restore_signals(old_handlers)
            self._selector.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
        log.info("stopped: %s", ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
                 or "nothing processed")
        return 0

    def _prepare_shared_dirs(self) -> None:
        """As root: create the directories the mail path shares with their owner and mode, so
        the MTA's pipe user can write the spool; say what is wrong with existing ones."""
        if os.geteuid() != 0:
            return
        who = permissions.owner(self.settings)
        if who.uid is None:
            log.warning("the service user %s does not exist: directories are created for root "
                        "alone (`lmsav spool check` shows the fix)", who.user)
            return
        created, failed = permissions.prepare(self.settings, who)
        for path in created:
            log.info("created %s (%s, mode %04o)", path, who.spec, DIR_MODE)
        for reason in failed:
            log.warning("%s", reason)  # the spool's own failure stops the start just below
        for finding in permissions.check(self.settings, who):
            if finding.problem:
                log.warning("%s: %s; fix: %s", finding.path, finding.problem,
                            " && ".join(finding.fixes) or "see `lmsav spool check`")

    def _start(self, once: bool) -> None:
        try:
            recovered = self.spool.recover()
        except SpoolError as err:
            raise WatcherError(str(err)) from None
        if recovered:
            log.info("recovered %d entries from work/ of an earlier run", recovered)
        self._loaded = self._load(self.settings)
        self._pool = WorkerPool(self._loaded.workers, self._make_handler, self._selector,
                                child_setup=self._worker_setup, around_fork=self._observer_paused)
        self._pool.start()
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.start()
            log.info("metrics at %s", self._metrics_endpoint.url)
        if not once:
            self._start_observer()
            self._start_listener()
        log.info("watching %s: %d workers, database %s, reinject %s", self.spool.root,
                 self._loaded.workers, self._loaded.database.version,
                 self.settings.spool.reinject)
        self._loop(once)

    def _loop(self, once: bool) -> None:
        interval = max(0.05, float(self.settings.spool.rescan_interval))
        while True:
            now = time.time()
            if self._reload and not self._stop:
                self._reload = False
                self._reload_now()
            if self._stop:
                self._queue.clear()
                self._queued.clear()
                if not self._inflight:
                    return
            else:
                while self._timers and self._timers[0] <= now:
                    heapq.heappop(self._timers)
                    self._dirty = True
                if now >= self._next_rescan:
                    self._next_rescan = now + interval
                    self._dirty = True
                    self._sweep_orphans()
                self._pool.reap()
                if self._listener is not None and self._listener.due():
                    self._start_listener()
                if self._dirty and len(self._queue) < len(self._pool.idle()) + 1:
                    self._refill(now)
                self._dispatch()
                if once and not self._queue and not self._inflight:
                    self._refill(time.time())
                    if not self._queue:
                        return
                    continue
            timeout = self._next_rescan - time.time()
            if self._timers:
                timeout = min(timeout, self._timers[0] - time.time())
            if self._listener is not None and self._listener.restart_at is not None:
                timeout = min(timeout, self._listener.restart_at - time.monotonic())
            self._wait(max(0.0, timeout))

    def _refill(self, now: float) -> None:
        self._dirty = False
        try:
            due = self.spool.pending(now)
        except SpoolError as err:
            log.error("%s", err)
            return
        for entry_id in due:
            if entry_id in self._queued or entry_id in self._inflight:
                continue
            wait = self._not_before.get(entry_id)
            if wait is not None:
                if wait > now:
                    continue
                del self._not_before[entry_id]
            self._queue.append(entry_id)
            self._queued.add(entry_id)

    def _dispatch(self) -> None:
        for w in self._pool.idle():
            if not self._queue:
                return
            entry_id = self._queue.popleft()
            self._queued.discard(entry_id)
            try:
                self._pool.send(w, entry_id, entry_id)
            except OSError:
                self._queue.appendleft(entry_id)
                self._queued.add(entry_id)
                continue  # the worker died; its EOF is handled in _wait
            self._inflight[entry_id] = w.pid

    def _wait(self, timeout: float) -> None:
        for key, _mask in self._selector.select(timeout):
            if key.data is None:
                self._drain_wake()
                self._dirty = True
                continue
            if key.data is self._listener:
                self._selector.unregister(key.fd)
                self._listener.reap()
                continue
            w: Worker = key.data
            answers = self._pool.read(w)
            if answers is None:
                self._worker_died(w)
                continue
            for _entry_id, result in answers:
                self._finished(result)

    def _drain_wake(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            while os.read(self._wake_r, 4096):
                pass

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _finished(self, result: Result) -> None:
        self._inflight.pop(result.entry_id, None)
        self.counts[result.result] = self.counts.get(result.result, 0) + 1
        self._count(result)
        if result.result == "retry":
            heapq.heappush(self._timers, time.time() + result.delay)
        elif result.result == "stuck":
            self._not_before[result.entry_id] = time.time() + result.delay
            heapq.heappush(self._timers, time.time() + result.delay)

    def _count(self, result: Result) -> None:
        """The metrics of one entry a worker finished with ("gone": another took it)."""
        m = self.metrics
        if result.result != "gone":
            m.messages.labels(result.result).inc()
        if result.status:
            m.verdicts.labels(result.status).inc()
            m.count_actions(result.actions)
        if result.seconds is not None:
            m.scan_seconds.observe(result.seconds)
        if result.dropped > 0:
            m.stats_dropped.inc(result.dropped)

    def _worker_died(self, w: Worker) -> None:
        entry_id = self._pool.died(w)  # replaced by the pool if it was current
        if entry_id is not None:
            self._inflight.pop(entry_id, None)
            log.error("worker %d died (%s) while processing entry %s", w.pid, w.exit_status,
                      entry_id)
            self._requeue(entry_id, f"worker died ({w.exit_status})")
        elif not w.retiring:
            log.error("worker %d died (%s)", w.pid, w.exit_status)

    def _requeue(self, entry_id: str, reason: str) -> None:
        """An entry left in work/ by a worker that is gone: count the attempt, so a message
        that kills workers ends in hold/ instead of killing them forever."""
        try:
            entry = self.spool.get(entry_id)
            if entry.path.parent.name != "work":
                return
            delay = retry_delay(self.settings.spool.retry_delay, entry.attempts)
            held = self.spool.retry(entry, reason, delay, self.settings.spool.max_attempts)
        except SpoolError as err:
            log.error("entry=%s cannot requeue (%s): %s", entry_id, reason, err)
            return
        log.warning("entry=%s result=%s reason=%s", entry_id, "held" if held else "retry",
                    json.dumps(reason))
        if not held:
            heapq.heappush(self._timers, time.time() + delay)

    def _sweep_orphans(self) -> None:
        """Entries in work/ that no worker of ours holds (a requeue that failed earlier)."""
        try:
            names = os.listdir(self.spool.root / "work")
        except OSError:
            return
        for name in names:
            match = NAME_RE.match(name)
            if match and match["id"] not in self._inflight:
                self._requeue(match["id"], "left in work/ without a worker")

    # -- workers ---------------------------------------------------------------------------------
    def _make_handler(self) -> EntryHandler:
        """A new worker's job handler, over what the parent has loaded now."""
        loaded = self._loaded
        return EntryHandler(Spool(self.spool.root), loaded.service,
                            self.reinjector_factory(loaded.settings),
                            float(loaded.settings.spool.retry_delay),
                            loaded.settings.spool.max_attempts)

    def _worker_setup(self, _sock) -> None:
        """In a new worker: the parent's selector, wake pipe, /metrics and listener are not its
        own."""
        if self._listener is not None and self._listener.fd >= 0:
            os.close(self._listener.fd)
        self._selector.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self._metrics_endpoint is not None:
            self._metrics_endpoint.close_in_child()

    # -- the SMTP/LMTP listener ------------------------------------------------------------------
    def _start_listener(self) -> None:
        """Run `lmsav spool listen` as a child when [spool] listen is set (see listener_child)."""
        listen = self._listen_of(self.settings)
        if not listen:
            return
        if self._listener is None or self._listener.listen != listen:
            self._listener = ListenerChild(self.config_path, self.profile, listen,
                                           self.settings.spool.log_file)
        self._listener.start()
        if self._listener.fd >= 0:
            self._selector.register(self._listener.fd, selectors.EVENT_READ, self._listener)

    def _listen_of(self, settings) -> tuple[str, ...]:
        return self.listen_override or settings.spool.listen

    def _stop_listener(self) -> None:
        child = self._listener
        if child is None:
            return
        if child.fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(child.fd)
        child.stop()

    # -- metrics ---------------------------------------------------------------------------------
    def _open_metrics(self) -> None:
        """Listen where [metrics] watcher says (after the spool lock: a second watcher waits
        for the first before it takes the port)."""
        try:
            self._metrics_endpoint = open_endpoint(self.settings.metrics.watcher,
                                                   self.metrics.registry, "[metrics] watcher")
        except MetricsError as err:
            raise WatcherError(str(err)) from None

    def _close_metrics(self) -> None:
        endpoint, self._metrics_endpoint = self._metrics_endpoint, None
        if endpoint is not None:
            endpoint.close()

    @contextlib.contextmanager
    def _observer_paused(self):
        """No other thread may run during fork(): the inotify observer stops around it."""
        observing = self._observer is not None
        if observing:
            self._stop_observer()
        try:
            yield
        finally:
            if observing:
                self._start_observer()
                self._dirty = True  # events may have been missed while paused

    def _shutdown_workers(self) -> None:
        if self._pool is not None:
            # Each worker finishes its entry and answers; then it sees the end of its socket.
            self._pool.stop(30, on_result=lambda _w, _job, result: self._finished(result))

    # -- inotify ---------------------------------------------------------------------------------
    def _start_observer(self) -> None:
        from watchdog.events import (
            FileCreatedEvent,
            FileMovedEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer
        from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

        # watchdog holds each unpaired IN_MOVED_FROM for 0.5 s to pair it with its IN_MOVED_TO,
        # and events behind it wait too: every claim (new/ → work/, work/ not watched) would
        # delay the wake-up for the next arrival by up to half a second. Only "something
        # arrived" matters here, so moves are not paired in this process.
        InotifyMoveEventGrouper.delay = 0
        watcher = self

        class _OnNew(FileSystemEventHandler):
            """An entry renamed into new/ (enqueue, retry, release) means "look again"."""

            def on_any_event(self, event):
                watcher._wake()

        observer = Observer(timeout=0.2)
        observer.schedule(_OnNew(), str(self.spool.root / "new"), recursive=False,
                          event_filter=[FileCreatedEvent, FileMovedEvent])
        observer.start()
        self._observer = observer

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            # watchdog logs a harmless race of its own thread shutdown as an error; not ours.
            noisy = logging.getLogger("watchdog.observers.inotify")
            level = noisy.level
            noisy.setLevel(logging.CRITICAL)
            try:
                observer.stop()
                observer.join()
            finally:
                noisy.setLevel(level)

    # -- signals and the lock --------------------------------------------------------------------
    def _install_signals(self):
        def stop(signum, _frame):
            if not self._stop:
                log.info("%s: finishing %d messages in flight, then stopping",
                         signal.Signals(signum).name, len(self._inflight))
            self._stop = True
            if self._pool is not None:
                self._pool.stopping = True  # a worker dying now is not replaced

        def reload(_signum, _frame):
            self._reload = True

        old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT,
                                                       signal.SIGHUP)}
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        old_fd = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        return old, old_fd

    def _restore_signals(self, saved) -> None:
        old, old_fd = saved
        signal.set_wakeup_fd(old_fd)
        for sig, handler in old.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)

    def _lock(self) -> bool:
        """Take the spool lock, waiting for it if need be; False if told to stop meanwhile."""
        path = self.spool.root / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as err:
            raise WatcherError(f"{path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                os.close(fd)
                raise WatcherError(f"{path}: {err.strerror}") from None
            log.warning("%s is locked: another watcher, or the workers of one that was "
                        "killed, still run; waiting", path)
            while not self._stop:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    time.sleep(0.1)
            else:
                os.close(fd)
                return False
        # Workers inherit this descriptor (fork keeps it despite O_CLOEXEC): the lock lasts
        # until the last of them has exited.
        self._lock_fd = fd
        return True

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
