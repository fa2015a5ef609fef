"""`lmsav cron run`'s result line where [log] says; with the default stderr, to syslog (facility
cron) and never on the standard error that cron mails."""

from __future__ import annotations

import os
import socket

import pytest

from lmsav import logsetup
from tests.cron.test_run import env  # noqa: F401 - the stub scan's fixture


@pytest.fixture(autouse=True)
def clean_tree():
    yield
    logsetup.reset()


def test_with_stderr_the_result_goes_to_syslog_with_facility_cron(env, monkeypatch):  # noqa: F811
    syslog = env.tmp / "dev-log"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(syslog))
    receiver.settimeout(10)
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(syslog))
    try:
        result = env.invoke("run", "--quiet", "nightly")
        assert result.exit_code == 1
        datagram = receiver.recv(65536).decode()
    finally:
        receiver.close()
    cron_warning = 9 * 8 + 4
    assert datagram.startswith(f"<{cron_warning}>lmsav-cron[{os.getpid()}]: name=nightly "
                               f"result=found exit=1 files=3 found=1 ")
    assert "name=nightly" not in result.stderr  # only the command's own lines for cron to mail


def test_with_a_file_the_result_goes_there(env):  # noqa: F811
    log_file = env.tmp / "lmsav.log"
    env.config.write_text(env.config.read_text()
                          + f'\n[log]\ndestination = "file"\nfile = "{log_file}"\n')
    result = env.invoke("run", "nightly")
    assert result.exit_code == 1
    [line] = log_file.read_text().splitlines()
    assert f" lmsav-cron[{os.getpid()}]: warning: name=nightly result=found exit=1 " in line
    assert "name=nightly result=found" not in result.stderr
