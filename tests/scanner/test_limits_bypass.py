"""A limit must not become a bypass: a threat placed after max_files decoy members is still found.

Members past the count limit are matched (hash and body signatures, on what was read anyway)
but not unpacked, while the byte and time budgets last; the container still records the limit,
and a threat found anywhere makes the verdict INFECTED. clamscan, on the same signatures, is the
oracle: lmsav finds at least what it finds.
"""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from email.message import EmailMessage
from pathlib import Path

import pytest

from lmsav.mail.groups import GroupPolicy, load_groups
from lmsav.mail.process import MailProcessor
from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import Status
from lmsav.scanner.signatures.database import Database
from tests.clamav import clamscan_found
from tests.conftest import write_db

MARKER = b"lmsav-limit-bypass-marker-5521"
# Repetitive, so that deflate leaves no copy of the marker in the archive's own bytes.
SAMPLE = b"#!/bin/sh\n# " + MARKER + b"\n" + b"echo 'padding line for compression'\n" * 50
THREATS = {"Lmsav.Test.LastMarker", "Lmsav.Test.LastSample"}


@pytest.fixture(scope="module")
def db_dir(tmp_path_factory) -> Path:
    return write_db(tmp_path_factory.mktemp("bypass-db"), {
        "t.ndb": f"Lmsav.Test.LastMarker:0:*:{MARKER.hex()}\n",
        "t.hdb": f"{hashlib.md5(SAMPLE).hexdigest()}:{len(SAMPLE)}:Lmsav.Test.LastSample\n",
    })


@pytest.fixture(scope="module")
def database(db_dir, tmp_path_factory) -> Database:
    return Database.load(str(db_dir), cache_path=tmp_path_factory.mktemp("bypass-cache") / "c")


def decoy_zip(decoys: int, last_name: str = "zzlast.sh", last: bytes = SAMPLE) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(decoys):
            zf.writestr(f"m{i:05d}.txt", b"member %d\n" % i)
        zf.writestr(last_name, last)
    data = buf.getvalue()
    assert MARKER not in data
    return data


def scan(database: Database, data: bytes, name: str, tmp_path, **limits):
    tmp_root = tmp_path / "scan-tmp"
    tmp_root.mkdir(exist_ok=True)
    return Engine(database, Limits(**limits), tmp_root=str(tmp_root)).scan_bytes(data, name)


def found_names(verdict) -> set[str]:
    return {threat.name for _path, threat in verdict.threats}


def reasons(verdict) -> set[str]:
    return {r.reason for r in verdict.walk() if r.reason}


@pytest.mark.parametrize("members", [10_001, 20_001])
def test_threat_after_ten_thousand_zip_members_is_found(database, db_dir, tmp_path, members):
    data = decoy_zip(members - 1)
    path = tmp_path / f"n{members}.zip"
    path.write_bytes(data)
    verdict = scan(database, data, path.name, tmp_path)
    assert verdict.status == Status.INFECTED
    assert found_names(verdict) == THREATS
    assert {p for p, _t in verdict.threats} == {f"{path.name}//zzlast.sh"}
    assert verdict.root.status == Status.ERROR  # the limit is still on record
    assert "limit: files 10000" in reasons(verdict)
    # Clean members past the limit stay out of the result tree.
    assert len(verdict.root.children) == 10_000 + 1
    # The oracle, with its own default --max-files of 10000, reports nothing here (it stops
    # counting and says OK): lmsav finds at least that, and more.
    oracle = clamscan_found(db_dir, [path]).get(path.name, set())
    assert oracle <= found_names(verdict)


def test_the_signatures_are_ones_clamscan_finds_below_its_limit(database, db_dir, tmp_path):
    path = tmp_path / "few.zip"
    path.write_bytes(decoy_zip(20))
    assert clamscan_found(db_dir, [path]).get(path.name) == THREATS
    assert found_names(scan(database, path.read_bytes(), path.name, tmp_path)) == THREATS


