"""`lmsav update` as an administrator runs it: exit codes, one line per error, --json, --status,
--rollback, a progress bar only at a terminal; kill -9 at every step; a disk that fills up; the
running daemon told to reload."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmsav.scanner.signatures.database import Database
from lmsav.update.store import Store

from ..jsonlines import one_object
from ..scanner.signatures.test_cvd import write_cud
from .conftest import copy_genuine, genuine, md5_line

EXTRA_SAMPLE = b"lmsav update extra database sample\n"


class Admin:
    """A configuration of its own and a way to run `lmsav update` with it."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.config = tmp_path / "lmsav.toml"
        self.root = tmp_path / "state" / "bases"
        self.source = tmp_path / "source"
        self.extra = write_cud(tmp_path / "extra.cud",
                               {"extra.hdb": md5_line(EXTRA_SAMPLE, "Lmsav.Extra")}).read_bytes()
        self.configure([str(self.source)])

    def configure(self, sources: list[str], **update) -> None:
        keys = {"databases": ["test", "extra.cud"], "check_interval": 0, "retries": 2,
                "retry_delay": 0.01, "timeout": 5, **update}
        lines = ["[paths]", f'state_dir = "{self.tmp}/state"', f'run_dir = "{self.tmp}/run"',
                 f'database = "{self.root}/current"', "[spool]", f'dir = "{self.tmp}/spool"',
                 "[daemon]", f'socket = "{self.tmp}/run/clamd.sock"', "[update]",
                 f"sources = {json.dumps(sources)}"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in keys.items()]
        self.config.write_text("\n".join(lines) + "\n")

    def publish(self, version: int) -> None:
        copy_genuine(self.source, version)
        (self.source / "extra.cud").write_bytes(self.extra)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "lmsav", "update", *args]

    def env(self) -> dict:
        return dict(os.environ, LMSAV_CONFIG=str(self.config))

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), check=False, env=self.env(),
                              capture_output=True, text=True, timeout=120, **kwargs)

    def active(self) -> int | None:
        current = Store(self.root).current()
        return current.meta["databases"]["test"]["version"] if current else None


@pytest.fixture
def admin(tmp_path) -> Admin:
    return Admin(tmp_path)


def test_update_then_current_then_status(admin):
    admin.publish(3)
    first = admin.run()
    assert first.returncode == 0, first.stderr
    assert first.stdout == (f"updated: test-3_extra-7 (test - -> 3 (full), extra - -> 7 (full)) "
                            f"from {admin.source}\n"
                            "told: daemon: not running; spool watcher: not running\n")
    assert first.stderr == ""
    again = admin.run()
    assert again.returncode == 0
    assert again.stdout == (f"current: test-3_extra-7 (test 3 (unchanged), extra 7 (unchanged)) "
                            f"from {admin.source}\n")
    status = admin.run("--status")
    assert status.returncode == 0, status.stderr
    assert "active:       test-3_extra-7" in status.stdout
    assert "  test: version 3, built 22 Jun 2021 20-40 -0400, 11 signatures, test.cvd" \
        in status.stdout
    assert status.stderr == ""
    admin.configure([str(admin.source)], max_age=60)  # the newest was built hours ago
    stale = admin.run("--status")
    assert stale.returncode == 1
    assert stale.stderr.startswith("lmsav: warning: the newest database was built ")
    stale_json = admin.run("--status", "--json")
    assert stale_json.returncode == 1
    report = one_object(stale_json.stdout)
    assert report["active"] == "test-3_extra-7" and report["ok"] is False
    assert report["too_old"] is True
    # The warning is in the object and, as in the text output, on stderr.
    assert stale_json.stderr == "".join(f"lmsav: warning: {w}\n" for w in report["warnings"])


def test_a_failure_is_one_line_on_stderr_and_exit_1(admin):
    admin.publish(3)
    assert admin.run().returncode == 0
    (admin.source / "test.cvd").write_bytes(genuine("test-4.cvd")[:-10])
    failed = admin.run()
    assert failed.returncode == 1
    assert failed.stderr.splitlines() == [
        (f"lmsav: error: {admin.source}: test.cvd: MD5 of the body does not match the header "
        f"(changed or cut)")]
    assert failed.stdout == "not updated: still using test-3_extra-7\n"
    assert admin.active() == 3


