"""A stand-in for qmail-smtpd under tcpserver: takes one message over the connection and hands
it to $QMAILQUEUE the way qmail-smtpd does (qmail.c), then reports the exit code
(and what the program said on standard error, for the test's messages).

Wire (tests only): 4-byte big-endian envelope length, the envelope, the message; the client
then shuts down its sending side. Reply: ``exit N``, the text from descriptor 4 if any, then standard error.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.qmail.conftest import submit  # noqa: E402


def main():
    data = sys.stdin.buffer.read()
    size = int.from_bytes(data[:4], "big")
    env_bytes, message = data[4:4 + size], data[4 + size:]
    program = os.environ.get("QMAILQUEUE", "/var/qmail/bin/qmail-queue")
    result = submit(message, env_bytes, dict(os.environ), program=program, custom_error=True)
    sys.stdout.buffer.write(b"exit %d %s\n%s" % (result.code, result.error,
                                                result.stderr.encode("utf-8", "replace")))
    sys.stdout.flush()


main()
