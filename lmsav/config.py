"""TOML configuration → typed, validated settings; profiles; where every value came from.

The section dataclasses below are the one table of settings: each field carries its default, its
kind (what is allowed, how it is read and written back) and a one-line help. Loading, validation,
``config show`` and the documentation checks all walk that table.

Values are layered, later wins: built-in defaults < profile < configuration file < command line.
Anything not understood is an error naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from . import paths as paths_mod
from .scanner.limits import Limits
from .scanner.objects import Status

DEFAULT_PROFILE = "default_recommended"
COMMAND_LINE = "command line"
BUILT_IN = "built-in default"


class ConfigError(Exception):
    """A configuration problem, in one line: ``<file>: <key> = <value>: expected <allowed>``."""


# -- kinds of values -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Kind:
    """How one kind of value is written in TOML: what is allowed, how to read and write it."""

    allowed: str  # completes "expected ..."
    parse: Callable[[Any], Any]  # raises ValueError or TypeError for anything not allowed
    dump: Callable[[Any], Any] = lambda value: value  # back to a TOML-ready value
    secret: bool = False  # a URL that may hold a password: `config show` masks it


def redact_url(value: Any) -> Any:
    """``scheme://user:pass@host`` → ``scheme://user:***@host``; anything else unchanged."""
    if not isinstance(value, str) or "@" not in value:
        return value
    parts = urlsplit(value)
    if parts.password is None:
        return value
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def _natural(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(value)
    return value


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"(\d+)\s*(?:([KMGT])I?)?B?", re.IGNORECASE)


def _size(value: Any) -> int:
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value.strip())
        if not match:
            raise ValueError(value)
        return int(match[1]) * _SIZE_UNITS[(match[2] or "").upper()]
    return _natural(value)


def _size_text(size: int) -> int | str:
    """The shortest exact spelling: 104857600 → "100M"; sizes that are not multiples stay ints."""
    for unit in ("T", "G", "M", "K"):
        if size and size % _SIZE_UNITS[unit] == 0:
            return f"{size // _SIZE_UNITS[unit]}{unit}"
    return size


_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smh]?)")


def _seconds(value: Any) -> float:
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip())
        if not match:
            raise ValueError(value)
        return float(match[1]) * _DURATION_UNITS[match[2]]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(value)
    return float(value)


def _seconds_text(seconds: float) -> int | float:
    return int(seconds) if seconds == int(seconds) else seconds


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(value)
    return value


def _globs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(value)
    if not all(isinstance(item, str) and item for item in value):
        raise ValueError(value)
    return tuple(value)


def _absolute_path(value: Any) -> Path:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(value)
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        raise ValueError(value)
    return path


def _optional_path(value: Any) -> Path | None:
    # TOML has no null: the empty string stands for "not set, use the default".
    return None if value == "" else _absolute_path(value)


def _choice(*choices: str) -> Kind:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(value)
        return value

    return Kind(" or ".join(f'"{c}"' for c in choices), parse)


NATURAL = Kind("an integer >= 0", _natural)
SIZE = Kind("a size like 25M (bytes, or a whole number with K, M, G or T; multiples of 1024)",
            _size, _size_text)
SECONDS = Kind("a number of seconds >= 0, or a duration like 90s, 2m or 1h", _seconds,
               _seconds_text)
BOOLEAN = Kind("true or false", _boolean)
GLOBS = Kind('a list of glob patterns like ["*.log", "/proc"]', _globs, list)
ABSOLUTE_PATH = Kind("an absolute path", _absolute_path, str)
OPTIONAL_PATH = Kind('an absolute path, or "" for the default', _optional_path,
                     lambda path: "" if path is None else str(path))
LIMIT_STATUS = _choice("error", "suspicious")
SWEEP_ACTION = _choice("report", "quarantine", "cure", "delete")
STATUS_ACTION = _choice("", "report", "quarantine", "cure", "delete")
UNCURABLE_ACTION = _choice("report", "quarantine", "delete")


def setting(default: Any = None, kind: Kind = NATURAL, help: str = "", option: str | None = None,
            *, factory: Callable[[], Any] | None = None) -> Any:
    """Declare one key of a section: its default, kind, one-line help and command-line option."""
    metadata = {"kind": kind, "help": help, "option": option}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


# -- the table of settings -----------------------------------------------------------------------

@dataclass(frozen=True)
class PathsSection:
    """[paths] — where lmsav keeps its state, sockets, temporary files and signatures."""

    state_dir: Path = setting(
        kind=ABSOLUTE_PATH, factory=paths_mod.state_dir,
        help="Root of lmsav's state: bases/, quarantine/, nqueue/, backup/, stats/, updater/ "
             f"(default {paths_mod.SYSTEM_STATE_DIR} in the system layout: root, the service "
             "user, system accounts, what an MTA starts; $XDG_STATE_HOME/lmsav for a person).")
    run_dir: Path = setting(
        kind=ABSOLUTE_PATH, factory=paths_mod.run_dir,
        help=f"Sockets and pid files (default {paths_mod.SYSTEM_RUN_DIR} in the system layout, "
             f"$XDG_RUNTIME_DIR/lmsav for a person).")
    tmp_dir: Path | None = setting(
        None, OPTIONAL_PATH,
        'Where scans unpack large members; "" means the system temporary directory ($TMPDIR).')
    database: Path | None = setting(
        None, OPTIONAL_PATH,
        'Signature database directory, e.g. "/var/lib/clamav" (the directory freshclam fills); '
        '"" means the bundled test database (EICAR only).',
        "--database")
    bases: Path | None = setting(
        None, OPTIONAL_PATH,
        'Older name of "database", still read; "database" wins when both are set.')


