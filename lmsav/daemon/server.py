"""`lmsav daemon`: a dispatcher process and pre-forked scanning workers speaking clamd's protocol.

The parent loads the database, binds the listeners and forks the workers, which therefore share
the compiled database copy-on-write and load nothing themselves. The parent runs one selectors
loop: it accepts connections, reads commands and INSTREAM data (non-blocking, with timeouts),
answers PING, VERSION, STATS and the like itself, and queues scan jobs. A job goes to an idle
worker over a unix socketpair — descriptors (FILDES files, the spooled INSTREAM) ride along with
SCM_RIGHTS — and the worker sends back the reply lines, which the parent writes to the client.
So a slow scan only ever occupies its worker: PING is answered by the parent at any time, and a
client that stalls mid-chunk costs a buffer in the parent, never a worker.

Reload (RELOAD, SIGHUP, SIGUSR2) loads and self-tests the new database in a thread; on success
the parent forks a new generation of workers from it and retires the old workers as they finish
their current job, so no request fails or waits for a worker that is loading.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import grp
import json
import logging
import os
import pickle
import pwd
import resource
import selectors
import signal
import socket
import stat
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import mailjob
from . import protocol as proto
from .protocol import Cmd

log = logging.getLogger("lmsav.daemon")

RECV_SIZE = 1 << 18
_LEN = struct.Struct(">I")


class DaemonError(Exception):
    """The daemon cannot start: a listener, the database or the user is not usable."""


@dataclass
class Options:
    """Everything the daemon needs, resolved from settings and the command line."""

    socket: Path | None
    tcp: tuple[str, ...]
    database: Path
    workers: int
    socket_mode: int = 0o660
    socket_group: str = ""
    user: str = ""
    pid_file: Path | None = None
    stream_max_length: int = 25 << 20
    read_timeout: float = 120.0
    idle_timeout: float = 30.0
    max_connections: int = 200
    max_queue: int = 100
    heuristic_names: bool = True
    follow_symlinks: bool = False
    tmp_dir: str | None = None
    limits: Any = None  # scanner.limits.Limits
    scan_archives: bool = True
    scan_mail: bool = True
    config_path: Path | None = None  # groups.d/ beside it, for LMSAVMAIL
    state_dir: Path | None = None  # backup/ and stats/ of LMSAVMAIL


# -- the scan service, run inside workers --------------------------------------------------------

class ScanService:
    """Turns scan jobs into clamd reply lines with one Engine (one per worker process)."""

    def __init__(self, engine, heuristic_names: bool, follow_symlinks: bool, mail=None):
        self.engine = engine
        self.heuristic_names = heuristic_names
        self.follow_symlinks = follow_symlinks
        self.mail = mail  # MailService, for LMSAVMAIL

    def run(self, job: dict, fds: list[int]) -> dict:
        kind = job["kind"]
        if kind == "mail":
            return self.mail_job(fds)
        if kind == "path":
            return self.scan_target(job["path"], job["mode"])
        if kind == "files":
            return self.scan_files(job["paths"], job["mode"] == "allmatch")
        if kind == "fd":
            return self.scan_fd(fds[0] if fds else -1, job["name"])
        raise ValueError(f"unknown job kind {kind!r}")

    # clamd's reply rules (clamd/scanner.c, session.c): every file that is not clean gets a
    # line; the top-level path gets "path: OK" when nothing was found and not everything failed.
    def scan_target(self, path: str, mode: str) -> dict:
        res = {"lines": [], "infected": 0, "errors": 0, "total": 1}
        try:
            st = os.stat(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"lstat() failed: {err.strerror}."))
            res["errors"] = 1
            return res
        if stat.S_ISDIR(st.st_mode):
            files, problems = self.walk(path)
            res["lines"] += problems
            res["errors"] += len(problems)
            res["total"] += len(problems)
            if mode in ("contscan", "multiscan"):
                res["fanout"] = files  # the parent spreads them over every worker
                return res
            for name in files:
                self._scan_into(res, name, False, mode == "allmatch")
                if mode == "scan" and res["infected"]:
                    return res  # SCAN stops at the first virus, as clamd's TYPE_SCAN does
        elif stat.S_ISREG(st.st_mode):
            res["total"] = 0
            self._scan_into(res, path, True, mode == "allmatch")
        else:
            res["lines"].append(proto.error(path, "Not supported file type"))
            res["errors"] = 1
            return res
        return self.finish(path, res)

    @staticmethod
    def finish(path: str, res: dict) -> dict:
        if not res["infected"] and res["errors"] != res["total"]:
            res["lines"].append(proto.ok(path))
        return res

    def scan_files(self, paths: list[str], allmatch: bool) -> dict:
        res = {"lines": [], "infected": 0, "errors": 0, "total": 0}
        for name in paths:
            self._scan_into(res, name, False, allmatch)
        return res

    def _scan_into(self, res: dict, path: str, toplevel: bool, allmatch: bool) -> None:
        res["total"] += 1
        try:
            st = os.stat(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"lstat() failed: {err.strerror}."))
            res["errors"] += 1
            return
        if st.st_size == 0:
            if toplevel:
                res["lines"].append(f"{path}: Empty file")
            return
        if not os.access(path, os.R_OK):
            res["lines"].append(proto.error(path, "Access denied."))
            res["errors"] += 1
            return
        try:
            verdict = self.engine.scan_path(path)
        except OSError as err:
            res["lines"].append(proto.error(path, f"Can't open file or directory: {err.strerror}"))
            res["errors"] += 1
            return
        lines, status = proto.verdict_lines(path, verdict, self.heuristic_names, allmatch)
        res["lines"] += [] if status is proto.Status.CLEAN else lines
        if status is proto.Status.INFECTED:
            res["infected"] += 1
        elif status is not proto.Status.CLEAN:
            res["errors"] += 1

    def walk(self, top: str) -> tuple[list[str], list[str]]:
        """Regular files under ``top`` in a stable order, and reply lines for unreadable ones."""
        files: list[str] = []
        problems: list[str] = []
        base = top.rstrip("/") or "/"

        def onerror(err: OSError) -> None:
            problems.append(proto.error(err.filename, f"lstat() failed: {err.strerror}."))

        for dirpath, dirnames, filenames in os.walk(base, onerror=onerror,
                                                    followlinks=self.follow_symlinks):
            dirnames.sort()
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full) if self.follow_symlinks else os.lstat(full)
                except OSError as err:
                    problems.append(proto.error(full, f"lstat() failed: {err.strerror}."))
                    continue
                if stat.S_ISREG(st.st_mode):
                    files.append(full)
        return files, problems

    def scan_fd(self, fd: int, name: str) -> dict:
        res = {"lines": [], "infected": 0, "errors": 0, "total": 1}
        try:
            st = os.fstat(fd)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            res["lines"].append(proto.error(name, "Not a regular file"))
            res["errors"] = 1
            return res
        try:
            # The descriptor's own file, reopened through /proc: works for unlinked spools too.
            verdict = self.engine.scan_path(f"/proc/self/fd/{fd}", name)
        except OSError as err:
            res["lines"].append(proto.error(name, f"Can't read file: {err.strerror}"))
            res["errors"] = 1
            return res
        lines, status = proto.verdict_lines(name, verdict, self.heuristic_names)
        res["lines"] = lines
        res["infected"] = int(status is proto.Status.INFECTED)
        res["errors"] = int(status not in (proto.Status.INFECTED, proto.Status.CLEAN))
        return res


    def mail_job(self, fds: list[int]) -> dict:
        """LMSAVMAIL: apply the mail policy; the plan goes into the client's reply file."""
        from . import mailjob

        if self.mail is None or len(fds) != 3:
            return {"lines": [f"{mailjob.REPLY_ERROR} mail policy not available"],
                    "errors": 1, "total": 1}
        req_fd, msg_fd, plan_fd = fds
        try:
            request = mailjob.decode_request(mailjob.read_fd(req_fd, mailjob.MAX_REQUEST))
            raw = mailjob.read_fd(msg_fd, mailjob.MAX_MESSAGE)
            header, bodies = self.mail.plan(request, raw)
            mailjob.write_plan(plan_fd, header, bodies)
        except (mailjob.PlanError, KeyError, OSError) as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            return {"lines": [f"{mailjob.REPLY_ERROR} {reason}"], "errors": 1, "total": 1}
        found = int(header["status"] == "infected")
        return {"lines": [mailjob.REPLY_OK], "infected": found, "errors": 0, "total": 1,
                "log": f"LMSAVMAIL {header['message_id'] or '-'} status={header['status']} "
                       f"result={header['result']} threats={','.join(header['threats']) or '-'}"}


