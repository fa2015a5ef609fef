"""Changing the stored schedules, for `lmsav cron add|remove|install` and the web console alike:
a new schedule checked (NAME, --schedule, paths, scan options, addresses) with the one-line
errors of the command line, stored or deleted under the store's lock, every schedule reinstalled
for cron or systemd (the file put back when that fails), and the systemctl commands systemd
then needs to see the change."""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from . import expression as expression_mod
from . import install as install_mod
from .run import StateFiles, forget_last_result
from .schedules import (
    Schedule,
    ScheduleError,
    Store,
    check_mail,
    check_name,
    schedules_dir,
    split_scan_args,
)


class ChangeError(Exception):
    """One line, the text `lmsav cron` prints after ``lmsav: error:`` for the same mistake."""


@dataclass(frozen=True)
class Place:
    """Where one configuration keeps its schedules and their state, and how its jobs start.

    ``state_dir`` is None when the configuration cannot be loaded: a schedule can still be
    removed then, and no last result is forgotten (there is none to be found)."""

    config_file: Path
    state_dir: Path | None
    config_explicit: bool = False

    @property
    def store(self) -> Store:
        return Store(schedules_dir(self.config_file))

    @property
    def state(self) -> StateFiles:
        return StateFiles(Path(self.state_dir))

    @property
    def job_config(self) -> Path | None:
        """The --config the installed jobs pass on: the file in use, so that a job started by
        cron or systemd, whose environment has no $LMSAV_CONFIG or $XDG_CONFIG_HOME, reads
        the same one."""
        path = Path(self.config_file).absolute()
        return path if self.config_explicit or path.exists() else None


# -- a new schedule, checked -----------------------------------------------------------------------

def checked_expression(name: str, when: str, systemd: bool = False, enable: bool = False
                       ) -> expression_mod.CronExpression:
    """NAME, --enable and --schedule checked, as one-line errors."""
    try:
        check_name(name)
    except ScheduleError as err:
        raise ChangeError(f'NAME "{name}": {err}') from None
    if enable and not systemd:
        raise ChangeError("--enable goes with --systemd (a cron line is active once installed)")
    try:
        expression = expression_mod.parse(when)
    except expression_mod.ExpressionError as err:
        raise ChangeError(f'--schedule "{when}": {err}') from None
    if systemd:
        try:
            expression.on_calendar()
        except expression_mod.ExpressionError as err:
            raise ChangeError(f'--systemd: --schedule "{when}" has {err}') from None
    return expression


def typed_path(path: str) -> str:
    """A path as typed in a form: without the blanks around it. A form has no directory of
    the user's to read a relative path against, so one stays relative (and is refused)."""
    return path.strip()


def shell_path(path: str) -> str:
    """A path given on the command line: ~ expanded, a relative one read against the shell's
    directory."""
    return os.path.abspath(os.path.expanduser(path))


def sweep_schedule(name: str, when: str, paths: Sequence[str], scan_args: Sequence[str] = (),
                   *, incremental: bool = True, systemd: bool = False, enable: bool = False,
                   read_path: Callable[[str], str] = typed_path) -> Schedule:
    """A sweep of ``paths`` and of the paths among ``scan_args`` (the words after them: more
    paths, then options of `lmsav scan`, checked against that command). Each path is read by
    ``read_path``; an empty one is dropped, a relative one refused."""
    expression = checked_expression(name, when, systemd, enable)
    try:
        options, more_paths = split_scan_args(list(scan_args))
    except ScheduleError as err:
        raise ChangeError(str(err)) from None
    wanted = [p for p in (read_path(p) for p in (*paths, *more_paths)) if p]
    if not wanted:
        raise ChangeError("no paths to sweep: give them with --paths PATH")
    for path in wanted:
        if any(c in path for c in "\r\n\0"):
            raise ChangeError(f"--paths {path!r}: a path on one line, please")
        if not os.path.isabs(path):
            raise ChangeError(f"--paths {path!r}: an absolute path, please")
    return Schedule(name=name, schedule=expression.text,
                    paths=tuple(dict.fromkeys(os.path.normpath(p) for p in wanted)),
                    scan_options=tuple(options), incremental=incremental, systemd=systemd,
                    created=_created())


def update_schedule(name: str, when: str, systemd: bool = False, enable: bool = False
                    ) -> Schedule:
    """`lmsav update` on a schedule, with the configuration's sources and databases."""
    expression = checked_expression(name, when, systemd, enable)
    return Schedule(name=name, schedule=expression.text, kind="update", systemd=systemd,
                    created=_created())


def report_schedule(name: str, when: str, report: str, mail: Sequence[str],
                    systemd: bool = False, enable: bool = False) -> Schedule:
    """`lmsav report daily|weekly` on a schedule, mailed to ``mail``."""
    expression = checked_expression(name, when, systemd, enable)
    try:
        addresses = check_mail(list(mail))
    except ScheduleError as err:
        raise ChangeError(f"--mail: {err}") from None
    return Schedule(name=name, schedule=expression.text, kind="report", report=report,
                    mail=addresses, systemd=systemd, created=_created())


def missing_paths(schedule: Schedule) -> list[str]:
    """Warnings for the paths of a sweep that do not exist (yet)."""
    return [f"{path}: no such file or directory (yet); the sweep reports an error for it "
            f"until it exists" for path in schedule.paths if not os.path.exists(path)]


