"""Every change made through the console, and every refusal of one: who, when, from where, what.

Each record goes to the log (logger ``lmsav.web.audit``, so syslog/journald/the log file keep
it) and, as one JSON line, to ``<state_dir>/web/audit.jsonl``, which the Logs page reads.
"""

from __future__ import annotations

import json
import logging
import os
import time

from flask import g, has_request_context, request

from .accounts import prepare_dir
from .context import web

log = logging.getLogger("lmsav.web.audit")
AUDIT_FILE = "audit.jsonl"


def audit(action: str, target: str = "", outcome: str = "ok", **detail) -> dict:
    """Record one action; ``outcome`` is ok, refused or failed."""
    user = getattr(g, "user", None) if has_request_context() else None
    record = {
        "time": round(time.time(), 3),
        "user": user.name if user else "",
        "role": user.role if user else "",
        "address": request.remote_addr if has_request_context() else "",
        "action": action,
        "target": target,
        "outcome": outcome,
    }
    if detail:
        record["detail"] = detail
    line = json.dumps(record, ensure_ascii=False, default=str, sort_keys=False)
    log.log(logging.INFO if outcome == "ok" else logging.WARNING, "audit %s", line)
    try:
        directory = web().web_dir
        prepare_dir(directory)
        fd = os.open(directory / AUDIT_FILE,
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode() + b"\n")  # one write: lines never interleave
        finally:
            os.close(fd)
    except OSError as err:
        log.error("cannot append to the audit trail: %s", err)
    return record
