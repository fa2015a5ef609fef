"""The ``lmsav`` command: parse, call, print, exit — no scanning logic lives here."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from . import __version__
from . import config as config_mod
from . import paths as paths_mod
from .clitools import (EXIT_CLEAN, EXIT_ERROR, EXIT_FOUND, Fatal, database_dir, load_database,
                       load_settings)
from .scanner.objects import Status


def _print_version(ctx: click.Context, _param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"lmsav {__version__}")
    try:
        settings = config_mod.load_settings(
            paths_mod.config_file_from(None, os.environ), None, {}
        )
        db = load_database(Path(settings.database_dir()))
        click.echo(f"database {db.version} ({db.total} signatures) in {db.directory}")
    except (Fatal, config_mod.ConfigError) as err:
        click.echo(f"database unavailable: {getattr(err, 'message', err)}")
    ctx.exit(0)


class LazyGroup(click.Group):
    """Command groups that live beside the code they drive (spool, MTA setup, schedules …),
    imported only when used: importing them all costs every lmsav command ~0.1 s of start-up
    (croniter, the daemon, the spool), most of a sweep that finds everything unchanged."""

    LAZY = {
        "quarantine": "lmsav.quarantine.commands:quarantine",
        "cron": "lmsav.cron.commands:cron",
        "spool": "lmsav.spool.commands:spool",
        "setup": "lmsav.setup.commands:setup",
        "daemon": "lmsav.daemon.commands:daemon",
        "ctl": "lmsav.daemon.commands:ctl",
        "update": "lmsav.update.commands:update",
        "keys": "lmsav.update.keycommands:keys",
        "mail": "lmsav.mail.commands:mail_group",
        "groups": "lmsav.mail.commands:groups_group",
        "backup": "lmsav.mail.commands:backup_group",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, cmd_name: str):
        if cmd_name in self.LAZY and cmd_name not in self.commands:
            import importlib

            module, _, attr = self.LAZY[cmd_name].partition(":")
            self.add_command(getattr(importlib.import_module(module), attr), cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="FILE", envvar="LMSAV_CONFIG",
              help="Configuration file (default: /etc/lmsav/lmsav.toml for root, service "
                   "and system accounts, ~/.config/lmsav/lmsav.toml for a person; env "
                   "LMSAV_CONFIG).")
@click.option("--profile", metavar="NAME",
              help="Preset to start from: default_recommended, high_overall_security, "
                   "high_scan_speed.")
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show program and database versions and exit.")
@click.pass_context
def main(ctx: click.Context, config_path: str | None, profile: str | None) -> None:
    """lmsav — anti-virus for Linux mail servers and their filesystems.

    Scans files, directory trees, archives and mail with ClamAV-format signatures and YARA
    rules. Exit codes follow clamscan: 0 nothing found, 1 something found, 2 an error.
    """
    explicit = config_path is not None
    path = paths_mod.config_file_from(config_path, os.environ)
    ctx.obj = {"config": path, "config_explicit": explicit, "profile": profile}


# -- lmsav scan --------------------------------------------------------------------------------

_ACTIONS = ("report", "quarantine", "cure", "delete")
_UNCURABLE_ACTIONS = ("report", "quarantine", "delete")


def _size_option(*names, key, help):
    return click.option(*names, key, metavar="SIZE", default=None, help=help)


@main.command("scan")
@click.argument("targets", nargs=-1, required=True, metavar="PATH...")
@click.option("-d", "--database", metavar="DIR", help="Signature database directory.")
@click.option("--exclude", multiple=True, metavar="GLOB",
              help="Skip files and directories matching GLOB (path or name); repeatable.")
@click.option("--include", multiple=True, metavar="GLOB",
              help="Scan only files matching GLOB (path or name); repeatable.")
@click.option("--max-dir-depth", type=int, default=None, metavar="N",
              help="Descend at most N directory levels (0 = unlimited).")
@click.option("--one-file-system/--cross-file-systems", default=None,
              help="Stay on the file system of each PATH.")
@click.option("--follow-symlinks/--no-follow-symlinks", default=None,
              help="Follow symbolic links inside directories (default: no).")
@click.option("--max-filesize", "max_file_size", metavar="SIZE",
              help="Skip (ERROR) files and members larger than SIZE (e.g. 25M).")
@click.option("--max-scansize", "max_scan_size", metavar="SIZE",
              help="Stop after SIZE bytes extracted from one input.")
@click.option("--max-recursion", "max_scan_depth", type=int, metavar="N",
              help="Container nesting depth limit.")
@click.option("--max-files", type=int, metavar="N",
              help="Members unpacked per container; the rest are only matched.")
@click.option("--max-scantime", "max_scan_time", type=float, metavar="SEC",
              help="Time limit per input, in seconds.")
@click.option("--max-ratio", "max_compression_ratio", type=int, metavar="N",
              help="Compression ratio limit per member.")
@click.option("--no-archive", is_flag=True, help="Do not look inside archives.")
@click.option("--no-mail", is_flag=True, help="Do not look inside mail files.")
@click.option("-j", "--jobs", type=int, default=None, metavar="N",
              help="Parallel workers (default: number of cores).")
@click.option("-v", "--verbose", is_flag=True, help="Also print 'PATH: OK' for clean files.")
@click.option("-i", "--infected", is_flag=True, help="Print only infected and suspicious files.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per input (the verdict tree), then a summary object.")
@click.option("--no-summary", is_flag=True, help="Do not print the summary.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr (default: only when stderr is a terminal).")
@click.option("--daemon", "use_daemon", is_flag=True,
              help="Scan through a running lmsav daemon (as clamdscan does): paths are passed "
                   "to it (MULTISCAN), standard input is streamed.")
@click.option("--socket", "daemon_socket", metavar="PATH",
              help="The daemon's unix socket (default: configured [daemon] socket).")
@click.option("--stream", is_flag=True,
              help="With --daemon: send file contents (INSTREAM) instead of paths, for a "
                   "daemon that cannot read them.")
@click.option("--action", type=click.Choice(_ACTIONS), default=None,
              help="What to do with a detected file (default: configured scan.action, "
                   "report).")
@click.option("--infected-action", type=click.Choice(_ACTIONS), default=None,
              help="Action for infected files (default: --action).")
@click.option("--suspicious-action", type=click.Choice(_ACTIONS), default=None,
              help="Action for suspicious files (default: --action).")
@click.option("--protected-action", type=click.Choice(_ACTIONS), default=None,
              help="Action for encrypted files when scan.detect_protected counts them.")
@click.option("--corrupted-action", type=click.Choice(_ACTIONS), default=None,
              help="Action for corrupted files when scan.detect_corrupted counts them.")
@click.option("--error-action", type=click.Choice(_ACTIONS), default=None,
              help="Action for files that could not be scanned.")
@click.option("--uncurable-action", type=click.Choice(_UNCURABLE_ACTIONS), default=None,
              help="What cure does with a file it cannot cure (default: quarantine).")
@click.option("--no-backup", is_flag=True,
              help="Do not keep the original in backup/files/ before a cure or a delete.")
@click.option("--report", "report_path", metavar="FILE",
              help="Append one line per file something was found in (action asked, action "
                   "done, result, quarantine or backup id) to FILE.")
@click.option("--report-format", type=click.Choice(("text", "jsonl")), default=None,
              help="Format of --report (default: jsonl for *.jsonl and *.json, text otherwise).")
@click.option("--incremental/--no-incremental", default=None,
              help="Skip files unchanged since a clean verdict under the same database "
                   "(default: configured scan.incremental, off).")
@click.option("--watch", is_flag=True,
              help="Watch the directories PATH... and scan each file as it is written or moved "
                   "in, until interrupted (SIGINT, SIGTERM).")
@click.pass_context
def scan_cmd(ctx, targets, database, exclude, include, max_dir_depth, one_file_system,
             follow_symlinks, max_file_size, max_scan_size, max_scan_depth, max_files,
             max_scan_time, max_compression_ratio, no_archive, no_mail, jobs, verbose, infected,
             as_json, no_summary, progress, use_daemon, daemon_socket, stream, action,
             infected_action, suspicious_action, protected_action, corrupted_action,
             error_action, uncurable_action, no_backup, report_path, report_format, incremental,
             watch):
    """Scan files and directory trees (recursively) for threats; '-' reads standard input.

    Archives (zip, 7z, rar, tar, cpio, cab, iso, ar/deb, gzip, bzip2, xz, zstd) and mail files
    (RFC 822 messages, mbox) are scanned member by member. A finding inside a container is
    printed with its path inside it, e.g. 'mail.eml//2:invoice.zip//x.exe: Name FOUND'.
    """
    from .scanner.engine import Engine
    from .scanner.sweep import SweepOptions, Tally, sweep

    action_options = {
        "scan.action": action,
        "scan.infected_action": infected_action,
        "scan.suspicious_action": suspicious_action,
        "scan.protected_action": protected_action,
        "scan.corrupted_action": corrupted_action,
        "scan.error_action": error_action,
        "scan.uncurable_action": uncurable_action,
        "scan.backup": False if no_backup else None,
    }
    if use_daemon:
        if any(v is not None for v in action_options.values()) or report_path or watch:
            raise Fatal("--action, --report and --watch need a local scan; they do not work "
                        "with --daemon")
        ctx.exit(_scan_through_daemon(ctx, targets, daemon_socket, stream, verbose, infected))
    overrides = {
        "limits.max_file_size": max_file_size,
        "limits.max_scan_size": max_scan_size,
        "limits.max_scan_depth": max_scan_depth,
        "limits.max_files": max_files,
        "limits.max_scan_time": max_scan_time,
        "limits.max_compression_ratio": max_compression_ratio,
        "scan.workers": jobs,
        "scan.max_dir_depth": max_dir_depth,
        "scan.one_file_system": one_file_system,
        "scan.follow_symlinks": follow_symlinks,
        "scan.scan_archives": False if no_archive else None,
        "scan.scan_mail": False if no_mail else None,
        "scan.exclude": list(exclude) if exclude else None,
        "scan.include": list(include) if include else None,
        "scan.incremental": incremental,
        **action_options,
    }
    settings = load_settings(ctx, {k: v for k, v in overrides.items() if v is not None})
    sc = settings.scan
    db = load_database(database_dir(settings, database))
    engine = Engine(db, settings.limits(), sc.scan_archives, sc.scan_mail,
                    str(settings.paths.tmp_dir) if settings.paths.tmp_dir else None)
    workers = sc.workers or os.cpu_count() or 1
    # Actions look at each detected file again in this process (and get its tree then), so
    # the workers need not send every clean file's tree back.
    opts = SweepOptions(tuple(sc.exclude), tuple(sc.include), sc.max_dir_depth,
                        sc.one_file_system, sc.follow_symlinks, workers, want_tree=as_json,
                        incremental=sc.incremental,
                        cache_path=str(Path(settings.paths.state_dir) / "scancache.sqlite"),
                        database_version=db.version, report_unchanged=verbose or as_json)
    runner = _action_runner(settings, engine, db)
    report_file = _open_report(report_path, report_format)
    printer = ReportPrinter(verbose, infected, as_json, set(runner.policy.found),
                            runner.policy.active, sc.incremental and not watch)
    tally = Tally()
    show_bar = progress if progress is not None else sys.stderr.isatty() and not as_json
    bar = _progress_bar() if show_bar and not watch else None

    def on_report(report, act=True, scanned=None):
        result = runner.apply(report, scanned) if act else runner.apply_nothing(report)
        if report_file is not None and result is not None:
            report_file.write(result)
        if bar is not None and (verbose or report.status != Status.CLEAN or report.skipped):
            with bar.external_write_mode(file=sys.stderr):  # keep lines and the bar apart
                printer.emit(report, result)
        else:
            printer.emit(report, result)
        if bar is not None:
            bar.update(1)

    if watch:
        try:
            _watch(targets, engine, sc, tally, on_report, as_json)
        finally:
            if report_file is not None:
                report_file.close()
        if not no_summary:
            printer.summary(tally, db)
        ctx.exit(EXIT_ERROR if printer.action_errors else EXIT_FOUND if printer.found
                 else EXIT_CLEAN)
    try:
        stdin_targets = [t for t in targets if t == "-"]
        file_targets = [t for t in targets if t != "-"]
        if stdin_targets:
            from .scanner.sweep import _summarize

            verdict = engine.scan_bytes(sys.stdin.buffer.read(), "stdin")
            report = _summarize("stdin", verdict, as_json)
            tally.add(report)
            on_report(report, act=False)  # nothing on disk to act on
        if file_targets:
            sweep(engine, file_targets, opts, tally, on_report)
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        click.echo("lmsav: interrupted", err=True)
        ctx.exit(EXIT_ERROR)
    finally:
        if report_file is not None:
            report_file.close()
    if bar is not None:
        bar.close()
    if not no_summary:
        printer.summary(tally, db)
    ctx.exit(printer.exit_code(tally))


def _watch(targets, engine, sc, tally, on_report, as_json) -> None:
    """``scan --watch``: scan each file finished under the directories until SIGINT/SIGTERM."""
    import signal
    import threading

    from .scanner.sweep import _summarize
    from .scanner.watch import FileWatcher, WatchError

    if "-" in targets:
        raise Fatal("--watch takes directories; standard input cannot be watched")
    stop = threading.Event()

    def on_file(path: str) -> None:
        try:
            st = os.stat(path) if sc.follow_symlinks else os.lstat(path)
            verdict = engine.scan_path(path)
        except OSError:
            return  # gone, or replaced by something else: a new event brings it back
        report = _summarize(path, verdict, as_json)
        tally.add(report)
        on_report(report, scanned=st)

    watcher = FileWatcher(list(targets), on_file, exclude=tuple(sc.exclude),
                          include=tuple(sc.include), follow_symlinks=sc.follow_symlinks)
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watcher.run(stop, ready=lambda: click.echo(
            f"lmsav: watching {', '.join(watcher.roots)}", err=True))
    except WatchError as err:
        raise Fatal(str(err))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _action_runner(settings, engine, db):
    from .quarantine.commands import store_roots
    from .quarantine.store import FileStore
    from .scanner.actions import ActionPolicy, ActionRunner

    roots = store_roots(settings.paths.state_dir)
    return ActionRunner(engine, ActionPolicy.from_settings(settings.scan),
                        FileStore(roots["quarantine"], "quarantine"),
                        FileStore(roots["backup"], "backup"), db.version,
                        keep_out=(str(settings.paths.state_dir), str(settings.database_dir())))


def _open_report(path: str | None, fmt: str | None):
    if not path:
        return None
    from .scanner.actions import ReportFile

    try:
        return ReportFile(path, fmt)
    except OSError as err:
        raise Fatal(f"cannot open the report file {path}: {err.strerror or err}")


def _scan_through_daemon(ctx, targets, socket_path, stream, verbose, infected_only) -> int:
    """clamdscan's behaviour: the daemon scans, this prints its replies as clamd words them."""
    from .daemon.client import Client, ClientError

    settings = load_settings(ctx)
    client = Client(path=socket_path or settings.daemon_socket())
    found = errors = 0
    try:
        for target in targets:
            if target == "-":
                results = [client.instream(sys.stdin.buffer)]
            elif stream:
                results = []
                for path in _files_under(target):
                    with open(path, "rb") as fh:
                        r = client.instream(fh)
                    results.append(type(r)(path, r.status, r.detail,
                                           r.line.replace("stream", path, 1)))
            else:
                results = client.scan(os.path.abspath(target), "MULTISCAN")
            for r in results:
                found += r.status == "FOUND"
                errors += r.status == "ERROR"
                if r.status == "OK" and (infected_only or not verbose):
                    continue
                if r.status == "ERROR" and infected_only:
                    continue
                click.echo(r.line)
    except (ClientError, OSError) as err:
        raise Fatal(f"daemon: {err}")
    return EXIT_FOUND if found else EXIT_ERROR if errors else EXIT_CLEAN


