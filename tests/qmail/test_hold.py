"""The "hold" action behind qmail, which has no hold queue: exit 0 (a temporary failure would
bring the message back forever), nothing handed to the held group's recipients, the notices
queued, and the original kept in lmsav's backup for the administrator."""

from __future__ import annotations

import pytest

from lmsav import paths
from lmsav.mail.backup import BackupStore

from . import conftest
from .conftest import EICAR, FakeQueue, Setup, envelope, submit
from .test_queue import message

HOLD = ('priority = 10\nrecipients = ["*@hold.example"]\ninfected_action = "hold"\n'
        'notify_recipients = []\nnotify_admin = ["infected"]\n'
        'admin_addresses = ["postmaster@mx.test"]\nnotice_from = "av@mx.test"\n')


@pytest.fixture(scope="module", params=["daemon", "in-process"])
def setup(tmp_path_factory, request):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(conftest.GROUPS, "hold.toml", HOLD)
        setup = Setup(tmp_path_factory.mktemp("qmail-hold"), daemon=request.param == "daemon")
    yield setup
    setup.stop_daemon()


def backups(setup: Setup) -> list:
    return BackupStore(paths.backup_dir(setup.root / "state")).list()


def test_a_held_message_is_accepted_delivered_to_no_one_and_kept(setup, tmp_path):
    queue = FakeQueue(tmp_path)
    raw = message(("eicar.com", EICAR), subject="held")
    before = len(backups(setup))
    r = submit(raw, envelope("alice@sender.example", "erin@hold.example"), setup.env(queue))
    assert r.code == 0, r.stderr
    assert "held by the anti-virus policy: infected (Eicar-Test-Signature)" in r.stderr
    assert "delivered to no one" in r.stderr
    # Only the administrator's notice was queued; the message went to no recipient.
    assert [rec["recipients"] for rec in queue.queued()] == [["postmaster@mx.test"]]
    kept = backups(setup)
    assert len(kept) == before + 1
    [entry] = [e for e in kept if e.subject == "held"]
    assert (entry.status, entry.recipients) == ("infected", ("erin@hold.example",))
    assert BackupStore(paths.backup_dir(setup.root / "state")).extract(entry.id) == raw


def test_clean_mail_of_a_holding_group_is_queued(setup, tmp_path):
    queue = FakeQueue(tmp_path)
    r = submit(message(subject="fine"), envelope("alice@sender.example", "erin@hold.example"),
               setup.env(queue))
    assert r.code == 0, r.stderr
    assert [rec["recipients"] for rec in queue.queued()] == [["erin@hold.example"]]
