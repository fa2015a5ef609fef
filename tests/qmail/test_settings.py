"""The wrapper's quick reader of lmsav.toml agrees with tomllib and the full configuration."""

from __future__ import annotations

import re
import tomllib

import pytest

from lmsav import paths
from lmsav.qmail import settings

PLAIN = '''
profile = "default_recommended"
[paths]
run_dir = "/srv/run"   # comment
[scan]
exclude = [
  "[qmail]",
]
[qmail]
qmail_queue = "/opt/qmail/bin/qmail-queue"
fallback = false
custom_error = true
timeout = 45
[daemon]
socket = "/srv/run/lmsav.sock"
'''

TRICKY = [
    '[qmail]\ntimeout = "2m"\n',
    'qmail.fallback = false\n',
    'qmail = { fallback = false }\n',
    '[qmail]\nqmail_queue = "/opt/q\\u0075eue"\n',
    '[qmail]\nqmail_queue = """/opt/queue"""\n',
    '["qmail"]\nfallback = false\n',
    '[qmail.extra]\nx = 1\n[qmail]\nfallback = false\n',
    '[paths]\nrun_dir = \'/srv/literal\'\n',
    '[daemon] # c\nsocket = "/s.sock" # c\n',
    '[qmail]\ntimeout = 1.5\n',
    '[daemon]\ntcp = [\n  "127.0.0.1:3310",\n]\nsocket = "/s.sock"\n',
    '[daemon]\ntcp = ["a=b"]\nsocket = "/s.sock"\n',
]


def needed(doc: dict) -> dict:
    return {name: {k: v for k, v in doc.get(name, {}).items()
                   if settings.NEEDED[name] is None or k in settings.NEEDED[name]}
            for name in settings.WANTED}


@pytest.mark.parametrize("text", [PLAIN, *TRICKY])
def test_reader_agrees_with_tomllib(text):
    assert settings.read_tables(text, "test.toml") == needed(tomllib.loads(text))


def test_shipped_example_is_read_without_tomllib(monkeypatch):
    text = paths.example_config_file().read_text()
    key_line = re.compile(r"^# (\w+) = (.*)$")
    uncommented = "\n".join(line[2:] if key_line.match(line) else line
                            for line in text.splitlines())
    assert settings._read_plain(uncommented) is not None
    assert settings.read_tables(uncommented, "x") == needed(tomllib.loads(uncommented))


def test_defaults_match_the_configuration_table():
    from lmsav import config

    q = config.QmailSection()
    assert settings.DEFAULTS == {"qmail_queue": str(q.qmail_queue), "use_daemon": q.use_daemon,
                                 "fallback": q.fallback, "custom_error": q.custom_error,
                                 "timeout": q.timeout}


def test_load_with_file_and_environment(tmp_path):
    conf = tmp_path / "lmsav.toml"
    conf.write_text(PLAIN)
    s = settings.load({"LMSAV_CONFIG": str(conf)})
    assert (s.qmail_queue, s.fallback, s.custom_error, s.timeout, s.socket) == (
        "/opt/qmail/bin/qmail-queue", False, True, 45.0, "/srv/run/lmsav.sock")
    s = settings.load({"LMSAV_CONFIG": str(conf), "LMSAV_QMAILQUEUE": "/q", "LMSAV_FALLBACK": "1",
                       "LMSAV_GROUP": "g", "LMSAV_SOCKET": "/x.sock"})
    assert (s.qmail_queue, s.fallback, s.group, s.socket) == ("/q", True, "g", "/x.sock")
    conf.write_text('[paths]\nrun_dir = "/srv/run"\n')
    assert settings.load({"LMSAV_CONFIG": str(conf)}).socket == "/srv/run/clamd.sock"


def test_without_any_file_the_system_defaults_apply(tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "_at_terminal", lambda: False)  # as qmail starts it
    monkeypatch.setattr(settings, "SYSTEM_CONFIG", str(tmp_path / "absent.toml"))
    s = settings.load({"HOME": "/root"})
    assert s.config_file == str(tmp_path / "absent.toml")
    assert s.qmail_queue == "/var/qmail/bin/qmail-queue"
    assert s.socket == "/run/lmsav/clamd.sock"


def test_a_person_at_a_terminal_gets_the_rule_of_lmsav_paths(tmp_path, monkeypatch):
    """qmail never runs the wrapper at a terminal; a person trying it there gets their own
    configuration and socket, as every other lmsav command gives them."""
    monkeypatch.setattr(settings, "_at_terminal", lambda: True)
    monkeypatch.setattr(paths, "_at_terminal", lambda: True)
    monkeypatch.setattr(paths, "_started_by_mta", False)  # the wrapper sets it: undone after
    monkeypatch.setattr(paths, "layout", lambda env=None, euid=None: paths.PERSONAL)
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    s = settings.load(env)
    assert s.config_file == str(tmp_path / ".config" / "lmsav" / "lmsav.toml")
    assert s.socket == str(tmp_path / "run" / "lmsav" / "clamd.sock")


@pytest.mark.parametrize("text, key", [
    ('[qmail]\nfallback = "yes"\n', "qmail.fallback"),
    ('[qmail]\nqmail_queue = "relative/path"\n', "qmail.qmail_queue"),
    ('[qmail]\ntimeout = "soon"\n', "qmail.timeout"),
    ('[qmail\n', "invalid TOML"),
])
def test_bad_values_are_one_line_errors(tmp_path, text, key):
    conf = tmp_path / "lmsav.toml"
    conf.write_text(text)
    with pytest.raises(settings.SettingsError, match=key):
        settings.load({"LMSAV_CONFIG": str(conf)})


def test_explicit_missing_file_and_bad_flags_are_errors(tmp_path):
    with pytest.raises(settings.SettingsError, match="no such file"):
        settings.load({"LMSAV_CONFIG": str(tmp_path / "none.toml")})
    conf = tmp_path / "lmsav.toml"
    conf.write_text("")
    with pytest.raises(settings.SettingsError, match="LMSAV_BYPASS"):
        settings.load({"LMSAV_CONFIG": str(conf), "LMSAV_BYPASS": "perhaps"})


def test_the_wrapper_looks_where_lmsav_paths_says():
    """settings.py repeats the system locations so the wrapper need not import lmsav.paths."""
    assert settings.SYSTEM_CONFIG == str(paths.SYSTEM_CONFIG_FILE)
    assert settings.SYSTEM_RUN_DIR == str(paths.SYSTEM_RUN_DIR)
