"""Postfix integration: the content_filter transport, the reinjection listener lmsav needs.

This is the after-queue content filter of Postfix's FILTER_README. By default it is the
"advanced" one: ``content_filter = lmsav:[127.0.0.1]:10025`` in main.cf sends every message
Postfix accepts to the master.cf service ``lmsav``, Postfix's own SMTP client (``smtp``, or
``lmtp`` with ``--lmtp``), which hands it to the listener of ``lmsav spool watch`` (``[spool]
listen``); the listener stores it in the spool before it answers. With ``--pipe`` it is the
"simple" one: ``content_filter = lmsav:dummy`` and a pipe service running ``lmsav enqueue`` once
per message. Either way ``lmsav spool watch`` sends the scanned mail back over SMTP to a second
smtpd on 127.0.0.1:10026 whose ``-o content_filter=`` keeps it from going round again. Every
edit is made with postconf(1), after the two files have been copied aside.

With ``--milter`` lmsav decides before the queue instead: ``smtpd_milters`` names the socket of
``lmsav milter`` (by default inet:127.0.0.1:8894 — a loopback port works whether smtpd runs
chrooted in the queue directory, as Debian's does, or not; a unix socket would have to live
under that directory), ``milter_protocol = 6`` and ``milter_default_action = tempfail`` keep it
fail-closed, and the same reinjection smtpd takes the milter's notices back without filtering
them again. The modes exclude each other: setting up one takes the others out.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths

DEFAULT_CONFIG_DIR = Path("/etc/postfix")
DEFAULT_PORT = 10026
DEFAULT_USER = "lmsav"
SERVICE = "lmsav"
CONTENT_FILTER = f"{SERVICE}:dummy"  # transport:nexthop; the pipe ignores the next hop
# How Postfix hands mail to lmsav after the queue: its SMTP or LMTP client to the listener of
# `lmsav spool watch`, or the pipe to `lmsav enqueue`.
TRANSPORTS = ("smtp", "lmtp", "pipe")
DEFAULT_TRANSPORT = "smtp"
DEFAULT_LISTEN_PORT = 10025
FILTER_PROCESSES = 10  # master.cf maxproc of the client service, and its concurrency limit
FILTER_RECIPIENTS = 100  # recipients per delivery: the least RFC 5321 has every server take
# main.cf settings of the client service (transport_destination_…), set with it and taken out
# with it.
LIMITS = {f"{SERVICE}_destination_concurrency_limit": str(FILTER_PROCESSES),
          f"{SERVICE}_destination_recipient_limit": str(FILTER_RECIPIENTS)}
BACKUP_TAG = ".lmsav-"  # main.cf.lmsav-20260101T120000
DEFAULT_MILTER_SOCKET = "inet:127.0.0.1:8894"
# What the milter needs of Postfix, whatever other milters there are: the protocol it speaks, and
# a temporary failure whenever it cannot be asked (fail-closed).
MILTER_SETTINGS = (("milter_protocol", "6"), ("milter_default_action", "tempfail"))
MILTER_LISTS = ("smtpd_milters", "non_smtpd_milters")

# What the reinjection smtpd turns off, per FILTER_README: no second pass through lmsav, no
# recipient, header, body or milter checks the first pass already made, and only this host.
REINJECT_OPTIONS = (
    ("syslog_name", "postfix/lmsav-reinject"),
    ("content_filter", ""),
    ("smtpd_milters", ""),
    ("receive_override_options", "no_unknown_recipient_checks,no_header_body_checks,no_milters"),
    ("smtpd_helo_restrictions", ""),
    ("smtpd_client_restrictions", ""),
    ("smtpd_sender_restrictions", ""),
    ("smtpd_relay_restrictions", ""),
    ("smtpd_recipient_restrictions", "permit_mynetworks,reject"),
    ("mynetworks", "127.0.0.0/8"),
)


class SetupError(Exception):
    """The change cannot be made as asked; one line saying why and what to do."""


@dataclass(frozen=True)
class MasterEntry:
    """One master.cf service, as postconf -M reads and writes it."""

    service: str
    type: str
    fields: tuple[str, ...]  # private, unpriv, chroot, wakeup, maxproc
    command: str
    options: tuple[tuple[str, str], ...] = ()  # -o name=value
    args: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.service}/{self.type}"

    def words(self) -> list[str]:
        words = [self.service, self.type, *self.fields, self.command]
        for name, value in self.options:
            words += ["-o", f"{name}={value}"]
        return words + list(self.args)

    def line(self) -> str:
        """The entry on one line, as ``postconf -M service/type=…`` takes it."""
        return " ".join(self.words())

    def text(self) -> list[str]:
        """The entry as master.cf shows it: fields on the first line, arguments indented."""
        head = f"{self.service:<10} {self.type:<5} " + " ".join(f"{f:<7}" for f in self.fields)
        lines = [f"{head} {self.command}"]
        lines += [f"    -o {name}={value}" for name, value in self.options]
        if self.args:
            lines.append("    " + " ".join(self.args))
        return lines


def pipe_entry(lmsav: str, user: str, spool: str | None = None) -> MasterEntry:
    """The ``lmsav`` pipe service: one ``lmsav enqueue`` per message and batch of recipients.

    ``flags=q`` quotes addresses for the command line; no ``R``/``D``/``O`` flag, so the message
    reaches the spool exactly as Postfix queued it. ``null_sender=`` keeps a bounce's empty
    sender empty instead of MAILER-DAEMON.
    """
    argv = [f"argv={lmsav}", "enqueue"]
    if spool:
        argv += ["--spool", spool]
    argv += ["-f", "${sender}", "-q", "${queue_id}", "--", "${recipient}"]
    return MasterEntry(SERVICE, "unix", ("-", "n", "n", "-", "-"), "pipe",
                       args=("flags=q", "null_sender=", f"user={user}", *argv))


def client_entry(transport: str = DEFAULT_TRANSPORT) -> MasterEntry:
    """The ``lmsav`` service as FILTER_README's advanced content filter: Postfix's SMTP (or LMTP)
    client, unchrooted, at most FILTER_PROCESSES at a time.

    It passes the original client's name and address on (XFORWARD, where the listener offers
    it), sends the message as it is (no 8-bit to quoted-printable conversion, no generic
    address rewriting), never tries TLS on the loopback hop (a site-wide ``encrypt`` policy
    would otherwise stop it) and gives up connecting after 10 s (the listener is down: the
    message stays queued and is retried).
    """
    p = "lmtp" if transport == "lmtp" else "smtp"  # the client's parameter prefix
    options = ((f"{p}_send_xforward_command", "yes"),
               ("disable_mime_output_conversion", "yes"),
               (f"{p}_generic_maps", ""),
               (f"{p}_tls_security_level", "none"),
               (f"{p}_connect_timeout", "10s"))
    return MasterEntry(SERVICE, "unix", ("-", "-", "n", "-", str(FILTER_PROCESSES)), p,
                       options=options)


def filter_destination(transport: str, port: int) -> str:
    """The content_filter value: the ``lmsav`` transport and the listener it delivers to (the
    LMTP client wants the ``inet:`` of its destination syntax)."""
    if transport == "pipe":
        return CONTENT_FILTER
    inet = "inet:" if transport == "lmtp" else ""
    return f"{SERVICE}:{inet}[127.0.0.1]:{port}"


def is_lmsav_filter(value: str | None) -> bool:
    """A content_filter of lmsav's: its transport is the ``lmsav`` service, whatever next hop
    (the pipe's ``dummy``, a listener's address) an earlier setup gave it."""
    return bool(value) and value.split(":", 1)[0] == SERVICE


def reinject_entry(port: int) -> MasterEntry:
    """The smtpd on 127.0.0.1:<port> through which scanned mail and notices come back."""
    return MasterEntry(f"127.0.0.1:{port}", "inet", ("n", "-", "n", "-", "-"), "smtpd",
                       options=REINJECT_OPTIONS)


@dataclass(frozen=True)
class Item:
    """One setting to change: where, what it is now, what it should be (None: absent)."""

    file: str  # "main.cf" or "master.cf"
    key: str  # parameter name, or service/type
    current: str | None
    wanted: str | None
    current_text: tuple[str, ...] = ()  # how it reads in the file, for the listing
    wanted_text: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return _words(self.current) != _words(self.wanted)


@dataclass
class Plan:
    """What ``lmsav setup postfix`` would change in one configuration directory."""

    config_dir: Path
    items: list[Item]
    notes: list[str]
    remove: bool = False
    problems: list[str] = field(default_factory=list)  # reasons --apply refuses

    @property
    def changes(self) -> list[Item]:
        return [item for item in self.items if item.changed]

    def listing(self) -> str:
        """The changes, diff-like: ``-`` what goes, ``+`` what comes, per file."""
        verb = "remove lmsav from" if self.remove else "set up lmsav in"
        changes = self.changes
        if not changes:
            done = "has no lmsav settings" if self.remove else "is already set up for lmsav"
            out = [f"Postfix configuration {self.config_dir} {done}; nothing to change."]
        else:
            out = [f"To {verb} the Postfix configuration {self.config_dir}:"]
            for file in ("main.cf", "master.cf"):
                here = [item for item in changes if item.file == file]
                if not here:
                    continue
                out += ["", f"--- {self.config_dir / file}", f"+++ {self.config_dir / file}"]
                for item in here:
                    out += [f"-{line}" for line in item.current_text]
                    out += [f"+{line}" for line in item.wanted_text]
        out += [f"note: {note}" for note in self.notes]
        out += [f"problem: {problem}" for problem in self.problems]
        return "\n".join(out) + "\n"


class Postfix:
    """Reads and edits one Postfix configuration directory through postconf(1)."""

    def __init__(self, config_dir: Path = DEFAULT_CONFIG_DIR, postconf: str | None = None):
        self.config_dir = Path(config_dir)
        self.postconf_cmd = postconf or _find_program("postconf")
        for name in ("main.cf", "master.cf"):
            if not (self.config_dir / name).is_file():
                raise SetupError(f"{self.config_dir / name}: no such file; is this a Postfix "
                                 "configuration directory? (--config-dir)")

    def postconf(self, *args: str) -> str:
        cmd = [self.postconf_cmd, "-c", str(self.config_dir), *args]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0 or "fatal:" in proc.stderr:
            detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
            raise SetupError(f"{' '.join(cmd)}: {detail}")
        return proc.stdout

    def main_settings(self) -> dict[str, str]:
        """main.cf parameters set explicitly (postconf -n)."""
        out = {}
        for line in self.postconf("-n").splitlines():
            name, sep, value = line.partition(" = ")
            if sep:
                out[name.strip()] = value.strip()
            elif line.endswith(" ="):
                out[line[:-2].strip()] = ""
        return out

    def master_entries(self) -> dict[str, str]:
        """master.cf services by service/type, each on one line (postconf -M)."""
        out = {}
        for line in self.postconf("-M").splitlines():
            words = line.split()
            if len(words) >= 2:
                out[f"{words[0]}/{words[1]}"] = " ".join(words)
        return out

    def backup(self) -> list[Path]:
        """Timestamped copies of main.cf and master.cf beside them; returns their paths."""
        suffix = _free_suffix(self.config_dir, ("main.cf", "master.cf"))
        copies = []
        for name in ("main.cf", "master.cf"):
            target = self.config_dir / f"{name}{suffix}"
            shutil.copy2(self.config_dir / name, target)
            copies.append(target)
        return copies


def plan_setup(postfix: Postfix, lmsav: str, user: str = DEFAULT_USER,
               port: int = DEFAULT_PORT, spool: str | None = None,
               milter_socket: str = DEFAULT_MILTER_SOCKET, transport: str = DEFAULT_TRANSPORT,
               listen_port: int = DEFAULT_LISTEN_PORT) -> Plan:
    """What has to change for Postfix to hand mail to lmsav over ``transport`` (the listener on
    127.0.0.1:``listen_port``, or the pipe) and take it back on ``port``."""
    if transport not in TRANSPORTS:
        raise SetupError(f"transport {transport!r}: expected one of {', '.join(TRANSPORTS)}")
    pipe = transport == "pipe"
    if pipe:
        _check_word("lmsav path (--lmsav)", lmsav)
        _check_word("user (--user)", user)
        if spool:
            _check_word("spool directory (--spool)", spool)
    elif listen_port == port:
        raise SetupError(f"port {port} cannot be both lmsav's listener (--listen-port) and the "
                         "reinjection smtpd (--port)")
    main = postfix.main_settings()
    master = postfix.master_entries()

    current_filter = main.get("content_filter")
    if current_filter and not is_lmsav_filter(current_filter):
        raise SetupError(f"content_filter = {current_filter} is already set in "
                         f"{postfix.config_dir / 'main.cf'}: Postfix passes mail to one "
                         "after-queue filter only; remove that one first")
    wanted_filter = filter_destination(transport, listen_port)
    items = [_main_item("content_filter", current_filter, wanted_filter)]
    notes: list[str] = []
    # Scanned once: a milter lmsav set up before goes.
    items += _milter_removal(main, milter_socket, notes)
    service = pipe_entry(lmsav, user, spool) if pipe else client_entry(transport)
    items.append(_master_item(service.key, master.get(service.key), service))
    items += _limit_items(main, wanted=not pipe)
    items += _reinject_items(master, port)
    if not pipe:
        _check_listen_port(master, listen_port)

    problems = []
    if pipe:
        try:
            pwd.getpwnam(user)
        except KeyError:
            problems.append(f"user {user} does not exist; create it first, e.g. `useradd "
                            f"--system --home-dir {paths.SYSTEM_STATE_DIR} --shell "
                            f"/usr/sbin/nologin {user}`, or choose another with --user")
        if not os.access(lmsav, os.X_OK) or not Path(lmsav).is_absolute():
            problems.append(f"{lmsav} is not an executable given by its absolute path; give "
                            "the lmsav executable with --lmsav")
    return Plan(postfix.config_dir, items, notes, problems=problems)


def _check_listen_port(master: dict[str, str], port: int) -> None:
    """Postfix itself must not listen where lmsav's listener is to (an amavis-style smtpd on
    10025, say): the listener could not start, or Postfix would deliver to itself."""
    ours = _lmsav_reinject_keys(master)
    for key in master:
        if key.endswith("/inet") and key not in ours:
            service = key[: -len("/inet")]
            if service == str(port) or _port_of(service) == port:
                raise SetupError(f"master.cf service {key} listens on port {port}, where "
                                 "lmsav's listener is to listen; choose another one with "
                                 "--listen-port")


def _limit_items(main: dict[str, str], wanted: bool) -> list[Item]:
    """The client service's limits in main.cf: set (``wanted``) or taken out."""
    return [_main_item(name, main.get(name), value if wanted else None)
            for name, value in LIMITS.items() if wanted or name in main]