class MailService:
    """The mail policy inside a worker: groups from the parent, the processor made on first use
    (the engines it needs are built per limit set and kept)."""

    def __init__(self, db, groups, limits, state_dir: Path | None, tmp_dir: str | None):
        self.db = db
        self.groups = groups
        self.limits = limits
        self.state_dir = state_dir
        self.tmp_dir = tmp_dir
        self._processor = None

    def plan(self, request: dict, raw: bytes) -> tuple[dict, list[bytes]]:
        from . import mailjob

        if self._processor is None:
            from ..mail.backup import BackupStore
            from ..mail.process import MailProcessor

            state = self.state_dir
            self._processor = MailProcessor(
                self.db, self.groups, self.limits,
                backup_store=BackupStore(state / "backup") if state else None,
                stats_dir=state / "stats" if state else None, tmp_root=self.tmp_dir)
        return mailjob.make_plan(self._processor, self.groups, request, raw,
                                 self._processor.hostname)


def load_groups(config_path: Path | None):
    """The recipient groups beside the configuration file (the shipped default without one)."""
    from ..config import ConfigError
    from ..mail.groups import groups_dir, load_groups as load

    try:
        return load(groups_dir(config_path) if config_path else None)
    except ConfigError as err:
        raise DaemonError(str(err)) from None


