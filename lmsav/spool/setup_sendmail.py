"""Sendmail integration: ``lmsav milter`` as an INPUT_MAIL_FILTER, sendmail.cf rebuilt with m4.

One line goes into sendmail.mc, between marker lines (m4 ``dnl`` comments), before the mailer
definitions::

    INPUT_MAIL_FILTER(`lmsav', `S=inet:8894@127.0.0.1, F=T, T=S:4m;R:4m;E:10m')dnl

``F=T`` makes Sendmail tempfail the mail when the milter cannot be reached (fail-closed); the
timeouts leave the milter time to decide on a large message. sendmail.cf is then rebuilt from
sendmail.mc with m4: ``m4 sendmail.mc`` when the .mc includes cf.m4 itself (Debian's does),
else ``m4 -D_CF_DIR_=CFDIR/ CFDIR/m4/cf.m4 sendmail.mc``. Both files are copied aside first.
``--remove`` takes the lines out again; sendmail.cf goes back to the copy made with the
sendmail.mc it was built from, byte for byte, or is rebuilt when there is no such copy.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import write_atomic
from .milter_socket import ListenError, parse_listen
from .setup_exim import FileChange

DEFAULT_CONFIG_DIR = Path("/etc/mail")
DEFAULT_CF_DIR = Path("/usr/share/sendmail/cf")
DEFAULT_MILTER_SOCKET = "inet:8894@127.0.0.1"
FILTER_NAME = "lmsav"
FLAGS = "F=T"  # tempfail when the milter is unavailable
TIMEOUTS = "T=S:4m;R:4m;E:10m"
BACKUP_TAG = ".lmsav-"  # sendmail.mc.lmsav-20260101T120000
MC, CF = "sendmail.mc", "sendmail.cf"

# m4 comments (dnl discards up to the end of the line): no quotes, which m4 would otherwise read.
BEGIN = "dnl lmsav: begin -- added by lmsav setup sendmail; lmsav setup sendmail --remove takes it out"
END = "dnl lmsav: end"

_MAILERS_RE = re.compile(r"^\s*(MAILER_DEFINITIONS|MAILER\s*\()")
_INCLUDES_CF_RE = re.compile(r"^\s*include\s*\(\s*`[^']*\bcf\.m4'\s*\)", re.MULTILINE)
_OTHER_LMSAV_RE = re.compile(r"^\s*(INPUT_)?MAIL_FILTER\s*\(\s*`?lmsav'?\s*,", re.MULTILINE)


class SetupError(Exception):
    """The change cannot be made as asked; one line saying why and what to do."""


@dataclass
class Plan:
    """What ``lmsav setup sendmail`` would change in one configuration directory."""

    config_dir: Path
    files: list[FileChange]
    build: list[str]  # the m4 command sendmail.cf is rebuilt with ([] when restored)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # reasons --apply refuses
    remove: bool = False
    restored_from: Path | None = None  # --remove: the copy of sendmail.cf put back

    @property
    def changes(self) -> list[FileChange]:
        return [change for change in self.files if change.changed]

    def listing(self) -> str:
        what = f"Sendmail configuration {self.config_dir}"
        mc = [change for change in self.changes if change.path.name == MC]
        if not mc:
            done = "has no lmsav settings" if self.remove else "is already set up for lmsav"
            out = [f"{what} {done}; nothing to change.\n"]
        else:
            verb = "remove lmsav from" if self.remove else "set up lmsav in"
            out = [f"To {verb} the {what}:\n", "\n" + mc[0].diff()]
            if self.restored_from is not None:
                out.append(f"\n{self.config_dir / CF}: put back from {self.restored_from}\n")
            elif self.build:
                out.append(f"\n{self.config_dir / CF}: rebuilt with "
                           f"`{' '.join(self.build)} > {CF}`\n")
        out += [f"note: {note}\n" for note in self.notes]
        out += [f"problem: {problem}\n" for problem in self.problems]
        return "".join(out)


def sendmail_socket(socket: str) -> str:
    """A milter socket as Sendmail's ``S=`` writes it: ``inet:PORT@HOST``, ``inet6:PORT@HOST``
    or ``local:/path``; Postfix's ``inet:HOST:PORT`` is accepted too."""
    try:
        kind, address = parse_listen(socket)
    except ListenError as err:
        raise SetupError(f"milter socket (--milter-socket) {err}") from None
    if kind == "unix":
        return f"local:{address}"
    host, port = address
    return f"inet6:{port}@{host}" if ":" in host else f"inet:{port}@{host}"