def plan_milter(postfix: Postfix, milter_socket: str = DEFAULT_MILTER_SOCKET,
                port: int = DEFAULT_PORT, non_smtpd: bool = False) -> Plan:
    """What has to change for Postfix to ask ``lmsav milter`` on ``milter_socket`` before the
    queue (and, with ``non_smtpd``, for mail submitted with sendmail(1) too), with the
    reinjection smtpd on ``port`` for the milter's notices."""
    check_milter_socket(milter_socket)
    main = postfix.main_settings()
    master = postfix.master_entries()
    items: list[Item] = []
    notes: list[str] = []

    # The after-queue filter of an earlier setup goes: each message is scanned once.
    if is_lmsav_filter(main.get("content_filter")):
        items.append(_main_item("content_filter", main["content_filter"], None))
    service_key = f"{SERVICE}/unix"
    if service_key in master:
        items.append(_master_item(service_key, master[service_key], None))
    items += _limit_items(main, wanted=False)
    for name in MILTER_LISTS:
        current = main.get(name)
        entries = milter_list(current or "")
        ours = [entry for entry in entries if _is_ours(entry, milter_socket)]
        if name == "smtpd_milters" or non_smtpd:
            if not ours:
                items.append(_main_item(name, current, _join(entries + [milter_socket])))
        elif ours:
            rest = [entry for entry in entries if not _is_ours(entry, milter_socket)]
            items.append(_main_item(name, current, _join(rest) or None))
    for name, wanted in MILTER_SETTINGS:
        current = main.get(name)
        if current is not None and current != wanted:
            notes.append(f"{name} was {current}: every milter of this Postfix gets {wanted}")
        items.append(_main_item(name, current, wanted))
    items += _reinject_items(master, port)
    if milter_socket.startswith("unix:"):
        notes.append(unix_socket_note(postfix, milter_socket))
    return Plan(postfix.config_dir, items, notes)


