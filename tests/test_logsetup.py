"""[log] in one process: levels per component, every destination (syslog and journald on private
sockets standing in for /dev/log and journald's), text and JSON lines, the file reopened after
logrotate, and the failures that must never stop a process."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from lmsav import config as config_mod
from lmsav import logsetup
from tests.conftest import EICAR


@pytest.fixture(autouse=True)
def clean_tree():
    yield
    logsetup.reset()


def settings_with(tmp_path: Path, log: str, name: str = "lmsav.toml"):
    path = tmp_path / name
    path.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n\n[log]\n{log}\n')
    return config_mod.load_settings(path)


def text_lines(err: str) -> list[tuple[str, str, str]]:
    """(ident[pid], level, message) of each ``time ident[pid]: level: message`` line."""
    out = []
    for line in err.splitlines():
        _time, ident, rest = line.split(" ", 2)
        level, _, message = rest.partition(": ")
        out.append((ident.rstrip(":"), level, message))
    return out


@pytest.fixture
def datagrams(tmp_path):
    """A unix datagram socket standing in for /dev/log or journald's socket."""
    path = tmp_path / "dgram.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    yield path, sock
    sock.close()


def test_text_lines_and_levels_per_component(tmp_path, capsys):
    settings = settings_with(tmp_path, 'level = "info"\nlevels = ["daemon:debug", '
                                       '"stats:warning", "scan:error"]')
    assert logsetup.configure(settings, "daemon") == "stderr"
    logging.getLogger("lmsav.daemon").debug("daemon detail")
    logging.getLogger("lmsav.daemon.server").debug("server detail")
    logging.getLogger("lmsav.workers").debug("worker detail")  # the process's component
    logging.getLogger("lmsav.stats").info("stats info, hidden")
    logging.getLogger("lmsav.stats").warning("stats warning")
    logging.getLogger("lmsav.sweep.actions").warning("scan warning, hidden")
    logging.getLogger("lmsav.scanner.engine").error("engine error")
    logging.getLogger("lmsav.mail").info("mail info")
    logging.getLogger("lmsav.mail").debug("mail debug, hidden")
    pid = os.getpid()
    assert text_lines(capsys.readouterr().err) == [
        (f"lmsav-daemon[{pid}]", "debug", "daemon detail"),
        (f"lmsav-daemon[{pid}]", "debug", "server detail"),
        (f"lmsav-daemon[{pid}]", "debug", "worker detail"),
        (f"lmsav-stats[{pid}]", "warning", "stats warning"),
        (f"lmsav-scan[{pid}]", "error", "engine error"),
        (f"lmsav-mail[{pid}]", "info", "mail info"),
    ]


@pytest.mark.parametrize(("verbosity", "shown"), [(1, ["d", "i", "w", "e"]), (-1, ["e"])])
def test_verbose_and_quiet_override_level_and_levels(tmp_path, capsys, verbosity, shown):
    settings = settings_with(tmp_path, 'level = "warning"\nlevels = ["spool:info"]')
    logsetup.configure(settings, "spool", verbosity=verbosity)
    logger = logging.getLogger("lmsav.spool")
    for level, text in ((logging.DEBUG, "d"), (logging.INFO, "i"), (logging.WARNING, "w"),
                        (logging.ERROR, "e")):
        logger.log(level, text)
    assert [m for _i, _l, m in text_lines(capsys.readouterr().err)] == shown


def test_an_interactive_command_says_only_warnings_on_stderr_in_short(tmp_path, capsys):
    settings = settings_with(tmp_path, 'level = "info"')
    logsetup.configure(settings, "scan", interactive=True)
    logging.getLogger("lmsav.scan").info("hidden")
    logging.getLogger("lmsav.scan").warning("cannot read x")
    assert capsys.readouterr().err == "lmsav: warning: cannot read x\n"
    logsetup.configure(settings, "scan", interactive=True, verbosity=1)
    logging.getLogger("lmsav.scan").debug("shown with -v")
    assert capsys.readouterr().err == "lmsav: debug: shown with -v\n"


