"""Exim integration: a router and a transport that hand mail to lmsav, a reinjection port.

The router ``lmsav_scan`` comes before every other router and accepts each address for lmsav's
transport: by default ``lmsav_smtp``, an smtp transport (``protocol = lmtp`` with ``--lmtp``)
to the listener of ``lmsav spool watch`` on 127.0.0.1:10025 (``[spool] listen``), which stores
each message in the spool before it answers; with ``--pipe``, the pipe transport ``lmsav_pipe``,
which runs ``lmsav enqueue`` once per message with all its recipients. ``lmsav spool watch``
sends the scanned mail back over SMTP to 127.0.0.1:10026, an extra port of the same daemon
(``daemon_smtp_ports``); the router does not take what arrives there, so the second pass goes
through the ordinary routers.

Three layouts of configuration are understood: Debian's split configuration (files under
``conf.d/``), Debian's single template (``exim4.conf.template``), both turned into the running
configuration by update-exim4.conf(8), and a plain configuration file (``exim4.conf``,
``configure``, or whatever ``-C`` names). What lmsav adds to a file is enclosed in marker
comments, and a line it replaces is kept, commented out, so ``--remove`` can put it back.
"""

from __future__ import annotations

import difflib
import enum
import os
import pwd
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from ..durable import write_atomic

DEFAULT_CONFIG_DIR = Path("/etc/exim4")
DEFAULT_PORT = 10026
DEFAULT_USER = "lmsav"
ROUTER = "lmsav_scan"
TRANSPORT = "lmsav_pipe"  # the pipe transport (--pipe)
CLIENT_TRANSPORT = "lmsav_smtp"  # the smtp transport to lmsav's listener (`setup exim`'s default)
TRANSPORTS = ("smtp", "lmtp", "pipe")
DEFAULT_LISTEN_PORT = 10025
BACKUP_TAG = ".lmsav-"  # a dot, so update-exim4.conf's run-parts ignores copies in conf.d/

BEGIN = "# lmsav: begin -- added by `lmsav setup exim`; `lmsav setup exim --remove` takes it out"
END = "# lmsav: end"
WAS = "#lmsav-was# "  # prefix of a line lmsav replaced; --remove uncomments it

# Debian's split configuration: one file per section, read in name order by update-exim4.conf.
SPLIT_ROUTER = Path("conf.d/router/050_lmsav")  # after 00_…_header (begin routers), before 100_
SPLIT_TRANSPORT = Path("conf.d/transport/30_lmsav")
# Where lmsav's transport was when it could only be the pipe: taken out by setup and removal.
OLD_SPLIT_TRANSPORT = Path("conf.d/transport/30_lmsav_pipe")
SPLIT_MAIN = Path("conf.d/main/10_lmsav_options")

_BEGIN_RE = re.compile(r"^\s*begin\s+(\w+)\s*$")
_PORTS_RE = re.compile(r"^(\s*daemon_smtp_ports\s*=\s*)(.*?)\s*$")
_INTERFACES_RE = re.compile(r"^\s*local_interfaces\s*=\s*(.*?)\s*$")


class SetupError(Exception):
    """The change cannot be made as asked; one line saying why and what to do."""


class Layout(enum.Enum):
    SPLIT = "Debian split configuration (conf.d/)"
    TEMPLATE = "Debian non-split configuration (exim4.conf.template)"
    SINGLE = "configuration file"


@dataclass(frozen=True)
class Options:
    lmsav: str
    user: str = DEFAULT_USER
    port: int = DEFAULT_PORT
    spool: str | None = None
    # The pipe unless asked: the before-queue setup (setup_exim_prequeue) builds on these
    # options, and its router sends what the ACL could not finish to the pipe. Keyword-only, so
    # a subclass's fields still follow ``spool``.
    transport: str = field(default="pipe", kw_only=True)
    listen_port: int = field(default=DEFAULT_LISTEN_PORT, kw_only=True)

    @property
    def transport_name(self) -> str:
        return TRANSPORT if self.transport == "pipe" else CLIENT_TRANSPORT


