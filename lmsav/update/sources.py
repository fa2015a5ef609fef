"""Where updates come from: an HTTP(S) mirror in ClamAV's layout, or a local directory.

A source is named by a string: ``https://…`` or ``http://…`` (a mirror: ``main.cvd``,
``daily.cvd``, ``daily-<N>.cdiff``, ``bytecode.cvd`` and their ``.sign`` files under one URL), a
``file://`` URL or an absolute path (a directory: a private mirror as cvdupdate lays it out, a
copy carried to an offline server, or freshclam's own directory, whose ``.cld`` files count too).
Every source offers the same two calls: ``header(file)`` (512 bytes) and
``download(file, destination, expect)``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .dnstxt import AnnouncedMirror
from .errors import NotFound, SourceError, StagingError
from .http import HttpMirror

CHUNK = 1 << 20


def check_source(text: str) -> str:
    """``text`` if it names a source, else ValueError (for the configuration and --source)."""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(text)
        return text
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(text)
        return text
    if parts.scheme or not os.path.isabs(os.path.expanduser(text)):
        raise ValueError(text)
    return text


def open_source(text: str, *, timeout: float, retries: int, retry_delay: float,
                progress: bool, proxy: str = "", dns_txt: str = ""):
    """The source a configured string names; a mirror learns versions from ``dns_txt``."""
    parts = urlsplit(text)
    if parts.scheme in ("http", "https"):
        mirror = HttpMirror(text, timeout=timeout, retries=retries, retry_delay=retry_delay,
                            progress=progress, proxy=proxy)
        return AnnouncedMirror(mirror, dns_txt) if dns_txt else mirror
    if parts.scheme == "file":
        return DirectorySource(Path(unquote(parts.path)), label=text)
    return DirectorySource(Path(os.path.expanduser(text)))


class DirectorySource:
    """A local directory; its ``.cld`` files are offered beside the ``.cvd`` ones."""

    network = False
    incremental = False  # copying a whole local file is cheaper than patching

    def __init__(self, directory: Path, label: str | None = None):
        self.directory = directory
        self.label = label or str(directory)

    def close(self) -> None:
        pass

    def url(self, name: str) -> str:
        return str(self.directory / name)

    def header(self, name: str) -> bytes:
        path = self._existing(name)
        try:
            with open(path, "rb") as fh:
                head = fh.read(512)
        except OSError as err:
            raise SourceError(f"{path}: cannot read: {err.strerror}") from None
        if not head.startswith(b"ClamAV-VDB:"):
            raise SourceError(f"{path}: not a ClamAV database container")
        if len(head) < 512:
            raise SourceError(f"{path}: truncated header ({len(head)} bytes)")
        return head

    def download(self, name: str, destination: Path, expect: bytes) -> int:
        path = self._existing(name)
        try:
            with open(path, "rb") as fh:
                start = fh.read(len(expect))
        except OSError as err:
            raise SourceError(f"{path}: cannot read: {err.strerror}") from None
        if start != expect:
            raise SourceError(f"{path}: not what was asked for (it does not start with "
                              f"{expect.decode()!r})")
        with _opened(path, "rb", SourceError) as source, \
                _opened(destination, "wb", StagingError) as out:
            while True:
                try:
                    chunk = source.read(CHUNK)
                except OSError as err:
                    raise SourceError(f"{path}: cannot read: {err.strerror}") from None
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as err:
                    raise StagingError(f"{destination}: {err.strerror}") from None
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as err:
                raise StagingError(f"{destination}: {err.strerror}") from None
        return destination.stat().st_size

    def _existing(self, name: str) -> Path:
        path = self.directory / name
        if not self.directory.is_dir():
            raise SourceError(f"{self.directory}: no such directory")
        if not path.is_file():
            raise NotFound(f"{path}: not found")
        return path


@contextmanager
def _opened(path: Path, mode: str, error: type):
    """``open`` whose failure is ``error`` (SourceError reading, StagingError writing)."""
    try:
        fh = open(path, mode)  # noqa: SIM115 - closed below; only the open is translated
    except OSError as err:
        raise error(f"{path}: {err.strerror}") from None
    with fh:
        yield fh


__all__ = ["DirectorySource", "HttpMirror", "check_source", "open_source"]
