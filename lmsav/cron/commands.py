"""`lmsav cron …`: add, list, show and remove scheduled sweeps and database updates, install them
for cron or systemd, and run one (what the installed job calls)."""

from __future__ import annotations

import datetime
import os
import shlex
from pathlib import Path

import click

from .. import jsonout, logsetup
from ..clitools import Fatal, load_settings, root_options
from . import expression as expression_mod
from . import install as install_mod
from .run import (
    RunResult,
    StateFiles,
    forget_last_result,
    last_result,
    log_error,
    run_schedule,
)
from .schedules import (
    Schedule,
    ScheduleError,
    Store,
    check_mail,
    check_name,
    schedules_dir,
    split_scan_args,
)

NEXT_IN_LIST = 3
QUIET_LINES = 1000  # scan output kept by --quiet, printed only when the run was not clean


# -- where things are ----------------------------------------------------------------------------



def _config_file(ctx: click.Context) -> Path:
    return Path(root_options(ctx)["config"]).absolute()


def _store(ctx: click.Context) -> Store:
    return Store(schedules_dir(_config_file(ctx)))




def _state(ctx: click.Context) -> StateFiles:
    return StateFiles(Path(load_settings(ctx).paths.state_dir))


def _job_config(ctx: click.Context) -> Path | None:
    """The --config a job passes on: the file in use, so a job started by cron or systemd,
    whose environment has no $LMSAV_CONFIG or $XDG_CONFIG_HOME, reads the same one."""
    obj = root_options(ctx)
    path = _config_file(ctx)
    return path if obj["config_explicit"] or path.exists() else None


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


def _install_all(ctx: click.Context, store: Store, target: install_mod.Target
                 ) -> install_mod.Installed:
    """Regenerate the installed form from every stored schedule."""
    schedules = store.load_all()
    lmsav = install_mod.lmsav_command()
    config = _job_config(ctx)
    commands = {s.name: install_mod.job_command(s, lmsav, config) for s in schedules}
    return install_mod.install(target, schedules, commands, store.directory)


def _systemctl(target: install_mod.Target, installed: install_mod.Installed,
               enable: list[str], run_them: bool, flag: str) -> None:
    """Print (or, with ``run_them``, run) what systemd needs to see the changed units."""
    commands = []
    if installed.timers_removed:
        commands.append(target.systemctl("stop", *installed.timers_removed))
    if installed.units_changed or enable:
        commands.append(target.systemctl("daemon-reload"))
    if enable:
        commands.append(target.systemctl("enable", "--now", *enable))
    if not commands:
        return
    text = " && ".join(shlex.join(command) for command in commands)
    if not run_them:
        click.echo(f"to apply this to systemd, run: {text}  (or use {flag})")
    elif not install_mod.systemd_running():
        click.echo(f"systemd is not running here ({install_mod.SYSTEMD_RUNNING} is missing); "
                   f"where it runs, run: {text}")
    else:
        install_mod.run_systemctl(commands)
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
    expression = _checked_schedule(name, when, systemd, enable)
    try:
        options, more_paths = split_scan_args(list(args))
    except ScheduleError as err:
        raise Fatal(str(err)) from None
    paths = [os.path.abspath(os.path.expanduser(p)) for p in (*path_options, *more_paths)]
    if not paths:
        raise Fatal("no paths to sweep: give them with --paths PATH")
    for path in paths:
        if any(c in path for c in "\r\n\0"):
            raise Fatal(f"--paths {path!r}: a path on one line, please")
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    schedule = Schedule(name=name, schedule=expression.text, paths=tuple(dict.fromkeys(paths)),
                        scan_options=tuple(options), incremental=incremental, systemd=systemd,
                        created=datetime.datetime.now().astimezone().replace(microsecond=0))
    for path in schedule.paths:
        if not os.path.exists(path):
            click.echo(f"lmsav: warning: {path}: no such file or directory (yet); the sweep "
                       f"reports an error for it until it exists", err=True)
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
    expression = _checked_schedule(name, when, systemd, enable)
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    schedule = Schedule(name=name, schedule=expression.text, kind="update", systemd=systemd,
                        created=datetime.datetime.now().astimezone().replace(microsecond=0))
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
    expression = _checked_schedule(name, when, systemd, enable)
    try:
        mail = check_mail(list(addresses))
    except ScheduleError as err:
        raise Fatal(f"--mail: {err}") from None
    load_settings(ctx)  # every run needs lmsav's configuration: refuse one it cannot load
    schedule = Schedule(name=name, schedule=expression.text, kind="report", report=period,
                        mail=mail, systemd=systemd,
                        created=datetime.datetime.now().astimezone().replace(microsecond=0))
    _add(ctx, schedule, replace, enable, cron_dir, unit_dir)


