"""Fixtures for lmsav update: a real HTTP mirror on 127.0.0.1 and ClamAV's genuine test files.

The mirror is the standard library's ThreadingHTTPServer in a thread. It serves files from a
dict, honours ``Range: bytes=A-B`` with 206 answers, logs every request (path, Range,
User-Agent) and can be told to misbehave per path: 404, 500, 429 with a Retry-After, a 200 HTML
error page, a body cut short, a pause before answering, a trickle of bytes.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lmsav.scanner.signatures import cvd
from lmsav.update.updater import Options

DATA = Path(__file__).parent / "data"
GENUINE = DATA / "freshclam_testfiles"
TEST_CERTS = DATA / "certs"  # ClamAV's TEST root: trusted by these tests only
SIGNED_AT = 1743300000  # 30 March 2025: inside the TEST chain's validity (it ends March 2027)
HTML_PAGE = b"<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>\n"


def genuine(name: str) -> bytes:
    return (GENUINE / name).read_bytes()


@dataclass
class Request:
    path: str
    range: str | None
    user_agent: str | None


@dataclass
class Mirror:
    """What the server serves and how; ``url`` is its base URL."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    # path → "404", "500", "429:SECONDS" (or "429" without Retry-After), "html", "truncate",
    # "pause:SECONDS" (before the headers), "trickle" (a byte every 0.2 s), "ignore-range";
    # a list is consumed one answer per request, then the plain file is served.
    faults: dict[str, object] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        with self.lock:
            return [r.path for r in self.requests]

    def publish_genuine(self, version: int, name: str = "test", signs: bool = True,
                        cdiffs: bool = True) -> None:
        """Lay the mirror out as ClamAV's CDN would at ``version`` of the genuine test files."""
        self.files[f"{name}.cvd"] = genuine(f"test-{version}.cvd")
        if signs:
            self.files[f"{name}-{version}.cvd.sign"] = genuine(f"test-{version}.cvd.sign")
        if cdiffs:
            for k in range(2, version + 1):
                self.files[f"{name}-{k}.cdiff"] = genuine(f"test-{k}.cdiff")
                if signs:
                    self.files[f"{name}-{k}.cdiff.sign"] = genuine(f"test-{k}.cdiff.sign")


class _Handler(http.server.BaseHTTPRequestHandler):
    mirror: Mirror
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        mirror = self.mirror
        path = self.path.lstrip("/")
        with mirror.lock:
            mirror.requests.append(Request(path, self.headers.get("Range"),
                                           self.headers.get("User-Agent")))
            fault = mirror.faults.get(path)
            if isinstance(fault, list):
                fault = fault.pop(0) if fault else None
            data = mirror.files.get(path)
        if fault and fault.startswith("pause:"):
            time.sleep(float(fault.split(":")[1]))
            fault = None
        if fault == "404" or (data is None and fault is None):
            return self._plain(404, b"not found\n")
        if fault == "500":
            return self._plain(500, b"internal error\n")
        if fault and fault.startswith("429"):
            extra = {"Retry-After": fault.split(":")[1]} if ":" in fault else {}
            return self._plain(429, b"slow down\n", extra)
        if fault == "html":
            return self._plain(200, HTML_PAGE, {"Content-Type": "text/html"})
        status, body, headers = 200, data, {}
        wanted = self.headers.get("Range")
        if wanted and fault != "ignore-range":
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted)
            start, end = int(match[1]), int(match[2] or len(data) - 1)
            end = min(end, len(data) - 1)
            body = data[start:end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        try:
            if fault == "truncate":
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            if fault == "trickle":
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)
                return
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _plain(self, status: int, body: bytes, headers: dict | None = None) -> None:
        self.send_response(status)
        headers = {"Content-Type": "text/plain", **(headers or {})}
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def start_mirror() -> tuple[Mirror, http.server.ThreadingHTTPServer]:
    mirror = Mirror()
    handler = type("Handler", (_Handler,), {"mirror": mirror})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    mirror.url = f"http://127.0.0.1:{server.server_address[1]}"
    return mirror, server


@pytest.fixture
def mirror():
    served, server = start_mirror()
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def second_mirror():
    served, server = start_mirror()
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def trust_test_root(monkeypatch):
    """Trust ClamAV's TEST root and check certificates at the files' signing time, in this
    process and in the child that compiles the database (forked: it inherits the patches)."""
    from lmsav.scanner.signatures import database

    monkeypatch.setattr(database, "_trust_dirs", lambda: [TEST_CERTS])
    original = cvd.verify_sign_file

    @functools.wraps(original)
    def at_signing_time(data, sign_path, trust_dirs=(), *, check_time=None):
        return original(data, sign_path, trust_dirs, check_time=check_time or SIGNED_AT)

    monkeypatch.setattr(cvd, "verify_sign_file", at_signing_time)
    return TEST_CERTS


def options(*sources: str, **changes) -> Options:
    """Options as a test wants them: no rate limit, quick retries and timeouts."""
    values = {"sources": tuple(sources), "databases": ("test",), "keep_versions": 3,
                  "check_interval": 0.0, "timeout": 2.0, "retries": 2, "retry_delay": 0.01}
    values.update(changes)
    return Options(**values)


def copy_genuine(directory: Path, version: int, name: str = "test", sign: bool = False) -> Path:
    """A directory source holding version ``version`` as ``<name>.cvd``."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(GENUINE / f"test-{version}.cvd", directory / f"{name}.cvd")
    if sign:
        shutil.copy(GENUINE / f"test-{version}.cvd.sign", directory / f"{name}-{version}.cvd.sign")
    return directory


def md5_line(data: bytes, name: str) -> bytes:
    return f"{hashlib.md5(data).hexdigest()}:{len(data)}:{name}\n".encode()