@dataclass(frozen=True)
class LimitsSection:
    """[limits] — how far the engine goes into one input; 0 means unlimited."""

    max_scan_depth: int = setting(
        16, NATURAL, "Containers nested deeper than this are not opened.", "--max-recursion")
    max_file_size: int = setting(
        100 << 20, SIZE, "Files and members larger than this are not scanned.", "--max-filesize")
    max_scan_size: int = setting(
        400 << 20, SIZE, "Stop after this many bytes extracted and scanned from one input.",
        "--max-scansize")
    max_files: int = setting(
        10000, NATURAL, "Members unpacked and scanned per container; members past it are "
                        "still matched, without unpacking, while max_scan_size and "
                        "max_scan_time allow, and the container reports the limit.",
        "--max-files")
    max_scan_time: float = setting(
        120.0, SECONDS, "Time allowed for one input, in seconds.", "--max-scantime")
    max_compression_ratio: int = setting(
        250, NATURAL, "Members that unpack to more than this times their packed size are not "
                      "scanned (zip bombs).", "--max-ratio")
    limit_status: str = setting(
        "error", LIMIT_STATUS,
        'What hitting a limit makes of an object: "error" (could not be scanned) or '
        '"suspicious" (reported as found).')


@dataclass(frozen=True)
class ScanSection:
    """[scan] — what lmsav scan looks at and how it walks directory trees."""

    scan_archives: bool = setting(
        True, BOOLEAN, "Look inside archives and compressed files.", "--no-archive")
    scan_mail: bool = setting(
        True, BOOLEAN, "Look inside mail files (RFC 822 messages, mbox).", "--no-mail")
    workers: int = setting(
        0, NATURAL, "Parallel scanning processes; 0 means one per CPU.", "--jobs")
    follow_symlinks: bool = setting(
        False, BOOLEAN, "Follow symbolic links found inside directories.", "--follow-symlinks")
    one_file_system: bool = setting(
        False, BOOLEAN, "Stay on the file system of each path given.", "--one-file-system")
    max_dir_depth: int = setting(
        0, NATURAL, "Descend at most this many directory levels; 0 means unlimited.",
        "--max-dir-depth")
    exclude: tuple[str, ...] = setting(
        (), GLOBS, "Skip files and directories whose path or name matches one of these globs.",
        "--exclude")
    include: tuple[str, ...] = setting(
        (), GLOBS, "If not empty, scan only files whose path or name matches one of these globs.",
        "--include")
    detect_corrupted: bool = setting(
        False, BOOLEAN, "Count corrupted files (broken archives) as found: exit code 1.")
    detect_protected: bool = setting(
        False, BOOLEAN, "Count encrypted or password-protected files as found: exit code 1.")
    action: str = setting(
        "report", SWEEP_ACTION, "What lmsav scan does with a detected file.", "--action")
    infected_action: str = setting(
        "", STATUS_ACTION, 'Action for infected files; "" means the value of action.',
        "--infected-action")
    suspicious_action: str = setting(
        "", STATUS_ACTION, 'Action for suspicious files; "" means the value of action.',
        "--suspicious-action")
    protected_action: str = setting(
        "report", STATUS_ACTION, 'Action for encrypted or password-protected files (only when '
                                 'detect_protected counts them); "" means the value of action.',
        "--protected-action")
    corrupted_action: str = setting(
        "report", STATUS_ACTION, 'Action for corrupted files (only when detect_corrupted counts '
                                 'them); "" means the value of action.', "--corrupted-action")
    error_action: str = setting(
        "report", STATUS_ACTION, 'Action for files that could not be scanned; "" means the '
                                 'value of action.', "--error-action")
    uncurable_action: str = setting(
        "quarantine", UNCURABLE_ACTION, "What cure does with a file it cannot cure.",
        "--uncurable-action")
    backup: bool = setting(
        True, BOOLEAN, "Keep the original in backup/files/ before cure or delete.", "--no-backup")
    incremental: bool = setting(
        False, BOOLEAN, "Skip files unchanged since a clean verdict under the same database "
                        "(scheduled sweeps turn this on).", "--incremental")


_REINJECT_RE = re.compile(r"smtp:(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})|sendmail:/\S+|dir:/\S+")


def _reinject(value: Any) -> str:
    if not isinstance(value, str) or not _REINJECT_RE.fullmatch(value.strip()):
        raise ValueError(value)
    return value.strip()


REINJECT = Kind('"smtp:HOST:PORT", "sendmail:/path/to/sendmail" or "dir:/path" (files, for tests)',
                _reinject)


# The spool's SMTP/LMTP front door: "smtp:HOST:PORT", "lmtp:[::1]:PORT", "lmtp:unix:/PATH".
SPOOL_LISTEN_RE = re.compile(
    r"(?P<protocol>smtp|lmtp):(?:unix:(?P<path>/\S+)"
    r"|(?P<host>\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):(?P<port>\d{1,5}))")


def _spool_listen(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and SPOOL_LISTEN_RE.fullmatch(v) for v in value):
        raise ValueError(value)
    if not all(m["path"] or 0 < int(m["port"]) < 65536
               for m in (SPOOL_LISTEN_RE.fullmatch(v) for v in value)):
        raise ValueError(value)
    return tuple(value)


SPOOL_LISTEN = Kind('a list of "smtp:HOST:PORT", "lmtp:HOST:PORT" or "lmtp:unix:/PATH" like '
                    '["smtp:127.0.0.1:10025"]', _spool_listen, list)


