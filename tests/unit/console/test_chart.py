"""The spend chart: inline SVG, well formed, escaped, scaled, with at most eight series."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date

import pytest

from ugcwatchd.console.chart import (
    MAX_SERIES,
    PALETTE,
    Series,
    bar_chart,
    days_until,
    legend,
    nice_ceiling,
    top_series,
)

SVG = "{http://www.w3.org/2000/svg}"


def test_chart_thirty_days_end_today() -> None:
    days = days_until(date(2026, 3, 2))
    assert len(days) == 30 and days[-1] == date(2026, 3, 2) and days[0] == date(2026, 2, 1)


@pytest.mark.parametrize(("value", "top"), [(0, 1), (0.3, 0.5), (7, 10), (11, 20), (23, 25), (240, 250), (501, 1000)])
def test_chart_scale_ends_at_a_round_number(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


def test_chart_many_clients_keep_the_largest_and_sum_the_rest() -> None:
    series = [Series(f"c{n:02d}", (float(n), 1.0)) for n in range(12)]
    kept = top_series({"facedub": series})["facedub"]
    assert len(kept) == MAX_SERIES
    assert [s.label for s in kept[:3]] == ["c11", "c10", "c09"]
    assert kept[-1].label == "others (5)" and kept[-1].values == (0 + 1 + 2 + 3 + 4, 5.0)
    assert sum(s.total for s in kept) == sum(s.total for s in series)
    assert len({s.colour for s in kept}) == MAX_SERIES


def test_chart_a_client_has_one_colour_in_every_chart() -> None:
    charts = top_series(
        {
            "facedub": [Series("acme", (1.0,)), Series("bravo", (9.0,))],
            "dublab": [Series("acme", (900.0,)), Series("corto", (100.0,))],  # another unit: shares count
        }
    )
    colours = {s.label: s.colour for chart in charts.values() for s in chart}
    assert [s.label for s in charts["dublab"]] == ["acme", "corto"]
    assert colours["acme"] != colours["bravo"] != colours["corto"] != colours["acme"]
    assert {s.label: s.colour for s in charts["facedub"]}["acme"] == colours["acme"]


def test_chart_svg_is_well_formed_with_one_bar_piece_per_client_and_day() -> None:
    days = days_until(date(2026, 3, 2), 3)
    series = [Series("acme", (2.0, 0.0, 4.0)), Series('<b>"bravo"</b>', (1.0, 0.0, 0.0), PALETTE[1])]
    svg = bar_chart(days, series, "credits", "facedub spend")
    root = ET.fromstring(svg)  # noqa: S314 - our own output; well-formed only if everything is escaped
    rects = root.findall(f".//{SVG}rect")
    assert len(rects) == 3  # no bar on the empty day
    titles = [t.text for t in root.findall(f".//{SVG}title")]
    assert titles == ['2026-02-28: 3 credits (acme 2, <b>"bravo"</b> 1)', "2026-03-02: 4 credits (acme 4)"]
    assert "style=" not in svg and "<script" not in svg and "href" not in svg
    tallest = max(float(r.get("height", 0)) for r in rects)
    assert tallest == pytest.approx(156 * 4 / 5)  # 4 of a scale that ends at 5


def test_chart_legend_escapes_labels() -> None:
    html = legend([Series("<script>x</script>", (1.5,))], "seconds")
    assert "<script>" not in html and "&lt;script&gt;" in html and "1.5 seconds" in html
