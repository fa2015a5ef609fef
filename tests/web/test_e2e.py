"""The console in a real browser, as an administrator meets it: `lmsav web` started as an ordinary
user with the personal layout, accounts made with `lmsav web user add`, mail sent through the
real spool (`lmsav enqueue`, `lmsav spool watch` reinjecting to an SMTP server), a file put in
quarantine by `lmsav scan`; then headless chromium logs in, reads the dashboard, restores the
file, edits a group, and meets the refusals a viewer and a forged form meet.

As root the user is an account added with useradd in a private view of /etc and /var/lib
(tests/sysroot.py); as an ordinary user, the tests' own account with a HOME of their own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import EICAR
from tests.spool.test_reinject import Server as SmtpServer
from tests.spool.test_watcher import make_message
from tests.sysroot import SystemRoot
from tests.web.browser import remove_elements, wait_for, wait_for_element

pytestmark = pytest.mark.integration

USER = "mailadm"  # the account that runs lmsav (as root)
ADMIN = ("ann", "ann-password-1")
VIEWER = ("vic", "vic-password-1")
SALES_GROUP = 'priority = 10\nrecipients = ["*@sales.example"]\n'


class Host:
    """Where lmsav runs: ``run`` and ``start`` its commands as the user, ``path`` maps one of
    the user's paths to where this process reads it."""

    def __init__(self, home: str, lmsav: list[str], root: SystemRoot | None):
        self.home, self.lmsav, self.root = home, lmsav, root
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("LMSAV_", "XDG_", "HOME"))}
        self.env.update(HOME=home, NO_COLOR="1")
        self.env["PATH"] = self.env.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"

    def argv(self, *args: str) -> list[str]:
        command = [*self.lmsav, *args]
        return self.root.command(*command, user=USER) if self.root else command

    def run(self, *args: str, input: bytes | str | None = None, check: bool = True):
        proc = subprocess.run(self.argv(*args), env=self.env, input=input,
                              capture_output=True, timeout=60, check=False,
                              text=not isinstance(input, bytes))
        if check and proc.returncode != 0:
            raise AssertionError(f"lmsav {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}{proc.stderr}")
        return proc

    def start(self, log: Path, *args: str) -> subprocess.Popen:
        with open(log, "ab") as out:
            return subprocess.Popen(self.argv(*args), env=self.env, stdout=out, stderr=out,
                                    stdin=subprocess.DEVNULL, start_new_session=True)

    def path(self, path: str | Path) -> Path:
        return self.root.path(path) if self.root else Path(path)

    @property
    def config_file(self) -> str:
        return f"{self.home}/.config/lmsav/lmsav.toml"

    @property
    def state_dir(self) -> str:
        return f"{self.home}/.local/state/lmsav"


@dataclass
class Console:
    host: Host
    url: str
    smtp: SmtpServer
    quarantined: str  # the path `lmsav scan` moved into quarantine
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_host(tmp: Path) -> tuple[Host, SystemRoot | None]:
    if os.geteuid() == 0:
        root = SystemRoot()
        root.start()
        try:
            # The home is on the host's file system, not in the overlays of /var/lib: the
            # console finds the running spool watcher through /proc/locks, which names a file
            # on overlayfs by its upper layer's device.
            homes = Path(tempfile.mkdtemp(prefix="lmsav-homes-"))
            homes.chmod(0o755)
            home = str(homes / USER)
            root.run("useradd", "--create-home", "--home-dir", home, "--shell", "/bin/sh", USER)
            return Host(home, [root.program("lmsav")], root), root
        except BaseException:
            root.stop()
            raise
    from lmsav import paths

    if paths.layout() != paths.PERSONAL:
        pytest.skip("this account gets the system layout: the console's test needs the "
                    "personal one (run the tests as root, or as an ordinary user)")
    home = tmp / "home"
    home.mkdir()
    return Host(str(home), [sys.executable, "-m", "lmsav"], None), None


def _write(host: Host, path: str, text: str | bytes) -> None:
    """A file of the user's, as the user would write it."""
    data = text.encode() if isinstance(text, str) else text
    target = host.path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    if host.root:
        uid, gid = host.root.uid_of(USER), host.root.gid_of(USER)
        for part in [target, *target.parents]:
            if part == host.path(host.home):
                break
            os.chown(part, uid, gid)


