"""`lmsav setup qmail`: put QMAILQUEUE=lmsav-qmail-queue into tcpserver's rules for qmail-smtpd.

qmail-smtpd runs under tcpserver, whose rules file (``/etc/tcp.smtp`` by convention, compiled
with ``tcprules`` into ``/etc/tcp.smtp.cdb``) sets environment variables per client. A rule is
``ADDRESS:allow`` or ``ADDRESS:deny``, optionally followed by ``,NAME="value"`` settings (any
character may quote the value); ``:allow`` alone, with an empty address, matches every client.
This module adds ``QMAILQUEUE`` (and ``LMSAV_CONFIG`` when the configuration is not the system
one) to every ``allow`` rule, appends a catch-all rule when there is none, and takes exactly
that out again with ``--remove``. Rules that already name another QMAILQUEUE are left alone
and reported: the administrator decides which filter runs.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..durable import write_atomic

DEFAULT_RULES = Path("/etc/tcp.smtp")
MARK = "# lmsav: catch-all rule added by lmsav setup qmail"
OUR_VARS = ("QMAILQUEUE", "LMSAV_CONFIG")


class SetupError(Exception):
    """The rules file cannot be read, understood or changed."""


@dataclass
class Rule:
    address: str
    action: str  # allow | deny
    settings: list[tuple[str, str, str]]  # (name, quote, value)

    def text(self) -> str:
        return f"{self.address}:{self.action}" + "".join(
            f",{name}={quote}{value}{quote}" for name, quote, value in self.settings)

    def get(self, name: str) -> str | None:
        return next((v for n, _q, v in self.settings if n == name), None)

    def put(self, name: str, value: str) -> None:
        self.settings = [s for s in self.settings if s[0] != name] + [(name, '"', value)]

    def drop(self, name: str) -> None:
        self.settings = [s for s in self.settings if s[0] != name]


def parse_rule(line: str) -> Rule | None:
    """A rule line as tcprules reads it; None for comments and blank lines."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    address, colon, rest = text.partition(":")
    if not colon:
        raise SetupError(f"{text!r}: not a rule (ADDRESS:allow or ADDRESS:deny)")
    action, _, rest = rest.partition(",")
    action = action.strip()
    if action not in ("allow", "deny"):
        raise SetupError(f"{text!r}: the instruction must be allow or deny, not {action!r}")
    settings = []
    while rest:
        name, eq, rest = rest.partition("=")
        if not eq or not rest:
            raise SetupError(f"{text!r}: expected NAME=\"value\" after the comma")
        quote, rest = rest[0], rest[1:]
        end = rest.find(quote)
        if end < 0:
            raise SetupError(f"{text!r}: the value of {name} has no closing {quote}")
        settings.append((name.strip(), quote, rest[:end]))
        rest = rest[end + 1:]
        if rest.startswith(","):
            rest = rest[1:]
        elif rest.strip():
            raise SetupError(f"{text!r}: unexpected {rest!r} after {name}")
    return Rule(address.strip(), action, settings)


@dataclass
class Plan:
    rules_file: Path
    before: list[str]
    after: list[str]
    remove: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return self.before != self.after

    def listing(self) -> str:
        verb = "remove lmsav from" if self.remove else "set up lmsav in"
        if not self.changed:
            done = "has no lmsav settings" if self.remove else "is already set up for lmsav"
            out = [f"{self.rules_file} {done}; nothing to change."]
        else:
            out = [f"To {verb} the tcpserver rules {self.rules_file}:", "",
                   f"--- {self.rules_file}", f"+++ {self.rules_file}"]
            old, new = set(self.before), set(self.after)
            out += [f"-{line}" for line in self.before if line not in new]
            out += [f"+{line}" for line in self.after if line not in old]
        out += [f"note: {note}" for note in self.notes]
        return "\n".join(out) + "\n"


