"""An HTTP(S) mirror in ClamAV's layout, fetched with httpx: honest, patient and bounded.

Every request says ``User-Agent: lmsav/<version>``. A failure that may pass (timeout, dropped
connection, 5xx, a body cut short) is retried with exponential backoff; a 429 is obeyed: a short
``Retry-After`` is waited out, a long one (or none: four hours, as freshclam does) ends the
attempt and the caller records a cool-down. A 200 that is an HTML page (a proxy's or portal's
error page) is recognised by its first bytes. A transfer that stalls (no byte for ``timeout``
seconds) or crawls (under 1 KiB in ``timeout`` seconds) is abandoned, and no file may grow past
``MAX_DOWNLOAD_BYTES``.
"""

from __future__ import annotations

import email.utils
import os
import sys
import time
from pathlib import Path

import httpx

from .. import __version__
from .errors import NotFound, RateLimited, SourceError, StagingError, TransientError

USER_AGENT = f"lmsav/{__version__}"
LOW_SPEED_BYTES = 1024
MAX_INLINE_WAIT = 30.0  # a Retry-After up to this long is waited out within the run
DEFAULT_COOL_DOWN = 4 * 3600.0  # 429 without Retry-After
MAX_BACKOFF = 60.0
MAX_DOWNLOAD_BYTES = 2 << 30
HEADER_SIZE = 512
PROXY_REFUSED = ("the proxy refused the credentials (407 Proxy Authentication Required; see "
                 "[update] proxy or https_proxy)")


class HttpMirror:
    """One mirror base URL; ``header()`` and ``download()`` raise SourceError subclasses."""

    network = True
    incremental = True  # serves <name>-<version>.cdiff files

    def __init__(self, base_url: str, *, timeout: float = 30.0, retries: int = 3,
                 retry_delay: float = 2.0, progress: bool = False, sleep=time.sleep,
                 proxy: str = ""):
        self.label = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = max(1, retries)
        self.retry_delay = retry_delay
        self.progress = progress
        self.sleep = sleep
        # trust_env: without a configured proxy the usual http_proxy/https_proxy/no_proxy
        # variables apply; a configured one is used for every mirror.
        self.client = httpx.Client(
            headers={"User-Agent": USER_AGENT}, timeout=httpx.Timeout(timeout or None),
            follow_redirects=True, trust_env=True, proxy=proxy or None)

    def close(self) -> None:
        self.client.close()

    def url(self, name: str) -> str:
        return f"{self.label}/{name}"

    # -- the two requests -------------------------------------------------------------------
    def header(self, name: str) -> bytes:
        """The first 512 bytes of ``name``, asked for with a Range request."""
        return self._retrying(lambda: self._header_once(name))

    def download(self, name: str, destination: Path, expect: bytes) -> int:
        """Fetch ``name`` into ``destination`` (fsynced); ``expect`` is how the file starts."""
        return self._retrying(lambda: self._download_once(name, destination, expect))

    # -- one attempt ------------------------------------------------------------------------
    def _header_once(self, name: str) -> bytes:
        url = self.url(name)
        headers = {"Range": f"bytes=0-{HEADER_SIZE - 1}", "Cache-Control": "no-cache"}
        with self._stream(url, headers) as response:
            head = b""
            # A server that ignores Range sends the whole file: read the header, then hang up.
            for chunk in response.iter_raw():
                head += chunk
                if len(head) >= HEADER_SIZE:
                    break
        _check_start(url, response, head, b"ClamAV-VDB:")
        if len(head) < HEADER_SIZE:
            raise SourceError(f"{url}: short answer ({len(head)} bytes) where a 512-byte "
                              f"database header was asked for")
        return head[:HEADER_SIZE]

    def _download_once(self, name: str, destination: Path, expect: bytes) -> int:
        url = self.url(name)
        with self._stream(url, {}) as response:
            length = _content_length(response)
            if length is not None and length > MAX_DOWNLOAD_BYTES:
                raise SourceError(f"{url}: {length} bytes announced, more than the "
                                  f"{MAX_DOWNLOAD_BYTES >> 20} MiB allowed")
            received = 0
            with _open_for_writing(destination) as out, self._bar(name, length) as bar:
                window_start, window_bytes = time.monotonic(), 0
                start = b""
                for chunk in response.iter_raw():  # as the network delivers
                    if len(start) < len(expect):
                        start += chunk[:len(expect)]
                        if len(start) >= len(expect):
                            _check_start(url, response, start, expect)
                    received += len(chunk)
                    if received > MAX_DOWNLOAD_BYTES:
                        raise SourceError(f"{url}: larger than the {MAX_DOWNLOAD_BYTES >> 20} "
                                          f"MiB allowed")
                    _write(out, chunk, destination)
                    bar.update(len(chunk))
                    window_bytes += len(chunk)
                    now = time.monotonic()
                    if self.timeout and now - window_start >= self.timeout:
                        if window_bytes < LOW_SPEED_BYTES:
                            raise TransientError(f"{url}: too slow (under 1 KiB in "
                                                 f"{self.timeout:g} s)")
                        window_start, window_bytes = now, 0
                if len(start) < len(expect):
                    _check_start(url, response, start, expect)
                _sync(out, destination)
        if length is not None and received != length:
            raise TransientError(f"{url}: truncated: {received} of {length} bytes")
        return received

    def _stream(self, url: str, headers: dict):
        """A streamed GET whose status was checked; transport failures become SourceErrors."""
        return _Exchange(self.client, url, headers, self.timeout)

    def _retrying(self, attempt):
        for number in range(1, self.retries + 1):
            try:
                return attempt()
            except RateLimited as err:
                if err.wait > MAX_INLINE_WAIT or number == self.retries:
                    raise
                self.sleep(err.wait)
            except SourceError as err:
                if not err.retryable or number == self.retries:
                    raise
                self.sleep(min(MAX_BACKOFF, self.retry_delay * 2 ** (number - 1)))
        raise AssertionError("unreachable")

    def _bar(self, name: str, total: int | None):
        if not self.progress:
            return _NoBar()
        from tqdm import tqdm

        return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                    leave=False, file=sys.stderr)


