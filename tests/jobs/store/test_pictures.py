"""One line chart, two renderers: the PNG and the SVG put the same points in the same places."""

import math
import re

import numpy as np

from jobs.store.pictures import Chart, line_chart_png, line_chart_svg


def test_png_and_svg_draw_the_chart_from_one_layout_and_skip_non_finite_values():
    xs, series = [0, 1, 2, 3], {"loss": [4.0, math.nan, 2.0, 1.0], "val_loss": [None, 3.0, None, math.inf]}
    chart = Chart(xs, series, (520, 220), (58, 12, 26, 34))
    assert [x for x, _ in chart.lines["loss"]] == [0.0, 2.0, 3.0] and chart.lines["val_loss"] == [(1.0, 3.0)]
    svg = line_chart_svg(xs, series, "losses", key="k")
    circles = [(float(a), float(b)) for a, b in re.findall(r'cx="([\d.]+)" cy="([\d.]+)"', svg)]
    expected = chart.points("loss") + chart.points("val_loss")
    assert circles == [(round(x, 1), round(y, 1)) for x, y in expected]
    png = np.asarray(line_chart_png(xs, series, "losses", size=(520, 220)))
    small = Chart(xs, series, (520, 220), (60, 20, 30, 40))  # the PNG's margins
    x, y = small.points("loss")[0]
    assert (png[int(round(y)), int(round(x))] != 255).any()  # the first point is drawn, not background
    assert "no data" in line_chart_svg(xs, {"loss": [math.nan] * 4}, "empty")
