"""Exim before the queue: a DATA ACL applies the groups' decision at the end of DATA.

``lmsav setup exim --pre-queue`` makes the changes of ``setup_exim`` (the reinjection port, the
pipe transport ``lmsav_pipe``, the router ``lmsav_scan``) and adds:

- the ACL ``lmsav_data``: ``regex`` makes Exim write the whole message to its scan file, then
  ``${run{<lmsav> exim-acl …}}`` (mail/acl.py) asks the running daemon, and the answer is
  applied: ``deny`` with the group's reply, ``defer`` on any failure (fail-closed), headers
  removed and added (``X-AV-*``, the Subject prefix) and ``accept``; a held message is
  accepted frozen, unchanged (``control = freeze``, the reason in the main log): thawed by the
  administrator (``exim -Mt``) it is delivered as usual, or removed (``exim -Mrm``);
- where it runs: a ``require acl = lmsav_data`` line at the top of the configured DATA ACL
  (``acl_smtp_data``), or ``acl_smtp_data = lmsav_data`` when there is none;
- routers that look at what the ACL left in ``$acl_m_lmsav`` (kept with the message in Exim's
  spool, out of the client's reach): ``discard`` goes to ``:blackhole:`` (every group dropped
  it), ``done`` is delivered as usual, and anything else — a decision the ACL cannot apply (a
  cured or warned body, one message per group), mail that never met the ACL (local
  submissions) — goes through ``lmsav_pipe`` to the spool path after the queue.

Mail lmsav sends back on 127.0.0.1:<port> skips both the ACL and the router. ``--remove`` (the
``plan_remove`` here, a superset of ``setup_exim.plan_remove``) takes everything out again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from . import setup_exim
from .setup_exim import BEGIN, END, FileChange, Layout, Plan, SetupError, strip_lmsav

ACL = "lmsav_data"
DISCARD_ROUTER = "lmsav_discard"
DEFAULT_SOCKET = str(paths.SYSTEM_RUN_DIR / "clamd.sock")  # the daemon's system default
DEFAULT_TIMEOUT = 60
SPLIT_ACL = Path("conf.d/acl/35_lmsav_data")  # after 00_…_header (begin acl)
DEBIAN_DATA_ACL = "acl_check_data"

_DATA_ACL_RE = re.compile(r"^\s*acl_smtp_data\s*=\s*(.*?)\s*$")
_MACRO_RE = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s*=\s*(.*?)\s*$")
_WORD = re.compile(r"[\w./-]+")


@dataclass(frozen=True)
class Options(setup_exim.Options):
    socket: str = DEFAULT_SOCKET
    timeout: int = DEFAULT_TIMEOUT

    def base(self) -> setup_exim.Options:
        return setup_exim.Options(self.lmsav, self.user, self.port, self.spool)


# -- the text Exim reads ----------------------------------------------------------------------------

def from_lmsav(port: int) -> str:
    """Exim's conditions that hold for mail lmsav sends back (both inside an ``and``)."""
    return "{eq{$received_port}{%s}}{eq{$received_ip_address}{127.0.0.1}}".replace("%s",
                                                                                 str(port))


def acl_lines(options: Options) -> list[str]:
    port = options.port
    command = (f"{options.lmsav} exim-acl --socket {options.socket} --timeout {options.timeout} "
               f"--reinject 127.0.0.1:{port} "
               "$spool_directory/scan/$message_exim_id/$message_exim_id.eml")
    answer = "$acl_m_lmsav_answer"

    def field(n: int) -> str:
        return "${extract{" + str(n) + "}{\\n}{" + answer + "}}"

    def when(action: str) -> str:
        return "condition = ${if eq{FIELD}{ACTION}}".replace("FIELD", field(1)).replace(
            "ACTION", action)

    return [
        "# The groups' decision at the end of DATA, by the running lmsav daemon (lmsav-setup(8)).",
        f"{ACL}:",
        "  accept  condition = ${if and{FROM}}".replace("FROM", from_lmsav(port)),
        "  warn    regex = ^",
        ("  warn    set acl_m_lmsav_answer = ${run{COMMAND}{$value}"
         "{defer\\n451 4.3.0 Anti-virus check failed, try again later\\n-}}").replace(
             "COMMAND", command),
        f"  defer   {when('defer')}",
        f"          message = {field(2)}",
        f"  deny    {when('reject')}",
        f"          message = {field(2)}",
        f"  accept  {when('discard')}",
        "          set acl_m_lmsav = discard",
        f"  accept  {when('hold')}",
        "          control = freeze/no_tell",
        f"          logwrite = lmsav: {field(2)}",
        "          set acl_m_lmsav = done",
        f"  accept  {when('spool')}",
        "          set acl_m_lmsav = spool",
        f"  accept  {when('accept')}",
        "          remove_header = ${if eq{FIELD}{-}{}{FIELD}}".replace("FIELD", field(3)),
        "          add_header = ${sg{ANSWER}{\\N^(?:[^\\n]*\\n){3}\\N}{}}".replace("ANSWER", answer),
        "          set acl_m_lmsav = done",
        "  defer   message = 451 4.3.0 Anti-virus check gave no decision, try again later",
    ]