@pytest.fixture(scope="module")
def console(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    host, root = _make_host(tmp)
    smtp = SmtpServer()
    smtp.start()
    processes: list[subprocess.Popen] = []
    log = tmp / "services.log"
    try:
        port = _free_port()
        _write(host, host.config_file,
               f'[spool]\nreinject = "smtp:127.0.0.1:{smtp.port}"\nworkers = 1\n'
               f'rescan_interval = 0.5\n\n[web]\nlisten = "127.0.0.1:{port}"\n')
        _write(host, str(Path(host.config_file).parent / "groups.d" / "sales.toml"),
               SALES_GROUP)
        for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
            added = host.run("web", "user", "add", name, "--role", role, "--password-stdin",
                             input=password + "\n")
            assert added.stdout.strip() == f"account {name} added ({role})"

        # Mail through the spool, as an MTA's pipe hands it over.
        spool = f"{host.state_dir}/nqueue"
        messages = [(make_message(1), "bob@example.net"),
                    (make_message(2), "carol@sales.example"),
                    (make_message(3, ("invoice.com", EICAR)), "bob@example.net")]
        for raw, rcpt in messages:
            host.run("enqueue", "--spool", spool, "-f", "alice@example.org", rcpt, input=raw)
        processes.append(host.start(log, "spool", "watch"))
        wait_for(lambda: len(smtp.handler.received) >= 3, 30, "three deliveries")
        totals = wait_for(lambda: _totals(host, messages=3), 30,
                          "three messages in the statistics store")
        assert (totals["messages"], totals["infected"]) == (3, 1), totals

        # A file `lmsav scan` puts in quarantine.
        quarantined = f"{host.home}/downloads/invoice.exe"
        _write(host, quarantined, EICAR)
        scanned = host.run("scan", "--infected-action", "quarantine", quarantined,
                           check=False)
        assert scanned.returncode == 1 and "moved to quarantine" in scanned.stdout, scanned
        assert not host.path(quarantined).exists()

        processes.append(host.start(log, "web"))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _listening(port) or processes[-1].poll() is not None, 30,
                 f"lmsav web on {url}")
        assert processes[-1].poll() is None, log.read_text()
        yield Console(host, url, smtp, quarantined, log)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        smtp.stop()
        if root:
            root.stop()


def _totals(host: Host, messages: int) -> dict | None:
    """`lmsav stats`' totals once they count ``messages``."""
    totals = json.loads(host.run("stats", "--json").stdout)["totals"]
    return totals if totals["messages"] == messages else None


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def log_in(browser, console: Console, name: str, password: str, path: str = "/") -> None:
    browser.get(console.url + path)
    wait_for_element(browser, "#username").send_keys(name)
    browser.find_element("id", "password").send_keys(password)
    browser.find_element("id", "login").click()
    role = "admin" if name == ADMIN[0] else "viewer"
    assert wait_for_element(browser, "#who").text == f"{name} ({role})"


def which(console: Console, rcpt: str) -> str:
    return console.host.run("groups", "which", "-f", "alice@example.org", "-r", rcpt).stdout


def error_page(browser) -> tuple[str, str]:
    """The code and message of the console's error page."""
    message = wait_for_element(browser, "#error-message").text
    return browser.find_element("tag name", "h1").text, message


