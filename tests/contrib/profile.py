"""contrib/apparmor/usr.bin.lmsav as apparmor_parser compiles it: the file rules with variables
and abstractions expanded, and whether they let lmsav reach a path.

No kernel is needed: ``--skip-kernel-load`` compiles without loading, and ``--debug`` prints the
rules the parser built (``Mode: <owner perms>:<other perms> Name: (<glob>)``). The globs are
matched here as AppArmor matches them: ``*`` and ``?`` within one path component, ``**``
across components, ``{a,b}`` alternatives, ``[...]`` character classes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "contrib" / "apparmor" / "usr.bin.lmsav"
# The feature set the profile declares (`abi <abi/3.0>`), shipped by the apparmor package:
# compiling against it encodes the unix, signal and ptrace rules a kernel without AppArmor
# would otherwise drop as "not enforced".
ABI_FEATURES = Path("/etc/apparmor.d/abi/3.0")

_MODE_LINE = re.compile(r"^Mode:\s*(\S*):(\S*)\s+Name:\s+\((.*)\)\s*$")


def parser() -> str | None:
    """apparmor_parser, also where an ordinary user's PATH does not look (/usr/sbin)."""
    return shutil.which("apparmor_parser") or shutil.which("apparmor_parser",
                                                           path="/usr/sbin:/sbin")


def run_parser(*options: str) -> subprocess.CompletedProcess:
    """apparmor_parser on the profile, compiling without loading and without a cache."""
    command = [parser() or "apparmor_parser", "--skip-kernel-load", "--skip-cache", *options,
               str(PROFILE)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def glob_regex(glob: str) -> re.Pattern:
    """An AppArmor path glob as a regular expression for ``fullmatch``."""
    glob = re.sub(r"/{2,}", "/", glob)  # variables expand to "/home//*": one slash to AppArmor
    out: list[str] = []
    depth = 0
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "[":
            end = glob.index("]", i + 1)
            out.append("[" + glob[i + 1:end].replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        elif c == "\\" and i + 1 < len(glob):
            out.append(re.escape(glob[i + 1]))
            i += 2
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out))


@dataclass(frozen=True)
class FileRule:
    glob: str
    owner_perms: str  # on files the process owns (an `owner` rule grants only these)
    other_perms: str  # on any file
    pattern: re.Pattern


@dataclass
class CompiledProfile:
    name: str
    capabilities: set[str]
    network: str
    rules: list[FileRule]

    def perms(self, path: str | Path, owned: bool = False) -> set[str]:
        """Every permission the rules grant on ``path`` (on a file the process owns, when
        ``owned``): AppArmor grants the union of the rules that match."""
        text = str(path)
        granted: set[str] = set()
        for rule in self.rules:
            if rule.pattern.fullmatch(text):
                granted |= set(rule.owner_perms if owned else rule.other_perms)
        return granted

    def allows(self, path: str | Path, perms: str, owned: bool = False) -> bool:
        return set(perms) <= self.perms(path, owned)


def compile_profile(include: Path | None = None) -> CompiledProfile:
    """The profile as the parser builds it, for a kernel of the profile's ABI; ``include`` is
    searched for included files (``local/usr.bin.lmsav``) before /etc/apparmor.d."""
    features = ["--features-file", str(ABI_FEATURES)] if ABI_FEATURES.is_file() else []
    extra = ["--Include", str(include)] if include is not None else []
    proc = run_parser(*features, *extra, "--debug")
    if proc.returncode != 0:
        raise AssertionError(f"apparmor_parser refused {PROFILE}:\n{proc.stderr}")
    name, capabilities, network, rules = "", set(), "", []
    for line in proc.stdout.splitlines():
        if line.startswith("Name:"):
            name = name or line.split(None, 1)[1].strip()
        elif line.startswith("Capabilities:"):
            capabilities = set(line.split()[1:])
        elif line.startswith("Network:"):
            network = line.split(None, 1)[1].strip() if " " in line.strip() else ""
        else:
            match = _MODE_LINE.match(line)
            if match:
                owner, other, glob = match.groups()
                rules.append(FileRule(glob, owner, other, glob_regex(glob)))
    if not rules:
        raise AssertionError("apparmor_parser --debug printed no file rule; its output was:\n"
                             + proc.stdout[:2000])
    return CompiledProfile(name, capabilities, network, rules)
