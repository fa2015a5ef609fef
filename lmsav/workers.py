"""The one pool of pre-forked workers, with reload generations; used by the daemon, the spool
watcher and sweeps.

The parent loads what the workers need (database, groups, policy), then forks them, so they
share it copy-on-write and load nothing themselves. Each worker is joined to the parent by a
unix socketpair and runs one job at a time: a job is one frame (a 4-byte length, then a pickle)
and may carry descriptors (SCM_RIGHTS); the reply is one frame back. The parent never blocks on
a worker: it registers the workers' sockets with its own selector and calls ``read`` when one is
readable.

A reload (``new_generation``) forks workers of the new generation from what the parent holds
now and retires the old ones as they finish their current job; a worker that dies is replaced
if it belonged to the current generation. Closing its socket is how a worker is told to stop:
it finishes the job in hand, answers it, and exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import selectors
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("lmsav.workers")

RECV_SIZE = 1 << 18
MAX_FDS = 8  # descriptors one frame may carry
_LEN = struct.Struct(">I")


class JobHandler(Protocol):
    """What a worker runs: made after the fork, asked one job at a time."""

    def run_job(self, job: Any, fds: list[int]) -> Any: ...

    def close(self) -> None: ...


# -- framing ---------------------------------------------------------------------------------------

def send_frame(sock: socket.socket, obj: Any, fds: list[int] | tuple[int, ...] = ()) -> None:
    """One frame: the pickled ``obj``, with ``fds`` riding on its first byte."""
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _LEN.pack(len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], list(fds))
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def recv_frame(sock: socket.socket) -> tuple[Any, list[int]] | None:
    """The next frame and its descriptors (blocking); None at end of stream."""
    try:
        head, fds, _flags, _addr = socket.recv_fds(sock, _LEN.size, MAX_FDS)
    except OSError:
        return None
    if not head:
        _close_all(fds)
        return None
    try:
        if len(head) < _LEN.size:
            head += _recv_exact(sock, _LEN.size - len(head))
        (size,) = _LEN.unpack(head)
        return pickle.loads(_recv_exact(sock, size)), fds
    except (EOFError, OSError, pickle.UnpicklingError):
        _close_all(fds)
        return None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        piece = sock.recv(n - len(buf))
        if not piece:
            raise EOFError
        buf += piece
    return bytes(buf)


def frames_in(buf: bytearray) -> Iterator[Any]:
    """Take every complete frame out of ``buf`` (the parent's read buffer of a worker)."""
    while len(buf) >= _LEN.size:
        (size,) = _LEN.unpack_from(buf)
        if len(buf) < _LEN.size + size:
            return
        obj = pickle.loads(bytes(buf[_LEN.size:_LEN.size + size]))
        del buf[:_LEN.size + size]
        yield obj


def _close_all(fds) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- the worker side -------------------------------------------------------------------------------

def serve(sock: socket.socket, handler: JobHandler) -> int:
    """A worker's life: answer jobs until the parent closes the socket; the exit code."""
    try:
        while True:
            frame = recv_frame(sock)
            if frame is None:
                return 0  # the parent is gone or retired us
            job, fds = frame
            try:
                result = handler.run_job(job, fds)
            finally:
                _close_all(fds)
            try:
                send_frame(sock, result)
            except OSError:
                return 0
    finally:
        with contextlib.suppress(Exception):
            handler.close()


# -- the parent side -------------------------------------------------------------------------------

@dataclass(eq=False)
class Worker:
    """One forked worker as the parent sees it."""

    pid: int
    sock: socket.socket
    generation: int
    job: Any = None  # what the parent sent and has no answer for yet (None: idle)
    retiring: bool = False
    buf: bytearray = field(default_factory=bytearray)
    started: float = field(default_factory=time.time)
    exit_status: str = ""  # once reaped: "exit N" or "signal NAME"


class WorkerPool:
    """``size`` workers running the handler ``make_handler()`` builds in each of them.

    ``selector``: the parent's selector; every worker socket is registered with the Worker as
    its data. ``child_setup(sock)``: runs in a new worker first, given its socket to the parent
    (close what the parent owns, e.g. its listeners). ``around_fork``: a context manager factory wrapping every fork (the watcher
    pauses its inotify thread: no other thread may run during fork). ``on_exit(pid, status)``:
    told of every worker reaped, with a description like "exit 3" or "signal SIGKILL".
    """

    def __init__(self, size: int, make_handler: Callable[[], JobHandler], selector, *,
                 child_setup: Callable[[socket.socket], None] | None = None,
                 around_fork: Callable[[], contextlib.AbstractContextManager] | None = None,
                 on_exit: Callable[[int, str], None] | None = None):
        self.size = max(1, size)
        self.make_handler = make_handler
        self.selector = selector
        self.child_setup = child_setup
        self.around_fork = around_fork or contextlib.nullcontext
        self.on_exit = on_exit
        self.generation = 0
        self.workers: dict[int, Worker] = {}  # by pid: the ones with an open socket
        self.pids: dict[int, Worker] = {}  # every child not reaped yet, retired ones too
        self.stopping = False

    # -- starting --------------------------------------------------------------------------
    def start(self) -> None:
        self.spawn(self.size)

    def spawn(self, count: int) -> None:
        """Fork ``count`` workers of the current generation."""
        if count <= 0:
            return
        with self.around_fork():
            for _ in range(count):
                self._fork_one()

    def _fork_one(self) -> None:
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 70
            try:
                parent_sock.close()
                for other in self.workers.values():
                    other.sock.close()  # else a sibling's EOF would never come
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
                    signal.signal(sig, signal.SIG_IGN)  # the parent decides when workers stop
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                with contextlib.suppress(ValueError):
                    signal.set_wakeup_fd(-1)
                if self.child_setup is not None:
                    self.child_setup(child_sock)
                code = serve(child_sock, self.make_handler())
            except BaseException:
                log.exception("worker failed")
                code = 70
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        child_sock.close()
        worker = Worker(pid, parent_sock, self.generation)
        self.pids[pid] = worker
        self.workers[pid] = worker
        self.selector.register(parent_sock, 1, worker)  # selectors.EVENT_READ

    # -- jobs ------------------------------------------------------------------------------
    def idle(self) -> list[Worker]:
        """Workers of the current generation without a job."""
        return [w for w in self.workers.values()
                if w.job is None and not w.retiring and w.generation == self.generation]

    def busy(self) -> list[Worker]:
        return [w for w in self.workers.values() if w.job is not None]

    def current(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.retiring]

    def send(self, worker: Worker, job: Any, payload: Any, fds: list[int] = ()) -> None:
        """Give ``worker`` a job: ``payload`` goes over the socket, ``job`` is what the parent
        remembers until the answer. The descriptors are the pool's once this returns (closed
        here); on OSError they are still the caller's (retire the worker, try another)."""
        send_frame(worker.sock, payload, fds)
        _close_all(fds)
        worker.job = job

    def read(self, worker: Worker) -> list[tuple[Any, Any]] | None:
        """Answers a readable worker sent, as (job, result); None when it died (the caller
        gets its job back from ``died``). Nothing to read yet is no answer, not a death."""
        if self.workers.get(worker.pid) is not worker:
            return []  # retired earlier in the same round of events: its socket is closed
        try:
            data = worker.sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            data = b""
        if not data:
            return None
        worker.buf += data
        done = []
        for result in frames_in(worker.buf):
            job, worker.job = worker.job, None
            done.append((job, result))
        if worker.retiring and worker.job is None:
            self.retire(worker)
        return done

    def died(self, worker: Worker) -> Any:
        """Forget a worker whose socket closed, reap it, replace it if it was current; return
        the job it held (None if idle). Its exit status is on ``worker.exit_status``, also
        when an earlier ``reap()`` collected it."""
        self._forget(worker)
        if worker.pid in self.pids:
            self.reap(worker.pid, wait=True)
        if not worker.exit_status:
            worker.exit_status = "status unknown"  # collected by someone else's wait
        if not self.stopping and not worker.retiring and worker.generation == self.generation:
            self.spawn(1)
        return worker.job

    # -- generations -----------------------------------------------------------------------
    def new_generation(self, size: int | None = None,
                       before_spawn: Callable[[], None] | None = None) -> None:
        """Retire every worker (each after its current job) and fork ``size`` new ones from
        what the parent holds now. ``before_spawn`` runs between the two (the daemon trims its
        heap there, so new workers do not start out with the old database's pages)."""
        if size is not None:
            self.size = max(1, size)
        self.generation += 1
        for worker in list(self.workers.values()):
            self.retire(worker)
        if before_spawn is not None:
            before_spawn()
        self.spawn(self.size)

    def retire(self, worker: Worker, kill: bool = False) -> None:
        """Stop a worker once it is idle (closing its socket makes it exit); ``kill`` at once."""
        worker.retiring = True
        if worker.job is not None and not kill:
            return
        self._forget(worker)
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGKILL)
        self.reap()

    def _forget(self, worker: Worker) -> None:
        if self.workers.pop(worker.pid, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(worker.sock)
        worker.sock.close()

    def reap(self, pid: int | None = None, wait: bool = False) -> str:
        """Collect the exit status of finished workers (only ours: a reload's child or a 7z
        the parent runs is someone else's) onto their Worker's ``exit_status``; ``wait``
        blocks for ``pid``. Returns the status of the last one reaped ("" if none)."""
        described = ""
        for child in [pid] if pid is not None else list(self.pids):
            try:
                got, status = os.waitpid(child, 0 if wait else os.WNOHANG)
            except ChildProcessError:
                self.pids.pop(child, None)
                continue
            if got == 0:
                continue
            described = describe_status(status)
            worker = self.pids.pop(child, None)
            if worker is not None:
                worker.exit_status = described
            if os.WIFSIGNALED(status) and pid is None:
                log.warning("worker %d killed by %s", child, described)
            if self.on_exit is not None:
                self.on_exit(child, described)
        return described

    # -- stopping --------------------------------------------------------------------------
    def stop(self, timeout: float,
             on_result: Callable[[Worker, Any, Any], None] | None = None) -> None:
        """Tell every worker to stop after its current job, collect the answers still coming
        (``on_result(worker, job, result)``) for up to ``timeout`` seconds, then kill what is
        left."""
        self.stopping = True
        deadline = time.monotonic() + timeout
        for worker in list(self.workers.values()):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(worker.sock)
            with contextlib.suppress(OSError):
                worker.sock.shutdown(socket.SHUT_WR)  # EOF for the worker after its job
        self._collect(deadline, on_result)
        for worker in list(self.workers.values()):
            self.workers.pop(worker.pid, None)
            worker.sock.close()
        while self.pids and time.monotonic() < deadline:
            self.reap()
            if self.pids:
                time.sleep(0.05)
        if self.pids:
            log.warning("workers did not exit in time; killing them")
            for pid in list(self.pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in list(self.pids):
                self.reap(pid, wait=True)

    def _collect(self, deadline: float,
                 on_result: Callable[[Worker, Any, Any], None] | None) -> None:
        """Wait for the answers of the jobs in hand until each is in or ``deadline``; a
        worker whose socket closes without answering is given up (its job is lost)."""
        with selectors.DefaultSelector() as waiting:
            for worker in self.workers.values():
                if worker.job is not None:
                    waiting.register(worker.sock, selectors.EVENT_READ, worker)
            while waiting.get_map() and (left := deadline - time.monotonic()) > 0:
                for key, _events in waiting.select(left):
                    worker = key.data
                    answers = self.read(worker)
                    if answers is None or worker.job is None:
                        waiting.unregister(key.fd)  # by number: a retired worker's is closed
                    for job, result in answers or ():
                        if on_result is not None:
                            on_result(worker, job, result)


def describe_status(status: int) -> str:
    """"exit N" or "signal NAME" of a wait status."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit {os.WEXITSTATUS(status)}"
