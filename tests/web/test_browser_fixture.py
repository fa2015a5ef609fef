"""The browser the web console's end-to-end tests drive: it starts, reaches a page on 127.0.0.1
and nothing off this machine, leaves a screenshot of a failed test, refuses to hide a missing
chromium under CI, and runs as an ordinary user with no terminal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from tests.web.browser import WINDOW, browser_missing, remove_elements, wait_for_element

REPO = Path(__file__).resolve().parents[2]

FORM_PAGE = b"""<!doctype html><title>form</title>
<form method="post" action="/submit" id="f">
  <input type="hidden" name="csrf_token" value="t0k3n">
  <input name="who" id="who"><button type="submit" id="go">Send</button>
</form>"""


class _Site(BaseHTTPRequestHandler):
    """A form page, and a handler that says which fields a POST carried."""

    def do_GET(self):
        self._answer(FORM_PAGE)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        fields = parse_qs(self.rfile.read(length).decode())
        self.server.posts.append(fields)
        got = ", ".join(f"{k}={v[0]}" for k, v in sorted(fields.items()))
        self._answer(f"<!doctype html><p id='got'>{got}</p>".encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Site)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_chromium_fills_and_submits_a_form_on_127_0_0_1(browser, site, capsys):
    with capsys.disabled():
        print(f"\nchromium started in {browser.start_seconds:.2f} s")
    assert browser.start_seconds < 30
    assert browser.get_window_size() == {"width": WINDOW[0], "height": WINDOW[1]}
    browser.get(f"http://127.0.0.1:{site.server_port}/")
    wait_for_element(browser, "#who").send_keys("admin")
    browser.find_element("id", "go").click()
    assert wait_for_element(browser, "#got").text == "csrf_token=t0k3n, who=admin"
    assert site.posts == [{"csrf_token": ["t0k3n"], "who": ["admin"]}]


def test_a_form_stripped_of_its_token_posts_without_it(browser, site):
    browser.get(f"http://127.0.0.1:{site.server_port}/")
    assert remove_elements(browser, "#f input[name=csrf_token]") == 1
    wait_for_element(browser, "#who").send_keys("mallory")
    browser.find_element("id", "go").click()
    assert wait_for_element(browser, "#got").text == "who=mallory"


def test_each_test_starts_with_no_cookies(browser, site):
    browser.get(f"http://127.0.0.1:{site.server_port}/")
    browser.add_cookie({"name": "session", "value": "left-behind"})
    browser.execute_cdp_cmd("Network.clearBrowserCookies", {})  # what `browser` does first
    assert browser.get_cookies() == []


@pytest.mark.parametrize("url", ["http://example.com/", "http://192.0.2.1/",
                                 "https://1.1.1.1/"])
def test_nothing_off_this_machine_is_reachable(browser, url):
    from selenium.common.exceptions import WebDriverException

    with pytest.raises(WebDriverException, match="ERR_PROXY_CONNECTION_FAILED"):
        browser.get(url)


# --- the fixture in a pytest run of its own -------------------------------------------------

INNER_CONFTEST = "from tests.web.browser import *  # noqa: F403\n"
INNER_PASSING = '''
import os

def test_passes(chromium):
    chromium.get("data:text/html,<p>fine</p>")
    assert os.geteuid() == int(os.environ["EXPECTED_UID"])
    chromium.get("chrome://sandbox")
    sandboxed = "You are adequately sandboxed" in chromium.page_source
    assert sandboxed == (os.geteuid() != 0), chromium.page_source
'''
INNER_TESTS = INNER_PASSING + '''
def test_fails_on_a_page(chromium):
    chromium.get("data:text/html,<h1 id=marker>the page a failure left</h1>")
    assert chromium.find_element("id", "marker").text == "something else"
'''


def _inner_run(tests: str, env: dict[str, str], user: str | None = None,
               python: str = sys.executable) -> tuple[subprocess.CompletedProcess, Path]:
    """``tests`` run by pytest in a directory of their own, without a terminal; the process
    and where its screenshots go."""
    work = Path(tempfile.mkdtemp(prefix="lmsav-browser-"))
    work.chmod(0o755)
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "conftest.py").write_text(INNER_CONFTEST)
    (work / "test_inner.py").write_text(tests)
    shots = work / "shots"
    shots.mkdir(mode=0o777)
    shots.chmod(0o777)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    path = [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    full_env.update(PYTHONPATH=os.pathsep.join(path), LMSAV_SCREENSHOT_DIR=str(shots),
                    PYTHONDONTWRITEBYTECODE="1")
    full_env.update(env)
    prefix = ["runuser", "-u", user, "--"] if user else []
    proc = subprocess.run(
        [*prefix, python, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA",
         "test_inner.py"],
        check=False, cwd=work, env=full_env, capture_output=True, text=True, timeout=120,
        stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, shots


@pytest.fixture
def inner():
    made = []

    def run(*args, **kw):
        proc, shots = _inner_run(*args, **kw)
        made.append(shots.parent)
        return proc, shots

    yield run
    for work in made:
        shutil.rmtree(work, ignore_errors=True)


def _need_browser():
    missing = browser_missing()
    if missing:
        pytest.skip(f"no browser to drive: {missing}")


def test_a_failing_test_leaves_a_screenshot_and_the_page_source(inner):
    _need_browser()
    proc, shots = inner(INNER_TESTS, {"EXPECTED_UID": str(os.geteuid())})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "1 failed, 1 passed" in out, out
    png = shots / "test_inner.py_test_fails_on_a_page-call.png"
    html = png.with_suffix(".html")
    assert sorted(p.name for p in shots.iterdir()) == [html.name, png.name], out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 1000
    assert "the page a failure left" in html.read_text()
    assert f"screenshot: {png}" in out  # in the failure's report
    assert f"browser screenshot of test_inner.py::test_fails_on_a_page: {png}" in out


@pytest.mark.parametrize("ci", ["", "true"])
def test_a_missing_chromium_skips_but_fails_under_ci(inner, ci):
    proc, shots = inner(INNER_TESTS, {"LMSAV_CHROMIUM": "/nonexistent/chromium", "CI": ci,
                                      "EXPECTED_UID": str(os.geteuid())})
    out = proc.stdout + proc.stderr
    if ci:
        assert proc.returncode == 1, out
        assert "2 errors" in out, out
        assert "CI=true but /nonexistent/chromium is missing (Debian package chromium)" in out
    else:
        assert proc.returncode == 0, out
        assert "2 skipped" in out, out
        assert "no browser to drive: /nonexistent/chromium is missing" in out
    assert list(shots.iterdir()) == []


def test_runs_as_an_ordinary_user_without_a_terminal(inner):
    """Under CI=true, with no controlling terminal, as an account that is not root: chromium
    keeps its sandbox (``--no-sandbox`` is for root alone)."""
    _need_browser()
    env = {"CI": "true", "EXPECTED_UID": str(os.geteuid())}
    user, python = None, sys.executable
    if os.geteuid() == 0:
        user, env["EXPECTED_UID"] = "nobody", "65534"
        home = Path(tempfile.mkdtemp(prefix="lmsav-home-"))
        os.chown(home, 65534, 65534)
        env["HOME"] = str(home)
        probe = subprocess.run(["runuser", "-u", user, "--", python, "-c", "pass"],
                               capture_output=True, check=False)
        if probe.returncode != 0:  # a pyenv Python under /root: the system one, same version
            python = "/usr/bin/python3"
            same = subprocess.run([python, "-c", "import sys; print(sys.version_info[:2])"],
                                  capture_output=True, text=True, check=False).stdout.strip()
            if same != str(tuple(sys.version_info[:2])):
                pytest.skip(f"nobody cannot run {sys.executable}, and {python} is not the "
                            "same Python")
            env["PYTHONPATH"] = f"{REPO}:{sysconfig.get_paths()['purelib']}"
    proc, _ = inner(INNER_PASSING, env, user=user, python=python)
    if user:
        shutil.rmtree(env["HOME"], ignore_errors=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed" in out, out