def plan_remove(postfix: Postfix, milter_socket: str = DEFAULT_MILTER_SOCKET) -> Plan:
    """What has to change to take lmsav out again: the filter or the milter, and the
    services."""
    main = postfix.main_settings()
    master = postfix.master_entries()
    items = []
    notes: list[str] = []
    current_filter = main.get("content_filter")
    if is_lmsav_filter(current_filter):
        items.append(_main_item("content_filter", current_filter, None))
    elif current_filter:
        notes.append(f"content_filter = {current_filter} is not lmsav's; left as it is")
    removal = _milter_removal(main, milter_socket, notes)
    if not removal and main.get("smtpd_milters"):
        notes.append(f"smtpd_milters = {main['smtpd_milters']} left as it is; if one of them "
                     "is lmsav's, give its socket with --milter-socket")
    items += removal
    key = f"{SERVICE}/unix"
    if key in master:
        items.append(_master_item(key, master[key], None))
    items += _limit_items(main, wanted=False)
    for key in _lmsav_reinject_keys(master):
        items.append(_master_item(key, master[key], None))
    return Plan(postfix.config_dir, items, notes, remove=True)


def milter_list(value: str) -> list[str]:
    """A smtpd_milters value as its entries: names separated by commas or blanks, and
    ``{ name, setting=value, … }`` groups kept whole."""
    entries, word, depth = [], "", 0
    for char in value:
        if char == "{":
            depth += 1
        elif char == "}":
            depth = max(depth - 1, 0)
        if depth == 0 and (char == "," or char.isspace()):
            if word:
                entries.append(word)
            word = ""
        else:
            word += char
    if word:
        entries.append(word)
    return entries


