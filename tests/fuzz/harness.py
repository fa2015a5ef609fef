"""What every fuzz input must satisfy, checked around one ``Engine.scan``.

- No exception escapes the engine and the result is a Verdict; no object of it failed with an
  internal error (a handler bug the engine caught).
- The input is scanned within a time bound and the process's peak RSS (its high-water mark,
  reset before each input) grows by at most a bound; programs the engine starts, such as 7z,
  may not use more than that bound above this process's own size.
- The scan's temp root is empty afterwards; the scan wrote nothing outside it: writes of this
  process are seen by an audit hook (open for writing, mkdir, rename, remove …), writes of
  child programs by comparing the working directory, $TMPDIR and the input's directory before
  and after.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from lmsav import paths
from lmsav.scanner.engine import Engine
from lmsav.scanner.limits import Limits
from lmsav.scanner.objects import ScanObject, Verdict
from lmsav.scanner.signatures.database import Database


class Violation(AssertionError):
    """A fuzz input broke one of the harness's rules."""


class _Hung(BaseException):
    # A BaseException, so the engine's "a handler bug costs one object" handler cannot eat it.
    pass


@dataclass(frozen=True)
class Bounds:
    seconds: float = 10.0  # wall time for one input
    rss_growth: int = 256 << 20  # peak resident memory above the resident size before the scan


# -- writes this process makes, seen by an audit hook (installed once, active while watching) --

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {  # event → (index of the path argument, index of its dir_fd argument or None)
    "os.mkdir": (0, 2), "os.remove": (0, 1), "os.rmdir": (0, 1), "os.chmod": (0, 2),
    "os.chown": (0, 3), "os.utime": (0, 3), "os.truncate": (0, None), "os.chdir": (0, None),
    "os.symlink": (1, 2), "shutil.rmtree": (0, 1),
}
_TWO_PATH_EVENTS = ("os.rename", "os.replace", "os.link")  # src, dst, src_dir_fd, dst_dir_fd


class _WriteWatch:
    def __init__(self, allowed_root: str):
        self.allowed = os.path.realpath(allowed_root)
        self.outside: list[str] = []

    def touched(self, event: str, path, dir_fd=None) -> None:
        if isinstance(path, int) or path is None:
            return  # an open descriptor: its path was judged when it was opened
        # Never raise: an exception in an audit hook would fail the engine's own call.
        try:
            name = os.fsdecode(os.fspath(path))
            base = None
            if dir_fd is not None and not os.path.isabs(name):
                base = os.readlink(f"/proc/self/fd/{dir_fd}")
            full = os.path.realpath(os.path.join(base or os.getcwd(), name))
        except (OSError, TypeError, ValueError) as err:
            self.outside.append(f"{event} {path!r} (path not resolved: {err})")
            return
        if full == os.devnull or full == self.allowed or full.startswith(self.allowed + os.sep):
            return
        self.outside.append(f"{event} {full}")


_watch: _WriteWatch | None = None
_hook_installed = False


def _audit(event: str, args: tuple) -> None:
    watch = _watch
    if watch is None:
        return
    if event == "open":
        path, mode, flags = args
        writes = any(c in mode for c in "wax+") if mode is not None else flags & _WRITE_FLAGS
        if writes:
            watch.touched("open for writing", path)
    elif event in _PATH_EVENTS:
        at, fd_at = _PATH_EVENTS[event]
        watch.touched(event, args[at], args[fd_at] if fd_at is not None else None)
    elif event in _TWO_PATH_EVENTS:
        watch.touched(event, args[0], args[2])
        watch.touched(event, args[1], args[3])


def _install_hook() -> None:
    global _hook_installed
    if not _hook_installed:
        sys.addaudithook(_audit)  # cannot be removed: it does nothing while no watch is set
        _hook_installed = True


# -- the harness ------------------------------------------------------------------------------

def _rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak(who: int) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # KiB on Linux


