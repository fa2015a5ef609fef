"""`lmsav scan --watch`: scan files under directories as they are finished, through inotify.

A file is finished when a writer closes it (IN_CLOSE_WRITE), when it is renamed or moved into a
watched directory, or when it appears there by a hard link. Events for one path are merged until
the path has been quiet for ``settle`` seconds; then ``on_file`` is called once, from the thread
that runs the watcher. Just before, the kernel is asked whether anyone still has the file open
for writing (a read lease can be taken only when nobody has): if so, its writer's next close
brings it back. A file that changes while ``on_file`` runs is scanned again.

watchdog's recursive observer adds a watch for every new subdirectory; the files written into a
directory before its watch was in place are found by walking the directory once it appears. When
the kernel's event queue overflows (events are lost), the roots are walked once and the files
changed since the watcher was last known to be in step are scanned.
"""

from __future__ import annotations

import collections
import errno
import fcntl
import heapq
import itertools
import logging
import os
import queue
import signal
import stat
import threading
import time
import warnings
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.api import BaseObserver
from watchdog.observers.inotify import InotifyFullEmitter
from watchdog.observers.inotify_c import InotifyFD

from .walk import matches, regular_files

log = logging.getLogger("lmsav.scan")

# What the watcher listens to. The full emitter reports a move from or to an unwatched place as
# a FileMovedEvent with an empty side, so a plain FileCreatedEvent is a real IN_CREATE.
_EVENT_TYPES = [FileClosedEvent, FileCreatedEvent, FileMovedEvent, FileDeletedEvent,
                DirCreatedEvent, DirMovedEvent, DirDeletedEvent]

# How sure we are that a queued file is finished.
_CREATED = 0  # only IN_CREATE seen: a hard link, or a file its creator may still be writing
_FINISHED = 1  # closed after writing, moved in, or found by a walk

_POLL = 0.2  # seconds between looks at the stop flag
_BATCH = 10000  # events taken at once, so a flood of them does not keep the stop flag unread
_REMEMBERED = 65536  # files whose last scanned state is kept, to skip them after an overflow
_CLOCK_SLACK = 1.0  # file times come from a coarse kernel clock

_PROC_INOTIFY = "/proc/sys/fs/inotify"

# ``mkdir -p`` makes watchdog add a watch twice (once walking the new tree, once on the event of
# the inner directory) and warn about it; the second add changes nothing.
warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch",
                        category=RuntimeWarning)


class WatchError(Exception):
    """The watcher cannot start: a root is missing or not a directory, inotify unusable."""


class WatchLimitError(WatchError):
    """A kernel limit on inotify watches or instances was reached; the message names the sysctl."""


