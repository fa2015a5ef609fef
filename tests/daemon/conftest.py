"""The running daemon most tests here talk to (tests/daemon/test_server.py's Daemon)."""

import pytest

from tests.daemon.test_server import Daemon


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path)
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()