def _files_under(target: str):
    """Regular files only: opening a fifo or a device to stream it would block or never end."""
    import stat

    paths = [target]
    if os.path.isdir(target):
        paths = [os.path.join(root, name) for root, _dirs, files in os.walk(target)
                 for name in sorted(files)]
    for path in paths:
        try:
            if stat.S_ISREG(os.stat(path).st_mode):
                yield path
        except OSError:
            continue


def _progress_bar():
    from tqdm import tqdm

    return tqdm(unit=" files", file=sys.stderr, dynamic_ncols=True, mininterval=0.25,
                desc="scanning", leave=False)


class ReportPrinter:
    """Turns FileReports into clamscan-style lines or JSON lines, and counts for the exit code."""

    def __init__(self, verbose: bool, infected_only: bool, as_json: bool, found: set[Status],
                 actions: bool = False, incremental: bool = False):
        self.verbose, self.infected_only, self.as_json = verbose, infected_only, as_json
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
                click.echo(f"{report.path}: OK")
            return
        for path, st, threats, reason in report.findings:
            if self.infected_only and st not in (Status.INFECTED, Status.SUSPICIOUS):
                continue
            if report.skipped:
                if self.verbose:
                    click.echo(f"{path}: {reason} SKIPPED")
            elif threats:
                for name in threats:
                    click.echo(f"{path}: {name} FOUND")
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


