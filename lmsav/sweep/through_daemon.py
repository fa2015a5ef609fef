"""``lmsav scan --daemon``: a running lmsav daemon scans, as clamd does for clamdscan; this
prints its replies as result lines or JSON lines, then a clamdscan-like summary.

The JSON lines are the "daemon" variants of lmsav/data/scan-result.schema.json: the daemon
answers one line per input it has something to say about, with no verdict tree.

The client (lmsav.daemon.client.Client) is handed in by the command line: the daemon's package
uses the sweep's walker, so the sweep must not import the daemon's.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import click

from .. import jsonout
from ..clitools import EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND
from .options import ScanParameters
from .report import colour_wanted, error_line, found_line


@dataclass(frozen=True)
class Reply:
    """One reply line, as the client's Result: ``path: OK``, ``path: Name FOUND``,
    ``path: reason ERROR`` (status "" for a line that is none of those)."""

    path: str
    status: str
    detail: str  # the signature name for FOUND, the reason for ERROR
    line: str


@dataclass
class DaemonTally:
    """What the daemon's replies added up to, for the summary and the exit code."""

    infected: int = 0
    errors: int = 0
    started: float = field(default_factory=time.monotonic)
    start_date: float = field(default_factory=time.time)

    def add(self, status: str) -> None:
        self.infected += status == "FOUND"
        self.errors += status != "FOUND" and status != "OK"

    def exit_code(self) -> int:
        return EXIT_FOUND if self.infected else EXIT_ERROR if self.errors else EXIT_CLEAN


def scan_through_daemon(client, params: ScanParameters, follow_symlinks: bool) -> int:
    """Have the daemon behind ``client`` scan ``params.targets``; print its replies; the exit
    code. The client's errors (ClientError, OSError) reach the caller."""
    colour = colour_wanted(params.no_color, params.as_json)
    tally = DaemonTally()
    for result in replies(client, params, follow_symlinks):
        tally.add(result.status)
        print_reply(result, params, colour)
    if not params.no_summary:
        print_summary(tally, params.as_json)
    return tally.exit_code()


def replies(client, params: ScanParameters, follow_symlinks: bool) -> Iterator[Reply]:
    """The daemon's reply lines for every target, in order (the client's Results are Replies
    in all but name)."""
    from .walk import regular_files

    for target in params.targets:
        if target == "-":
            yield split_reply(client.instream(sys.stdin.buffer), "stream")
        elif params.stream:
            # Regular files only: streaming a fifo or a device would block or never end.
            # Links to files are followed, as clamdscan does. What cannot be looked at or
            # opened is an error line, worded as the daemon words it, and the run goes on.
            unreadable: list[Reply] = []

            def on_error(path: str, err: OSError, why="lstat() failed",
                         unreadable=unreadable) -> None:
                why = f"{why}: {err.strerror}."
                unreadable.append(Reply(path, "ERROR", why, f"{path}: {why} ERROR"))

            for path, _st in regular_files([target], follow_symlinks=follow_symlinks,
                                           follow_file_links=True, want_stat=False,
                                           on_error=on_error):
                yield from unreadable
                unreadable.clear()
                try:
                    fh = open(path, "rb")  # noqa: SIM115 - only open() may fail quietly
                except OSError as err:
                    on_error(path, err, "Can't open file")
                    yield from unreadable
                    unreadable.clear()
                    continue
                with fh:
                    r = split_reply(client.instream(fh), "stream")
                yield Reply(path, r.status, r.detail, r.line.replace("stream", path, 1))
            yield from unreadable
        else:
            target = os.path.abspath(target)
            for r in client.scan(target, "MULTISCAN"):
                yield split_reply(r, target)


def split_reply(result, prefix: str):
    """``result`` with its path and reason told apart again: a reason often holds ": "
    (``lstat() failed: No such file or directory.``), a path seldom, so an ERROR line's path
    ends at the first ": " after ``prefix`` (the path asked about), not at the last one."""
    if result.status in ("OK", "FOUND"):  # nothing after the path but a word or a name
        return result
    line = result.line
    cut = line.find(": ", len(prefix) if line.startswith(prefix) else 0)
    if cut < 0:
        return result
    rest = line[cut + 2:]
    if result.status == "ERROR":
        rest = rest[: -len("ERROR")].rstrip()
    return Reply(line[:cut], result.status, rest, line)


def print_reply(result, params: ScanParameters, colour: bool) -> None:
    """One reply as a line: OK only with -v (never with -i); FOUND and ERROR always."""
    status = result.status
    if status == "OK" and (params.infected or not params.verbose):
        return
    if params.as_json:
        click.echo(jsonout.dumps(reply_record(result)))
    elif status == "FOUND":
        click.echo(found_line(result.line, colour), color=colour or None)
    elif status == "OK":
        click.echo(result.line)
    else:
        click.echo(error_line(result.line, colour), color=colour or None)


def reply_record(result) -> dict:
    """A reply as a JSON object (the schema's "daemon_file"): the daemon names what it found
    but not in which member, nor from which signature file."""
    if result.status == "OK":
        return {"path": result.path, "status": "clean", "threats": []}
    if result.status == "FOUND":
        return {"path": result.path, "status": "infected",
                "threats": [{"path": result.path, "name": result.detail}]}
    # An ERROR, or a reply that is none of OK/FOUND/ERROR: never taken for clean.
    reason = result.detail if result.status == "ERROR" else result.line
    return {"path": result.path, "status": "error", "threats": [],
            "reason": " ".join(reason.split()) or "error"}


def print_summary(tally: DaemonTally, as_json: bool) -> None:
    """clamdscan's summary: what was found, the errors, the time taken."""
    seconds = time.monotonic() - tally.started
    if as_json:
        click.echo(jsonout.dumps({"summary": {"infected_files": tally.infected,
                                              "errors": tally.errors,
                                              "time_seconds": round(seconds, 3)}}))
        return
    lines = ["", "----------- SCAN SUMMARY -----------", f"Infected files: {tally.infected}"]
    if tally.errors:
        lines.append(f"Total errors: {tally.errors}")
    whole = int(seconds)
    lines += [f"Time: {seconds:.3f} sec ({whole // 60} m {whole % 60} s)",
              f"Start Date: {_date(tally.start_date)}",
              f"End Date:   {_date(time.time())}"]
    click.echo("\n".join(lines))


def _date(when: float) -> str:
    return time.strftime("%Y:%m:%d %H:%M:%S", time.localtime(when))
