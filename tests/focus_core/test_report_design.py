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
