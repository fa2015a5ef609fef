"""`lmsav enqueue`: the MTA's pipe target; makes one message durable in the spool.

Runs once per message, so it imports the standard library, the spool module and the envelope type only (no
click, no configuration loader, no engine). Exit 0 means the entry is on disk; every failure,
whatever its cause, exits 75 (EX_TEMPFAIL) so the MTA keeps the message and tries again.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ..mail.envelope import Envelope
from .nqueue import Spool, SpoolError

EX_OK = 0
EX_TEMPFAIL = 75  # sysexits.h: the MTA defers and retries; never 64 or 1, which would bounce

ENV_SPOOL = "LMSAV_SPOOL"
ENV_CONFIG = "LMSAV_CONFIG"

USAGE = "usage: lmsav enqueue [-f SENDER] [-q QUEUE_ID] [--spool DIR] [--] RCPT..."
HELP = f"""{USAGE}

Store the message read from standard input, with its envelope, durably in lmsav's spool
(nqueue/) for `lmsav spool watch`. Meant as the command of a Postfix pipe service or an Exim
pipe transport.

  -f SENDER      envelope sender; "" (the default) for bounces
  -q QUEUE_ID    the MTA's queue id, kept for the logs
  --spool DIR    spool directory (default: $LMSAV_SPOOL, else [spool] dir of the configuration
                 file, else <state_dir>/nqueue; run by an MTA, without a terminal, that is
                 /etc/lmsav/lmsav.toml and /var/lib/lmsav/nqueue whatever the user)
  -h, --help     show this help and exit

Exit status: 0 once the message is on disk; 75 (EX_TEMPFAIL) on any failure, so the MTA keeps
the message and retries. See lmsav-enqueue(8).
"""


class _Failure(Exception):
    """Anything that keeps the message from being accepted; the text is the one stderr line."""


def main(argv: list[str]) -> int:
    """Run `lmsav enqueue` with ``argv`` (without the command words); return the exit code."""
    try:
        options = _parse(argv)
        if options is None:
            sys.stdout.write(HELP)
            sys.stdout.flush()
            return EX_OK
        sender, queue_id, spool_dir, recipients = options
        spool = Spool(_spool_dir(spool_dir))
        spool.ensure()
        envelope = Envelope(sender=sender, recipients=tuple(recipients))
        spool.enqueue(envelope, sys.stdin.buffer, queue_id)
    except (_Failure, SpoolError) as err:
        return _fail(str(err))
    except BaseException as err:  # noqa: BLE001 - whatever it is, the MTA must keep the mail
        return _fail(f"internal error: {type(err).__name__}: {err}")
    return EX_OK


def _fail(reason: str) -> int:
    try:
        sys.stderr.write(f"lmsav enqueue: {' '.join(reason.split())}\n")
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a closed stderr must not turn into another exit code
        pass
    return EX_TEMPFAIL


# -- arguments -----------------------------------------------------------------------------------

def _parse(argv: list[str]) -> tuple[str, str, str | None, list[str]] | None:
    """(sender, queue id, --spool, recipients); None for --help.

    Hand-written rather than argparse because an option's value is always the next word, as
    sendmail does it: ``-f -odd@example.org`` or ``-f ""`` must not be mistaken for options.
    """
    sender, queue_id, spool = "", "", None
    recipients: list[str] = []
    words = iter(argv)
    for word in words:
        if word == "--":
            recipients.extend(words)
            break
        if word in ("-h", "--help"):
            return None
        if word in ("-f", "-q", "--spool"):
            value = next(words, None)
            if value is None:
                raise _Failure(f"option {word} needs a value; {USAGE}")
        elif word.startswith("--spool="):
            word, value = "--spool", word[len("--spool="):]
        elif word[:2] in ("-f", "-q") and len(word) > 2:
            word, value = word[:2], word[2:]
        elif word.startswith("-") and word != "-":
            raise _Failure(f"unknown option {word!r}; {USAGE}")
        else:
            recipients.append(word)
            continue
        if word == "-f":
            sender = value
        elif word == "-q":
            queue_id = value
        else:
            spool = value
    if not recipients:
        raise _Failure(f"no recipients; {USAGE}")
    if spool == "":
        raise _Failure("--spool needs a directory")
    return sender, queue_id, spool, recipients


# -- where the spool is --------------------------------------------------------------------------

def _spool_dir(cli_value: str | None) -> Path:
    """--spool, else $LMSAV_SPOOL, else the configuration file's [spool] dir or [paths] state_dir.

    Reads only those two keys, with the rules of lmsav.config (an absolute path, ``~``
    expanded, "" meaning the default), so the watcher and this command agree on the directory
    without loading and validating the whole configuration for every message. The MTA runs
    this command as its pipe user, so the defaults are those of the system layout, like the
    watcher's (lmsav.paths), not the pipe user's own.
    """
    if cli_value:
        return Path(cli_value)
    if os.environ.get(ENV_SPOOL):
        return Path(os.environ[ENV_SPOOL])
    from .. import paths  # light: os, pwd and pathlib only

    paths.mark_started_by_mta()

    explicit = os.environ.get(ENV_CONFIG)
    config_file = Path(explicit) if explicit else paths.default_config_file()
    data = _read_config(config_file, required=bool(explicit))
    spool = data.get("spool", {})
    dir_value = _config_path(config_file, spool, "spool", "dir")
    if dir_value is not None:
        return dir_value
    state_dir = _config_path(config_file, data.get("paths", {}), "paths", "state_dir")
    if state_dir is None:
        state_dir = paths.state_dir()
    return paths.nqueue_dir(state_dir)


def _read_config(path: Path, required: bool) -> dict:
    try:
        with open(path, "rb") as fp:
            raw = fp.read()
    except FileNotFoundError:
        if required:
            raise _Failure(f"{path}: no such file (from ${ENV_CONFIG})") from None
        return {}
    except OSError as err:
        raise _Failure(f"{path}: cannot read: {err.strerror or err}") from None
    import tomllib  # only when a configuration file is there to read

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Failure(f"{path}: invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as err:
        raise _Failure(f"{path}: invalid TOML: {err}") from None
    for section in ("spool", "paths"):
        if not isinstance(data.get(section, {}), dict):
            raise _Failure(f"{path}: {section} = ...: expected a table [{section}]")
    return data


def _config_path(config_file: Path, table: dict, section: str, key: str) -> Path | None:
    value = table.get(key, "")
    if value == "":
        return None
    if isinstance(value, str):
        path = Path(os.path.expanduser(value))
        if path.is_absolute():
            return path
    raise _Failure(f"{config_file}: {section}.{key} = {value!r}: expected an absolute path")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