def test_json_output(admin):
    admin.publish(4)
    result = admin.run("--json")
    assert result.returncode == 0
    outcome = one_object(result.stdout)
    assert outcome["result"] == "updated" and outcome["ok"] is True
    assert outcome["active"] == "test-4_extra-7"
    assert outcome["changes"][0] == {"database": "test", "before": None, "after": 4,
                                     "file": "test.cvd", "how": "full"}
    assert outcome["notified"] == {"daemon": "not running", "spool watcher": "not running"}


def test_json_output_of_a_failed_update_is_one_line_and_the_error_is_on_stderr(admin):
    admin.publish(3)
    assert admin.run().returncode == 0
    (admin.source / "test.cvd").write_bytes(genuine("test-4.cvd")[:-10])
    failed = admin.run("--json")
    assert failed.returncode == 1
    outcome = one_object(failed.stdout)
    assert outcome["ok"] is False and outcome["active"] == "test-3_extra-7"
    assert len(outcome["errors"]) == 1 and "MD5 of the body does not match" in outcome["errors"][0]
    assert failed.stderr == f"lmsav: error: {outcome['errors'][0]}\n"


def test_source_and_database_options_replace_the_configuration_for_one_run(admin, tmp_path):
    elsewhere = copy_genuine(tmp_path / "elsewhere", 5)
    (elsewhere / "extra.cud").write_bytes(admin.extra)
    other = tmp_path / "other-bases"
    result = admin.run("--source", str(elsewhere), "--database", str(other))
    assert result.returncode == 0, result.stderr
    assert Store(other).current_label() == "test-5_extra-7"
    assert not admin.root.exists()
    assert f"[paths] database is {admin.root}/current: set it to {other}/current" in result.stderr


def test_rollback_from_the_command_line(admin):
    for version in (3, 4):
        admin.publish(version)
        assert admin.run().returncode == 0
    result = admin.run("--rollback")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == \
        "rolled back: test-3_extra-7 is active (was test-4_extra-7)"
    assert admin.active() == 3
    assert admin.run("--rollback", "test-4_extra-7").returncode == 0
    assert admin.active() == 4
    unknown = admin.run("--rollback", "test-9_extra-7")
    assert unknown.returncode == 2
    assert unknown.stderr == (f"lmsav: error: no version test-9_extra-7 in {admin.root} "
                              f"(kept: test-3_extra-7, test-4_extra-7)\n")


