"""A real browser for the web console's tests: Debian's headless chromium driven by Selenium.

``chromium`` is one browser for the whole session (starting one costs about half a second);
``browser`` hands it to a test with no cookies left from the one before. The browser reaches
127.0.0.1 and nothing else, and Selenium never looks for a driver on the network: the driver is
/usr/bin/chromedriver, named by path. Without chromium or chromedriver the tests are skipped,
except under CI (CI=true), where they are installed and their absence is a broken setup.

When a test that used the browser fails, ``pytest_runtest_makereport`` saves a screenshot and
the page's source in $LMSAV_SCREENSHOT_DIR (default <repo>/test-artifacts/web/) and names them
in the failure's report. A conftest takes all of this with ``from tests.web.browser import *``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

__all__ = [
    "browser",
    "browser_missing",
    "chromium",
    "pytest_runtest_makereport",
    "remove_elements",
    "save_page",
    "screenshot_dir",
    "start_chromium",
    "wait_for",
    "wait_for_element",
]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LMSAV_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("LMSAV_CHROMEDRIVER", "/usr/bin/chromedriver")
WINDOW = (1280, 1024)
PAGE_LOAD_TIMEOUT = 30

# Names of hosts resolve to nothing and every other address goes to a proxy that is not there
# (the discard port): the browser can reach the console on 127.0.0.1 (loopback never goes
# through a proxy) and nothing else, neither a test's stray link nor chromium's own background
# traffic (updates, safe browsing).
OFFLINE = ["--proxy-server=http://127.0.0.1:9",
           "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]

_DRIVER = pytest.StashKey()


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def browser_missing() -> str | None:
    """Why no browser can be started here (a missing program), or None."""
    for program, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(program, os.X_OK):
            return f"{program} is missing (Debian package {package})"
    return None


def start_chromium(user_data_dir: str | Path, log_file: str | Path | None = None):
    """A headless chromium in a profile of its own, offline but for 127.0.0.1."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    options.add_argument("--headless=new")
    if os.geteuid() == 0:
        # chromium refuses to run as root with its sandbox; an ordinary user keeps it.
        options.add_argument("--no-sandbox")
    for argument in (
        f"--user-data-dir={user_data_dir}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
        "--disable-dev-shm-usage",  # containers give /dev/shm 64 MB
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-extensions",
        "--disable-sync",
        "--password-store=basic",  # no desktop keyring to ask
        "--mute-audio",
        *OFFLINE,
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(log_file) if log_file else None)
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
    return driver


@pytest.fixture(scope="session")
def chromium(request) -> Iterator:
    """The session's headless chromium (a selenium WebDriver); ``start_seconds`` says how long
    it took to start."""
    missing = browser_missing()
    if missing:
        if _ci():
            pytest.fail(f"CI=true but {missing}: install it (scripts/debian-packages.txt)",
                        pytrace=False)
        pytest.skip(f"no browser to drive: {missing}")
    profile = Path(tempfile.mkdtemp(prefix="lmsav-chromium-"))
    log_file = profile.parent / f"{profile.name}.chromedriver.log"
    started = time.monotonic()
    try:
        driver = start_chromium(profile / "profile", log_file)
    except Exception as exc:  # noqa: BLE001 - there but not starting: a broken setup
        log = log_file.read_text(errors="replace")[-3000:] if log_file.exists() else ""
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"chromium did not start: {exc}\n{log}", pytrace=False)
    driver.start_seconds = time.monotonic() - started
    request.config.stash[_DRIVER] = driver
    try:
        yield driver
    finally:
        del request.config.stash[_DRIVER]
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
        log_file.unlink(missing_ok=True)


@pytest.fixture
def browser(chromium):
    """The session's chromium, on a blank page with no cookies: each test logs in afresh."""
    chromium.execute_cdp_cmd("Network.clearBrowserCookies", {})
    chromium.get("about:blank")
    return chromium


def screenshot_dir() -> Path:
    return Path(os.environ.get("LMSAV_SCREENSHOT_DIR") or REPO / "test-artifacts" / "web")


def save_page(driver, name: str) -> tuple[Path, Path]:
    """A PNG of the window and the page's source, as <dir>/<name>.png and .html."""
    folder = screenshot_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:180] or "page"
    png, html = folder / f"{stem}.png", folder / f"{stem}.html"
    if not driver.save_screenshot(str(png)):
        raise OSError(f"chromium wrote no screenshot to {png}")
    html.write_text(driver.page_source, encoding="utf-8")
    return png, html


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    driver = item.config.stash.get(_DRIVER, None)
    if report.failed and driver is not None and "chromium" in item.fixturenames:
        try:
            url = driver.current_url
            png, html = save_page(driver, f"{item.nodeid}-{report.when}")
        except Exception as exc:  # noqa: BLE001 - the failure's report matters more
            report.sections.append(("browser", f"no screenshot: {exc}"))
        else:
            text = f"screenshot: {png}\npage source: {html}\nat: {url}"
            report.sections.append(("browser", text))
            writer = item.config.get_terminal_writer()
            writer.line(f"\nbrowser screenshot of {item.nodeid}: {png}")
    return report


def wait_for(condition: Callable[[], object], timeout: float = 10.0, what: str = "") -> object:
    """Poll ``condition`` until it returns something true; its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(0.05)


def wait_for_element(driver, css: str, timeout: float = 10.0):
    """The first element matching ``css`` once it is on the page."""
    from selenium.webdriver.common.by import By

    return wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, css), timeout,
                    f"an element {css!r} on {driver.current_url}")[0]


def remove_elements(driver, css: str) -> int:
    """Remove every element matching ``css`` from the page (a form's hidden CSRF token, to
    forge a submission); how many were removed."""
    return driver.execute_script(
        "const found = document.querySelectorAll(arguments[0]);"
        "found.forEach(e => e.remove()); return found.length;", css)