@dataclass(frozen=True)
class SpoolSection:
    """[spool] — the nqueue/ spool the MTA hands mail to, and how scanned mail goes back."""

    dir: Path | None = setting(
        None, OPTIONAL_PATH, '"" means <state_dir>/nqueue.')
    workers: int = setting(
        0, NATURAL, "Worker processes of `lmsav spool watch`; 0 means one per CPU.", "--workers")
    reinject: str = setting(
        "smtp:127.0.0.1:10026", REINJECT,
        "Where scanned mail and notices go back into the MTA: an SMTP listener that does not "
        "filter again, or a sendmail command.")
    max_attempts: int = setting(
        20, NATURAL, "Failed processing attempts before an entry is held for the administrator.")
    retry_delay: float = setting(
        30.0, SECONDS, "Delay before the first retry of a failed entry; doubles each time, up "
                       "to an hour.")
    rescan_interval: float = setting(
        30.0, SECONDS, "Full rescan of new/ as a safety net beside inotify.")
    log_file: Path | None = setting(
        None, OPTIONAL_PATH, 'File that `lmsav spool watch` appends its one line per message to '
                             '(reopened when logrotate moves it); "" means standard error.',
        "--log-file")
    listen: tuple[str, ...] = setting(
        (), SPOOL_LISTEN,
        "Where `lmsav spool watch` takes mail over SMTP or LMTP (an MTA's content filter "
        "transport) and stores it in the spool before it answers; [] means no listener.",
        "--listen", factory=tuple)
    max_message_size: int = setting(
        100 << 20, SIZE, "Larger messages offered to the listener are refused (see "
                         "oversize).")
    oversize: str = setting(
        "defer", _choice("defer", "reject"),
        'How the listener refuses a message over max_message_size: "defer" (452 4.3.4, the '
        'MTA keeps it) or "reject" (552 5.3.4, the MTA bounces it).')


LISTEN_RE = re.compile(r"(\[[0-9a-fA-F:]+\]|[0-9.]+|localhost):(\d{1,5})")


def _listeners(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
            isinstance(v, str) and LISTEN_RE.fullmatch(v) for v in value):
        raise ValueError(value)
    return tuple(value)


LISTENERS = Kind('a list of "HOST:PORT" like ["127.0.0.1:3310", "[::1]:3310"]', _listeners, list)
def _text(value: Any) -> str:
    if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
        raise ValueError(value)
    return value


_TEXT = Kind("a string on one line", _text)


@dataclass(frozen=True)
class DaemonSection:
    """[daemon] — `lmsav daemon`, the central service speaking the clamd protocol."""

    socket: Path | None = setting(
        None, OPTIONAL_PATH, 'Unix socket; "" means <run_dir>/clamd.sock.', "--socket")
    socket_mode: str = setting("0660", _TEXT, "Permissions of the unix socket (octal).")
    socket_group: str = setting("", _TEXT, 'Group of the unix socket; "" keeps the default.')
    tcp: tuple[str, ...] = setting(
        (), LISTENERS, "TCP listeners (off unless listed); clamd's TCPAddr/TCPSocket.", "--tcp")
    workers: int = setting(0, NATURAL, "Pre-forked scanning processes; 0 means one per CPU.")
    user: str = setting("", _TEXT, 'Drop to this user after binding; "" keeps the current one.')
    pid_file: Path | None = setting(None, OPTIONAL_PATH, 'With --detach; "" means <run_dir>/lmsav.pid.')
    stream_max_length: int = setting(
        25 << 20, SIZE, "Largest INSTREAM accepted (clamd's StreamMaxLength).")
    read_timeout: float = setting(120.0, SECONDS, "Waiting for a client's data mid-command.")
    idle_timeout: float = setting(30.0, SECONDS, "Idle time allowed between IDSESSION commands.")
    max_connections: int = setting(200, NATURAL, "Connections served at once (clamd's MaxThreads).")
    max_queue: int = setting(100, NATURAL, "Requests waiting for a worker (clamd's MaxQueue).")
    heuristic_names: bool = setting(
        True, BOOLEAN, "Report protected/corrupted/limit results as FOUND with Heuristics.* "
                       "names, as clamd's AlertEncrypted/AlertExceedsMax do; false reports them "
                       "as OK.")


@dataclass(frozen=True)
class QmailSection:
    """[qmail] — lmsav-qmail-queue, run by qmail in place of qmail-queue."""

    qmail_queue: Path = setting(
        Path("/var/qmail/bin/qmail-queue"), ABSOLUTE_PATH,
        "The real qmail-queue every accepted delivery is handed to ($LMSAV_QMAILQUEUE "
        "overrides it).")
    use_daemon: bool = setting(
        True, BOOLEAN, "Have the running lmsav daemon apply the mail policy.")
    fallback: bool = setting(
        True, BOOLEAN, "Scan in-process when the daemon is not reachable; false makes that a "
                       "temporary failure (exit 71) so the client retries.")
    custom_error: bool = setting(
        False, BOOLEAN, "qmail-smtpd has the qmail-queue custom-error patch: rejections are "
                        "written to descriptor 4 as D<text> with exit 82, so the client sees "
                        "the group's reject_reply.")
    timeout: float = setting(
        300.0, SECONDS, "Time allowed for one message; past it the message is deferred "
                        "(exit 71).")


_DATABASE_NAME_RE = re.compile(r"[A-Za-z0-9_]+(?:-[A-Za-z0-9_]+)*(?:\.(?:cvd|cld|cud))?")