def check_milter_socket(socket: str) -> None:
    if not re.fullmatch(r"inet:(\[[0-9a-fA-F:.]+\]|[^\s,{}:\[\]]+):\d{1,5}|unix:[^\s,{}]+",
                        socket):
        raise SetupError(f"milter socket (--milter-socket) {socket!r}: expected "
                         "inet:HOST:PORT or unix:PATH, as smtpd_milters writes it")


def milter_listen(postfix: Postfix, socket: str) -> str:
    """Where ``lmsav milter --listen`` must listen for Postfix to reach ``socket``.

    A unix socket's path is looked up relative to the queue directory (smtpd and cleanup run
    there), and inside it when smtpd runs chrooted, as Debian's does."""
    kind, _, address = socket.partition(":")
    if kind == "inet":
        host, _, port = address.rpartition(":")
        return f"inet:{port}@{host.strip('[]')}"
    queue = postfix.postconf("-h", "queue_directory").strip()
    if not address.startswith("/"):
        return f"unix:{Path(queue) / address}"
    if _smtpd_chrooted(postfix):
        return f"unix:{queue.rstrip('/')}{address}"
    return f"unix:{address}"


def unix_socket_note(postfix: Postfix, socket: str) -> str:
    listen = milter_listen(postfix, socket)
    return (f"Postfix looks for {socket} at {listen[len('unix:'):]} (relative names are taken "
            "from queue_directory; a chrooted smtpd sees only that directory): the postfix "
            "account must be able to connect to it")


