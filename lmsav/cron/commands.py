"""`lmsav cron …`: add, list, show and remove scheduled sweeps and database updates, install them
for cron or systemd, and run one (what the installed job calls)."""

from __future__ import annotations

import datetime
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from .. import jsonout, logsetup
from ..clitools import Fatal, load_settings, root_options
from . import changes
from . import expression as expression_mod
from . import install as install_mod
from .run import (
    RunResult,
    StateFiles,
    last_result,
    log_error,
    run_schedule,
)
from .schedules import (
    Schedule,
    ScheduleError,
    Store,
    check_name,
)

NEXT_IN_LIST = 3
QUIET_LINES = 1000  # scan output kept by --quiet, printed only when the run was not clean
T = TypeVar("T")


# -- where things are ----------------------------------------------------------------------------

def _place(ctx: click.Context, state_dir: Path | None = None) -> changes.Place:
    obj = root_options(ctx)
    return changes.Place(Path(obj["config"]).absolute(), state_dir, obj["config_explicit"])


def _changing_place(ctx: click.Context) -> changes.Place:
    """The place with the state directory whose last result a change forgets; none when the
    configuration cannot be loaded (`cron remove` still works then; add refuses it first)."""
    try:
        state_dir = _state(ctx).state_dir
    except Fatal:
        state_dir = None
    return _place(ctx, state_dir)


def _store(ctx: click.Context) -> Store:
    return _place(ctx).store


def _state(ctx: click.Context) -> StateFiles:
    return StateFiles(Path(load_settings(ctx).paths.state_dir))


def _job_config(ctx: click.Context) -> Path | None:
    return _place(ctx).job_config


def _target(cron_dir: str | None, unit_dir: str | None) -> install_mod.Target:
    return install_mod.resolve_target(cron_dir, unit_dir)


