"""The console's local accounts: ``<state_dir>/web/users.json``, passwords hashed with Argon2id.

Only the service user (and root) can read the file. A password change or removal bumps the
account's ``generation``, which every session carries: older sessions end at their next request.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..durable import write_atomic

ROLES = ("admin", "viewer")
NAME_RE = re.compile(r"[a-z_][a-z0-9_.-]{0,31}\Z")
MIN_PASSWORD = 8
USERS_FILE = "users.json"

_hasher = PasswordHasher()
# Verified when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("lmsav: no such account")


class AccountError(Exception):
    """One line a person can act on."""


@dataclass(frozen=True)
class User:
    name: str
    role: str
    source: str = "local"  # local or pam
    generation: int = 0

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise AccountError(f"invalid account name {name!r}: use 1-32 lower-case letters, digits, "
                           "'_', '.' or '-', starting with a letter or '_'")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"invalid role {role!r}: choose {' or '.join(ROLES)}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: at least {MIN_PASSWORD} characters")
    return password


def prepare_dir(directory: Path) -> None:
    """The console's directory, private; owned like the state directory above it so the
    service user can read what root wrote."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.geteuid() == 0:
        st = directory.parent.stat()
        if directory.stat().st_uid != st.st_uid:
            os.chown(directory, st.st_uid, st.st_gid)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its directory's owner reads, atomically."""
    write_atomic(path, data, mode=0o600)
    if os.geteuid() == 0:
        st = path.parent.stat()
        os.chown(path, st.st_uid, st.st_gid)


class Accounts:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.path = self.directory / USERS_FILE
        self._lock = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------

    def _load(self) -> dict:
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as err:
            raise AccountError(f"cannot read {self.path}: {err}") from None
        users = data.get("users") if isinstance(data, dict) else None
        if not isinstance(users, dict):
            raise AccountError(f"{self.path} is damaged: no \"users\" table")
        return users

    def get(self, name: str) -> User | None:
        record = self._load().get(name)
        if not isinstance(record, dict) or record.get("role") not in ROLES:
            return None
        return User(name, record["role"], "local", int(record.get("generation", 0)))

    def list(self) -> list[dict]:
        return [{"name": name, "role": r.get("role", ""), "created": r.get("created"),
                 "changed": r.get("changed")}
                for name, r in sorted(self._load().items()) if isinstance(r, dict)]

    def verify(self, name: str, password: str) -> User | None:
        """The account when ``password`` is its password; None otherwise (same cost)."""
        record = self._load().get(name) if NAME_RE.match(name or "") else None
        stored = record.get("hash") if isinstance(record, dict) else None
        try:
            _hasher.verify(stored or _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            return None
        if not stored:
            return None
        if _hasher.check_needs_rehash(stored):
            try:
                self._update(name, lambda r: r.update(hash=_hasher.hash(password)))
            except (AccountError, OSError):
                pass  # still a valid login; the old hash stays
        return self.get(name)

    # -- changing --------------------------------------------------------------------------------

    def add(self, name: str, password: str, role: str) -> None:
        check_name(name)
        check_role(role)
        check_password(password)
        with self._lock:
            users = self._load()
            if name in users:
                raise AccountError(f"account {name!r} exists; use `lmsav web user passwd` or "
                                   "`role` to change it")
            now = time.time()
            users[name] = {"role": role, "hash": _hasher.hash(password), "created": now,
                           "changed": now, "generation": 0}
            self._save(users)

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        digest = _hasher.hash(password)
        self._update(name, lambda r: r.update(hash=digest))

    def set_role(self, name: str, role: str) -> None:
        check_role(role)
        self._update(name, lambda r: r.update(role=role))

    def remove(self, name: str) -> None:
        with self._lock:
            users = self._load()
            if name not in users:
                raise AccountError(f"no account {name!r}")
            del users[name]
            self._save(users)

    def _update(self, name: str, change) -> None:
        with self._lock:
            users = self._load()
            record = users.get(name)
            if not isinstance(record, dict):
                raise AccountError(f"no account {name!r}")
            change(record)
            record["changed"] = time.time()
            record["generation"] = int(record.get("generation", 0)) + 1
            self._save(users)

    def _save(self, users: dict) -> None:
        prepare_dir(self.directory)
        write_private(self.path, json.dumps({"users": users}, indent=1, sort_keys=True)
                      .encode() + b"\n")
