"""The daemon's private LMSAVMAIL command refuses what it cannot serve, with a reply."""

from __future__ import annotations

import os
import socket

from lmsav.mail import transfer


def _exchange(path, fds):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(transfer.COMMAND)
        socket.send_fds(s, [b"\0"], fds)
        out = b""
        while not out.endswith(b"\0"):
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
    return out.rstrip(b"\0").decode()


def test_wrong_number_of_descriptors(served):
    fd = os.memfd_create("x")
    try:
        assert _exchange(served.sock, [fd]) == "LMSAVMAIL ERROR expected 3 descriptors"
    finally:
        os.close(fd)


def test_garbage_request_is_an_error_not_a_crash(served):
    fds = [os.memfd_create(n) for n in ("req", "msg", "plan")]
    try:
        os.write(fds[0], b"not a request")
        reply = _exchange(served.sock, fds)
        assert reply.startswith("LMSAVMAIL ERROR ") and "request" in reply
        assert os.fstat(fds[2]).st_size == 0
        # The daemon is still there.
        os.ftruncate(fds[0], 0)
        os.pwrite(fds[0], transfer.encode_request(b"a@b.example", [b"c@d.example"]), 0)
        os.pwrite(fds[1], b"Subject: x\n\nhello\n", 0)
        assert _exchange(served.sock, fds) == transfer.REPLY_OK
        header, deliveries = transfer.read_plan(fds[2])
        assert header["result"] == "accept" and header["status"] == "clean"
        [(_key, sender, rcpts, body)] = deliveries
        assert (sender, rcpts) == (b"a@b.example", [b"c@d.example"])
        assert body.endswith(b"\n\nhello\n")
    finally:
        for fd in fds:
            os.close(fd)


def test_not_offered_by_versioncommands(served):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(served.sock))
        s.sendall(b"zVERSIONCOMMANDS\0")
        reply = s.recv(4096)
    assert b"LMSAVMAIL" not in reply and b"FILDES" in reply
