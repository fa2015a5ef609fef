"""What a daemon loads and what a reload takes: the database (loaded and self-tested) and the
mail service over it. A reload takes the configuration, the database and the recipient groups
each on its own: a part that fails to load is kept running and the reason reported."""

from __future__ import annotations

from dataclasses import dataclass

from .options import DaemonError, Options
from .service import self_test


@dataclass
class Reloaded:
    """What the reload thread loaded: each part new, or the running one and why it was kept."""

    options: Options
    db: object
    mail: object  # the mail service over ``db`` (the running groups when ``groups_problem``)
    config_problem: str = ""
    db_problem: str = ""
    groups_problem: str = ""

    def problems(self) -> list[str]:
        return [f"{part} not reloaded: {why}" for part, why in (
            ("database", self.db_problem), ("configuration", self.config_problem),
            ("recipient groups", self.groups_problem)) if why]


def load_parts(options: Options, config_problem: str, running_db, running_mail) -> Reloaded:
    """Runs on the reload thread: the new database and mail service, or the running ones."""
    try:
        db, db_problem = load_database(options), ""
    except Exception as err:  # noqa: BLE001 - whatever fails, the running database stays
        db, db_problem = running_db, why(err)
    try:
        mail, groups_problem = load_mail_service(options, db), ""
    except Exception as err:  # noqa: BLE001 - whatever fails, the running groups stay
        groups_problem = why(err)
        mail = load_mail_service(options, db, running_mail.groups) if running_mail else None
    return Reloaded(options, db, mail, config_problem, db_problem, groups_problem)


def why(err: Exception) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def load_everything(opt: Options, reloading: bool = True):
    """The database of ``opt`` (loaded, self-tested) and the mail service over it; raises
    DaemonError."""
    db = load_database(opt, reloading)
    return db, load_mail_service(opt, db)


def load_database(opt: Options, reloading: bool = True):
    """The database of ``opt``, loaded and self-tested; raises DaemonError. Runs on the main
    thread at start, on the reload thread after: a reload whose new sources were refused (the
    last good cache loaded instead) is refused too, as the database in use is already that
    one; at start that cache is what is served."""
    from ..mail.service import MailServiceError
    from ..mail.service import load_database as load_compiled

    try:
        db = load_compiled(opt.database)
    except MailServiceError as err:
        raise DaemonError(str(err).removeprefix("signature database: ")) from None
    failures = self_test(db, opt.limits)
    if failures:
        raise DaemonError(f"{opt.database}: self-test failed: {'; '.join(failures)}")
    if db.refused and reloading:  # the new sources were refused; what loaded is the old cache
        raise DaemonError(db.refused)
    return db


def load_mail_service(opt: Options, db, groups=None):
    """The mail policy for LMSAVMAIL over ``db`` (with ``groups`` when given, else those of
    groups.d); None without settings (a bare Options)."""
    if opt.settings is None:
        return None
    from ..mail.service import MailService, MailServiceError

    try:
        return MailService.from_settings(opt.settings, opt.config_path, database=db,
                                         groups=groups)
    except MailServiceError as err:
        raise DaemonError(str(err)) from None
