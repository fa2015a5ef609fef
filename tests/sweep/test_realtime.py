"""`lmsav scan --watch`: files are scanned once when finished, under real inotify."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import threading
import time

import pytest
from watchdog.observers import inotify_c

from lmsav.sweep.realtime import FileWatcher, WatchError, WatchLimitError

# watchdog warns when `mkdir -p` makes it add a watch twice; the module silences it outside pytest.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")

DEADLINE = 3.0  # seconds to wait for something that should happen (normally ~settle)


class Running:
    """A FileWatcher on its own thread, recording the paths handed to on_file."""

    def __init__(self, roots, on_file_hook=None, **options):
        self.calls: list[str] = []
        self.hook = on_file_hook
        self.error: BaseException | None = None
        self.stop_event = threading.Event()
        self.ready = threading.Event()
        self._cond = threading.Condition()
        self.watcher = FileWatcher([str(r) for r in roots], self._on_file, **options)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _on_file(self, path: str) -> None:
        with self._cond:
            self.calls.append(path)
            self._cond.notify_all()
        if self.hook is not None:
            self.hook(path)

    def _run(self) -> None:
        try:
            self.watcher.run(self.stop_event, self.ready.set)
        except BaseException as err:  # noqa: BLE001 - reported by the test
            self.error = err
        finally:
            with self._cond:
                self._cond.notify_all()

    def start(self) -> Running:
        self.thread.start()
        assert self.ready.wait(DEADLINE) or self.error, "watcher never became ready"
        if self.error:
            raise self.error
        return self

    def count(self, path) -> int:
        with self._cond:
            return self.calls.count(str(path))

    def wait_for(self, path, times: int = 1, timeout: float = DEADLINE) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: self.calls.count(str(path)) >= times or self.error, timeout
            ) and not self.error

    def barrier(self, directory) -> None:
        """Write a fresh file and wait for it: whatever was queued before it is done by then."""
        marker = directory / f"barrier-{time.monotonic_ns()}"
        marker.write_text("b")
        assert self.wait_for(marker), f"barrier {marker} not reported; calls: {self.calls}"

    def stop(self, timeout: float = DEADLINE) -> float:
        started = time.monotonic()
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "watcher did not stop"
        return time.monotonic() - started


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "upload"
    path.mkdir()
    return path


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "outside"
    path.mkdir()
    return path


@pytest.fixture
def watch(root):
    started: list[Running] = []

    def start(roots=(root,), **options) -> Running:
        running = Running(roots, **options)
        started.append(running)
        return running.start()

    yield start
    for running in started:
        if running.thread.is_alive():
            running.stop()
        assert running.error is None or isinstance(running.error, WatchError)


# -- finished files -------------------------------------------------------------------------------

def test_file_written_and_closed_is_reported_once(watch, root):
    w = watch()
    (root / "a.txt").write_text("hello")
    assert w.wait_for(root / "a.txt")
    w.barrier(root)
    assert w.count(root / "a.txt") == 1


def test_burst_of_close_writes_is_scanned_once(watch, root):
    w = watch()
    target = root / "burst.bin"
    for i in range(50):
        with open(target, "ab") as f:
            f.write(b"%d\n" % i)
    assert w.wait_for(target)
    w.barrier(root)
    assert w.count(target) == 1


def test_file_kept_open_is_scanned_only_after_its_writer_closes_it(watch, root):
    w = watch()
    target = root / "slow-upload"
    with open(target, "wb") as f:
        f.write(b"first half")
        f.flush()
        w.barrier(root)  # queued later than the open file, so due later
        assert w.count(target) == 0
        f.write(b"second half")
    assert w.wait_for(target)
    w.barrier(root)
    assert w.count(target) == 1


def test_file_in_new_subdirectory_is_reported(watch, root):
    w = watch()
    (root / "new").mkdir()
    (root / "new" / "f.txt").write_text("written at once")
    assert w.wait_for(root / "new" / "f.txt", timeout=2.0)


def test_file_in_new_nested_subdirectories_is_reported(watch, root):
    w = watch()
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "f.txt").write_text("deep")
    assert w.wait_for(deep / "f.txt", timeout=2.0)
    later = deep / "later.txt"
    later.write_text("the new directories are watched too")
    assert w.wait_for(later, timeout=2.0)


def test_file_moved_in_from_outside_is_reported(watch, root, outside):
    w = watch()
    (outside / "upload.part").write_text("data")
    os.rename(outside / "upload.part", root / "upload.dat")
    assert w.wait_for(root / "upload.dat")


def test_directory_moved_in_is_walked(watch, root, outside):
    w = watch()
    (outside / "batch" / "sub").mkdir(parents=True)
    (outside / "batch" / "one").write_text("1")
    (outside / "batch" / "sub" / "two").write_text("2")
    os.rename(outside / "batch", root / "batch")
    assert w.wait_for(root / "batch" / "one")
    assert w.wait_for(root / "batch" / "sub" / "two")


def test_rename_inside_root_is_reported_under_final_name(watch, root):
    w = watch()
    (root / ".upload.tmp").write_text("data")
    os.rename(root / ".upload.tmp", root / "upload")
    assert w.wait_for(root / "upload")
    w.barrier(root)
    assert w.count(root / ".upload.tmp") == 0
    assert w.count(root / "upload") == 1


def test_hard_link_is_reported(watch, root, outside):
    w = watch()
    (outside / "original").write_text("data")
    os.link(outside / "original", root / "linked")
    assert w.wait_for(root / "linked")


# -- changes while scanning -----------------------------------------------------------------------

@pytest.mark.parametrize("change", ["append-and-close", "truncate"])
def test_file_changed_while_scanned_is_scanned_again(root, change, watch):
    target = root / "growing"

    def hook(path):
        if path == str(target) and hook.first:
            hook.first = False
            if change == "append-and-close":  # an inotify event during the call
                with open(target, "ab") as f:
                    f.write(b" more")
            else:  # no event we listen to: only the file's stat differs
                os.truncate(target, 2)

    hook.first = True
    w = watch(on_file_hook=hook)
    target.write_bytes(b"content")
    assert w.wait_for(target, times=2)
    w.barrier(root)
    assert w.count(target) == 2


# -- what is not reported -------------------------------------------------------------------------

def test_excluded_names_and_directories_are_not_reported(watch, root):
    w = watch(exclude=("*.part", "cache"))
    (root / "cache").mkdir()
    (root / "cache" / "x.txt").write_text("excluded directory")
    (root / "big.iso.part").write_text("excluded name")
    (root / "kept.txt").write_text("kept")
    assert w.wait_for(root / "kept.txt")
    os.rename(root / "big.iso.part", root / "big.iso")  # finished: now eligible
    assert w.wait_for(root / "big.iso")
    w.barrier(root)
    assert w.count(root / "cache" / "x.txt") == 0
    assert w.count(root / "big.iso.part") == 0


def test_include_selects_files(watch, root):
    w = watch(include=("*.zip",))
    (root / "a.txt").write_text("no")
    (root / "a.zip").write_text("yes")
    assert w.wait_for(root / "a.zip")
    (root / "barrier.zip").write_text("b")
    assert w.wait_for(root / "barrier.zip")
    assert w.count(root / "a.txt") == 0


def test_file_deleted_before_scan_is_not_reported(watch, root):
    w = watch()
    (root / "gone").write_text("short-lived")
    os.unlink(root / "gone")
    w.barrier(root)
    assert w.count(root / "gone") == 0


def test_symlinks_are_followed_only_when_asked(tmp_path, outside, watch):
    (outside / "target").write_text("data")
    plain, following = tmp_path / "plain", tmp_path / "following"
    plain.mkdir()
    following.mkdir()
    w_plain = watch(roots=(plain,))
    w_follow = watch(roots=(following,), follow_symlinks=True)
    os.symlink(outside / "target", plain / "link")
    os.symlink(outside / "target", following / "link")
    assert w_follow.wait_for(following / "link")
    w_plain.barrier(plain)
    assert w_plain.count(plain / "link") == 0


def test_root_given_as_symlink_is_watched(tmp_path, root, watch):
    os.symlink(root, tmp_path / "via-link")
    w = watch(roots=(tmp_path / "via-link",))
    (root / "f").write_text("data")
    assert w.wait_for(tmp_path / "via-link" / "f")


# -- stopping, errors and limits ------------------------------------------------------------------

def test_stop_returns_promptly_even_with_files_queued(watch, root):
    w = watch(settle=5.0)
    (root / "queued").write_text("not yet due")
    assert w.stop() < 1.0
    assert w.calls == []


def test_missing_root_is_an_error(tmp_path):
    w = Running([tmp_path / "nope"])
    w.thread.start()
    w.thread.join(DEADLINE)
    assert isinstance(w.error, WatchError)
    assert "no such directory" in str(w.error)
    assert not w.ready.is_set()


def _failing_add_watch(monkeypatch, fails, err=errno.ENOSPC):
    """inotify_add_watch as the kernel answers at a limit, for the paths ``fails`` picks."""
    real = inotify_c.inotify_add_watch

    def add_watch(fd, path, mask):
        if fails(path):
            ctypes.set_errno(err)
            return -1
        return real(fd, path, mask)

    monkeypatch.setattr(inotify_c, "inotify_add_watch", add_watch)


def _assert_limit_message(error, directory):
    with open("/proc/sys/fs/inotify/max_user_watches") as f:
        current = f.read().strip()
    assert isinstance(error, WatchLimitError)
    assert "fs.inotify.max_user_watches" in str(error)
    assert f"(now {current})" in str(error)
    assert str(directory) in str(error)


def test_watch_limit_below_a_root_at_start_is_an_error(monkeypatch, root):
    (root / "a" / "deep").mkdir(parents=True)
    _failing_add_watch(monkeypatch, lambda path: path.endswith(b"/deep"))
    w = Running([root])
    w.thread.start()
    w.thread.join(DEADLINE)
    assert not w.ready.is_set()
    _assert_limit_message(w.error, root / "a" / "deep")


def test_watch_limit_on_a_new_directory_stops_the_watcher(monkeypatch, watch, root):
    _failing_add_watch(monkeypatch, lambda path: path.endswith(b"/too-many"))
    w = watch()
    (root / "too-many").mkdir()
    w.thread.join(DEADLINE)
    assert not w.thread.is_alive()
    _assert_limit_message(w.error, root / "too-many")


def test_instance_limit_is_an_error(monkeypatch, root):
    def init():
        ctypes.set_errno(errno.EMFILE)
        return -1

    monkeypatch.setattr(inotify_c, "inotify_init", init)
    w = Running([root])
    w.thread.start()
    w.thread.join(DEADLINE)
    assert isinstance(w.error, WatchLimitError)
    assert "fs.inotify.max_user_instances" in str(w.error)


def test_directory_vanishing_while_watched_is_skipped(monkeypatch, watch, root):
    (root / "vanishing").mkdir()
    _failing_add_watch(monkeypatch, lambda path: path.endswith(b"/vanishing"), errno.ENOENT)
    w = watch()
    (root / "still.txt").write_text("reported")
    assert w.wait_for(root / "still.txt")


def test_directories_created_and_removed_in_a_hurry_do_not_crash_it(watch, root):
    w = watch()
    for i in range(100):
        (root / f"d{i}" / "x" / "y").mkdir(parents=True)
        (root / f"d{i}" / "x" / "y" / "f").write_text("f")
        shutil.rmtree(root / f"d{i}")
    w.barrier(root)
    assert w.error is None and w.thread.is_alive()


def test_lost_events_are_made_up_by_a_walk(monkeypatch, caplog, watch, root):
    """Hold watchdog's reader back until the kernel queue overflows: every file is still
    scanned, once."""
    with open("/proc/sys/fs/inotify/max_queued_events") as f:
        limit = int(f.read())
    if limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it")
    gate = threading.Event()
    real = inotify_c.InotifyFD.read_events

    def held_read_events(self, **kw):
        gate.wait()
        return real(self, **kw)

    monkeypatch.setattr(inotify_c.InotifyFD, "read_events", held_read_events)
    try:
        w = watch()
        # Two events a file (create, close-write): well over the queue's length.
        names = [root / f"f{i:05d}" for i in range(limit // 2 + 1000)]
        for name in names:
            with open(name, "wb"):
                pass
    finally:
        gate.set()
    assert w.wait_for(names[-1], timeout=30)
    w.barrier(root)
    assert w.error is None
    assert "inotify queue overflowed" in caplog.text
    reported = [c for c in w.calls if "barrier" not in c]
    assert sorted(reported) == sorted(str(n) for n in names)


# -- lmsav scan --watch [--initial-scan] -----------------------------------------------------------

def _watch_scan(tmp_path, directory, *options):
    """Run `lmsav scan --watch`, stop it (SIGTERM) once it says it is watching; (exit, stdout)."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    exe = Path(sys.executable).with_name("lmsav")
    proc = subprocess.Popen([exe, "scan", "--watch", *options, "-j", "2", directory],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, LMSAV_CONFIG=str(config)))
    try:
        assert proc.stderr.readline().startswith("lmsav: watching ")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert "Traceback" not in err, err
    return proc.returncode, out


def test_files_already_there_are_scanned_only_with_initial_scan(tmp_path, root):
    from tests.conftest import EICAR

    (root / "sub").mkdir()
    (root / "sub" / "eicar.com").write_bytes(EICAR)
    (root / "clean.txt").write_text("clean\n")
    found = f"{root}/sub/eicar.com: Eicar-Test-Signature FOUND"

    code, out = _watch_scan(tmp_path, root)
    assert code == 0 and found not in out.splitlines()
    assert "Scanned files: 0" in out.splitlines()

    code, out = _watch_scan(tmp_path, root, "--initial-scan")
    assert code == 1 and found in out.splitlines()
    assert "Scanned files: 2" in out.splitlines() and "Scanned directories: 2" in out


def test_initial_scan_goes_with_watch_and_the_help_says_why(tmp_path):
    from click.testing import CliRunner

    from lmsav.cli import main

    result = CliRunner().invoke(main, ["scan", "--initial-scan", str(tmp_path)])
    assert result.exit_code == 2
    assert "--initial-scan goes with --watch" in result.output
    helped = " ".join(CliRunner().invoke(main, ["scan", "--help"]).output.split())
    assert "Only new or changed files are scanned" in helped
    assert "unless --initial-scan" in helped