class _Exchange:
    """``with``: send the request, classify the status, close the response afterwards."""

    def __init__(self, client: httpx.Client, url: str, headers: dict, timeout: float):
        self.client, self.url, self.headers, self.timeout = client, url, headers, timeout
        self.response = None

    def __enter__(self) -> httpx.Response:
        try:
            self.response = self.client.send(
                self.client.build_request("GET", self.url, headers=self.headers), stream=True)
        except httpx.TransportError as err:
            raise _transport_error(self.url, err, self.timeout) from None
        _check_status(self.url, self.response)
        return self.response

    def __exit__(self, kind, err, _tb) -> None:
        if self.response is not None:
            self.response.close()
        if isinstance(err, httpx.TransportError):
            raise _transport_error(self.url, err, self.timeout) from None


def _transport_error(url: str, err: httpx.TransportError, timeout: float) -> SourceError:
    if isinstance(err, httpx.TimeoutException):
        return TransientError(f"{url}: no answer within {timeout:g} s")
    if isinstance(err, httpx.ProxyError):  # the proxy refused the tunnel (https://)
        if "407" in str(err):
            return SourceError(f"{url}: {PROXY_REFUSED}")
        return TransientError(f"{url}: proxy: {_reason(err)}")
    if isinstance(err, httpx.RemoteProtocolError):
        return TransientError(f"{url}: connection closed early ({_reason(err)})")
    if isinstance(err, httpx.UnsupportedProtocol):
        return SourceError(f"{url}: {_reason(err)}")
    return TransientError(f"{url}: cannot connect: {_reason(err)}")


def _reason(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _check_status(url: str, response: httpx.Response) -> None:
    status = response.status_code
    if status in (200, 206):
        return
    response.close()
    if status == 407:
        raise SourceError(f"{url}: {PROXY_REFUSED}")
    if status in (404, 410):
        raise NotFound(f"{url}: not found ({status})")
    if status == 429:
        wait = _retry_after(response.headers.get("Retry-After"))
        raise RateLimited(f"{url}: too many requests (429), asked to wait "
                          f"{_duration(wait)}", wait)
    if status >= 500 or status == 408:
        raise TransientError(f"{url}: server error {status}")
    raise SourceError(f"{url}: refused with HTTP {status}")


def _retry_after(value: str | None) -> float:
    """Seconds from now that a Retry-After header asks for (a number or an HTTP date)."""
    if not value:
        return DEFAULT_COOL_DOWN
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return DEFAULT_COOL_DOWN
    return max(0.0, when.timestamp() - time.time())


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:g} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def _check_start(url: str, response: httpx.Response, data: bytes, expect: bytes) -> None:
    if data.startswith(expect):
        return
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in ("text/html", "application/xhtml+xml") or \
            data.lstrip()[:1] == b"<":
        raise SourceError(f"{url}: answered with an HTML page instead of the file (an error "
                          f"page of a proxy, captive portal or CDN?)")
    if not data:
        raise SourceError(f"{url}: empty answer")
    raise SourceError(f"{url}: not what was asked for (it does not start with "
                      f"{expect.decode()!r})")


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def update(self, _n: int) -> None:
        pass


def _open_for_writing(path: Path):
    try:
        return open(path, "wb")
    except OSError as err:
        raise StagingError(f"{path}: {err.strerror}") from None


def _write(out, chunk: bytes, path: Path) -> None:
    try:
        out.write(chunk)
    except OSError as err:
        raise StagingError(f"{path}: {err.strerror}") from None


def _sync(out, path: Path) -> None:
    try:
        out.flush()
        os.fsync(out.fileno())
    except OSError as err:
        raise StagingError(f"{path}: {err.strerror}") from None


__all__ = ["USER_AGENT", "HttpMirror"]
