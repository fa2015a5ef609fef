"""`lmsav setup --remove`: undo what the manifest records, newest first.

MTA files untouched since setup get their original bytes back; those edited since lose only
lmsav's settings. Files lmsav wrote and the administrator edited are kept, as are the quarantine
and backup stores and a spool holding mail, unless ``purge``; everything kept is listed, and stays
in the manifest, so a later ``--remove --purge`` still finds it.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .. import paths, proclocks
from ..spool.watcher import LOCK_NAME
from . import mta as mta_mod
from . import units
from .answers import FIELDS as ANSWER_FIELDS
from .answers import Answers
from .manifest import Manifest, file_hash

DAEMON_PID_FILE = paths.SYSTEM_RUN_DIR / "lmsav.pid"
STOP_WAIT = 60.0  # seconds a service has to finish what it is doing after SIGTERM


class Removal:
    def __init__(self, manifest: Manifest, answers: Answers, echo: Callable[[str], None],
                 purge: bool = False, lmsav: str = "lmsav"):
        self.manifest = manifest
        self.answers = answers
        self.echo = echo
        self.purge = purge
        self.lmsav = lmsav
        self.kept: list[str] = []
        self.failures: list[str] = []

    def run(self) -> None:
        entries = list(reversed(self.manifest.entries))
        self._services([e for e in entries if e["kind"] == "unit"])
        for entry in entries:
            if entry["kind"] == "schedule":
                self._schedule(entry)
        self._mtas(entries)
        for entry in entries:
            if entry["kind"] == "file":
                self._file(entry)
        for entry in entries:
            if entry["kind"] == "member":
                self._member(entry)
        for entry in entries:
            if entry["kind"] == "dir":
                self._dir(entry)
        for entry in entries:
            if entry["kind"] in ("user", "group"):
                self._account(entry)
        holders = [e for e in self.manifest.entries if e["kind"] == "dir"
                   and Path(e["path"]) in self.manifest.path.parents]
        if self.failures or len(self.manifest.entries) > len(holders):
            # What could not be undone, or was kept, stays recorded: for another try, or for
            # `--remove --purge`.
            self.manifest.save()
        else:
            self.manifest.delete()
            self._drop_manifest_dir(holders)

    # -- each kind -------------------------------------------------------------------------------

    def _services(self, unit_entries: list[dict]) -> None:
        if unit_entries and units.systemd_running():
            names = [e["name"] for e in unit_entries]
            ok, detail = units.systemctl("disable", "--now", *names)
            self.echo(f"stopped and disabled {', '.join(names)}" if ok else
                      f"systemctl disable --now: {detail}")
        for entry in unit_entries:
            self.manifest.forget(entry["key"])
        # Without systemd, the administrator started them with the commands setup printed.
        try:
            pid = int(DAEMON_PID_FILE.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = 0
        command = _command_line(pid) if pid > 0 else b""
        if b"lmsav" in command and b" daemon" in command:  # not a stale file's other process
            self._stop(pid, "lmsav daemon")
        for lock in self._spool_locks():
            for pid in _lock_holders(lock):
                self._stop(pid, "lmsav spool watch")
        for pid in _milter_pids(self._service_user()):
            self._stop(pid, "lmsav milter")

    def _service_user(self) -> str:
        entry = next(iter(self.manifest.of_kind("user")), None)
        return entry["name"] if entry else self.answers.user

    def _spool_locks(self) -> list[Path]:
        """The lock file of every spool a watcher may hold: those setup made."""
        spools = [Path(e["path"]) for e in self.manifest.of_kind("dir")]
        return [spool / LOCK_NAME for spool in spools if (spool / LOCK_NAME).is_file()]

    def _stop(self, pid: int, what: str) -> None:
        """SIGTERM, then wait while it finishes the requests and messages in flight."""
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        deadline = time.monotonic() + STOP_WAIT
        while _alive(pid):
            if time.monotonic() > deadline:
                self._fail(f"{what} (pid {pid}) did not stop within {STOP_WAIT:g} s")
                return
            time.sleep(0.05)
        self.echo(f"stopped {what} (pid {pid})")

    def _schedule(self, entry: dict) -> None:
        command = [self.lmsav, "cron", "remove", entry["name"]]
        if entry.get("systemd"):
            command.append("--disable")
        proc = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if proc.returncode == 0 or "no schedule" in (proc.stderr + proc.stdout).lower():
            self.echo(f"removed the schedule {entry['name']}")
            self.manifest.forget(entry["key"])
        else:
            self._fail(f"schedule {entry['name']}: {(proc.stderr or proc.stdout).strip()}")

    def _mtas(self, entries: list[dict]) -> None:
        by_name = {cls.name: cls for cls in mta_mod.ALL}
        # An MTA's files are recorded before its change is made: a setup interrupted in
        # between left them without the "mta" entry, and they are undone all the same.
        names = list(dict.fromkeys(e.get("name") if e["kind"] == "mta" else e.get("mta")
                                   for e in entries
                                   if e["kind"] in ("mta", "mta-file", "mta-backup")))
        for name in names:
            if name not in by_name:
                continue
            entry = next((e for e in entries if e["kind"] == "mta" and e.get("name") == name),
                         {})
            # Where setup found this MTA's configuration, whatever --answers says now.
            answers = dataclasses.replace(self.answers, **{
                key: value for key, value in entry.get("config", {}).items()
                if key in ANSWER_FIELDS})
            files = [e for e in entries if e["kind"] == "mta-file" and e.get("mta") == name]
            backups = [e for e in entries if e["kind"] == "mta-backup" and e.get("mta") == name]
            edited = [e for e in files if "after_hash" in e
                      and file_hash(Path(e["path"])) != e.get("after_hash")
                      and file_hash(Path(e["path"])) != e.get("original_hash")]
            if edited:
                # Changed since setup: take lmsav's settings out and keep the rest of the edit.
                try:
                    change = by_name[name](answers).apply(self.lmsav, answers, remove=True)
                except (mta_mod.MtaError, OSError) as err:
                    self._fail(f"{name}: {err}")
                    continue
                self.echo(f"{name}: lmsav's settings taken out of "
                          f"{', '.join(e['path'] for e in edited)} (edited since setup, the "
                          "rest kept)")
                backups += [{"key": f"mta-backup:{b}", "path": str(b), "sha256": file_hash(b)}
                            for b in change.backups]
                restored = False
            else:
                for item in files:
                    self._restore(item)
                restored = True
            for item in backups:
                path = Path(item["path"])
                if file_hash(path) == item.get("sha256"):
                    path.unlink(missing_ok=True)
                self.manifest.forget(item["key"])
            for item in files:
                self.manifest.forget(item["key"])
                if item.get("original"):
                    Path(item["original"]).unlink(missing_ok=True)
            if restored and files:
                self.echo(f"{name}: restored {', '.join(sorted(e['path'] for e in files))} "
                          "byte for byte")
            self._reload(name, answers)
            if entry:
                self.manifest.forget(entry["key"])

    def _restore(self, item: dict) -> None:
        path = Path(item["path"])
        original = item.get("original")
        if original is None:
            path.unlink(missing_ok=True)
            return
        if file_hash(path) == item.get("original_hash"):
            return
        tmp = path.with_name(f".{path.name}.lmsav-tmp")
        shutil.copy2(original, tmp)
        os.replace(tmp, path)

    def _reload(self, name: str, answers: Answers) -> None:
        if name == "postfix":
            for line in mta_mod.reload_postfix(Path(answers.postfix_config)):
                self.echo(f"postfix: {line}")
        elif name == "exim":
            self.echo("exim: restart Exim (or run update-exim4.conf first on Debian) so it "
                      "reads its restored configuration")

    def _file(self, entry: dict) -> None:
        path = Path(entry["path"])
        if not entry.get("created"):
            self.manifest.forget(entry["key"])
            return
        current = file_hash(path)
        ours = entry.get("log") or current is None or current == entry.get("sha256")
        if ours or self.purge:
            path.unlink(missing_ok=True)
            if current is not None:
                self.echo(f"removed {path}")
            self.manifest.forget(entry["key"])
        else:
            self.kept.append(f"{path} (edited since setup; --purge deletes it)")

    def _member(self, entry: dict) -> None:
        proc = subprocess.run(["gpasswd", "-d", entry["user"], entry["group"]],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            self.echo(f"took {entry['user']} out of group {entry['group']}")
        self.manifest.forget(entry["key"])

    def _dir(self, entry: dict) -> None:
        """Children come before their parents (newest first). A directory kept stays in the
        manifest."""
        path = Path(entry["path"])
        if not path.is_dir():
            self.manifest.forget(entry["key"])
            return
        if path in self.manifest.path.parents:
            return  # the manifest lives there: removed last, when empty (_drop_manifest_dir)
        if self.purge:
            shutil.rmtree(path, ignore_errors=True)
        elif entry.get("store") and _has_files(path):
            self.kept.append(f"{path} (quarantine or backup store; --purge removes it)")
            return
        elif path.name in SPOOL_STATE_DIRS and _has_files(path):
            self.kept.append(f"{path} (mail not yet delivered; --purge removes it)")
            return
        elif _is_disposable(path):
            shutil.rmtree(path, ignore_errors=True)
        elif not _remove_if_empty(path):
            self.kept.append(f"{path} (not empty; --purge removes it)")
            return
        self.manifest.forget(entry["key"])

    def _account(self, entry: dict) -> None:
        name = entry["name"]
        if self.kept and not self.purge:
            self.kept.append(f"{entry['kind']} {name} (owns what is kept)")
            return
        command = ["userdel", name] if entry["kind"] == "user" else ["groupdel", name]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            self.echo(f"removed {entry['kind']} {name}")
        elif "does not exist" not in proc.stderr:
            self._fail(f"{' '.join(command)}: {' '.join(proc.stderr.split())}")
            return
        self.manifest.forget(entry["key"])

    def _drop_manifest_dir(self, holders: list[dict]) -> None:
        """The manifest's directory, then those around it that setup made (/var/lib/lmsav)."""
        directory = self.manifest.path.parent
        shutil.rmtree(directory / "originals", ignore_errors=True)
        try:
            directory.rmdir()
        except OSError:
            pass
        for entry in holders:  # newest first: children before parents
            path = Path(entry["path"])
            if self.purge:
                shutil.rmtree(path, ignore_errors=True)
            elif not _remove_if_empty(path):
                self.kept.append(f"{path} (not empty)")

    def _fail(self, text: str) -> None:
        self.failures.append(text)
        self.echo(f"FAILED: {text}")


