"""One local ``lmsav scan``: the engine from the settings, a sweep (or a watch) of the targets,
actions, printed reports and the exit code. The command line itself is lmsav.cli's.

Each run is recorded in the statistics store: one ``file_found`` event per infected or
suspicious file, and one ``file_scan`` event at the end with the counts. A store this user
cannot write is skipped without a word (lmsav.metrics.recording)."""

from __future__ import annotations

import os
import sys

import click

from .. import paths as paths_mod
from ..clitools import EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND, Fatal
from ..metrics.recording import EventRecorder
from ..scanner.engine import Engine
from ..scanner.objects import Status
from .options import ScanParameters
from .progress import ScanProgress
from .report import ReportPrinter, colour_wanted
from .run import FileReport, SweepOptions, Tally, summarize, sweep

FOUND = (Status.INFECTED, Status.SUSPICIOUS)
MAX_THREATS = 100  # names the run's summary event keeps


def run_scan(settings, db, params: ScanParameters) -> int:
    """Scan ``params.targets`` ('-' is standard input) as configured; the exit code."""
    sc = settings.scan
    engine = Engine(db, settings.limits(), sc.scan_archives, sc.scan_mail,
                    str(settings.paths.tmp_dir) if settings.paths.tmp_dir else None)
    as_json, verbose = params.as_json, params.verbose
    if params.initial_scan and not params.watch:
        raise Fatal("--initial-scan goes with --watch (a scan without --watch is a sweep "
                    "already)")
    # Actions look at each detected file again in this process (and get its tree then), so
    # the workers need not send every clean file's tree back.
    opts = SweepOptions(tuple(sc.exclude), tuple(sc.include), sc.max_dir_depth,
                        sc.one_file_system, sc.follow_symlinks,
                        sc.workers or os.cpu_count() or 1, want_tree=as_json,
                        incremental=sc.incremental,
                        cache_path=str(paths_mod.scan_cache_file(settings.paths.state_dir)),
                        database_version=db.version, report_unchanged=verbose or as_json)
    runner = action_runner(settings, engine, db)
    report_file = _open_report(params.report_path, params.report_format)
    printer = ReportPrinter(verbose, params.infected, as_json, set(runner.policy.found),
                            runner.policy.active, sc.incremental and not params.watch,
                            colour=colour_wanted(params.no_color, as_json))
    tally = Tally()
    events = RunEvents(settings, db.version)
    progress = params.progress
    show_bar = progress if progress is not None else sys.stderr.isatty() and not as_json
    bar = ScanProgress() if show_bar and not params.watch else None
    planned = bar.planned if bar is not None else None
    walked = bar.walked if bar is not None else None

    def on_report(report, act=True, scanned=None):
        events.file(report)
        result = runner.apply(report, scanned) if act else runner.apply_nothing(report)
        if report_file is not None and result is not None:
            report_file.write(result)
        if bar is not None and (verbose or report.status != Status.CLEAN or report.skipped):
            with bar.hidden():  # keep lines and the bar apart
                printer.emit(report, result)
        else:
            printer.emit(report, result)
        if bar is not None:
            bar.update(1)

    targets = params.targets
    if params.watch:
        def initial_sweep() -> None:
            sweep(engine, targets, opts, tally, on_report)

        try:
            _watch(targets, engine, sc, tally, on_report, as_json,
                   initial_sweep if params.initial_scan else None)
        finally:
            if report_file is not None:
                report_file.close()
            events.run(tally, targets)
        if not params.no_summary:
            printer.summary(tally, db)
        return (EXIT_ERROR if printer.action_errors else EXIT_FOUND if printer.found
                else EXIT_CLEAN)
    try:
        file_targets = [t for t in targets if t != "-"]
        if "-" in targets:
            if planned is not None:
                planned(1)
            verdict = engine.scan_bytes(sys.stdin.buffer.read(), "stdin")
            report = summarize("stdin", verdict, as_json)
            tally.add(report)
            on_report(report, act=False)  # nothing on disk to act on
        if file_targets:
            sweep(engine, file_targets, opts, tally, on_report, planned, walked)
        elif walked is not None:
            walked()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        click.echo("lmsav: interrupted", err=True)
        events.run(tally, targets, interrupted=True)
        return EXIT_ERROR
    finally:
        if report_file is not None:
            report_file.close()
    events.run(tally, targets)
    if bar is not None:
        bar.close()
    if not params.no_summary:
        printer.summary(tally, db)
    return printer.exit_code(tally)


