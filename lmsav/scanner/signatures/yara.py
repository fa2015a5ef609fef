"""YARA rules (.yar/.yara) compiled once with yara-x and loaded from the serialized form.

Rule sets are used as administrators bring them (LOKI's and THOR's among them):

- Every rule sees five external variables describing the scanned object (``VARIABLES``); a rule
  set that never names one costs nothing per object.
- A file that does not compile is left out whole and reported with its error; the others load.
- ``include`` is resolved relative to the including file and never leaves the database
  directory.
- A rule needing a module yara-x lacks is left out and reported; the rest of its file loads.
"""

from __future__ import annotations

import io
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yara_x

from .errors import SignatureError

# ClamAV reports YARA hits as "YARA.<rule>"; keeping that makes logs and ignore lists portable.
NAME_PREFIX = "YARA."

# The external variables LOKI and THOR define, each declared "" so rules naming them compile.
VARIABLES = ("filename", "filepath", "extension", "filetype", "owner")

MAX_INCLUDE_DEPTH = 16

_INCLUDE = re.compile(r'^[ \t]*include[ \t]+"((?:[^"\\\n]|\\.)*)"[ \t]*(?://.*)?$', re.MULTILINE)
_IMPORT = re.compile(r'^[ \t]*import[ \t]+"(\w+)"', re.MULTILINE)
# Comments and string literals, removed before looking for variable names.
_NOISE = re.compile(r'//[^\n]*|/\*.*?\*/|"(?:[^"\\\n]|\\.)*"', re.DOTALL)
_VARIABLE = re.compile(r"(?<![\w$#@!.])(" + "|".join(VARIABLES) + r")(?!\w)")


@dataclass
class Compiled:
    blob: bytes = b""  # the serialized rules ("" for none)
    count: int = 0
    variables: tuple[str, ...] = ()  # the external variables some loaded rule names
    skipped_files: list[str] = field(default_factory=list)  # "file: reason"
    skipped_rules: list[str] = field(default_factory=list)  # "file:line: rule: reason"


def compile_rules(sources: list[tuple[str, str]]) -> bytes:
    """The serialized rules of ``(file name, rule text)`` pairs ("" if none), files failing
    to compile left out."""
    return compile_set(sources).blob


def compile_set(sources: list[tuple[str, str]], directory: Path | None = None) -> Compiled:
    """Compile ``(file name, rule text)`` pairs into one serialized rule set.

    ``directory`` is where the files are (``include`` is resolved there); a file that fails is
    left out and listed in ``skipped_files``."""
    out = Compiled()
    if not sources:
        return out
    texts: list[tuple[str, str]] = []
    for source, text in sources:
        try:
            texts.append((source, expand_includes(text, source, directory)))
        except SignatureError as err:
            where = f"line {err.line}" if err.file == source else f"{err.file}:{err.line}"
            out.skipped_files.append(f"{source}: {where}: {err.message}")
    failed = _compile(texts, out)
    while failed:
        # yara-x keeps the good rules of a file with a bad one; a file is kept or left out
        # whole, so the rest is compiled again without it (each round drops one file or more).
        texts = [(s, t) for s, t in texts if s not in failed]
        failed = _compile(texts, out)
    out.variables = tuple(v for v in VARIABLES if any(v in used_variables(t) for _, t in texts))
    return out


def _compile(texts: list[tuple[str, str]], out: Compiled) -> dict[str, str]:
    """One compiler over ``texts``; fills ``out`` and returns {file: error} for those failing."""
    compiler = yara_x.Compiler(relaxed_re_syntax=True, includes_enabled=False)
    for name in VARIABLES:
        compiler.define_global(name, "")
    available = set(yara_x.module_names())
    ignored: set[str] = set()
    failed: dict[str, str] = {}
    for source, text in texts:
        for module in set(_IMPORT.findall(text)) - available - ignored:
            compiler.ignore_module(module)  # its rules are left out, the file's others load
            ignored.add(module)
        # One namespace per file, so two files may both define a rule called "test".
        compiler.new_namespace(source)
        try:
            compiler.add_source(text, origin=source)
        except yara_x.CompileError as err:
            failed[source] = _first_error(str(err))
    if failed:
        out.skipped_files += [f"{s}: {e}" for s, e in failed.items()]
        return failed
    out.skipped_rules = _rules_left_out(compiler.warnings())
    rules = compiler.build()
    buf = io.BytesIO()
    rules.serialize_into(buf)
    out.count = sum(1 for _ in rules)
    out.blob = buf.getvalue() if out.count else b""
    return failed


def _first_error(message: str) -> str:
    """``line N: what`` from yara-x's report (the file is named by the caller)."""
    lines = message.strip().splitlines()
    title = lines[0] if lines else "error"
    line = _error_line(message)
    return f"line {line}: {title}" if line else title


def _rules_left_out(warnings) -> list[str]:
    out = []
    for w in warnings:
        if w.get("type") != "IgnoredModule":
            continue
        for footer in w.get("footers", ()):
            found = re.search(r"the whole rule `([^`]+)` will be ignored", footer.get("text", ""))
            if found:
                origin = next((lab.get("code_origin") for lab in w.get("labels", ())), "")
                module = re.search(r"module `([^`]+)`", w.get("title", ""))
                what = module.group(1) if module else "?"
                out.append(f"{origin}:{w.get('line', 0)}: {found.group(1)}: needs module "
                           f"'{what}', which this YARA engine does not have")
    return out


