"""Owners and modes of the directories the mail path shares: the table, creating, checking.

Every process of the mail path uses these directories: the MTA's pipe user (``lmsav enqueue``
writes ``nqueue/tmp`` and ``nqueue/new``), the spool watcher and the daemon (root, or the service
user) and qmail's users when the wrapper scans in-process (statistics, backups, the compiled
database). So each belongs to the owner of ``owner()`` — the service user and its primary group
in the system layout — with mode 2770: the owner and the group write, and the set-group-id bit
keeps the group on whatever is created inside. A participant that is not the service user is a
member of its group (``usermod -a -G lmsav qmaild``).
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .. import paths
from .nqueue import DIR_MODE, SUBDIRS

DELIVERED_DIR = "delivered"


@dataclass(frozen=True)
class Owner:
    """Who the shared directories belong to; ``uid``/``gid`` None while the account is missing."""

    user: str
    group: str
    uid: int | None
    gid: int | None

    @property
    def spec(self) -> str:
        return f"{self.user}:{self.group}"


@dataclass
class Finding:
    """One directory as it is, and the commands that make it as it should be."""

    path: Path
    problem: str = ""  # "" when the directory is as it should be
    fixes: list[str] = field(default_factory=list)


def owner(settings) -> Owner:
    """The service user (``[daemon] user``, else ``lmsav``) and its primary group in the system
    layout; the person running lmsav in the personal layout."""
    if paths.layout() == paths.PERSONAL:
        account = pwd.getpwuid(os.geteuid())
    else:
        name = settings.daemon.user or paths.SERVICE_USER
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            # `useradd --user-group` makes a group of the same name: the fix commands use it.
            return Owner(name, name, None, None)
    try:
        group = grp.getgrgid(account.pw_gid).gr_name
    except KeyError:
        group = str(account.pw_gid)
    return Owner(account.pw_name, group, account.pw_uid, account.pw_gid)


def shared_dirs(settings) -> list[Path]:
    """The directories, parents before children."""
    state = Path(settings.paths.state_dir)
    spool = Path(settings.spool_dir())
    dirs = [state, spool, *(spool / sub for sub in SUBDIRS), spool / DELIVERED_DIR,
            paths.stats_dir(state), paths.backup_dir(state), paths.cache_dir()]
    seen, out = set(), []
    for path in dirs:
        if path not in seen:
            seen.add(path)
            out.append(path)
    return out


def prepare(settings, who: Owner) -> tuple[list[Path], list[str]]:
    """Create the missing shared directories with their owner and mode (as root); existing ones
    are left as they are (``check`` reports them). Returns the directories created and, for
    those that could not be, why: the caller decides whether that stops it (the spool does)."""
    created, failed = [], []
    for path in shared_dirs(settings):
        if path.exists():
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.mkdir(path, DIR_MODE)
            except FileExistsError:
                continue  # another process made it meanwhile
            if who.uid is not None and os.geteuid() == 0:
                os.chown(path, who.uid, who.gid)
            os.chmod(path, DIR_MODE)  # after chown, and explicitly: mkdir ignores set-group-id
        except OSError as err:
            failed.append(f"cannot create {path}: {err.strerror or err}")
            continue
        created.append(path)
    return created, failed


def check(settings, who: Owner, pipe_user: str | None = None) -> list[Finding]:
    """Every shared directory as found, with the fix for each one that is not as it should be;
    then whether ``pipe_user`` (the account that runs ``lmsav enqueue``) can write the spool."""
    mode = f"{DIR_MODE:04o}"
    findings = []
    if who.uid is None:
        useradd = (f"useradd --system --user-group --home-dir {paths.SYSTEM_STATE_DIR} "
                   f"--shell /usr/sbin/nologin {shlex.quote(who.user)}")
        findings.append(Finding(Path("/etc/passwd"), f"the service user {who.user} does not exist",
                                [useradd]))
    dirs = shared_dirs(settings)
    for path in _ancestors_to_cross(dirs):
        findings.extend(_crossable(path, who))
    for path in dirs:
        quoted = shlex.quote(str(path))
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            install = (f"install -d -o {shlex.quote(who.user)} -g {shlex.quote(who.group)} "
                       f"-m {mode} {quoted}")
            findings.append(Finding(path, "missing", [install]))
            continue
        except OSError as err:
            findings.append(Finding(path, f"cannot be examined: {err.strerror}"))
            continue
        if not stat.S_ISDIR(st.st_mode):
            findings.append(Finding(path, "is not a directory (move it away, then run "
                                          "`lmsav spool check` again)"))
            continue
        problems, fixes = [], []
        if (st.st_uid, st.st_gid) != (who.uid, who.gid):
            problems.append(f"owner {_name(st.st_uid, pwd.getpwuid)}:"
                            f"{_name(st.st_gid, grp.getgrgid)}, wanted {who.spec}")
            fixes.append(f"chown {shlex.quote(who.spec)} {quoted}")
        if stat.S_IMODE(st.st_mode) != DIR_MODE:
            problems.append(f"mode {stat.S_IMODE(st.st_mode):04o}, wanted {mode}")
            fixes.append(f"chmod {mode} {quoted}")
        findings.append(Finding(path, "; ".join(problems), fixes))
    if pipe_user:
        findings.extend(_pipe_user(pipe_user, who, Path(settings.spool_dir())))
    return findings


def _ancestors_to_cross(dirs: list[Path]) -> list[Path]:
    """The existing parents of the shared directories that are not shared directories."""
    own = set(dirs)
    out: list[Path] = []
    for path in dirs:
        for parent in reversed(path.parents):
            if parent not in own and parent not in out and parent.exists():
                out.append(parent)
    return out


def _crossable(path: Path, who: Owner) -> list[Finding]:
    """A parent the service user must be able to enter (search permission)."""
    if who.uid is None:
        return []
    try:
        st = os.stat(path)
    except OSError:
        return []
    if st.st_uid == who.uid:
        bit, fix = stat.S_IXUSR, "u+x"
    elif st.st_gid in _groups_of(who.user, who.gid):
        bit, fix = stat.S_IXGRP, "g+x"
    else:
        bit, fix = stat.S_IXOTH, "o+x"
    if st.st_mode & bit:
        return []
    return [Finding(path, f"{who.user} cannot enter it (mode {stat.S_IMODE(st.st_mode):04o})",
                    [f"chmod {fix} {shlex.quote(str(path))}"])]


def _pipe_user(name: str, who: Owner, spool: Path) -> list[Finding]:
    """The MTA's pipe user writes the spool as its owner or as a member of the owner's group."""
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return [Finding(spool, f"the pipe user {name} does not exist")]
    if account.pw_uid in (0, who.uid) or (
            who.gid is not None and who.gid in _groups_of(name, account.pw_gid)):
        return []
    return [Finding(spool, f"{name}, which runs `lmsav enqueue`, is neither {who.user} nor in "
                           f"group {who.group}",
                    [f"usermod -a -G {shlex.quote(who.group)} {shlex.quote(name)}"])]


def _groups_of(user: str, primary: int | None) -> set[int]:
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    if primary is not None:
        groups.add(primary)
    return groups


def _name(number: int, lookup) -> str:
    try:
        return lookup(number)[0]
    except KeyError:
        return str(number)
