"""lmsav-qmail-queue: run by qmail (qmail-smtpd, qmail-inject, …) in place of qmail-queue.

It reads the message from descriptor 0 and the envelope from descriptor 1, exactly as
qmail-queue(8) does, has the mail policy applied (by the running daemon, or in this process
when no daemon answers), and hands every resulting delivery to the real qmail-queue with the
same protocol. Its exit code is what qmail-smtpd turns into the SMTP reply:

    0   every delivery was accepted by the real qmail-queue (or the message was dropped or held)
    31  rejected by policy: permanent (5xx); with the custom-error patch, 82 and D<text> on fd 4
    71  temporary failure: database or daemon unavailable, timeout, internal error (4xx)
    91  the envelope does not follow the format
    54  the message or envelope could not be read
    other  the real qmail-queue's own exit code, passed through

qmail has no hold queue: a message every recipient's group holds is accepted (exit 0) and
handed to no one; lmsav's backup, always made for a held message, is the copy the
administrator can release (``lmsav backup``). A temporary failure instead would only bring the
message back, again and again.

It fails closed: whatever goes wrong inside is a temporary failure, so the client retries and
nothing is accepted unscanned. It runs once per message, so the path through the daemon imports
the standard library's cheapest modules only (no json, re, socket or tomllib).
"""

import os
import sys

try:  # the C module: `import signal` pulls in enum for nothing needed here
    import _signal
except ImportError:
    import signal as _signal

from ..mail import qmail_envelope as envelope
from ..mail.transfer import MAX_MESSAGE
from . import settings as settings_mod
from .errors import Defer, Refuse

EXIT_OK = 0
EXIT_REJECT = 31
EXIT_TEMPFAIL = 71
EXIT_CUSTOM_ERROR = 82
EXIT_READ = 54
EXIT_ENVELOPE = 91
CUSTOM_ERROR_FD = 4
PROG = "lmsav-qmail-queue"


USAGE = """usage: lmsav-qmail-queue   (run by qmail in place of qmail-queue; no arguments)

Reads a message on descriptor 0 and its envelope on descriptor 1 (F<sender>\\0, T<rcpt>\\0 ...,
\\0), applies lmsav's mail policy (through the running lmsav daemon, else in-process), and hands
each resulting delivery to the real qmail-queue. Set it per client as QMAILQUEUE in tcpserver's
rules: `lmsav setup qmail`. Exit 0 queued, 31 rejected (82 with custom_error), 71 try again
later, 91 bad envelope. See lmsav-qmail-queue(8).
"""


def main() -> int:
    if len(sys.argv) > 1:
        # qmail passes no arguments: these come from a person at a terminal.
        if sys.argv[1] in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return EXIT_OK
        if sys.argv[1] == "--version":
            from .. import __version__

            sys.stdout.write(f"lmsav-qmail-queue (lmsav) {__version__}\n")
            return EXIT_OK
        return _fail(EXIT_TEMPFAIL, f"unexpected argument {sys.argv[1]!r}; see --help")
    try:
        return run(os.environ)
    except Refuse as err:
        return _fail(err.code, str(err))
    except Defer as err:
        return _fail(EXIT_TEMPFAIL, str(err))
    except BaseException as err:  # noqa: BLE001 - fail closed, whatever it is
        return _fail(EXIT_TEMPFAIL, f"internal error: {type(err).__name__}: {err}")


def run(env) -> int:
    if env.get(settings_mod.ENV_BYPASS, "") not in ("", "0"):
        _bypass(env)
    try:
        conf = settings_mod.load(env)
    except settings_mod.SettingsError as err:
        raise Defer(str(err)) from None
    message = read_message(0)
    sender, recipients = read_envelope(1)
    plan = None
    if conf.use_daemon:
        from .daemon_client import DaemonUnavailable, ask

        try:
            plan = ask(conf.socket, message, sender, recipients, conf.group,
                       _client(env), conf.timeout)
        except DaemonUnavailable as err:
            if not conf.fallback:
                raise Defer(f"daemon at {conf.socket} unavailable and fallback is off: "
                            f"{err}") from None
    elif not conf.fallback:
        raise Defer("use_daemon and fallback are both off: nothing can scan")
    if plan is None:
        from .inprocess import plan_in_process

        plan = plan_in_process(conf, message, sender, recipients, conf.group, _client(env))
    return carry_out(conf, plan)


def carry_out(conf, plan) -> int:
    header, deliveries = plan
    accept = header["result"] != "reject"
    if header["result"] == "hold":  # said first: the last notice below may replace us
        _log(f"{header['reply'] or 'held'}; kept in lmsav's backup, delivered to no one")
    for i, (key, sender, recipients, body) in enumerate(deliveries):
        if accept and i == len(deliveries) - 1:
            # The last one: become the real qmail-queue (one process fewer per message); its
            # exit code is then ours, as it would be after waiting for it.
            exec_queue(conf.qmail_queue, sender, recipients, body)
        code = queue_one(conf.qmail_queue, sender, recipients, body)
        if code != 0:
            _log(f"{key}: {conf.qmail_queue} exited {code}")
            return code
    if header["result"] == "reject":
        return reject(conf, header["reply"] or "Message rejected by the anti-virus policy")
    return EXIT_OK