def router_lines(port: int, transport: str = TRANSPORT) -> list[str]:
    """The router: every address to lmsav, unless it came back from lmsav on 127.0.0.1:port.

    ``no_verify`` keeps it out of recipient verification at SMTP time, where it would accept
    any address; the routers after it still decide that.
    """
    return [
        ("# Every message goes through lmsav first, except what lmsav sends back to "
        f"127.0.0.1:{port}."),
        f"{ROUTER}:",
        '  debug_print = "R: lmsav_scan for $local_part@$domain"',
        "  driver = accept",
        "  condition = ${if or{{!eq{$received_port}{%d}}{!eq{$received_ip_address}{127.0.0.1}}}}"
        % port,
        "  no_verify",
        "  no_expn",
        f"  transport = {transport}",
    ]


def transport_lines(options: Options) -> list[str]:
    """lmsav's transport, as ``options.transport`` asks."""
    if options.transport == "pipe":
        return pipe_transport_lines(options)
    return client_transport_lines(options)


def client_transport_lines(options: Options) -> list[str]:
    """The smtp transport to lmsav's listener on 127.0.0.1 (LMTP with ``protocol = lmtp``).

    ``allow_localhost`` lets Exim deliver to its own host; ``hosts_override`` keeps any host a
    router might give. Exim batches the recipients of a message into one transaction, so the
    message reaches the spool once. No TLS on the loopback hop, and a listener that does not
    answer within 10 s is down: the message stays queued and is retried.
    """
    return [
        f"{CLIENT_TRANSPORT}:",
        "  driver = smtp",
        "  hosts = 127.0.0.1",
        f"  port = {options.listen_port}",
        "  hosts_override",
        "  allow_localhost",
        f"  protocol = {options.transport}",
        "  hosts_avoid_tls = *",
        "  connect_timeout = 10s",
    ]


def pipe_transport_lines(options: Options) -> list[str]:
    """The pipe transport: one ``lmsav enqueue`` per message with all its recipients.

    Exim (4.94 and later) refuses a command argument made from data the message brought, such
    as ``$sender_address``, and fails the delivery; ``$pipe_addresses`` alone is exempt. The
    sender and the queue id therefore reach lmsav through the environment Exim gives every
    pipe (``SENDER``, empty for a bounce, and ``MESSAGE_ID``), by way of a fixed ``sh -c``.
    The message goes to the spool exactly as Exim holds it: no "From " line before it, no
    newline after it, no escaping. Whatever makes lmsav fail, even a crash or a timeout, is a
    temporary error: Exim keeps the message and tries again, it never bounces it.
    """
    spool = f"--spool {options.spool} " if options.spool else ""
    script = f'exec {options.lmsav} enqueue {spool}-f "\\$SENDER" -q "\\$MESSAGE_ID" -- "\\$@"'
    return [
        f"{TRANSPORT}:",
        "  driver = pipe",
        f"  command = /bin/sh -c '{script}' lmsav $pipe_addresses",
        f"  user = {options.user}",
        "  current_directory = /",
        "  batch_max = 1000",
        "  use_bsmtp = false",
        "  message_prefix =",
        "  message_suffix =",
        "  check_string =",
        "  escape_string =",
        "  temp_errors = *",
        "  timeout_defer",
        "  log_defer_output",
        "  return_fail_output",
    ]


@dataclass(frozen=True)
class FileChange:
    """One file before and after; None means the file does not exist (or goes away)."""

    path: Path
    old: str | None
    new: str | None

    @property
    def changed(self) -> bool:
        return self.old != self.new

    def diff(self) -> str:
        old = [] if self.old is None else self.old.splitlines(keepends=True)
        new = [] if self.new is None else self.new.splitlines(keepends=True)
        lines = difflib.unified_diff(old, new, "/dev/null" if self.old is None else str(self.path),
                                     "/dev/null" if self.new is None else str(self.path))
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


@dataclass
class Plan:
    """What ``lmsav setup exim`` would change in one configuration."""

    layout: Layout
    where: Path
    files: list[FileChange]
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # reasons --apply refuses
    remove: bool = False

    @property
    def changes(self) -> list[FileChange]:
        return [change for change in self.files if change.changed]

    def listing(self) -> str:
        what = f"Exim {self.layout.value} {self.where}"
        if not self.changes:
            done = "has no lmsav settings" if self.remove else "is already set up for lmsav"
            out = [f"{what} {done}; nothing to change.\n"]
        else:
            verb = "remove lmsav from" if self.remove else "set up lmsav in"
            out = [f"To {verb} the {what}:\n"]
            out += ["\n" + change.diff() for change in self.changes]
        out += [f"note: {note}\n" for note in self.notes]
        out += [f"problem: {problem}\n" for problem in self.problems]
        return "".join(out)


