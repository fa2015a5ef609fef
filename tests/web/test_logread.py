"""lmsav.web.logread: lmsav's own log lines read back from the end of its files, within a byte
budget whatever the file's size, parsed and filtered; the journal through journalctl's
argument list."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time

import pytest

from lmsav import config as config_mod
from lmsav import logsetup
from lmsav.web import logread
from lmsav.web.logread import LogFilter, LogSource


def text_source(path) -> LogSource:
    return LogSource("log", "test", path, "text")


def real_lines(tmp_path, form: str = "text"):
    """Lines written by lmsav's own formatter, as a service writes them."""
    formatter = logsetup.LineFormatter("daemon", form)
    out = []
    for n, (name, level, message) in enumerate([
            ("lmsav.daemon", logging.INFO, "started with 4 workers"),
            ("lmsav.spool", logging.WARNING, "entry 17 deferred: 451 try later"),
            ("lmsav.mail", logging.ERROR, "cannot reinject: connection refused"),
            ("lmsav.daemon", logging.DEBUG, "worker 2 idle"),
            ("lmsav.workers", logging.INFO, "pool resized")]):
        record = logging.LogRecord(name, level, __file__, n, message, (), None)
        out.append(formatter.format(record))
    return out


def test_text_lines_parsed_and_filtered(tmp_path):
    path = tmp_path / "lmsav.log"
    path.write_text("\n".join(real_lines(tmp_path)) + "\n")
    tail = logread.read_file(text_source(path))
    assert tail.whole and tail.scanned == path.stat().st_size
    assert [(r.component, r.level) for r in tail.records] == [
        ("daemon", "info"), ("daemon", "debug"), ("mail", "error"), ("spool", "warning"),
        ("daemon", "info")]
    assert tail.records[-1].message == "started with 4 workers"
    assert tail.records[-1].pid == str(os.getpid())
    warnings = logread.read_file(text_source(path), flt=LogFilter(level="warning"))
    assert [r.level for r in warnings.records] == ["error", "warning"]
    daemon = logread.read_file(text_source(path), flt=LogFilter(component="daemon"))
    assert [r.message for r in daemon.records] == ["pool resized", "worker 2 idle",
                                                   "started with 4 workers"]
    found = logread.read_file(text_source(path), flt=LogFilter(text="REINJECT"))
    assert [r.component for r in found.records] == ["mail"]
    newest = logread.read_file(text_source(path), limit=2)
    assert [r.message for r in newest.records] == ["pool resized", "worker 2 idle"]


def test_json_lines_and_their_extra_fields(tmp_path):
    path = tmp_path / "lmsav.log"
    formatter = logsetup.LineFormatter("spool", "json")
    record = logging.LogRecord("lmsav.spool", logging.WARNING, __file__, 1, "held %s", ("e1",),
                               None)
    record.entry = "e1"
    path.write_text(formatter.format(record) + "\n")
    (only,) = logread.read_file(text_source(path)).records
    assert (only.component, only.level, only.message) == ("spool", "warning",
                                                          'held e1 {"entry": "e1"}')


def test_a_traceback_stays_with_its_record(tmp_path):
    path = tmp_path / "lmsav.log"
    formatter = logsetup.LineFormatter("daemon")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("lmsav.daemon", logging.ERROR, __file__, 1, "worker died",
                                   (), sys.exc_info())
    lines = real_lines(tmp_path)
    path.write_text("\n".join([lines[0], formatter.format(record), lines[1]]) + "\n")
    records = logread.read_file(text_source(path)).records
    assert len(records) == 3
    assert records[1].message.startswith("worker died\nTraceback (most recent call last):")
    assert records[1].message.endswith("RuntimeError: boom")
    boom = logread.read_file(text_source(path), flt=LogFilter(text="boom"))
    assert [r.level for r in boom.records] == ["error"]


def test_invalid_utf8_and_unknown_lines_are_shown_not_fatal(tmp_path):
    path = tmp_path / "lmsav.log"
    line = real_lines(tmp_path)[2].encode()
    path.write_bytes(b"\xff\xfe garbage from elsewhere\n" + line.replace(b"refused", b"r\xe9f\xc3")
                     + b"\n\x00\x00\n")
    records = logread.read_file(text_source(path)).records
    assert records[0].level == "error" and "r\ufffdf\ufffd" in records[0].message
    assert records[0].message.endswith("\n\x00\x00")  # kept with the record above it
    assert records[1].level == "" and records[1].message.startswith("\ufffd\ufffd garbage")


def test_a_200_mb_file_answers_fast_from_its_end(tmp_path):
    path = tmp_path / "big.log"
    lines = real_lines(tmp_path)
    with open(path, "wb") as fh:
        fh.truncate(200 << 20)  # sparse: 200 MB of NUL bytes…
        fh.seek(0, os.SEEK_END)
        block = ("\n".join(lines * 2000) + "\n").encode()  # …then ~1.3 MB of real lines
        fh.write(block)
    start = time.perf_counter()
    tail = logread.read_file(text_source(path), limit=500)
    assert time.perf_counter() - start < 0.5
    assert len(tail.records) == 500 and not tail.whole and tail.scanned < 4 << 20
    expected = [logread.parse_text_line(line).message for line in reversed(lines * 2000)]
    assert [r.message for r in tail.records] == expected[:500]  # across the blocks' seams
    # A filter nothing matches reads the budget and no more.
    start = time.perf_counter()
    none = logread.read_file(text_source(path), flt=LogFilter(text="no such words"))
    assert time.perf_counter() - start < 1.0
    assert none.records == [] and none.scanned == logread.SCAN_BYTES and not none.whole
    assert none.size == path.stat().st_size