def router_lines(port: int) -> list[str]:
    """What the ACL could not finish goes to lmsav after the queue; dropped mail nowhere."""
    return [
        "# What every group dropped at the end of DATA goes nowhere.",
        f"{DISCARD_ROUTER}:",
        "  driver = redirect",
        "  condition = ${if eq{$acl_m_lmsav}{discard}}",
        "  data = :blackhole:",
        "  no_verify",
        "  no_expn",
        ("# Mail the DATA ACL did not finish goes through lmsav after the queue, except what "
         f"lmsav sends back to 127.0.0.1:{port}."),
        f"{setup_exim.ROUTER}:",
        '  debug_print = "R: lmsav_scan for $local_part@$domain"',
        "  driver = accept",
        "  condition = ${if and{{!eq{$acl_m_lmsav}{done}}{!and{FROM}}}}".replace(
            "FROM", from_lmsav(port)),
        "  no_verify",
        "  no_expn",
        f"  transport = {setup_exim.TRANSPORT}",
    ]


# -- planning -----------------------------------------------------------------------------------

def plan_setup(layout: Layout, where: Path, options: Options) -> Plan:
    for what, value in (("daemon socket (--socket)", options.socket),):
        if not value.startswith("/") or not _WORD.fullmatch(value):
            raise SetupError(f"{what} {value!r}: must be an absolute path without white space, "
                             "quotes, $, \\ or braces")
    if options.timeout <= 0:
        raise SetupError(f"timeout (--timeout) {options.timeout}: must be positive")
    plan = setup_exim.plan_setup(layout, where, options.base())
    if layout is Layout.SPLIT:
        plan.files = _split_files(where, plan.files, options)
    else:
        [change] = plan.files
        plan.files = [FileChange(change.path, change.old, add_prequeue(change.new, options))]
    plan.notes.insert(0, f"the DATA ACL asks the lmsav daemon at {options.socket}: the Exim user "
                         "must be able to connect ([daemon] socket_mode, socket_group)")
    return plan


def plan_remove(layout: Layout, where: Path) -> Plan:
    """setup_exim's removal plus the ACL's own file and lines (Debian's split layout)."""
    plan = setup_exim.plan_remove(layout, where)
    extra = _acl_removal(layout, where)
    plan.files += extra
    if any(c.changed for c in extra) and not plan.notes:
        plan.notes += setup_exim._next_steps(layout, where)
    return plan


def plan_after_queue(layout: Layout, where: Path, options: setup_exim.Options) -> Plan:
    """``setup_exim.plan_setup``, and the ACL taken out if it was there: switching back from
    ``--pre-queue`` (the single-file layouts lose it anyway, with every block of lmsav's)."""
    plan = setup_exim.plan_setup(layout, where, options)
    plan.files += _acl_removal(layout, where)
    return plan


def _acl_removal(layout: Layout, where: Path) -> list[FileChange]:
    if layout is not Layout.SPLIT:
        return []
    acl_file = where / SPLIT_ACL
    extra = [FileChange(acl_file, _read_if(acl_file), None)]
    extra += [FileChange(p, _read(p), strip_lmsav(_read(p))) for p in _acl_parts(where)
              if p != acl_file]
    return extra