def wanted_settings(wrapper: str, config_file: str | None) -> list[tuple[str, str]]:
    out = [("QMAILQUEUE", wrapper)]
    if config_file:
        out.append(("LMSAV_CONFIG", config_file))
    return out


def plan(rules_file: Path, wrapper: str, config_file: str | None, remove: bool) -> Plan:
    try:
        before = rules_file.read_text().splitlines() if rules_file.exists() else []
    except (OSError, UnicodeDecodeError) as err:
        raise SetupError(f"{rules_file}: cannot read: {getattr(err, 'strerror', None) or err}") \
            from None
    result = Plan(rules_file, before, [], remove)
    wanted = wanted_settings(wrapper, config_file)
    after: list[str] = []
    catch_all = False
    for number, line in enumerate(before, 1):
        if line.strip() == MARK:
            if not remove:
                after.append(line)
            continue  # with --remove, the mark goes (its rule goes below, if still ours)
        try:
            rule = parse_rule(line)
        except SetupError as err:
            raise SetupError(f"{rules_file}:{number}: {err}") from None
        if rule is None:
            after.append(line)
            continue
        if rule.address == "":
            catch_all = True
        ours = _is_ours(rule.get("QMAILQUEUE"), wrapper)
        if remove:
            if ours:
                for name in OUR_VARS:
                    rule.drop(name)
                if _was_added(before, number) and rule.address == "" and not rule.settings:
                    continue  # our own catch-all: gone with its mark
            after.append(rule.text() if ours else line)
            continue
        if rule.action == "deny":
            after.append(line)
            continue
        if rule.get("QMAILQUEUE") is not None and not ours:
            result.notes.append(f"{rules_file}:{number}: already runs {rule.get('QMAILQUEUE')}; "
                                "left alone")
            after.append(line)
            continue
        for name, value in wanted:
            if rule.get(name) != value:
                rule.put(name, value)
        after.append(rule.text() if ours or rule.get("QMAILQUEUE") else line)
    if not remove and not catch_all:
        after += [MARK, Rule("", "allow", [(n, '"', v) for n, v in wanted]).text()]
    result.after = after
    if not remove:
        result.notes.append("per client, add LMSAV_GROUP=\"NAME\" to a rule to use one recipient "
                            "group for its mail, or LMSAV_BYPASS=\"1\" to skip scanning")
    return result


def _is_ours(value: str | None, wrapper: str) -> bool:
    return value is not None and (value == wrapper or
                                  os.path.basename(value) == os.path.basename(wrapper))


def _was_added(lines: list[str], number: int) -> bool:
    return number >= 2 and lines[number - 2].strip() == MARK


def apply(p: Plan) -> Path | None:
    """Write the new rules (a copy of the old file kept beside it); returns the copy's path."""
    if not p.changed:
        return None
    backup = None
    if p.rules_file.exists():
        backup = p.rules_file.with_name(p.rules_file.name +
                                        time.strftime(".lmsav-%Y%m%d%H%M%S"))
        shutil.copy2(p.rules_file, backup)
    mode = stat.S_IMODE(backup.stat().st_mode) if backup is not None else 0o644
    write_atomic(p.rules_file, ("\n".join(p.after) + "\n").encode(), mode)
    return backup


def compile_rules(rules_file: Path, cdb: Path, tcprules: str | None = None) -> str | None:
    """Run tcprules when it is installed; returns the command line run, None if it is not."""
    program = tcprules or shutil.which("tcprules")
    if program is None:
        return None
    tmp = cdb.with_name(cdb.name + ".tmp")
    with open(rules_file, "rb") as fp:
        proc = subprocess.run([program, str(cdb), str(tmp)], stdin=fp, capture_output=True,
                              text=True, check=False)
    if proc.returncode != 0:
        raise SetupError(f"tcprules {cdb}: {' '.join(proc.stderr.split()) or proc.returncode}")
    return f"tcprules {cdb} {tmp} < {rules_file}"
