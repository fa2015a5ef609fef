"""What a sweep prints and writes: clamscan-style lines or JSON lines, the summary, and the
``--report`` file of actions.

The JSON lines are described by lmsav/data/scan-result.schema.json."""

from __future__ import annotations

import json
import os
import sys

import click

from .. import __version__
from ..clitools import EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND
from ..scanner.objects import Status, one_line
from .actions import ActionResult, iso_time


def colour_wanted(no_color: bool, as_json: bool, stream=None) -> bool:
    """Whether result lines are coloured: only on a terminal, never for JSON, and never when
    the user said no (``--no-color``, or ``NO_COLOR`` set to anything but empty, no-color.org).
    ``stream`` is where the lines go (standard output)."""
    if no_color or as_json or os.environ.get("NO_COLOR"):
        return False
    stream = sys.stdout if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def found_line(text: str, colour: bool) -> str:
    """A ``... FOUND`` line, red on a terminal."""
    return click.style(text, fg="red", bold=True) if colour else text


def error_line(text: str, colour: bool) -> str:
    """A ``... ERROR`` line, yellow on a terminal."""
    return click.style(text, fg="yellow", bold=True) if colour else text


class ReportPrinter:
    """Turns FileReports into clamscan-style lines or JSON lines, and counts for the exit code."""

    def __init__(self, verbose: bool, infected_only: bool, as_json: bool, found: set[Status],
                 actions: bool = False, incremental: bool = False, colour: bool = False):
        self.verbose, self.infected_only, self.as_json = verbose, infected_only, as_json
        self.colour = colour  # colour_wanted(): FOUND and ERROR lines stand out on a terminal
        self.found_statuses = found
        self.actions = actions  # some status gets more than a report: print what was done
        self.incremental = incremental
        self.found = 0
        self.errors = 0
        self.done = {"quarantine": 0, "cure": 0, "delete": 0}
        self.action_errors = 0

    def emit(self, report, result=None) -> None:
        status = report.status
        if status in self.found_statuses:
            self.found += 1
        elif status == Status.ERROR or (status != Status.CLEAN and not report.skipped):
            self.errors += status == Status.ERROR
        if result is not None:
            if result.ok and result.done in self.done:
                self.done[result.done] += 1
            self.action_errors += not result.ok
        if self.as_json:
            if self.infected_only and (status == Status.CLEAN or report.skipped):
                return
            if report.tree is not None:
                tree = dict(report.tree)
                if report.skipped:
                    tree["status"] = "skipped"
                if result is not None:
                    tree["action"] = result.to_json()
                click.echo(json.dumps(tree, separators=(",", ":")))
            return
        self._lines(report)
        if result is not None and result.message:
            click.echo(f"{report.path}: {result.message}")

    def _lines(self, report) -> None:
        status = report.status
        if status == Status.CLEAN and not report.skipped:
            if self.verbose:
                click.echo(f"{report.path}: {'unchanged' if report.unchanged else 'OK'}")
            return
        colour = self.colour
        for path, st, threats, reason in report.findings:
            # -i as clamscan's: what was found, and the errors (never hidden behind exit 2).
            if self.infected_only and st not in (Status.INFECTED, Status.SUSPICIOUS, Status.ERROR):
                continue
            # One line per finding, whatever a library put in its message.
            reason = one_line(reason)
            if report.skipped:
                if self.verbose:
                    click.echo(f"{path}: {reason} SKIPPED")
            elif threats:
                for name in threats:
                    click.echo(found_line(f"{path}: {name} FOUND", colour), color=colour or None)
            elif st == Status.ERROR:
                click.echo(error_line(f"{path}: {reason or st.label} ERROR", colour),
                           color=colour or None)
            elif st != Status.CLEAN:
                click.echo(f"{path}: {reason or st.label} {st.name}")

    def summary(self, tally, db) -> None:
        counts = tally.by_status
        data = {
            "known_signatures": db.total,
            "engine_version": __version__,
            "database_version": db.version,
            "scanned_directories": tally.directories,
            "scanned_files": tally.files,
            "infected_files": counts[Status.INFECTED],
            "suspicious_files": counts[Status.SUSPICIOUS],
            "protected_files": counts[Status.PROTECTED],
            "corrupted_files": counts[Status.CORRUPTED],
            "errors": counts[Status.ERROR],
            "skipped": tally.skipped,
            "unchanged": tally.unchanged,
            "quarantined": self.done["quarantine"],
            "cured": self.done["cure"],
            "deleted": self.done["delete"],
            "action_errors": self.action_errors,
            "data_scanned_bytes": tally.bytes,
            "time_seconds": round(tally.seconds, 3),
        }
        if self.as_json:
            click.echo(json.dumps({"summary": data}, separators=(",", ":")))
            return
        lines = [
            "",
            "----------- SCAN SUMMARY -----------",
            f"Known signatures: {data['known_signatures']}",
            f"Engine version: lmsav {__version__}",
            f"Database version: {db.version}",
            f"Scanned directories: {tally.directories}",
            f"Scanned files: {tally.files}",
            f"Infected files: {data['infected_files']}",
        ]
        for label, key in (("Suspicious files", "suspicious_files"),
                           ("Protected files", "protected_files"),
                           ("Corrupted files", "corrupted_files"),
                           ("Errors", "errors"), ("Skipped", "skipped")):
            if data[key]:
                lines.append(f"{label}: {data[key]}")
        if self.incremental or tally.unchanged:
            lines.append(f"Unchanged files skipped: {tally.unchanged}")
        if self.actions or self.action_errors:
            lines += [f"Quarantined files: {data['quarantined']}",
                      f"Cured files: {data['cured']}",
                      f"Deleted files: {data['deleted']}",
                      f"Action errors: {data['action_errors']}"]
        secs = tally.seconds
        lines.append(f"Data scanned: {tally.bytes / 1e6:.2f} MB")
        lines.append(f"Time: {secs:.3f} sec ({tally.files / secs if secs else 0:.0f} files/s)")
        click.echo("\n".join(lines))

    def exit_code(self, tally) -> int:
        if self.action_errors:
            return EXIT_ERROR
        if self.found:
            return EXIT_FOUND
        if tally.by_status[Status.ERROR] or self.errors:
            return EXIT_ERROR
        return EXIT_CLEAN


