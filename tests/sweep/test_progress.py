"""The progress bar of `lmsav scan`: a total that grows with the walk, exact once it is over,
and a width even where the terminal reports none."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmsav.sweep import progress
from lmsav.sweep.progress import ScanProgress, terminal_size


class Terminal(io.StringIO):
    """What the bar wrote, on a stream that has a descriptor (its size is monkeypatched)."""

    def fileno(self) -> int:
        return 2

    def last_line(self) -> str:
        return re.split(r"[\r\n]", self.getvalue().rstrip("\r\n"))[-1]


@pytest.fixture
def sized(monkeypatch):
    """Make the terminal report ``columns`` x ``lines`` (0 x 0: a pty nobody sized)."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)

    def size(columns: int, lines: int) -> None:
        monkeypatch.setattr(os, "get_terminal_size",
                            lambda *_fd: os.terminal_size((columns, lines)))

    return size


@pytest.fixture
def new_bar():
    """A bar drawing on every update; closed after the test (tqdm stacks open bars)."""
    bars: list[ScanProgress] = []

    def make(out) -> ScanProgress:
        bars.append(ScanProgress(out, mininterval=0))
        return bars[-1]

    yield make
    for bar in bars:
        bar.close()


def test_total_grows_as_inputs_are_planned_and_is_exact_once_walked(sized, new_bar):
    sized(100, 30)
    out = Terminal()
    bar = new_bar(out)
    bar.planned(1)
    bar.planned(1)
    bar.planned(1)
    bar.update()
    line = out.last_line()
    assert "1/3+ files" in line and "%" not in line  # no percentage while the walk goes on
    bar.planned(2)
    bar.update()
    assert "2/5+ files" in out.last_line()
    bar.walked()
    line = out.last_line()
    assert "2/5 " in line and " 40%" in line and "<" in line  # done/total, percentage, ETA
    for _ in range(3):
        bar.update()
    assert bar.done == bar.total == 5


def test_final_total_is_the_number_of_inputs_when_the_walk_ends_first(sized, new_bar):
    sized(100, 30)
    out = Terminal()
    bar = new_bar(out)
    for _ in range(7):
        bar.planned(1)
    bar.walked()  # workers still busy: the walk is over before the reports
    assert "0/7 " in out.last_line() and "  0%" in out.last_line()
    for _ in range(7):
        bar.update()
    bar.walked()
    assert bar.total == bar.done == 7
    assert "7/7 " in out.last_line() and "100%" in out.last_line()


def test_width_falls_back_to_80_columns_when_the_terminal_reports_0(sized, new_bar):
    sized(0, 0)
    assert terminal_size(Terminal()) == (80, 24)
    out = Terminal()
    bar = new_bar(out)
    bar.planned(4)
    bar.walked()
    line = out.last_line()
    assert len(line) == 79 and "0/4" in line  # drawn, one column left free


def test_width_follows_the_terminal_and_columns_variable(sized, monkeypatch, new_bar):
    sized(120, 40)
    out = Terminal()
    bar = new_bar(out)
    bar.planned(4)
    bar.walked()
    assert len(out.last_line()) == 119
    sized(60, 40)  # resized
    bar.update()
    assert len(out.last_line().rstrip()) == 59  # spaces blank out the rest of the longer line
    sized(0, 0)
    monkeypatch.setenv("COLUMNS", "100")
    assert terminal_size(Terminal()) == (100, 24)


def test_a_stream_without_a_terminal_gets_the_fallback_width(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback: os.terminal_size(fallback))
    assert terminal_size(io.StringIO()) == progress.FALLBACK_SIZE


def test_lines_printed_meanwhile_clear_the_bar_first(sized, new_bar):
    sized(100, 30)
    out = Terminal()
    bar = new_bar(out)
    bar.planned(2)
    bar.update()
    with bar.hidden():
        out.write("x: Eicar-Test-Signature FOUND\n")
    before = out.getvalue().split("x: Eicar")[0]
    assert before.endswith("\r")  # the bar's line was blanked out, the cursor back at column 0
    assert out.getvalue().rstrip().endswith("files/s]")  # and drawn again after


@pytest.mark.skipif(shutil.which("script") is None, reason="util-linux script(1) not installed")
def test_bar_is_drawn_with_a_total_under_script(tmp_path):
    """`script -qc` runs the scan on a pseudo-terminal that reports 0 columns."""
    root = tmp_path / "files"
    root.mkdir()
    for n in range(30):
        (root / f"f{n:02d}.txt").write_text(f"file {n}\n")
    config = tmp_path / "lmsav.toml"
    config.write_text(f'[paths]\nstate_dir = "{tmp_path / "state"}"\n')
    exe = Path(sys.executable).with_name("lmsav")
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run(
        ["script", "-qec", f"{exe} scan --progress --no-summary -j 1 {root}", "/dev/null"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
        env=dict(env, LMSAV_CONFIG=str(config)), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    drawn = done.stdout.replace("\r", "\n").splitlines()
    assert any(re.search(r"scanning: 100%\|.*\| 30/30 ", line) for line in drawn), drawn