# -- finding the configuration -------------------------------------------------------------------

def locate(config_dir: Path | None = None, config_file: Path | None = None) -> tuple[Layout, Path]:
    """The layout and its root: the directory (Debian layouts) or the one file."""
    if config_file is not None:
        if not Path(config_file).is_file():
            raise SetupError(f"{config_file}: no such file (--config-file)")
        return Layout.SINGLE, Path(config_file)
    directory = Path(config_dir or DEFAULT_CONFIG_DIR)
    if not directory.is_dir():
        raise SetupError(f"{directory}: no such directory; is Exim installed? (--config-dir)")
    # Debian's exim reads exim4.conf in preference to what update-exim4.conf generates.
    if (directory / "exim4.conf").is_file():
        return Layout.SINGLE, directory / "exim4.conf"
    debconf = _debian_settings(directory)
    split = debconf.get("dc_use_split_config")
    if split == "true" or (split is None and (directory / "conf.d" / "router").is_dir()):
        if not (directory / "conf.d" / "router").is_dir():
            raise SetupError(f"{directory}: dc_use_split_config is true but conf.d/ is missing")
        return Layout.SPLIT, directory
    if (directory / "exim4.conf.template").is_file():
        return Layout.TEMPLATE, directory
    if (directory / "configure").is_file():
        return Layout.SINGLE, directory / "configure"
    raise SetupError(f"{directory}: no exim4.conf, conf.d/, exim4.conf.template or configure; "
                     "give the configuration with --config-dir or --config-file")


def _debian_settings(directory: Path) -> dict[str, str]:
    """dc_* values of update-exim4.conf.conf (shell assignments), if the file is there."""
    values = {}
    try:
        text = (directory / "update-exim4.conf.conf").read_text()
    except OSError:
        return values
    for match in re.finditer(r"^(dc_\w+)=(['\"]?)(.*?)\2\s*$", text, re.MULTILINE):
        values[match[1]] = match[3]
    return values


# -- planning ------------------------------------------------------------------------------------

def plan_setup(layout: Layout, where: Path, options: Options) -> Plan:
    """The changes that make Exim hand mail to lmsav over ``options.transport`` and take it
    back on ``options.port``."""
    pipe = options.transport == "pipe"
    if options.transport not in TRANSPORTS:
        raise SetupError(f"transport {options.transport!r}: expected one of "
                         f"{', '.join(TRANSPORTS)}")
    if not pipe and options.listen_port == options.port:
        raise SetupError(f"port {options.port} cannot be both lmsav's listener (--listen-port) "
                         "and the reinjection port (--port)")
    checked = ((("lmsav path (--lmsav)", options.lmsav), ("user (--user)", options.user),
                ("spool directory (--spool)", options.spool or "-")) if pipe else ())
    for what, value in checked:
        if not value or re.search(r"[\s\"'$\\{}]", value):
            raise SetupError(f"{what} {value!r}: must be one word without white space, quotes, "
                             "$, \\ or braces")
    if layout is Layout.SPLIT:
        plan = Plan(layout, where, _split_files(where, options))
    else:
        path = where if layout is Layout.SINGLE else where / "exim4.conf.template"
        old = _read(path)
        plan = Plan(layout, where, [FileChange(path, old, add_lmsav(strip_lmsav(old), options))])
    plan.notes += _interface_notes(layout, where)
    plan.notes += _next_steps(layout, where)
    if not pipe:
        return plan  # the listener runs as lmsav's service; Exim runs nothing of lmsav's
    try:
        pwd.getpwnam(options.user)
    except KeyError:
        plan.problems.append(
            f"user {options.user} does not exist; create it first, e.g. `useradd --system "
            f"--home-dir {paths.SYSTEM_STATE_DIR} --shell /usr/sbin/nologin {options.user}`, "
            "or choose another with --user")
    if not Path(options.lmsav).is_absolute() or not os.access(options.lmsav, os.X_OK):
        plan.problems.append(f"{options.lmsav} is not an executable given by its absolute path; "
                             "give the lmsav executable with --lmsav")
    return plan


