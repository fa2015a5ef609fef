"""Postfix and lmsav on the default paths, as an administrator sets them up: no --spool, no
$LMSAV_CONFIG, no [paths]. Postfix's pipe runs `lmsav enqueue` as the service user lmsav, the
spool watcher runs as root, and the mail is delivered, not deferred.

Everything runs in a tests.sysroot namespace, so /etc/lmsav, /var/lib/lmsav, /var/cache/lmsav and
the lmsav account are those a server would have, and the host's are untouched.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import stat
import subprocess
import time

import pytest

from tests.mta.conftest import (
    LMSAV,
    Mailboxes,
    PrivatePostfix,
    _chown,
    _make_root,
    build_message,
    enqueue_executable,
    free_port,
    have_postfix,
    parsed,
    token,
    wait_port,
)

pytestmark = pytest.mark.integration

SERVICE_USER = "lmsav"


def environment() -> dict:
    """The watcher's environment: nothing that names a configuration file or a spool."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LMSAV_")}


@pytest.fixture
def stack(sysroot):
    if not have_postfix():
        pytest.skip("Postfix is not installed (Debian package postfix)")
    root = _make_root("system")
    mailboxes = root / "mail"
    mailboxes.mkdir()
    mta = PrivatePostfix(root, free_port(), mailboxes, inside=lambda cmd: sysroot.command(*cmd))
    _chown(mailboxes, mta.user)
    reinject_port = free_port()
    watcher = None
    try:
        sysroot.add_system_user(SERVICE_USER, "/var/lib/lmsav")
        mta.configure()
        # The administrator's configuration: the reinjection port `lmsav setup` prints (a free
        # one here) and quick retries; nothing about where files go.
        etc = sysroot.path("/etc/lmsav")
        etc.mkdir(mode=0o755)
        (etc / "lmsav.toml").write_text(
            f'[spool]\nreinject = "smtp:127.0.0.1:{reinject_port}"\n'
            "retry_delay = 1\nrescan_interval = 1\nworkers = 1\n")
        lmsav_for_pipe = enqueue_executable(root, SERVICE_USER, runs=lambda command: sysroot.run(
            *command, user=SERVICE_USER, check=False).returncode == 0)
        # The pipe: what this layout proves is `lmsav enqueue` run by Postfix as the pipe user.
        setup = sysroot.run(LMSAV, "setup", "postfix", "--apply", "--pipe",
                            "--config-dir", str(mta.etc),
                            "--port", str(reinject_port), "--lmsav", lmsav_for_pipe,
                            env=environment())
        assert f"runs as {SERVICE_USER} and writes to /var/lib/lmsav/nqueue" in setup.stdout
        mta.start()
        wait_port(reinject_port)
        with open(root / "watch.log", "ab") as log:
            watcher = subprocess.Popen(sysroot.command(LMSAV, "spool", "watch"),
                                       env=environment(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while b"watching /var/lib/lmsav/nqueue" not in (root / "watch.log").read_bytes():
            assert watcher.poll() is None and time.monotonic() < deadline, \
                (root / "watch.log").read_text()
            time.sleep(0.1)
        yield sysroot, mta, Mailboxes(mailboxes), Logs(mta, root / "watch.log")
    finally:
        if watcher is not None:
            watcher.terminate()
            watcher.wait(30)
        mta.stop()
        shutil.rmtree(root, ignore_errors=True)


class Logs:
    """What Mailboxes.wait prints when the mail does not come."""

    def __init__(self, mta: PrivatePostfix, watch_log):
        self.mta, self.watch_log = mta, watch_log

    def debug(self) -> str:
        return (f"--- postfix log\n{self.mta.log()[-3000:]}\n--- lmsav spool watch log\n"
                f"{self.watch_log.read_text(errors='replace')[-3000:]}")


def test_mail_is_delivered_through_the_default_spool(stack):
    sysroot, mta, mail, logs = stack
    tok = token()
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, local_hostname="client.test",
                      timeout=30) as smtp:
        assert not smtp.sendmail("alice@senders.test", ["bob@clean.test"], build_message(tok))
    [got] = mail.wait("bob@clean.test", tok, stack=logs)
    assert parsed(got)["X-AV-Status"] == "clean" and parsed(got)["X-AV-Checked"]
    assert mta.queue() == []  # nothing deferred
    assert "status=deferred" not in mta.log()
    assert "relay=lmsav" in mta.log()  # it went through the pipe, as lmsav

    # The watcher, started as root, made the spool the service user's, and the pipe wrote there.
    uid, gid = sysroot.uid_of(SERVICE_USER), sysroot.gid_of(SERVICE_USER)
    for sub in ("", "/tmp", "/new", "/work", "/hold"):
        st = os.stat(sysroot.path("/var/lib/lmsav/nqueue" + sub))
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (uid, gid, 0o2770), sub
    assert not sysroot.path("/var/lib/lmsav/.local").exists()
    check = sysroot.run(LMSAV, "spool", "check", env=environment(), check=False)
    assert check.returncode == 0, check.stdout
