"""Signatures beyond ClamAV's: lmsav bundles, third-party feeds and YARA rule sets.

``[update] feeds`` lists them; each is fetched, verified by its own rule and installed into the
new version beside ClamAV's containers:

- ``….bundle``: an lmsav bundle; always its ``.bundle.sig`` by a key of the trust store.
- a signature file (``.ndb .ldb .hdb .hsb .yar`` …) or a YARA rule set (``.tar.gz``/``.tgz``
  URL, or a directory): its ``sha256`` pin when given, its ``<url>.sig`` by a trusted key when
  ``signed = true``; with neither it is taken as the server sends it, which is allowed only over
  https:// (the server's certificate vouches for where it came from, not for what it holds) or
  from a local file or directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

# Which feeds and how each is verified is configuration: lmsav.config reads it.
from ..config import Feed, parse_feeds
from .errors import NotFound, SourceError, UpdateError

YARA_SUFFIXES = (".yar", ".yara")
HTML_STARTS = (b"<!doctype", b"<html", b"<head", b"<body")


class FeedError(UpdateError):
    """A feed was refused or could not be fetched: nothing is installed."""


@dataclass
class Fetched:
    feed: Feed
    files: dict[str, bytes]
    verified: str  # how: "key NAME", "sha256 pin", "https", "local"
    detail: str = ""  # a bundle's name and version
    bundle: tuple[str, int] | None = None  # a bundle's (name, version), from its manifest

    def to_json(self) -> dict:
        data = {"url": self.feed.url, "kind": self.feed.kind, "verified": self.verified,
                "detail": self.detail, "files": sorted(self.files)}
        if self.bundle is not None:
            data["bundle"] = {"name": self.bundle[0], "version": self.bundle[1]}
        return data


@dataclass
class Extras:
    fetched: list[Fetched] = field(default_factory=list)

    @property
    def files(self) -> dict[str, bytes]:
        return {name: data for f in self.fetched for name, data in f.files.items()}

    def label_suffix(self) -> str:
        """Part of the version's name: what the extras hold, so a change makes a new version."""
        if not self.fetched:
            return ""
        digest = hashlib.sha256()
        for name, data in sorted(self.files.items()):
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return "_extras-" + digest.hexdigest()[:12]

    def install(self, directory: Path) -> None:
        for name, data in self.files.items():
            (directory / name).write_bytes(data)

    def to_json(self) -> list[dict]:
        return [f.to_json() for f in self.fetched]


# -- fetching ---------------------------------------------------------------------------------

def fetch_all(feeds: tuple[Feed, ...], staging: Path, *, key_dirs=None, timeout: float = 30.0,
              retries: int = 3, retry_delay: float = 2.0, proxy: str = "",
              installed: dict[str, int] | None = None, allow_downgrade: bool = False) -> Extras:
    """Every feed fetched and verified; FeedError names the first one refused.

    ``installed`` maps a bundle's name to the version the active database holds: an older
    bundle of that name is refused unless ``allow_downgrade``, as an older ClamAV container is
    not installed over a newer one (a replayed old bundle would drop newer signatures).
    """
    extras = Extras()
    seen: dict[str, str] = {}
    staging.mkdir(parents=True, exist_ok=True)
    for feed in feeds:
        fetcher = _Fetcher(staging, timeout, retries, retry_delay, proxy)
        try:
            fetched = _fetch(feed, fetcher, key_dirs)
        except SourceError as err:
            raise FeedError(f"feed {feed.url}: {err}") from None
        finally:
            fetcher.close()
        if fetched.bundle is not None and not allow_downgrade:
            _refuse_downgrade(feed, fetched.bundle, installed or {})
        for name in fetched.files:
            if name in seen:
                raise FeedError(f"feed {feed.url}: {name} is also installed by {seen[name]}")
            seen[name] = feed.url
        extras.fetched.append(fetched)
    return extras


def _fetch(feed: Feed, fetcher: _Fetcher, key_dirs) -> Fetched:
    from . import bundle, keys

    kind = feed.kind
    if kind == "directory":
        return Fetched(feed, _directory_rules(feed.local), "local")
    data = fetcher.get(feed.url)
    if data[:64].lstrip().lower().startswith(HTML_STARTS):
        raise FeedError(f"feed {feed.url}: an HTML page, not signatures")
    try:
        if kind == "bundle":
            found = bundle.read(data, fetcher.optional(f"{feed.url}.sig"), feed.url, key_dirs)
            return Fetched(feed, found.files, f"key {found.signer}",
                           f"{found.name} {found.version}", (found.name, found.version))
        verified = _verify(feed, data, fetcher, key_dirs)
    except (keys.KeyProblem, bundle.BundleError) as err:
        raise FeedError(f"feed refused: {err}") from None
    if kind == "rule set":
        return Fetched(feed, _archive_rules(data, feed.url), verified)
    name = _basename(feed.url)
    return Fetched(feed, {name: data}, verified)


