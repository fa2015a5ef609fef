"""``lmsav exim-acl``: Exim's DATA ACL asks the running daemon for the groups' decision.

Exim runs this through ``${run{…}}`` (see lmsav/spool/setup_exim_prequeue.py) once per message,
as its own user, with one argument: the file Exim's content scanning writes,
``$spool_directory/scan/<id>/<id>.eml``. That file is complete (every header, the whole body)
and starts with lines Exim writes itself: ``From …``, ``X-Envelope-From: <sender>`` (not for
a bounce) and ``X-Envelope-To: <recipient>, …``. The envelope comes from there because Exim (4.96 and later)
refuses to put data the client sent, such as ``$sender_address``, on a command line.

The message goes to the daemon as a descriptor over LMSAVMAIL (mail/transfer.py): the daemon
needs no access to Exim's spool. The answer is printed as lines the ACL splits with
``${extract{N}{\\n}{…}}``:

1. the action: ``accept``, ``reject``, ``defer``, ``discard``, ``hold`` or ``spool``;
2. the SMTP reply of ``reject`` and ``defer``, the reason of ``hold`` (``-`` otherwise);
3. the header names to remove, colon-separated (``-`` for none);
4. and after: the header lines to add.

``spool`` means a decision the ACL cannot apply — a changed body (cure, warn), different
messages for different recipients' groups, a message for only some recipients: Exim accepts
the message and its router hands it to ``lmsav enqueue`` after the queue, where the spool path
decides again and applies everything. ``hold`` (every recipient's group holds the message)
makes the ACL accept it frozen, unchanged (``control = freeze``): ``exim -Mt`` releases it,
``exim -Mrm`` deletes it. Every failure prints ``defer`` (fail-closed).

Only the standard library and mail/transfer.py are imported: this runs for every message.
"""

import os
import sys

from . import qmail_envelope, transfer

DEFER_REPLY = "451 4.3.0 Anti-virus check failed, try again later"
DEFAULT_REJECT = "550 5.7.1 Message rejected by the anti-virus policy"
DEFAULT_SOCKET = "/run/lmsav/clamd.sock"
MAX_HEADER_LINE = 998
USAGE = ("usage: lmsav exim-acl [--socket PATH] [--timeout SECONDS] [--reinject HOST:PORT] "
         "FILE.eml")


class AclError(Exception):
    """No decision for this message (the ACL defers it); one line for Exim's log."""


# -- the file Exim wrote ---------------------------------------------------------------------------

def read_scan_file(path: str) -> tuple[str, list[str], bytes]:
    """(sender, recipients, message) of Exim's ``.eml`` scan file."""
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except OSError as err:
        raise AclError(f"{path}: {err.strerror or err}") from None
    return parse_scan_file(data)


def parse_scan_file(data: bytes) -> tuple[str, list[str], bytes]:
    """Exim writes ``X-Envelope-From`` only when there is a sender: a bounce has none."""
    first, pos = _line(data, 0)
    if not first.startswith("From "):
        raise AclError("not an Exim scan file (no From line)")
    sender = ""
    line, pos = _line(data, pos)
    if line.startswith("X-Envelope-From: "):
        sender = line.partition(": ")[2].strip()
        if sender.startswith("<") and sender.endswith(">"):
            sender = sender[1:-1]
        line, pos = _line(data, pos)
    if not line.startswith("X-Envelope-To: "):
        raise AclError("not an Exim scan file (no X-Envelope-To line)")
    recipients = [r.strip() for r in line.partition(": ")[2].split(",") if r.strip()]
    if not recipients:
        raise AclError("scan file names no recipient")
    return sender, recipients, data[pos:]


def _line(data: bytes, pos: int) -> tuple[str, int]:
    end = data.find(b"\n", pos)
    if end < 0:
        raise AclError("scan file ends inside Exim's envelope lines")
    return data[pos:end].decode("utf-8", "surrogateescape"), end + 1


# -- the daemon -----------------------------------------------------------------------------------

def ask_daemon(path: str, message: bytes, sender: str, recipients: list[str], client: str,
               timeout: float):
    """The daemon's plan: (header, [(key, sender, recipients, body), ...])."""
    message_fd = os.memfd_create("lmsav-acl-message", os.MFD_CLOEXEC)
    try:
        transfer._pwrite_all(message_fd, message, 0)
        request = transfer.encode_request(
            qmail_envelope.raw(sender), [qmail_envelope.raw(r) for r in recipients], "", client)
        return transfer.ask(path, request, message_fd, timeout)
    except transfer.ExchangeError as err:
        message_text = str(err) if err.connected else f"daemon at {path}: {err}"
        raise AclError(message_text) from None
    finally:
        os.close(message_fd)


# -- the plan as the ACL's lines --------------------------------------------------------------------