class FileWatcher:
    """Call ``on_file(path)`` once for every regular file finished under ``roots``."""

    def __init__(self, roots: list[str], on_file: Callable[[str], None], *, settle: float = 0.3,
                 exclude: tuple[str, ...] = (), include: tuple[str, ...] = (),
                 follow_symlinks: bool = False):
        self.roots = _outermost([_normalize(r) for r in roots])
        self.on_file = on_file
        self.settle = settle
        self.exclude = tuple(exclude)
        self.include = tuple(include)
        self.follow_symlinks = follow_symlinks
        self._prefixes = [(r, r if r.endswith("/") else r + "/") for r in self.roots]
        self._events: queue.SimpleQueue[FileSystemEvent] = queue.SimpleQueue()
        self._pending: dict[str, list] = {}  # path -> [due (monotonic), how sure]
        self._due: list[tuple[float, int, str]] = []  # heap; entries older than _pending are stale
        self._seq = itertools.count()
        self._scanned: collections.OrderedDict[str, tuple] = collections.OrderedDict()
        self._in_step_since = 0.0  # wall clock: no event was lost after this
        self._stop = threading.Event()

    # -- running ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event, ready: Callable[[], None] | None = None) -> None:
        """Watch until ``stop`` is set; ``ready()`` is called once the watches are in place.
        Raises WatchError (WatchLimitError for an inotify limit), or what ``on_file`` raises."""
        self._stop = stop
        for root in self.roots:
            if not os.path.isdir(root):
                reason = "not a directory" if os.path.exists(root) else "no such directory"
                raise WatchError(f"{root}: cannot watch: {reason}")
        inotify = _open_inotify()
        inotify.start()
        observer = BaseObserver(InotifyFullEmitter, timeout=_POLL, inotify_fd=inotify)
        relay = _Relay(self._events)
        try:
            for root in self.roots:
                # A trailing slash makes the kernel follow a root that is a symlink, as a sweep
                # follows a symlink named on the command line.
                path = root + "/" if os.path.islink(root) else root
                observer.schedule(relay, path, recursive=True, event_filter=_EVENT_TYPES,
                                  follow_symlink=self.follow_symlinks)
            try:
                observer.start()
            except OSError as err:
                if err.errno == errno.ENOSPC:
                    raise inotify.limit_error or _watch_limit_error("a root") from None
                raise WatchError(f"cannot watch: {err.strerror or err}") from None
            if inotify.limit_error is not None:
                raise inotify.limit_error
            self._in_step_since = time.time() - _CLOCK_SLACK
            log.info("watching %s", ", ".join(self.roots))
            if ready is not None:
                ready()
            self._loop(inotify)
        finally:
            _stop_observer(observer, inotify)

    def _loop(self, inotify: _Inotify) -> None:
        while not self._stop.is_set():
            if inotify.limit_error is not None:
                raise inotify.limit_error
            if inotify.overflowed.is_set():
                inotify.overflowed.clear()
                self._catch_up()
            self._take_events(self._wait())
            while self._due and self._due[0][0] <= time.monotonic() and not self._stop.is_set():
                due, _seq, path = heapq.heappop(self._due)
                item = self._pending.get(path)
                if item is None or item[0] != due:
                    continue  # stale: the path was forgotten or had a later event
                self._take_events(0)  # an event that came meanwhile postpones the path
                if self._pending.get(path) is item and item[0] == due:
                    del self._pending[path]
                    self._scan(path, item[1])

    def _wait(self) -> float:
        if not self._due:
            return _POLL
        return min(_POLL, max(0.0, self._due[0][0] - time.monotonic()))

    def _take_events(self, timeout: float) -> None:
        try:
            event = self._events.get(timeout=timeout) if timeout > 0 else self._events.get_nowait()
        except queue.Empty:
            return
        for _ in range(_BATCH):
            self._take(event)
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
        self._take(event)

    # -- events -----------------------------------------------------------------------------------
    def _take(self, event: FileSystemEvent) -> None:
        handler = _DISPATCH.get((event.event_type, event.is_directory))
        if handler is not None:
            handler(self, event)

    def _on_closed(self, event) -> None:
        self._queue(event.src_path, _FINISHED)

    def _on_created(self, event) -> None:
        self._queue(event.src_path, _CREATED)

    def _on_moved(self, event) -> None:
        if event.src_path:
            self._forget(event.src_path)
        if event.dest_path:
            self._queue(event.dest_path, _FINISHED)

    def _on_deleted(self, event) -> None:
        self._forget(event.src_path)

    def _on_dir_created(self, event) -> None:
        # Synthetic events stand for directories inside one already walked.
        if not event.is_synthetic:
            self._walk(event.src_path)

    def _on_dir_moved(self, event) -> None:
        if event.src_path:
            self._forget_tree(event.src_path)
        if event.dest_path and not event.is_synthetic:
            self._walk(event.dest_path)

    def _on_dir_deleted(self, event) -> None:
        self._forget_tree(event.src_path)
        if event.src_path.rstrip("/") in self.roots:
            log.warning("%s was removed: no longer watched", event.src_path)

    # -- the queue of files -----------------------------------------------------------------------
    def _queue(self, path: str, sure: int) -> None:
        if not self._wanted(path):
            return
        due = time.monotonic() + self.settle
        item = self._pending.get(path)
        if item is None:
            self._pending[path] = [due, sure]
        else:
            item[0] = due
            item[1] = max(item[1], sure)
        heapq.heappush(self._due, (due, next(self._seq), path))

    def _forget(self, path: str) -> None:
        self._pending.pop(path, None)
        self._scanned.pop(path, None)

    def _forget_tree(self, directory: str) -> None:
        prefix = directory.rstrip("/") + "/"
        for path in [p for p in self._pending if p.startswith(prefix)]:
            del self._pending[path]

    def _wanted(self, path: str) -> bool:
        """The filters of a sweep: an excluded directory hides its whole subtree; include
        patterns select files only."""
        for root, prefix in self._prefixes:
            if path.startswith(prefix):
                break
        else:
            return False
        if self.exclude:
            directory = root
            for part in path[len(prefix):].split("/")[:-1]:
                directory = os.path.join(directory, part)
                if matches(directory, self.exclude):
                    return False
            if matches(path, self.exclude):
                return False
        return not self.include or matches(path, self.include)

    def _walk(self, top: str, changed_since: float | None = None) -> None:
        """Queue the regular files under ``top``: those already in a directory that appeared,
        or, after lost events, those changed since ``changed_since`` and not scanned as they are."""
        top = top.rstrip("/") or "/"
        if self.exclude and matches(top, self.exclude) and top not in self.roots:
            return
        for path, st in regular_files([top], follow_symlinks=self.follow_symlinks,
                                      exclude=self.exclude):
            if self._stop.is_set():
                break
            if changed_since is not None:
                if max(st.st_mtime, st.st_ctime) < changed_since:
                    continue
                if self._scanned.get(path) == _signature(st):
                    continue
            self._queue(path, _FINISHED)

    def _catch_up(self) -> None:
        """The kernel dropped events: watchdog has put its watches back; look for what we missed."""
        started = time.time()
        log.warning("inotify queue overflowed (fs.inotify.max_queued_events is %s): events were "
                    "lost; looking for files changed since %s", _sysctl("max_queued_events"),
                    time.strftime("%H:%M:%S", time.localtime(self._in_step_since)))
        for root in self.roots:
            self._walk(root, changed_since=self._in_step_since)
        self._in_step_since = started - _CLOCK_SLACK

    # -- scanning ---------------------------------------------------------------------------------
    def _scan(self, path: str, sure: int) -> None:
        st = self._stat(path)
        if st is None:
            self._scanned.pop(path, None)
            return  # vanished, or not a regular file (a link we do not follow, a fifo…)
        writing = _open_for_writing(path, self.follow_symlinks)
        if writing:
            return  # its writer's close brings it back
        if writing is None and sure == _CREATED and st.st_nlink < 2:
            return  # cannot tell whether its creator still writes it: wait for the close
        before = _signature(st)
        self.on_file(path)
        after = self._stat(path)
        if after is None:
            self._scanned.pop(path, None)
        elif _signature(after) != before:
            self._queue(path, _FINISHED)  # changed while it was scanned
        else:
            self._scanned[path] = before
            self._scanned.move_to_end(path)
            if len(self._scanned) > _REMEMBERED:
                self._scanned.popitem(last=False)
        # Any event for the path that came during the call queues it again in the next round.

    def _stat(self, path: str) -> os.stat_result | None:
        try:
            st = os.stat(path) if self.follow_symlinks else os.lstat(path)
        except OSError:
            return None
        return st if stat.S_ISREG(st.st_mode) else None


