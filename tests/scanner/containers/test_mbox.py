"""An mbox mailbox splits into its messages, each scanned as mail."""

from __future__ import annotations

import mailbox
from email.message import EmailMessage
from pathlib import Path


from lmsav.scanner.containers import handler_for
from lmsav.scanner.containers.mbox import MboxHandler
from lmsav.scanner.filetype import sniff
from lmsav.scanner.objects import ScanObject
from tests.conftest import EICAR
from tests.scanner.containers.helpers import explode_with


def message(subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.org"
    msg["To"] = "b@example.org"
    msg["Subject"] = subject
    msg.set_content(body)
    return msg


def build_mbox(path: Path, messages: list[EmailMessage]) -> bytes:
    box = mailbox.mbox(path)
    for msg in messages:
        box.add(msg)
    box.flush()
    box.close()
    return path.read_bytes()


def explode(obj: ScanObject) -> list:
    return explode_with(MboxHandler(), obj)


def test_registered_for_mbox():
    assert isinstance(handler_for("mbox"), MboxHandler)


def test_stdlib_mbox_splits_into_messages_that_sniff_as_mail(tmp_path):
    data = build_mbox(tmp_path / "box", [message("one", "first\n"), message("two", "second\n")])
    assert sniff(data) == "mbox"
    got = explode(ScanObject("box", data=data))
    assert [c.name for c in got] == ["msg1", "msg2"]
    assert all(sniff(c.data) == "mail" for c in got)
    assert b"Subject: one" in got[0].data and b"first" in got[0].data
    assert b"Subject: two" in got[1].data and b"first" not in got[1].data
    assert not got[0].data.startswith(b"From ")  # the envelope line is not part of the message


def test_from_line_inside_a_body_does_not_split(tmp_path):
    raw = (
        b"From alice@example.org Mon Jan  1 00:00:00 2024\n"
        b"From: alice@example.org\nTo: b@example.org\nSubject: quote\n\n"
        b"As I wrote:\nFrom here on it's fine.\n\n"
        b"From bob@example.org Mon Jan  1 00:00:01 2024\n"
        b"From: bob@example.org\nTo: b@example.org\nSubject: next\n\nbody\n"
    )
    got = explode(ScanObject("box", data=raw))
    assert [c.name for c in got] == ["msg1", "msg2"]
    assert b"From here on it's fine." in got[0].data
    assert got[1].data.startswith(b"From: bob@example.org")


def test_large_mbox_read_through_mmap(tmp_path):
    big = "x" * 1000 + "\n"
    msgs = [message(f"m{i}", big * 300) for i in range(5)]  # ~1.5 MB: mapped, not read whole
    path = tmp_path / "big.mbox"
    build_mbox(path, msgs)
    with ScanObject.from_path(path) as obj:
        got = explode(obj)
    assert [c.name for c in got] == [f"msg{i}" for i in range(1, 6)]
    assert all(f"Subject: m{i}".encode() in c.data for i, c in enumerate(got))


# -- through the engine -------------------------------------------------------------------------


def test_engine_finds_eicar_attached_to_second_message(engine, tmp_path):
    infected = message("bad", "see attachment\n")
    infected.add_attachment(EICAR, maintype="application", subtype="octet-stream",
                            filename="eicar.com")
    data = build_mbox(tmp_path / "box", [message("ok", "clean\n"), infected])
    verdict = engine.scan_bytes(data, "inbox")
    assert [(p, t.name) for p, t in verdict.threats] == [
        ("inbox//msg2//2:eicar.com", "Eicar-Test-Signature")
    ]