def test_a_200_mb_file_of_one_line_is_bounded_too(tmp_path):
    path = tmp_path / "one.log"
    with open(path, "wb") as fh:
        fh.truncate(200 << 20)  # NUL bytes and no newline
    start = time.perf_counter()
    tail = logread.read_file(text_source(path))
    assert time.perf_counter() - start < 1.5
    assert tail.records == [] and tail.scanned == logread.SCAN_BYTES  # the cut line is left out


def test_missing_unreadable_and_special_files(tmp_path):
    assert logread.read_file(text_source(tmp_path / "none")).error.endswith("not written yet")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert logread.read_file(text_source(fifo)).error.endswith("not a regular file")


def test_cron_and_audit_lines(tmp_path):
    cron = tmp_path / "cron.log"
    cron.write_text('2026-12-04T03:00:00+00:00 name=nightly result=clean exit=0 files=10 '
                    'found=0 seconds=1.2 report=-\n'
                    '2026-12-04T04:00:00+00:00 name=db kind=update result=error exit=2 '
                    'version=- seconds=0.1 error="no source answered"\n')
    records = logread.read_file(LogSource("cron", "", cron, "cron")).records
    assert [(r.component, r.level) for r in records] == [("cron", "error"), ("cron", "info")]
    audit = tmp_path / "audit.jsonl"
    audit.write_text(json.dumps({"time": 1733300000.5, "user": "alice", "role": "admin",
                                 "address": "127.0.0.1", "action": "spool.release",
                                 "target": "1733.1.ab", "outcome": "ok"}) + "\n"
                     + json.dumps({"time": 1733300001, "user": "victor", "action":
                                   "settings.save", "target": "", "outcome": "refused",
                                   "detail": {"reason": "not allowed"}}) + "\n")
    records = logread.read_file(LogSource("audit", "", audit, "audit")).records
    assert records[0].level == "warning"
    assert records[0].message == 'victor settings.save refused {"reason": "not allowed"}'
    assert records[1].message == "alice spool.release 1733.1.ab ok from 127.0.0.1"
    assert records[1].component == "web" and records[1].time.startswith("2024-12-04")


def test_sources_follow_the_configuration(tmp_path):
    state = tmp_path / "state"
    path = tmp_path / "lmsav.toml"
    path.write_text(f'[paths]\nstate_dir = "{state}"\n[log]\ndestination = "file"\n'
                    f'file = "{tmp_path}/lmsav.log"\n[spool]\nlog_file = "{tmp_path}/lmsav.log"\n')
    settings = config_mod.load_settings(path)
    found = logread.sources(settings, state, journal_available=lambda: True)
    assert [(s.key, s.path) for s in found] == [
        ("log", tmp_path / "lmsav.log"),  # the spool's file is the same one: listed once
        ("cron", state / "log" / "cron.log"),
        ("audit", state / "web" / "audit.jsonl")]
    assert "destination is \"file\"" in logread.destination_note(settings)

    path.write_text(f'[paths]\nstate_dir = "{state}"\n[log]\ndestination = "journald"\n')
    settings = config_mod.load_settings(path)
    keys = [s.key for s in logread.sources(settings, state, journal_available=lambda: True)]
    assert keys == ["log", "cron", "audit", "journal"]
    keys = [s.key for s in logread.sources(settings, state, journal_available=lambda: False)]
    assert keys == ["log", "cron", "audit"]
    assert "journalctl -t lmsav-daemon" in logread.destination_note(settings)


def test_filters_refuse_unknown_values():
    with pytest.raises(ValueError, match="unknown component"):
        LogFilter(component="../etc")
    with pytest.raises(ValueError, match="unknown level"):
        LogFilter(level="loud")


def test_journal_argv_is_bounded_and_filtered():
    argv = logread.journal_argv(100, LogFilter(component="spool", level="warning"))
    assert argv == ["journalctl", "--no-pager", "--quiet", "--output=json", "--reverse",
                    "--lines=100", "--priority=warning", "--identifier=lmsav-spool"]
    argv = logread.journal_argv(1000, LogFilter(text="x"))
    assert "--lines=5000" in argv and "--identifier=lmsav" in argv
    assert "--identifier=lmsav-web" in argv


def test_journal_records_from_journalctl_json():
    out = "\n".join(json.dumps(fields) for fields in [
        {"MESSAGE": "held entry", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "lmsav-spool",
         "SYSLOG_PID": "42", "__REALTIME_TIMESTAMP": "1733300000000000",
         "LMSAV_COMPONENT": "spool"},
        {"MESSAGE": [104, 105, 255], "PRIORITY": "6", "SYSLOG_IDENTIFIER": "lmsav-daemon",
         "_PID": "7", "__REALTIME_TIMESTAMP": "1733300001000000"},
    ]).encode() + b"\n"
    calls = []

    def run(argv, **kwargs):
        calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 0, out, b"")

    tail = logread.read_journal(10, LogFilter(), run=run)
    assert calls[0][1]["timeout"] == logread.JOURNAL_TIMEOUT and "shell" not in calls[0][1]
    assert [(r.component, r.level, r.pid, r.message) for r in tail.records] == [
        ("spool", "warning", "42", "held entry"), ("daemon", "info", "7", "hi\ufffd")]

    def fails(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 1, b"", b"No journal files were found.\n")

    assert logread.read_journal(run=fails).error == ("journalctl failed: No journal files "
                                                     "were found.")
