"""The progress bar of ``lmsav scan`` on stderr (tqdm): files done of files found.

The walk is lazy, so the total is first what it has found so far, shown as ``done/found+``
without a percentage; once the walk is over the total is exact, and the bar shows the
percentage and the time left.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager

FALLBACK_SIZE = (80, 24)  # columns, lines when the terminal reports none

# Before anything is found, and while the walk goes on: no percentage, no time left, both
# would be wrong.
_STARTING_FORMAT = "{desc}{unit} [{elapsed}]"
_WALKING_FORMAT = "{desc}: {n_fmt}/{total_fmt}+{unit} [{elapsed}, {rate_fmt}]"


def terminal_size(stream) -> tuple[int, int]:
    """(columns, lines) of the terminal behind ``stream``; $COLUMNS/$LINES or 80x24 where it
    reports 0 (a pseudo-terminal nobody sized, as under ``script -qc``) or is no terminal."""
    try:
        columns, lines = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):
        columns = lines = 0
    if columns <= 0 or lines <= 0:
        fallback = shutil.get_terminal_size(FALLBACK_SIZE)
        columns = columns if columns > 0 else fallback.columns or FALLBACK_SIZE[0]
        lines = lines if lines > 0 else fallback.lines or FALLBACK_SIZE[1]
    return columns, lines


class ScanProgress:
    """Files scanned of files planned, redrawn at most every ``mininterval`` seconds.

    The sweep calls ``planned(n)`` as its walk finds inputs and ``walked()`` once the walk is
    over; ``update()`` counts one input done. Lines printed meanwhile go through ``hidden()``.
    """

    def __init__(self, stream=None, mininterval: float = 0.25):
        from tqdm import tqdm

        self.stream = stream if stream is not None else sys.stderr
        self.total = 0  # planned so far
        self.walk_done = False
        columns, lines = terminal_size(self.stream)
        self._bar = tqdm(total=None, unit=" files", desc="scanning", file=self.stream,
                         ncols=columns - 1, nrows=lines, mininterval=mininterval, leave=False,
                         bar_format=_STARTING_FORMAT)
        # Asked again at each redraw, so the bar follows a resized terminal.
        self._bar.dynamic_ncols = self._shape

    def _shape(self, _fp) -> tuple[int, int]:
        columns, lines = terminal_size(self.stream)
        return columns - 1, lines  # the last column left free: no wrap on every terminal

    def planned(self, count: int = 1) -> None:
        self.total += count
        if self.walk_done:  # more inputs after the walk (none today): keep the total true
            self._bar.total = self.total

    def walked(self) -> None:
        self.walk_done = True
        self._bar.total = self.total
        self._bar.bar_format = None  # tqdm's own: percentage, bar, done/total, time left
        self._bar.refresh()

    def update(self, count: int = 1) -> None:
        if not self.walk_done:
            self._bar.total = self.total
            self._bar.bar_format = _WALKING_FORMAT
        self._bar.update(count)

    @property
    def done(self) -> int:
        return self._bar.n

    @contextmanager
    def hidden(self):
        """Clear the bar while lines are printed to the terminal, draw it again after."""
        with self._bar.external_write_mode(file=self.stream):
            yield

    def close(self) -> None:
        self._bar.close()
