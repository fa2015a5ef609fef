"""What `lmsav scan` prints per input: -i keeps the errors, -v names unchanged files, a reason
stays on one line, FOUND and ERROR are coloured on a terminal unless told not to."""

from __future__ import annotations

import io

import pytest

from lmsav.scanner.objects import ObjectResult, Status, one_line
from lmsav.sweep.report import ReportPrinter, colour_wanted
from lmsav.sweep.run import FileReport

FOUND = {Status.INFECTED, Status.SUSPICIOUS}


def printer(**kw) -> ReportPrinter:
    opts = {"verbose": False, "infected_only": False, "as_json": False, "found": FOUND}
    opts.update(kw)
    return ReportPrinter(**opts)


def test_infected_only_still_prints_errors_as_clamscan_does(capsys):
    out = printer(infected_only=True)
    out.emit(FileReport("/d/clean", Status.CLEAN))
    out.emit(FileReport("/d/locked", Status.ERROR,
                        findings=[("/d/locked", Status.ERROR, [], "read error: Permission denied")]))
    out.emit(FileReport("/d/bad.zip", Status.CORRUPTED,
                        findings=[("/d/bad.zip", Status.CORRUPTED, [], "zip: truncated")]))
    out.emit(FileReport("/d/eicar", Status.INFECTED,
                        findings=[("/d/eicar", Status.INFECTED, ["Eicar-Test-Signature"], "")]))
    assert capsys.readouterr().out.splitlines() == [
        "/d/locked: read error: Permission denied ERROR",
        "/d/eicar: Eicar-Test-Signature FOUND",
    ]


def test_verbose_names_files_the_scan_cache_vouched_for(capsys):
    out = printer(verbose=True)
    out.emit(FileReport("/d/seen", Status.CLEAN, unchanged=True))
    out.emit(FileReport("/d/read", Status.CLEAN))
    assert capsys.readouterr().out.splitlines() == ["/d/seen: unchanged", "/d/read: OK"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("no_color_env", "no_color", "as_json", "tty", "wanted"), [
    (None, False, False, True, True),
    ("", False, False, True, True),  # NO_COLOR set but empty: no-color.org says ignore it
    ("1", False, False, True, False),
    (None, True, False, True, False),  # --no-color
    (None, False, True, True, False),  # --json
    (None, False, False, False, False),  # a pipe or a file
    ("1", True, True, False, False),
])
def test_colour_wanted(monkeypatch, no_color_env, no_color, as_json, tty, wanted):
    if no_color_env is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color_env)
    stream = _Terminal() if tty else io.StringIO()
    assert colour_wanted(no_color, as_json, stream) is wanted


def test_colour_wanted_looks_at_standard_output_by_default(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr("sys.stdout", _Terminal())
    assert colour_wanted(False, False) is True
    monkeypatch.setattr("sys.stdout", io.StringIO())
    assert colour_wanted(False, False) is False


def _findings(out: ReportPrinter) -> None:
    out.emit(FileReport("/d/eicar", Status.INFECTED,
                        findings=[("/d/eicar", Status.INFECTED, ["Eicar-Test-Signature"], "")]))
    out.emit(FileReport("/d/locked", Status.ERROR,
                        findings=[("/d/locked", Status.ERROR, [],
                                   "read error: Permission denied")]))
    out.emit(FileReport("/d/bad.zip", Status.CORRUPTED,
                        findings=[("/d/bad.zip", Status.CORRUPTED, [], "zip: truncated")]))


def test_found_is_red_and_error_yellow_only_with_colour(capsys):
    _findings(printer(colour=True))
    assert capsys.readouterr().out.splitlines() == [
        "\x1b[31m\x1b[1m/d/eicar: Eicar-Test-Signature FOUND\x1b[0m",
        "\x1b[33m\x1b[1m/d/locked: read error: Permission denied ERROR\x1b[0m",
        "/d/bad.zip: zip: truncated CORRUPTED",
    ]
    _findings(printer())
    plain = capsys.readouterr().out
    assert "\x1b" not in plain
    assert plain.splitlines()[0] == "/d/eicar: Eicar-Test-Signature FOUND"


def test_a_reason_with_line_breaks_is_printed_on_one_line(capsys):
    out = printer()
    reason = "corrupted: ZIP uncompressed data is wrong size (read 1, expected 8)\n"
    out.emit(FileReport("/d/bad.zip", Status.CORRUPTED,
                        findings=[("/d/bad.zip", Status.CORRUPTED, [], reason)]))
    assert capsys.readouterr().out == (
        "/d/bad.zip: corrupted: ZIP uncompressed data is wrong size (read 1, expected 8)"
        " CORRUPTED\n")


def test_reasons_are_stored_on_one_line():
    assert one_line("wrong size (read 1, expected 8)\n") == "wrong size (read 1, expected 8)"
    assert one_line("first\r\n  second \n\nthird") == "first second third"
    assert one_line("two  spaces stay") == "two  spaces stay"
    result = ObjectResult("a.zip", "zip", 1, Status.CORRUPTED, reason="bad\n header\n")
    assert result.reason == "bad header"
    assert result.to_json()["reason"] == "bad header"
