"""A qmail-queue for tests, built to qmail-queue(8) and qmail-queue.c of netqmail 1.06.

What it checks, as the real one does:
- the message is read from descriptor 0 to end of file first (a read error exits 54);
- then the envelope is read from descriptor 1, byte by byte: the first byte must be ``F``
  (else 91), the sender ends at a NUL; each further item is ``T`` + address + NUL (any other
  first byte exits 91) until a lone NUL; end of file anywhere before that exits 54 (qmail's
  ``die_read``); an address of ADDR = 1003 bytes or more exits 11;
- nothing after the final NUL is read; descriptor 1 is only read, never written.
What it records instead of queueing, in ``$FAKE_QMAILQUEUE_DIR/<n>/``: ``message`` (with the
``Received`` line qmail-queue always adds on top), ``envelope`` (the raw bytes read) and
``info.json``. Exit codes to use come from ``$FAKE_QMAILQUEUE_DIR/exit``: one code per call,
separated by spaces; the last one repeats (default 0). A call that exits non-zero still leaves
its record, with ``"queued": false``.
"""

import json
import os
import sys
import time

ADDR = 1003


class Die(Exception):
    def __init__(self, code):
        self.code = code


def read_message(fd):
    parts = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            raise Die(54)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


class Envelope:
    def __init__(self, fd):
        self.fd = fd
        self.buf = b""
        self.pos = 0
        self.raw = bytearray()

    def get(self):
        if self.pos == len(self.buf):
            try:
                self.buf = os.read(self.fd, 4096)
            except OSError:
                raise Die(54)
            self.pos = 0
            if not self.buf:
                raise Die(54)
        ch = self.buf[self.pos]
        self.pos += 1
        self.raw.append(ch)
        return ch

    def address(self):
        out = bytearray()
        for _ in range(ADDR):
            ch = self.get()
            if ch == 0:
                return bytes(out)
            out.append(ch)
        raise Die(11)


def main():
    record_root = os.environ["FAKE_QMAILQUEUE_DIR"]
    n = 1
    while True:
        record = os.path.join(record_root, str(n))
        try:
            os.mkdir(record)
            break
        except FileExistsError:
            n += 1
    info = {"call": n, "uid": os.getuid(), "pid": os.getpid(), "queued": False,
            "fd0": _kind(0), "fd1": _kind(1)}
    code = 0
    message = b""
    env = None
    try:
        message = read_message(0)
        env = Envelope(1)
        if env.get() != ord("F"):
            raise Die(91)
        info["sender"] = env.address().decode("utf-8", "surrogateescape")
        rcpts = []
        while True:
            ch = env.get()
            if ch == 0:
                break
            if ch != ord("T"):
                raise Die(91)
            rcpts.append(env.address().decode("utf-8", "surrogateescape"))
        info["recipients"] = rcpts
        code = _planned_exit(record_root, n)
    except Die as die:
        code = die.code
    received = ("Received: (qmail %d invoked by uid %d); %s\n" % (
        os.getpid(), os.getuid(), time.strftime("%d %b %Y %H:%M:%S -0000", time.gmtime())))
    with open(os.path.join(record, "message"), "wb") as fp:
        fp.write(received.encode() + message)
    with open(os.path.join(record, "envelope"), "wb") as fp:
        fp.write(bytes(env.raw) if env is not None else b"")
    info["queued"] = code == 0
    info["exit"] = code
    with open(os.path.join(record, "info.json"), "w") as fp:
        json.dump(info, fp)
    sys.exit(code)


def _kind(fd):
    import stat

    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return "closed"
    return "pipe" if stat.S_ISFIFO(mode) else "file" if stat.S_ISREG(mode) else "other"


def _planned_exit(root, n):
    try:
        with open(os.path.join(root, "exit")) as fp:
            codes = [int(c) for c in fp.read().split()]
    except FileNotFoundError:
        return 0
    if not codes:
        return 0
    return codes[min(n, len(codes)) - 1]


if __name__ == "__main__":
    main()
