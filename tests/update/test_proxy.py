"""lmsav update through an HTTP proxy on 127.0.0.1 that checks Proxy-Authorization: the
configured proxy, the usual environment variables, and credentials it refuses."""

from __future__ import annotations

import base64
import http.client
import http.server
import threading
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import pytest

from lmsav.update.store import Store
from lmsav.update.updater import update

from .conftest import TEST_CERTS, options
from .test_commands import Admin

USER, PASSWORD = "mailadmin", "s3cret:pass"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection",
              "transfer-encoding", "te", "upgrade"}


@dataclass
class Proxy:
    url: str = ""  # without credentials
    seen: list[tuple[str, str | None]] = field(default_factory=list)  # (absolute URL, Range)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def with_credentials(self, user: str = USER, password: str = PASSWORD) -> str:
        from urllib.parse import quote

        parts = urlsplit(self.url)
        return f"http://{quote(user, safe='')}:{quote(password, safe='')}@{parts.netloc}"


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """A forwarding proxy for plain HTTP, as squid is for http:// URLs: absolute request
    URIs, Basic credentials in Proxy-Authorization, the answer passed on as it came."""

    proxy: Proxy
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Proxy-Authorization") != expected:
            with self.proxy.lock:
                self.proxy.refused += 1
            body = b"proxy authentication required\n"
            self.send_response(407)
            self.send_header("Proxy-Authenticate", 'Basic realm="test"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = urlsplit(self.path)
        with self.proxy.lock:
            self.proxy.seen.append((self.path, self.headers.get("Range")))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        try:
            upstream.request("GET", target.path or "/", headers=headers)
            answer = upstream.getresponse()
            body = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    served = Proxy()
    handler = type("Handler", (_ProxyHandler,), {"proxy": served})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


def active_version(root) -> int | None:
    current = Store(root).current()
    return current.meta["databases"]["test"]["version"] if current else None


def test_an_update_through_the_configured_proxy(tmp_path, mirror, proxy, trust_test_root):
    root = tmp_path / "bases"
    mirror.publish_genuine(3)
    outcome = update(root, options(mirror.url, databases=("test",), trust_dirs=(TEST_CERTS,),
                                   proxy=proxy.with_credentials()))
    assert outcome.ok, outcome.errors
    assert active_version(root) == 3
    assert proxy.refused == 0
    assert proxy.seen == [(f"{mirror.url}/test.cvd", "bytes=0-511"),
                          (f"{mirror.url}/test.cvd", None),
                          (f"{mirror.url}/test-3.cvd.sign", None)]
    assert mirror.paths() == ["test.cvd", "test.cvd", "test-3.cvd.sign"]
    mirror.publish_genuine(4)  # the next version by its diff, through the proxy too
    outcome = update(root, options(mirror.url, databases=("test",), trust_dirs=(TEST_CERTS,),
                                   proxy=proxy.with_credentials()))
    assert outcome.ok and outcome.changes[0].how == "cdiff", outcome.errors
    assert (f"{mirror.url}/test-4.cdiff", None) in proxy.seen


def test_the_http_proxy_variable_is_honoured_and_no_proxy_bypasses_it(
        tmp_path, mirror, proxy, trust_test_root, monkeypatch):
    mirror.publish_genuine(3)
    monkeypatch.setenv("http_proxy", proxy.with_credentials())
    outcome = update(tmp_path / "a", options(mirror.url, databases=("test",),
                                             trust_dirs=(TEST_CERTS,)))
    assert outcome.ok, outcome.errors
    assert len(proxy.seen) == 3
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    outcome = update(tmp_path / "b", options(mirror.url, databases=("test",),
                                             trust_dirs=(TEST_CERTS,)))
    assert outcome.ok, outcome.errors
    assert len(proxy.seen) == 3  # went straight to the mirror
    assert mirror.paths().count("test.cvd") == 4


def test_refused_proxy_credentials_are_one_line_and_the_active_version_stays(
        tmp_path, mirror, proxy):
    admin = Admin(tmp_path)
    mirror.files["extra.cud"] = admin.extra
    mirror.publish_genuine(3, signs=False)
    admin.configure([mirror.url], proxy=proxy.with_credentials())
    first = admin.run()
    assert first.returncode == 0, first.stderr
    assert admin.active() == 3
    mirror.publish_genuine(4, signs=False)
    seen = len(proxy.seen)
    admin.configure([mirror.url], proxy=proxy.with_credentials(password="wrong"))
    failed = admin.run()
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        (f"lmsav: error: {mirror.url}/test.cvd: the proxy refused the credentials (407 Proxy "
         f"Authentication Required; see [update] proxy or https_proxy)")]
    assert "wrong" not in failed.stderr + failed.stdout
    assert failed.stdout == "not updated: still using test-3_extra-7\n"
    assert admin.active() == 3
    assert proxy.refused == 1  # not retried: the same credentials would be refused again
    assert len(proxy.seen) == seen