def filter_line(socket: str = DEFAULT_MILTER_SOCKET) -> str:
    return (f"INPUT_MAIL_FILTER(`{FILTER_NAME}', `S={sendmail_socket(socket)}, {FLAGS}, "
            f"{TIMEOUTS}')dnl")


def strip_lmsav(text: str) -> str:
    """sendmail.mc without lmsav's block."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\n")
        if bare == BEGIN:
            inside = True
        elif bare == END and inside:
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise SetupError(f'a "{BEGIN[:17]}" line has no "{END}" line; fix sendmail.mc by hand')
    return "".join(out)


def add_lmsav(text: str, socket: str) -> str:
    """sendmail.mc (without lmsav's block) with the filter added before the mailers."""
    if _OTHER_LMSAV_RE.search(text):
        raise SetupError("sendmail.mc already defines a mail filter named lmsav outside "
                         "lmsav's marker lines; take it out first")
    lines = text.splitlines(keepends=True)
    at = next((i for i, line in enumerate(lines) if _MAILERS_RE.match(line)), len(lines))
    if at == len(lines) and lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"  # only when appending; --remove then leaves the newline
    block = [f"{BEGIN}\n", f"{filter_line(socket)}\n", f"{END}\n"]
    return "".join(lines[:at] + block + lines[at:])


def build_command(config_dir: Path, mc_text: str, cf_dir: Path = DEFAULT_CF_DIR,
                  m4: str | None = None) -> list[str]:
    """The m4 command that turns sendmail.mc into sendmail.cf (run in ``config_dir``)."""
    m4 = m4 or shutil.which("m4")
    if not m4:
        raise SetupError("m4 is not installed (Debian package m4); it builds sendmail.cf")
    if _INCLUDES_CF_RE.search(mc_text):
        return [m4, MC]
    cf_m4 = Path(cf_dir) / "m4" / "cf.m4"
    if not cf_m4.is_file():
        raise SetupError(f"{cf_m4}: no such file; sendmail.mc does not include cf.m4, so give "
                         "the directory of Sendmail's cf files with --cf-dir (Debian package "
                         "sendmail-cf)")
    return [m4, f"-D_CF_DIR_={str(cf_dir).rstrip('/')}/", str(cf_m4), MC]


def run_m4(config_dir: Path, command: list[str], mc_text: str) -> str:
    """sendmail.cf as ``command`` builds it from ``mc_text``. The text goes to a scratch file
    (sendmail.mc itself is not written yet); m4 runs in the configuration directory, so that
    relative includes are found there."""
    with tempfile.TemporaryDirectory(prefix="lmsav-sendmail-") as scratch:
        mc = Path(scratch) / MC
        with open(mc, "w", newline="", errors="surrogateescape") as fp:
            fp.write(mc_text)
        argv = [*command[:-1], str(mc)]
        try:
            proc = subprocess.run(argv, cwd=config_dir, capture_output=True, text=True,
                                  check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise SetupError(f"{' '.join(command)}: {err}") from None
    errors = [line for line in proc.stderr.splitlines()
              if line.strip() and "WARNING" not in line and not line.startswith("\t")]
    if proc.returncode != 0 or errors or not proc.stdout.strip():
        detail = " ".join(proc.stderr.split()) or f"exit status {proc.returncode}"
        raise SetupError(f"{' '.join(command)} in {config_dir}: {detail}")
    return proc.stdout


def plan_setup(config_dir: Path = DEFAULT_CONFIG_DIR, socket: str = DEFAULT_MILTER_SOCKET,
               cf_dir: Path = DEFAULT_CF_DIR, m4: str | None = None) -> Plan:
    mc_path, cf_path = _files(config_dir)
    old_mc = _read(mc_path)
    new_mc = add_lmsav(strip_lmsav(old_mc), socket)
    old_cf = _read(cf_path) if cf_path.exists() else None
    if new_mc == old_mc:
        return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc)], [])
    try:
        command = build_command(config_dir, new_mc, cf_dir, m4)
    except SetupError as err:
        # The change is still shown; --apply refuses until sendmail.cf can be built.
        return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc)], [], problems=[str(err)])
    new_cf = run_m4(config_dir, command, new_mc)
    notes = [(f"then restart Sendmail (or send its daemon SIGHUP) and make sure "
              f"`lmsav milter` runs, listening on {sendmail_socket(socket)}")]
    if (config_dir / "Makefile").is_file():
        notes.append(f"Debian: `make -C {config_dir}` or sendmailconfig rebuild the same "
                     "sendmail.cf and the databases beside it")
    return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc),
                             FileChange(cf_path, old_cf, new_cf)], command, notes)


