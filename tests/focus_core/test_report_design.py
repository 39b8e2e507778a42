"""The per-class and random-seed figures: PNGs drawn from plain data, one-sentence errors on bad input."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from focus_core import report
from focus_core.errors import FocusError
from tests.focus_core.test_report import assert_png


def test_per_class_figure_with_an_undefined_class(tmp_path: Path) -> None:
    out = tmp_path / "classes.png"
    medians = {"gradcam": [1.0, 0.5, 0.0], "lrp": [math.nan, 0.49, 0.76]}
    assert_png(report.plot_per_class_focus(["0", "1", "2"], medians, out), out)


@pytest.mark.parametrize(("classes", "medians", "match"), [
    ([], {"gradcam": []}, "classes are empty"),
    (["0", "1"], {"gradcam": [0.5]}, "one per class"),
    (["0"], {"gradcam": [1.5]}, "gradcam"),
])
def test_per_class_figure_bad_input(tmp_path: Path, classes, medians, match) -> None:
    with pytest.raises(FocusError, match=match):
        report.plot_per_class_focus(classes, medians, tmp_path / "c.png")


def test_random_seeds_figure(tmp_path: Path) -> None:
    out = tmp_path / "seeds.png"
    medians = {"gradcam": [0.494, 0.499, 0.518, 0.499, 0.49], "lrp": [0.5]}
    assert_png(report.plot_random_seeds(medians, out, trained={"gradcam": 0.95, "lrp": None}), out)
    with pytest.raises(FocusError):
        report.plot_random_seeds({}, tmp_path / "empty.png")
    with pytest.raises(FocusError):
        report.plot_random_seeds({"lrp": [0.5]}, tmp_path / "seeds.svg")


def test_per_class_figure_is_one_panel_per_method_at_most_the_page_wide(tmp_path: Path) -> None:
    """Ten classes and five methods: the figure stays within the page at 1400 px, so the browser does not shrink
    its labels; every method adds a panel's height instead of bars' width."""
    from PIL import Image

    from focus_core.report._style import DPI
    from focus_core.report.design import MAX_WIDTH_INCHES

    classes = [f"class {i}" for i in range(10)]
    sizes = {}
    for count in (1, 5):
        names = ["gradcam", "lrp", "smoothgrad", "random", "integrated_gradients"][:count]
        medians = {m: [0.1 * i for i in range(10)] for m in names}
        out = report.plot_per_class_focus(classes, medians, tmp_path / f"c{count}.png")
        with Image.open(out) as image:
            sizes[count] = image.size
    assert sizes[5][0] <= MAX_WIDTH_INCHES * DPI + 1 and sizes[5][0] == sizes[1][0]
    assert sizes[5][1] > 2 * sizes[1][1]  # taller: one panel per method
    many = report.plot_per_class_focus([str(i) for i in range(200)], {"gradcam": [0.5] * 200}, tmp_path / "m.png")
    with Image.open(many) as image:
        assert image.size[0] <= MAX_WIDTH_INCHES * DPI + 1
