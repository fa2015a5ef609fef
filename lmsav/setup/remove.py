"""`lmsav setup --remove`: undo what the manifest records, newest first.

MTA files untouched since setup get their original bytes back; those edited since lose only
lmsav's settings. Files lmsav wrote and the administrator edited are kept, as are the quarantine
and backup stores and a spool holding mail, unless ``purge``; everything kept is listed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from . import mta as mta_mod
from . import units
from .answers import Answers
from .manifest import Manifest, file_hash


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
        if self.failures:
            self.manifest.save()  # what could not be undone stays recorded for another try
        else:
            self.manifest.delete()
            self._drop_manifest_dir()

    # -- each kind -------------------------------------------------------------------------------

    def _services(self, unit_entries: list[dict]) -> None:
        if unit_entries and units.systemd_running():
            names = [e["name"] for e in unit_entries]
            ok, detail = units.systemctl("disable", "--now", *names)
            self.echo(f"stopped and disabled {', '.join(names)}" if ok else
                      f"systemctl disable --now: {detail}")
        for entry in unit_entries:
            self.manifest.forget(entry["key"])
        for pid_file in (Path("/run/lmsav/lmsav.pid"),):
            self._stop_pid(pid_file, "lmsav daemon")

    def _stop_pid(self, pid_file: Path, what: str) -> None:
        try:
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, 15)
            self.echo(f"stopped {what} (pid {pid})")
        except (OSError, ValueError, IndexError):
            pass

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
        for entry in [e for e in entries if e["kind"] == "mta"]:
            name = entry["name"]
            files = [e for e in entries if e["kind"] == "mta-file" and e.get("mta") == name]
            backups = [e for e in entries if e["kind"] == "mta-backup" and e.get("mta") == name]
            edited = [e for e in files if file_hash(Path(e["path"])) != e.get("after_hash")
                      and file_hash(Path(e["path"])) != e.get("original_hash")]
            if edited:
                # Changed since setup: take lmsav's settings out and keep the rest of the edit.
                try:
                    change = by_name[name](self.answers).apply(self.lmsav, self.answers,
                                                               remove=True)
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
            if restored:
                self.echo(f"{name}: restored {', '.join(e['path'] for e in files)} "
                          "byte for byte")
            self._reload(name)
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

    def _reload(self, name: str) -> None:
        if name == "postfix":
            for line in mta_mod.reload_postfix(Path(self.answers.postfix_config)):
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
            self.kept.append(f"{path} (edited since setup)")
            self.manifest.forget(entry["key"])

    def _member(self, entry: dict) -> None:
        proc = subprocess.run(["gpasswd", "-d", entry["user"], entry["group"]],
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            self.echo(f"took {entry['user']} out of group {entry['group']}")
        self.manifest.forget(entry["key"])

    def _dir(self, entry: dict) -> None:
        """Children come before their parents (newest first)."""
        path = Path(entry["path"])
        self.manifest.forget(entry["key"])
        if not path.is_dir():
            return
        if path in self.manifest.path.parents:
            return  # the manifest lives there: removed last, when empty (_drop_manifest_dir)
        if self.purge:
            shutil.rmtree(path, ignore_errors=True)
        elif entry.get("store") and _has_files(path):
            self.kept.append(f"{path} (quarantine or backup store; --purge removes it)")
        elif path.name in SPOOL_STATE_DIRS and _has_files(path):
            self.kept.append(f"{path} (mail not yet delivered; --purge removes it)")
        elif _is_disposable(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            _prune(path)
            try:
                path.rmdir()
            except OSError:
                self.kept.append(f"{path} (not empty)")

    def _account(self, entry: dict) -> None:
        name = entry["name"]
        if self.kept and not self.purge:
            self.kept.append(f"{entry['kind']} {name} (owns what is kept)")
            self.manifest.forget(entry["key"])
            return
        command = ["userdel", name] if entry["kind"] == "user" else ["groupdel", name]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            self.echo(f"removed {entry['kind']} {name}")
        elif "does not exist" not in proc.stderr:
            self._fail(f"{' '.join(command)}: {' '.join(proc.stderr.split())}")
            return
        self.manifest.forget(entry["key"])

    def _drop_manifest_dir(self) -> None:
        directory = self.manifest.path.parent
        shutil.rmtree(directory / "originals", ignore_errors=True)
        try:
            directory.rmdir()
        except OSError:
            pass
        state = directory.parent
        if self.purge:
            shutil.rmtree(state, ignore_errors=True)
            return
        try:
            state.rmdir()  # /var/lib/lmsav, when nothing is kept there
        except OSError:
            self.kept.append(f"{state} (not empty)")

    def _fail(self, text: str) -> None:
        self.failures.append(text)
        self.echo(f"FAILED: {text}")


SPOOL_STATE_DIRS = ("new", "work", "hold")
DISPOSABLE = ("tmp", "stats", "delivered")


def _has_files(path: Path) -> bool:
    for _root, _dirs, files in os.walk(path):
        if any(not name.endswith((".lock",)) for name in files):
            return True
    return False


def _is_disposable(path: Path) -> bool:
    """What lmsav keeps only for itself: caches, run files, logs, unfinished spool files."""
    return path.name in DISPOSABLE or str(path).startswith(("/var/cache/", "/run/", "/var/log/"))


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