def self_test(db, limits) -> list[str]:
    """Scan the database's own samples; return the failures (empty means it passed)."""
    from ..scanner.engine import Engine

    engine = Engine(db, limits)
    failures = []
    for sample in db.samples:
        verdict = engine.scan_bytes(sample.data, f"selftest:{sample.name}")
        names = [t.name for _, t in verdict.threats]
        ok = sample.expect in names if sample.expect else not names
        if not ok:
            failures.append(f"{sample.name}: expected {sample.expect or 'clean'}, got "
                            f"{', '.join(names) or 'clean'}")
    return failures


def _send_frame(sock: socket.socket, obj: Any, fds: list[int] | None = None) -> None:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    data = _LEN.pack(len(payload)) + payload
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        if sent < len(data):
            sock.sendall(data[sent:])
    else:
        sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        piece = sock.recv(n - len(buf))
        if not piece:
            raise EOFError
        buf += piece
    return bytes(buf)


def worker_main(sock: socket.socket, service: ScanService) -> None:
    """A worker: take one job at a time from the parent, answer with the reply lines."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # the parent decides when workers stop
    while True:
        try:
            head, fds, _flags, _addr = socket.recv_fds(sock, 4, 8)
        except OSError:
            return
        if not head:
            return
        try:
            if len(head) < 4:
                head += _recv_exact(sock, 4 - len(head))
            (size,) = _LEN.unpack(head)
            job = pickle.loads(_recv_exact(sock, size))
        except (EOFError, OSError):
            return
        try:
            result = service.run(job, fds)
        except Exception as err:  # a bug costs this request an ERROR, never the worker
            logging.getLogger("lmsav.daemon").exception("scan job failed")
            result = {"lines": [proto.error(job.get("path") or job.get("name") or "",
                                            f"Internal error: {type(err).__name__}")],
                      "infected": 0, "errors": 1, "total": 1}
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            _send_frame(sock, result)
        except OSError:
            return


# -- the parent: connections, jobs, workers -----------------------------------------------------

@dataclass
class Job:
    conn: "Conn"
    payload: dict
    request_id: int
    term: bytes
    fds: list[int] = field(default_factory=list)
    fanout: "Fanout | None" = None
    label: str = ""


@dataclass
class Fanout:
    """A CONTSCAN/MULTISCAN of a directory spread over every worker; replies 'OK' at the end."""

    path: str
    infected: int = 0
    errors: int = 0
    total: int = 0
    pending: int = 0


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


@dataclass
class Worker:
    pid: int
    sock: socket.socket
    generation: int
    job: Job | None = None
    buf: bytearray = field(default_factory=bytearray)
    retiring: bool = False
    started: float = field(default_factory=time.time)


class Server:
    """The dispatcher. ``run()`` returns the exit code."""

    def __init__(self, options: Options):
        self.opt = options
        self.sel = selectors.DefaultSelector()
        self.listeners: list[tuple[socket.socket, bool]] = []
        self.conns: dict[int, Conn] = {}
        self.workers: dict[int, Worker] = {}  # by socket fd
        self.queue: collections.deque[Job] = collections.deque()
        self.bulk: collections.deque[Job] = collections.deque()
        self.generation = 0
        self.db = None
        self.groups = None
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
        self._new_groups = None
        self.stopping = False
        self._socket_inode: tuple[int, int] | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._signals: list[int] = []
        self.pids: set[int] = set()
        self._stop_deadline = 0.0

    # -- start-up ---------------------------------------------------------------------------
    def bind(self) -> None:
        """Bind every listener (before dropping privileges)."""
        if self.opt.socket is not None:
            self.listeners.append((self._bind_unix(Path(self.opt.socket)), True))
        for addr in self.opt.tcp:
            self.listeners.append((self._bind_tcp(addr), False))
        if not self.listeners:
            raise DaemonError("no listener configured: give --socket or --tcp")

    def _bind_unix(self, path: Path) -> socket.socket:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise DaemonError(f"{path}: exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.settimeout(2)
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # stale: nobody listens on it
                log.info("removed stale socket %s", path)
            else:
                raise DaemonError(f"{path}: another daemon is listening on this socket")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        except OSError as err:
            raise DaemonError(f"{path}: cannot bind: {err.strerror}") from None
        finally:
            os.umask(old)
        os.chmod(path, self.opt.socket_mode)
        if self.opt.socket_group:
            try:
                gid = grp.getgrnam(self.opt.socket_group).gr_gid
                os.chown(path, -1, gid)
            except (KeyError, OSError) as err:
                raise DaemonError(f"{path}: cannot set group {self.opt.socket_group}: "
                                  f"{getattr(err, 'strerror', None) or err}") from None
        st = path.stat()
        self._socket_inode = (st.st_dev, st.st_ino)
        sock.listen(512)
        sock.setblocking(False)
        return sock

    @staticmethod
    def _bind_tcp(addr: str) -> socket.socket:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as err:
            sock.close()
            raise DaemonError(f"{addr}: cannot bind: {err.strerror}") from None
        sock.listen(512)
        sock.setblocking(False)
        return sock

    def drop_privileges(self) -> None:
        user = self.opt.user
        if not user or os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            raise DaemonError(f"[daemon] user = {user!r}: no such user") from None
        if self.opt.socket is not None:
            gid = grp.getgrnam(self.opt.socket_group).gr_gid if self.opt.socket_group else -1
            os.chown(self.opt.socket, pw.pw_uid, gid)
        os.initgroups(user, pw.pw_gid)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        log.info("running as user %s", user)

    def load(self) -> None:
        from ..scanner.signatures.database import Database, DatabaseError
        from ..scanner.signatures.errors import SignatureError

        try:
            db = Database.load(resolve_database(self.opt.database), build_in_child=True)
        except (DatabaseError, SignatureError, OSError) as err:
            raise DaemonError(str(err)) from None
        for warning in db.warnings:
            log.warning("%s", warning)
        failures = self_test(db, self.opt.limits)
        if failures:
            raise DaemonError(f"{self.opt.database}: self-test failed: {'; '.join(failures)}")
        self.db = db
        self.groups = load_groups(self.opt.config_path)
        from ..scanner.containers import load_all

        load_all()  # once, before the workers fork
        log.info("database %s loaded from %s (%d signatures)", db.version, db.directory, db.total)

    def run(self) -> int:
        """Serve until SIGTERM or SHUTDOWN; finish in-flight requests; return the exit code."""
        _raise_nofile(self.opt.max_connections + 64)
        self._install_signals()
        for sock, _unix in self.listeners:
            self.sel.register(sock, selectors.EVENT_READ, ("listen", sock))
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        for _ in range(self.opt.workers):
            self._spawn_worker()
        log.info("lmsav daemon ready: %s, %d workers",
                 ", ".join(self._listener_names()), self.opt.workers)
        last_sweep = time.monotonic()
        while True:
            for key, events in self.sel.select(timeout=0.5):
                kind, obj = key.data
                if kind == "listen":
                    self._accept(obj, key.fileobj)
                elif kind == "conn":
                    if events & selectors.EVENT_READ:
                        self._on_readable(obj)
                    if events & selectors.EVENT_WRITE and obj.fd in self.conns:
                        self._flush(obj)
                elif kind == "worker":
                    self._on_worker(obj)
                elif kind == "wake":
                    self._on_wake()
            now = time.monotonic()
            if now - last_sweep >= 0.5:
                last_sweep = now
                self._sweep_timeouts(now)
            if self.stopping and (self._drained() or now > self._stop_deadline):
                break
        self._stop_workers()
        self._close_listeners()
        log.info("lmsav daemon stopped")
        return 0

    def _listener_names(self) -> list[str]:
        names = []
        for sock, unix in self.listeners:
            if unix:
                names.append(f"unix:{sock.getsockname()}")
            else:
                host, port = sock.getsockname()[:2]
                names.append(f"tcp:{host}:{port}")
        return names

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
                log.info("%s: reloading the database", signal.Signals(sig).name)
                self.request_reload()
        self._reap()
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
            if conn.waiting_fd is not None:
                if not self._complete_fildes(conn):
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
        c = cmd.cmd
        db = self.db
        if c is Cmd.PING:
            self._reply(conn, "PONG", term, rid)
        elif c is Cmd.VERSION:
            self._reply(conn, proto.version(db.version, db.built_at), term, rid)
        elif c is Cmd.VERSIONCOMMANDS:
            self._reply(conn, proto.version_commands(db.version, db.built_at), term, rid)
        elif c is Cmd.STATS:
            self._reply(conn, proto.stats(self._pool_stats()), term, rid)
        elif c is Cmd.LMSAVSTATUS:
            self._reply(conn, json.dumps(self.status(), separators=(",", ":")), term, rid)
        elif c is Cmd.RELOAD:
            self._reply(conn, "RELOADING", term, rid)
            self.request_reload()
        elif c in (Cmd.SHUTDOWN, Cmd.QUIT):
            log.info("SHUTDOWN requested by a client")
            self.begin_shutdown()
        elif c in (Cmd.DETSTATS, Cmd.DETSTATSCLEAR):
            pass  # removed from clamd; it answers nothing and closes
        elif c is Cmd.IDSESSION:
            conn.session = True
            conn.next_id = 1
            return
        elif c is Cmd.END:
            if not conn.session:
                self._reply(conn, proto.UNKNOWN, term, 0)
            self._end(conn)
            return
        elif c in proto.SCAN_COMMANDS:
            mode = c.value.lower()
            self._submit(conn, Job(conn, {"kind": "path", "path": cmd.arg, "mode": mode}, rid,
                                   term, label=f"{c.value} {cmd.arg}"))
        elif c is Cmd.INSTREAM:
            self._start_stream(conn, rid, term)
            return
        elif c in (Cmd.FILDES, Cmd.LMSAVMAIL):
            if c is Cmd.LMSAVMAIL and not conn.unix:
                self._reply(conn, f"{mailjob.REPLY_ERROR} only on the unix socket", term, rid)
                self._end(conn)
                return
            conn.waiting_kind = "mail" if c is Cmd.LMSAVMAIL else "fd"
            conn.waiting_fd = (rid, term)
            conn.eat_dummy = True
            self._complete_fildes(conn)
            if not conn.session and conn.waiting_fd is None:
                self._end(conn)
            return
        else:
            self._reply(conn, proto.UNKNOWN, term, rid)
            self._end(conn)
            return
        if not conn.session:
            self._end(conn)

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
                self._reply(conn, f"{mailjob.REPLY_ERROR} expected 3 descriptors", term, rid)
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
            conn.spool = tempfile.TemporaryFile(dir=self.opt.tmp_dir, prefix="lmsav-stream-")
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
        if len(self.queue) >= max(self.opt.max_queue, 1) and not self._idle_worker():
            self.refused += 1
            for fd in job.fds:
                os.close(fd)
            self._reply(conn, proto.MAX_QUEUE, job.term, job.request_id)
            return
        conn.outstanding += 1
        self.queue.append(job)
        self._dispatch()

    def _idle_worker(self) -> Worker | None:
        for worker in self.workers.values():
            if worker.job is None and not worker.retiring and worker.generation == self.generation:
                return worker
        return None

    def _dispatch(self) -> None:
        while self.queue or self.bulk:
            worker = self._idle_worker()
            if worker is None:
                return
            job = self.queue.popleft() if self.queue else self.bulk.popleft()
            if job.conn.fd not in self.conns or getattr(job.conn, "closed", False):
                self._abandon(job)
                continue
            try:
                _send_frame(worker.sock, job.payload, job.fds)
            except OSError:
                log.error("worker %d unreachable; retrying the job elsewhere", worker.pid)
                self._retire(worker, kill=True)
                (self.queue if job.fanout is None else self.bulk).appendleft(job)
                continue
            for fd in job.fds:
                os.close(fd)
            job.fds = []
            worker.job = job

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
        try:
            data = worker.sock.recv(RECV_SIZE)
        except OSError:
            data = b""
        if not data:
            self._worker_died(worker)
            return
        worker.buf += data
        while len(worker.buf) >= 4:
            (size,) = _LEN.unpack_from(worker.buf)
            if len(worker.buf) < 4 + size:
                break
            result = pickle.loads(bytes(worker.buf[4:4 + size]))
            del worker.buf[:4 + size]
            job, worker.job = worker.job, None
            if job is not None:
                self._job_done(job, result)
            if worker.retiring:
                self._retire(worker)
        self._dispatch()

    def _job_done(self, job: Job, result: dict) -> None:
        conn = job.conn
        live = conn.fd in self.conns and not getattr(conn, "closed", False)
        self.found += result.get("infected", 0)
        self.errors += result.get("errors", 0)
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
            result = ScanService.finish(fan.path, {"lines": [], "infected": fan.infected,
                                                   "errors": fan.errors, "total": fan.total})
        elif job.fanout is not None:
            fan = job.fanout
            fan.infected += result["infected"]
            fan.errors += result["errors"]
            fan.total += result["total"]
            fan.pending -= 1
            if live:
                for line in result["lines"]:
                    conn.out += proto.frame(line, job.term, job.request_id)
            if fan.pending == 0:
                done = ScanService.finish(fan.path, {"lines": [], "infected": fan.infected,
                                                     "errors": fan.errors, "total": fan.total})
                result = {"lines": done["lines"]}
            else:
                result = {"lines": []}
        conn.outstanding = max(conn.outstanding - 1, 0)
        if live:
            for line in result.get("lines", []):
                conn.out += proto.frame(line, job.term, job.request_id)
            self._flush(conn)

    def _worker_died(self, worker: Worker) -> None:
        self._forget_worker(worker)
        job = worker.job
        if job is not None:
            log.error("worker %d died while scanning (%s)", worker.pid, job.label)
            name = (job.payload.get("path") or job.payload.get("name")
                    or (job.payload.get("paths") or ["stream"])[0])
            self._job_done(job, {"lines": [proto.error(name, "Scan worker died")],
                                 "infected": 0, "errors": 1, "total": 1})
        if not self.stopping and not worker.retiring and worker.generation == self.generation:
            self._spawn_worker()
        self._dispatch()

    def _forget_worker(self, worker: Worker) -> None:
        if self.workers.pop(worker.sock.fileno(), None) is None:
            return
        try:
            self.sel.unregister(worker.sock)
        except (KeyError, ValueError):
            pass
        worker.sock.close()

    def _retire(self, worker: Worker, kill: bool = False) -> None:
        """Stop a worker once it is idle: closing its socket makes it exit."""
        worker.retiring = True
        if worker.job is not None and not kill:
            return
        self._forget_worker(worker)
        if kill:
            try:
                os.kill(worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._reap()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.pids.discard(pid)
            if os.WIFSIGNALED(status):
                log.warning("worker %d killed by signal %d", pid, os.WTERMSIG(status))

    def _spawn_worker(self) -> None:
        from ..scanner.engine import Engine

        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:  # the worker
            code = 0
            try:
                keep = child_sock.fileno()
                os.closerange(3, keep)
                os.closerange(keep + 1, _max_fd())
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                engine = Engine(self.db, self.opt.limits, self.opt.scan_archives,
                                self.opt.scan_mail, self.opt.tmp_dir)
                mail = MailService(self.db, self.groups, self.opt.limits, self.opt.state_dir,
                                   self.opt.tmp_dir)
                worker_main(child_sock, ScanService(engine, self.opt.heuristic_names,
                                                    self.opt.follow_symlinks, mail))
            except BaseException:
                code = 1
                log.exception("worker failed")
            finally:
                os._exit(code)
        child_sock.close()
        self.pids.add(pid)
        worker = Worker(pid, parent_sock, self.generation)
        self.workers[parent_sock.fileno()] = worker
        self.sel.register(parent_sock, selectors.EVENT_READ, ("worker", worker))

    def _stop_workers(self) -> None:
        for worker in list(self.workers.values()):
            self._forget_worker(worker)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                time.sleep(0.05)
            else:
                self.pids.discard(pid)
        log.warning("workers did not exit in time; killing them")
        for pid in list(self.pids):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

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
        from ..scanner.signatures.database import Database

        # One resolution per reload: an update switching `current` while the files load must
        # not mix two versions; this reload finishes the old target, the next one takes the new.
        directory = resolve_database(self.opt.database)
        try:
            db = Database.load(directory, build_in_child=True)
            failures = self_test(db, self.opt.limits)
            if failures:
                result = (None, "self-test failed: " + "; ".join(failures))
            elif db.refused:  # the new sources were refused; what loaded is the old cache
                result = (None, db.refused)
            else:
                # The database loaded here is the one the workers get (loaded once: the
                # mapped cache, Hyperscan's copy). What the self-test left bound to this
                # thread (yara-x's scanner) is made afresh and the old state dropped here.
                db.drop_thread_state()
                self._new_groups = load_groups(self.opt.config_path)
                result = (db, None)
        except Exception as err:  # any failure keeps the old database
            result = (None, str(err) or type(err).__name__)
        self._reload_result = result  # a refused database is dropped here, on this thread
        try:
            self._wake_w.send(b"r")
        except OSError:
            pass

    def _finish_reload(self) -> None:
        if self._reload_thread is not None:
            self._reload_thread.join()
            self._reload_thread = None
        (db, problem), self._reload_result = self._reload_result, None
        self.reloading = False
        if db is None:
            log.error("reload refused, keeping database %s: %s", self.db.version, problem)
            self.last_reload = {"result": "refused", "error": problem, "at": time.time()}
        else:
            old_version = self.db.version
            self.db = db
            self.groups = self._new_groups or self.groups
            self.generation += 1
            self.reloads += 1
            for worker in list(self.workers.values()):
                self._retire(worker)
            # The old workers keep their own copy of the old database until they exit; the
            # parent's is released and its heap handed back before forking, so the new
            # workers do not start out carrying the old database's pages as well.
            release_free_memory()
            for _ in range(self.opt.workers):
                self._spawn_worker()
            log.info("database reloaded: %s -> %s (%d signatures)", old_version, db.version,
                     db.total)
            self.last_reload = {"result": "ok", "version": db.version, "at": time.time()}
            self._dispatch()
        if self.reload_again:
            self.reload_again = False
            self.request_reload()

    # -- shutdown ---------------------------------------------------------------------------
    def begin_shutdown(self) -> None:
        if self.stopping:
            return
        self.stopping = True
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
        return not self.conns and not self.queue and not self.bulk and \
            all(w.job is None for w in self.workers.values())

    def _close_listeners(self) -> None:
        for sock, unix in self.listeners:
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
            if unix:
                self._remove_socket_file()
        self.listeners = []

    def _remove_socket_file(self) -> None:
        path = self.opt.socket
        if path is None or self._socket_inode is None:
            return
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self._socket_inode:
                os.unlink(path)
        except OSError:
            pass
        self._socket_inode = None

    # -- reporting --------------------------------------------------------------------------
    def _pool_stats(self) -> proto.PoolStats:
        current = [w for w in self.workers.values() if not w.retiring]
        busy = [w for w in self.workers.values() if w.job is not None]
        return proto.PoolStats(
            live=len(self.workers), idle=len([w for w in current if w.job is None]),
            max=self.opt.workers, idle_timeout=self.opt.idle_timeout,
            queue=len(self.queue) + len(self.bulk), active=[w.job.label for w in busy],
            state="VALID PRIMARY" if not self.reloading else "VALID PRIMARY RELOADING")

    def status(self) -> dict:
        db = self.db
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
            "workers": len([w for w in self.workers.values() if not w.retiring]),
            "workers_busy": len([w for w in self.workers.values() if w.job is not None]),
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


def release_free_memory() -> None:
    """Return the C heap's free pages to the system (glibc keeps them after a large free, and a
    forked worker would count them as its own); a no-op where malloc_trim is missing."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


