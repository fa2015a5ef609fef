"""Default locations: the system layout for root, the service user, system accounts and whatever
an MTA starts; the XDG directories of a person for everyone else."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmsav import paths


def account(name, _password, uid, gid, _gecos, home, shell):
    """A passwd entry as lmsav.paths reads it."""
    return SimpleNamespace(pw_name=name, pw_uid=uid, pw_gid=gid, pw_dir=home, pw_shell=shell)


ANN = account("ann", "x", 1000, 1000, "Ann", "/home/ann", "/bin/bash")
BOB = account("bob", "x", 1001, 1001, "Bob", "/home/bob", "/usr/bin/zsh")
LMSAV = account("lmsav", "x", 998, 998, "", "/var/lib/lmsav", "/usr/sbin/nologin")
QMAILD = account("qmaild", "x", 113, 65534, "", "/var/qmail", "/bin/sh")
NOBODY = account("nobody", "x", 65534, 65534, "", "/nonexistent", "/usr/sbin/nologin")
# An account in the people's uid range whose shell refuses logins.
LOCKED = account("kiosk", "x", 1500, 1500, "", "/home/kiosk", "/bin/false")
SERVICE_AS_PERSON = account("avscan", "x", 1200, 1200, "", "/home/avscan", "/bin/bash")
ACCOUNTS = {a.pw_uid: a for a in (ANN, BOB, LMSAV, QMAILD, NOBODY, LOCKED, SERVICE_AS_PERSON)}

USER_ENV = {"HOME": "/home/ann"}
XDG_ENV = {
    "HOME": "/home/ann",
    "XDG_CONFIG_HOME": "/xdg/config",
    "XDG_STATE_HOME": "/xdg/state",
    "XDG_CACHE_HOME": "/xdg/cache",
    "XDG_RUNTIME_DIR": "/run/user/1000",
}
SYSTEM = {
    "config": Path("/etc/lmsav/lmsav.toml"),
    "state": Path("/var/lib/lmsav"),
    "run": Path("/run/lmsav"),
    "cache": Path("/var/cache/lmsav"),
}


@pytest.fixture(autouse=True)
def host(tmp_path, monkeypatch):
    """A host with the accounts above, Debian's login.defs, no configuration file, a process
    not started by an MTA, at no terminal."""
    monkeypatch.setattr(paths, "_account", ACCOUNTS.get)
    defs = tmp_path / "login.defs"
    defs.write_text("# uids of people\nUID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n"
                    "SYS_UID_MIN\t\t  100\n")
    monkeypatch.setattr(paths, "LOGIN_DEFS", str(defs))
    monkeypatch.setattr(paths, "SYSTEM_CONFIG_FILE", tmp_path / "etc-lmsav.toml")
    monkeypatch.setattr(paths, "_started_by_mta", False)
    monkeypatch.setattr(paths, "_at_terminal", lambda: False)
    return tmp_path


def where(env, euid) -> dict[str, Path]:
    return {"config": paths.config_file_from(None, env, euid),
            "state": paths.state_dir(env, euid), "run": paths.run_dir(env, euid),
            "cache": paths.cache_dir(env, euid)}


@pytest.mark.parametrize("env", [USER_ENV, XDG_ENV, {"HOME": "/root"}])
@pytest.mark.parametrize("who", [None, LMSAV, QMAILD, NOBODY, LOCKED],
                         ids=["root", "lmsav", "qmaild", "nobody", "no-login-shell"])
def test_root_and_system_accounts_use_the_system_layout_whatever_the_environment(env, who):
    euid = 0 if who is None else who.pw_uid
    assert paths.layout(env, euid) == paths.SYSTEM
    assert where(env, euid) == SYSTEM


def test_a_uid_without_an_account_is_no_person():
    assert where(USER_ENV, 4242) == SYSTEM


def test_login_defs_decides_where_people_start(host):
    (host / "login.defs").write_text("UID_MIN 1001\nUID_MAX 60000\n")
    assert paths.layout(USER_ENV, ANN.pw_uid) == paths.SYSTEM
    assert paths.layout({"HOME": "/home/bob"}, BOB.pw_uid) == paths.PERSONAL
    (host / "login.defs").unlink()  # useradd's defaults: 1000..60000
    assert paths.layout(USER_ENV, ANN.pw_uid) == paths.PERSONAL


def test_the_configured_service_user_uses_the_system_layout(host, monkeypatch):
    env = {"HOME": "/home/avscan"}
    assert paths.layout(env, SERVICE_AS_PERSON.pw_uid) == paths.PERSONAL
    (host / "etc-lmsav.toml").write_text('[daemon]\nuser = "avscan"\n')
    assert paths.service_user(env) == "avscan"
    assert where(env, SERVICE_AS_PERSON.pw_uid) == SYSTEM
    # $LMSAV_CONFIG names the file that names the service user.
    other = host / "other.toml"
    other.write_text('[daemon]\nuser = "ann"\n')
    assert paths.service_user({"LMSAV_CONFIG": str(other)}) == "ann"
    assert paths.layout({"LMSAV_CONFIG": str(other)}, ANN.pw_uid) == paths.SYSTEM
    # Unreadable or invalid files name the default account.
    (host / "etc-lmsav.toml").write_text("[daemon\n")
    assert paths.service_user({}) == "lmsav"


def test_a_person_gets_the_xdg_fallbacks_under_home():
    assert where(USER_ENV, ANN.pw_uid) == {
        "config": Path("/home/ann/.config/lmsav/lmsav.toml"),
        "state": Path("/home/ann/.local/state/lmsav"),
        # No runtime dir (cron, su): sockets go under the state dir.
        "run": Path("/home/ann/.local/state/lmsav/run"),
        "cache": Path("/home/ann/.cache/lmsav"),
    }


def test_a_person_with_xdg_variables():
    assert where(XDG_ENV, ANN.pw_uid) == {
        "config": Path("/xdg/config/lmsav/lmsav.toml"),
        "state": Path("/xdg/state/lmsav"),
        "run": Path("/run/user/1000/lmsav"),
        "cache": Path("/xdg/cache/lmsav"),
    }


def test_relative_xdg_values_are_ignored_as_the_spec_says():
    env = dict(USER_ENV, XDG_STATE_HOME="state", XDG_RUNTIME_DIR="rt")
    assert paths.state_dir(env, ANN.pw_uid) == Path("/home/ann/.local/state/lmsav")
    assert paths.run_dir(env, ANN.pw_uid) == Path("/home/ann/.local/state/lmsav/run")


def test_a_person_never_uses_another_users_home(host, monkeypatch):
    """sudo, su and tcpserver may keep root's HOME and XDG variables: a directory that exists
    and belongs to someone else is never used; the passwd home is."""
    theirs = "/usr"  # exists everywhere, and is root's
    env = {"HOME": theirs, "XDG_CACHE_HOME": theirs, "XDG_RUNTIME_DIR": theirs,
           "XDG_CONFIG_HOME": theirs, "XDG_STATE_HOME": theirs}
    assert where(env, ANN.pw_uid) == {
        "config": Path("/home/ann/.config/lmsav/lmsav.toml"),
        "state": Path("/home/ann/.local/state/lmsav"),
        "run": Path("/home/ann/.local/state/lmsav/run"),
        "cache": Path("/home/ann/.cache/lmsav"),
    }
    # Her own directory, even away from the passwd home, is hers to use.
    mine = host / "ann-home"
    mine.mkdir()
    uid = ANN.pw_uid
    if os.geteuid() == 0:
        os.chown(mine, ANN.pw_uid, ANN.pw_gid)
    else:  # run by a person: the directory is theirs, so let Ann be them
        uid = os.geteuid()
        me = account("ann", "x", uid, uid, "", "/home/ann", "/bin/bash")
        monkeypatch.setattr(paths, "_account", {**ACCOUNTS, uid: me}.get)
    assert paths.cache_dir({"HOME": str(mine)}, uid) == mine / ".cache" / "lmsav"


def test_what_an_mta_starts_uses_the_system_layout_unless_a_person_is_at_a_terminal(
        monkeypatch):
    """`lmsav enqueue` run by Postfix's pipe as an ordinary account, `lmsav-qmail-queue` with
    HOME=/root: no terminal, so the system layout; the same command typed by Ann at her
    terminal keeps her own files."""
    env = {"HOME": "/root"}
    assert paths.layout(env, ANN.pw_uid) == paths.PERSONAL
    paths.mark_started_by_mta()
    assert where(env, ANN.pw_uid) == SYSTEM
    monkeypatch.setattr(paths, "_at_terminal", lambda: True)
    assert paths.layout(USER_ENV, ANN.pw_uid) == paths.PERSONAL


def test_config_file_precedence_cli_then_environment_then_default():
    env = dict(USER_ENV, LMSAV_CONFIG="/srv/env.toml")
    for euid in (0, ANN.pw_uid):
        assert paths.config_file_from("/srv/cli.toml", env, euid) == Path("/srv/cli.toml")
        assert paths.config_file_from(None, env, euid) == Path("/srv/env.toml")
    empty = dict(USER_ENV, LMSAV_CONFIG="")
    assert paths.config_file_from(None, empty, euid=0) == Path("/etc/lmsav/lmsav.toml")


def test_defaults_follow_the_real_process(monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "/xdg/state")
    monkeypatch.setattr(paths.os, "geteuid", lambda: ANN.pw_uid)
    assert paths.state_dir() == Path("/xdg/state/lmsav")
    monkeypatch.setattr(paths.os, "geteuid", lambda: 0)
    assert paths.state_dir() == Path("/var/lib/lmsav")


def test_the_service_account_is_looked_up_by_name(host, monkeypatch):
    monkeypatch.setattr(paths.pwd, "getpwnam", lambda name: {"lmsav": LMSAV}[name])
    assert paths.service_account({}) == LMSAV
    (host / "etc-lmsav.toml").write_text('[daemon]\nuser = "clamav"\n')
    assert paths.service_account({}) is None


def test_bundled_files_ship_inside_the_package():
    bases = paths.bundled_database_dir()
    assert (bases / "main.ndb").is_file()
    assert (bases / "database.toml").is_file()
    assert paths.example_config_file().is_file()
    profiles = sorted(p.name for p in paths.profiles_dir().iterdir())
    assert profiles == ["default_recommended", "high_overall_security", "high_scan_speed"]