def _milter_removal(main: dict[str, str], milter_socket: str, notes: list[str]) -> list[Item]:
    """Our milter out of smtpd_milters and non_smtpd_milters; the protocol and default action
    too when no other milter is left that might rely on them."""
    items, others = [], False
    for name in MILTER_LISTS:
        current = main.get(name)
        entries = milter_list(current or "")
        rest = [entry for entry in entries if not _is_ours(entry, milter_socket)]
        others = others or bool(rest)
        if len(rest) != len(entries):
            items.append(_main_item(name, current, _join(rest) or None))
    if not items:
        return []
    for name, ours in MILTER_SETTINGS:
        current = main.get(name)
        if current == ours and not others:
            items.append(_main_item(name, current, None))
        elif current is not None:
            notes.append(f"{name} = {current} left as it is: other milters remain")
    return items


def _is_ours(entry: str, milter_socket: str) -> bool:
    return entry == milter_socket or milter_list(entry.strip("{}"))[:1] == [milter_socket]


def _join(entries: list[str]) -> str:
    return ", ".join(entries)


def _smtpd_chrooted(postfix: Postfix) -> bool:
    words = postfix.master_entries().get("smtp/inet", "").split()
    return len(words) > 4 and words[4] == "y"


def _reinject_items(master: dict[str, str], port: int) -> list[Item]:
    """The reinjection smtpd on ``port``, replacing one an earlier setup put on another port."""
    reinject = reinject_entry(port)
    ours = _lmsav_reinject_keys(master)
    for key, line in master.items():
        words = line.split()
        if not key.endswith("/inet") or key in ours:
            continue
        if key == reinject.key and words[7:8] != ["smtpd"]:
            raise SetupError(f"master.cf service {key} is not an smtpd; choose another port "
                             "with --port")
        service = key[: -len("/inet")]
        if key != reinject.key and (service == str(port) or _port_of(service) == port):
            raise SetupError(f"master.cf service {key} already listens on port {port}; "
                             "choose another one with --port")
    items = [_master_item(key, master[key], None) for key in ours if key != reinject.key]
    items.append(_master_item(reinject.key, master.get(reinject.key), reinject))
    return items