SPOOL_STATE_DIRS = ("new", "work", "hold")
DISPOSABLE = ("tmp", "stats", "delivered")


def _command_line(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return b""


def _milter_pids(user: str) -> list[int]:
    """The `lmsav milter` processes of the service user, started with the command setup
    printed (not the runuser that started them: it runs as root)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or entry.stat().st_uid != uid:
                continue
        except OSError:
            continue
        args = _command_line(int(entry.name)).split(b" ")
        lmsav = [i for i, arg in enumerate(args[:3]) if b"lmsav" in arg]
        if lmsav and b"milter" in args[lmsav[0] + 1:]:
            out.append(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent that is not lmsav's to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X", "")


def _lock_holders(lock: Path) -> list[int]:
    """Processes holding a lock on ``lock`` that have it open."""
    return list(dict.fromkeys(pid for pid, confirmed in proclocks.holders(lock) or ()
                              if confirmed))


def _has_files(path: Path) -> bool:
    for _root, _dirs, files in os.walk(path):
        if any(not name.endswith((".lock",)) for name in files):
            return True
    return False


def _is_disposable(path: Path) -> bool:
    """What lmsav keeps only for itself: caches, run files, logs, unfinished spool files."""
    return path.name in DISPOSABLE or str(path).startswith(("/var/cache/", "/run/", "/var/log/"))


def _remove_if_empty(path: Path) -> bool:
    """Remove ``path`` once lmsav's leftovers in it are gone; False if something else stays."""
    _prune(path)
    try:
        path.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _prune(path: Path) -> None:
    """Lock files and empty directories lmsav's commands left (schedules.d/.lock …), deepest
    first; anything else stays."""
    for root, dirs, files in os.walk(path, topdown=False):
        for name in files:
            if name.endswith(".lock"):
                Path(root, name).unlink(missing_ok=True)
        for name in dirs:
            try:
                Path(root, name).rmdir()
            except OSError:
                pass
