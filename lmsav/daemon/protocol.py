"""The clamd socket protocol: framing commands and streams, formatting replies — no I/O here.

Everything a client sees byte for byte lives in this module, as clamd 1.x writes it
(clamd/session.c, clamd/server-th.c): the three command forms (``zCMD\\0``, ``nCMD\\n`` and the
bare legacy ``CMD\\n``), INSTREAM's length-prefixed chunks, IDSESSION's numbered replies, and the
reply lines ``path: OK`` / ``path: Name FOUND`` / ``path: reason ERROR``. The server feeds bytes in
and writes the bytes it gets back; the scan service turns Verdicts into reply lines here.
"""

from __future__ import annotations

import enum
import struct
import time
from dataclasses import dataclass

from .. import __version__
from ..scanner.objects import Status, Verdict

# Longest command line accepted (a path argument included); clamd's limit is PATH_MAX-ish too.
MAX_COMMAND = 8192
# Clients match "^ClamAV " or "ClamAV x/y/z" in VERSION replies; the product follows the word.
PRODUCT = f"ClamAV lmsav-{__version__}"


class Cmd(enum.Enum):
    SCAN = "SCAN"
    QUIT = "QUIT"  # listed by VERSIONCOMMANDS, handled as SHUTDOWN by clamd
    RELOAD = "RELOAD"
    PING = "PING"
    CONTSCAN = "CONTSCAN"
    VERSIONCOMMANDS = "VERSIONCOMMANDS"
    VERSION = "VERSION"
    END = "END"
    SHUTDOWN = "SHUTDOWN"
    MULTISCAN = "MULTISCAN"
    FILDES = "FILDES"
    STATS = "STATS"
    IDSESSION = "IDSESSION"
    INSTREAM = "INSTREAM"
    DETSTATSCLEAR = "DETSTATSCLEAR"
    DETSTATS = "DETSTATS"
    ALLMATCHSCAN = "ALLMATCHSCAN"
    LMSAVSTATUS = "LMSAVSTATUS"  # private: JSON status for `lmsav ctl status`
    LMSAVMAIL = "LMSAVMAIL"  # private: mail policy for local front ends (lmsav.mail.transfer)
    UNKNOWN = ""


@dataclass(frozen=True)
class _Spec:
    cmd: Cmd
    need_arg: bool
    support_old: bool  # accepted in the bare legacy form


# clamd's table, in clamd's order: prefixes are matched in this order (VERSIONCOMMANDS before
# VERSION, because they share a prefix), and the order is also what VERSIONCOMMANDS lists.
COMMANDS: tuple[_Spec, ...] = (
    _Spec(Cmd.SCAN, True, True),
    _Spec(Cmd.QUIT, False, True),
    _Spec(Cmd.RELOAD, False, True),
    _Spec(Cmd.PING, False, True),
    _Spec(Cmd.CONTSCAN, True, True),
    _Spec(Cmd.VERSIONCOMMANDS, False, False),
    _Spec(Cmd.VERSION, False, True),
    _Spec(Cmd.END, False, False),
    _Spec(Cmd.SHUTDOWN, False, True),
    _Spec(Cmd.MULTISCAN, True, True),
    _Spec(Cmd.FILDES, False, True),
    _Spec(Cmd.STATS, False, False),
    _Spec(Cmd.IDSESSION, False, False),
    _Spec(Cmd.INSTREAM, False, False),
    _Spec(Cmd.DETSTATSCLEAR, False, True),
    _Spec(Cmd.DETSTATS, False, True),
    _Spec(Cmd.ALLMATCHSCAN, True, False),
    _Spec(Cmd.LMSAVSTATUS, False, False),
    _Spec(Cmd.LMSAVMAIL, False, False),
)
# Commands clamd accepts inside IDSESSION; anything else ends the session with an error.
SESSION_COMMANDS = frozenset({Cmd.FILDES, Cmd.SCAN, Cmd.END, Cmd.INSTREAM, Cmd.VERSION,
                              Cmd.PING, Cmd.STATS, Cmd.VERSIONCOMMANDS, Cmd.LMSAVSTATUS})