def _error_line(message: str) -> int:
    # yara-x errors carry "--> origin:LINE:COL"; the line is what an admin needs.
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("-->"):
            parts = line.split(":")
            if len(parts) >= 3 and parts[-2].isdigit():
                return int(parts[-2])
    return 0


def expand_includes(text: str, source: str, directory: Path | None, depth: int = 0,
                    seen: tuple[str, ...] = ()) -> str:
    """``text`` with each ``include "x"`` replaced by that file, found relative to the including
    file and only inside ``directory``. Raises SignatureError naming the refused include."""
    if "include" not in text:
        return text

    def one(match: re.Match) -> str:
        target = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        if directory is None:
            raise SignatureError(source, line, f'include "{target}": no database directory '
                                               f"to resolve it in")
        root = os.path.realpath(directory)
        here = os.path.dirname(os.path.join(root, source))
        path = os.path.realpath(os.path.join(here, target))
        if os.path.commonpath([root, path]) != root:
            raise SignatureError(source, line, f'include "{target}" refused: it leads outside '
                                               f"the database directory")
        if path in seen or depth >= MAX_INCLUDE_DEPTH:
            raise SignatureError(source, line, f'include "{target}" refused: includes loop or '
                                               f"nest deeper than {MAX_INCLUDE_DEPTH}")
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                included = fh.read()
        except OSError as err:
            raise SignatureError(source, line, f'include "{target}": {err.strerror}') from None
        name = os.path.relpath(path, root)
        return expand_includes(included, name, directory, depth + 1, seen + (path,))

    return _INCLUDE.sub(one, text)


def used_variables(text: str) -> set[str]:
    """The external variables ``text`` names outside comments and strings (a superset: a rule
    string named like a variable is told apart, a meta key is not)."""
    if not _VARIABLE.search(text):
        return set()
    return set(_VARIABLE.findall(_NOISE.sub(" ", text)))


# -- per-object facts ----------------------------------------------------------------------------

_OWNERS: dict[int, str] = {}


def owner_of(path: str | None) -> str:
    """The user name owning ``path`` (its uid as text when unnamed), "" when unknown."""
    if not path:
        return ""
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    name = _OWNERS.get(uid)
    if name is None:
        import pwd

        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        _OWNERS[uid] = name
    return name


def object_facts(name: str, member_name: str, ftype: str, origin: str | None) -> dict[str, str]:
    """The external variables of one object.

    ``name`` is lmsav's path of the object (``/srv/a.zip//dir/b.exe`` for a member), and
    ``member_name`` what its container records (may be ""). ``filename`` is the last part,
    ``filepath`` everything before it — for a member, the path through its containers.
    ``origin`` is the file on disk the object came from (its owner is every member's)."""
    sep = name.rfind("//")
    if sep < 0:
        filepath, _, filename = name.rpartition("/")
    else:
        in_path = name[sep + 2:]  # the member as lmsav names it ("2:a.zip" for a mail part)
        leaf = member_name or in_path
        cut = max(leaf.rfind("/"), leaf.rfind("\\"))
        filename = leaf[cut + 1:]
        rest = len(in_path) - len(filename)
        filepath = name[:sep]
        if filename and in_path.endswith(filename) and (rest == 0 or in_path[rest - 1] in "/\\"):
            inside = in_path[:rest].rstrip("/\\")  # directories inside the container
            if inside:
                filepath += "//" + inside
    dot = filename.rfind(".")
    return {
        "filename": filename,
        "filepath": filepath,
        "extension": filename[dot:].lower() if dot > 0 else "",
        "filetype": ftype,
        "owner": "",  # filled only when a rule names it: it costs a stat
        "_origin": origin or "",
    }


class YaraMatcher:
    """Runs the rule set over data.

    A yara-x scanner may only be used and freed by the thread that made it, so each thread that
    scans gets its own, lazily, in thread-local storage: Python frees it on that thread when
    the thread ends (a worker after fork: its only thread keeps one). A thread done with the
    matcher before it ends calls ``release()`` so the matcher can then be handed to, and freed
    by, any thread (the daemon self-tests a new database on its reload thread)."""

    def __init__(self, blob: bytes, variables: tuple[str, ...] = ()):
        self._rules = yara_x.Rules.deserialize_from(io.BytesIO(blob))
        self._local = threading.local()
        self.count = sum(1 for _ in self._rules)
        self.variables = tuple(v for v in VARIABLES if v in variables)

    def _scanner(self):
        scanner = getattr(self._local, "scanner", None)
        if scanner is None:
            scanner = self._local.scanner = yara_x.Scanner(self._rules)
            scanner.console_log(_drop)  # rules' console.log() output is not lmsav's to print
        return scanner

    def match(self, data, facts: dict[str, str] | None = None) -> list[tuple[str, str]]:
        if not isinstance(data, bytes):
            data = bytes(data)  # yara-x takes bytes only, not an mmap
        scanner = self._scanner()
        if self.variables:
            facts = facts or {}
            for name in self.variables:
                value = facts.get(name, "")
                if name == "owner" and not value:
                    value = owner_of(facts.get("_origin"))
                scanner.set_global(name, value)
        results = scanner.scan(data)
        return [(NAME_PREFIX + r.identifier, r.namespace) for r in results.matching_rules]

    def release(self) -> None:
        """Free this thread's scanner (a no-op when it has none)."""
        self._local.__dict__.pop("scanner", None)


def _drop(message: str) -> None:
    pass
