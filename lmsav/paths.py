"""Default locations in one place, and the one rule that picks between the two layouts.

The system layout is ``/etc/lmsav``, ``/var/lib/lmsav``, ``/var/cache/lmsav`` and ``/run/lmsav``;
the personal layout is the XDG base directories of the user. ``layout()`` decides, in order:

1. root: system;
2. a process an MTA started (``lmsav enqueue`` and ``lmsav-qmail-queue`` say so with
   ``mark_started_by_mta()``) with no terminal on descriptors 0, 1 and 2: system, whatever its
   user and HOME (tcpserver keeps HOME=/root for qmaild);
3. a uid without a passwd entry, or a system account: a uid outside UID_MIN..UID_MAX of
   /etc/login.defs (``useradd --system`` allocates below UID_MIN; nobody is above UID_MAX) or a
   login shell of nologin or false: system;
4. the service user, named by ``[daemon] user`` in the configuration file ($LMSAV_CONFIG, else
   /etc/lmsav/lmsav.toml), else ``lmsav``: system;
5. anyone else, an ordinary user (at a terminal, or in their own cron jobs): personal.

``--config`` and $LMSAV_CONFIG choose the configuration file in either layout. In the personal
layout $HOME and the XDG variables are used only when they do not point into another user's
directory (sudo and su may keep them), so no process writes into another user's home.

Every function takes the environment and the effective user id as optional arguments so a test
can ask "where would this user look?" without being that user. Nothing here creates a directory.
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

TYPE_CHECKING = False  # typing costs milliseconds `lmsav enqueue` does not need to spend
if TYPE_CHECKING:
    from collections.abc import Mapping

APP = "lmsav"
CONFIG_NAME = "lmsav.toml"
ENV_CONFIG = "LMSAV_CONFIG"

_PACKAGE_DIR = Path(__file__).resolve().parent

SYSTEM = "system"
PERSONAL = "personal"

SYSTEM_CONFIG_DIR = Path("/etc/lmsav")
SYSTEM_STATE_DIR = Path("/var/lib/lmsav")
SYSTEM_RUN_DIR = Path("/run/lmsav")
SYSTEM_CACHE_DIR = Path("/var/cache/lmsav")
SYSTEM_LOG_DIR = Path("/var/log/lmsav")  # made by `lmsav setup` for the services' logs
SYSTEM_CONFIG_FILE = SYSTEM_CONFIG_DIR / CONFIG_NAME
# Older names, from when only root used the system layout.
ROOT_CONFIG_DIR, ROOT_STATE_DIR = SYSTEM_CONFIG_DIR, SYSTEM_STATE_DIR
ROOT_RUN_DIR, ROOT_CACHE_DIR = SYSTEM_RUN_DIR, SYSTEM_CACHE_DIR

SERVICE_USER = "lmsav"  # the account `lmsav setup` creates, unless [daemon] user names another
LOGIN_DEFS = "/etc/login.defs"
# useradd's defaults when /etc/login.defs does not say.
DEFAULT_UID_MIN, DEFAULT_UID_MAX = 1000, 60000
NO_LOGIN_SHELLS = ("nologin", "false")

_started_by_mta = False


# -- the rule -------------------------------------------------------------------------------------

def mark_started_by_mta() -> None:
    """Called by the commands an MTA runs (``lmsav enqueue``, ``lmsav-qmail-queue``): without a
    terminal, this process then uses the system layout whoever runs it."""
    global _started_by_mta
    _started_by_mta = True


def layout(env: Mapping[str, str] | None = None, euid: int | None = None) -> str:
    """``SYSTEM`` or ``PERSONAL`` for a process of ``euid`` (default: this one); see the module
    docstring for the rule."""
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    if euid == 0:
        return SYSTEM
    if _started_by_mta and not _at_terminal():
        return SYSTEM
    account = _account(euid)
    if account is None or is_system_account(account):
        return SYSTEM
    if account.pw_name == service_user(env):
        return SYSTEM
    return PERSONAL


def is_system_account(account: pwd.struct_passwd) -> bool:
    """A uid outside UID_MIN..UID_MAX of /etc/login.defs, or no login shell."""
    uid_min, uid_max = _uid_range()
    if not uid_min <= account.pw_uid <= uid_max:
        return True
    return os.path.basename(account.pw_shell) in NO_LOGIN_SHELLS


def service_user(env: Mapping[str, str] | None = None) -> str:
    """The account lmsav's services run as: ``[daemon] user`` of the configuration file
    ($LMSAV_CONFIG, else /etc/lmsav/lmsav.toml), else ``lmsav``.

    A file that cannot be read or parsed names nobody here; the configuration loader reports
    it to whoever loads it."""
    env = os.environ if env is None else env
    path = env.get(ENV_CONFIG) or str(SYSTEM_CONFIG_FILE)
    try:
        with open(path, "rb") as fp:
            text = fp.read().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return SERVICE_USER
    from . import plaintoml

    try:
        user = plaintoml.read_tables(text, path, {"daemon": ("user",)})["daemon"].get("user")
    except plaintoml.TomlError:
        return SERVICE_USER
    return user if isinstance(user, str) and user else SERVICE_USER


def service_account(env: Mapping[str, str] | None = None) -> pwd.struct_passwd | None:
    """The passwd entry of ``service_user()``; None while that account does not exist."""
    try:
        return pwd.getpwnam(service_user(env))
    except KeyError:
        return None


def _account(euid: int) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwuid(euid)
    except KeyError:
        return None


def _at_terminal() -> bool:
    return any(os.isatty(fd) for fd in (0, 1, 2))


def _uid_range() -> tuple[int, int]:
    """UID_MIN and UID_MAX of /etc/login.defs (useradd's defaults where it does not say)."""
    found = {"UID_MIN": DEFAULT_UID_MIN, "UID_MAX": DEFAULT_UID_MAX}
    try:
        with open(LOGIN_DEFS, encoding="utf-8", errors="replace") as fp:
            for line in fp:
                words = line.split()
                if len(words) >= 2 and words[0] in found and words[1].isdigit():
                    found[words[0]] = int(words[1])
    except OSError:
        pass
    return found["UID_MIN"], found["UID_MAX"]


# -- the personal layout --------------------------------------------------------------------------

def _home(env: Mapping[str, str], euid: int) -> Path:
    """$HOME if it is the user's (sudo and tcpserver may keep root's), else the passwd home."""
    account = _account(euid)
    home = env.get("HOME", "")
    if home and os.path.isabs(home) and (
            account is None or home == account.pw_dir or _belongs_to(home, euid)):
        return Path(home)
    return Path(account.pw_dir) if account is not None else Path.home()


def _belongs_to(path: str, uid: int) -> bool:
    """True when ``path`` does not exist or is owned by ``uid``."""
    try:
        return os.stat(path).st_uid == uid
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _xdg(env: Mapping[str, str], euid: int, var: str, fallback: str) -> Path:
    """An XDG base directory: relative values are invalid per the spec and ignored, and so is
    one that exists and belongs to another user."""
    value = env.get(var, "")
    if value and os.path.isabs(value) and _belongs_to(value, euid):
        return Path(value)
    return _home(env, euid) / fallback


def _personal(env: Mapping[str, str] | None,
              euid: int | None) -> tuple[Mapping[str, str], int] | None:
    """(env, euid) when the personal layout applies, else None."""
    env = os.environ if env is None else env
    euid = os.geteuid() if euid is None else euid
    return (env, euid) if layout(env, euid) == PERSONAL else None


# -- locations ------------------------------------------------------------------------------------

def config_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Directory of the main configuration file and ``groups.d/``."""
    who = _personal(env, euid)
    if who is None:
        return SYSTEM_CONFIG_DIR
    return _xdg(*who, "XDG_CONFIG_HOME", ".config") / APP


def default_config_file(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    return config_dir(env, euid) / CONFIG_NAME


def config_file_from(
    cli_value: str | os.PathLike | None,
    env: Mapping[str, str] | None = None,
    euid: int | None = None,
) -> Path:
    """The configuration file to read: ``--config``, else ``$LMSAV_CONFIG``, else the default."""
    env = os.environ if env is None else env
    if cli_value:
        return Path(cli_value)
    if env.get(ENV_CONFIG):
        return Path(env[ENV_CONFIG])
    return default_config_file(env, euid)


def state_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Root of lmsav's state: bases/, quarantine/, nqueue/, backup/, stats/, updater/."""
    who = _personal(env, euid)
    if who is None:
        return SYSTEM_STATE_DIR
    return _xdg(*who, "XDG_STATE_HOME", ".local/state") / APP


# What lives under the state directory (``state_dir()`` or ``[paths] state_dir``): one name
# each, so the spool, the daemon, the CLI and ``lmsav setup`` cannot disagree.
def backup_dir(state: Path | str) -> Path:
    """Originals of messages kept by the mail policy (an entry per message)."""
    return Path(state) / "backup"


def backup_files_dir(state: Path | str) -> Path:
    """The backup store's files, as the quarantine commands list them."""
    return backup_dir(state) / "files"


def stats_dir(state: Path | str) -> Path:
    """The statistics store (``stats.sqlite``) unless ``[stats] url`` names PostgreSQL."""
    return Path(state) / "stats"


def nqueue_dir(state: Path | str) -> Path:
    """The spool the MTA hands mail to (``lmsav enqueue``) and the watcher takes it from."""
    return Path(state) / "nqueue"


def quarantine_dir(state: Path | str) -> Path:
    """Files taken away from where they were found."""
    return Path(state) / "quarantine"


def bases_dir(state: Path | str) -> Path:
    """Database versions installed by ``lmsav update`` (``current`` names the one in use)."""
    return Path(state) / "bases"


def reports_dir(state: Path | str) -> Path:
    """Sweep reports written by scheduled runs."""
    return Path(state) / "reports"


def cron_dir(state: Path | str) -> Path:
    """What scheduled runs remember between runs (last result of each schedule, locks)."""
    return Path(state) / "cron"


def log_dir(state: Path | str) -> Path:
    """Logs lmsav writes itself under the state directory (scheduled runs' ``cron.log``)."""
    return Path(state) / "log"


def setup_dir(state: Path | str) -> Path:
    """What ``lmsav setup`` changed on this system (its manifest and byte copies)."""
    return Path(state) / "setup"


def scan_cache_file(state: Path | str) -> Path:
    """Files incremental sweeps found clean (``lmsav scan --incremental``)."""
    return Path(state) / "scancache.sqlite"


def run_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Sockets and pid files: /run/lmsav, $XDG_RUNTIME_DIR/lmsav, or state_dir/run."""
    who = _personal(env, euid)
    if who is None:
        return SYSTEM_RUN_DIR
    env, euid = who
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and _belongs_to(runtime, euid):
        return Path(runtime) / APP
    return _xdg(env, euid, "XDG_STATE_HOME", ".local/state") / APP / "run"


def cache_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Data that can be rebuilt at any time (compiled databases of read-only directories)."""
    who = _personal(env, euid)
    if who is None:
        return SYSTEM_CACHE_DIR
    return _xdg(*who, "XDG_CACHE_HOME", ".cache") / APP


def bundled_database_dir() -> Path:
    """The signature database shipped inside the package (EICAR and lmsav's test signatures)."""
    return _PACKAGE_DIR / "data" / "bases"


def profiles_dir() -> Path:
    """The shipped presets, one directory per profile, each holding a ``lmsav.toml``."""
    return _PACKAGE_DIR / "data" / "profiles"


def example_config_file() -> Path:
    """The fully commented example configuration shipped with the package."""
    return _PACKAGE_DIR / "data" / "lmsav.toml.example"