SCAN_COMMANDS = frozenset({Cmd.SCAN, Cmd.CONTSCAN, Cmd.MULTISCAN, Cmd.ALLMATCHSCAN})


@dataclass(frozen=True)
class Command:
    """One command as received: what it is, its argument, how to terminate replies to it."""

    cmd: Cmd
    arg: str | None
    term: bytes  # b"\0" for z-commands, b"\n" otherwise
    oldstyle: bool
    raw: bytes = b""


def parse_command(line: bytes, oldstyle: bool) -> tuple[Cmd, str | None]:
    """``b"SCAN /x"`` → (Cmd.SCAN, "/x"), as clamd's parse_command: prefix match, then checks."""
    for spec in COMMANDS:
        name = spec.cmd.value.encode()
        if not line.startswith(name):
            continue
        rest = line[len(name):]
        if spec.need_arg:
            if not rest:
                return Cmd.UNKNOWN, None
            arg = rest[1:].decode("utf-8", "surrogateescape")
        else:
            if rest:
                return Cmd.UNKNOWN, None
            arg = None
        if oldstyle and not spec.support_old:
            return Cmd.UNKNOWN, None
        return spec.cmd, arg
    return Cmd.UNKNOWN, None


class ProtocolError(Exception):
    """The client broke the framing; the reply (without terminator) says how, then we close."""


class CommandReader:
    """Splits received bytes into commands: ``z…\\0``, ``n…\\n`` and bare ``…\\n`` lines.

    Only the first command of a connection may be bare (clamd: "one packet = one command"),
    so pipelined bare commands are not a thing; a bare command is complete at its newline or
    at the end of what has arrived.
    """

    def __init__(self) -> None:
        self.buf = bytearray()
        self.count = 0

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next(self, eof: bool = False) -> Command | None:
        buf = self.buf
        if not buf:
            return None
        first = buf[0]
        if first in (0x7A, 0x6E):  # 'z', 'n'
            term = b"\0" if first == 0x7A else b"\n"
            end = buf.find(term)
            if end < 0:
                if len(buf) > MAX_COMMAND:
                    raise ProtocolError("Command too long. ERROR")
                return None
            line = bytes(buf[1:end])
            del buf[:end + 1]
            if term == b"\n":
                line = line.rstrip(b"\r\n")
            oldstyle = False
        else:
            if self.count:
                raise ProtocolError("UNKNOWN COMMAND")
            # clamd: "one packet = one command" — what has arrived is the whole command.
            end = buf.find(b"\n")
            if end < 0:
                if len(buf) > MAX_COMMAND:
                    raise ProtocolError("Command too long. ERROR")
                end = len(buf)
            line = bytes(buf[:end]).rstrip(b"\r\n")
            del buf[:end + 1]
            term, oldstyle = b"\n", True
        self.count += 1
        cmd, arg = parse_command(line, oldstyle)
        return Command(cmd, arg, term, oldstyle, line)

    @property
    def pending(self) -> bool:
        """Part of a command has arrived (so the read timeout, not the idle one, applies)."""
        return bool(self.buf)


class StreamTooLong(Exception):
    """An INSTREAM chunk would exceed StreamMaxLength."""


