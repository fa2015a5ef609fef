"""Default locations: the FHS for root, XDG directories for everyone else."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmsav import paths

USER_ENV = {"HOME": "/home/ann"}
XDG_ENV = {
    "HOME": "/home/ann",
    "XDG_CONFIG_HOME": "/xdg/config",
    "XDG_STATE_HOME": "/xdg/state",
    "XDG_CACHE_HOME": "/xdg/cache",
    "XDG_RUNTIME_DIR": "/run/user/1000",
}


@pytest.mark.parametrize("env", [USER_ENV, XDG_ENV])
def test_root_uses_fhs_whatever_the_environment(env):
    assert paths.config_file_from(None, env, euid=0) == Path("/etc/lmsav/lmsav.toml")
    assert paths.state_dir(env, euid=0) == Path("/var/lib/lmsav")
    assert paths.run_dir(env, euid=0) == Path("/run/lmsav")
    assert paths.cache_dir(env, euid=0) == Path("/var/cache/lmsav")


def test_user_without_xdg_variables_gets_the_xdg_fallbacks_under_home():
    assert paths.config_file_from(None, USER_ENV, euid=1000) == Path(
        "/home/ann/.config/lmsav/lmsav.toml")
    assert paths.state_dir(USER_ENV, euid=1000) == Path("/home/ann/.local/state/lmsav")
    # No runtime dir (cron, su): sockets go under the state dir.
    assert paths.run_dir(USER_ENV, euid=1000) == Path("/home/ann/.local/state/lmsav/run")
    assert paths.cache_dir(USER_ENV, euid=1000) == Path("/home/ann/.cache/lmsav")


def test_user_with_xdg_variables():
    assert paths.config_file_from(None, XDG_ENV, euid=1000) == Path(
        "/xdg/config/lmsav/lmsav.toml")
    assert paths.state_dir(XDG_ENV, euid=1000) == Path("/xdg/state/lmsav")
    assert paths.run_dir(XDG_ENV, euid=1000) == Path("/run/user/1000/lmsav")
    assert paths.cache_dir(XDG_ENV, euid=1000) == Path("/xdg/cache/lmsav")


def test_relative_xdg_values_are_ignored_as_the_spec_says():
    env = dict(USER_ENV, XDG_STATE_HOME="state", XDG_RUNTIME_DIR="rt")
    assert paths.state_dir(env, euid=1000) == Path("/home/ann/.local/state/lmsav")
    assert paths.run_dir(env, euid=1000) == Path("/home/ann/.local/state/lmsav/run")


def test_config_file_precedence_cli_then_environment_then_default():
    env = dict(USER_ENV, LMSAV_CONFIG="/srv/env.toml")
    assert paths.config_file_from("/srv/cli.toml", env, euid=0) == Path("/srv/cli.toml")
    assert paths.config_file_from(None, env, euid=0) == Path("/srv/env.toml")
    empty = dict(USER_ENV, LMSAV_CONFIG="")
    assert paths.config_file_from(None, empty, euid=0) == Path("/etc/lmsav/lmsav.toml")


def test_defaults_follow_the_real_process(monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg/state")
    monkeypatch.setattr(paths.os, "geteuid", lambda: 1000)
    assert paths.state_dir() == Path("/xdg/state/lmsav")
    monkeypatch.setattr(paths.os, "geteuid", lambda: 0)
    assert paths.state_dir() == Path("/var/lib/lmsav")


def test_bundled_files_ship_inside_the_package():
    bases = paths.bundled_database_dir()
    assert (bases / "main.ndb").is_file()
    assert (bases / "database.toml").is_file()
    assert paths.example_config_file().is_file()
    profiles = sorted(p.name for p in paths.profiles_dir().iterdir())
    assert profiles == ["default_recommended", "high_overall_security", "high_scan_speed"]