def _update_source(text: Any) -> str:
    """https://…, http://…, file:///… or an absolute directory."""
    from urllib.parse import urlsplit

    if not isinstance(text, str) or not text.strip():
        raise ValueError(text)
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        ok = bool(parts.hostname)
    elif parts.scheme == "file":
        ok = parts.netloc in ("", "localhost") and parts.path.startswith("/")
    else:
        ok = not parts.scheme and os.path.isabs(os.path.expanduser(text))
    if not ok:
        raise ValueError(text)
    return text


def _update_sources(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(value)
    return tuple(_update_source(item) for item in value)


def _database_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value or len(set(value)) != len(value):
        raise ValueError(value)
    if not all(isinstance(v, str) and _DATABASE_NAME_RE.fullmatch(v) for v in value):
        raise ValueError(value)
    return tuple(value)


def _positive(value: Any) -> int:
    if _natural(value) < 1:
        raise ValueError(value)
    return value


UPDATE_SOURCES = Kind('a list of sources like ["https://database.clamav.net", '
                      '"file:///srv/clamav-mirror", "/media/clamav"]', _update_sources, list)
DATABASE_NAMES = Kind('a list of database names like ["main", "daily", "bytecode"] or file '
                      'names ending in .cvd, .cld or .cud', _database_names, list)
POSITIVE = Kind("an integer >= 1", _positive)


# -- [update] feeds: which third-party signature files, each with how it is verified ----------
# (here, not in lmsav.update, so reading the configuration needs nothing of the updater)

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Feed:
    url: str  # https://, http://, file:// or an absolute path
    sha256: str = ""
    signed: bool = False

    @property
    def kind(self) -> str:
        path = urlsplit(self.url).path.lower() if "://" in self.url else self.url.lower()
        if path.endswith(".bundle"):
            return "bundle"
        if path.endswith(ARCHIVE_SUFFIXES):
            return "rule set"
        from .scanner.signatures import formats

        if path.endswith(formats.SIGNATURE_EXTENSIONS):
            return "file"
        return "directory"

    @property
    def local(self) -> Path | None:
        parts = urlsplit(self.url)
        if parts.scheme == "file":
            return Path(unquote(parts.path))
        return None if parts.scheme else Path(os.path.expanduser(self.url))


def parse_feeds(value: Any) -> tuple[Feed, ...]:
    """``[update] feeds``: URLs, or tables {url, sha256, signed}; ValueError with the reason."""
    if not isinstance(value, (list, tuple)):
        raise TypeError("not a list")
    feeds = tuple(_parse_feed(item) for item in value)
    if len({f.url for f in feeds}) != len(feeds):
        raise ValueError("a feed is listed twice")
    return feeds


def _parse_feed(item: Any) -> Feed:
    table = {"url": item} if isinstance(item, str) else item
    if not isinstance(table, dict) or set(table) - {"url", "sha256", "signed"}:
        raise ValueError(f"{item!r}: a URL or a table with url, sha256, signed")
    url, pin, signed = table.get("url"), table.get("sha256", ""), table.get("signed", False)
    if not isinstance(url, str) or not isinstance(pin, str) or not isinstance(signed, bool):
        raise TypeError(f"{item!r}: url and sha256 are strings, signed is true or false")
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"{url}: no host")
    elif parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"{url}: a file:// URL names an absolute path")
    elif parts.scheme or not os.path.isabs(os.path.expanduser(url)):
        raise ValueError(f"{url}: an https://, http:// or file:// URL, or an absolute path")
    pin = pin.lower()
    if pin and not SHA256_RE.fullmatch(pin):
        raise ValueError(f"{url}: sha256 is 64 hex digits")
    feed = Feed(url, pin, signed)
    if feed.kind == "directory" and (pin or signed):
        raise ValueError(f"{url}: a directory takes no sha256 or signed (its files are read "
                         f"as they are)")
    if feed.kind == "directory" and feed.local is None:
        raise ValueError(f"{url}: not a signature file, .bundle or .tar.gz")
    if feed.kind == "bundle" and pin:
        raise ValueError(f"{url}: a bundle is verified by its signature, not a sha256 pin")
    if parts.scheme == "http" and feed.kind != "bundle" and not (pin or signed):
        raise ValueError(f"{url}: plain http:// needs a sha256 pin or signed = true")
    return feed


def _update_feeds(value: Any) -> tuple:
    return parse_feeds(value)


UPDATE_FEEDS = Kind(
    'a list of URLs or tables like [{url = "https://example.org/x.ndb", sha256 = "<64 hex>"}, '
    '{url = "https://example.org/rules.tar.gz", signed = true}, '
    '"https://example.org/acme.bundle", "/srv/yara"]; plain http:// needs sha256 or '
    'signed = true', _update_feeds,
    lambda feeds: [{k: v for k, v in (("url", f.url), ("sha256", f.sha256),
                                      ("signed", f.signed)) if v} for f in feeds])


def _proxy(value: Any) -> str:
    """"" (none) or http://[user:pass@]host:port (https:// too)."""
    from urllib.parse import urlsplit

    if value == "":
        return value
    if not isinstance(value, str) or any(c.isspace() for c in value):
        raise ValueError(value)
    parts = urlsplit(value)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(value) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None \
            or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(value)
    return value


