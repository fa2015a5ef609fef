"""`lmsav daemon`'s event loop: a dispatcher process in front of a pool of scanning workers,
speaking clamd's protocol.

The parent loads the database and the mail service, binds the listeners and forks the workers
(lmsav.workers), which therefore share the compiled database copy-on-write. The parent runs
one selectors loop: it accepts connections, reads commands and INSTREAM data (non-blocking, with
timeouts), answers PING, VERSION, STATS and the like itself, and queues scan jobs. A job goes to
an idle worker with its descriptors (FILDES files, the spooled INSTREAM), and the worker's reply
lines (lmsav.daemon.service) go back to the client. So a slow scan only ever occupies its
worker: PING is answered by the parent at any time, and a client that stalls mid-chunk costs a
buffer in the parent, never a worker. Commands are dispatched from one table (``_commands``).

Reload (RELOAD, SIGHUP, SIGUSR2) reads the configuration file again, then loads and self-tests
the database and reads the recipient groups, in a thread. Each of the three is taken or refused
on its own (a refused one stays as it runs, and the log says which and why); when anything new
was taken, the parent forks a new generation of workers from it and retires the old workers as
they finish their current job, so no request fails or waits for a worker that is loading.
Listeners, pid file and user are fixed at start: changing them needs a restart.

Counting is the parent's too: every result a worker sends back adds to the ``lmsav_*``
metrics (served on ``[metrics] daemon`` by a thread of the parent) and, once a request is
answered, one ``daemon_scan`` event goes to the statistics store, written by the store's own
thread so that the loop never waits on a disk (LMSAVMAIL is recorded by the mail service).
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import selectors
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..mail import transfer
from ..metrics.endpoint import MetricsError
from .accounting import Accounting, Tally
from ..workers import Worker, WorkerPool
from . import listeners
from . import protocol as proto
from .loading import Reloaded, load_everything, load_parts, why
from .options import UNLIMITED, DaemonError, Options, merge_reloaded
from .process import (
    close_descriptors_from,
    drop_privileges,
    raise_nofile,
    release_free_memory,
)
from .protocol import Cmd
from .service import ScanService, finish

log = logging.getLogger("lmsav.daemon")

RECV_SIZE = 1 << 18
STOP_WORKERS_TIMEOUT = 10.0


# -- the parent: connections, jobs, workers -----------------------------------------------------

@dataclass
class Job:
    conn: Conn
    payload: dict
    request_id: int
    term: bytes
    fds: list[int] = field(default_factory=list)
    fanout: Fanout | None = None
    label: str = ""


@dataclass
class Fanout:
    """A CONTSCAN/MULTISCAN of a directory spread over every worker; replies 'OK' at the end."""

    path: str
    infected: int = 0
    errors: int = 0
    total: int = 0
    pending: int = 0
    tally: Tally = field(default_factory=Tally)


class Conn:
    """One client connection and where it is in the protocol."""

    COMMAND, STREAM, WAITREPLY = "command", "stream", "waitreply"

    def __init__(self, sock: socket.socket, unix: bool):
        self.sock = sock
        self.fd = sock.fileno()
        self.unix = unix
        self.reader = proto.CommandReader()
        self.mode = self.COMMAND
        self.session = False
        self.next_id = 0
        self.outstanding = 0  # requests sent to workers and not answered yet
        self.out = bytearray()
        self.closing = False  # close once outstanding == 0 and out is flushed
        self.last_activity = time.monotonic()
        self.fds: list[int] = []
        self.waiting_fd: tuple[int, bytes] | None = None  # FILDES waiting for its descriptor
        self.waiting_kind = "fd"  # or "mail": LMSAVMAIL waits for its three descriptors
        self.eat_dummy = False
        self.stream: proto.StreamReader | None = None
        self.spool = None
        self.stream_id = 0
        self.stream_term = b"\0"
        self.writing = False
        self.closed = False


class Server:
    """The dispatcher. ``run()`` returns the exit code.

    ``reload_options``, when given, reads the configuration again for a reload (raising
    ConfigError or DaemonError when it is not valid)."""

    def __init__(self, options: Options,
                 reload_options: Callable[[], Options] | None = None):
        self.opt = options
        self.reload_options = reload_options
        self.sel = selectors.DefaultSelector()
        self.listeners: list[tuple[socket.socket, bool]] = []
        self.conns: dict[int, Conn] = {}
        self.accounting = Accounting(options.settings, lambda: self.db)
        self.pool = WorkerPool(options.workers, self._make_service, self.sel,
                               child_setup=self._worker_setup,
                               around_fork=self.accounting.fork_safely)
        self.queue: collections.deque[Job] = collections.deque()
        self.bulk: collections.deque[Job] = collections.deque()
        self.db = None
        self.mail = None  # lmsav.mail.service.MailService, forked into the workers
        self.started = time.time()
        self.requests = 0
        self.found = 0
        self.errors = 0
        self.refused = 0
        self.reloads = 0
        self.reloading = False
        self.reload_again = False
        self.last_reload: dict = {}
        self._reload_thread: threading.Thread | None = None
        self._reload_result: tuple | None = None
        self.stopping = False
        self._socket_inode: tuple[int, int] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._signals: list[int] = []
        self._stop_deadline = 0.0
        self._commands = self._command_table()

    # -- start-up ---------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener (before dropping privileges)."""
        if self.opt.socket is not None:
            sock, self._socket_inode = listeners.bind_unix(
                Path(self.opt.socket), self.opt.socket_mode, self.opt.socket_group)
            self.listeners.append((sock, True))
        for addr in self.opt.tcp:
            self.listeners.append((listeners.bind_tcp(addr), False))
        if not self.listeners:
            raise DaemonError("no listener configured: give --socket or --tcp")
        address = self.opt.settings.metrics.daemon if self.opt.settings is not None else ""
        try:
            self.accounting.open_endpoint(address)
        except MetricsError as err:
            raise DaemonError(str(err)) from None

    def drop_privileges(self) -> None:
        drop_privileges(self.opt.user, self.opt.socket, self.opt.socket_group)

    def load(self) -> None:
        """Load and self-test the database, build the mail service (before the workers fork)."""
        db, mail = load_everything(self.opt, reloading=False)
        for warning in db.warnings:
            log.warning("%s", warning)
        self.db, self.mail = db, mail
        log.info("database %s loaded from %s (%d signatures)", db.version, db.directory, db.total)

    def run(self) -> int:
        """Serve until SIGTERM or SHUTDOWN; finish in-flight requests; return the exit code."""
        self._raise_descriptor_limit()
        self._install_signals()
        for sock, _unix in self.listeners:
            self.sel.register(sock, selectors.EVENT_READ, ("listen", sock))
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self.pool.start()
        self.accounting.start_endpoint()
        log.info("lmsav daemon ready: %s, %d workers",
                 ", ".join(self._listener_names()), self.opt.workers)
        last_sweep = time.monotonic()
        while True:
            for key, events in self.sel.select(timeout=0.5):
                if isinstance(key.data, Worker):
                    self._on_worker(key.data)
                    continue
                kind, obj = key.data
                if kind == "listen":
                    self._accept(obj, key.fileobj)
                elif kind == "conn":
                    if events & selectors.EVENT_READ:
                        self._on_readable(obj)
                    if events & selectors.EVENT_WRITE and obj.fd in self.conns:
                        self._flush(obj)
                elif kind == "wake":
                    self._on_wake()
            now = time.monotonic()
            if now - last_sweep >= 0.5:
                last_sweep = now
                self._sweep_timeouts(now)
                self.pool.reap()
            if self.stopping and (self._drained() or now > self._stop_deadline):
                break
        self.pool.stop(STOP_WORKERS_TIMEOUT)
        self._close_listeners()
        self.accounting.close()  # /metrics, and what waits for the statistics is written now
        log.info("lmsav daemon stopped")
        return 0

    def _raise_descriptor_limit(self) -> None:
        """One descriptor per connection, and some for workers, spools and listeners."""
        wanted = self.opt.max_connections + 64
        limit = raise_nofile(wanted)
        if limit < wanted and self.opt.max_connections < UNLIMITED:
            log.warning("descriptor limit %d is below the %d that [daemon] max_connections = %d "
                        "needs; raise the hard limit (LimitNOFILE=) and restart the daemon",
                        limit, wanted, self.opt.max_connections)

    def _listener_names(self) -> list[str]:
        return [listeners.name_of(sock, unix) for sock, unix in self.listeners]

    # -- the workers' side ------------------------------------------------------------------
    def _worker_setup(self, sock: socket.socket) -> None:
        """In a new worker: drop every descriptor of the parent's but the pool socket."""
        keep = sock.fileno()
        os.closerange(3, keep)
        close_descriptors_from(keep + 1)

    def _make_service(self) -> ScanService:
        """The job handler of a new worker, over the database the parent holds now."""
        from ..scanner.engine import Engine

        opt = self.opt
        engine = Engine(self.db, opt.limits, opt.scan_archives, opt.scan_mail, opt.tmp_dir)
        return ScanService(engine, opt.heuristic_names, opt.follow_symlinks, self.mail)

    # -- signals ----------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)

        def handler(signum, _frame):
            self._signals.append(signum)
            try:
                self._wake_w.send(b"s")
            except OSError:
                pass

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, handler)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

        def on_child(_signum, _frame):
            try:
                self._wake_w.send(b"c")
            except OSError:
                pass

        signal.signal(signal.SIGCHLD, on_child)

    def _on_wake(self) -> None:
        try:
            self._wake_r.recv(4096)
        except OSError:
            pass
        signals, self._signals = self._signals, []
        for sig in signals:
            if sig in (signal.SIGTERM, signal.SIGINT):
                log.info("%s: finishing requests in flight, then exiting",
                         signal.Signals(sig).name)
                self.begin_shutdown()
            elif sig in (signal.SIGHUP, signal.SIGUSR2):
                log.info("%s: reloading the configuration and the database",
                         signal.Signals(sig).name)
                self.request_reload()
        self.pool.reap()
        if self._reload_result is not None:
            self._finish_reload()

    # -- connections ------------------------------------------------------------------------
    def _accept(self, listener: socket.socket, _fileobj) -> None:
        unix = listener.family == socket.AF_UNIX
        for _ in range(256):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s", err.strerror)
                    return
                continue
            if self.stopping or len(self.conns) >= self.opt.max_connections:
                self.refused += 1
                try:
                    sock.setblocking(False)
                    sock.send((proto.MAX_CONNECTIONS + "\n").encode())
                except OSError:
                    pass
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock, unix)
            self.conns[conn.fd] = conn
            self.sel.register(sock, selectors.EVENT_READ, ("conn", conn))

    def _on_readable(self, conn: Conn) -> None:
        try:
            if conn.unix:
                data, fds, _flags, _addr = socket.recv_fds(conn.sock, RECV_SIZE, 8)
            else:
                data, fds = conn.sock.recv(RECV_SIZE), []
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.last_activity = time.monotonic()
        if fds:
            conn.fds.extend(fds)
        if not data and not fds:
            self._on_eof(conn)
            return
        if conn.mode == Conn.WAITREPLY or conn.closing:
            self._drop_fds(conn)
            return  # clamd ignores (and logs) anything sent after the last command
        self._process(conn, data)

    def _on_eof(self, conn: Conn) -> None:
        # A half-closed client may still wait for replies; a bare command may end at EOF.
        if conn.mode == Conn.COMMAND and conn.reader.pending and not conn.session:
            try:
                self._process(conn, b"", eof=True)
            except Exception:
                log.exception("processing final command")
        self._unwatch_read(conn)
        if conn.mode == Conn.STREAM:
            self._close(conn)
            return
        conn.closing = True
        self._maybe_close(conn)

    def _process(self, conn: Conn, data: bytes, eof: bool = False) -> None:
        while True:
            if conn.mode == Conn.STREAM:
                data = self._stream_data(conn, data)
                if conn.mode == Conn.STREAM or conn.closing:
                    return
                continue
            if conn.mode != Conn.COMMAND or conn.closing:
                return
            if data:
                conn.reader.feed(data)
                data = b""
            if conn.waiting_fd is not None and not self._complete_fildes(conn):
                return
            try:
                cmd = conn.reader.next(eof=eof)
            except proto.ProtocolError as err:
                self._reply(conn, str(err), b"\n", self._reply_id(conn))
                self._end(conn)
                return
            if cmd is None:
                if conn.fds and conn.waiting_fd is None:
                    self._reply(conn, proto.PROTOCOL_FD, b"\n", 0)
                    self._drop_fds(conn)
                    self._end(conn)
                return
            self._command(conn, cmd)
            if conn.mode == Conn.STREAM:
                data = bytes(conn.reader.buf)
                conn.reader.buf.clear()

    def _reply_id(self, conn: Conn) -> int:
        return conn.next_id if conn.session else 0

    # -- commands ---------------------------------------------------------------------------
    def _command_table(self) -> dict:
        """Cmd → handler(conn, cmd, rid, term). A handler returning True has answered one
        request: outside a session that ends the connection."""
        table = {
            Cmd.PING: self._cmd_ping,
            Cmd.VERSION: self._cmd_version,
            Cmd.VERSIONCOMMANDS: self._cmd_version_commands,
            Cmd.STATS: self._cmd_stats,
            Cmd.LMSAVSTATUS: self._cmd_status,
            Cmd.RELOAD: self._cmd_reload,
            Cmd.SHUTDOWN: self._cmd_shutdown,
            Cmd.QUIT: self._cmd_shutdown,  # listed by VERSIONCOMMANDS, handled as SHUTDOWN
            Cmd.DETSTATS: self._cmd_nothing,
            Cmd.DETSTATSCLEAR: self._cmd_nothing,
            Cmd.IDSESSION: self._cmd_idsession,
            Cmd.END: self._cmd_end,
            Cmd.INSTREAM: self._cmd_instream,
            Cmd.FILDES: self._cmd_fildes,
            Cmd.LMSAVMAIL: self._cmd_lmsavmail,
        }
        for scan in proto.SCAN_COMMANDS:
            table[scan] = self._cmd_scan
        return table

    def _command(self, conn: Conn, cmd: proto.Command) -> None:
        term = cmd.term
        if conn.session:
            rid = conn.next_id
            conn.next_id += 1
            if cmd.oldstyle:
                self._reply(conn, proto.OLDSTYLE_IN_SESSION, term, rid)
                self._end(conn)
                return
            if cmd.cmd not in proto.SESSION_COMMANDS:
                self._reply(conn, proto.INVALID_IN_SESSION, term, rid)
                self._end(conn)
                return
        else:
            rid = 0
        self.accounting.count_request(cmd.cmd.value or "unknown")
        handler = self._commands.get(cmd.cmd, self._cmd_unknown)
        if handler(conn, cmd, rid, term) and not conn.session:
            self._end(conn)

    def _cmd_ping(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, "PONG", term, rid)
        return True

    def _cmd_version(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, proto.version(self.db.version, self.db.built_at), term, rid)
        return True

    def _cmd_version_commands(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, proto.version_commands(self.db.version, self.db.built_at), term, rid)
        return True

    def _cmd_stats(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, proto.stats(self._pool_stats()), term, rid)
        return True

    def _cmd_status(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, json.dumps(self.status(), separators=(",", ":")), term, rid)
        return True

    def _cmd_reload(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, "RELOADING", term, rid)
        self.request_reload()
        return True

    def _cmd_shutdown(self, conn, cmd, rid, term) -> bool:
        log.info("SHUTDOWN requested by a client")
        self.begin_shutdown()
        return True

    def _cmd_nothing(self, conn, cmd, rid, term) -> bool:
        return True  # DETSTATS: removed from clamd; it answers nothing and closes

    def _cmd_idsession(self, conn, cmd, rid, term) -> bool:
        conn.session = True
        conn.next_id = 1
        return False

    def _cmd_end(self, conn, cmd, rid, term) -> bool:
        if not conn.session:
            self._reply(conn, proto.UNKNOWN, term, 0)
        self._end(conn)
        return False

    def _cmd_unknown(self, conn, cmd, rid, term) -> bool:
        self._reply(conn, proto.UNKNOWN, term, rid)
        self._end(conn)
        return False

    def _cmd_scan(self, conn, cmd, rid, term) -> bool:
        mode = cmd.cmd.value.lower()
        self._submit(conn, Job(conn, {"kind": "path", "path": cmd.arg, "mode": mode}, rid,
                               term, label=f"{cmd.cmd.value} {cmd.arg}"))
        return True

    def _cmd_instream(self, conn, cmd, rid, term) -> bool:
        self._start_stream(conn, rid, term)
        return False

    def _cmd_lmsavmail(self, conn, cmd, rid, term) -> bool:
        if not conn.unix:
            self._reply(conn, f"{transfer.REPLY_ERROR} only on the unix socket", term, rid)
            self._end(conn)
            return False
        return self._wait_for_descriptors(conn, "mail", rid, term)

    def _cmd_fildes(self, conn, cmd, rid, term) -> bool:
        return self._wait_for_descriptors(conn, "fd", rid, term)

    def _wait_for_descriptors(self, conn, kind: str, rid: int, term: bytes) -> bool:
        conn.waiting_kind = kind
        conn.waiting_fd = (rid, term)
        conn.eat_dummy = True
        self._complete_fildes(conn)
        if not conn.session and conn.waiting_fd is None:
            self._end(conn)
        return False

    def _complete_fildes(self, conn: Conn) -> bool:
        """Dispatch a waiting FILDES once its descriptor (and dummy byte) arrived."""
        if conn.eat_dummy:
            if not conn.reader.buf and not conn.fds:
                return False  # keep waiting for the descriptor (read timeout applies)
            if conn.reader.buf:
                del conn.reader.buf[:1]  # the one byte the descriptor was sent with
            conn.eat_dummy = False
        if not conn.fds:
            rid, term = conn.waiting_fd
            conn.waiting_fd = None
            self._reply(conn, proto.NO_FD, term, rid)
            self._end(conn)
            return False
        rid, term = conn.waiting_fd
        conn.waiting_fd = None
        if conn.waiting_kind == "mail":
            fds, conn.fds = conn.fds[:3], conn.fds[3:]
            if len(fds) != 3:
                for fd in fds:
                    os.close(fd)
                self._reply(conn, f"{transfer.REPLY_ERROR} expected 3 descriptors", term, rid)
                self._end(conn)
                return False
            self._submit(conn, Job(conn, {"kind": "mail"}, rid, term, fds, label="LMSAVMAIL"))
            if not conn.session:
                self._end(conn)
            return True
        fd = conn.fds.pop(0)
        name = f"fd[{fd}]"
        self._submit(conn, Job(conn, {"kind": "fd", "name": name}, rid, term, [fd],
                               label=f"FILDES {name}"))
        if not conn.session:
            self._end(conn)
        return True

    def _start_stream(self, conn: Conn, rid: int, term: bytes) -> None:
        try:
            conn.spool = tempfile.TemporaryFile(  # noqa: SIM115 - lives until the stream ends
                dir=self.opt.tmp_dir, prefix="lmsav-stream-")
        except OSError as err:
            self._reply(conn, proto.error(None, f"Can't create temporary file: {err.strerror}."),
                        term, rid)
            self._end(conn)
            return
        conn.stream = proto.StreamReader(self.opt.stream_max_length)
        conn.stream_id, conn.stream_term = rid, term
        conn.mode = Conn.STREAM

    def _stream_data(self, conn: Conn, data: bytes) -> bytes:
        try:
            chunks, rest = conn.stream.feed(data)
        except proto.StreamTooLong:
            log.warning("INSTREAM: size limit exceeded (StreamMaxLength %d)",
                        self.opt.stream_max_length)
            self._discard_stream(conn)
            self._reply(conn, proto.SIZE_LIMIT, conn.stream_term, conn.stream_id)
            self._end(conn, force=True)
            return b""
        try:
            for chunk in chunks:
                conn.spool.write(chunk)
        except OSError as err:
            self._discard_stream(conn)
            self._reply(conn, proto.error(None, f"Error writing to temporary file: "
                                                f"{err.strerror}"), conn.stream_term,
                        conn.stream_id)
            self._end(conn, force=True)
            return b""
        if not conn.stream.done:
            return b""
        spool = conn.spool
        spool.flush()
        conn.spool, conn.stream = None, None
        conn.mode = Conn.COMMAND
        fd = os.dup(spool.fileno())
        spool.close()
        self._submit(conn, Job(conn, {"kind": "fd", "name": "stream"}, conn.stream_id,
                               conn.stream_term, [fd], label="INSTREAM"))
        if not conn.session:
            self._end(conn)
            return b""
        return rest

    def _discard_stream(self, conn: Conn) -> None:
        if conn.spool is not None:
            conn.spool.close()
        conn.spool, conn.stream = None, None
        conn.mode = Conn.COMMAND

    def _end(self, conn: Conn, force: bool = False) -> None:
        """No more commands on this connection: close once every reply is written."""
        if conn.mode == Conn.STREAM:
            self._discard_stream(conn)
        conn.mode = Conn.WAITREPLY
        conn.closing = True
        self._unwatch_read(conn)
        self._maybe_close(conn)

    def _reply(self, conn: Conn, text: str, term: bytes, rid: int) -> None:
        if conn.fd not in self.conns:
            return
        conn.out += proto.frame(text, term, rid)
        self._flush(conn)

    def _flush(self, conn: Conn) -> None:
        if conn.fd not in self.conns:
            return
        while conn.out:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                conn.out.clear()
                self._close(conn)
                return
            del conn.out[:sent]
        want_write = bool(conn.out)
        if want_write != conn.writing:
            conn.writing = want_write
            self._update_events(conn)
        self._maybe_close(conn)

    def _update_events(self, conn: Conn) -> None:
        events = 0 if conn.closing else selectors.EVENT_READ
        if conn.writing:
            events |= selectors.EVENT_WRITE
        try:
            if events:
                self.sel.modify(conn.sock, events, ("conn", conn))
            else:
                self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            if events:
                self.sel.register(conn.sock, events, ("conn", conn))

    def _unwatch_read(self, conn: Conn) -> None:
        if conn.fd in self.conns:
            self._update_events(conn)

    def _maybe_close(self, conn: Conn) -> None:
        if conn.closing and not conn.out and conn.outstanding == 0 and conn.fd in self.conns:
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        if self.conns.pop(conn.fd, None) is None:
            return
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        if conn.spool is not None:
            conn.spool.close()
            conn.spool = None
        self._drop_fds(conn)
        try:
            conn.sock.close()
        except OSError:
            pass
        conn.closed = True

    @staticmethod
    def _drop_fds(conn: Conn) -> None:
        for fd in conn.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        conn.fds.clear()

    def _sweep_timeouts(self, now: float) -> None:
        for conn in list(self.conns.values()):
            if conn.closing or conn.outstanding:
                continue
            busy = (conn.mode == Conn.STREAM or conn.reader.pending
                    or conn.waiting_fd is not None)
            limit = self.opt.read_timeout if busy else self.opt.idle_timeout
            if limit and now - conn.last_activity > limit:
                try:
                    conn.sock.send((proto.TIMED_OUT + "\n").encode())
                except OSError:
                    pass
                self._close(conn)

    # -- jobs and workers -------------------------------------------------------------------
    def _submit(self, conn: Conn, job: Job) -> None:
        self.requests += 1
        if len(self.queue) >= max(self.opt.max_queue, 1) and not self.pool.idle():
            self.refused += 1
            for fd in job.fds:
                os.close(fd)
            self._reply(conn, proto.MAX_QUEUE, job.term, job.request_id)
            return
        conn.outstanding += 1
        self.queue.append(job)
        self._dispatch()

    def _dispatch(self) -> None:
        while self.queue or self.bulk:
            idle = self.pool.idle()
            if not idle:
                return
            worker = idle[0]
            job = self.queue.popleft() if self.queue else self.bulk.popleft()
            if job.conn.fd not in self.conns or job.conn.closed:
                self._abandon(job)
                continue
            try:
                self.pool.send(worker, job, job.payload, job.fds)
            except OSError:
                log.error("worker %d unreachable; retrying the job elsewhere", worker.pid)
                self.pool.retire(worker, kill=True)
                (self.queue if job.fanout is None else self.bulk).appendleft(job)
                continue
            job.fds = []

    def _abandon(self, job: Job) -> None:
        for fd in job.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        job.conn.outstanding = max(job.conn.outstanding - 1, 0)
        if job.fanout is not None:
            job.fanout.pending -= 1

    def _on_worker(self, worker: Worker) -> None:
        answers = self.pool.read(worker)
        if answers is None:
            self._worker_died(worker)
            return
        for job, result in answers:
            if job is not None:
                self._job_done(job, result)
        self._dispatch()

    def _job_done(self, job: Job, result: dict) -> None:
        conn = job.conn
        live = conn.fd in self.conns and not conn.closed
        self.found += result.get("infected", 0)
        self.errors += result.get("errors", 0)
        self.accounting.count_result(result)
        if result.get("log"):
            log.info("%s", result["log"])
        for line in result.get("lines", []):
            if line.endswith(" FOUND"):
                log.info("%s", line)
            elif line.endswith(" ERROR"):
                log.warning("%s", line)
        if "fanout" in result:
            fan = Fanout(job.payload["path"], result["infected"], result["errors"],
                         result["total"])
            fan.tally.add(result)
            if live:
                for line in result["lines"]:
                    conn.out += proto.frame(line, job.term, job.request_id)
            files = result["fanout"]
            if files and live:
                per = max(1, min(64, len(files) // (max(self.opt.workers, 1) * 4) or 1))
                for off in range(0, len(files), per):
                    fan.pending += 1
                    conn.outstanding += 1
                    self.bulk.append(Job(conn, {"kind": "files", "paths": files[off:off + per],
                                                "mode": job.payload["mode"]},
                                         job.request_id, job.term, fanout=fan,
                                         label=f"{job.payload['mode'].upper()} {fan.path}"))
                job.fanout = fan
                conn.outstanding -= 1
                self._flush(conn)
                return
            result = finish(fan.path, {"lines": [], "infected": fan.infected,
                                       "errors": fan.errors, "total": fan.total})
            self._request_done(job, fan.tally)
        elif job.fanout is not None:
            fan = job.fanout
            fan.tally.add(result)
            fan.infected += result["infected"]
            fan.errors += result["errors"]
            fan.total += result["total"]
            fan.pending -= 1
            if live:
                for line in result["lines"]:
                    conn.out += proto.frame(line, job.term, job.request_id)
            if fan.pending == 0:
                done = finish(fan.path, {"lines": [], "infected": fan.infected,
                                         "errors": fan.errors, "total": fan.total})
                result = {"lines": done["lines"]}
                self._request_done(job, fan.tally)
            else:
                result = {"lines": []}
        else:
            tally = Tally()
            tally.add(result)
            self._request_done(job, tally)
        conn.outstanding = max(conn.outstanding - 1, 0)
        if live:
            for line in result.get("lines", []):
                conn.out += proto.frame(line, job.term, job.request_id)
            self._flush(conn)

    def _request_done(self, job: Job, tally: Tally) -> None:
        self.accounting.request_done(job.label.partition(" ")[0], tally)

    def _worker_died(self, worker: Worker) -> None:
        job = self.pool.died(worker)
        if job is not None:
            log.error("worker %d died (%s) while scanning (%s)", worker.pid,
                      worker.exit_status, job.label)
            name = (job.payload.get("path") or job.payload.get("name")
                    or (job.payload.get("paths") or ["stream"])[0])
            lost = {"lines": [proto.error(name, "Scan worker died")], "infected": 0,
                    "errors": 1, "total": 1, "verdicts": {"error": 1}}
            if job.payload.get("kind") == "mail":
                lost["mail"] = {"result": "error"}
            self._job_done(job, lost)
        self._dispatch()

    # -- reload -----------------------------------------------------------------------------
    def request_reload(self) -> None:
        if self.stopping:
            return
        if self.reloading:
            self.reload_again = True
            return
        self.reloading = True
        self._reload_thread = threading.Thread(target=self._load_new, name="reload", daemon=True)
        self._reload_thread.start()

    def _load_new(self) -> None:
        """The reload thread: configuration, database, groups, each refused on its own.
        Everything it made that is bound to this thread (yara-x's scanner, by the self-test)
        is dropped here."""
        options, config_problem = self._reread_options()
        try:
            result = load_parts(options, config_problem, self.db, self.mail)
        except Exception as err:  # noqa: BLE001 - whatever fails, everything running stays
            result = why(err)
        self._reload_result = result
        try:
            self._wake_w.send(b"r")
        except OSError:
            pass

    def _reread_options(self) -> tuple[Options, str]:
        """The new options (restart-only ones kept), or the running ones and why."""
        if self.reload_options is None:
            return self.opt, ""
        from ..config import ConfigError

        try:
            fresh = self.reload_options()
        except (ConfigError, DaemonError) as err:
            return self.opt, " ".join(str(err).split())
        return fresh, ""

    def _finish_reload(self) -> None:
        if self._reload_thread is not None:
            self._reload_thread.join()
            self._reload_thread = None
        result, self._reload_result = self._reload_result, None
        self.reloading = False
        if isinstance(result, str):
            self.accounting.count_reload(ok=False)
            log.error("reload failed, keeping the running configuration, database and groups: "
                      "%s", result)
            self.last_reload = {"result": "refused", "error": result, "at": time.time(),
                                "version": self.db.version}
        else:
            self._apply(result)
        if self.reload_again:
            self.reload_again = False
            self.request_reload()

    def _apply(self, new: Reloaded) -> None:
        """Take what the reload thread loaded, keep what it refused, and say which is which."""
        old_version = self.db.version
        if new.config_problem:
            log.error("configuration not reloaded, keeping the running one: %s",
                      new.config_problem)
        if new.db_problem:
            log.error("reload refused, keeping database %s: %s", old_version, new.db_problem)
        if new.groups_problem:
            log.error("recipient groups not reloaded, keeping the running ones: %s",
                      new.groups_problem)
        took_options = not new.config_problem and new.options is not self.opt
        if took_options:
            options, restart = merge_reloaded(self.opt, new.options)
            if _metrics_address(options) != _metrics_address(self.opt):
                restart.append("metrics")
            if restart:
                log.warning("reload: %s changed; restart the daemon to apply %s",
                            ", ".join("[metrics] daemon" if name == "metrics"
                                      else f"[daemon] {name}" for name in restart),
                            "it" if len(restart) == 1 else "them")
            grew = options.max_connections > self.opt.max_connections
            self.opt = options
            if grew:
                self._raise_descriptor_limit()
        if took_options or not new.db_problem or not new.groups_problem:
            self.db, self.mail = new.db, new.mail
            self.reloads += 1
            # The old workers keep their own copy of the old database until they exit; the
            # parent's is released and its heap handed back before forking, so the new
            # workers do not start out carrying the old database's pages as well.
            self.pool.new_generation(self.opt.workers, before_spawn=release_free_memory)
            taken = [part for part, took in (("configuration", took_options),
                                             ("recipient groups", not new.groups_problem))
                     if took]
            if not new.db_problem:
                log.info("database reloaded: %s -> %s (%d signatures)%s", old_version,
                         self.db.version, self.db.total,
                         f"; {' and '.join(taken)} reloaded" if taken else "")
            else:
                log.info("%s reloaded; database %s kept", " and ".join(taken), old_version)
            self._dispatch()
        self.last_reload = {
            "result": "refused" if new.db_problem else "ok", "version": self.db.version,
            "at": time.time(),
            "configuration": "kept" if new.config_problem else "reloaded",
            "groups": "kept" if new.groups_problem else "reloaded"}
        if new.problems():
            self.last_reload["error"] = "; ".join(new.problems())
        self.accounting.count_reload(ok=not new.problems())

    # -- shutdown ---------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.pool.stopping = True
        limits = self.opt.limits
        self._stop_deadline = time.monotonic() + (getattr(limits, "max_scan_time", 0) or 600) + 30
        self._close_listeners()
        for conn in list(self.conns.values()):
            if conn.outstanding or conn.out:
                conn.closing = True
                conn.mode = Conn.WAITREPLY
                self._update_events(conn)
            else:
                self._close(conn)

    def _drained(self) -> bool:
        return not self.conns and not self.queue and not self.bulk and not self.pool.busy()

    def close_listeners(self) -> None:
        """Close (and for the unix socket, remove) every listener, /metrics too."""
        self._close_listeners()
        self.accounting.close_endpoint()

    def _close_listeners(self) -> None:
        for sock, unix in self.listeners:
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
            if unix and self.opt.socket is not None and self._socket_inode is not None:
                listeners.remove_socket_file(Path(self.opt.socket), self._socket_inode)
                self._socket_inode = None
        self.listeners = []

    # -- reporting --------------------------------------------------------------------------
    def _pool_stats(self) -> proto.PoolStats:
        busy = self.pool.busy()
        return proto.PoolStats(
            live=len(self.pool.workers), idle=len(self.pool.idle()),
            max=self.opt.workers, idle_timeout=self.opt.idle_timeout,
            queue=len(self.queue) + len(self.bulk), active=[w.job.label for w in busy],
            state="VALID PRIMARY" if not self.reloading else "VALID PRIMARY RELOADING")

    def status(self) -> dict:
        db = self.db
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "workers": len(self.pool.current()),
            "workers_busy": len(self.pool.busy()),
            "workers_max": self.opt.workers,
            "database": {"version": db.version, "directory": str(self.opt.database),
                         "loaded_from": str(db.directory),
                         "signatures": db.total, "built_at": db.built_at,
                         "age": round(time.time() - db.built_at, 1)},
            "requests": self.requests,
            "found": self.found,
            "errors": self.errors,
            "refused": self.refused,
            "queue": len(self.queue) + len(self.bulk),
            "connections": len(self.conns),
            "reloads": self.reloads,
            "reloading": self.reloading,
            "last_reload": self.last_reload,
            "listeners": self._listener_names(),
        }


def _metrics_address(opt: Options) -> str:
    return opt.settings.metrics.daemon if opt.settings is not None else ""
