"""A report as a mail (text, HTML and the chart as an inline image) handed to the local MTA's
``sendmail -t -oi``, which reads the recipients from the To: header."""

from __future__ import annotations

import subprocess
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

DEFAULT_SENDMAIL = "/usr/sbin/sendmail"
SENDMAIL_TIMEOUT = 120


class MailError(Exception):
    """The report could not be handed to the MTA: one line."""


def check_address(text: str) -> str:
    """A recipient address as ``user@domain``; ValueError with the reason."""
    value = text.strip()
    local, at, domain = value.rpartition("@")
    if (not at or not local or not domain or any(c.isspace() or c in "<>,;\"\\" for c in value)
            or any(ord(c) < 32 for c in value)):
        raise ValueError(f"{text!r} is not a mail address like postmaster@example.org")
    return value


def build_message(*, sender: str, recipients: list[str], subject: str, text: str,
                  html: str | None = None, png: bytes | None = None,
                  chart_cid: str | None = None) -> EmailMessage:
    """text/plain, or multipart/alternative of text/plain and text/html, the HTML with the
    chart beside it (multipart/related) when there is one; ``html`` refers to the chart as
    ``cid:<chart_cid>``."""
    message = EmailMessage()
    message["From"] = Address(addr_spec=sender)
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("lmsav-report", domain=sender.rpartition("@")[2])
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
        if png is not None:
            message.get_payload()[1].add_related(png, "image", "png", cid=f"<{chart_cid}>",
                                                 filename="chart.png")
    return message


def chart_cid(sender: str) -> str:
    """A Content-ID for the chart, unique as a Message-ID is, without its angle brackets."""
    return make_msgid("chart", domain=sender.rpartition("@")[2])[1:-1]


def send(message: EmailMessage, sendmail: str = DEFAULT_SENDMAIL) -> None:
    """Hand the message to ``sendmail -t -oi``; MailError naming what failed."""
    # Headers unfolded up to RFC 5322's hard limit: a subject folded before its first word
    # reads back with a leading space in some readers.
    data = message.as_bytes(policy=message.policy.clone(max_line_length=998))
    try:
        done = subprocess.run([sendmail, "-t", "-oi"], input=data,
                              capture_output=True, timeout=SENDMAIL_TIMEOUT, check=False)
    except FileNotFoundError:
        raise MailError(f"{sendmail}: not found; install an MTA, or name its sendmail with "
                        f"--sendmail PATH") from None
    except PermissionError:
        raise MailError(f"{sendmail}: permission denied") from None
    except subprocess.TimeoutExpired:
        raise MailError(f"{sendmail} -t -oi: no answer in {SENDMAIL_TIMEOUT} s") from None
    except OSError as err:
        raise MailError(f"{sendmail}: {err.strerror or err}") from None
    if done.returncode != 0:
        lines = [li.strip() for li in done.stderr.decode(errors="replace").splitlines()
                 if li.strip()]
        why = f": {lines[-1]}" if lines else ""
        status = (f"killed by signal {-done.returncode}" if done.returncode < 0
                  else f"exit status {done.returncode}")
        raise MailError(f"{sendmail} -t -oi failed ({status}){why}")