def resolve_database(directory: Path) -> Path:
    """The real directory behind ``directory`` (an update's `current` link), read once so a
    load never follows a link that switches halfway through."""
    return Path(os.path.realpath(directory))


def _max_fd() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard == resource.RLIM_INFINITY else max(soft, min(hard, max(wanted, 4096)))
    if target != soft and target != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass


def options_from_settings(settings, socket_path: str | None, tcp: tuple[str, ...],
                          database: str | None, workers: int | None,
                          pid_file: str | None, config_path: Path | None = None) -> Options:
    d = settings.daemon
    try:
        mode = int(d.socket_mode, 8)
    except ValueError:
        raise DaemonError(f'[daemon] socket_mode = "{d.socket_mode}": expected an octal '
                          'mode like "0660"') from None
    sock = Path(socket_path) if socket_path else settings.daemon_socket()
    count = workers if workers else (d.workers or os.cpu_count() or 1)
    return Options(
        socket=sock,
        tcp=tuple(tcp) if tcp else tuple(d.tcp),
        database=Path(database) if database else Path(settings.database_dir()),
        workers=count,
        socket_mode=mode,
        socket_group=d.socket_group,
        user=d.user,
        pid_file=Path(pid_file) if pid_file else (d.pid_file or Path(settings.paths.run_dir) /
                                                  "lmsav.pid"),
        stream_max_length=d.stream_max_length,
        read_timeout=d.read_timeout,
        idle_timeout=d.idle_timeout,
        max_connections=d.max_connections or 1 << 20,
        max_queue=d.max_queue or 1 << 20,
        heuristic_names=d.heuristic_names,
        follow_symlinks=settings.scan.follow_symlinks,
        tmp_dir=str(settings.paths.tmp_dir) if settings.paths.tmp_dir else None,
        limits=settings.limits(),
        scan_archives=settings.scan.scan_archives,
        scan_mail=settings.scan.scan_mail,
        config_path=Path(config_path) if config_path else None,
        state_dir=Path(settings.paths.state_dir),
    )


def detach() -> None:
    """Classic double fork: the daemon leaves the terminal and its session."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def write_pid_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(f"{os.getpid()}\n")
    os.replace(tmp, path)


def remove_pid_file(path: Path) -> None:
    try:
        if path.read_text().strip() == str(os.getpid()):
            path.unlink()
    except OSError:
        pass
