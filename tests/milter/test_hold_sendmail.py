"""A held message behind a real Sendmail: the milter's QUARANTINE makes Sendmail keep it in its
queue as a quarantined job (an ``hf`` file) with lmsav's reason, and nothing is relayed."""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.milter.conftest import infected
from tests.milter.test_sendmail import SENDER, debug, smtp, stack  # noqa: F401 - the fixture
from tests.mta.conftest import token

pytestmark = pytest.mark.integration

HOLD_RCPT = "erin@hold.test"  # the milter tests' group "hold"


def quarantined(root, timeout: float = 20.0) -> list[bytes]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p.read_bytes() for p in (root / "mqueue").iterdir() if p.name.startswith("hf")]
        if found:
            return found
        time.sleep(0.2)
    return []


def test_sendmail_quarantines_a_held_message_with_the_reason(stack):  # noqa: F811
    root = stack["root"]
    tok = token()
    with smtp(stack["port"]) as client:
        assert client.sendmail(SENDER, [HOLD_RCPT], infected(subject=tok, to=HOLD_RCPT)) == {}
    [control] = quarantined(root) or [b""]
    assert b"\nqheld by the anti-virus policy: infected (Eicar-Test-Signature)\n" in control, \
        debug(root)
    time.sleep(1)
    assert not [m for m in list(stack["sink"].messages) if tok.encode() in m]
    # Released as lmsav-milter(8) says: the job is an ordinary one again, delivered as received.
    [name] = [p.name for p in (root / "mqueue").iterdir() if p.name.startswith("hf")]
    # (with the host name the running Sendmail has: no DNS lookup of the real one)
    command = ["unshare", "--uts", "sh", "-c", 'hostname mta.test && exec "$@"', "sh",
               str(stack["bin"] / "sendmail"), "-C", str(stack["etc"] / "sendmail.cf")]
    subprocess.run([*command, "-Q", "-qQ", f"-qI{name[2:]}"], check=True,
                   capture_output=True, timeout=60)
    assert not [p for p in (root / "mqueue").iterdir() if p.name.startswith("hf")]
    subprocess.run([*command, f"-qI{name[2:]}"], check=True, capture_output=True, timeout=60)
    [delivered] = stack["sink"].wait(tok) or [None]
    assert delivered is not None and b"X-AV-Status" not in delivered, debug(root)
