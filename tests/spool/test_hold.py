"""The "hold" action after the queue: the entry waits in hold/ with the reason once the rest of
its plan is delivered; `lmsav spool release` delivers the message as received to the held
group's recipients and nothing else again; `lmsav spool delete` removes it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from lmsav.spool.commands import spool as spool_group
from lmsav.spool.watcher import DeliveredStore
from tests.conftest import EICAR
from tests.spool import test_watcher
from tests.spool.test_watcher import Setup, kind, make_message, parsed, spool_log  # noqa: F401

HELD = """
priority = 20
recipients = ["*@held.example"]
infected_action = "hold"
notify_recipients = []
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setitem(test_watcher.GROUPS, "held.toml", HELD)
    return Setup(tmp_path)


def spool_command(setup: Setup, *args: str):
    runner = CliRunner(env={"LMSAV_CONFIG": str(setup.config)})
    out = runner.invoke(spool_group, list(args))
    assert out.exit_code == 0, out.output
    return out


def test_a_held_message_waits_in_hold_then_release_delivers_it_unchanged(setup, spool_log):  # noqa: F811
    raw = make_message(1, ("eicar.com", EICAR))
    entry_id = setup.enqueue(raw, "alice@example.org", "carol@held.example",
                             "dave@warned.example", queue_id="QHOLD")
    assert setup.watcher().run(once=True) == 0
    # The other group's copy and the administrator's notice went out; the held group got nothing.
    first = [(r, kind(m)) for _s, r, m in setup.deliveries()]
    assert sorted(first) == [(("dave@warned.example",), "message"),
                             (("postmaster@example.net",), "notice")]
    [(state, entry)] = setup.spool.list()
    assert (state, entry.id, entry.attempts) == ("hold", entry_id, 0)
    assert entry.reason == ("held by the anti-virus policy: group held infected "
                            "(Eicar-Test-Signature)")
    line = next(ln for ln in spool_log.read_text().splitlines() if "QHOLD" in ln)
    assert "action=hold,warn" in line and "result=held" in line
    assert "held by the anti-virus policy" in spool_command(setup, "list").output

    spool_command(setup, "release", entry_id)
    assert setup.watcher().run(once=True) == 0
    got = setup.deliveries()
    assert len(got) == 3  # nothing sent twice
    [(sender, _rcpts, released)] = [d for d in got if d[1] == ("carol@held.example",)]
    assert (sender, released) == ("alice@example.org", raw)  # as received: no X-AV headers
    assert parsed(released)["X-AV-Status"] is None
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}
    assert DeliveredStore(setup.spool.root).load(entry_id) == {}


def test_a_held_message_deleted_by_the_administrator_is_never_delivered(setup):
    entry_id = setup.enqueue(make_message(2, ("eicar.com", EICAR)), "alice@example.org",
                             "carol@held.example")
    setup.watcher().run(once=True)
    assert setup.states()["hold"] == 1
    assert [r for _s, r, _m in setup.deliveries()] == [("postmaster@example.net",)]
    spool_command(setup, "delete", entry_id)
    setup.watcher().run(once=True)
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}
    assert [r for _s, r, _m in setup.deliveries()] == [("postmaster@example.net",)]
    assert DeliveredStore(setup.spool.root).load(entry_id) == {}


def test_clean_mail_of_a_holding_group_is_delivered_at_once(setup):
    setup.enqueue(make_message(3), "alice@example.org", "carol@held.example")
    setup.watcher().run(once=True)
    assert [(r, kind(m)) for _s, r, m in setup.deliveries()] == [
        (("carol@held.example",), "message")]
    assert setup.states() == {"new": 0, "work": 0, "hold": 0}
