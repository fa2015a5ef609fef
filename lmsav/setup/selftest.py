"""The closing self-test of `lmsav setup`: a clean message and an EICAR message go through the
MTA as any client's would, and lmsav's own record says what happened to each.

Postfix and Exim: both messages are sent over SMTP (to 127.0.0.1:25 unless the answers say
otherwise); the spool watcher's log line for each (by Message-ID) gives status, action and
result. qmail: both are handed to lmsav-qmail-queue as qmail-smtpd does, as qmaild with HOME=/root
(what tcpserver leaves it), and the exit code is the answer.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import os
import re
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
import tomllib
import uuid
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from .. import paths
from ..spool.watcher import LOCK_NAME

QMAIL_ACCOUNT = "qmaild"
# lmsav-qmail-queue's exit codes (lmsav-qmail-queue(8)).
QMAIL_CODES = {0: "accepted and queued", 31: "rejected (policy)", 82: "rejected (policy)",
               71: "deferred (temporary failure)", 91: "refused (bad envelope)"}
FINAL_RESULTS = ("done", "held")
_FIELD_RE = re.compile(r"(\w+)=(\S*)")


@dataclass
class Check:
    name: str
    ok: bool | None  # None: could not be run (not a failure of lmsav's)
    detail: str


def eicar() -> bytes:
    """The EICAR test file, from the bundled database's self-test samples (kept base64-encoded
    so no live sample sits in the package)."""
    samples = tomllib.loads((paths.bundled_database_dir() / "selftest.toml").read_text())
    for sample in samples["sample"]:
        if sample["name"] == "eicar":
            return base64.b64decode(sample["data_base64"])
    raise LookupError("no EICAR sample in the bundled database")


def messages(sender: str, recipient: str) -> list[tuple[str, EmailMessage]]:
    host = socket.getfqdn()
    out = []
    for name in ("clean", "eicar"):
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = recipient
        msg["Subject"] = f"lmsav setup self-test: {name} message"
        msg["Message-ID"] = make_msgid(f"lmsav-selftest-{name}-{uuid.uuid4().hex[:12]}", host)
        msg.set_content(f"This message was sent by `lmsav setup` to check that mail passes "
                        f"through lmsav ({name} test).\n")
        if name == "eicar":
            msg.add_attachment(eicar(), maintype="application", subtype="octet-stream",
                               filename="eicar.com")
        out.append((name, msg))
    return out


# -- before the queue: the SMTP reply is the result ------------------------------------------------

def at_smtp_time(smtp: str, sender: str, recipient: str) -> list[Check]:
    """An MTA asking lmsav before the queue (milter, Exim's DATA ACL) answers the end of DATA
    with the verdict: the clean message is accepted, EICAR refused with the group's 5xx."""
    host, _, port = smtp.rpartition(":")
    checks = []
    for name, msg in messages(sender, recipient):
        try:
            with smtplib.SMTP(host.strip("[]"), int(port), timeout=60) as client:
                client.send_message(msg, sender, [recipient])
            code, reply = 250, "accepted"
        except smtplib.SMTPRecipientsRefused as err:
            code, text = next(iter(err.recipients.values()))
            reply = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
        except smtplib.SMTPResponseException as err:
            code = err.smtp_code
            reply = err.smtp_error.decode(errors="replace") \
                if isinstance(err.smtp_error, bytes) else str(err.smtp_error)
        except (OSError, smtplib.SMTPException) as err:
            return [Check("smtp", False, f"the MTA at {smtp} did not take the test messages: "
                                         f"{err}")]
        reply = " ".join(reply.split())
        if name == "clean":
            checks.append(Check(name, code == 250, "accepted at SMTP time" if code == 250
                                else f"refused: {code} {reply}"))
        elif 500 <= code < 600:
            checks.append(Check(name, True, f"refused at SMTP time: {code} {reply}"))
        elif code == 250:
            checks.append(Check(name, None, "accepted: the group's policy does not reject "
                                            "infected mail (see the X-AV headers it gets)"))
        else:
            checks.append(Check(name, False, f"deferred: {code} {reply} (is lmsav milter or "
                                             f"the daemon running?)"))
    return checks


# -- Postfix and Exim: through SMTP and the spool ------------------------------------------------

def watcher_running(spool: Path) -> bool:
    """Whether a `lmsav spool watch` holds the spool's lock."""
    try:
        fd = os.open(spool / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except OSError as err:
        return err.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)


def through_spool(settings, smtp: str, sender: str, recipient: str,
                  timeout: float) -> list[Check]:
    spool = Path(settings.spool_dir())
    log_file = settings.spool.log_file
    if not watcher_running(spool):
        return [Check("spool", None, "the spool watcher is not running: start the services, "
                                     "then run `lmsav setup --self-test`")]
    if not log_file:
        return [Check("spool", None, "[spool] log_file is not set, so the watcher's results "
                                     "cannot be read here")]
    for address in getattr(settings.spool, "listen", ()):
        if not listening(address):
            return [Check("listener", False, f"nothing answers at {address} ([spool] listen), "
                                             "where the MTA hands lmsav its mail: see the "
                                             f"watcher's log {log_file}")]
    host, _, port = smtp.rpartition(":")
    start = _size(Path(log_file))
    sent = messages(sender, recipient)
    try:
        with smtplib.SMTP(host.strip("[]"), int(port), timeout=30) as client:
            for _, msg in sent:
                client.send_message(msg, sender, [recipient])
    except (OSError, smtplib.SMTPException) as err:
        return [Check("smtp", False, f"the MTA at {smtp} did not take the test messages: {err}")]
    wanted = {msg["Message-ID"].strip(): name for name, msg in sent}
    found: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(wanted) and time.monotonic() < deadline:
        for fields in _log_lines(Path(log_file), start):
            name = wanted.get(fields.get("message_id", ""))
            if name and fields.get("result") in FINAL_RESULTS:
                found[name] = fields
        time.sleep(0.2)
    checks = []
    for name in ("clean", "eicar"):
        fields = found.get(name)
        if fields is None:
            checks.append(Check(name, False, f"no result from the spool watcher within "
                                             f"{timeout:g} s (see {log_file} and the MTA's log)"))
            continue
        status, action, result = fields.get("status"), fields.get("action"), fields["result"]
        summary = f"status {status}, action {action}, group {fields.get('group')}"
        if name == "clean":
            ok = result == "done" and status == "clean"
            checks.append(Check(name, ok, f"{summary}: handed back to the MTA for delivery "
                                          f"with X-AV-Checked" if ok else summary))
        else:
            ok = result == "done" and "infected" in (status or "")
            checks.append(Check(name, ok, f"{summary}: handled by the group's policy"
                                if ok else f"{summary}: EICAR was not found"))
    return checks


def listening(address: str) -> bool:
    """Whether a TCP listener of [spool] listen ("smtp:HOST:PORT", "lmtp:[::1]:PORT") accepts
    connections; a unix socket is taken on trust (the MTA may see it under its chroot)."""
    _protocol, _, rest = address.partition(":")
    host, _, port = rest.rpartition(":")
    if host == "unix" or not port.isdigit():
        return True
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError:
        return False
    return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _log_lines(path: Path, start: int):
    try:
        with open(path, "rb") as fp:
            fp.seek(start)
            data = fp.read()
    except OSError:
        return
    for line in data.decode("utf-8", "replace").splitlines():
        if "message_id=" in line:
            yield dict(_FIELD_RE.findall(line))


# -- qmail: through lmsav-qmail-queue as qmaild --------------------------------------------------

def through_qmail(wrapper: str, sender: str, recipient: str) -> list[Check]:
    runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
    if runuser is None:
        return [Check("qmail", None, "runuser (util-linux) is missing")]
    checks = []
    envelope = b"F" + sender.encode() + b"\0T" + recipient.encode() + b"\0\0"
    for name, msg in messages(sender, recipient):
        with tempfile.TemporaryFile() as body, tempfile.TemporaryFile() as env:
            body.write(msg.as_bytes())
            env.write(envelope)
            for fp in (body, env):
                fp.flush()
                fp.seek(0)
                os.fchmod(fp.fileno(), 0o644)
            # tcpserver runs qmail-smtpd as qmaild and leaves HOME=/root.
            proc = subprocess.run(
                [runuser, "-u", QMAIL_ACCOUNT, "--", "env", "-i", "HOME=/root",
                 "PATH=/usr/bin:/bin", "TCPREMOTEIP=127.0.0.1", wrapper],
                stdin=body, stdout=env, stderr=subprocess.PIPE, timeout=120, check=False)
        code = proc.returncode
        what = QMAIL_CODES.get(code, f"exit {code}")
        if name == "clean":
            checks.append(Check("qmail clean", code == 0, what))
        else:
            checks.append(Check("qmail eicar", code in (0, 31, 82), what + (
                "" if code else " (the Default group does not reject infected mail)")))
        err = proc.stderr.decode(errors="replace").strip()
        if code not in (0, 31, 82) and err:
            checks[-1].detail += f": {err.splitlines()[-1]}"
    return checks
