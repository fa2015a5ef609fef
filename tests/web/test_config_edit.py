"""lmsav.web.config_edit: the effective values with their sources, changes to the safe keys
written into the file line by line (comments kept), validated as lmsav loads the file, the
profile switched, and the running components told to reload."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib

import pytest

from lmsav import config as config_mod
from lmsav.web import config_edit
from lmsav.web.config_edit import UNSET, EditError

CONFIG = """\
# lmsav configuration of the test mail server
profile = "default_recommended"

# How deep and how much
[limits]
max_files = 500   # members per container
max_file_size = "50M"

[log]
level = "info"  # "#" is no comment in a string
levels = [
    "daemon:debug",
]

[stats]
url = "postgresql://lmsav:s3cret@db.example/lmsav"
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "etc" / "lmsav.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    os.chmod(path, 0o640)
    return path


def settings(path):
    return config_mod.load_settings(path)


def test_every_safe_key_is_a_key_and_none_is_a_path_a_socket_or_a_secret():
    for name in config_edit.SAFE_KEYS:
        spec = config_mod.SPECS[name]
        assert not spec.kind.secret
        assert spec.kind not in (config_mod.ABSOLUTE_PATH, config_mod.OPTIONAL_PATH,
                                 config_mod.REINJECT, config_mod.LISTENERS)
        assert not name.startswith(("paths.", "milter.")) and "user" not in name
        assert "socket" not in name and "reinject" not in name and "listen" not in name


def test_rows_show_values_sources_and_mask_secrets(config_file):
    rows = {row.name: row for row in config_edit.rows(settings(config_file))}
    assert len(rows) == len(config_mod.SPECS)
    assert rows["limits.max_files"].value == "500"
    assert rows["limits.max_files"].source == str(config_file)
    assert rows["limits.max_scan_depth"].source in ("profile default_recommended",
                                                    config_mod.BUILT_IN)
    assert rows["stats.url"].value == '"postgresql://lmsav:***@db.example/lmsav"'
    assert "s3cret" not in repr(list(rows.values()))
    assert not rows["stats.url"].editable and rows["stats.url"].form_value == ""
    assert rows["log.level"].widget == "choice"
    assert rows["log.level"].choices == ("error", "warning", "info", "debug")
    assert rows["scan.scan_archives"].widget == "boolean"
    assert rows["log.levels"].widget == "list"
    assert rows["log.levels"].form_value == "daemon:debug"
    assert rows["limits.max_file_size"].form_value == "50M"


def test_a_change_edits_only_its_line_and_keeps_comments_and_mode(config_file):
    before = settings(config_file)
    digest = config_edit.file_digest(config_file)
    result = config_edit.apply_changes(
        config_file, before,
        {"limits.max_files": "800", "limits.max_file_size": "50M",  # unchanged: not written
         "log.levels": "daemon:debug, stats:warning", "server.host_name": "mx.example.org",
         "limits.max_scan_time": "3m"},
        expected_digest=digest)
    assert set(result.changed) == {"limits.max_files", "log.levels", "server.host_name",
                                   "limits.max_scan_time"}
    assert result.comments_kept
    text = config_file.read_text()
    assert "# lmsav configuration of the test mail server" in text
    assert "# How deep and how much" in text
    assert 'max_file_size = "50M"' in text
    assert "max_files = 800   # members per container" in text
    assert "max_scan_time = 180" in text  # the kind's own spelling of 3m
    assert oct(os.stat(config_file).st_mode & 0o777) == "0o640"
    now = settings(config_file)
    assert now.limits_section.max_files == 800
    assert now.log.levels == ("daemon:debug", "stats:warning")
    assert now.server.host_name == "mx.example.org"
    assert now.stats.url == before.stats.url
    assert result.settings.limits_section.max_files == 800
    # The section [server] did not exist: it was added at the end.
    assert tomllib.loads(text)["server"] == {"host_name": "mx.example.org"}


def test_an_invalid_value_is_refused_in_the_configurations_words(config_file):
    before_text = config_file.read_text()
    with pytest.raises(EditError) as err:
        config_edit.apply_changes(config_file, settings(config_file),
                                  {"limits.max_files": "lots"})
    assert str(err.value) == (f'{config_file}: limits.max_files = "lots": expected an '
                              "integer >= 0")
    with pytest.raises(EditError, match=r"log.level = \"loud\": expected \"error\" or"):
        config_edit.apply_changes(config_file, settings(config_file), {"log.level": "loud"})
    with pytest.raises(EditError, match="log.levels"):
        config_edit.apply_changes(config_file, settings(config_file),
                                  {"log.levels": "nobody:debug"})
    assert config_file.read_text() == before_text


def test_a_key_outside_the_safe_subset_is_refused(config_file):
    before_text = config_file.read_text()
    for name in ("paths.state_dir", "spool.reinject", "daemon.user", "stats.url",
                 "no.such", "../x"):
        with pytest.raises(EditError, match="cannot be changed from the console"):
            config_edit.apply_changes(config_file, settings(config_file), {name: "/tmp/x"})
    with pytest.raises(EditError, match="cannot be changed"):
        config_edit.apply_changes(config_file, settings(config_file), {},
                                  unset=("paths.run_dir",))
    assert config_file.read_text() == before_text


def test_a_file_changed_since_the_page_was_shown_is_not_overwritten(config_file):
    digest = config_edit.file_digest(config_file)
    config_file.write_text(CONFIG + "\n[scan]\nworkers = 2\n")
    with pytest.raises(EditError, match="changed since the page was shown"):
        config_edit.apply_changes(config_file, settings(config_file),
                                  {"limits.max_files": "9"}, expected_digest=digest)