def plan_remove(layout: Layout, where: Path) -> Plan:
    """The changes that take lmsav out again and put back what it replaced."""
    if layout is Layout.SPLIT:
        files = [FileChange(where / SPLIT_ROUTER, _read_if(where / SPLIT_ROUTER), None),
                 FileChange(where / SPLIT_TRANSPORT, _read_if(where / SPLIT_TRANSPORT), None),
                 _old_transport_removal(where),
                 FileChange(where / SPLIT_MAIN, _read_if(where / SPLIT_MAIN), None)]
        for path in _main_parts(where):
            if path != where / SPLIT_MAIN:
                old = _read(path)
                files.append(FileChange(path, old, strip_lmsav(old)))
    else:
        path = where if layout is Layout.SINGLE else where / "exim4.conf.template"
        old = _read(path)
        files = [FileChange(path, old, strip_lmsav(old))]
    plan = Plan(layout, where, files, remove=True)
    if plan.changes:
        plan.notes += _next_steps(layout, where)
    return plan


def _split_files(directory: Path, options: Options) -> list[FileChange]:
    router = directory / SPLIT_ROUTER
    transport = directory / SPLIT_TRANSPORT
    files = [
        FileChange(router, _read_if(router),
                   _block(router_lines(options.port, options.transport_name)) + "\n"),
        FileChange(transport, _read_if(transport), _block(transport_lines(options)) + "\n"),
        _old_transport_removal(directory),
    ]
    # daemon_smtp_ports may be set by a file of the administrator's: extend it there, since Exim
    # refuses an option set twice; otherwise lmsav's own file sets it.
    main_file = directory / SPLIT_MAIN
    owner = None
    for path in _main_parts(directory):
        if path != main_file and _find_ports(strip_lmsav(_read(path)).splitlines()) is not None:
            owner = path
    for path in _main_parts(directory):
        if path not in (owner, main_file):
            old = _read(path)
            files.append(FileChange(path, old, strip_lmsav(old)))
    if owner is not None:
        old = _read(owner)
        files.append(FileChange(owner, old, _with_port(strip_lmsav(old), options.port, True)))
        files.append(FileChange(main_file, _read_if(main_file), None))
    else:
        files.append(FileChange(main_file, _read_if(main_file),
                                _block([f"daemon_smtp_ports = smtp : {options.port}"]) + "\n"))
    return files


def _old_transport_removal(directory: Path) -> FileChange:
    old = directory / OLD_SPLIT_TRANSPORT
    return FileChange(old, _read_if(old), None)


def _main_parts(directory: Path) -> list[Path]:
    main = directory / "conf.d" / "main"
    if not main.is_dir():
        return []
    return sorted(p for p in main.iterdir() if p.is_file() and re.fullmatch(r"[\w-]+", p.name))


# -- editing one configuration text ---------------------------------------------------------------