# -- the report file ------------------------------------------------------------------------

class ReportFile:
    """``--report FILE``: one line per input something was found in, appended as it happens."""

    FORMATS = ("text", "jsonl")

    def __init__(self, path: str, fmt: str | None = None):
        self.format = fmt or ("jsonl" if path.endswith((".jsonl", ".json", ".ndjson"))
                              else "text")
        # Held open for the whole run, closed by close().
        self._fh = open(path, "a", encoding="utf-8", errors="surrogateescape",  # noqa: SIM115
                        buffering=1)

    def write(self, result: ActionResult) -> None:
        if self.format == "jsonl":
            line = json.dumps(result.record(), ensure_ascii=False)
        else:
            line = text_line(result)
        self._fh.write(line + "\n")

    def close(self) -> None:
        self._fh.close()


def text_line(result: ActionResult) -> str:
    threats = f" ({', '.join(result.threats)})" if result.threats else ""
    what = result.message or ("reported" if result.done == "report" else result.done)
    ids = "".join(f" {k}={v}" for k, v in (("quarantine_id", result.quarantine_id),
                                            ("backup_id", result.backup_id)) if v)
    error = f" error={json.dumps(result.error)}" if result.error else ""
    path = result.path.replace("\\", "\\\\").replace("\n", "\\n")
    return (f"{iso_time(result.time)} {path}: {result.status.label}{threats}; "
            f"requested={result.requested} done={result.done} "
            f"result={'ok' if result.ok else 'error'}{ids}{error}; {what}")