def plan_remove(config_dir: Path = DEFAULT_CONFIG_DIR, cf_dir: Path = DEFAULT_CF_DIR,
                m4: str | None = None) -> Plan:
    mc_path, cf_path = _files(config_dir)
    old_mc = _read(mc_path)
    new_mc = strip_lmsav(old_mc)
    old_cf = _read(cf_path) if cf_path.exists() else None
    if new_mc == old_mc:
        return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc)], [], remove=True)
    copy = _matching_backup(config_dir, new_mc)
    if copy is not None:
        return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc),
                                 FileChange(cf_path, old_cf, _read(copy))], [], remove=True,
                    restored_from=copy)
    command = build_command(config_dir, new_mc, cf_dir, m4)
    new_cf = run_m4(config_dir, command, new_mc)
    return Plan(config_dir, [FileChange(mc_path, old_mc, new_mc),
                             FileChange(cf_path, old_cf, new_cf)], command, remove=True,
                notes=[("no copy of sendmail.cf made with this sendmail.mc was found; it "
                        "is rebuilt instead")])


def apply(plan: Plan) -> list[Path]:
    """Copy sendmail.mc and sendmail.cf aside (one timestamp for both), then write the plan's
    files; returns the copies. sendmail.cf is written last: the running Sendmail reads it only
    when restarted, and never a half-written one (each file is replaced by a rename)."""
    changes = plan.changes
    if not changes:
        return []
    if plan.problems:
        raise SetupError(plan.problems[0])
    stamp = BACKUP_TAG + time.strftime("%Y%m%dT%H%M%S")
    suffix, n = stamp, 1
    while any((change.path.with_name(change.path.name + suffix)).exists() for change in changes):
        suffix, n = f"{stamp}.{n}", n + 1
    backups = []
    for change in changes:
        if change.old is not None:
            target = change.path.with_name(change.path.name + suffix)
            shutil.copy2(change.path, target)
            backups.append(target)
    for change in sorted(changes, key=lambda change: change.path.name == CF):
        _write(change.path, change.new or "")
    return backups


# -- helpers -------------------------------------------------------------------------------------

def _files(config_dir: Path) -> tuple[Path, Path]:
    mc = Path(config_dir) / MC
    if not mc.is_file():
        raise SetupError(f"{mc}: no such file; is this a Sendmail configuration directory? "
                         "(--config-dir)")
    return mc, Path(config_dir) / CF


def _matching_backup(config_dir: Path, mc_text: str) -> Path | None:
    """The newest copy of sendmail.cf whose sendmail.mc copy (same suffix) is ``mc_text``."""
    for mc_copy in sorted(config_dir.glob(f"{MC}{BACKUP_TAG}*"), key=_stamp, reverse=True):
        cf_copy = config_dir / (CF + mc_copy.name[len(MC):])
        if cf_copy.is_file() and _read(mc_copy) == mc_text:
            return cf_copy
    return None


def _stamp(path: Path) -> tuple[str, int]:
    tail = path.name.split(BACKUP_TAG, 1)[1]
    stamp, _, n = tail.partition(".")
    return stamp, int(n) if n.isdigit() else 0


def _read(path: Path) -> str:
    try:
        with open(path, newline="", errors="surrogateescape") as fp:
            return fp.read()
    except OSError as err:
        raise SetupError(f"{path}: cannot read: {err.strerror or err}") from None


def _write(path: Path, text: str) -> None:
    # The MTA's file keeps its mode and owner.
    write_atomic(path, text.encode("utf-8", "surrogateescape"), mode=None)