@pytest.mark.parametrize("args, message", [
    (["--status", "--rollback"], "--status and --rollback cannot be combined"),
    (["--status", "--source", "/tmp"], "--source and --allow-downgrade apply to an update"),
    (["--source", "ftp://mirror.example"], ("command line: --source/update.sources = "
                                           '["ftp://mirror.example"]: expected a list of sources')),
])
def test_usage_errors_exit_2_with_one_line(admin, args, message):
    result = admin.run(*args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_a_mirror_url_on_the_command_line(admin, mirror):
    mirror.files["extra.cud"] = admin.extra
    mirror.publish_genuine(3, signs=False)
    result = admin.run("--source", mirror.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar: standard error is not a terminal
    assert admin.active() == 3
    mirror.publish_genuine(5, signs=False)
    result = admin.run("--source", mirror.url)
    assert result.returncode == 0
    assert "test 3 -> 5 (cdiff)" in result.stdout


def test_a_progress_bar_at_a_terminal_only(admin, mirror):
    import fcntl
    import pty
    import struct
    import termios

    mirror.files["extra.cud"] = admin.extra
    mirror.publish_genuine(6, signs=False, cdiffs=False)
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = subprocess.Popen(admin.command("--source", mirror.url), env=admin.env(),
                                   stdout=subprocess.PIPE, stderr=terminal, text=True)
        os.close(terminal)
        out, _ = process.communicate(timeout=60)
        shown = b""
        while True:
            try:
                piece = os.read(controller, 65536)
            except OSError:
                break
            if not piece:
                break
            shown += piece
    finally:
        os.close(controller)
    assert process.returncode == 0 and out.startswith("updated:")
    assert b"test.cvd:" in shown and b"9.72k" in shown  # name and size of the download
    assert shown.endswith(b"\r")  # and the bar is cleared once done


def test_the_man_page_documents_every_option_and_exit_status():
    from lmsav.update.commands import update

    page = (Path(__file__).resolve().parents[2] / "man" / "lmsav-update.1").read_text()
    text = page.replace("\\-", "-")
    for param in update.params:
        for option in param.opts:
            assert option in text, option
    for status in ("0", "1", "2"):
        assert f".TP\n{status}\n" in page.split(".SH EXIT STATUS", 1)[1]


# -- kill -9 at every step ---------------------------------------------------------------------

def phases(root: Path) -> dict[str, callable]:
    """Markers of each step of an update in progress, as the file system shows them."""
    def staged(*parts):
        return lambda: any(p.joinpath(*parts).exists() for p in root.glob(".staging-*"))

    return {
        "start": lambda: True,
        "downloading diffs": staged("downloads", "test-5.cdiff"),
        "patched": staged("db", "test.cld"),
        "compiled": staged("db", ".compiled.lmsavc"),
        "self-tested": staged("db", ".lmsav-update.json"),
        "installed": lambda: (root / "test-6_extra-7").is_dir(),
    }


@pytest.mark.integration
def test_kill_9_at_any_step_leaves_the_active_database_intact(admin, mirror):
    mirror.files["extra.cud"] = admin.extra
    mirror.publish_genuine(3, signs=False)
    admin.configure([mirror.url])
    assert admin.run().returncode == 0
    template = admin.tmp / "template"
    shutil.copytree(admin.root, template, symlinks=True)
    mirror.publish_genuine(6, signs=False)
    for cdiff in ("test-4.cdiff", "test-5.cdiff", "test-6.cdiff"):
        mirror.faults[cdiff] = "pause:0.15"  # room to land in the download step
    landed = {}
    for phase, reached in phases(admin.root).items():
        shutil.rmtree(admin.root)
        shutil.copytree(template, admin.root, symlinks=True)
        process = subprocess.Popen(admin.command(), env=admin.env(), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not reached() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        killed_while_running = process.poll() is None and reached()
        process.send_signal(signal.SIGKILL)
        process.wait()
        landed[phase] = killed_while_running
        # The active database is whole: the old version, or the new one if the kill came late.
        assert admin.active() in (3, 6), phase
        db = Database.load(admin.root / "current")
        assert db.version in ("extra 7, test 3", "extra 7, test 6"), phase
        assert db.loaded_from_cache, phase  # compiled before it went live
        # The next run finishes cleanly.
        time.sleep(0.3)  # a compiling child may outlive its killed parent for a moment
        result = admin.run()
        assert result.returncode == 0, (phase, result.stderr)
        assert admin.active() == 6, phase
        assert not list(admin.root.glob(".staging-*")), phase
        assert not list(admin.root.glob(".current-*")), phase
    # Every step up to the compiled database was interrupted in the act; the last windows
    # (writing the description, the rename into place, the switch of the link) last
    # milliseconds: a kill lands there only sometimes, and the checks above hold either way.
    assert all(landed[p] for p in ("start", "downloading diffs", "patched", "compiled")), landed


# -- a disk that fills up ----------------------------------------------------------------------

def _can_mount() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "true"], check=False, capture_output=True)
    return probe.returncode == 0


@pytest.mark.integration
@pytest.mark.skipif(not _can_mount(), reason="needs root and mount namespaces for a tiny tmpfs")
def test_a_full_disk_while_staging_keeps_the_active_database(admin, mirror):
    admin.publish(3)
    mirror.files["extra.cud"] = admin.extra
    mirror.publish_genuine(6, signs=False, cdiffs=False)
    update = " ".join(admin.command())
    # A 512 KiB tmpfs as the bases directory, in a mount namespace of its own: version 3 fits;
    # then a filler leaves 16 KiB, less than the next version needs.
    script = f"""
set -e
mkdir -p {admin.root}
mount -t tmpfs -o size=512k lmsav-full {admin.root}
{update} --source {admin.source} >/dev/null
free=$(df -k --output=avail {admin.root} | tail -1)
dd if=/dev/zero of={admin.root}/.filler bs=1k count=$((free - 16)) 2>/dev/null
set +e
{update} --source {mirror.url}
echo "exit=$?"
readlink {admin.root}/current
ls -a {admin.root}
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          check=False, env=admin.env(), capture_output=True, text=True,
                          timeout=120)
    lines = done.stdout.splitlines()
    assert "exit=1" in lines, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("lmsav: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], done.stderr
    assert lines[lines.index("exit=1") + 1] == "test-3_extra-7"
    assert "not updated: still using test-3_extra-7" in lines
    assert not any(line.startswith(".staging-") for line in lines)