def test_syslog_with_the_configured_facility_and_ident(tmp_path, monkeypatch, datagrams):
    path, sock = datagrams
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
    settings = settings_with(tmp_path, 'destination = "syslog"\nsyslog_facility = "local3"')
    assert logsetup.configure(settings, "spool") == "syslog"
    logging.getLogger("lmsav.mail").info("queue=- status=clean")
    logging.getLogger("lmsav.spool").error("cannot claim")
    pid = os.getpid()
    local3 = 19
    assert sock.recv(4096) == f"<{local3 * 8 + 6}>lmsav-mail[{pid}]: queue=- status=clean\0".encode()
    assert sock.recv(4096) == f"<{local3 * 8 + 3}>lmsav-spool[{pid}]: cannot claim\0".encode()


def test_syslog_json_lines_keep_the_tag(tmp_path, monkeypatch, datagrams):
    path, sock = datagrams
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(path))
    settings = settings_with(tmp_path, 'destination = "syslog"\nformat = "json"')
    logsetup.configure(settings, "daemon")
    logging.getLogger("lmsav.daemon").warning("slow", extra={"seconds": 3})
    datagram = sock.recv(4096).decode()
    prefix = f"<{2 * 8 + 4}>lmsav-daemon[{os.getpid()}]: "
    assert datagram.startswith(prefix) and datagram.endswith("\0")
    fields = json.loads(datagram[len(prefix):-1])
    assert fields["level"] == "warning" and fields["component"] == "daemon"
    assert fields["message"] == "slow" and fields["seconds"] == 3


def test_without_syslog_the_file_and_one_line_saying_so(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "no-dev" / "log"
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(missing))
    log_file = tmp_path / "logs" / "lmsav.log"
    settings = settings_with(tmp_path, f'destination = "syslog"\nfile = "{log_file}"')
    assert logsetup.configure(settings, "daemon") == "file"
    logging.getLogger("lmsav.daemon").info("one")
    logging.getLogger("lmsav.daemon").info("two")
    assert capsys.readouterr().err == f"lmsav: {missing} not found; logging to {log_file}\n"
    assert [m for _i, _l, m in text_lines(log_file.read_text())] == ["one", "two"]
    assert log_file.stat().st_mode & 0o777 == 0o640


def test_the_default_file_is_in_the_state_log_directory(tmp_path, monkeypatch):
    from lmsav import paths

    monkeypatch.setattr(paths, "layout", lambda env=None, euid=None: paths.PERSONAL)
    settings = settings_with(tmp_path, 'destination = "file"')
    logsetup.configure(settings, "update")
    logging.getLogger("lmsav.update").warning("feed slow")
    written = (tmp_path / "state" / "log" / "lmsav.log").read_text()
    assert f"lmsav-update[{os.getpid()}]: warning: feed slow" in written


def test_journald_native_protocol(tmp_path, monkeypatch, datagrams):
    path, sock = datagrams
    monkeypatch.setattr(logsetup, "JOURNAL_SOCKET", str(path))
    settings = settings_with(tmp_path, 'destination = "journald"')
    assert logsetup.configure(settings, "spool") == "journald"
    logging.getLogger("lmsav.mail").info("queue=Q1 status=infected",
                                         extra={"queue": "Q1", "to": ["a@x", "b@y"]})
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        logging.getLogger("lmsav.spool").exception("entry failed")
    first, second = journal_fields(sock.recv(65536)), journal_fields(sock.recv(65536))
    assert first["MESSAGE"] == "queue=Q1 status=infected"
    assert first["PRIORITY"] == "6" and first["SYSLOG_FACILITY"] == "2"
    assert first["SYSLOG_IDENTIFIER"] == "lmsav-mail" and first["SYSLOG_PID"] == str(os.getpid())
    assert first["LMSAV_COMPONENT"] == "mail"
    assert first["LMSAV_QUEUE"] == "Q1" and first["LMSAV_TO"] == "a@x,b@y"
    assert second["PRIORITY"] == "3" and second["SYSLOG_IDENTIFIER"] == "lmsav-spool"
    assert second["MESSAGE"].startswith("entry failed\nTraceback")  # binary-safe field
    assert "ValueError: bad\nthing" in second["MESSAGE"]