def reject(conf, reply: str) -> int:
    """31 (qmail-smtpd answers its own 5xx text), or the group's text through the custom-error
    convention: descriptor 4 carries D<text>, exit 82."""
    reply = " ".join(reply.split())
    _log(f"rejected: {reply}")
    if conf.custom_error:
        try:
            os.fstat(CUSTOM_ERROR_FD)
            data = ("D" + reply).encode("utf-8", "replace")
            if os.write(CUSTOM_ERROR_FD, data) == len(data):
                return EXIT_CUSTOM_ERROR
        except OSError:
            _log("custom_error is on but descriptor 4 is not open for writing; exit 31")
    return EXIT_REJECT


# -- reading what qmail hands over ---------------------------------------------------------------

def read_message(fd: int) -> int:
    """Copy descriptor 0 to end of file into a memory file; return that file's descriptor."""
    mem = os.memfd_create("lmsav-message", os.MFD_CLOEXEC)
    total = 0
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except InterruptedError:
                continue
            if not chunk:
                break
            total += len(chunk)
            if total > MAX_MESSAGE:
                raise Defer("message too large")
            _write_all(mem, chunk)
    except OSError as err:
        raise Refuse(EXIT_READ, f"cannot read the message: {err.strerror}") from None
    return mem


def read_envelope(fd: int) -> tuple[bytes, list[bytes]]:
    """Read descriptor 1 up to the envelope's final NUL (not necessarily to end of file)."""
    buf = bytearray()
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except InterruptedError:
            continue
        except OSError as err:
            raise Refuse(EXIT_READ, f"cannot read the envelope: {err.strerror}") from None
        buf += chunk
        try:
            sender, recipients, _end = envelope.parse(bytes(buf))
            return sender, recipients
        except envelope.Incomplete as err:
            if not chunk:
                raise Refuse(EXIT_ENVELOPE, f"malformed envelope: {err}") from None
            if len(buf) > envelope.MAX_ENVELOPE:
                raise Refuse(EXIT_ENVELOPE, "malformed envelope: larger than "
                                            f"{envelope.MAX_ENVELOPE} bytes") from None
        except envelope.EnvelopeError as err:
            raise Refuse(EXIT_ENVELOPE, f"malformed envelope: {err}") from None


# -- handing deliveries to the real qmail-queue --------------------------------------------------

def queue_one(program: str, sender: bytes, recipients: list[bytes], body: bytes) -> int:
    """Run the real qmail-queue with ``body`` on descriptor 0 and the envelope on 1 (memory
    files: it reads both to the end, so no pipe and no writer thread are needed)."""
    fds = _memory_files(body, envelope.encode(sender, recipients))
    try:
        try:
            # SIGPIPE back to default: Python ignores it, and ignored signals are inherited.
            pid = os.posix_spawn(program, [program], os.environ,
                                 file_actions=[(os.POSIX_SPAWN_DUP2, fds[0], 0),
                                               (os.POSIX_SPAWN_DUP2, fds[1], 1)],
                                 setsigdef=(_signal.SIGPIPE,))
        except OSError as err:
            raise Defer(f"cannot run {program}: {err.strerror}") from None
    finally:
        for fd in fds:
            os.close(fd)
    while True:
        try:
            _pid, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    code = os.waitstatus_to_exitcode(status)
    if code < 0:  # killed by a signal: qmail-smtpd would call that a temporary problem
        _log(f"{program} killed by signal {-code}")
        return EXIT_TEMPFAIL
    return code


def exec_queue(program: str, sender: bytes, recipients: list[bytes], body: bytes) -> None:
    """Replace this process with the real qmail-queue reading memory files on 0 and 1."""
    fds = _memory_files(body, envelope.encode(sender, recipients))
    os.dup2(fds[0], 0)
    os.dup2(fds[1], 1)
    for fd in fds:
        os.close(fd)
    _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
    try:
        os.execv(program, [program])
    except OSError as err:
        raise Defer(f"cannot run {program}: {err.strerror}") from None


def _memory_files(*contents: bytes) -> list[int]:
    fds = []
    try:
        for data in contents:
            fd = os.memfd_create("lmsav-queue", os.MFD_CLOEXEC)
            fds.append(fd)
            _write_all(fd, data)
            os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _bypass(env) -> None:
    """LMSAV_BYPASS=1 for this connection: become the real qmail-queue, descriptors untouched."""
    try:
        program = settings_mod.qmail_queue_only(env)
    except settings_mod.SettingsError as err:
        raise Defer(str(err)) from None
    try:
        _signal.signal(_signal.SIGPIPE, _signal.SIG_DFL)
        os.execv(program, [program])
    except OSError as err:
        raise Defer(f"cannot run {program}: {err.strerror}") from None


# -- small things --------------------------------------------------------------------------------

def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _client(env) -> str:
    ip = env.get("TCPREMOTEIP", "")
    return f"{ip} {env.get('TCPREMOTEHOST', '')}".strip() if ip else "local"


def _log(text: str) -> None:
    try:
        sys.stderr.write(f"{PROG}: {' '.join(text.split())}\n")
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001, S110 - a closed stderr must not change the exit code
        pass


def _fail(code: int, reason: str) -> int:
    _log(reason)
    return code


if __name__ == "__main__":
    sys.exit(main())
