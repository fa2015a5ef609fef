"""A held message at the end of DATA: QUARANTINE with the reason, then ACCEPT, the message
unchanged (the MTA keeps it on hold); the notices go out as for any other action."""

from __future__ import annotations

from lmsav.mail.service import Plan
from lmsav.milter import protocol
from lmsav.milter.policy import answer
from tests.milter.conftest import ADMIN, build, infected
from tests.milter.test_protocol import transaction


def test_a_held_message_is_quarantined_with_the_reason_and_accepted_unchanged(milter):
    answers = transaction(milter, ["erin@hold.test"], infected(to="erin@hold.test"))
    assert [p.command for p in answers] == [protocol.QUARANTINE, protocol.ACCEPT]
    reason = answers[0].data.rstrip(b"\0").decode()
    assert reason == "held by the anti-virus policy: infected (Eicar-Test-Signature)"
    # The administrator hears of it, as for a rejection.
    assert any(ADMIN.encode() in n and b"erin@hold.test" in n for n in milter.notice_files())


def test_clean_mail_of_a_holding_group_is_not_held(milter):
    answers = transaction(milter, ["erin@hold.test"], build(to="erin@hold.test"))
    assert answers[-1].command == protocol.ACCEPT
    assert protocol.QUARANTINE not in [p.command for p in answers]


class _Outcome:
    groups = ()


def test_a_plan_from_the_daemon_holds_by_its_result_and_reason():
    # The daemon's plan file carries result and reply only (milter/daemon_backend.py).
    plan = Plan(_Outcome(), [], "hold", "held by the anti-virus policy: suspicious")
    reply = answer(plan, [("Subject", "x")], b"body\r\n", ["a@b.test"])
    assert reply.summary == "hold"
    assert reply.packets == [protocol.quarantine("held by the anti-virus policy: suspicious"),
                             protocol.encode(protocol.ACCEPT)]
