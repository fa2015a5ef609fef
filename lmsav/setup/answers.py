"""What `lmsav setup` asks, with its defaults; answered at the terminal or from a TOML file
(`--answers FILE`, every key optional)."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

DATABASES = ("bundled", "clamav", "update")
MTAS = ("postfix", "exim", "qmail", "sendmail")
# How each MTA hands mail to lmsav: after the queue (the spool) or before it (at SMTP time).
POSTFIX_MODES = ("after-queue", "milter")
EXIM_MODES = ("after-queue", "pre-queue")
# How Postfix and Exim hand mail to lmsav after the queue: over SMTP or LMTP to the listener of
# `lmsav spool watch`, or through a pipe running `lmsav enqueue` once per message.
TRANSPORTS = ("smtp", "lmtp", "pipe")
SERVICES = ("auto", "systemd", "print")


class AnswersError(Exception):
    """The answers file cannot be used."""


@dataclass
class Answers:
    user: str = "lmsav"
    # None: what the MTA(s) treat as local; [] protects all mail.
    domains: list[str] | None = None
    admin: str = ""  # "" means postmaster@<first protected domain>
    # "bundled", "clamav" (/var/lib/clamav, as freshclam fills it), "update" (lmsav update
    # keeps <state_dir>/bases current) or a directory.
    database: str = "bundled"
    update_sources: list[str] = field(default_factory=list)  # [update] sources; [] the default
    update_databases: list[str] = field(default_factory=list)  # [update] databases; [] default
    sweep: list[str] = field(default_factory=list)  # paths of a nightly sweep; [] for none
    sweep_schedule: str = "30 3 * * *"
    mta: str | list[str] = "auto"  # "auto", "none" or a list of MTAS
    reinject_port: int = 10026
    transport: str = "smtp"  # after the queue: "smtp", "lmtp" (the listener) or "pipe"
    listen_port: int = 10025  # where the listener takes the mail ([spool] listen)
    postfix_config: str = "/etc/postfix"
    postfix_mode: str = "after-queue"  # or "milter": `lmsav milter` in smtpd_milters
    exim_config: str = "/etc/exim4"
    exim_config_file: str = ""  # a single Exim configuration file, instead of exim_config
    exim_mode: str = "after-queue"  # or "pre-queue": the DATA ACL asks the daemon
    sendmail_config: str = "/etc/mail"  # Sendmail always asks `lmsav milter`
    qmail_rules: str = "/etc/tcp.smtp"
    services: str = "auto"  # "auto": systemd when it runs as PID 1, else print the commands
    self_test: bool = True
    self_test_recipient: str = ""  # "" means the admin address
    self_test_smtp: str = "127.0.0.1:25"
    self_test_timeout: float = 60.0
    lmsav: str = ""  # the lmsav executable services and the MTA run; "" means the one on PATH


FIELDS = {f.name: f for f in dataclasses.fields(Answers)}


def load(path: Path) -> Answers:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise AnswersError(f"{path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise AnswersError(f"{path}: not TOML: {err}") from None
    answers = Answers()
    for key, value in data.items():
        if key not in FIELDS:
            raise AnswersError(f"{path}: unknown key {key!r} (known: {', '.join(FIELDS)})")
        setattr(answers, key, _checked(path, key, value))
    if answers.transport != "pipe" and answers.listen_port == answers.reinject_port:
        raise AnswersError(f"{path}: listen_port = {answers.listen_port}: the reinjection port "
                           "(reinject_port) cannot be lmsav's listener too")
    return answers


def _checked(path: Path, key: str, value):
    def bad(expected: str):
        return AnswersError(f"{path}: {key} = {value!r}: expected {expected}")

    if key in ("update_sources", "update_databases"):
        # Checked as the configuration checks them, so step 2 never writes a file it refuses.
        from ..config import DATABASE_NAMES, UPDATE_SOURCES

        kind = UPDATE_SOURCES if key == "update_sources" else DATABASE_NAMES
        if value == []:
            return []
        try:
            return list(kind.parse(value))
        except (ValueError, TypeError):
            raise bad(kind.allowed) from None
    if key in ("domains", "sweep"):
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of strings")
        return [v.strip().lower() if key == "domains" else v for v in value]
    if key == "mta":
        if value in ("auto", "none"):
            return value
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or any(v not in MTAS for v in value):
            raise bad(f'"auto", "none" or a list of {", ".join(MTAS)}')
        return list(dict.fromkeys(value))
    if key == "database":
        if not isinstance(value, str) or not value:
            raise bad('"bundled", "clamav", "update" or a directory')
        if value not in DATABASES and not value.startswith("/"):
            raise bad('"bundled", "clamav", "update" or an absolute directory')
        return value
    if key in ("postfix_mode", "exim_mode", "transport"):
        modes = {"postfix_mode": POSTFIX_MODES, "exim_mode": EXIM_MODES,
                 "transport": TRANSPORTS}[key]
        if value not in modes:
            raise bad(" or ".join(f'"{m}"' for m in modes))
        return value
    if key == "services":
        if value not in SERVICES:
            raise bad(" or ".join(f'"{s}"' for s in SERVICES))
        return value
    if key in ("reinject_port", "listen_port"):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
            raise bad("a port number")
        return value
    if key == "self_test":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "self_test_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise bad("a number of seconds")
        return float(value)
    if not isinstance(value, str):
        raise bad("a string")
    return value


def mode_questions(mtas: list[str]) -> list[tuple[str, str, tuple[str, ...]]]:
    """The questions on how the chosen MTAs hand mail to lmsav: (answer key, question,
    choices); Sendmail has one way (the milter) and qmail one (its queue wrapper)."""
    out = []
    if "postfix" in mtas:
        out.append(("postfix_mode", ("Postfix: scan after the queue (content_filter) or before "
                    "it, at SMTP time, with lmsav milter"), POSTFIX_MODES))
    if "exim" in mtas:
        out.append(("exim_mode", ("Exim: scan after the queue (router) or before it, at SMTP "
                    "time, with a DATA ACL"), EXIM_MODES))
    return out


def after_queue(answers: Answers, mtas: list[str]) -> bool:
    """Whether one of ``mtas`` hands mail to lmsav after the queue, where the transport
    matters."""
    return (("postfix" in mtas and answers.postfix_mode == "after-queue")
            or ("exim" in mtas and answers.exim_mode == "after-queue"))


def transport_question(answers: Answers, mtas: list[str]) -> tuple[str, str, tuple] | None:
    """The question on the after-queue transport, once the modes are known; None when no MTA
    scans after the queue."""
    if not after_queue(answers, mtas):
        return None
    return ("transport", ("After the queue, hand mail to lmsav over SMTP or LMTP (the listener "
                          "of lmsav spool watch) or through a pipe (one lmsav enqueue per "
                          "message, slower)"), TRANSPORTS)
