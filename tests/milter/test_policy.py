"""Plan → milter answer pieces: the reply line the MTA takes, and header edits by occurrence."""

from __future__ import annotations

import struct

from lmsav.milter import protocol
from lmsav.milter.policy import header_changes, parse_headers, smtp_reply


def test_reject_reply_keeps_a_4xx_or_5xx_and_fixes_anything_else():
    assert smtp_reply("550 5.7.1 Virus  found\n(Eicar)", "45") == "550 5.7.1 Virus found (Eicar)"
    assert smtp_reply("451 4.7.1 later", "45") == "451 4.7.1 later"
    assert smtp_reply("Virus found", "45") == "550 5.7.1 Virus found"
    assert smtp_reply("250 fine", "45") == "550 5.7.1 250 fine"
    assert smtp_reply("", "45") == "550 5.7.1 Message rejected by the anti-virus policy"


def test_header_edits_address_each_occurrence_and_keep_unchanged_ones():
    old = [("Received", "a"), ("Subject", "hi"), ("Received", "b"), ("X-AV-Status", "clean")]
    new = [("Received", "a"), ("Subject", "[VIRUS] hi"), ("Received", "b"),
           ("X-AV-Status", "infected"), ("X-AV-Threats", "Eicar")]
    assert header_changes(old, new) == [
        protocol.change_header("Subject", 1, "[VIRUS] hi"),
        protocol.change_header("X-AV-Status", 1, "infected"),
        protocol.add_header("X-AV-Threats", "Eicar"),
    ]
    # A header the new message no longer has is removed (an empty value).
    [removed] = header_changes([("A", "1"), ("A", "2")], [("A", "1")])
    assert removed == protocol.encode(protocol.CHGHEADER, struct.pack("!I", 2) + b"A\0\0")


def test_folded_headers_are_one_value_and_refolding_alone_is_no_change():
    raw = b"Subject: a long\r\n\tsubject\r\nTo: b@c\r\n\r\nbody"
    assert parse_headers(raw) == [("Subject", "a long\n\tsubject"), ("To", "b@c")]
    assert header_changes([("Subject", "a long subject")], parse_headers(raw)[:1]) == []
