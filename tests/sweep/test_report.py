"""What `lmsav scan` prints per input: -i keeps the errors, -v names unchanged files."""

from __future__ import annotations

from lmsav.scanner.objects import Status
from lmsav.sweep.report import ReportPrinter
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