def decision(header: dict, deliveries: list, message: bytes,
             recipients: list[str]) -> tuple[list[str], list]:
    """(the ACL's lines, the notices to send first)."""
    messages = [d for d in deliveries if d[0].endswith(":message")]
    notices = [d for d in deliveries if not d[0].endswith(":message")]
    if header["result"] == "reject":
        return lines("reject", smtp_reply(header["reply"], "5")), notices
    if header["result"] == "hold":
        return lines("hold", one_line(header["reply"]) or "held"), notices
    if not messages:
        return lines("discard"), notices  # every group dropped it
    if len(messages) > 1:
        return lines("spool"), []  # one message per group: after the queue
    _key, _sender, targets, body = messages[0]
    wanted = {qmail_envelope.text(r).lower() for r in targets}
    if wanted != {r.lower() for r in recipients}:
        return lines("spool"), []
    old_head, old_body = split(message)
    new_head, new_body = split(body)
    if _lf(old_body) != _lf(new_body):
        return lines("spool"), []  # cured or warned: Exim's ACL cannot change a body
    remove, add = header_changes(parse_headers(old_head), parse_headers(new_head))
    return lines("accept", "-", ":".join(remove) or "-", *add), notices


def lines(action: str, reply: str = "-", remove: str = "-", *add: str) -> list[str]:
    return [action, reply, remove, *add]


def one_line(text: str) -> str:
    """Printable ASCII on one line: the ACL writes it to Exim's log."""
    return "".join(c if " " <= c <= "~" else "?" for c in " ".join((text or "").split()))


def smtp_reply(reply: str, first_digit: str) -> str:
    """One line starting with a code of the class Exim needs (it ignores any other code)."""
    text = " ".join((reply or "").split())
    code, _, _rest = text.partition(" ")
    if len(code) == 3 and code.isdigit() and code[0] == first_digit:
        return text
    default = DEFAULT_REJECT if first_digit == "5" else DEFER_REPLY
    return f"{default[:9]} {text}" if text else default


def split(message: bytes) -> tuple[bytes, bytes]:
    """(header block, body) at the first empty line (LF or CRLF)."""
    pos = 0
    while pos < len(message):
        end = message.find(b"\n", pos)
        if end < 0:
            break
        if message[pos:end] in (b"", b"\r"):
            return message[:end + 1], message[end + 1:]
        pos = end + 1
    return message, b""


def _lf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    """(name, value unfolded to one line) of each header field."""
    out: list[tuple[str, str]] = []
    for line in _lf(block).decode("utf-8", "surrogateescape").split("\n"):
        if not line:
            continue
        if line[0] in " \t" and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip(), value.strip()))
    return out


def header_changes(old: list[tuple[str, str]],
                   new: list[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """(names to remove, lines to add): every header name whose fields differ is removed and
    its new fields added (Exim adds them after the others; their order among themselves is
    kept)."""
    remove, add = [], []
    names: dict[str, str] = {}
    for name, _ in old + new:
        names.setdefault(name.lower(), name)
    for key, name in names.items():
        before = [" ".join(v.split()) for n, v in old if n.lower() == key]
        after = [" ".join(v.split()) for n, v in new if n.lower() == key]
        if before == after:
            continue
        if before:
            remove.append(name)
        add += [f"{name}: {value}"[:MAX_HEADER_LINE] for value in after]
    return remove, add


# -- notices ----------------------------------------------------------------------------------------

def send_notices(notices: list, reinject: str) -> None:
    """The groups' notices, over SMTP to ``reinject`` (Exim's port that skips this ACL)."""
    if not notices:
        return
    if not reinject:
        raise AclError("notices to send but no --reinject address")
    import smtplib

    host, _, port = reinject.rpartition(":")
    try:
        with smtplib.SMTP(host or "127.0.0.1", int(port), timeout=60) as smtp:
            for _key, sender, recipients, body in notices:
                smtp.sendmail(qmail_envelope.text(sender),
                              [qmail_envelope.text(r) for r in recipients], body)
    except (OSError, ValueError, smtplib.SMTPException) as err:
        raise AclError(f"sending notices to {reinject}: {err}") from None


# -- the command ------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    """Print the ACL's lines; always 0 once arguments are understood (a ``defer`` says it)."""
    socket_path, timeout, reinject, client, files = DEFAULT_SOCKET, 60.0, "", "exim", []
    args = list(argv)
    try:
        while args:
            arg = args.pop(0)
            if arg in ("--socket", "--timeout", "--reinject", "--client"):
                value = args.pop(0)
                if arg == "--socket":
                    socket_path = value
                elif arg == "--timeout":
                    timeout = float(value)
                elif arg == "--reinject":
                    reinject = value
                else:
                    client = value
            elif arg in ("-h", "--help"):
                print(USAGE)
                return 0
            else:
                files.append(arg)
        if len(files) != 1:
            raise ValueError
    except (IndexError, ValueError):
        print(USAGE, file=sys.stderr)
        return 2
    try:
        sender, recipients, message = read_scan_file(files[0])
        header, deliveries = ask_daemon(socket_path, message, sender, recipients, client,
                                        timeout)
        out, notices = decision(header, deliveries, message, recipients)
        send_notices(notices, reinject)
    except AclError as err:
        out = lines("defer", f"{DEFER_REPLY} ({' '.join(str(err).split())})"[:400])
    sys.stdout.write("\n".join(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
