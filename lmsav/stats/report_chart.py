"""The report's chart: messages and messages with threats per hour (daily) or per day
(weekly), as a PNG drawn by matplotlib's Agg renderer (no display, no pyplot state)."""

from __future__ import annotations

import io
import os
import tempfile
from datetime import UTC, datetime

from .report import threats_in

WIDTH, HEIGHT, DPI = 8, 3, 100  # inches, dots per inch: an 800 x 300 image


class ChartError(Exception):
    """The chart cannot be drawn (matplotlib missing)."""


def _label(t: float, by: str) -> str:
    moment = datetime.fromtimestamp(t, UTC)
    return moment.strftime("%H") if by == "hour" else moment.strftime("%a %m-%d")


def chart_png(series: list[dict], by: str) -> bytes:
    """The PNG of one series (rows of ``queries.series``)."""
    if "MPLCONFIGDIR" not in os.environ and not os.access(os.path.expanduser("~"), os.W_OK):
        # A service account without a writable home: matplotlib would warn on every report
        # about its font cache; a private temporary one is as good for one chart.
        os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="lmsav-mpl-")
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ChartError("the HTML report's chart needs matplotlib (pip install "
                         "matplotlib)") from None
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    positions = range(len(series))
    half = 0.4
    axes.bar([p - half / 2 for p in positions], [r["messages"] for r in series], half,
             label="messages", color="#4a7ab0")
    axes.bar([p + half / 2 for p in positions], [threats_in(r) for r in series], half,
             label="with threats", color="#c0392b")
    axes.set_xticks(list(positions), [_label(r["time"], by) for r in series],
                    fontsize=7 if by == "hour" else 8)
    axes.set_xlabel("hour (UTC)" if by == "hour" else "day (UTC)")
    axes.yaxis.get_major_locator().set_params(integer=True)
    # Above the plot, where no bar can be hidden behind it.
    axes.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()
