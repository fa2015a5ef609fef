"""lmsav-qmail-queue as qmail runs it on a server: as qmaild, with the HOME=/root tcpserver keeps,
without a terminal, without $LMSAV_CONFIG, and with no daemon running, so it scans in-process
on the default paths. A clean message is queued; nothing is looked for under /root.

Run in a tests.sysroot namespace: /etc/lmsav, /var/lib/lmsav, /var/cache/lmsav and the accounts
are those of a server, the host's are untouched.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

import pytest

from lmsav import paths
from tests.qmail.conftest import FakeQueue, envelope, submit

pytestmark = pytest.mark.integration

CLEAN = (b"From: a@b.example\r\nTo: c@d.example\r\nSubject: hello\r\n"
         b"Message-ID: <1@b.example>\r\n\r\nNothing to see.\r\n")


@pytest.fixture
def public_root():
    """A directory qmaild can reach (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="lmsav-qmaild-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def as_qmaild(sysroot, root: Path, wrapper: str) -> str:
    """What tcpserver and qmail-smtpd make of the wrapper: qmaild's uid and groups, HOME=/root."""
    script = root / "as-qmaild"
    command = " ".join(sysroot.command("env", "HOME=/root", wrapper, user="qmaild"))
    script.write_text(f"#!/bin/sh\nexec {command}\n")
    script.chmod(0o755)
    return str(script)


def test_qmaild_with_roots_home_and_no_daemon_queues_a_clean_message(sysroot, public_root):
    # The administrator's steps: the service account, qmaild in its group (lmsav-qmail-queue(8)),
    # the directories `lmsav spool check` asks for, a database directory only root writes.
    sysroot.add_system_user("lmsav", "/var/lib/lmsav")
    sysroot.add_system_user("qmaild", "/var/qmail", "lmsav")
    lmsav = sysroot.program("lmsav")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}
    out = sysroot.run(lmsav, "spool", "check", env=env, check=False).stdout
    for command in out.split("To fix, run as root:\n", 1)[1].splitlines():
        sysroot.run("sh", "-c", command)
    database = public_root / "clamav"
    shutil.copytree(paths.bundled_database_dir(), database,
                    ignore=shutil.ignore_patterns(".compiled*"))
    database.chmod(0o755)
    sysroot.path("/etc/lmsav").mkdir(mode=0o755)
    sysroot.path("/etc/lmsav/lmsav.toml").write_text(f'[paths]\ndatabase = "{database}"\n')

    queue = FakeQueue(public_root / "q")
    (public_root / "q").chmod(0o755)
    program = as_qmaild(sysroot, public_root, sysroot.program("lmsav-qmail-queue"))
    qmail_env = {"PATH": "/usr/bin:/bin", "TCPREMOTEIP": "127.0.0.1",
                 "LMSAV_QMAILQUEUE": str(queue.program), "FAKE_QMAILQUEUE_DIR": str(queue.dir)}
    r = submit(CLEAN, envelope("a@b.example", "c@d.example"), qmail_env, program=program)
    assert r.code == 0, r.stderr
    [record] = queue.queued()
    assert record["uid"] == sysroot.uid_of("qmaild")
    assert b"X-AV-Status: clean" in record["message"]
    # The system layout, whatever HOME said: the statistics in /var/lib/lmsav, the compiled
    # database in /var/cache/lmsav (the database directory is root's).
    copy = Path(tempfile.mkdtemp())  # read outside the namespace: the WAL beside the file
    for name in ("stats.sqlite", "stats.sqlite-wal"):
        shutil.copy(sysroot.path(f"/var/lib/lmsav/stats/{name}"), copy / name)
    with sqlite3.connect(copy / "stats.sqlite") as stats:
        assert stats.execute("SELECT count(*) FROM messages").fetchone() == (1,)
    shutil.rmtree(copy)
    [compiled] = sysroot.path("/var/cache/lmsav").glob("db-*.lmsavc")
    assert compiled.stat().st_gid == sysroot.gid_of("lmsav")
