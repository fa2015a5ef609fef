"""The SVG bar chart: one bar per bucket and series, heights to scale, every text escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from lmsav.web.charts import _nice_max, bar_chart, threats_per_row

SVG = "{http://www.w3.org/2000/svg}"
HOUR = 3600
START = 1_796_400_000  # an hour's start


def rows(values):
    return [{"time": START + i * HOUR, "messages": m, "infected": t, "suspicious": 0}
            for i, (m, t) in enumerate(values)]


def bars(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)
    # The legend's squares sit above the plot (y < 24).
    return [r for r in root.iter(f"{SVG}rect") if float(r.get("y")) >= 24]


def test_one_bar_per_bucket_and_series_to_scale():
    data = threats_per_row(rows([(100, 0), (50, 5), (0, 0), (200, 20)]))
    svg = bar_chart(data, [("messages", "Messages"), ("threats", "Threats")],
                    title="Mail per hour", element_id="mail-chart")
    root = ET.fromstring(svg)  # well-formed XML
    assert root.get("id") == "mail-chart" and root.get("aria-label") == "Mail per hour"
    found = bars(svg)
    assert len(found) == 8
    heights = [float(b.get("height")) for b in found]
    # Axis top 200: the 200 bar fills the plot, the 100 bar half of it, empty ones nothing.
    plot = heights[6]
    assert plot == 148.0 and heights[0] == plot / 2 and heights[2] == plot / 4
    assert heights[4] == heights[5] == 0
    assert [b.find(f"{SVG}title").text.split(": ")[1] for b in found] == [
        "100", "0", "50", "5", "0", "0", "200", "20"]
    assert ">200</text>" in svg  # the axis' largest value


def test_every_label_is_escaped():
    evil = '<script>alert("x")</script>&'
    svg = bar_chart(rows([(1, 1)]), [("messages", evil)], title=evil,
                    label=lambda _t: evil, element_id='"><x')
    assert "<script>" not in svg and '"><x' not in svg
    ET.fromstring(svg)
    assert svg.count("&lt;script&gt;") >= 3


def test_no_rows_and_bad_values_draw_an_empty_chart():
    svg = bar_chart([], [("messages", "Messages")], title="t")
    assert "no data" in svg and bars(svg) == []
    svg = bar_chart([{"time": "x", "messages": "NaN"}, {"time": START, "messages": -3}],
                    [("messages", "Messages")], title="t")
    assert [float(b.get("height")) for b in bars(svg)] == [0, 0]


def test_labels_are_thinned_and_the_axis_rounded_up():
    svg = bar_chart(rows([(i, 0) for i in range(48)]), [("messages", "M")], title="t")
    labels = re.findall(r'text-anchor="middle" font-size="11" fill="#5b6470">([^<]*)<', svg)
    assert len(labels) == 12
    assert [_nice_max(v) for v in (0, 1, 3, 7, 10, 11, 180, 201, 4999)] == [
        1, 1, 5, 10, 10, 20, 200, 500, 5000]