def _dns_name(value: Any) -> str:
    """"" (off) or a DNS name like current.cvd.clamav.net."""
    if value == "":
        return value
    if not isinstance(value, str) or len(value) > 253 or not re.fullmatch(
            r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?", value):
        raise ValueError(value)
    return value


PROXY = Kind('"" or a URL like "http://user:pass@proxy.example:3128"', _proxy, str, secret=True)
DNS_NAME = Kind('"" or a DNS name like "current.cvd.clamav.net"', _dns_name, str)


@dataclass(frozen=True)
class UpdateSection:
    """[update] — `lmsav update`: where new databases come from and how versions are kept."""

    sources: tuple[str, ...] = setting(
        ("https://database.clamav.net",), UPDATE_SOURCES,
        "Where updates come from, tried in order until one answers: mirrors in ClamAV's layout "
        "(https://…, http://…), file:// URLs and directories.", "--source")
    databases: tuple[str, ...] = setting(
        ("main", "daily", "bytecode"), DATABASE_NAMES,
        "Databases kept current: names as on ClamAV's mirrors (main.cvd, daily.cvd …), or file "
        "names; an unsigned .cud is accepted only when named so.")
    dir: Path | None = setting(
        None, OPTIONAL_PATH,
        '"" means <state_dir>/bases: one directory per version and a `current` link to the '
        'active one; point [paths] database at <dir>/current.', "--database")
    keep_versions: int = setting(
        3, POSITIVE, "Versions kept for `lmsav update --rollback`, the active one included.")
    check_interval: float = setting(
        3600.0, SECONDS, "After a successful check, network sources are not asked again before "
                         "this interval (mirrors block clients that ask too often); 0 asks on "
                         "every run.")
    max_age: float = setting(
        604800.0, SECONDS, "`lmsav update --status` warns when the newest database was built "
                           "longer ago than this (604800 s: 7 days).")
    timeout: float = setting(
        30.0, SECONDS, "Waiting to connect and for each piece of data; a transfer slower than "
                       "1 KiB per timeout is abandoned too.")
    retries: int = setting(
        3, POSITIVE, "Attempts per file and source when a failure may pass (timeout, dropped "
                     "connection, server error).")
    retry_delay: float = setting(
        2.0, SECONDS, "Pause before the second attempt; it doubles for each further one (at "
                      "most a minute).")
    feeds: tuple = setting(
        (), UPDATE_FEEDS,
        "Signatures installed beside ClamAV's: lmsav bundles (….bundle, signed by a key of "
        "`lmsav keys`), signature files (.ndb .ldb .hdb .hsb .yar …) and YARA rule sets (a "
        ".tar.gz or a directory), each verified by its sha256 pin or its <url>.sig when "
        "signed = true, else taken as sent over https:// or from a local path.")
    proxy: str = setting(
        "", PROXY, 'The HTTP proxy for mirrors, like "http://user:pass@host:3128"; "" uses '
                   'the https_proxy, http_proxy and no_proxy variables when they are set.')
    dns_txt: str = setting(
        "current.cvd.clamav.net", DNS_NAME,
        "The TXT record announcing the versions of main, daily and bytecode (ClamAV's "
        "format), asked before the HTTP mirrors; \"\" asks the mirrors only (set it so for a "
        "private mirror that may lag behind).")


@dataclass(frozen=True)
class ServerSection:
    """[server]: how this machine names itself to people and other mail systems."""

    host_name: str = setting(
        "", _TEXT, "The host name in notices, quarantine and backup records, reports and the "
                   "reinjecting SMTP client's HELO; \"\" is the fully qualified name (or the "
                   "short host name when that resolves to localhost).")


def _stats_url(value: Any) -> str:
    text = _text(value).strip()
    if text:
        parts = urlsplit(text)
        if parts.scheme not in ("postgresql", "postgres") or not (parts.path.strip("/")
                                                                  or parts.hostname):
            raise ValueError(value)
    return text


STATS_URL = Kind('"" (SQLite under state_dir) or a URL like '
                 '"postgresql://lmsav:secret@db.example:5432/lmsav"', _stats_url, str,
                 secret=True)


@dataclass(frozen=True)
class StatsSection:
    """[stats] — the statistics store every component records its events in."""

    url: str = setting(
        "", STATS_URL, 'Where statistics go: "" is an SQLite file under <state_dir>/stats/; '
                       'a postgresql:// URL is a store several mail nodes share.')
    buffer: int = setting(
        10000, NATURAL, "Events held in memory while the store is unavailable; beyond that, "
                        "events are dropped and counted, and mail keeps flowing.")


@dataclass(frozen=True)
class SnmpSection:
    """[snmp] — the LMSAV-MIB subagent of snmpd and the traps sent to the sinks."""

    traps: tuple[str, ...] = setting(
        (), LISTENERS, 'Trap sinks (SNMPv2c) like ["127.0.0.1:162"]; none: no traps.')
    community: str = setting("public", _TEXT, "The community of the traps sent.")
    informs: bool = setting(
        False, BOOLEAN, "Send informs (acknowledged, retried) instead of traps.")
    trap_interval: float = setting(
        60.0, SECONDS, "At most one virus-found trap per interval (the others are counted in it).")
    spool_threshold: int = setting(
        1000, NATURAL, "Messages waiting in the spool above which a trap is sent; 0: never.")
    database_max_age: float = setting(
        3 * 86400.0, SECONDS, "Age of the newest database above which it is reported outdated "
                              "(status, trap); 0: never.")


LOG_LEVEL_NAMES = ("error", "warning", "info", "debug")
LOG_LEVEL = _choice(*LOG_LEVEL_NAMES)
LOG_COMPONENTS = ("daemon", "spool", "qmail", "mail", "scan", "update", "cron", "stats", "snmp",
                  "setup", "milter", "web")


def _component_levels(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(value)
    for item in value:
        name, sep, level = str(item).partition(":")
        if not sep or name not in LOG_COMPONENTS or level not in LOG_LEVEL_NAMES:
            raise ValueError(value)
    return tuple(value)


COMPONENT_LEVELS = Kind(
    'a list of "COMPONENT:LEVEL" like ["daemon:debug", "stats:warning"] (components: '
    + ", ".join(LOG_COMPONENTS) + ")", _component_levels, list)


@dataclass(frozen=True)
class LogSection:
    """[log] — where every component logs, how much, and in which format."""

    level: str = setting("info", LOG_LEVEL, "Level of every component not in levels.")
    levels: tuple[str, ...] = setting(
        (), COMPONENT_LEVELS, 'Levels per component, like ["daemon:debug"].')
    destination: str = setting(
        "stderr", _choice("stderr", "syslog", "file", "journald"),
        'Where log lines go; "file" is reopened on SIGUSR1 (for logrotate).')
    file: Path | None = setting(
        None, OPTIONAL_PATH, 'With destination "file"; "" means /var/log/lmsav/lmsav.log (system '
                             'layout) or <state_dir>/log/lmsav.log (personal layout).')
    format: str = setting("text", _choice("text", "json"), "Plain lines or JSON lines.")
    syslog_facility: str = setting(
        "mail", _choice("mail", "daemon", "user", "local0", "local1", "local2", "local3",
                        "local4", "local5", "local6", "local7"),
        "The syslog facility (with destination syslog).")


def _loopback(value: Any) -> str:
    text = _text(value).strip()
    if text:
        match = LISTEN_RE.fullmatch(text)
        if not match or match.group(1).strip("[]") not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(value)
    return text


LOOPBACK = Kind('"" (off) or a loopback "HOST:PORT" like "127.0.0.1:9436" or "[::1]:9436"',
                _loopback, str)


@dataclass(frozen=True)
class MetricsSection:
    """[metrics] — Prometheus /metrics of the long-running components (loopback only)."""

    daemon: str = setting("", LOOPBACK, "Where `lmsav daemon` serves /metrics; \"\" is off.")
    watcher: str = setting(
        "", LOOPBACK, "Where `lmsav spool watch` serves /metrics; \"\" is off.")


_MILTER_LISTEN_RE = re.compile(r"unix:/\S+|inet6?:\d{1,5}(@\S+)?|inet:[^\s:]+:\d{1,5}")


def _milter_listen(value: Any) -> str:
    text = _text(value).strip()
    if text and not _MILTER_LISTEN_RE.fullmatch(text):
        raise ValueError(value)
    return text


def _optional_reinject(value: Any) -> str:
    return _reinject(value) if _text(value).strip() else ""


MILTER_LISTEN = Kind('"" (unix:<run_dir>/milter.sock), "unix:/path", "inet:PORT@HOST" or '
                     '"inet:HOST:PORT"', _milter_listen, str)
OPTIONAL_REINJECT = Kind('"" (the [spool] reinject target) or ' + REINJECT.allowed,
                         _optional_reinject, str)


@dataclass(frozen=True)
class MilterSection:
    """[milter] — `lmsav milter`, the groups' policy before the queue (Postfix, Sendmail)."""

    listen: str = setting("", MILTER_LISTEN, "Where the MTA connects.", "--listen")
    socket_mode: str = setting("0660", _TEXT, "Permissions of a unix socket (octal).")
    max_message_size: int = setting(
        100 << 20, SIZE, "Larger messages are deferred (452 4.3.4).", "--max-message-size")
    spill_size: int = setting(
        1 << 20, SIZE, "Bytes of a message kept in memory; the rest goes to a private file.",
        "--spill-size")
    timeout: float = setting(
        300.0, SECONDS, "Silence from the MTA before a connection is dropped; 0: none.",
        "--timeout")
    use_daemon: bool = setting(
        False, BOOLEAN, "Decide through the running lmsav daemon's workers.", "--daemon")
    daemon_timeout: float = setting(
        120.0, SECONDS, "Waiting for the daemon's decision.", "--daemon-timeout")
    fallback: bool = setting(
        True, BOOLEAN, "With use_daemon: decide in this process when the daemon does not "
                       "answer (else defer).", "--fallback")
    notices: str = setting(
        "", OPTIONAL_REINJECT, 'Where notices go; "" is the [spool] reinject target.',
        "--notices")


def _web_listen(value: Any) -> str:
    text = _text(value).strip()
    if not LISTEN_RE.fullmatch(text):
        raise ValueError(value)
    return text


WEB_LISTEN = Kind('"HOST:PORT" like "127.0.0.1:8343" or "[::1]:8343"', _web_listen, str)


@dataclass(frozen=True)
class WebSection:
    """[web] — `lmsav web`, the administration console."""

    listen: str = setting(
        "127.0.0.1:8343", WEB_LISTEN, "Where the console listens; keep it on loopback behind a "
                                      "reverse proxy, or give it a certificate.", "--listen")
    certificate: Path | None = setting(
        None, OPTIONAL_PATH, 'PEM certificate (chain) for HTTPS; "" is plain HTTP.',
        "--certificate")
    key: Path | None = setting(
        None, OPTIONAL_PATH, 'PEM private key of the certificate; "" is the certificate file.',
        "--key")
    trusted_proxies: int = setting(
        0, NATURAL, "Reverse proxies in front whose X-Forwarded-For/-Proto/-Host/-Prefix are "
                    "honoured; 0: none.", "--trusted-proxies")
    session_lifetime: float = setting(
        8 * 3600.0, SECONDS, "A login lasts this long without use.")
    login_attempts: int = setting(
        5, POSITIVE, "Failed logins from one address or for one account within "
                     "login_window before further tries are refused.")
    login_window: float = setting(300.0, SECONDS, "The window of login_attempts.")
    pam: bool = setting(
        False, BOOLEAN, "Also accept system accounts through PAM (service pam_service); local "
                        "accounts are tried first.")
    pam_service: str = setting("login", _TEXT, "The PAM service of PAM logins.")
    pam_admin_group: str = setting(
        "", _TEXT, 'A system group whose PAM users are admins; others are viewers. "": all '
                   "PAM users are viewers.")


# TOML section name → (Settings attribute, dataclass). The [limits] table is kept as
# ``limits_section`` because ``Settings.limits()`` hands the engine its Limits.
SECTIONS: dict[str, tuple[str, type]] = {
    "paths": ("paths", PathsSection),
    "server": ("server", ServerSection),
    "limits": ("limits_section", LimitsSection),
    "scan": ("scan", ScanSection),
    "spool": ("spool", SpoolSection),
    "daemon": ("daemon", DaemonSection),
    "qmail": ("qmail", QmailSection),
    "update": ("update", UpdateSection),
    "stats": ("stats", StatsSection),
    "snmp": ("snmp", SnmpSection),
    "log": ("log", LogSection),
    "metrics": ("metrics", MetricsSection),
    "milter": ("milter", MilterSection),
    "web": ("web", WebSection),
}


@dataclass(frozen=True)
class Spec:
    """One key of the table, as documentation and validation see it."""

    section: str
    key: str
    kind: Kind
    help: str
    option: str | None
    dc_field: dataclasses.Field

    @property
    def name(self) -> str:
        return f"{self.section}.{self.key}"

    def default(self) -> Any:
        if self.dc_field.default_factory is not dataclasses.MISSING:
            return self.dc_field.default_factory()
        return self.dc_field.default


def specs() -> Iterator[Spec]:
    """Every key of every section, in file order."""
    for section, (_attr, cls) in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield Spec(section, f.name, f.metadata["kind"], f.metadata["help"],
                       f.metadata["option"], f)


SPECS: dict[str, Spec] = {spec.name: spec for spec in specs()}


# -- settings ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Settings:
    """The effective configuration: every section validated, and the source of every value."""

    profile: str
    paths: PathsSection
    server: ServerSection
    limits_section: LimitsSection
    scan: ScanSection
    spool: SpoolSection
    daemon: DaemonSection
    qmail: QmailSection
    update: UpdateSection
    stats: StatsSection
    snmp: SnmpSection
    log: LogSection
    metrics: MetricsSection
    milter: MilterSection
    web: WebSection
    # "profile" and dotted keys → "built-in default", "profile NAME", a file path or "command line".
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    def section(self, name: str) -> Any:
        return getattr(self, SECTIONS[name][0])

    def value(self, name: str) -> Any:
        """A value by its dotted name, e.g. ``value("limits.max_scan_depth")``."""
        section, key = name.split(".", 1)
        return getattr(self.section(section), key)

    def limits(self) -> Limits:
        """The engine's Limits for these settings."""
        section = self.limits_section
        return Limits(
            max_scan_depth=section.max_scan_depth,
            max_file_size=section.max_file_size,
            max_scan_size=section.max_scan_size,
            max_files=section.max_files,
            max_scan_time=float(section.max_scan_time),
            max_compression_ratio=section.max_compression_ratio,
            limit_status=Status[section.limit_status.upper()],
        )

    def database_dir(self) -> Path:
        """The configured signature directory, or the bundled database."""
        return self.paths.database or self.paths.bases or paths_mod.bundled_database_dir()

    def host_name(self) -> str:
        """The configured host name, or the fully qualified name (lmsav.hostname)."""
        from .hostname import host_name

        return host_name(self.server.host_name)

    def daemon_socket(self) -> Path:
        return self.daemon.socket or Path(self.paths.run_dir) / "clamd.sock"

    def spool_dir(self) -> Path:
        return self.spool.dir or paths_mod.nqueue_dir(self.paths.state_dir)

    def dumped(self, spec: Spec, redact: bool = False) -> Any:
        """One value as TOML writes it; with ``redact``, a password in a URL masked."""
        value = spec.kind.dump(self.value(spec.name))
        return redact_url(value) if redact and spec.kind.secret else value

    def to_toml(self, with_sources: bool = False, redact: bool = False) -> str:
        """The settings as a TOML file that loads back to the same settings (with ``redact``,
        passwords masked)."""

        def line(name: str, key: str, value: Any) -> str:
            text = f"{key} = {_toml_value(value)}"
            if with_sources:
                text += f"  # from {self.sources.get(name, BUILT_IN)}"
            return text

        out = [line("profile", "profile", self.profile)]
        for section in SECTIONS:
            out += ["", f"[{section}]"]
            out += [line(spec.name, spec.key, self.dumped(spec, redact))
                    for spec in SPECS.values() if spec.section == section]
        return "\n".join(out) + "\n"


def profile_names() -> list[str]:
    """The shipped profiles: directories of ``lmsav/data/profiles`` holding a ``lmsav.toml``."""
    root = paths_mod.profiles_dir()
    return sorted(p.name for p in root.iterdir() if (p / "lmsav.toml").is_file())


def profile_file(name: str) -> Path:
    return paths_mod.profiles_dir() / name / "lmsav.toml"


def load_settings(
    path: Path | str | None,
    profile: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    required: bool = False,
) -> Settings:
    """Load the effective settings: built-in defaults < profile < file < ``overrides``.

    ``path`` None, or a file that does not exist (unless ``required``), means no file.
    ``profile`` (from ``--profile``) wins over a ``profile = "…"`` line in the file.
    ``overrides`` maps dotted keys (``"limits.max_file_size"``) to command-line values; they are
    validated like file values, so a size may still be a string such as ``"25M"``.
    """
    file_profile, file_values, file_source = None, {}, None
    if path is not None:
        path = Path(path)
        if path.exists():
            file_source = str(path)
            file_profile, file_values = _read_layer(_read_toml(path), file_source, True)
        elif required:
            raise ConfigError(f"{path}: no such file")

    names = profile_names()
    if profile is not None:
        if profile not in names:
            raise ConfigError(f"unknown profile '{profile}': choose {', '.join(names)}")
        chosen, profile_source = profile, COMMAND_LINE
    elif file_profile is not None:
        chosen, profile_source = file_profile, file_source
    else:
        chosen, profile_source = DEFAULT_PROFILE, BUILT_IN
    _no_profile, profile_values = _read_layer(
        _read_toml(profile_file(chosen)), str(profile_file(chosen)), False)

    values = {name: spec.default() for name, spec in SPECS.items()}
    sources = dict.fromkeys(values, BUILT_IN)
    sources["profile"] = profile_source
    layers = [
        (f"profile {chosen}", profile_values),
        (file_source, file_values),
        (COMMAND_LINE, _read_overrides(overrides or {})),
    ]
    for source, layer in layers:
        values.update(layer)
        sources.update(dict.fromkeys(layer, source))

    sections = {}
    for section, (attr, cls) in SECTIONS.items():
        prefix = section + "."
        sections[attr] = cls(**{name[len(prefix):]: value for name, value in values.items()
                                if name.startswith(prefix)})
    return Settings(profile=chosen, sources=sources, **sections)


# -- reading and validating ----------------------------------------------------------------------

def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fp:
            return tomllib.load(fp)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: invalid TOML: not UTF-8 text") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror or err}") from None


def _read_layer(data: Mapping[str, Any], where: str,
                allow_profile: bool) -> tuple[str | None, dict[str, Any]]:
    """Validate one parsed file; return its ``profile`` line and its values by dotted name."""
    profile = None
    values: dict[str, Any] = {}
    for section, table in data.items():
        if section == "profile" and allow_profile:
            names = profile_names()
            if table not in names:
                raise ConfigError(f"{where}: profile = {_show(table)}: unknown profile; choose "
                                  f"{', '.join(names)}")
            profile = table
            continue
        if section not in SECTIONS:
            raise ConfigError(f"{where}: {_unknown_top_level(section, table, allow_profile)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: {section} = {_show(table)}: expected a table [{section}]")
        for key, raw in table.items():
            name = f"{section}.{key}"
            if name not in SPECS:
                raise ConfigError(f"{where}: {_unknown_key(section, key)}")
            values[name] = _parse(SPECS[name], raw, f"{where}: {name}")
    return profile, values


def _read_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for name, raw in overrides.items():
        if raw is None:
            continue
        spec = SPECS.get(name)
        if spec is None:
            raise ConfigError(f"{COMMAND_LINE}: {_unknown_key(*name.partition('.')[::2])}")
        label = f"{spec.option}/{name}" if spec.option else name
        values[name] = _parse(spec, raw, f"{COMMAND_LINE}: {label}")
    return values


def _parse(spec: Spec, raw: Any, label: str) -> Any:
    try:
        return spec.kind.parse(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{label} = {_show(raw)}: expected {spec.kind.allowed}") from None


def _unknown_top_level(name: str, value: Any, allow_profile: bool) -> str:
    if isinstance(value, dict):
        hint = _did_you_mean(name, list(SECTIONS), "[{}]")
        known = ", ".join(f"[{s}]" for s in SECTIONS)
        return f"unknown section [{name}]; " + (hint or f"sections are {known}")
    # A key outside any section: most likely one that belongs in a section.
    candidates = {spec.key: spec.name for spec in SPECS.values()}
    if allow_profile:
        candidates["profile"] = "profile"
    close = difflib.get_close_matches(name, list(candidates), n=1)
    hint = f"did you mean {candidates[close[0]]}?" if close else "keys belong in a section"
    return f"unknown key {name}; {hint}"


def _unknown_key(section: str, key: str) -> str:
    if section not in SECTIONS:
        hint = _did_you_mean(section, list(SECTIONS), "[{}]")
        return f"unknown section [{section}]; " + (hint or "sections are " + ", ".join(
            f"[{s}]" for s in SECTIONS))
    here = [spec.key for spec in SPECS.values() if spec.section == section]
    hint = _did_you_mean(key, here, section + ".{}")
    if not hint:  # the right key in the wrong section?
        elsewhere = {spec.key: spec.name for spec in SPECS.values()}
        close = difflib.get_close_matches(key, list(elsewhere), n=1)
        hint = f"did you mean {elsewhere[close[0]]}?" if close else (
            f"keys of [{section}] are {', '.join(here)}")
    return f"unknown key {section}.{key}; {hint}"


def _did_you_mean(word: str, choices: list[str], form: str) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"did you mean {form.format(close[0])}?" if close else ""


# -- writing TOML --------------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, os.PathLike)):
        return _toml_string(os.fspath(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if hasattr(value, "isoformat"):  # TOML dates and times
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _show(value: Any) -> str:
    """A value as it would be written in the file, for error messages."""
    try:
        return _toml_value(value)
    except TypeError:
        return repr(value)
