"""Every evasive variant of a mail (tests/fuzz/evasive.py) that clamscan finds, lmsav finds.

Both scan the same files with the same two-signature database (a body and a hash signature of
the attachment), each in one run: clamscan starts slowly.
"""

from __future__ import annotations

import email
import email.policy

import pytest

from tests.clamav import clamscan_found
from tests.conftest import write_db
from tests.fuzz import evasive
from tests.scanner.test_differential_engine import lmsav_names

VARIANTS = evasive.variants()


def test_variants_are_deterministic_and_distinct():
    again = evasive.variants()
    assert [(v.name, v.data) for v in again] == [(v.name, v.data) for v in VARIANTS]
    assert len({v.data for v in VARIANTS}) == len(VARIANTS)
    singles = [v for v in VARIANTS if "+" not in v.name and v.name != "v000-plain"]
    assert len(singles) == len(evasive.TRANSFORMS)  # no transform renders the plain message
    assert len(VARIANTS) > 150  # and the pairs are there


def test_the_plain_message_carries_the_attachment_byte_for_byte():
    msg = email.message_from_bytes(VARIANTS[0].data, policy=email.policy.compat32)
    attached = [p.get_payload(decode=True) for p in msg.walk() if p.get_filename()]
    assert attached == [evasive.payload()]
    assert evasive.SIGNATURE not in VARIANTS[0].data  # found only by decoding


@pytest.mark.integration
def test_lmsav_finds_every_variant_clamscan_finds(tmp_path):
    db = write_db(tmp_path / "db", evasive.database())
    files = tmp_path / "mail"
    files.mkdir()
    for v in VARIANTS:
        (files / f"{v.name}.eml").write_bytes(v.data)
    clam = clamscan_found(db, sorted(files.iterdir()))
    ours = lmsav_names(db, files)
    # The comparison is not vacuous: clamscan finds both signatures in the plain message.
    assert clam.get("v000-plain.eml") == evasive.THREATS
    missed = {}
    for v in VARIANTS:
        lost = clam.get(f"{v.name}.eml", set()) - ours.get(f"{v.name}.eml", set())
        if lost:
            missed[v.name] = f"{v.description} (missed: {', '.join(sorted(lost))})"
    assert not missed, "clamscan finds, lmsav does not:\n" + "\n".join(
        f"  {name}: {why}" for name, why in missed.items())