def _reset_peak() -> bool:
    """Start this process's high-water mark (VmHWM) afresh, so the next reading is the peak of
    one input; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _high_water() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _listing(directory: Path) -> set[str]:
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()


class FuzzHarness:
    """One engine over the bundled database, scanning inputs under the rules above."""

    def __init__(self, workdir: Path, bounds: Bounds = Bounds(), limits: Limits | None = None):
        self.bounds = bounds
        self.scan_tmp = workdir / "scan-tmp"  # the engine's temp root
        self.inputs = workdir / "inputs"  # inputs scanned by path are written here
        self.cwd = workdir / "cwd"  # the working directory during scans: must stay empty
        for d in (self.scan_tmp, self.inputs, self.cwd):
            d.mkdir(parents=True, exist_ok=True)
        db = Database.load(paths.bundled_database_dir(), cache_path=workdir / "bases.lmsavc")
        self.engine = Engine(db, limits or Limits(), tmp_root=str(self.scan_tmp))
        _install_hook()

    def warm_up(self, corpus: dict[str, bytes]) -> None:
        """Scan every seed once, so libraries the handlers load count as the baseline, not as
        the first mutated input's memory."""
        for name, data in corpus.items():
            self.check(data, via_path=False, name=name)
            self.check(data, via_path=True, name=name)

    def check(self, data: bytes, via_path: bool = False, name: str = "input") -> Verdict:
        """Scan ``data`` (from memory, or from a file when ``via_path``); raise Violation when a
        rule is broken, else return the verdict."""
        global _watch
        input_path = self.inputs / "input.bin"
        if via_path:
            input_path.write_bytes(data)
        before = {d: _listing(d) for d in self._watched_dirs()}
        fresh_peak = _reset_peak()
        rss_before, peak_before = _rss_now(), _peak(resource.RUSAGE_SELF)
        children_before = _peak(resource.RUSAGE_CHILDREN)
        old_cwd = os.getcwd()
        watch = _WriteWatch(str(self.scan_tmp))
        dont_write_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
        os.chdir(self.cwd)
        alarm = self._arm_alarm()
        started = time.monotonic()
        try:
            _watch = watch
            if via_path:
                with ScanObject.from_path(input_path, name) as obj:
                    verdict = self.engine.scan(obj)
            else:
                verdict = self.engine.scan(ScanObject(name, data=data))
        except _Hung:
            raise Violation(f"no verdict after {2 * self.bounds.seconds:g} s "
                            f"(interrupted in:\n{traceback.format_exc()})") from None
        except Exception as err:
            raise Violation(f"exception escaped the engine: {type(err).__name__}: {err}") from err
        finally:
            _watch = None
            elapsed = time.monotonic() - started
            self._disarm_alarm(alarm)
            os.chdir(old_cwd)
            sys.dont_write_bytecode = dont_write_bytecode
        # Without a fresh high-water mark only a new peak of the process can be seen.
        peak = _high_water() if fresh_peak else _peak(resource.RUSAGE_SELF)
        if not fresh_peak and peak <= peak_before:
            peak = rss_before
        problems = self._problems(verdict, elapsed, rss_before, peak, children_before)
        problems += [f"wrote outside the temp dir: {w}" for w in watch.outside]
        for d, names in before.items():
            if (now := _listing(d)) != names:
                problems.append(f"{d}: {sorted(now - names)} appeared, {sorted(names - now)} gone")
        if via_path and input_path.read_bytes() != data:
            problems.append("the input file was changed")
        if problems:
            raise Violation("; ".join(problems))
        return verdict

    def _watched_dirs(self) -> list[Path]:
        return [self.scan_tmp, self.cwd, self.inputs, Path(tempfile.gettempdir())]

    def _problems(self, verdict, elapsed: float, rss_before: int, peak: int,
                  children_before: int) -> list[str]:
        problems = []
        if not isinstance(verdict, Verdict):
            problems.append(f"the engine returned {type(verdict).__name__}, not a Verdict")
            return problems
        problems += [f"{r.path}: {r.reason}" for r in verdict.walk()
                     if r.reason.startswith("internal error")]
        if elapsed > self.bounds.seconds:
            problems.append(f"took {elapsed:.2f} s, bound {self.bounds.seconds:g} s")
        if peak - rss_before > self.bounds.rss_growth:
            problems.append(f"peak RSS grew by {(peak - rss_before) >> 20} MiB, "
                            f"bound {self.bounds.rss_growth >> 20} MiB")
        # A child forked from this process counts this process's pages as its own until it
        # execs; what it uses beyond that is what the program it runs (7z) needs.
        children = _peak(resource.RUSAGE_CHILDREN)
        if children > children_before and children - peak > self.bounds.rss_growth:
            problems.append(f"a program the engine ran peaked at {children >> 20} MiB RSS, "
                            f"{(children - peak) >> 20} MiB above this process")
        return problems

    def _arm_alarm(self):
        """Interrupt a scan that runs twice the bound (Python code only; a hang inside C code
        still shows as the time bound once it returns)."""
        if sys.platform != "linux" or not _main_thread():
            return None

        def hung(signum, frame):
            raise _Hung()

        old = signal.signal(signal.SIGALRM, hung)
        signal.setitimer(signal.ITIMER_REAL, 2 * self.bounds.seconds)
        return old

    @staticmethod
    def _disarm_alarm(old) -> None:
        if old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
