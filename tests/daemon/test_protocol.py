"""The clamd protocol module: command framing, INSTREAM chunks, replies — no sockets."""

from __future__ import annotations

import struct

import pytest

from lmsav.daemon import protocol as proto
from lmsav.daemon.protocol import Cmd
from lmsav.scanner.objects import ObjectResult, Status, Threat, Verdict


def commands(data: bytes) -> list[proto.Command]:
    reader = proto.CommandReader()
    reader.feed(data)
    out = []
    while (cmd := reader.next()) is not None:
        out.append(cmd)
    return out


def test_z_commands_are_nul_terminated_and_pipelined():
    cmds = commands(b"zIDSESSION\0zPING\0zSCAN /a b\0")
    assert [c.cmd for c in cmds] == [Cmd.IDSESSION, Cmd.PING, Cmd.SCAN]
    assert cmds[2].arg == "/a b"
    assert all(c.term == b"\0" and not c.oldstyle for c in cmds)


def test_n_commands_are_newline_terminated_and_chomped():
    (cmd,) = commands(b"nCONTSCAN /tmp/x\r\n")
    assert (cmd.cmd, cmd.arg, cmd.term) == (Cmd.CONTSCAN, "/tmp/x", b"\n")


def test_bare_commands_are_one_packet_with_or_without_newline():
    assert commands(b"PING\n")[0].cmd is Cmd.PING
    assert commands(b"PING")[0].cmd is Cmd.PING
    assert commands(b"PING")[0].oldstyle


def test_partial_command_waits_for_its_terminator():
    reader = proto.CommandReader()
    reader.feed(b"zPI")
    assert reader.next() is None and reader.pending
    reader.feed(b"NG\0")
    assert reader.next().cmd is Cmd.PING


@pytest.mark.parametrize("line, oldstyle, expected", [
    (b"VERSIONCOMMANDS", False, Cmd.VERSIONCOMMANDS),  # not mistaken for VERSION
    (b"VERSION", False, Cmd.VERSION),
    (b"SCAN", False, Cmd.UNKNOWN),  # missing argument
    (b"PINGX", False, Cmd.UNKNOWN),  # trailing garbage
    (b"STATS", True, Cmd.UNKNOWN),  # new commands need a z/n prefix
    (b"INSTREAM", True, Cmd.UNKNOWN),
    (b"IDSESSION", True, Cmd.UNKNOWN),
    (b"ALLMATCHSCAN /x", True, Cmd.UNKNOWN),
    (b"SCAN /x", True, Cmd.SCAN),
    (b"FOO", False, Cmd.UNKNOWN),
])
def test_parse_command_follows_clamds_table(line, oldstyle, expected):
    assert proto.parse_command(line, oldstyle)[0] is expected


def test_overlong_command_is_a_protocol_error():
    reader = proto.CommandReader()
    reader.feed(b"z" + b"A" * (proto.MAX_COMMAND + 10))
    with pytest.raises(proto.ProtocolError):
        reader.next()


def test_instream_chunks_reassemble_across_any_split():
    body = proto.encode_chunks(b"hello world, " * 100, chunk=7) + b"zPING\0"
    for step in (1, 3, 4, 5, 64, len(body)):
        stream = proto.StreamReader(1 << 20)
        data, rest = bytearray(), b""
        for off in range(0, len(body), step):
            parts, rest = stream.feed(body[off:off + step])
            data += b"".join(bytes(p) for p in parts)
            if stream.done:
                rest += body[off + step:]
                break
        assert stream.done and bytes(data) == b"hello world, " * 100
        assert rest == b"zPING\0"


def test_instream_over_the_limit_is_refused_before_the_chunk_arrives():
    stream = proto.StreamReader(10)
    stream.feed(struct.pack(">I", 6) + b"123456")
    with pytest.raises(proto.StreamTooLong):
        stream.feed(struct.pack(">I", 5))
    assert proto.SIZE_LIMIT == "INSTREAM size limit exceeded. ERROR"


def test_mid_chunk_state_is_visible():
    stream = proto.StreamReader(100)
    stream.feed(struct.pack(">I", 10) + b"abc")
    assert stream.mid_chunk and not stream.done


def test_session_replies_carry_request_numbers():
    assert proto.frame("PONG", b"\0", 3) == b"3: PONG\0"
    assert proto.frame("stream: OK", b"\n") == b"stream: OK\n"


def test_version_splits_into_three_fields():
    product, db, date = proto.version("2026112401", 0).split("/")
    assert product.startswith("ClamAV") and "lmsav" in product
    assert db == "2026112401" and date
    assert "| COMMANDS: SCAN QUIT RELOAD PING" in proto.version_commands("1", 0)


def test_stats_has_clamds_layout():
    text = proto.stats(proto.PoolStats(4, 3, 4, 30, 0, ["SCAN /x"]))
    assert text.startswith("POOLS: 1\n\nSTATE: VALID PRIMARY\nTHREADS: live 4  idle 3 max 4")
    assert "QUEUE: 0 items" in text and text.endswith("\nEND")


def _verdict(status=Status.CLEAN, threats=(), reason="", ftype="", children=()):
    root = ObjectResult("f", ftype, 1, status, list(threats), reason, list(children))
    return Verdict(root)


def test_verdict_lines_found_ok_and_error():
    v = _verdict(Status.INFECTED, [Threat("Eicar-Test-Signature", "main.ndb")])
    assert proto.verdict_lines("/x", v, True)[0] == ["/x: Eicar-Test-Signature FOUND"]
    assert proto.verdict_lines("/x", _verdict(), True) == (["/x: OK"], Status.CLEAN)
    lines, status = proto.verdict_lines("/x", _verdict(Status.ERROR, reason="read error: EIO"),
                                        True)
    assert lines == ["/x: Read error: EIO ERROR"] and status is Status.ERROR


def test_allmatch_lists_every_threat():
    child = ObjectResult("f//a", "", 1, Status.INFECTED, [Threat("Two", "x")])
    v = _verdict(Status.INFECTED, [Threat("One", "x")], children=[child])
    assert proto.verdict_lines("/x", v, True, allmatch=True)[0] == ["/x: One FOUND",
                                                                     "/x: Two FOUND"]
    assert proto.verdict_lines("/x", v, True)[0] == ["/x: One FOUND"]


def test_heuristic_names_follow_clamd():
    enc = _verdict(Status.PROTECTED, reason="encrypted", ftype="zip")
    assert proto.verdict_lines("s", enc, True)[0] == ["s: Heuristics.Encrypted.Zip FOUND"]
    assert proto.verdict_lines("s", enc, False)[0] == ["s: OK"]
    seven = _verdict(Status.PROTECTED, ftype="7z")
    assert proto.verdict_lines("s", seven, True)[0] == ["s: Heuristics.Encrypted.7Zip FOUND"]
    big = _verdict(Status.ERROR, reason="limit: filesize 100")
    assert proto.verdict_lines("s", big, True)[0] == [
        "s: Heuristics.Limits.Exceeded.MaxFileSize FOUND"]
    assert proto.verdict_lines("s", big, False)[0] == ["s: OK"]
    broken = _verdict(Status.CORRUPTED, reason="corrupted", ftype="rar")
    assert proto.verdict_lines("s", broken, True)[0] == ["s: Heuristics.Broken.RAR FOUND"]
    assert proto.limit_name("limit: compression ratio 250") == "Heuristics.Limits.Exceeded"
