"""The options of ``lmsav scan``, in one place: the scan command takes them, and ``lmsav cron``
checks a schedule's stored scan options against them."""

from __future__ import annotations

from dataclasses import dataclass

import click

ACTIONS = ("report", "quarantine", "cure", "delete")
UNCURABLE_ACTIONS = ("report", "quarantine", "delete")


def _parameters() -> list:
    """Fresh decorators each time: a click parameter belongs to one command."""
    return [
    click.argument("targets", nargs=-1, required=True, metavar="PATH..."),
    click.option("-d", "--database", metavar="DIR", help="Signature database directory."),
    click.option("--exclude", multiple=True, metavar="GLOB",
                  help="Skip files and directories matching GLOB (path or name); repeatable."),
    click.option("--include", multiple=True, metavar="GLOB",
                  help="Scan only files matching GLOB (path or name); repeatable."),
    click.option("--max-dir-depth", type=int, default=None, metavar="N",
                  help="Descend at most N directory levels (0 = unlimited)."),
    click.option("--one-file-system/--cross-file-systems", default=None,
                  help="Stay on the file system of each PATH."),
    click.option("--follow-symlinks/--no-follow-symlinks", default=None,
                  help="Follow symbolic links inside directories (default: no)."),
    click.option("--max-filesize", "max_file_size", metavar="SIZE",
                  help="Skip (ERROR) files and members larger than SIZE (e.g. 25M)."),
    click.option("--max-scansize", "max_scan_size", metavar="SIZE",
                  help="Stop after SIZE bytes extracted from one input."),
    click.option("--max-recursion", "max_scan_depth", type=int, metavar="N",
                  help="Container nesting depth limit."),
    click.option("--max-files", type=int, metavar="N",
                  help="Members unpacked per container; the rest are only matched."),
    click.option("--max-scantime", "max_scan_time", type=float, metavar="SEC",
                  help="Time limit per input, in seconds."),
    click.option("--max-ratio", "max_compression_ratio", type=int, metavar="N",
                  help="Compression ratio limit per member."),
    click.option("--no-archive", is_flag=True, help="Do not look inside archives."),
    click.option("--no-mail", is_flag=True, help="Do not look inside mail files."),
    click.option("-j", "--jobs", type=int, default=None, metavar="N",
                  help="Parallel workers (default: number of cores)."),
    click.option("-v", "--verbose", is_flag=True,
                 help="Also print 'PATH: OK' for clean files ('PATH: unchanged' for those"
                      " --incremental did not read)."),
    click.option("-i", "--infected", is_flag=True,
                 help="Print only infected and suspicious files, and errors."),
    click.option("--json", "as_json", is_flag=True,
                  help="One JSON object per line: one per input (the verdict tree), then the summary "
                       "(schema: lmsav/data/scan-result.schema.json in the package)."),
    click.option("--no-summary", is_flag=True, help="Do not print the summary."),
    click.option("--progress/--no-progress", default=None,
                  help="Progress bar on stderr: files done of files found, with the percentage "
                       "and time left once the walk is over (default: only when stderr is a "
                       "terminal)."),
    click.option("--no-color", is_flag=True,
                  help="No colour for FOUND and ERROR (default: colour on a terminal, unless "
                       "NO_COLOR is set)."),
    click.option("--daemon", "use_daemon", is_flag=True,
                  help="Scan through a running lmsav daemon (as clamdscan does): paths are passed "
                       "to it (MULTISCAN), standard input is streamed."),
    click.option("--socket", "daemon_socket", metavar="PATH",
                  help="The daemon's unix socket (default: configured [daemon] socket)."),
    click.option("--stream", is_flag=True,
                  help="With --daemon: send file contents (INSTREAM) instead of paths, for a "
                       "daemon that cannot read them."),
    click.option("--action", type=click.Choice(ACTIONS), default=None,
                  help="What to do with a detected file (default: configured scan.action, "
                       "report)."),
    click.option("--infected-action", type=click.Choice(ACTIONS), default=None,
                  help="Action for infected files (default: --action)."),
    click.option("--suspicious-action", type=click.Choice(ACTIONS), default=None,
                  help="Action for suspicious files (default: --action)."),
    click.option("--protected-action", type=click.Choice(ACTIONS), default=None,
                  help="Action for encrypted files when scan.detect_protected counts them."),
    click.option("--corrupted-action", type=click.Choice(ACTIONS), default=None,
                  help="Action for corrupted files when scan.detect_corrupted counts them."),
    click.option("--error-action", type=click.Choice(ACTIONS), default=None,
                  help="Action for files that could not be scanned."),
    click.option("--uncurable-action", type=click.Choice(UNCURABLE_ACTIONS), default=None,
                  help="What cure does with a file it cannot cure (default: quarantine)."),
    click.option("--no-backup", is_flag=True,
                  help="Do not keep the original in backup/files/ before a cure or a delete."),
    click.option("--report", "report_path", metavar="FILE",
                  help="Append one line per file something was found in (action asked, action "
                       "done, result, quarantine or backup id) to FILE."),
    click.option("--report-format", type=click.Choice(("text", "jsonl")), default=None,
                  help="Format of --report (default: jsonl for *.jsonl and *.json, text otherwise)."),
    click.option("--incremental/--no-incremental", default=None,
                  help="Skip files unchanged since a clean verdict under the same database "
                       "(default: configured scan.incremental, off)."),
    click.option("--watch", is_flag=True,
                  help="Watch the directories PATH... and scan each file as it is written or moved "
                       "in, until interrupted (SIGINT, SIGTERM). Only new or changed files are "
                       "scanned: files already there are not, unless --initial-scan."),
    click.option("--initial-scan", is_flag=True,
                  help="With --watch: first scan the files already in the directories (as a "
                       "sweep does), then watch."),
    ]