def apply(postfix: Postfix, plan: Plan) -> list[Path]:
    """Back up main.cf and master.cf, then make the plan's changes; returns the backups.

    Nothing is done (and nothing copied) when the configuration already is as planned.
    Services are written first and removed last, main.cf in between, so a Postfix that reloads
    meanwhile never points at a service that is not there.
    """
    changes = plan.changes
    if not changes:
        return []
    if plan.problems:
        raise SetupError(plan.problems[0])
    backups = postfix.backup()
    master_changes = [item for item in changes if item.file == "master.cf"]
    ordered = ([item for item in master_changes if item.wanted is not None]
               + [item for item in changes if item.file == "main.cf"]
               + [item for item in master_changes if item.wanted is None])
    for item in ordered:
        if item.file == "main.cf":
            if item.wanted is None:
                postfix.postconf("-X", item.key)
            else:
                postfix.postconf("-e", f"{item.key} = {item.wanted}")
        elif item.wanted is None:
            postfix.postconf("-MX", item.key)
        else:
            postfix.postconf("-M", f"{item.key}={item.wanted}")
    return backups


# -- helpers -------------------------------------------------------------------------------------

def _main_item(name: str, current: str | None, wanted: str | None) -> Item:
    return Item("main.cf", name, current, wanted,
                () if current is None else (f"{name} = {current}",),
                () if wanted is None else (f"{name} = {wanted}",))


def _master_item(key: str, current: str | None, wanted: MasterEntry | None) -> Item:
    return Item("master.cf", key, current, None if wanted is None else wanted.line(),
                () if current is None else tuple(_fold(current)),
                () if wanted is None else tuple(wanted.text()))


def _fold(line: str) -> list[str]:
    """A one-line master.cf entry (from postconf -M) shown the way the file writes it."""
    words = line.split()
    if len(words) < 8:
        return [line]
    entry = MasterEntry(words[0], words[1], tuple(words[2:7]), words[7])
    rest, options = words[8:], []
    while len(rest) >= 2 and rest[0] == "-o":
        name, _, value = rest[1].partition("=")
        options.append((name, value))
        rest = rest[2:]
    return MasterEntry(entry.service, entry.type, entry.fields, entry.command, tuple(options),
                       tuple(rest)).text()


def _lmsav_reinject_keys(master: dict[str, str]) -> list[str]:
    """Reinjection services an earlier ``lmsav setup postfix`` made (by their syslog name)."""
    tag = f"-o syslog_name={REINJECT_OPTIONS[0][1]}"
    return [key for key, line in master.items() if key.endswith("/inet") and tag in line]


def _port_of(service: str) -> int | None:
    match = re.search(r":(\d+)$", service)
    return int(match[1]) if match else None


def _words(text: str | None) -> list[str] | None:
    return None if text is None else text.split()


def _check_word(what: str, value: str) -> None:
    # master.cf splits arguments on white space; a path with a blank cannot be written there.
    if not value or re.search(r"\s", value):
        raise SetupError(f"{what} {value!r}: must be one word without white space")


def _free_suffix(directory: Path, names: tuple[str, ...]) -> str:
    """``.lmsav-<timestamp>``, with ``.N`` added if a backup of that second already exists."""
    stamp = BACKUP_TAG + time.strftime("%Y%m%dT%H%M%S")
    suffix, n = stamp, 1
    while any((directory / f"{name}{suffix}").exists() for name in names):
        suffix = f"{stamp}.{n}"
        n += 1
    return suffix


def _find_program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if not found:
        raise SetupError(f"{name} not found: is Postfix installed? (Debian: apt install postfix)")
    return found