class StreamReader:
    """INSTREAM: ``<4-byte big-endian length><data>`` chunks until a zero length.

    ``feed`` takes whatever arrived and returns ``(data_to_keep, leftover)``; ``done`` turns
    true at the zero-length chunk, and ``leftover`` holds bytes after it (the next command of
    an IDSESSION). Raises StreamTooLong before accepting a chunk over the remaining quota,
    as clamd does.
    """

    def __init__(self, limit: int) -> None:
        self.quota = limit if limit else (1 << 62)
        self.remaining_chunk = 0
        self.header = bytearray()
        self.done = False
        self.total = 0

    def feed(self, data: bytes | memoryview) -> tuple[list[memoryview], bytes]:
        view = memoryview(data)
        out: list[memoryview] = []
        while view and not self.done:
            if self.remaining_chunk:
                take = min(self.remaining_chunk, len(view))
                out.append(view[:take])
                view = view[take:]
                self.remaining_chunk -= take
                self.total += take
                continue
            need = 4 - len(self.header)
            self.header += view[:need]
            view = view[need:]
            if len(self.header) < 4:
                break
            (size,) = struct.unpack(">I", self.header)
            self.header.clear()
            if size == 0:
                self.done = True
                break
            if size > self.quota:
                raise StreamTooLong(size)
            self.quota -= size
            self.remaining_chunk = size
        return out, bytes(view)

    @property
    def mid_chunk(self) -> bool:
        return bool(self.remaining_chunk or self.header)


def encode_chunks(data: bytes, chunk: int = 1 << 16) -> bytes:
    """An INSTREAM body for ``data``: chunks then the zero-length end (clients, tests)."""
    parts = []
    for off in range(0, len(data), chunk):
        piece = data[off:off + chunk]
        parts.append(struct.pack(">I", len(piece)) + piece)
    parts.append(b"\0\0\0\0")
    return b"".join(parts)


# -- replies -----------------------------------------------------------------------------------

def frame(text: str, term: bytes, request_id: int = 0) -> bytes:
    """One reply as sent: ``"<id>: "`` inside IDSESSION, then the text, then the terminator."""
    prefix = f"{request_id}: " if request_id else ""
    return (prefix + text).encode("utf-8", "surrogateescape") + term


def ok(path: str) -> str:
    return f"{path}: OK"


def found(path: str, name: str) -> str:
    return f"{path}: {name} FOUND"


def error(path: str | None, reason: str) -> str:
    return f"{path}: {reason} ERROR" if path is not None else f"{reason} ERROR"


SIZE_LIMIT = "INSTREAM size limit exceeded. ERROR"
UNKNOWN = "UNKNOWN COMMAND"
TIMED_OUT = "COMMAND READ TIMED OUT"
INVALID_IN_SESSION = "Command invalid inside IDSESSION. ERROR"
OLDSTYLE_IN_SESSION = "Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION. ERROR"
NO_FD = "No file descriptor received. ERROR"
PROTOCOL_FD = "PROTOCOL ERROR: ancillary data sent without FILDES. ERROR"
MAX_CONNECTIONS = "Max connections reached. ERROR"
MAX_QUEUE = "Max queue reached. ERROR"


def version(db_version: str, db_time: float) -> str:
    """``ClamAV lmsav-0.1.0/<db version>/<db date>``: clients split it on '/'."""
    return f"{PRODUCT}/{db_version}/{time.ctime(db_time)}"


def version_commands(db_version: str, db_time: float) -> str:
    names = " ".join(spec.cmd.value for spec in COMMANDS
                     if spec.cmd not in (Cmd.LMSAVSTATUS, Cmd.LMSAVMAIL))
    return f"{version(db_version, db_time)}| COMMANDS: {names}"


@dataclass
class PoolStats:
    """What STATS reports, in clamd's terms: workers are clamd's threads."""

    live: int
    idle: int
    max: int
    idle_timeout: float
    queue: int
    active: list[str]  # one line per running job: what it scans
    state: str = "VALID PRIMARY"


def stats(pool: PoolStats) -> str:
    """clamd's STATS layout (thrmgr_printstats), ending with ``END``."""
    lines = ["POOLS: 1", "", f"STATE: {pool.state}",
             (f"THREADS: live {pool.live}  idle {pool.idle} max {pool.max} "
             f"idle-timeout {int(pool.idle_timeout)}"),
             f"QUEUE: {pool.queue} items"]
    lines += [f"\tSTATS 0.000000 {task}" for task in pool.active]
    lines += ["", ("MEMSTATS: heap N/A mmap N/A used N/A free N/A releasable N/A pools 1 "
              "pools_used N/A pools_total N/A"), "END"]
    return "\n".join(lines)