def scan_options(function):
    """Give ``function`` the arguments and options of ``lmsav scan`` (ScanParameters' fields)."""
    for decorator in reversed(_parameters()):
        function = decorator(function)
    return function


def scan_command() -> click.Command:
    """A command that takes exactly ``lmsav scan``'s options and runs nothing: for checking
    options stored to be passed to a scan later."""
    return click.command("scan")(scan_options(lambda **_params: None))


@dataclass(frozen=True)
class ScanParameters:
    """What ``lmsav scan`` was given on its command line (None: not given)."""

    targets: tuple[str, ...]
    database: str | None = None
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    max_dir_depth: int | None = None
    one_file_system: bool | None = None
    follow_symlinks: bool | None = None
    max_file_size: str | None = None
    max_scan_size: str | None = None
    max_scan_depth: int | None = None
    max_files: int | None = None
    max_scan_time: float | None = None
    max_compression_ratio: int | None = None
    no_archive: bool = False
    no_mail: bool = False
    jobs: int | None = None
    verbose: bool = False
    infected: bool = False
    as_json: bool = False
    no_summary: bool = False
    progress: bool | None = None
    no_color: bool = False
    use_daemon: bool = False
    daemon_socket: str | None = None
    stream: bool = False
    action: str | None = None
    infected_action: str | None = None
    suspicious_action: str | None = None
    protected_action: str | None = None
    corrupted_action: str | None = None
    error_action: str | None = None
    uncurable_action: str | None = None
    no_backup: bool = False
    report_path: str | None = None
    report_format: str | None = None
    incremental: bool | None = None
    watch: bool = False
    initial_scan: bool = False

    def action_overrides(self) -> dict:
        """The [scan] action settings given on the command line."""
        given = {
            "scan.action": self.action,
            "scan.infected_action": self.infected_action,
            "scan.suspicious_action": self.suspicious_action,
            "scan.protected_action": self.protected_action,
            "scan.corrupted_action": self.corrupted_action,
            "scan.error_action": self.error_action,
            "scan.uncurable_action": self.uncurable_action,
            "scan.backup": False if self.no_backup else None,
        }
        return {k: v for k, v in given.items() if v is not None}

    def overrides(self) -> dict:
        """Every setting given on the command line, as configuration keys."""
        given = {
            "limits.max_file_size": self.max_file_size,
            "limits.max_scan_size": self.max_scan_size,
            "limits.max_scan_depth": self.max_scan_depth,
            "limits.max_files": self.max_files,
            "limits.max_scan_time": self.max_scan_time,
            "limits.max_compression_ratio": self.max_compression_ratio,
            "scan.workers": self.jobs,
            "scan.max_dir_depth": self.max_dir_depth,
            "scan.one_file_system": self.one_file_system,
            "scan.follow_symlinks": self.follow_symlinks,
            "scan.scan_archives": False if self.no_archive else None,
            "scan.scan_mail": False if self.no_mail else None,
            "scan.exclude": list(self.exclude) if self.exclude else None,
            "scan.include": list(self.include) if self.include else None,
            "scan.incremental": self.incremental,
        }
        return {**{k: v for k, v in given.items() if v is not None}, **self.action_overrides()}