def journal_fields(datagram: bytes) -> dict[str, str]:
    """Parse journald's native protocol as systemd-journald does."""
    fields, rest = {}, datagram
    while rest:
        line, sep, tail = rest.partition(b"\n")
        assert sep
        if b"=" in line:
            key, _, value = line.partition(b"=")
            rest = tail
        else:
            key = line
            (size,) = struct.unpack("<Q", tail[:8])
            value, rest = tail[8:8 + size], tail[8 + size:]
            assert rest[:1] == b"\n"
            rest = rest[1:]
        fields[key.decode()] = value.decode()
    return fields


def test_without_journald_stderr_and_one_line_saying_so(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "journal" / "socket"
    monkeypatch.setattr(logsetup, "JOURNAL_SOCKET", str(missing))
    settings = settings_with(tmp_path, 'destination = "journald"')
    assert logsetup.configure(settings, "cron") == "stderr"
    logging.getLogger("lmsav.cron").info("ran")
    notice, line = capsys.readouterr().err.splitlines()
    assert notice == (f"lmsav: journald: cannot use {missing}: No such file or directory; "
                      f"logging to standard error")
    assert line.endswith(f"lmsav-cron[{os.getpid()}]: info: ran")


def test_json_lines_in_a_file(tmp_path):
    log_file = tmp_path / "lmsav.log"
    settings = settings_with(tmp_path, f'destination = "file"\nfile = "{log_file}"\n'
                                       f'format = "json"')
    logsetup.configure(settings, "qmail")
    logging.getLogger("lmsav.mail").info("queue=- status=clean", extra={"size": 12})
    logging.getLogger("lmsav.workers").warning("worker %d died", 7)
    first, second = (json.loads(line) for line in log_file.read_text().splitlines())
    assert set(first) == {"time", "level", "component", "pid", "message", "size"}
    assert (first["level"], first["component"], first["pid"], first["message"],
            first["size"]) == ("info", "mail", os.getpid(), "queue=- status=clean", 12)
    assert first["time"][:4].isdigit() and first["time"][10] == "T"
    assert (second["component"], second["message"]) == ("qmail", "worker 7 died")


def test_an_unwritable_log_file_is_one_line_and_stderr(tmp_path, capsys):
    not_a_dir = tmp_path / "plain"
    not_a_dir.write_text("")
    settings = settings_with(tmp_path, f'destination = "file"\nfile = "{not_a_dir}/lmsav.log"')
    assert logsetup.configure(settings, "spool") == "stderr"
    logging.getLogger("lmsav.spool").info("still logged")
    notice, line = capsys.readouterr().err.splitlines()
    assert notice == (f"lmsav: cannot write the log file {not_a_dir}/lmsav.log: Not a directory; "
                      f"logging to standard error")
    assert line.endswith(f"lmsav-spool[{os.getpid()}]: info: still logged")


def test_a_log_file_failing_later_is_said_once(tmp_path, capsys):
    """/dev/full opens, and every write to it fails (a full disk)."""
    settings = settings_with(tmp_path, 'destination = "file"\nfile = "/dev/full"')
    assert logsetup.configure(settings, "daemon") == "file"
    for n in range(3):
        logging.getLogger("lmsav.daemon").info("line %d", n)
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("lmsav: cannot write the log file /dev/full: No space left on device; "
                      "logging to standard error")
    assert [m for _i, _l, m in text_lines("\n".join(err[1:]))] == ["line 0", "line 1", "line 2"]


def test_detached_with_nowhere_to_write_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))
    not_a_dir = tmp_path / "plain"
    not_a_dir.write_text("")
    settings = settings_with(tmp_path, f'file = "{not_a_dir}/x.log"')
    with pytest.raises(logsetup.LogSetupError, match="cannot write the log file .*x.log: Not a "
                                                      "directory, and .*no-dev-log is not there"):
        logsetup.configure(settings, "daemon", detached=True)


