"""Default locations in one place: the FHS as root, the XDG base directories otherwise.

Every function takes the environment and the effective user id as optional arguments so a test
can ask "where would root look?" without being root. Nothing here creates a directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

APP = "lmsav"
CONFIG_NAME = "lmsav.toml"
ENV_CONFIG = "LMSAV_CONFIG"

_PACKAGE_DIR = Path(__file__).resolve().parent

# Where root keeps things (FHS); each non-root user gets the XDG equivalent.
ROOT_CONFIG_DIR = Path("/etc/lmsav")
ROOT_STATE_DIR = Path("/var/lib/lmsav")
ROOT_RUN_DIR = Path("/run/lmsav")
ROOT_CACHE_DIR = Path("/var/cache/lmsav")


def _is_root(euid: int | None) -> bool:
    return (os.geteuid() if euid is None else euid) == 0


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def _xdg(env: Mapping[str, str] | None, var: str, fallback: str) -> Path:
    """An XDG base directory; relative values are invalid per the spec and ignored."""
    env = os.environ if env is None else env
    value = env.get(var, "")
    if value and os.path.isabs(value):
        return Path(value)
    return _home(env) / fallback


def config_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Directory of the main configuration file (and, later, ``groups.d/``)."""
    if _is_root(euid):
        return ROOT_CONFIG_DIR
    return _xdg(env, "XDG_CONFIG_HOME", ".config") / APP


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
    if _is_root(euid):
        return ROOT_STATE_DIR
    return _xdg(env, "XDG_STATE_HOME", ".local/state") / APP


def run_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Sockets and pid files: /run/lmsav, $XDG_RUNTIME_DIR/lmsav, or state_dir/run."""
    if _is_root(euid):
        return ROOT_RUN_DIR
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / APP
    return state_dir(env, euid) / "run"


def cache_dir(env: Mapping[str, str] | None = None, euid: int | None = None) -> Path:
    """Data that can be rebuilt at any time (compiled databases of read-only directories)."""
    if _is_root(euid):
        return ROOT_CACHE_DIR
    return _xdg(env, "XDG_CACHE_HOME", ".cache") / APP


def bundled_database_dir() -> Path:
    """The signature database shipped inside the package (EICAR and lmsav's test signatures)."""
    return _PACKAGE_DIR / "data" / "bases"


def profiles_dir() -> Path:
    """The shipped presets, one directory per profile, each holding a ``lmsav.toml``."""
    return _PACKAGE_DIR / "data" / "profiles"


def example_config_file() -> Path:
    """The fully commented example configuration shipped with the package."""
    return _PACKAGE_DIR / "data" / "lmsav.toml.example"