# -- lmsav db ----------------------------------------------------------------------------------

@main.group("db")
def db_group():
    """Build, inspect and self-test signature databases."""


@db_group.command("build")
@click.argument("directory", metavar="DIR")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def db_build(directory, as_json):
    """Validate every signature file in DIR and compile it into DIR's cache.

    A malformed line is an error naming the file, the line and what is wrong. Later processes
    load the compiled cache in milliseconds instead of recompiling.
    """
    db = load_database(Path(directory), rebuild=True)
    info = _db_info(db)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"built {db.directory}: {db.total} signatures in {db.build_seconds:.2f} s "
                   f"-> {db.cache_path}")
        for line in db.not_used:
            click.echo(f"warning: {line}; not used", err=True)
        for line in db.skipped_lines:
            click.echo(f"warning: {line}; skipped", err=True)


@db_group.command("info")
@click.option("-d", "--database", metavar="DIR", help="Database directory (default: configured).")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
@click.pass_context
def db_info(ctx, database, as_json):
    """Show a database's version, signature counts per format and build time."""
    settings = load_settings(ctx)
    db = load_database(database_dir(settings, database))
    info = _db_info(db)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    import datetime

    built = datetime.datetime.fromtimestamp(db.built_at).strftime("%Y-%m-%d %H:%M:%S")
    click.echo(f"Directory: {db.directory}")
    click.echo(f"Version: {db.version}")
    click.echo(f"Signatures: {db.total}")
    for c in info["containers"]:
        click.echo(f"  {c['file']}: version {c['version']}, built {c['build_time']} by "
                   f"{c['builder']}, {c['signatures']} signatures, functionality level "
                   f"{c['functionality_level']}, {c['signature_status']}")
    click.echo(f"{'Type':<8}{'loaded':>10}{'skipped':>10}")
    for fmt in sorted(set(db.counts) | set(db.skipped)):
        click.echo(f"  .{fmt:<6}{db.counts.get(fmt, 0):>10}{db.skipped.get(fmt, 0):>10}")
    click.echo(f"Built: {built} in {db.build_seconds:.2f} s")
    click.echo(f"Compiled cache: {db.cache_path}")
    for line in db.not_used:
        click.echo(f"Not used: {line}")
    if db.skipped_lines:
        click.echo(f"Skipped signatures: {len(db.skipped_lines)} (each with its reason: "
                   f"`lmsav db info --json`)")


