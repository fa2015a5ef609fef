"""What a front end other than the command line (the web console) asks of `lmsav update`: the
status as `lmsav update --status` computes it, the sources and feeds configured, and the
command lines of an update and a rollback run in a child process, with what their output
means.

An update runs in a child process (`lmsav update --json`), not in a thread of the console: the
update lock is a POSIX record lock, held per process, so two threads of one process would not
keep each other out, and the child also tells a running daemon to reload and records the
statistics event exactly as the command does."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .. import paths
from . import state as state_mod
from .status import schedules_for, status
from .store import LABEL, Store


class ConsoleError(Exception):
    """One line, the text `lmsav update` prints after ``lmsav: error:`` for the same mistake."""


def update_root(settings) -> Path:
    """The managed directory `lmsav update` updates with these settings."""
    return Path(settings.update.dir or paths.bases_dir(settings.paths.state_dir))


def status_report(settings, config_file: Path, config_explicit: bool = False,
                  now: float | None = None) -> dict:
    """`lmsav update --status --json`: the active and kept versions, last check and success,
    the database's age, the next scheduled update, and warnings."""
    root = update_root(settings)
    network = any(_network(s) for s in settings.update.sources)
    return status(root, Path(settings.database_dir()), max_age=settings.update.max_age,
                  check_interval=settings.update.check_interval, network=network,
                  now=time.time() if now is None else now,
                  schedules=schedules_for(Path(config_file).absolute(), config_explicit, root))


@dataclass(frozen=True)
class SourceView:
    """A configured source as a page shows it: never a password."""

    shown: str
    kind: str  # "mirror", "file:// directory", "directory"
    cooling_until: float | None  # a mirror asked lmsav to wait (429) until then
    last_used: bool  # the source of the last run that reached one


@dataclass(frozen=True)
class FeedView:
    shown: str
    kind: str  # "bundle", "file", "rule set", "directory"
    verified_by: str


def sources(settings, now: float | None = None) -> list[SourceView]:
    """``[update] sources`` in the order they are tried."""
    now = time.time() if now is None else now
    state = state_mod.load(update_root(settings))
    out = []
    for text in settings.update.sources:
        scheme = urlsplit(text).scheme
        kind = ("mirror" if scheme in ("http", "https") else
                "file:// directory" if scheme == "file" else "directory")
        out.append(SourceView(without_password(text), kind, state.cooling(text, now),
                              text == state.last_source))
    return out


def feeds(settings) -> list[FeedView]:
    """``[update] feeds``, each with how its content is checked."""
    out = []
    for feed in settings.update.feeds:
        if feed.kind == "bundle" or feed.signed:
            how = "signature by a key of lmsav keys"
        elif feed.sha256:
            how = f"sha256 pin {feed.sha256[:12]}…"
        elif feed.local is not None:
            how = "local file, read as it is"
        else:
            how = "the https server's certificate"
        out.append(FeedView(without_password(feed.url), feed.kind, how))
    return out


def without_password(url: str) -> str:
    """A URL as it may be shown: a password in it replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def kept_version(settings, label: str) -> str:
    """``label`` when it names a kept version, else the error `lmsav update --rollback` gives."""
    store = Store(update_root(settings))
    if not isinstance(label, str) or not LABEL.fullmatch(label) or store.version(label) is None:
        kept = ", ".join(v.label for v in store.versions()) or "none"
        raise ConsoleError(f"no version {label} in {store.root} (kept: {kept})")
    return label


def update_command(lmsav: Sequence[str]) -> list[str]:
    """An update with the configured sources: ``lmsav`` is the command with its root options."""
    return [*lmsav, "update", "--json"]


def rollback_command(lmsav: Sequence[str], label: str) -> list[str]:
    """A rollback to a kept version (checked with :func:`kept_version` first)."""
    return [*lmsav, "update", f"--rollback={label}", "--json"]


def update_summary(code: int, lines: list[str]) -> tuple[str, str, dict]:
    """What `lmsav update --json` printed: (result, one line as the command prints it, the
    outcome object). Its warnings and errors come on their own lines before the object."""
    outcome = None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                outcome = json.loads(line)
            except ValueError:
                continue
            break
    if not isinstance(outcome, dict):
        errors = [line[len("lmsav: error: "):] for line in lines
                  if line.startswith("lmsav: error: ")]
        return "error", errors[0] if errors else f"lmsav update exited with {code}", {}
    return str(outcome.get("result", "error")), describe(outcome), outcome


def describe(outcome: dict) -> str:
    """The outcome of an update or a rollback in one line, as `lmsav update` words it."""
    active = outcome.get("active")
    changes = ", ".join(_change_text(c) for c in outcome.get("changes") or ())
    detail = f" ({changes})" if changes else ""
    source = f" from {without_password(outcome['source'])}" if outcome.get("source") else ""
    result = outcome.get("result")
    if result == "updated":
        line = f"updated: {active}{detail}{source}"
        if outcome.get("removed"):
            line += f"; removed {', '.join(outcome['removed'])}"
        return line
    if result == "rolled back":
        return f"rolled back: {active} is active (was {outcome.get('previous') or 'none'})"
    if result == "current":
        return f"current: {active}{detail}{source}"
    where = f"still using {active}" if active else "no database is active"
    errors = "; ".join(outcome.get("errors") or ())
    return f"not updated: {where}" + (f": {errors}" if errors else "")


def _change_text(change: dict) -> str:
    name, how = change.get("database"), change.get("how")
    if how in ("unchanged", "kept"):
        return f"{name} {change.get('after')} ({how})"
    return f"{name} {change.get('before') or '-'} -> {change.get('after')} ({how})"


def _network(source: str) -> bool:
    return source.startswith(("http://", "https://"))


__all__ = ["ConsoleError", "FeedView", "SourceView", "describe", "feeds", "kept_version",
           "rollback_command", "sources", "status_report", "update_command", "update_root",
           "update_summary", "without_password"]
