"""One run of ``lmsav update``: ask the sources, stage, verify, compile, prove, switch.

For each source in order (the next one only when one fails): read each database's 512-byte
header to learn its version; a database newer than the active one is brought over, by its
``.cdiff`` files when the source is a mirror (each verified, applied and checked against the
signed ``.info`` it produces) or whole when a diff is missing or does not apply. Databases that
did not change are hard-linked from the active version. The staged directory is compiled in a
child, self-tested, renamed into place and made ``current``; older versions beyond
``keep_versions`` go. An older version than the active one is refused unless asked for.
Whatever fails, the active version stays as it was.

Each run (and each rollback) is one ``update`` event for the statistics store when the caller
gives ``record`` (``lmsav.metrics.recording.EventRecorder.record``): ok or failed, the versions
before and after.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import __version__
from ..scanner.signatures import cvd
from . import state as state_mod
from . import tree
from .cdiff import CdiffError, apply_script, read_cdiff
from .errors import NotFound, RateLimited, SourceError, StagingError, UpdateError
from .feeds import Extras, FeedError, fetch_all, installed_bundles
from .selftest import prove
from .sources import open_source
from .store import Store, Version, sync_tree, write_meta

CONTAINER_SUFFIXES = (".cvd", ".cld", ".cud")


class NoSuchVersion(UpdateError):
    """--rollback named a version that is not kept."""


@dataclass(frozen=True)
class Options:
    sources: tuple[str, ...]
    databases: tuple[str, ...] = ("main", "daily", "bytecode")
    keep_versions: int = 3
    check_interval: float = 3600.0
    timeout: float = 30.0
    retries: int = 3
    retry_delay: float = 2.0
    allow_downgrade: bool = False
    progress: bool = False
    trust_dirs: tuple[Path, ...] | None = None  # None: the store the database loader trusts
    check_time: int | None = None  # when certificates must be valid; None: now
    proxy: str = ""  # "": the environment's https_proxy/http_proxy/no_proxy
    dns_txt: str = ""  # a TXT record announcing versions ("": ask the mirrors)
    feeds: tuple = ()  # feeds.Feed: bundles, signature files, YARA rule sets
    key_dirs: tuple[Path, ...] | None = None  # None: the trust store of `lmsav keys`


@dataclass
class Change:
    database: str
    before: int | None
    after: int | None
    file: str
    how: str  # "cdiff", "full", "unchanged", "kept" (the source's is older), "reused"

    def describe(self) -> str:
        if self.how in ("unchanged", "kept"):
            return f"{self.database} {self.after} ({self.how})"
        return f"{self.database} {self.before or '-'} -> {self.after} ({self.how})"


@dataclass
class Outcome:
    result: str  # "updated", "current", "failed", "rolled back"
    ok: bool
    active: str | None = None
    previous: str | None = None
    source: str | None = None
    changes: list[Change] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # old versions pruned
    notified: dict[str, str] = field(default_factory=dict)
    extras: list[dict] = field(default_factory=list)  # feeds installed beside ClamAV's

    @property
    def switched(self) -> bool:
        return self.result in ("updated", "rolled back")

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Wanted:
    """One configured database: ``daily`` (daily.cvd, or .cld in a directory) or a file name."""

    entry: str

    @property
    def base(self) -> str:
        return self.entry[:-4] if self.entry.endswith(CONTAINER_SUFFIXES) else self.entry

    @property
    def fixed(self) -> bool:
        return self.entry.endswith(CONTAINER_SUFFIXES)

    def candidates(self, source) -> list[str]:
        if self.fixed:
            return [self.entry]
        return [f"{self.base}.cvd"] if source.network else [f"{self.base}.cvd", f"{self.base}.cld"]

    def local_file(self, directory: Path) -> Path | None:
        names = [self.entry] if self.fixed else [f"{self.base}.cvd", f"{self.base}.cld"]
        found = [directory / n for n in names if (directory / n).is_file()]
        if not found:
            return None
        return max(found, key=_version_of)


# -- entry points ------------------------------------------------------------------------------

def update(root: Path, options: Options, notify=None, clock=time.time,
           record: Callable[[dict], None] | None = None) -> Outcome:
    """Bring ``root`` up to date from ``options.sources``; never raises UpdateError."""
    started = time.monotonic()
    outcome = _update(root, options, notify, clock)
    if record is not None:
        record(update_event(outcome, time.monotonic() - started))
    return outcome


def _update(root: Path, options: Options, notify, clock) -> Outcome:
    store = Store(root)
    try:
        with store.locked():
            store.clean()
            state = state_mod.load(store.root)
            try:
                outcome = _update_locked(store, state, options, clock)
            except StagingError as err:
                outcome = Outcome("failed", False, active=store.current_label(),
                                  errors=[f"staging failed: {err}"])
            except FeedError as err:
                outcome = Outcome("failed", False, active=store.current_label(),
                                  errors=[str(err)])
            _record(store, state, outcome, clock())
    except UpdateError as err:  # the lock: busy, or the directory cannot be made
        return Outcome("failed", False, active=store.current_label(), errors=[str(err)])
    if outcome.switched and notify is not None:
        outcome.notified = notify()
    return outcome


def rollback(root: Path, label: str | None, notify=None, clock=time.time,
             record: Callable[[dict], None] | None = None) -> Outcome:
    """Make a kept version active again: ``label``, or the one installed before the active one.
    Raises NoSuchVersion when there is none to go back to; other failures are in the outcome."""
    started = time.monotonic()
    outcome = _rollback(root, label, notify, clock)
    if record is not None:
        record(update_event(outcome, time.monotonic() - started))
    return outcome


def _rollback(root: Path, label: str | None, notify, clock) -> Outcome:
    store = Store(root)
    try:
        with store.locked():
            store.clean()
            current = store.current()
            target = _rollback_target(store, current, label)
            if current is not None and target.label == current.label:
                return Outcome("current", True, active=current.label,
                               warnings=[f"{target.label} is already the active version"])
            try:
                prove(target.path, rebuild=False)
            except SourceError as err:
                raise UpdateError(f"{target.label}: {err}") from None
            store.switch(target.label)
            outcome = Outcome("rolled back", True, active=target.label,
                              previous=current.label if current else None)
            state = state_mod.load(store.root)
            _record(store, state, outcome, clock())
    except NoSuchVersion:
        raise
    except UpdateError as err:
        return Outcome("failed", False, active=store.current_label(), errors=[str(err)])
    if notify is not None:
        outcome.notified = notify()
    return outcome


def update_event(outcome: Outcome, seconds: float) -> dict:
    """The statistics event of one update or rollback (``lmsav.stats.events``)."""
    return {
        "kind": "update", "status": "ok" if outcome.ok else "failed",
        "duration_ms": seconds * 1000,
        "detail": {"result": outcome.result, "active": outcome.active,
                   "previous": outcome.previous, "source": outcome.source,
                   "versions": {c.database: c.after for c in outcome.changes},
                   "errors": outcome.errors}}


def _rollback_target(store: Store, current: Version | None, label: str | None) -> Version:
    versions = store.versions()
    kept = ", ".join(v.label for v in versions) or "none"
    if label:
        target = store.version(label)
        if target is None:
            raise NoSuchVersion(f"no version {label} in {store.root} (kept: {kept})")
        return target
    if current is None:
        raise NoSuchVersion(f"no active version in {store.root} to roll back from (kept: "
                            f"{kept}); name one: --rollback VERSION")
    older = [v for v in versions
             if (v.installed_at, v.label) < (current.installed_at, current.label)]
    if not older:
        raise NoSuchVersion(f"no version older than {current.label} is kept in {store.root} "
                            f"(kept: {kept})")
    return older[-1]


def _record(store: Store, state: state_mod.State, outcome: Outcome, now: float) -> None:
    state.last_result = outcome.result
    if outcome.ok:
        state.last_success = now
        state.last_error = ""
    else:
        state.last_error = "; ".join(outcome.errors)
    if outcome.source:
        state.last_source = outcome.source
    try:
        state_mod.save(store.root, state, now)
    except OSError as err:
        outcome.warnings.append(f"{store.root}: cannot save the update state: {err.strerror}")


# -- one run -----------------------------------------------------------------------------------

def _update_locked(store: Store, state: state_mod.State, options: Options, clock) -> Outcome:
    now = clock()
    current = store.current()
    wanted = [Wanted(entry) for entry in options.databases]
    sources = [open_source(text, timeout=options.timeout, retries=options.retries,
                           retry_delay=options.retry_delay, progress=options.progress,
                           proxy=options.proxy, dns_txt=options.dns_txt)
               for text in options.sources]
    try:
        if any(s.network for s in sources) and not state.check_due(options.check_interval, now):
            return _not_due(state, current, options, now)
        errors: list[str] = []
        for source in sources:
            until = state.cooling(source.label, now)
            if until is not None:
                errors.append(f"{source.label}: asked to be left alone until "
                              f"{_clock_text(until)} (429); not asked")
                continue
            if source.network:
                state.last_check = now
            run = _Run(store, source, current, wanted, options)
            try:
                outcome = run.execute(clock)
            except RateLimited as err:
                state.cool_downs[source.label] = now + err.wait
                errors.append(_naming(source, err))
                continue
            except SourceError as err:
                errors.append(_naming(source, err))
                continue
            outcome.warnings[:0] = [f"{e}; used the next source" for e in errors]
            return outcome
        if not sources:
            errors.append("no sources configured ([update] sources, or --source)")
        return Outcome("failed", False, active=current.label if current else None,
                       errors=errors)
    finally:
        for source in sources:
            source.close()


def _not_due(state: state_mod.State, current: Version | None, options: Options,
             now: float) -> Outcome:
    next_check = _clock_text(state.last_check + options.check_interval)
    ago = _ago(now - state.last_check)
    active = current.label if current else None
    if current is None:
        return Outcome("failed", False, errors=[
            (f"no database is active, yet the sources were checked {ago} ago; next check "
             f"after {next_check} ([update] check_interval)")])
    return Outcome("current", True, active=active, warnings=[
        (f"the sources were checked {ago} ago; next check after {next_check} "
         f"([update] check_interval)")])


def _naming(source, err: Exception) -> str:
    text = str(err)
    return text if source.label in text else f"{source.label}: {text}"


class _Run:
    """Bringing the databases over from one source."""

    def __init__(self, store: Store, source, current: Version | None, wanted: list[Wanted],
                 options: Options):
        self.store, self.source, self.current = store, source, current
        self.wanted, self.options = wanted, options
        self.trust_dirs = options.trust_dirs if options.trust_dirs is not None else _trust_dirs()
        self.warnings: list[str] = []

    def execute(self, clock) -> Outcome:
        if not self.options.feeds:
            return self._execute(clock, Extras())
        with _staging_errors(), self._staging() as fetched:
            extras = fetch_all(self.options.feeds, fetched, key_dirs=self.options.key_dirs,
                               timeout=self.options.timeout, retries=self.options.retries,
                               retry_delay=self.options.retry_delay, proxy=self.options.proxy,
                               installed=installed_bundles(
                                   self.current.meta.get("extras") if self.current else None),
                               allow_downgrade=self.options.allow_downgrade)
        return self._execute(clock, extras)

    def _execute(self, clock, extras: Extras) -> Outcome:
        plan = [self._plan(w) for w in self.wanted]
        changes = [change for change, _offer in plan]
        active = self.current.label if self.current else None
        extras_then = self.current.meta.get("extras_id", "") if self.current else ""
        if (all(c.how in ("unchanged", "kept") for c in changes)
                and extras.label_suffix() == extras_then):
            return Outcome("current", True, active=active, source=self.source.label,
                           changes=changes, warnings=self.warnings, extras=extras.to_json())
        kept = self.store.version(_label(changes) + extras.label_suffix())
        if kept is not None and _versions_of(kept) == {c.database: c.after for c in changes}:
            return self._reuse(kept, changes, clock)
        with _staging_errors(), self._staging() as staging:
            db_dir = staging / "db"
            downloads = staging / "downloads"
            db_dir.mkdir()
            downloads.mkdir()
            for (change, offer), want in zip(plan, self.wanted):
                if change.how in ("unchanged", "kept"):
                    self._carry(want, db_dir)
                else:
                    change.how, change.file = self._obtain(want, change, offer, staging,
                                                           downloads, db_dir)
                    change.after = _version_of(db_dir / change.file)
            extras.install(db_dir)
            label = _label(changes) + extras.label_suffix()
            previous_eicar = self.current.meta.get("eicar", "") if self.current else ""
            proof = prove(db_dir, previous_eicar)
            meta = self._meta(label, changes, proof, db_dir, clock())
            meta.update(extras=extras.to_json(), extras_id=extras.label_suffix())
            write_meta(db_dir, meta)
            sync_tree(db_dir)
            self.store.install(db_dir, label)
            self.store.switch(label)
            removed = self.store.prune(self.options.keep_versions)
        return Outcome("updated", True, active=label, previous=active, source=self.source.label,
                       changes=changes, warnings=self.warnings, removed=removed,
                       extras=extras.to_json())

    # -- deciding ---------------------------------------------------------------------------
    def _plan(self, want: Wanted) -> tuple[Change, tuple[str, cvd.Header]]:
        offer = self._discover(want)
        name, header = offer
        local = want.local_file(self.current.path) if self.current else None
        before = _version_of(local) if local else None
        change = Change(want.base, before, header.version, name, "fetch")
        if before is None or header.version > before:
            return change, offer
        if header.version == before:
            change.how, change.file = "unchanged", local.name
        elif self.options.allow_downgrade:
            change.how = "downgrade"
        else:
            change.how, change.after, change.file = "kept", before, local.name
            self.warnings.append(
                f"{want.base}: {self.source.label} offers version {header.version}, older than "
                f"the active {before}; kept {before} (--allow-downgrade installs the older one)")
        return change, offer

    def _discover(self, want: Wanted) -> tuple[str, cvd.Header]:
        best, missing = None, None
        for name in want.candidates(self.source):
            try:
                head = self.source.header(name)
            except NotFound as err:
                missing = missing or err
                continue
            header = _parse_header(self.source.url(name), head)
            if best is None or header.version > best[1].version:
                best = (name, header)
        if best is None:
            raise missing
        return best

    # -- bringing one database over ---------------------------------------------------------
    def _obtain(self, want: Wanted, change: Change, offer, staging: Path, downloads: Path,
                db_dir: Path) -> tuple[str, str]:
        name, header = offer
        local = want.local_file(self.current.path) if self.current else None
        if (self.source.incremental and local is not None and change.how == "fetch"
                and not local.name.endswith(".cud") and not name.endswith(".cud")):
            try:
                return "cdiff", self._patch(want, local, header.version, staging, downloads,
                                            db_dir)
            except (RateLimited, StagingError):
                raise
            except (SourceError, CdiffError, tree.TreeError, cvd.ContainerError) as err:
                self.warnings.append(f"{want.base}: incremental update stopped ({err}); "
                                     f"downloading {name}")
                (db_dir / f"{want.base}.cld").unlink(missing_ok=True)
        how = "full" if change.how == "fetch" else change.how
        return how, self._full(name, header, downloads, db_dir)

    def _full(self, name: str, advertised: cvd.Header, downloads: Path, db_dir: Path) -> str:
        path = downloads / name
        self.source.download(name, path, b"ClamAV-VDB:")
        got = _version_of(path)
        if got < advertised.version:
            raise SourceError(f"{self.source.url(name)}: advertised version "
                              f"{advertised.version} but sent {got} (mirror out of sync)")
        files = [name]
        if name.endswith(".cvd"):
            sign = cvd.sign_file_for(path, got).name
            if self._optional(sign, downloads / sign):
                files.append(sign)
        for file in files:
            os.replace(downloads / file, db_dir / file)
        self._verify(db_dir / name)
        return name

    def _patch(self, want: Wanted, local: Path, target: int, staging: Path, downloads: Path,
               db_dir: Path) -> str:
        base = self._verify(local)
        work = staging / f"work-{want.base}"
        shutil.rmtree(work, ignore_errors=True)
        tree.unpack(base, work)
        for version in range(base.header.version + 1, target + 1):
            name = f"{want.base}-{version}.cdiff"
            path = downloads / name
            self.source.download(name, path, b"ClamAV-Diff:")
            self._optional(f"{name}.sign", downloads / f"{name}.sign")
            diff = read_cdiff(path, version, self.trust_dirs, check_time=self.options.check_time)
            try:
                apply_script(diff.script, work)
            except CdiffError as err:
                raise CdiffError(f"{name}: {err}") from None
            tree.check(work, want.base, version)
        cld = f"{want.base}.cld"
        tree.write_cld(work, want.base, db_dir / cld)
        shutil.rmtree(work, ignore_errors=True)
        self._verify(db_dir / cld)
        return cld

    def _optional(self, name: str, destination: Path) -> bool:
        """Fetch a detached signature if the source has one; its absence is not an error."""
        try:
            self.source.download(name, destination, b"#clamsign")
            return True
        except NotFound:
            return False
        except RateLimited:
            raise
        except SourceError as err:
            self.warnings.append(f"{err}; the classic signature decides")
            destination.unlink(missing_ok=True)
            return False

    def _verify(self, path: Path) -> cvd.Container:
        try:
            return cvd.read_container(path, self.trust_dirs, check_time=self.options.check_time)
        except cvd.ContainerError as err:
            raise SourceError(_clock_hint(str(err))) from None

    def _carry(self, want: Wanted, db_dir: Path) -> None:
        """Hard-link an unchanged database (and its .sign) from the active version."""
        local = want.local_file(self.current.path)
        files = [local]
        if local.name.endswith(".cvd"):
            sign = cvd.sign_file_for(local, _version_of(local))
            if sign.is_file():
                files.append(sign)
        for path in files:
            try:
                os.link(path, db_dir / path.name)
            except OSError:
                shutil.copy2(path, db_dir / path.name)

    def _reuse(self, kept: Version, changes: list[Change], clock) -> Outcome:
        """The versions asked for are kept on disk already (after a rollback): switch back."""
        previous_eicar = self.current.meta.get("eicar", "") if self.current else ""
        with _staging_errors():
            prove(kept.path, previous_eicar, rebuild=False)
            self.store.switch(kept.label)
        for change in changes:
            if change.how not in ("unchanged", "kept"):
                change.how = "reused"
        return Outcome("updated", True, active=kept.label,
                       previous=self.current.label if self.current else None,
                       source=self.source.label, changes=changes, warnings=self.warnings)

    @contextmanager
    def _staging(self):
        staging = self.store.staging()
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _meta(self, label: str, changes: list[Change], proof, db_dir: Path,
              now: float) -> dict:
        databases = {}
        for change in changes:
            header = cvd.read_header(db_dir / change.file)
            databases[change.database] = {
                "file": change.file, "version": header.version, "how": change.how,
                "build_time": header.build_time, "built_at": header.stime,
                "signatures": header.signatures, "builder": header.builder,
            }
        return {"label": label, "installed_at": now, "source": self.source.label,
                "databases": databases, "signatures": proof.signatures,
                "build_seconds": proof.build_seconds, "eicar": proof.eicar,
                "self_test_samples": proof.samples, "lmsav": __version__}


# -- helpers -----------------------------------------------------------------------------------

@contextmanager
def _staging_errors():
    """A local failure (disk full, permissions) while staging is a StagingError."""
    try:
        yield
    except OSError as err:
        where = err.filename or "staging"
        raise StagingError(f"{where}: {err.strerror or err}") from None


def _label(changes: list[Change]) -> str:
    """The version directory's name: every database and its version, e.g. daily-27001_main-62."""
    return "_".join(f"{c.database}-{c.after}" for c in changes)


def _parse_header(url: str, head: bytes) -> cvd.Header:
    try:
        return cvd.parse_header(head.decode("ascii").rstrip(" \0"))
    except UnicodeDecodeError:
        raise SourceError(f"{url}: bad header: bytes that are not ASCII") from None
    except ValueError as err:
        raise SourceError(f"{url}: {err}") from None


def _version_of(path: Path) -> int:
    try:
        return cvd.read_header(path).version
    except cvd.ContainerError as err:
        raise SourceError(str(err)) from None


def _versions_of(version: Version) -> dict[str, int]:
    databases = version.meta.get("databases") or {}
    return {name: d.get("version") for name, d in databases.items() if isinstance(d, dict)}


def _trust_dirs() -> tuple[Path, ...]:
    from ..scanner.signatures.database import _trust_dirs as loader_trust_dirs

    return tuple(loader_trust_dirs())


def _clock_hint(message: str) -> str:
    if "expired" in message or "not yet valid" in message:
        return f"{message} (is the system clock right?)"
    return message


def _clock_text(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


__all__ = ["Change", "NoSuchVersion", "Options", "Outcome", "rollback", "update"]