def _audit(console: Console) -> list[dict]:
    path = console.host.path(f"{console.host.state_dir}/web/audit.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- the tests -----------------------------------------------------------------------------------

def test_log_in_and_the_dashboard_counts_the_mail_sent_through_the_spool(browser, console):
    browser.get(console.url + "/")
    assert browser.current_url.startswith(console.url + "/login")
    wait_for_element(browser, "#username").send_keys(ADMIN[0])
    browser.find_element("id", "password").send_keys("not-the-password")
    browser.find_element("id", "login").click()
    assert wait_for_element(browser, ".flash.error").text == "Wrong name or password."
    log_in(browser, console, *ADMIN)
    assert browser.current_url == console.url + "/"
    for period in ("hour", "day"):
        counted = {cell.get_attribute("data-counter"): cell.text for cell in
                   browser.find_elements("css selector", f"#counters-{period} td[data-counter]")}
        assert (counted["messages"], counted["infected"], counted["errors"]) == ("3", "1", "0")
    # The chart's bars say their values in their tooltips: "<hour> Messages: 3".
    tooltips = browser.execute_script(
        "return [...document.querySelectorAll('#chart-hourly rect > title')]"
        ".map(t => t.textContent)")
    per_series = {}
    for tip in tooltips:
        name, _, value = tip.rpartition(": ")
        per_series[name.split()[-1]] = per_series.get(name.split()[-1], 0) + float(value)
    assert (per_series.get("Messages"), per_series.get("Threats")) == (3, 1), tooltips
    assert "running" in browser.find_element("id", "component-watcher").text


def test_restore_a_quarantined_file_and_find_it_back_on_disk(browser, console):
    log_in(browser, console, *ADMIN, path="/stores/?kind=quarantine")

    def listed():  # the console indexes the stores as it reads them: look again until it has
        rows = [r for r in browser.find_elements("css selector", "tr[id^='entry-quarantine-']")
                if console.quarantined in r.text]
        if not rows:
            browser.refresh()
        return rows

    row = wait_for(listed, 15, f"{console.quarantined} in the quarantine list")[0]
    entry_id = row.get_attribute("id").removeprefix("entry-quarantine-")
    assert "Eicar-Test-Signature" in row.text
    row.find_element("css selector", "a").click()
    assert wait_for_element(browser, "#original-path").text == console.quarantined
    browser.find_element("id", "restore").click()
    assert wait_for_element(browser, ".flash.ok").text == (
        f"restored {entry_id} to {console.quarantined}; the entry is removed")
    restored = console.host.path(console.quarantined)
    assert restored.read_bytes() == EICAR
    assert restored.stat().st_uid == console.host.path(console.host.home).stat().st_uid
    assert entry_id not in console.host.run("quarantine", "list").stdout
    assert browser.find_elements("id", f"entry-quarantine-{entry_id}") == []


def test_edit_a_group_and_lmsav_groups_which_follows_it(browser, console):
    assert which(console, "dan@partner.example") == "dan@partner.example: default\n"
    log_in(browser, console, *ADMIN, path="/groups/")
    wait_for_element(browser, "#group-sales a").click()
    recipients = wait_for_element(browser, "textarea#recipients")
    assert recipients.get_attribute("value") == "*@sales.example"
    recipients.send_keys("\n*@partner.example")
    browser.find_element("id", "save").click()
    flashed = wait_for_element(browser, ".flash.ok").text
    assert flashed.startswith(f"wrote {Path(console.host.config_file).parent}/groups.d/"
                              "sales.toml (")
    assert "recipients" in flashed and "spool watcher sent SIGHUP" in flashed, flashed
    assert which(console, "dan@partner.example") == "dan@partner.example: sales\n"
    assert which(console, "carol@sales.example") == "carol@sales.example: sales\n"
    # The running watcher was told too: the next message to the new address gets the group.
    wait_for(lambda: "reloaded: " in console.log.read_text(), 10, "the watcher's reload")
    console.host.run("enqueue", "--spool", f"{console.host.state_dir}/nqueue",
                     "-f", "alice@example.org", "dan@partner.example", input=make_message(4))
    wait_for(lambda: "to=<dan@partner.example> group=sales status=clean"
             in console.log.read_text(), 10, "dan's message scanned in the group sales")
    saved = [r for r in _audit(console) if r.get("action") == "groups.save"]
    assert saved and saved[-1]["user"] == ADMIN[0] and saved[-1]["target"] == "sales", saved


def test_a_viewer_has_no_edit_controls_and_a_forged_post_is_refused(browser, console):
    before = console.host.path(f"{Path(console.host.config_file).parent}/groups.d/sales.toml")
    text = before.read_text()
    log_in(browser, console, *VIEWER, path="/groups/")
    wait_for_element(browser, "#groups")
    assert browser.find_elements("id", "new-group") == []
    browser.get(console.url + "/groups/sales")
    wait_for_element(browser, "#group-values")
    assert browser.find_elements("css selector", "main form, #save, textarea, select") == []
    # The viewer's own valid token, on a form the page never offered.
    browser.execute_script("""
        const form = document.createElement("form");
        form.method = "post"; form.action = "/groups/sales";
        for (const [name, value] of [
                ["csrf_token", document.querySelector("form.logout [name=csrf_token]").value],
                ["recipients", "*@viewer.example"]]) {
            const input = document.createElement("input");
            input.type = "hidden"; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();""")
    assert error_page(browser) == ("403", "Your role does not allow this: ask an admin.")
    assert before.read_text() == text
    assert which(console, "eve@viewer.example") == "eve@viewer.example: default\n"
    refused = [r for r in _audit(console) if r["action"] == "groups.save"
               and r["outcome"] == "refused" and r["user"] == VIEWER[0]]
    assert refused and refused[-1]["detail"]["reason"] == "not an admin", _audit(console)


def test_a_form_without_its_csrf_token_is_refused(browser, console):
    path = console.host.path(f"{Path(console.host.config_file).parent}/groups.d/sales.toml")
    text = path.read_text()
    log_in(browser, console, *ADMIN, path="/groups/sales")
    wait_for_element(browser, "textarea#recipients").send_keys("\n*@forged.example")
    assert remove_elements(browser, "#group-form input[name=csrf_token]") == 1
    browser.find_element("id", "save").click()
    code, message = error_page(browser)
    assert code == "400" and "security token is missing" in message, message
    assert path.read_text() == text
    assert which(console, "fay@forged.example") == "fay@forged.example: default\n"
    last = _audit(console)[-1]
    assert (last["action"], last["outcome"]) == ("groups.save", "refused"), last
    assert last["detail"]["reason"].startswith("CSRF: "), last