def _db_info(db) -> dict:
    return {
        "directory": str(db.directory),
        "version": db.version,
        "signatures": db.total,
        "counts": {k: v for k, v in db.counts.items() if v},
        "skipped": {k: v for k, v in db.skipped.items() if v},
        "containers": db.containers,
        "built_at": db.built_at,
        "build_seconds": db.build_seconds,
        "cache": str(db.cache_path),
        "not_used": db.not_used,
        "skipped_signatures": db.skipped_lines,
        "warnings": db.warnings,
        "self_test_samples": len(db.samples),
    }


@db_group.command("test")
@click.option("-d", "--database", metavar="DIR", help="Database directory (default: configured).")
@click.pass_context
def db_test(ctx, database):
    """Self-test: scan the database's own samples (selftest.toml) and check every verdict."""
    from .scanner.engine import Engine

    settings = load_settings(ctx)
    db = load_database(database_dir(settings, database))
    if not db.samples:
        raise Fatal(f"{db.directory}: no self-test samples (selftest.toml)")
    engine = Engine(db, settings.limits())
    failures = 0
    for sample in db.samples:
        verdict = engine.scan_bytes(sample.data, f"selftest:{sample.name}")
        names = [t.name for _, t in verdict.threats]
        ok = sample.expect in names if sample.expect else not names
        failures += not ok
        want = sample.expect or "clean"
        got = ", ".join(names) or "clean"
        click.echo(f"{'ok  ' if ok else 'FAIL'} {sample.name}: expected {want}, got {got}")
    click.echo(f"{len(db.samples) - failures} passed, {failures} failed")
    ctx.exit(EXIT_ERROR if failures else EXIT_CLEAN)


# -- lmsav config ------------------------------------------------------------------------------

@main.group("config")
def config_group():
    """Show and check the configuration."""


@config_group.command("show")
@click.option("--sources", is_flag=True, help="Annotate each value with where it came from.")
@click.pass_context
def config_show(ctx, sources):
    """Print the effective configuration (defaults, profile and file merged) as TOML."""
    settings = load_settings(ctx)
    click.echo(settings.to_toml(with_sources=sources), nl=False)


@config_group.command("check")
@click.pass_context
def config_check(ctx):
    """Validate the configuration file; exit 0 if lmsav can start with it, 2 otherwise."""
    obj = ctx.find_root().obj
    settings = load_settings(ctx)
    where = obj["config"] if Path(obj["config"]).exists() else "built-in defaults"
    click.echo(f"{where}: OK (profile {settings.profile})")
