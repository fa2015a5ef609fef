"""The daemon keeps answering while `lmsav update` switches its database: a clamd client (pyclamd,
independent of lmsav) scans without pause across an update, a rollback and a second update; no
request is refused or fails, and every reply is the verdict of the version active at that moment
(either version only while a switch is under way)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyclamd
import pytest

from lmsav.daemon.client import Client, ClientError

from .test_commands import EXTRA_SAMPLE, Admin

pytestmark = pytest.mark.integration

OLD, NEW = "extra 7, test 2", "extra 7, test 3"  # test-3.cvd adds the EICAR signature
EICAR_NAME = "Eicar-Test-Signature"


@dataclass
class Reply:
    started: float
    ended: float
    request: str  # e.g. "INSTREAM eicar"
    verdict: str  # "OK", "FOUND <name>", or what went wrong


@dataclass
class Switch:
    """One `lmsav update` run: from its start until the daemon reports the expected version."""
    command: str
    began: float
    settled: float
    before: str
    after: str


class Scanner(threading.Thread):
    """Scans the samples one request after another, INSTREAM and SCAN, until stopped."""

    def __init__(self, socket_path: Path, samples: dict[str, Path]):
        super().__init__(name="scanner", daemon=True)
        self.socket_path = str(socket_path)
        self.samples = samples
        self.replies: list[Reply] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, path in self.samples.items():
                self.replies.append(self._ask(f"INSTREAM {name}",
                                              lambda c, p=path: c.scan_stream(p.read_bytes())))
                self.replies.append(self._ask(f"SCAN {name}",
                                              lambda c, p=path: c.scan_file(str(p))))

    def _ask(self, request: str, call) -> Reply:
        started = time.monotonic()
        try:
            answer = call(pyclamd.ClamdUnixSocket(self.socket_path, timeout=30))
        # pyclamd's ConnectionError is an OSError (refused, reset, timed out), BufferTooLongError
        # a ValueError: each is a failure to report, not to stop on.
        except (OSError, ValueError) as err:
            verdict = f"{type(err).__name__}: {err}"
        else:
            verdict = _verdict(answer)
        return Reply(started, time.monotonic(), request, verdict)


def _verdict(answer: dict | None) -> str:
    if answer is None:
        return "OK"
    if len(answer) != 1:
        return f"several replies: {answer}"
    ((status, name),) = answer.values()
    return f"{status} {name}" if status == "FOUND" else f"{status}: {name}"


def expected(version: str, request: str) -> str:
    sample = request.split()[1]
    if sample == "extra":
        return "FOUND Lmsav.Extra.UNOFFICIAL"  # extra.cud is not ClamAV's: unofficial naming
    if sample == "eicar" and version == NEW:
        return f"FOUND {EICAR_NAME}"
    return "OK"


@pytest.fixture
def live(tmp_path):
    """A managed database at test 2, a real `lmsav daemon` on it (two workers), the samples."""
    admin = Admin(tmp_path)
    admin.publish(2)
    first = admin.run()
    assert first.returncode == 0, first.stderr
    samples = tmp_path / "samples"
    samples.mkdir()
    (samples / "clean").write_bytes(b"an ordinary line of mail text\n" * 200)
    (samples / "eicar").write_bytes(
        b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")
    (samples / "extra").write_bytes(EXTRA_SAMPLE)
    socket_path = tmp_path / "run" / "clamd.sock"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "w") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "lmsav", "daemon", "--socket", str(socket_path), "--workers",
             "2"], env=admin.env(), stdout=log, stderr=subprocess.STDOUT)
    client = Client(socket_path, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while not _answers(client):
            assert daemon.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        yield admin, client, socket_path, {p.name: p for p in sorted(samples.iterdir())}, log_path
    finally:
        daemon.terminate()
        daemon.wait(30)


def _answers(client: Client) -> bool:
    try:
        return client.ping()
    except ClientError:
        return False


def switch(admin: Admin, client: Client, args: tuple[str, ...], before: str, after: str,
           log_path: Path) -> Switch:
    """Run `lmsav update ARGS` and wait until the daemon reports ``after`` as its version."""
    began = time.monotonic()
    result = admin.run(*args)
    assert result.returncode == 0, result.stderr
    assert "daemon: reload requested" in result.stdout, result.stdout
    deadline = time.monotonic() + 60
    while client.status()["database"]["version"] != after:
        assert time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.02)
    return Switch(" ".join(["lmsav update", *args]), began, time.monotonic(), before, after)


def test_scans_never_fail_across_update_rollback_and_update(live):
    admin, client, socket_path, samples, log_path = live
    assert client.status()["database"]["version"] == OLD
    scanner = Scanner(socket_path, samples)
    scanner.start()
    try:
        time.sleep(1)  # steady-state replies before the first switch
        admin.publish(3)
        switches = [switch(admin, client, (), OLD, NEW, log_path)]
        time.sleep(1)
        switches.append(switch(admin, client, ("--rollback",), NEW, OLD, log_path))
        time.sleep(1)
        switches.append(switch(admin, client, (), OLD, NEW, log_path))
        time.sleep(1)
    finally:
        scanner.stop.set()
        scanner.join(60)
    replies = scanner.replies
    assert not scanner.is_alive()

    failures = [r for r in replies if not r.verdict.startswith(("OK", "FOUND "))]
    assert failures == [], failures[:5]
    for reply in replies:
        allowed = _allowed(reply, switches)
        assert reply.verdict in allowed, (reply, allowed)
    # Within a switch the verdicts change once, never back: the client's requests run one after
    # another, and once a reply came from the new database every later one does too.
    for sw in switches:
        during = [r for r in replies if r.request.startswith(("INSTREAM eicar", "SCAN eicar"))
                  and sw.began <= r.started and r.ended <= sw.settled]
        verdicts = [r.verdict == expected(sw.after, r.request) for r in during]
        assert verdicts == sorted(verdicts), (sw.command, [r.verdict for r in during])
    # The new signature is live after each update and gone after the rollback.
    for sw, status in zip(switches, ("FOUND", "OK", "FOUND"), strict=True):
        after = [r for r in replies if r.started > sw.settled and r.request == "INSTREAM eicar"]
        assert after and after[0].verdict.split()[0] == status, (sw.command, after[:1])
    status = client.status()
    assert status["reloads"] == 3 and status["last_reload"]["result"] == "ok", status
    assert status["errors"] == 0 and status["refused"] == 0, status
    assert status["database"]["directory"] == str(admin.root / "current")
    assert Path(status["database"]["loaded_from"]) == (admin.root / "current").resolve()
    assert "reload refused" not in log_path.read_text()
    _print_latency(replies, switches)


def _allowed(reply: Reply, switches: list[Switch]) -> set[str]:
    """The verdicts right for a reply: the active version's, or either while a switch overlaps."""
    for sw in switches:
        if reply.ended >= sw.began and reply.started <= sw.settled:
            return {expected(sw.before, reply.request), expected(sw.after, reply.request)}
    settled = [sw for sw in switches if sw.settled < reply.started]
    version = settled[-1].after if settled else switches[0].before
    return {expected(version, reply.request)}