# -- verdicts as clamd names them ----------------------------------------------------------------

# Sniffed type → the format word clamd puts in Heuristics.Encrypted.<Format>.
_FORMAT_NAMES = {"zip": "Zip", "7z": "7Zip", "rar": "RAR", "pdf": "PDF", "ole2": "OLE2",
                 "ooxml": "OOXML", "arj": "ARJ", "cab": "CAB", "tar": "Tar", "gzip": "GZip",
                 "bzip2": "BZip2", "xz": "XZ", "zstd": "Zstd", "mail": "Mail", "pe": "PE"}
# Engine limit reasons ("limit: filesize 104857600") → clamd's AlertExceedsMax names.
_LIMIT_NAMES = {"filesize": "MaxFileSize", "scansize": "MaxScanSize", "files": "MaxFiles",
                "depth": "MaxRecursion", "time": "MaxScanTime"}


def format_name(ftype: str) -> str:
    return _FORMAT_NAMES.get(ftype, ftype.capitalize() if ftype else "Unknown")


def limit_name(reason: str) -> str:
    """``"limit: filesize 100"`` → ``Heuristics.Limits.Exceeded.MaxFileSize``."""
    words = reason.split()
    key = words[1] if len(words) > 1 and words[0] == "limit:" else ""
    specific = _LIMIT_NAMES.get(key)
    return "Heuristics.Limits.Exceeded" + (f".{specific}" if specific else "")


def verdict_lines(path: str, verdict: Verdict, heuristic_names: bool,
                  allmatch: bool = False) -> tuple[list[str], Status]:
    """The reply lines for one scanned input and how it counts (INFECTED, ERROR or CLEAN).

    Threats win; then (worst first) encrypted, corrupted and limit results become Heuristics.*
    names when ``heuristic_names`` is on, as clamd's AlertEncrypted/AlertBrokenContainers/
    AlertExceedsMax do, and count as OK otherwise. Any other failure is an ERROR, never OK.
    """
    threats = verdict.threats
    if threats:
        names: list[str] = []
        for _where, threat in threats:
            if threat.name not in names:
                names.append(threat.name)
        if not allmatch:
            names = names[:1]
        return [found(path, n) for n in names], Status.INFECTED
    findings = sorted(verdict.findings(), key=lambda r: r.status, reverse=True)
    # An encrypted member has no type of its own: name the format after its container.
    container_type = {c.path: r.type for r in verdict.walk() for c in r.children}
    heuristics: list[str] = []
    failure = None
    for res in findings:
        if res.status in (Status.PROTECTED, Status.CORRUPTED) or res.reason.startswith("limit:"):
            if res.status == Status.PROTECTED:
                ftype = res.type or container_type.get(res.path, "")
                name = f"Heuristics.Encrypted.{format_name(ftype)}"
            elif res.status == Status.CORRUPTED:
                name = f"Heuristics.Broken.{format_name(res.type)}"
            else:
                name = limit_name(res.reason)
            # A limit set to "suspicious" is found whatever heuristic_names says.
            if (heuristic_names or res.status == Status.SUSPICIOUS) and name not in heuristics:
                heuristics.append(name)
            continue
        if res.status >= Status.ERROR and failure is None:
            failure = res
    if heuristics:
        return [found(path, n) for n in (heuristics if allmatch else heuristics[:1])], \
            Status.INFECTED
    if failure is not None:
        return [error(path, _reason_text(failure.reason))], Status.ERROR
    return [ok(path)], Status.CLEAN


def _reason_text(reason: str) -> str:
    # One line, no trailing "ERROR" of its own: clients look at the last word only.
    text = " ".join((reason or "Scan failed").split())
    return text[:1].upper() + text[1:]