def add_prequeue(text: str, options: Options) -> str:
    """A configuration already given setup_exim's blocks, turned into the before-queue one."""
    old_router = setup_exim._block(setup_exim.router_lines(options.port))
    if old_router not in text:
        raise SetupError("lmsav's router block is missing; run without --pre-queue first")
    text = text.replace(old_router, setup_exim._block(router_lines(options.port)))
    lines = text.splitlines()
    main_end = setup_exim._first_begin(lines)
    name = _data_acl_name(lines[:main_end])
    acl_start = setup_exim._section_start(lines, "acl")
    if name is not None:
        label = _label_index(lines, name, acl_start)
        if label is None:
            raise SetupError(f"acl_smtp_data names {name}, which is not an ACL of this file; "
                             f"add `require acl = {ACL}` at its top by hand")
        lines[label + 1:label + 1] = setup_exim._block([f"  require acl = {ACL}"]).split("\n")
    acl_block = setup_exim._block(acl_lines(options)).split("\n")
    if acl_start is None:
        routers = setup_exim._section_start(lines, "routers")
        lines[routers:routers] = ["begin acl", *acl_block]
    else:
        lines[acl_start + 1:acl_start + 1] = acl_block
    if name is None:
        at = setup_exim._first_begin(lines)
        # Before the comment banner of the first "begin", after any block of lmsav's.
        while at > 0 and lines[at - 1] != END and (not lines[at - 1].strip()
                                                   or lines[at - 1].lstrip().startswith("#")):
            at -= 1
        lines[at:at] = [BEGIN, f"acl_smtp_data = {ACL}", END]
    return "\n".join(lines) + "\n"


def _data_acl_name(main: list[str]) -> str | None:
    """The ACL acl_smtp_data names (through one macro, as Debian's configuration does)."""
    macros = {}
    value = None
    for line in main:
        match = _DATA_ACL_RE.match(line)
        if match:
            value = match[1]
            continue
        match = _MACRO_RE.match(line)
        if match:
            macros.setdefault(match[1], match[2])
    if value is None:
        return None
    value = macros.get(value, value)
    if not re.fullmatch(r"\w+", value):
        raise SetupError(f"acl_smtp_data = {value}: not the name of an ACL; add "
                         f"`require acl = {ACL}` at the top of the DATA ACL by hand")
    return value


def _label_index(lines: list[str], name: str, start: int | None) -> int | None:
    if start is None:
        return None
    for index in range(start + 1, len(lines)):
        if setup_exim._BEGIN_RE.match(lines[index]):
            return None
        if lines[index].strip() == f"{name}:":
            return index
    return None


def _split_files(directory: Path, files: list[FileChange], options: Options) -> list[FileChange]:
    router = directory / setup_exim.SPLIT_ROUTER
    out = []
    for change in files:
        if change.path == router:
            change = FileChange(router, change.old,
                                setup_exim._block(router_lines(options.port)) + "\n")
        out.append(change)
    acl_file = directory / SPLIT_ACL
    if not (directory / "conf.d" / "acl").is_dir():
        raise SetupError(f"{directory}/conf.d/acl: missing; this split configuration has no ACLs")
    out.append(FileChange(acl_file, _read_if(acl_file),
                          setup_exim._block(acl_lines(options)) + "\n"))
    name = _split_data_acl_name(directory)
    holder = None
    for path in _acl_parts(directory):
        if path == acl_file:
            continue
        old = _read(path)
        new = strip_lmsav(old)
        lines = new.splitlines()
        at = _label_index(["begin acl", *lines], name, 0)
        if at is not None:
            holder = path
            lines[at:at] = setup_exim._block([f"  require acl = {ACL}"]).split("\n")
            new = "\n".join(lines) + "\n"
        out.append(FileChange(path, old, new))
    if holder is None:
        raise SetupError(f"no file of conf.d/acl/ defines {name}:, the DATA ACL; add "
                         f"`require acl = {ACL}` at its top by hand")
    return out


def _split_data_acl_name(directory: Path) -> str:
    main = []
    for path in setup_exim._main_parts(directory):
        main += strip_lmsav(_read(path)).splitlines()
    return _data_acl_name(main) or DEBIAN_DATA_ACL


def _acl_parts(directory: Path) -> list[Path]:
    acl = directory / "conf.d" / "acl"
    if not acl.is_dir():
        return []
    return sorted(p for p in acl.iterdir() if p.is_file() and re.fullmatch(r"[\w-]+", p.name))


def _read(path: Path) -> str:
    return setup_exim._read(path)


def _read_if(path: Path) -> str | None:
    return setup_exim._read_if(path)