def empty_parts_mail(parts: int) -> bytes:
    out = [(b"From: a@example.org\nTo: b@example.org\nSubject: parts\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="BND"\n\n')]
    out += [b"--BND\n\n"] * (parts - 1)
    out.append(b'--BND\nContent-Type: application/octet-stream; name="last.sh"\n'
               b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(SAMPLE)
               + b"--BND--\n")
    return b"".join(out)


def test_threat_after_a_hundred_thousand_mail_parts_is_found(database, db_dir, tmp_path):
    path = tmp_path / "parts.eml"
    path.write_bytes(empty_parts_mail(100_000))
    oracle = clamscan_found(db_dir, [path]).get(path.name, set())
    assert oracle == THREATS
    verdict = scan(database, path.read_bytes(), path.name, tmp_path)
    assert verdict.status == Status.INFECTED
    assert found_names(verdict) >= oracle


@pytest.mark.integration
def test_threat_after_a_hundred_thousand_text_parts_is_found(database, tmp_path):
    out = [(b"From: a@example.org\nSubject: parts\nMIME-Version: 1.0\n"
            b'Content-Type: multipart/mixed; boundary="BND"\n\n')]
    out += [b"--BND\nContent-Type: text/plain\n\npart %d\n" % i for i in range(99_999)]
    out.append(b'--BND\nContent-Type: application/octet-stream; name="last.sh"\n'
               b"Content-Transfer-Encoding: base64\n\n" + base64.encodebytes(SAMPLE)
               + b"--BND--\n")
    verdict = scan(database, b"".join(out), "text-parts.eml", tmp_path)
    assert verdict.status == Status.INFECTED
    assert found_names(verdict) == THREATS
    assert "limit: files 10000" in reasons(verdict)


def test_members_past_the_limit_are_matched_but_not_unpacked(database, db_dir, tmp_path):
    inner = decoy_zip(0)
    inner_hash = f"{hashlib.md5(inner).hexdigest()}:{len(inner)}:Lmsav.Test.InnerZip\n"
    db = Database.load(str(write_db(tmp_path / "db", {"i.hdb": inner_hash,
                                                      **read_db(db_dir)})),
                       cache_path=tmp_path / "c")
    data = decoy_zip(60, "inner.zip", inner)
    within = scan(db, data, "within.zip", tmp_path)
    assert found_names(within) == THREATS | {"Lmsav.Test.InnerZip"}
    past = scan(db, data, "past.zip", tmp_path, max_files=50)
    assert found_names(past) == {"Lmsav.Test.InnerZip"}  # its bytes, not its members
    assert past.status == Status.INFECTED
    assert "limit: files 50" in reasons(past)


def read_db(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir()}


def test_members_past_the_limit_stay_within_the_byte_budget(database, tmp_path):
    filler = bytes(range(256)) * 256  # 64 KiB that deflate shrinks little
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(40):
            zf.writestr(f"f{i:02d}.bin", filler)
        zf.writestr("zzlast.sh", SAMPLE, zipfile.ZIP_DEFLATED)
    data = buf.getvalue()
    assert MARKER not in data
    roomy = scan(database, data, "roomy.zip", tmp_path, max_files=10, max_scan_size=8 << 20)
    assert found_names(roomy) == THREATS
    # The zip itself (2.6 MB) and about twenty of its members fit, not the last one.
    tight = scan(database, data, "tight.zip", tmp_path, max_files=10, max_scan_size=4 << 20)
    assert tight.status == Status.ERROR and found_names(tight) == set()
    assert reasons(tight) == {"limit: files 10"}  # the first limit met names the container
    assert len(tight.root.children) == 10


def test_members_past_the_limit_stay_within_the_time_budget(database, tmp_path):
    verdict = scan(database, decoy_zip(3000), "slow.zip", tmp_path, max_files=10,
                   max_scan_time=1e-9)
    assert verdict.status == Status.ERROR
    assert any(r.startswith("limit: time") for r in reasons(verdict))
    assert found_names(verdict) == set()


def mail_with_zip(data: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.org", "b@example.org", "files"
    msg.set_content("see attached\n")
    msg.add_attachment(data, maintype="application", subtype="zip", filename="files.zip")
    return msg.as_bytes()


@pytest.mark.parametrize("last, status", [(b"just text\n", "error"), (SAMPLE, "infected")])
def test_the_shipped_mail_policy_refuses_what_a_limit_left_unscanned(database, last, status):
    """Under the shipped default group, a message cut short by a limit is refused, not
    delivered; a threat past the limit makes it infected."""
    groups = load_groups(None)  # the shipped default group alone
    assert GroupPolicy("built-in").error_action == "reject"
    processor = MailProcessor(database, groups, Limits(max_files=50))
    raw = mail_with_zip(decoy_zip(60, last=last))
    [group] = processor.process(raw, "a@example.org", ["b@example.org"]).groups
    assert (group.group, group.status, group.action, group.message) == (
        "default", status, "reject", None)
    assert group.reject_reply.startswith("550 ")