def _checked_schedule(name: str, when: str, systemd: bool, enable: bool
                      ) -> expression_mod.CronExpression:
    """NAME and --schedule checked, as one-line errors."""
    try:
        check_name(name)
    except ScheduleError as err:
        raise Fatal(f'NAME "{name}": {err}') from None
    if enable and not systemd:
        raise Fatal("--enable goes with --systemd (a cron line is active once installed)")
    try:
        expression = expression_mod.parse(when)
    except expression_mod.ExpressionError as err:
        raise Fatal(f'--schedule "{when}": {err}') from None
    if systemd:
        try:
            expression.on_calendar()
        except expression_mod.ExpressionError as err:
            raise Fatal(f'--systemd: --schedule "{when}" has {err}') from None
    return expression


def _add(ctx, schedule: Schedule, replace: bool, enable: bool, cron_dir: str | None,
         unit_dir: str | None) -> None:
    """Store the schedule and reinstall all of them; print what changed."""
    name = schedule.name
    systemd = schedule.systemd
    store = _store(ctx)
    target = _target(cron_dir, unit_dir)
    try:
        with store.locked():
            existed = store.exists(name)
            if existed and not replace:
                raise Fatal(f"schedule '{name}' exists ({store.path(name)}); use --replace, or "
                             f"`lmsav cron remove {name}` first")
            installed = _change(ctx, store, target, name, lambda: store.save(schedule))
            _forget_last_result(ctx, name)
    except (ScheduleError, install_mod.InstallError) as err:
        raise Fatal(str(err)) from None
    except OSError as err:
        raise Fatal(f"{err.filename or store.directory}: {err.strerror or err}") from None
    click.echo(f"{'replaced' if existed else 'added'} {schedule.kind} {name}: "
               f"{store.path(name)}")
    _describe(schedule, next_count=NEXT_IN_LIST)
    for message in installed.messages:
        click.echo(message)
    enable_timers = [f"{install_mod.unit_stem(schedule)}.timer"] if systemd else []
    try:
        _systemctl(target, installed, enable_timers, enable, "--enable")
    except install_mod.InstallError as err:
        raise Fatal(str(err)) from None


def _change(ctx, store: Store, target: install_mod.Target, name: str, change
            ) -> install_mod.Installed:
    """Make ``change`` to one schedule file and reinstall; put the file back if that fails."""
    before = store.read_raw(name)
    change()
    try:
        return _install_all(ctx, store, target)
    except (ScheduleError, install_mod.InstallError, OSError):
        if before is None:
            store.path(name).unlink(missing_ok=True)
        else:
            store.write_raw(name, before)
        try:
            _install_all(ctx, store, target)
        except (ScheduleError, install_mod.InstallError, OSError):
            pass  # the first error is the one to report
        raise


def _forget_last_result(ctx, name: str) -> None:
    """The schedule now stored under ``name``, or none, has not run: the last result kept for
    the name was an earlier schedule's (`cron list` would show it as this one's)."""
    try:
        forget_last_result(_state(ctx), name)
    except Fatal:
        pass  # a configuration lmsav cannot load: `cron remove` still works, and add refuses it
    except OSError as err:
        click.echo(f"lmsav: warning: {err.filename}: {err.strerror}; `lmsav cron list` may "
                   f"show the last result of the earlier schedule {name}", err=True)


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
    store = _store(ctx)
    try:
        check_name(name)
        if not store.exists(name):
            store.load(name)  # the error lists the schedules there are
    except ScheduleError as err:
        raise Fatal(str(err)) from None
    target = _target(cron_dir, unit_dir)
    try:
        with store.locked():
            installed = _change(ctx, store, target, name, lambda: store.delete(name))
            _forget_last_result(ctx, name)
    except (ScheduleError, install_mod.InstallError) as err:
        raise Fatal(str(err)) from None
    except OSError as err:
        raise Fatal(f"{err.filename or store.directory}: {err.strerror or err}") from None
    click.echo(f"removed {name}")
    for message in installed.messages:
        click.echo(message)
    try:
        _systemctl(target, installed, [], disable, "--disable")
    except install_mod.InstallError as err:
        raise Fatal(str(err)) from None


@cron.command("install", short_help="Regenerate the crontab lines and systemd units.")
@click.option("--enable", is_flag=True,
              help="Run systemctl daemon-reload and enable --now for every lmsav timer (only "
                   "where systemd is running).")
@_install_options
@click.pass_context
def install_cmd(ctx, enable, cron_dir, unit_dir):
    """Regenerate the crontab lines and systemd units from the stored schedules (after
    editing a schedule file by hand, or after moving the lmsav executable)."""
    store = _store(ctx)
    target = _target(cron_dir, unit_dir)
    try:
        with store.locked():
            installed = _install_all(ctx, store, target)
    except (ScheduleError, install_mod.InstallError) as err:
        raise Fatal(str(err)) from None
    except OSError as err:
        raise Fatal(f"{err.filename or store.directory}: {err.strerror or err}") from None
    for message in installed.messages or ["nothing to change"]:
        click.echo(message)
    try:
        _systemctl(target, installed, installed.timers if enable else [], enable, "--enable")
    except install_mod.InstallError as err:
        raise Fatal(str(err)) from None


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
