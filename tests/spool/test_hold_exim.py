"""The "hold" action in Exim's DATA ACL (`lmsav setup exim --pre-queue`): `lmsav exim-acl`
prints ``hold`` and the reason, the ACL accepts the message frozen and unchanged, and a thaw
(`exim -Mt`) delivers it as received."""

from __future__ import annotations

import time

import pytest

from lmsav.mail import acl
from lmsav.spool import setup_exim_prequeue
from tests.mta import test_exim_prequeue as prequeue
from tests.mta.conftest import infected_message, parsed, split_message, token
from tests.mta.test_exim_prequeue import exim, stack  # noqa: F401 - the fixtures

HELD = "admin@clean.test"  # a mailbox of the Exim stack; its group holds infected mail


def test_a_plan_every_group_holds_becomes_hold_and_the_reason_with_its_notices():
    notice = ("notice1:admin", b"av@mx.test", [b"admin@admin.test"], b"notice")
    header = {"result": "hold", "reply": "held by the anti-virus policy: infected\n(Eicar)"}
    lines, notices = acl.decision(header, [notice], b"Subject: x\n\nbody\n", [HELD])
    assert lines == ["hold", "held by the anti-virus policy: infected (Eicar)", "-"]
    assert notices == [notice]


def test_the_acl_freezes_a_held_message_and_marks_it_for_normal_delivery():
    text = "\n".join(setup_exim_prequeue.acl_lines(setup_exim_prequeue.Options(
        "/usr/bin/lmsav", "Debian-exim", 10025, "/var/spool/lmsav", "/run/lmsav/clamd.sock",
        60)))
    block = text.split("{hold}}", 1)[1].split("  accept", 1)[0]
    assert "control = freeze/no_tell" in block
    assert "logwrite = lmsav: ${extract{2}" in block
    assert "set acl_m_lmsav = done" in block  # thawed, it is delivered as usual, not re-scanned


@pytest.fixture(scope="module")
def held_group():
    prequeue.EXTRA_GROUPS["held.toml"] = (f'priority = 30\nrecipients = ["{HELD}"]\n'
                                          'infected_action = "hold"\n')
    yield
    del prequeue.EXTRA_GROUPS["held.toml"]


def frozen(running, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for block in running.mta.queue():
            if "*** frozen ***" in block:
                return block.split()[2]  # "age size id <sender> *** frozen ***"
        time.sleep(0.2)
    raise AssertionError(f"no frozen message\n{running.debug()}")


@pytest.mark.integration
@pytest.mark.parametrize("stack", ["own"], indirect=True)
def test_exim_keeps_a_held_message_frozen_until_thawed(held_group, stack):  # noqa: F811
    import subprocess

    tok = token()
    sent = infected_message(tok, to=HELD)
    assert stack.send(sent, [HELD]) == {}
    exim_id = frozen(stack)
    assert "lmsav: held by the anti-virus policy: infected" in stack.mta.log(), stack.debug()
    time.sleep(1)
    assert not [m for m in stack.mail.messages(HELD, tok) if parsed(m)["X-Test-Token"] == tok]
    subprocess.run(stack.mta.command("-Mt", exim_id), check=True, capture_output=True)
    subprocess.run(stack.mta.command("-M", exim_id), check=True, capture_output=True)
    got = prequeue.the_message(stack, HELD, tok)
    assert split_message(got)[1] == split_message(sent)[1]  # the infected body, intact
    assert parsed(got)["X-AV-Status"] is None  # unchanged: not stamped, not re-scanned
    assert len(parsed(got).get_all("Received")) == 1