def _print_latency(replies: list[Reply], switches: list[Switch]) -> None:
    """Reported, not asserted: timings belong to bench/, not to the test suite."""
    def within(reply: Reply) -> bool:
        return any(reply.ended >= sw.began and reply.started <= sw.settled for sw in switches)

    steady = sorted(r.ended - r.started for r in replies if not within(r))
    during = sorted(r.ended - r.started for r in replies if within(r))
    print(f"\n{len(replies)} replies; steady: median {1000 * steady[len(steady) // 2]:.1f} ms, "
          f"99% {1000 * steady[len(steady) * 99 // 100]:.1f} ms, worst {1000 * steady[-1]:.1f} ms; "
          f"during the switches ({len(during)} replies): median "
          f"{1000 * during[len(during) // 2]:.1f} ms, 99% {1000 * during[len(during) * 99 // 100]:.1f}"
          f" ms, worst {1000 * during[-1]:.1f} ms")
    for sw in switches:
        mine = [r.ended - r.started for r in replies
                if r.ended >= sw.began and r.started <= sw.settled]
        print(f"  {sw.command}: {sw.settled - sw.began:.2f} s until active, {len(mine)} replies, "
              f"worst {1000 * max(mine):.1f} ms")


def test_reloads_while_current_switches_back_and_forth_all_succeed(live):
    """Each reload reads `current` once: a link switching during the load never mixes two
    versions nor fails the reload."""
    admin, client, socket_path, samples, log_path = live
    admin.publish(3)
    assert admin.run().returncode == 0
    versions = {OLD: "test-2_extra-7", NEW: "test-3_extra-7"}
    assert all((admin.root / label).is_dir() for label in versions.values())
    stop = threading.Event()
    flipper = threading.Thread(target=_flip, args=(admin.root, list(versions.values()), stop),
                               daemon=True)
    flipper.start()
    try:
        for _ in range(40):
            before = client.status()["reloads"]
            assert client.reload()
            deadline = time.monotonic() + 60
            while (status := client.status())["reloading"] or status["reloads"] == before:
                assert time.monotonic() < deadline and status["last_reload"].get("result") != \
                    "refused", (status, log_path.read_text())
                time.sleep(0.005)
            assert status["last_reload"]["result"] == "ok", status
            # What was loaded is one whole version: its name and its verdict on EICAR agree.
            version = status["database"]["version"]
            loaded = Path(status["database"]["loaded_from"]).name
            assert loaded == versions[version], status
            verdict = _verdict(pyclamd.ClamdUnixSocket(str(socket_path), timeout=30)
                               .scan_stream(samples["eicar"].read_bytes()))
            assert verdict == expected(version, "INSTREAM eicar"), (version, verdict)
    finally:
        stop.set()
        flipper.join(10)
    assert "reload refused" not in log_path.read_text()


def test_the_spool_watchers_reload_reads_current_once(tmp_path):
    """The spool watcher's reload (SIGHUP) loads the same way: one whole version each time while
    `current` switches under it."""
    from lmsav.config import load_settings
    from lmsav.spool.watcher import Watcher

    admin = Admin(tmp_path)
    for version in (2, 3):
        admin.publish(version)
        assert admin.run().returncode == 0
    labels = {OLD: "test-2_extra-7", NEW: "test-3_extra-7"}
    settings = load_settings(admin.config)
    watcher = Watcher(settings, admin.config, workers=1)
    stop = threading.Event()
    flipper = threading.Thread(target=_flip, args=(admin.root, list(labels.values()), stop),
                               daemon=True)
    flipper.start()
    try:
        for _ in range(20):
            loaded = watcher._load(settings)
            assert loaded.database.directory.name == labels[loaded.database.version]
    finally:
        stop.set()
        flipper.join(10)


def _flip(root: Path, labels: list[str], stop: threading.Event) -> None:
    """Switch `current` between two kept versions as fast as an update could, until stopped."""
    while not stop.is_set():
        labels.reverse()
        link = root / ".current-flip"
        os.symlink(labels[0], link)
        os.replace(link, root / "current")
        time.sleep(0.0005)