def strip_lmsav(text: str) -> str:
    """The text without lmsav's blocks, with the lines lmsav replaced put back."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\n")
        if bare == BEGIN:
            inside = True
        elif bare == END and inside:
            inside = False
        elif not inside:
            out.append(line.removeprefix(WAS))
    if inside:
        raise SetupError(f'a "{BEGIN[:15]}" block has no "{END}" line; fix the file by hand')
    return "".join(out)


def add_lmsav(text: str, options: Options) -> str:
    """A configuration text (without lmsav's blocks) with the router, transport and port added."""
    lines = text.splitlines()
    routers = _section_start(lines, "routers")
    transports = _section_start(lines, "transports")
    if routers is None or transports is None:
        missing = "begin routers" if routers is None else "begin transports"
        raise SetupError(f'no "{missing}" line: not a complete Exim configuration')
    # Insert from the bottom up so earlier indexes stay valid.
    inserts = sorted([(transports + 1, _block(transport_lines(options))),
                      (routers + 1, _block(router_lines(options.port, options.transport_name)))],
                     reverse=True)
    for index, block in inserts:
        lines[index:index] = block.split("\n")
    text = "\n".join(lines) + "\n"
    return _with_port(text, options.port, False)


def _with_port(text: str, port: int, whole_is_main: bool) -> str:
    """daemon_smtp_ports with ``port`` added: the existing line extended, or a new one."""
    lines = text.splitlines()
    main_end = len(lines) if whole_is_main else _first_begin(lines)
    found = _find_ports(lines[:main_end])
    if found is not None:
        index, prefix, value = found
        if lines[index].endswith("\\"):
            raise SetupError("daemon_smtp_ports is continued on the next line; add "
                             f"{port} to it by hand")
        separator = value[1] if value.startswith("<") and len(value) > 1 else ":"
        items = [item.strip() for item in (value[2:] if value.startswith("<") else value)
                 .split(separator)]
        if str(port) in items:
            return text
        new = f"{prefix.strip()} {value} {separator} {port}"
        lines[index:index + 1] = [WAS + lines[index], BEGIN, new, END]
    else:
        # At the end of the main section, before the comment banner of the first "begin".
        at = main_end
        while at > 0 and (not lines[at - 1].strip() or lines[at - 1].lstrip().startswith("#")):
            at -= 1
        lines[at:at] = [BEGIN, f"daemon_smtp_ports = smtp : {port}", END]
    return "\n".join(lines) + "\n"


def _find_ports(lines: list[str]) -> tuple[int, str, str] | None:
    for index, line in enumerate(lines):
        match = _PORTS_RE.match(line)
        if match:
            return index, match[1], match[2]
    return None


def _section_start(lines: list[str], name: str) -> int | None:
    for index, line in enumerate(lines):
        match = _BEGIN_RE.match(line)
        if match and match[1] == name:
            return index
    return None


def _first_begin(lines: list[str]) -> int:
    return next((i for i, line in enumerate(lines) if _BEGIN_RE.match(line)), len(lines))


def _block(lines: list[str]) -> str:
    # No blank lines outside the markers: --remove must give back the file byte for byte.
    return "\n".join([BEGIN, *lines, END])


# -- notes ---------------------------------------------------------------------------------------

def _interface_notes(layout: Layout, where: Path) -> list[str]:
    """Warn when Exim would not listen on 127.0.0.1, where lmsav sends mail back."""
    if layout is Layout.SINGLE:
        lines = _read(where).splitlines()
        for line in lines[:_first_begin(lines)]:
            match = _INTERFACES_RE.match(line)
            if match and "127.0.0.1" not in match[1] and "MAIN_LOCAL_INTERFACES" not in match[1]:
                return [(f"local_interfaces = {match[1]} does not include 127.0.0.1, where lmsav "
                        "sends scanned mail back; add it")]
        return []
    value = _debian_settings(where).get("dc_local_interfaces")
    if value and "127.0.0.1" not in value:
        return [(f"dc_local_interfaces='{value}' in update-exim4.conf.conf does not include "
                "127.0.0.1, where lmsav sends scanned mail back; add it")]
    return []


def _next_steps(layout: Layout, where: Path) -> list[str]:
    if layout is Layout.SINGLE:
        return [("then restart Exim so that it listens on the new port (a SIGHUP to the daemon "
                "is enough)")]
    command = "update-exim4.conf" + ("" if where == DEFAULT_CONFIG_DIR else f" -d {where}")
    return [(f"then run `{command}` and restart Exim; check that SMTPLISTENEROPTIONS in "
            "/etc/default/exim4 does not override the ports with -oX")]


# -- applying ------------------------------------------------------------------------------------

def apply(plan: Plan) -> list[Path]:
    """Copy every file about to change or go aside (timestamped), then write the plan.

    Returns the copies. Nothing is done when there is nothing to change. Each file is replaced
    by a rename, keeping its mode and owner, so Exim never reads a half-written configuration.
    """
    changes = plan.changes
    if not changes:
        return []
    if plan.problems and not plan.remove:
        raise SetupError(plan.problems[0])
    stamp = BACKUP_TAG + time.strftime("%Y%m%dT%H%M%S")
    backups = []
    for change in changes:
        if change.old is not None:
            target, n = change.path.with_name(change.path.name + stamp), 1
            while target.exists():
                target = change.path.with_name(f"{change.path.name}{stamp}.{n}")
                n += 1
            shutil.copy2(change.path, target)
            backups.append(target)
    for change in changes:
        if change.new is None:
            change.path.unlink()
        else:
            _write(change.path, change.new)
    return backups


def _write(path: Path, text: str) -> None:
    # The MTA's file keeps its mode and owner.
    write_atomic(path, text.encode("utf-8", "surrogateescape"), mode=None)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise SetupError(f"{path}: cannot read: {err.strerror or err}") from None


def _read_if(path: Path) -> str | None:
    return _read(path) if path.exists() else None
