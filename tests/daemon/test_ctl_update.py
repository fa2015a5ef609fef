"""`lmsav ctl update`: `lmsav update`'s work and words, then the running daemon reloaded onto the
new database; no reachable source is one clear error and exit 2, and `ctl status` reports it."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from lmsav.daemon.client import Client, ClientError
from tests.update.test_commands import Admin

from .test_ctl_status import LMSAV, Site

pytestmark = pytest.mark.integration


@pytest.fixture
def node(tmp_path):
    """Test database 2 installed by `lmsav update`, a real daemon scanning with it."""
    admin = Admin(tmp_path)
    admin.publish(2)
    assert admin.run().returncode == 0
    site = Site(admin.config)
    site.add("[snmp]\ndatabase_max_age = 0\n")  # ClamAV's test files were built in 2021
    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen([*LMSAV, "daemon", "--workers", "1"], env=site.env(),
                                  stdout=log, stderr=subprocess.STDOUT)
    client = Client(tmp_path / "run" / "clamd.sock", timeout=30)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.ping():
                break
        except ClientError:
            assert daemon.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "daemon.log").read_text()
            time.sleep(0.1)
    yield admin, site, client
    daemon.terminate()
    daemon.wait(30)


def test_update_then_reload_the_daemon(node):
    admin, site, client = node
    assert client.status()["database"]["version"] == "extra 7, test 2"
    admin.publish(3)
    updated = site.ctl("update")
    assert updated.returncode == 0, updated.stderr
    assert updated.stdout.splitlines() == [
        f"updated: test-3_extra-7 (test 2 -> 3 (full), extra 7 (unchanged)) from {admin.source}",
        "told: daemon: reload requested; spool watcher: not running",
        "reloaded: database extra 7, test 3"]
    assert client.status()["database"]["version"] == "extra 7, test 3"

    # Nothing new: `lmsav update` tells nobody, ctl reloads the daemon all the same.
    again = site.ctl("update")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        (f"current: test-3_extra-7 (test 3 (unchanged), extra 7 (unchanged)) from "
        f"{admin.source}"), "reloaded: database extra 7, test 3"]
    assert client.status()["reloads"] == 2
    assert site.ctl("status").returncode == 0


def test_no_source_reachable_is_exit_2_and_a_status_problem(node):
    admin, site, client = node
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    admin.configure([f"http://127.0.0.1:{port}/"], retries=1)
    site.add("[snmp]\ndatabase_max_age = 0\n")
    failed = site.ctl("update")
    assert failed.returncode == 2
    errors = failed.stderr.splitlines()
    assert errors[0].startswith(f"lmsav: error: http://127.0.0.1:{port}/")
    assert errors[-1] == ("lmsav: error: the databases were not updated (see above); the daemon "
                          "and the spool watcher keep the database they use")
    assert failed.stdout == "not updated: still using test-2_extra-7\n"
    assert client.status()["reloads"] == 0  # untouched

    status = site.ctl("status")
    assert status.returncode == 1
    assert status.stdout.splitlines()[-1].startswith("problem: the last update failed: ")