def _created() -> datetime.datetime:
    return datetime.datetime.now().astimezone().replace(microsecond=0)


# -- storing and installing ------------------------------------------------------------------------

@dataclass
class Changed:
    """What adding or removing did: the file, whether one was replaced, what the installation
    says (lines as `lmsav cron` prints them), the systemctl commands systemd needs to see the
    change, and warnings (the change itself was made)."""

    path: Path
    replaced: bool = False
    messages: list[str] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def systemctl(self) -> str:
        """The systemctl commands as one shell line; empty when there are none."""
        return shell_line(self.commands)


def add(place: Place, schedule: Schedule, replace: bool = False,
        target: install_mod.Target | None = None) -> Changed:
    """Store the schedule (replacing one of its name only when asked) and reinstall every
    schedule."""
    store = place.store
    target = target or install_mod.resolve_target()
    name = schedule.name
    with _locked(store):
        existed = store.exists(name)
        if existed and not replace:
            raise ChangeError(f"schedule '{name}' exists ({store.path(name)}); use --replace, "
                              f"or `lmsav cron remove {name}` first")
        installed = _change(place, store, target, name, lambda: store.save(schedule))
        warnings = _forget_last_result(place, name)
    enable = [f"{install_mod.unit_stem(schedule)}.timer"] if schedule.systemd else []
    return Changed(store.path(name), existed, installed.messages,
                   systemctl_commands(target, installed, enable), warnings)


def remove(place: Place, name: str, target: install_mod.Target | None = None) -> Changed:
    """Delete a schedule, even one whose file no longer loads, and reinstall the others."""
    store = place.store
    try:
        check_name(name)
    except ScheduleError as err:
        raise ChangeError(f'NAME "{name}": {err}') from None
    if not store.exists(name):
        try:
            store.load(name)  # the error lists the schedules there are
        except ScheduleError as err:
            raise ChangeError(str(err)) from None
    target = target or install_mod.resolve_target()
    with _locked(store):
        installed = _change(place, store, target, name, lambda: store.delete(name))
        warnings = _forget_last_result(place, name)
    return Changed(store.path(name), False, installed.messages,
                   systemctl_commands(target, installed, []), warnings)


def reinstall(place: Place, target: install_mod.Target | None = None
              ) -> install_mod.Installed:
    """Regenerate the installed form from the stored schedules as they are (after one was
    edited by hand, or the lmsav executable moved)."""
    store = place.store
    target = target or install_mod.resolve_target()
    with _locked(store):
        return install_all(place, store, target)


def install_all(place: Place, store: Store, target: install_mod.Target
                ) -> install_mod.Installed:
    """Regenerate the installed form from every stored schedule (the store locked)."""
    schedules = store.load_all()
    lmsav = install_mod.lmsav_command()
    commands = {s.name: install_mod.job_command(s, lmsav, place.job_config) for s in schedules}
    return install_mod.install(target, schedules, commands, store.directory)


def systemctl_commands(target: install_mod.Target, installed: install_mod.Installed,
                       enable: list[str]) -> list[list[str]]:
    """What systemd needs to see the changed units: stop removed timers, reload, and enable
    the timers in ``enable``."""
    commands = []
    if installed.timers_removed:
        commands.append(target.systemctl("stop", *installed.timers_removed))
    if installed.units_changed or enable:
        commands.append(target.systemctl("daemon-reload"))
    if enable:
        commands.append(target.systemctl("enable", "--now", *enable))
    return commands


def shell_line(commands: Sequence[Sequence[str]]) -> str:
    """Commands as one line to paste into a shell: each quoted, joined by &&."""
    return " && ".join(shlex.join(command) for command in commands)


@contextlib.contextmanager
def _locked(store: Store) -> Iterator[None]:
    """The store locked for a change; whatever fails in it is one line."""
    try:
        with store.locked():
            yield
    except (ScheduleError, install_mod.InstallError) as err:
        raise ChangeError(str(err)) from None
    except OSError as err:
        raise ChangeError(f"{err.filename or store.directory}: {err.strerror or err}") from None


def _change(place: Place, store: Store, target: install_mod.Target, name: str,
            change: Callable[[], object]) -> install_mod.Installed:
    """Make ``change`` to one schedule file and reinstall; put the file back if that fails."""
    before = store.read_raw(name)
    change()
    try:
        return install_all(place, store, target)
    except (ScheduleError, install_mod.InstallError, OSError):
        if before is None:
            store.path(name).unlink(missing_ok=True)
        else:
            store.write_raw(name, before)
        try:
            install_all(place, store, target)
        except (ScheduleError, install_mod.InstallError, OSError):
            pass  # the first error is the one to report
        raise


def _forget_last_result(place: Place, name: str) -> list[str]:
    """The schedule now stored under ``name``, or none, has not run: the last result kept for
    the name was an earlier schedule's (`cron list` would show it as this one's). Failing to
    forget it is a warning: the change is made."""
    if place.state_dir is None:
        return []
    try:
        forget_last_result(place.state, name)
    except OSError as err:
        return [(f"{err.filename}: {err.strerror}; `lmsav cron list` may show the last "
                 f"result of the earlier schedule {name}")]
    return []