def test_the_file_is_reopened_on_sigusr1_after_logrotate_moved_it(tmp_path):
    log_file = tmp_path / "lmsav.log"
    settings = settings_with(tmp_path, f'destination = "file"\nfile = "{log_file}"')
    logsetup.configure(settings, "daemon")
    logger = logging.getLogger("lmsav.daemon")
    logger.info("before")
    log_file.rename(tmp_path / "lmsav.log.1")
    os.kill(os.getpid(), signal.SIGUSR1)  # ends the process unless lmsav handles it
    logger.info("after")
    assert "after" not in (tmp_path / "lmsav.log.1").read_text()
    assert [m for _i, _l, m in text_lines(log_file.read_text())] == ["after"]


def test_reset_restores_the_tree(tmp_path):
    settings = settings_with(tmp_path, 'level = "error"\nlevels = ["mail:debug"]')
    before = logging.getLogger("lmsav").handlers[:], logging.getLogger("lmsav").level
    logsetup.configure(settings, "mail")
    logsetup.reset()
    assert (logging.getLogger("lmsav").handlers, logging.getLogger("lmsav").level) == before
    assert logging.getLogger("lmsav.mail").level == logging.NOTSET
    assert signal.getsignal(signal.SIGUSR1) is not logsetup._request_reopen


# -- the root -v and -q of the real command ------------------------------------------------------

def lmsav(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMSAV_CONFIG": str(tmp_path / "lmsav.toml")}
    return subprocess.run([sys.executable, "-m", "lmsav", *args], capture_output=True,
                          text=True, env=env, timeout=120, check=False)


@pytest.mark.integration
def test_root_verbose_and_quiet_on_a_command(tmp_path):
    settings_with(tmp_path, 'level = "info"')
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@example.org\nMessage-ID: <v1@example.org>\nSubject: x\n\n"
                        + EICAR + b"\n")
    check = ["mail", "check", "--no-stats", "-f", "a@example.org", "-r", "b@example.net",
             str(message)]
    quiet_by_default = lmsav(tmp_path, *check)
    assert quiet_by_default.returncode == 1 and quiet_by_default.stderr == ""
    verbose = lmsav(tmp_path, "-v", *check)
    assert verbose.returncode == 1
    assert ("lmsav: info: queue=- msgid=<v1@example.org> from=<a@example.org> "
            "to=<b@example.net> group=default status=infected action=reject "
            "threats=Eicar-Test-Signature size=") in verbose.stderr
    both = lmsav(tmp_path, "-v", "-q", *check)
    assert both.returncode == 2
    assert both.stderr == "lmsav: error: -v and -q say opposite things: give one of them\n"
    # `lmsav scan -v` is the scan's own listing, unchanged beside the root -q.
    clean = tmp_path / "clean.txt"
    clean.write_text("nothing here\n")
    listed = lmsav(tmp_path, "-q", "scan", "-v", str(clean))
    assert listed.returncode == 0 and f"{clean}: OK" in listed.stdout


@pytest.mark.integration
def test_quiet_keeps_info_lines_out_of_the_log_file(tmp_path):
    log_file = tmp_path / "lmsav.log"
    settings_with(tmp_path, f'destination = "file"\nfile = "{log_file}"')
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@example.org\nSubject: x\n\nhello\n")
    check = ["mail", "check", "--no-stats", "-r", "b@example.net", str(message)]
    assert lmsav(tmp_path, "-q", *check).returncode == 0
    assert not log_file.exists() or log_file.read_text() == ""
    assert lmsav(tmp_path, *check).returncode == 0
    [line] = log_file.read_text().splitlines()
    assert " lmsav-mail[" in line and ": info: queue=- msgid=- " in line