def _install_options(function):
    options = [
        click.option("--cron-dir", metavar="DIR", envvar=install_mod.ENV_CRON_DIR,
                     help="Write the cron.d-style file DIR/lmsav (default: /etc/cron.d as root; "
                          "otherwise the user's crontab; env LMSAV_CRON_DIR)."),
        click.option("--unit-dir", metavar="DIR", envvar=install_mod.ENV_SYSTEMD_DIR,
                     help="Directory for systemd units (default: /etc/systemd/system as root, "
                          "~/.config/systemd/user otherwise; env LMSAV_SYSTEMD_DIR)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _systemctl(commands: list[list[str]], run_them: bool, flag: str) -> None:
    """Print (or, with ``run_them``, run) what systemd needs to see the changed units."""
    if not commands:
        return
    text = changes.shell_line(commands)
    if not run_them:
        click.echo(f"to apply this to systemd, run: {text}  (or use {flag})")
    elif not install_mod.systemd_running():
        click.echo(f"systemd is not running here ({install_mod.SYSTEMD_RUNNING} is missing); "
                   f"where it runs, run: {text}")
    else:
        try:
            install_mod.run_systemctl(commands)
        except install_mod.InstallError as err:
            raise Fatal(str(err)) from None
        click.echo(f"ran: {text}")


def _when(moment: datetime.datetime) -> str:
    return moment.strftime("%a %Y-%m-%d %H:%M %Z").rstrip()


# -- the group -----------------------------------------------------------------------------------

@click.group("cron")
def cron() -> None:
    """Scheduled sweeps and database updates: store them, install them for cron or systemd,
    run them.

    Each schedule is a file in schedules.d/ beside lmsav.toml. After every change the
    installed form is regenerated from all of them: /etc/cron.d/lmsav as root, a marked block
    in the user's crontab otherwise, or systemd timers (--systemd). See lmsav-cron(8).
    """


def _add_options(function):
    """What every `lmsav cron add KIND` takes besides its own: how it is installed."""
    function = _install_options(function)
    for option in reversed((
            click.option("--systemd", is_flag=True,
                         help="Install as systemd service and timer units instead of a cron "
                              "line."),
            click.option("--enable", is_flag=True,
                         help="With --systemd: run systemctl daemon-reload and enable --now "
                              "for the timer (only where systemd is running)."),
            click.option("--replace", is_flag=True,
                         help="Replace a schedule of the same name."))):
        function = option(function)
    return function


@cron.group("add")
def add() -> None:
    """Add a schedule: a sweep of directories, or a database update."""


@add.command("sweep", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("args", nargs=-1, type=click.UNPROCESSED, metavar="[PATH]... [SCAN OPTION]...")
@click.option("--paths", "path_options", multiple=True, metavar="PATH",
              help="Directory or file to sweep; repeatable, and more paths may follow.")
@click.option("--schedule", "when", required=True, metavar="EXPR",
              help='When to run: a cron expression such as "0 3 * * *", or @hourly, @daily, '
                   '@weekly, @monthly, @yearly.')
@click.option("--incremental/--no-incremental", default=True, show_default=True,
              help="Skip files unchanged since their last clean scan.")
@_add_options
@click.pass_context
def add_sweep(ctx, name, args, path_options, when, incremental, systemd, enable, replace,
              cron_dir, unit_dir):
    """Sweep PATHs on a schedule. Options of `lmsav scan` (such as --exclude GLOB, -j N,
    --max-filesize SIZE) may follow and are passed to every run; they are checked now.

    \b
    Example:
      lmsav cron add sweep nightly --paths /srv/mail /home --schedule "0 3 * * *" \\
          --exclude '*.log' -j 2
    """
    schedule = _checked(changes.sweep_schedule, name, when, path_options, args,
                        incremental=incremental, systemd=systemd, enable=enable,
                        read_path=changes.shell_path)
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    for warning in changes.missing_paths(schedule):
        click.echo(f"lmsav: warning: {warning}", err=True)
    _add(ctx, schedule, replace, enable, cron_dir, unit_dir)


@add.command("update")
@click.argument("name")
@click.option("--schedule", "when", required=True, metavar="EXPR",
              help='When to run: a cron expression such as "17 * * * *", or @hourly, @daily '
                   '… (mirrors ask for at most one check an hour).')
@_add_options
@click.pass_context
def add_update(ctx, name, when, systemd, enable, replace, cron_dir, unit_dir):
    """Run `lmsav update` on a schedule, with the configuration in use: its [update]
    sources and databases. Choose a minute of your own rather than :00, when every other
    server asks the mirrors.

    \b
    Example:
      lmsav cron add update hourly --schedule "17 * * * *"
    """
    schedule = _checked(changes.update_schedule, name, when, systemd, enable)
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    _add(ctx, schedule, replace, enable, cron_dir, unit_dir)


@add.command("report")
@click.argument("name")
@click.option("--report", "period", type=click.Choice(["daily", "weekly"]), required=True,
              help="Which report: daily (yesterday, by hour) or weekly (the last 7 days, by "
                   "day).")
@click.option("--mail", "addresses", multiple=True, metavar="ADDR",
              help="Mail each report to ADDR; repeatable. Every report is also kept in "
                   "<state_dir>/reports/.")
@click.option("--schedule", "when", required=True, metavar="EXPR",
              help='When to run: a cron expression such as "0 6 * * *", or @daily, @weekly …')
@_add_options
@click.pass_context
def add_report(ctx, name, period, addresses, when, systemd, enable, replace, cron_dir,
               unit_dir):
    """Run `lmsav report daily|weekly` on a schedule: the HTML page is kept in the reports
    directory and mailed (text, HTML and chart) to each --mail ADDR.

    \b
    Example:
      lmsav cron add report daily-mail --report daily --mail postmaster@example.org \\
          --schedule "0 6 * * *"
    """
    schedule = _checked(changes.report_schedule, name, when, period, addresses, systemd,
                        enable)
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    _add(ctx, schedule, replace, enable, cron_dir, unit_dir)


def _checked(make: Callable[..., T], *args, **kwargs) -> T:
    """``make(*args, **kwargs)``, a change or a new schedule; its refusal a one-line error."""
    try:
        return make(*args, **kwargs)
    except changes.ChangeError as err:
        raise Fatal(str(err)) from None


def _add(ctx, schedule: Schedule, replace: bool, enable: bool, cron_dir: str | None,
         unit_dir: str | None) -> None:
    """Store the schedule and reinstall all of them; print what changed."""
    target = _target(cron_dir, unit_dir)
    changed = _checked(changes.add, _changing_place(ctx), schedule, replace, target)
    _warn(changed)
    click.echo(f"{'replaced' if changed.replaced else 'added'} {schedule.kind} {schedule.name}: "
               f"{changed.path}")
    _describe(schedule, next_count=NEXT_IN_LIST)
    for message in changed.messages:
        click.echo(message)
    _systemctl(changed.commands, enable, "--enable")


def _warn(changed: changes.Changed) -> None:
    for warning in changed.warnings:
        click.echo(f"lmsav: warning: {warning}", err=True)


def _last(state: StateFiles, schedule: Schedule) -> RunResult | None:
    return last_result(state, schedule.name, since=schedule.created)


def _describe(schedule: Schedule, next_count: int, last: RunResult | None = None,
              show_last: bool = False) -> None:
    click.echo(f"  schedule: {schedule.schedule}"
               + ("  (systemd timer)" if schedule.systemd else ""))
    if schedule.kind != "sweep":
        click.echo(f"  runs:     {schedule.runs}")
    else:
        click.echo(f"  paths:    {' '.join(shlex.quote(p) for p in schedule.paths)}")
    if schedule.scan_options:
        click.echo(f"  options:  {shlex.join(schedule.scan_options)}")
    if not schedule.incremental:
        click.echo("  incremental: no (every file is scanned each time)")
    upcoming = schedule.expression.next_times(next_count)
    click.echo(f"  next:     {', '.join(_when(t) for t in upcoming)}")
    if show_last:
        click.echo(f"  last:     {_last_text(last)}")


def _last_text(last: RunResult | None) -> str:
    if last is None:
        return "never ran"
    parts = [f"{last.started} {last.result}"]
    if last.version is not None:
        parts.append(f"version {last.version}")
    if last.files is not None:
        parts.append(f"{last.files} files")
    if last.found is not None:
        parts.append(f"{last.found} found")
    if last.seconds is not None:
        parts.append(f"{last.seconds:.1f} s")
    if last.error:
        parts.append(last.error)
    return ", ".join(parts)


@cron.command("list", short_help="Every schedule, its next runs and last result.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per schedule, one per line (JSON Lines).")
@click.pass_context
def list_cmd(ctx, as_json):
    """Every schedule: kind, schedule, paths, the next 3 run times and the last result."""
    store = _store(ctx)
    state = _state(ctx)
    rows, broken = [], []
    for name in store.names():
        try:
            rows.append(store.load(name))
        except ScheduleError as err:
            broken.append(str(err))
    if as_json:
        jsonout.emit_records(_schedule_json(s, state, NEXT_IN_LIST, store) for s in rows)
    elif not rows and not broken:
        click.echo(f"no schedules in {store.directory}")
    for schedule in rows if not as_json else ():
        click.echo(f"{schedule.name}  {schedule.kind}")
        _describe(schedule, NEXT_IN_LIST, _last(state, schedule), show_last=True)
    for message in broken:
        click.echo(f"lmsav: error: {message}", err=True)
    ctx.exit(2 if broken else 0)


def _schedule_json(schedule: Schedule, state: StateFiles, count: int, store: Store) -> dict:
    data = schedule.to_json()
    data["file"] = str(store.path(schedule.name))
    data["next"] = [t.isoformat() for t in schedule.expression.next_times(count)]
    last = _last(state, schedule)
    data["last"] = last.to_json() if last else None
    return data


@cron.command("show", short_help="One schedule in full, and how it is installed.")
@click.argument("name")
@click.option("-n", "--count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Next run times to show.")
@click.option("--json", "as_json", is_flag=True,
              help="The schedule as one JSON object on one line.")
@_install_options
@click.pass_context
def show_cmd(ctx, name, count, as_json, cron_dir, unit_dir):
    """One schedule: its file, next run times, last result and how it is installed."""
    store = _store(ctx)
    try:
        check_name(name)
        schedule = store.load(name)
    except ScheduleError as err:
        raise Fatal(str(err)) from None
    state = _state(ctx)
    target = _target(cron_dir, unit_dir)
    command = install_mod.job_command(schedule, install_mod.lmsav_command(), _job_config(ctx))
    if schedule.systemd:
        stem = install_mod.unit_stem(schedule)
        installed = {"systemd": [str(target.unit_dir / f"{stem}.service"),
                                 str(target.unit_dir / f"{stem}.timer")],
                     "on_calendar": schedule.expression.on_calendar()}
    else:
        installed = {"cron": target.cron_place(),
                     "line": install_mod.cron_line(
                         schedule, command, target.user if target.cron_dir else None)}
    if as_json:
        data = _schedule_json(schedule, state, count, store)
        data["installed"] = installed
        jsonout.emit_object(data)
        return
    click.echo(f"{schedule.name}  {schedule.kind}  {store.path(name)}")
    _describe(schedule, count, _last(state, schedule), show_last=True)
    if schedule.systemd:
        click.echo(f"  systemd:  {', '.join(installed['systemd'])}")
        click.echo(f"            OnCalendar={installed['on_calendar']}")
    else:
        click.echo(f"  cron:     {installed['cron']}:")
        click.echo(f"            {installed['line']}")
    if schedule.created:
        click.echo(f"  created:  {schedule.created.isoformat()}")


@cron.command("remove")
@click.argument("name")
@click.option("--disable", is_flag=True,
              help="For a systemd schedule: stop its timer and run systemctl daemon-reload "
                   "(only where systemd is running).")
@_install_options
@click.pass_context
def remove_cmd(ctx, name, disable, cron_dir, unit_dir):
    """Delete a schedule and take it out of the crontab or systemd. Its past reports stay in
    the state directory; its last result goes, so that a new schedule of the same name starts
    with none."""
    try:
        check_name(name)  # as `cron show` puts it, without the NAME "…" of `cron add`
    except ScheduleError as err:
        raise Fatal(str(err)) from None
    target = _target(cron_dir, unit_dir)
    changed = _checked(changes.remove, _changing_place(ctx), name, target)
    _warn(changed)
    click.echo(f"removed {name}")
    for message in changed.messages:
        click.echo(message)
    _systemctl(changed.commands, disable, "--disable")


@cron.command("install", short_help="Regenerate the crontab lines and systemd units.")
@click.option("--enable", is_flag=True,
              help="Run systemctl daemon-reload and enable --now for every lmsav timer (only "
                   "where systemd is running).")
@_install_options
@click.pass_context
def install_cmd(ctx, enable, cron_dir, unit_dir):
    """Regenerate the crontab lines and systemd units from the stored schedules (after
    editing a schedule file by hand, or after moving the lmsav executable)."""
    target = _target(cron_dir, unit_dir)
    installed = _checked(changes.reinstall, _place(ctx), target)
    for message in installed.messages or ["nothing to change"]:
        click.echo(message)
    _systemctl(changes.systemctl_commands(target, installed,
                                          installed.timers if enable else []),
               enable, "--enable")


@cron.command("next")
@click.argument("expression", metavar='"EXPR"')
@click.option("-n", "--count", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="How many run times to show.")
@click.option("--systemd", is_flag=True, help="Also show the systemd OnCalendar= form.")
def next_cmd(expression, count, systemd):
    """Check a cron expression and show when it runs next (local time)."""
    try:
        parsed = expression_mod.parse(expression)
        on_calendar = parsed.on_calendar() if systemd else None
    except expression_mod.ExpressionError as err:
        raise Fatal(f'"{expression}": {err}') from None
    if on_calendar:
        click.echo(f"OnCalendar={on_calendar}")
    for moment in parsed.next_times(count):
        click.echo(_when(moment))


@cron.command("run", short_help="Run one schedule now (what cron and systemd run).")
@click.argument("name")
@click.option("-q", "--quiet", is_flag=True,
              help="Print nothing when the sweep is clean or the database current (what the "
                   "installed jobs use, so that cron mails only findings and errors).")
@click.pass_context
def run_cmd(ctx, name, quiet):
    """Run one schedule now, as cron or systemd does: a sweep's report goes to
    <state_dir>/reports/, one line per run to <state_dir>/log/cron.log. If this schedule is
    already running, log that and exit 0 without starting it again. A sweep exits 0 clean,
    1 found, 2 error; an update 0 when the database is current, 1 when it is not, 2 error."""
    try:
        check_name(name)
    except ScheduleError as err:
        raise Fatal(f'NAME "{name}": {err}') from None
    state = _state(ctx)
    _log_results(ctx)
    try:
        schedule = _store(ctx).load(name)
    except ScheduleError as err:
        log_error(state, name, str(err))
        raise Fatal(str(err)) from None
    obj = root_options(ctx)
    config = _job_config(ctx)
    lmsav = [*install_mod.lmsav_command(),
             *(["--config", str(config)] if config else []),
             *(["--profile", obj["profile"]] if obj.get("profile") else [])]
    held: list[str] = []

    def on_line(line: str) -> None:
        if not quiet:
            click.echo(line)
        elif len(held) < QUIET_LINES:
            held.append(line)

    try:
        result = run_schedule(schedule, state, lmsav, on_line)
    except OSError as err:
        raise Fatal(f"{err.filename or state.state_dir}: {err.strerror or err}") from None
    if result.result == "skipped":
        if not quiet:
            click.echo(f"lmsav: {name} is {result.error}; not started again", err=True)
        ctx.exit(result.exit_code)
    if quiet and not result.ok:
        for line in held:
            click.echo(line)
    if not quiet or not result.ok:
        click.echo(f"lmsav cron: {result.fields()}")
    ctx.exit(result.exit_code)


def _log_results(ctx: click.Context) -> None:
    """The result lines go where [log] says. On standard error they would repeat what this
    command prints (and make cron mail every quiet run): then they go to syslog (facility cron)
    where there is one, and only to <state_dir>/log/cron.log otherwise."""
    settings = load_settings(ctx)
    if settings.log.destination == "stderr":
        logsetup.syslog_only("lmsav.cron", "cron", "cron", settings.log.format)
    else:
        logsetup.configure(settings, "cron", verbosity=logsetup.verbosity_of(ctx))