class RunEvents:
    """The statistics events of one run: each file found, then the run's summary."""

    def __init__(self, settings, database_version: str):
        self.recorder = EventRecorder(settings)
        self.database_version = database_version
        self.threats: list[str] = []

    def file(self, report: FileReport) -> None:
        if report.status not in FOUND or report.unreached or report.skipped:
            return
        names = list(dict.fromkeys(n for _where, _status, found, _reason in report.findings
                                   for n in found))
        for name in names:
            if name not in self.threats and len(self.threats) < MAX_THREATS:
                self.threats.append(name)
        self.recorder.record({"kind": "file_found", "status": report.status.label, "files": 0,
                              "threats": names, "size": report.size,
                              "detail": {"path": _storable(report.path)}})

    def run(self, tally: Tally, targets, interrupted: bool = False) -> None:
        """The summary of the run (once, at its end), then the store closed."""
        by_status = {s.label: n for s, n in tally.by_status.items() if n}
        worst = max((s for s, n in tally.by_status.items() if n), default=Status.CLEAN)
        detail = {"statuses": by_status, "directories": tally.directories,
                  "skipped": tally.skipped, "unchanged": tally.unchanged,
                  "targets": [_storable(t) for t in list(targets)[:20]],
                  "database": self.database_version}
        if interrupted:
            detail["interrupted"] = True
        self.recorder.record({"kind": "file_scan", "status": worst.label, "files": tally.files,
                              "threats": self.threats, "size": tally.bytes,
                              "duration_ms": tally.seconds * 1000, "detail": detail})
        self.recorder.close()


def _storable(path: str) -> str:
    """A file name as the store can hold it: bytes that are not UTF-8 escaped."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def action_runner(settings, engine, db):
    """The ActionRunner of the configured [scan] actions, with the stores under the state
    directory; it never acts inside them, nor inside the database directory."""
    from ..quarantine.store import FileStore
    from .actions import ActionPolicy, ActionRunner

    state = settings.paths.state_dir
    return ActionRunner(engine, ActionPolicy.from_settings(settings.scan),
                        FileStore(paths_mod.quarantine_dir(state), "quarantine"),
                        FileStore(paths_mod.backup_files_dir(state), "backup"), db.version,
                        keep_out=(str(state), str(settings.database_dir())),
                        hostname=settings.host_name())


def _open_report(path: str | None, fmt: str | None):
    if not path:
        return None
    from .report import ReportFile

    try:
        return ReportFile(path, fmt)
    except OSError as err:
        raise Fatal(f"cannot open the report file {path}: {err.strerror or err}") from None


def _watch(targets, engine, sc, tally, on_report, as_json, initial_sweep=None) -> None:
    """``scan --watch``: scan each file finished under the directories until SIGINT/SIGTERM.

    ``initial_sweep()`` (--initial-scan) scans what is already there, once the watches are in
    place: a file written meanwhile is not missed, at worst scanned twice."""
    import signal
    import threading

    from .realtime import FileWatcher, WatchError

    if "-" in targets:
        raise Fatal("--watch takes directories; standard input cannot be watched")
    stop = threading.Event()

    def on_file(path: str) -> None:
        try:
            st = os.stat(path) if sc.follow_symlinks else os.lstat(path)
            verdict = engine.scan_path(path)
        except OSError:
            return  # gone, or replaced by something else: a new event brings it back
        report = summarize(path, verdict, as_json)
        tally.add(report)
        on_report(report, scanned=st)

    watcher = FileWatcher(list(targets), on_file, exclude=tuple(sc.exclude),
                          include=tuple(sc.include), follow_symlinks=sc.follow_symlinks)
    sweeping = False

    def on_signal(*_) -> None:
        stop.set()
        if sweeping:  # the sweep never looks at the stop flag: end it here
            raise KeyboardInterrupt

    def ready() -> None:
        nonlocal sweeping
        if initial_sweep is not None:
            sweeping = True
            try:
                initial_sweep()
            finally:
                sweeping = False
        if not stop.is_set():
            click.echo(f"lmsav: watching {', '.join(watcher.roots)}", err=True)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher.run(stop, ready=ready)
    except WatchError as err:
        raise Fatal(str(err)) from None
    except KeyboardInterrupt:
        if not stop.is_set():
            raise  # not ours
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