_DISPATCH: dict[tuple[str, bool], Callable[[FileWatcher, FileSystemEvent], None]] = {
    ("closed", False): FileWatcher._on_closed,
    ("created", False): FileWatcher._on_created,
    ("moved", False): FileWatcher._on_moved,
    ("deleted", False): FileWatcher._on_deleted,
    ("created", True): FileWatcher._on_dir_created,
    ("moved", True): FileWatcher._on_dir_moved,
    ("deleted", True): FileWatcher._on_dir_deleted,
}


def _signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _open_for_writing(path: str, follow_symlinks: bool) -> bool | None:
    """Whether a process has ``path`` open for writing. The kernel grants a read lease only
    when none has; None when it cannot tell (not the file's owner and no CAP_LEASE, a
    filesystem without leases)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        # A writer opening the file while we hold the lease makes the kernel signal us: SIGIO
        # by default, which would end the process; SIGURG is ignored unless handled.
        fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as err:
        return True if err.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(fd)


def _normalize(root: str) -> str:
    return os.path.normpath(os.fspath(root))


def _outermost(roots: list[str]) -> list[str]:
    """Drop repeated roots and roots inside another one: one watch per directory is enough."""
    kept: dict[str, str] = {}  # root -> absolute path
    for root in sorted(dict.fromkeys(roots), key=lambda r: len(os.path.abspath(r))):
        absolute = os.path.abspath(root)
        if not any(absolute == outer or absolute.startswith(outer.rstrip("/") + "/")
                   for outer in kept.values()):
            kept[root] = absolute
    return [r for r in dict.fromkeys(roots) if r in kept]


# -- inotify through watchdog ---------------------------------------------------------------------

class _Relay(FileSystemEventHandler):
    """Hands watchdog's events over to the watcher's own thread."""

    def __init__(self, events: queue.SimpleQueue):
        self._events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._events.put(event)


class _Inotify(InotifyFD):
    """watchdog's inotify reader, also telling what watchdog only logs: a watch limit reached
    below a root (watchdog then leaves that directory unwatched) and a queue overflow."""

    def __init__(self):
        super().__init__()
        self.limit_error: WatchLimitError | None = None
        self.overflowed = threading.Event()

    def add_callback(self, path, mask, callback, id_):
        try:
            return super().add_callback(path, mask, callback, id_)
        except OSError as err:
            if err.errno == errno.ENOSPC and self.limit_error is None:
                self.limit_error = _watch_limit_error(os.fsdecode(path))
            raise  # ENOENT and the like: a directory that vanished; watchdog skips it

    def handle_event(self, event) -> None:
        super().handle_event(event)  # on overflow, watchdog re-adds its watches first
        if event.is_queue_overflow:
            self.overflowed.set()


def _open_inotify() -> _Inotify:
    try:
        return _Inotify()
    except OSError as err:
        if err.errno == errno.EMFILE:
            raise WatchLimitError(
                "cannot create an inotify instance: the limit fs.inotify.max_user_instances "
                f"(now {_sysctl('max_user_instances')}) or the open files limit is reached; "
                "raise it with sysctl or ulimit -n") from None
        raise WatchError(f"cannot create an inotify instance: {err.strerror or err}") from None


def _watch_limit_error(directory: str) -> WatchLimitError:
    return WatchLimitError(
        f"cannot watch {directory}: inotify watch limit reached (one watch per directory); "
        f"raise the sysctl fs.inotify.max_user_watches (now {_sysctl('max_user_watches')}), "
        "e.g. sysctl fs.inotify.max_user_watches=524288")


def _sysctl(name: str) -> str:
    try:
        with open(os.path.join(_PROC_INOTIFY, name)) as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class _ShutdownRace(logging.Filter):
    """watchdog logs a harmless race of its own emitter shutdown as an error; not ours."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


def _stop_observer(observer: BaseObserver, inotify: _Inotify) -> None:
    noisy = logging.getLogger("watchdog.observers.inotify")
    quiet = _ShutdownRace()
    noisy.addFilter(quiet)
    try:
        observer.stop()
        if observer.is_alive():
            observer.join()
        inotify.stop()
        if inotify.is_alive():
            inotify.join()
    finally:
        noisy.removeFilter(quiet)