def test_unset_returns_a_key_to_the_profile(config_file):
    result = config_edit.apply_changes(config_file, settings(config_file), {},
                                       unset=("limits.max_files", "log.levels"))
    assert set(result.changed) == {"limits.max_files", "log.levels"}
    data = tomllib.loads(config_file.read_text())
    assert "max_files" not in data["limits"] and "levels" not in data["log"]
    assert "# How deep and how much" in config_file.read_text()
    now = settings(config_file)
    assert now.sources["limits.max_files"] != str(config_file)


def test_switch_profile(config_file):
    result = config_edit.switch_profile(config_file, "high_scan_speed",
                                        config_edit.file_digest(config_file))
    assert result.changed == ("profile",)
    text = config_file.read_text()
    assert text.startswith("# lmsav configuration")
    assert 'profile = "high_scan_speed"' in text
    assert settings(config_file).profile == "high_scan_speed"
    with pytest.raises(EditError, match="unknown profile 'fastest': choose "):
        config_edit.switch_profile(config_file, "fastest")


def test_profile_added_before_the_first_table_and_its_comments(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text("# limits\n[limits]\nmax_files = 3\n")
    config_edit.switch_profile(path, "high_overall_security")
    assert path.read_text() == ('profile = "high_overall_security"\n\n# limits\n[limits]\n'
                                "max_files = 3\n")


def test_a_missing_file_is_created_for_the_owner_and_group(tmp_path):
    path = tmp_path / "new" / "lmsav.toml"
    current = config_mod.load_settings(path)
    config_edit.apply_changes(path, current, {"log.level": "debug"},
                              expected_digest=config_edit.file_digest(path))
    assert tomllib.loads(path.read_text()) == {"log": {"level": "debug"}}
    assert oct(os.stat(path).st_mode & 0o777) == "0o640"


def test_a_layout_the_line_edit_cannot_follow_is_written_whole(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text("# dotted keys\nlimits.max_files = 3\nlog = { level = \"info\" }\n")
    result = config_edit.apply_changes(path, config_mod.load_settings(path),
                                       {"limits.max_scan_depth": "4", "log.level": "debug"})
    assert not result.comments_kept
    assert tomllib.loads(path.read_text()) == {
        "limits": {"max_files": 3, "max_scan_depth": 4}, "log": {"level": "debug"}}


def test_a_trailing_comment_stays_and_a_hash_in_a_string_is_no_comment(config_file):
    config_edit.apply_changes(config_file, settings(config_file), {"log.level": "warning"})
    assert 'level = "warning"  # "#" is no comment in a string\n' in config_file.read_text()
    path = config_file.parent / "hash.toml"
    path.write_text('[server]\nhost_name = "a#b" # the # here\n')
    config_edit.apply_changes(path, config_mod.load_settings(path),
                              {"server.host_name": "c#d"})
    assert path.read_text() == '[server]\nhost_name = "c#d" # the # here\n'


def test_edit_text_multiline_values_and_unset():
    text = 'a = 1\n[log]\nlevels = [\n  "daemon:debug", # x\n  "spool:info",\n]\nlevel = "info"\n'
    data = tomllib.loads(text)
    out, kept, changed = config_edit.edit_text(
        text, data, {"log.levels": ["stats:error"], "log.level": UNSET}, None)
    assert kept and set(changed) == {"log.levels", "log.level"}
    assert out == 'a = 1\n[log]\nlevels = [\n    "stats:error",\n]\n'


def test_an_invalid_file_is_not_touched(tmp_path):
    path = tmp_path / "lmsav.toml"
    path.write_text("[limits\n")
    with pytest.raises(EditError, match="invalid TOML"):
        config_edit.apply_changes(path, config_mod.load_settings(None),
                                  {"limits.max_files": "3"})
    assert path.read_text() == "[limits\n"


# -- reload --------------------------------------------------------------------------------------

def _fake_daemon(path, answers):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve():
        conn, _ = server.accept()
        with conn:
            answers.append(conn.recv(100))
            conn.sendall(b"RELOADING\0")
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_reload_tells_the_daemon_and_the_watcher(tmp_path):
    run_dir, state = tmp_path / "run", tmp_path / "state"
    run_dir.mkdir()
    (state / "nqueue").mkdir(parents=True)
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nrun_dir = "{run_dir}"\nstate_dir = "{state}"\n')
    current = config_mod.load_settings(path)
    assert config_edit.reload_components(current) == {"daemon": "not running",
                                                      "spool watcher": "not running"}

    answers = []
    thread = _fake_daemon(run_dir / "clamd.sock", answers)
    hup = tmp_path / "hup"
    watcher = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, signal, sys, time
fd = os.open({str(state / 'nqueue' / 'watch.lock')!r}, os.O_RDWR | os.O_CREAT, 0o640)
fcntl.flock(fd, fcntl.LOCK_EX)
signal.signal(signal.SIGHUP, lambda *a: open({str(hup)!r}, "w").close())
print("ready", flush=True)
time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert watcher.stdout.readline() == "ready\n"
        told = config_edit.reload_components(current)
        assert told == {"daemon": "reload requested",
                        "spool watcher": f"sent SIGHUP to pid {watcher.pid}"}
        thread.join(5)
        assert answers == [b"zRELOAD\0"]
        deadline = time.monotonic() + 5
        while not hup.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hup.exists()
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(5)
