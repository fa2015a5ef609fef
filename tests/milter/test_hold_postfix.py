"""A held message behind a real Postfix: the milter's QUARANTINE puts it in Postfix's hold
queue with lmsav's reason, nothing is delivered, and `postsuper -H` releases it unchanged."""

from __future__ import annotations

import time

import pytest

from tests.milter.conftest import infected
from tests.milter.test_postfix import SENDER, debug, smtp, stack  # noqa: F401 - the fixture
from tests.mta.conftest import parsed, token

pytestmark = pytest.mark.integration

HOLD_RCPT = "admin@clean.test"  # the milter tests' group "hold"


def held(postfix, tok: str, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [m for m in postfix.queue() if m.get("queue_name") == "hold"]
        if found:
            return found
        time.sleep(0.2)
    return []


def test_a_held_message_waits_in_postfix_hold_queue_and_is_released_unchanged(stack):  # noqa: F811
    postfix, boxes, port, root = stack
    tok = token()
    with smtp(port) as client:
        assert client.sendmail(SENDER, [HOLD_RCPT], infected(subject=tok, to=HOLD_RCPT)) == {}
    [message] = held(postfix, tok)
    assert [r["address"] for r in message["recipients"]] == [HOLD_RCPT], debug(root)
    # Postfix logs the hold, not the milter's reason (lmsav's own line says why).
    assert "milter triggers HOLD action" in postfix.log(), debug(root)
    time.sleep(1)
    assert boxes.messages(HOLD_RCPT, tok) == []  # on hold: not delivered
    # The administrator releases it: delivered as it was received, EICAR and all.
    postfix.run("postsuper", "-H", message["queue_id"])
    [delivered] = boxes.wait(HOLD_RCPT, tok)
    assert b"EICAR" in delivered or b"WDVPIVAlQEFQWzRcUFpYNTQoUF" in delivered
    assert parsed(delivered)["X-AV-Status"] is None
    assert postfix.queue() == []