def _refuse_downgrade(feed: Feed, bundle: tuple[str, int], installed: dict[str, int]) -> None:
    name, version = bundle
    active = installed.get(name)
    if active is not None and version < active:
        raise FeedError(f"feed refused: {feed.url}: bundle {name} version {version} is older "
                        f"than the active {active}; the active database stays "
                        f"(--allow-downgrade installs the older one)")


def installed_bundles(extras: Any) -> dict[str, int]:
    """Bundle name → version, from a version's recorded ``extras`` (its meta)."""
    found: dict[str, int] = {}
    for entry in extras if isinstance(extras, list) else ():
        if not isinstance(entry, dict) or entry.get("kind") != "bundle":
            continue
        recorded = entry.get("bundle")
        if isinstance(recorded, dict):
            name, version = recorded.get("name"), recorded.get("version")
        else:  # recorded before the name and version had a key of their own: "NAME VERSION"
            name, _, version = str(entry.get("detail", "")).rpartition(" ")
        if not name:
            continue
        try:
            found[str(name)] = int(version)
        except (TypeError, ValueError):
            continue
    return found


def _verify(feed: Feed, data: bytes, fetcher: _Fetcher, key_dirs) -> str:
    from . import keys

    how = []
    if feed.sha256:
        got = hashlib.sha256(data).hexdigest()
        if got != feed.sha256:
            raise FeedError(f"feed refused: {feed.url}: SHA-256 {got}, not the pinned "
                            f"{feed.sha256}")
        how.append("sha256 pin")
    if feed.signed:
        signature = fetcher.optional(f"{feed.url}.sig")
        if signature is None:
            raise FeedError(f"feed refused: {feed.url}: no signature ({feed.url}.sig) and "
                            f"signed = true")
        how.append(f"key {keys.verify(data, signature, feed.url, key_dirs).name}")
    if how:
        return ", ".join(how)
    return "https" if feed.url.startswith("https://") else "local"


def _basename(url: str) -> str:
    from .bundle import acceptable_name

    name = unquote(urlsplit(url).path if "://" in url else url).rsplit("/", 1)[-1]
    if not acceptable_name(name):
        raise FeedError(f"feed {url}: {name!r} is not a signature file name lmsav installs")
    return name


def _archive_rules(data: bytes, origin: str) -> dict[str, bytes]:
    """The .yar/.yara members of a tar.gz, by base name; other members are ignored."""
    from .bundle import MAX_BYTES, acceptable_name

    rules: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for info in tar:
                name = info.name.rsplit("/", 1)[-1]
                if not info.isfile() or not name.lower().endswith(YARA_SUFFIXES):
                    continue
                if not acceptable_name(name):
                    raise FeedError(f"feed {origin}: {info.name}: an unusual file name")
                if name in rules:
                    raise FeedError(f"feed {origin}: two rule files named {name}")
                total += info.size
                if total > MAX_BYTES:
                    raise FeedError(f"feed {origin}: larger than {MAX_BYTES >> 20} MiB "
                                    f"unpacked")
                rules[name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise FeedError(f"feed {origin}: not a tar.gz: {err}") from None
    if not rules:
        raise FeedError(f"feed {origin}: no .yar or .yara file in the archive")
    return rules


def _directory_rules(directory: Path) -> dict[str, bytes]:
    from .bundle import acceptable_name

    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.lower().endswith(YARA_SUFFIXES) and acceptable_name(n))
        rules = {n: (directory / n).read_bytes() for n in names
                 if (directory / n).is_file()}
    except OSError as err:
        raise FeedError(f"feed {err.filename or directory}: cannot read: {err.strerror}") \
            from None
    if not rules:
        raise FeedError(f"feed {directory}: no .yar or .yara file in the directory")
    return rules


class _Fetcher:
    """Whole files by URL or path, through the update's HTTP client for network URLs."""

    def __init__(self, staging: Path, timeout: float, retries: int, retry_delay: float,
                 proxy: str):
        self.staging, self.timeout, self.proxy = staging, timeout, proxy
        self.retries, self.retry_delay = retries, retry_delay
        self.clients: dict[str, object] = {}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()

    def get(self, url: str) -> bytes:
        parts = urlsplit(url)
        if parts.scheme in ("http", "https"):
            base, _, name = url.rpartition("/")
            if base not in self.clients:
                from .http import HttpMirror

                self.clients[base] = HttpMirror(base, timeout=self.timeout,
                                                retries=self.retries,
                                                retry_delay=self.retry_delay,
                                                proxy=self.proxy)
            destination = self.staging / f"download-{len(os.listdir(self.staging))}"
            self.clients[base].download(name, destination, b"")
            data = destination.read_bytes()
            destination.unlink()
            return data
        path = Path(unquote(parts.path)) if parts.scheme == "file" else Path(
            os.path.expanduser(url))
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFound(f"{path}: not found") from None
        except OSError as err:
            raise SourceError(f"{path}: cannot read: {err.strerror}") from None

    def optional(self, url: str) -> bytes | None:
        try:
            return self.get(url)
        except NotFound:
            return None


__all__ = ["Extras", "Feed", "FeedError", "fetch_all", "installed_bundles", "parse_feeds"]
