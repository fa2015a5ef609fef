"""The Ed25519 trust store: public keys whose signatures lmsav bundles and feeds may carry.

Two directories, each holding ``<name>.pub`` files (PEM ``PUBLIC KEY``, as ``openssl pkey
-pubout`` writes them): ``/etc/lmsav/keys`` for the whole system and ``<config dir>/keys`` of
the personal layout (``~/.config/lmsav/keys``) for an ordinary user, who trusts both. A key is
known by its name (the file name) and its id: the first 16 hex digits of the SHA-256 of its 32
raw bytes, which a detached signature names.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .. import paths

SYSTEM_KEY_DIR = paths.SYSTEM_CONFIG_DIR / "keys"
KEY_SUFFIX = ".pub"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SIGNATURE_MAGIC = "lmsav-signature 1"


class KeyProblem(Exception):
    """A key or signature problem; ``str()`` is one line."""


class SignatureRefused(KeyProblem):
    """A signature is missing, malformed, by an unknown key, or does not match."""


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key_id: str
    path: Path
    scope: str  # "system" or "personal"
    public: Ed25519PublicKey

    def to_json(self) -> dict:
        return {"name": self.name, "id": self.key_id, "scope": self.scope, "path": str(self.path)}


def key_dirs() -> tuple[Path, ...]:
    """Where trusted keys are read from: the system store, and the personal one for a person."""
    personal = paths.config_dir() / "keys"
    return (SYSTEM_KEY_DIR,) if personal == SYSTEM_KEY_DIR else (SYSTEM_KEY_DIR, personal)


def writable_dir() -> Path:
    """Where ``lmsav keys add`` writes: the layout's own store."""
    return paths.config_dir() / "keys"


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_public(data: bytes, origin: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM, or from the base64 of its 32 raw bytes."""
    try:
        if b"-----BEGIN" in data:
            public = serialization.load_pem_public_key(data)
        else:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(),
                                                                         validate=True))
    except (ValueError, TypeError) as err:
        raise KeyProblem(f"{origin}: not an Ed25519 public key ({err})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyProblem(f"{origin}: not an Ed25519 public key (another algorithm)")
    return public


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private(path: Path) -> Ed25519PrivateKey:
    """A publisher's Ed25519 private key (unencrypted PEM, as ``openssl genpkey`` writes it)."""
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as err:
        raise KeyProblem(f"{path}: cannot read: {err.strerror}") from None
    except (ValueError, TypeError) as err:
        raise KeyProblem(f"{path}: not an unencrypted PEM private key ({err})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyProblem(f"{path}: not an Ed25519 private key")
    return private


def private_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())


# -- the store --------------------------------------------------------------------------------

def trusted(dirs: tuple[Path, ...] | None = None) -> list[TrustedKey]:
    """Every readable key of the store; an unreadable or malformed file is skipped."""
    found = []
    for directory in key_dirs() if dirs is None else dirs:
        scope = "system" if directory == SYSTEM_KEY_DIR else "personal"
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        for entry in names:
            if not entry.endswith(KEY_SUFFIX):
                continue
            path = directory / entry
            try:
                public = parse_public(path.read_bytes(), str(path))
            except (OSError, KeyProblem):
                continue
            found.append(TrustedKey(entry[:-len(KEY_SUFFIX)], key_id(public), path, scope,
                                    public))
    return found


def add(source: Path, name: str, directory: Path) -> TrustedKey:
    """Copy the public key in ``source`` into ``directory`` as ``name``."""
    if not NAME_RE.fullmatch(name):
        raise KeyProblem(f"{name!r}: a key name is letters, digits, '.', '_' and '-' (up to 64)")
    try:
        data = source.read_bytes()
    except OSError as err:
        raise KeyProblem(f"{source}: cannot read: {err.strerror}") from None
    public = parse_public(data, str(source))
    for known in trusted((directory,)):
        if known.name == name:
            raise KeyProblem(f"a key named {name} is already trusted ({known.path}); remove it "
                            f"first")
        if known.key_id == key_id(public):
            raise KeyProblem(f"this key is already trusted as {known.name} ({known.path})")
    target = directory / f"{name}{KEY_SUFFIX}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".{name}{KEY_SUFFIX}.tmp"
        temporary.write_bytes(public_pem(public))
        os.chmod(temporary, 0o644)
        os.replace(temporary, target)
    except OSError as err:
        raise KeyProblem(f"{err.filename or directory}: cannot write: {err.strerror}") from None
    return TrustedKey(name, key_id(public), target,
                      "system" if directory == SYSTEM_KEY_DIR else "personal", public)


def remove(name: str, directory: Path, dirs: tuple[Path, ...] | None = None) -> TrustedKey:
    """Remove the key ``name`` from ``directory`` (the one this user manages)."""
    mine = [k for k in trusted((directory,)) if k.name == name]
    if not mine:
        elsewhere = [k for k in trusted(dirs) if k.name == name]
        if elsewhere:
            raise KeyProblem(f"{name} is trusted in {elsewhere[0].path.parent}, which only its "
                            f"owner can change")
        raise KeyProblem(f"no trusted key named {name} (see `lmsav keys list`)")
    try:
        mine[0].path.unlink()
    except OSError as err:
        raise KeyProblem(f"{mine[0].path}: cannot remove: {err.strerror}") from None
    return mine[0]


# -- signatures -------------------------------------------------------------------------------

def sign(data: bytes, private: Ed25519PrivateKey) -> bytes:
    """A detached signature file's content for ``data``."""
    signature = base64.b64encode(private.sign(data)).decode()
    return (f"{SIGNATURE_MAGIC}\nkey: {key_id(private.public_key())}\n"
            f"signature: {signature}\n").encode()


def verify(data: bytes, signature_file: bytes, origin: str,
           dirs: tuple[Path, ...] | None = None) -> TrustedKey:
    """The trusted key that signed ``data``; SignatureRefused otherwise."""
    fields = {}
    lines = signature_file.decode("utf-8", "replace").splitlines()
    if not lines or lines[0].strip() != SIGNATURE_MAGIC:
        raise SignatureRefused(f"{origin}: not an lmsav signature file")
    for line in lines[1:]:
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    wanted, text = fields.get("key", ""), fields.get("signature", "")
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:
        raw = b""
    if not wanted or len(raw) != 64:
        raise SignatureRefused(f"{origin}: malformed signature file")
    keys = [k for k in trusted(dirs) if k.key_id == wanted]
    if not keys:
        raise SignatureRefused(f"{origin}: signed by key {wanted}, which is not trusted "
                               f"(`lmsav keys add FILE --name NAME` trusts it)")
    try:
        keys[0].public.verify(raw, data)
    except InvalidSignature:
        raise SignatureRefused(f"{origin}: bad signature (key {keys[0].name}): the file was "
                               f"changed after it was signed") from None
    return keys[0]
