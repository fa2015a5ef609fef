"""The record of every change `lmsav setup` made, so `--remove` undoes exactly those.

One JSON file, rewritten atomically after each change: a setup interrupted halfway leaves a
manifest of what it did, which a second run continues and a removal undoes. Entries are keyed, so
running setup again updates an entry instead of adding a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from ..paths import SYSTEM_STATE_DIR, setup_dir

MANIFEST_DIR = setup_dir(SYSTEM_STATE_DIR)
MANIFEST_NAME = "manifest.json"
FORMAT = 1


class ManifestError(Exception):
    """The manifest cannot be read or written."""


def file_hash(path: Path) -> str | None:
    """sha256 of the file's bytes; None when it does not exist."""
    try:
        with open(path, "rb") as fp:
            return hashlib.file_digest(fp, "sha256").hexdigest()
    except FileNotFoundError:
        return None


class Manifest:
    """Entries in the order they were made; each a dict with ``key`` and ``kind``."""

    def __init__(self, path: Path, entries: list[dict] | None = None):
        self.path = path
        self.entries: list[dict] = entries or []

    @classmethod
    def load(cls, directory: Path = MANIFEST_DIR) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError) as err:
            raise ManifestError(f"{path}: cannot read the setup manifest: {err}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(
                data.get("entries"), list):
            raise ManifestError(f"{path}: not a setup manifest of this lmsav (format {FORMAT})")
        return cls(path, [e for e in data["entries"] if isinstance(e, dict) and "key" in e])

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def get(self, key: str) -> dict | None:
        for entry in self.entries:
            if entry["key"] == key:
                return entry
        return None

    def of_kind(self, kind: str) -> list[dict]:
        return [e for e in self.entries if e.get("kind") == kind]

    def record(self, kind: str, key: str, **fields) -> dict:
        """Add the entry, or update the one with this key (keeping what it said first about
        having created the thing: a second run did not create what the first one did)."""
        entry = self.get(key)
        if entry is None:
            entry = {"kind": kind, "key": key}
            self.entries.append(entry)
        for name, value in fields.items():
            if name in ("created", "backup", "original_hash") and entry.get(name):
                continue
            entry[name] = value
        self.save()
        return entry

    def forget(self, key: str) -> None:
        self.entries = [e for e in self.entries if e["key"] != key]
        self.save()

    def save(self) -> None:
        """Written at once, unless the state directory is still to be made: setup creates it
        with its owner right after the account, and the first save after that writes all."""
        if not self.path.parent.parent.is_dir():
            return
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        text = json.dumps({"format": FORMAT, "entries": self.entries}, indent=1,
                          sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fp:
                fp.write(text)
                fp.flush()
                os.fsync(fp.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def delete(self) -> None:
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        try:
            self.path.parent.rmdir()
        except OSError:
            pass
