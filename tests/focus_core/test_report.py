"""focus_core.report: every figure is a readable PNG, survives NaN, and rejects bad input clearly."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from focus_core import report
from focus_core.errors import FocusError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def assert_png(path: Path, expected: Path) -> np.ndarray:
    assert isinstance(path, Path) and path == expected
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50 and image.shape[2] in (3, 4)
    assert image[..., :3].std() > 0.01  # something was drawn
    return image


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _epochs(n: int = 6) -> list[dict]:
    rows = []
    for e in range(1, n + 1):
        focus = 0.5 + 0.45 * (1 - np.exp(-e / 2))
        rows.append(
            {"epoch": e, "train_loss": 2 * np.exp(-e / 2), "val_loss": 2.2 * np.exp(-e / 2),
             "train_accuracy": 1 - 0.8 * np.exp(-e / 2), "val_accuracy": 1 - 0.85 * np.exp(-e / 2),
             "focus_gradcam": focus, "focus_gradcam_q1": focus - 0.05, "focus_gradcam_q3": min(1.0, focus + 0.04),
             "focus_lrp": focus + 0.01}
        )  # fmt: skip
    return rows


def test_method_colors_are_stable() -> None:
    assert report.method_color("gradcam") == report.method_color("GradCAM")
    assert report.method_color("gradcam") != report.method_color("lrp")
    assert report.method_color("my_method") == report.method_color("my_method")


# --------------------------------------------------------------------------- figure 4


def test_focus_distributions_with_nan_tensors_and_accuracy(tmp_path: Path, rng: np.random.Generator) -> None:
    lrp = rng.beta(9, 1, 100)
    lrp[:7] = np.nan
    scores = {
        "digits_cnn": {"gradcam": torch.tensor(rng.beta(8, 2, 100)), "lrp": lrp, "random": [NAN, NAN]},
        "resnet18": {"gradcam": [0.7], "lrp": [0.5, 0.5, 0.5]},  # a single value and a constant: no KDE
    }
    out = tmp_path / "sub" / "f4.png"
    assert_png(report.plot_focus_distributions(scores, out, {"digits_cnn": 0.99}), out)


@pytest.mark.parametrize(
    "scores", [{}, {"cnn": {}}, {"cnn": {"gradcam": []}}, {"cnn": {"gradcam": ["x"]}}, {"cnn": [0.5]}]
)
def test_focus_distributions_bad_input(tmp_path: Path, scores: dict) -> None:
    with pytest.raises(FocusError):
        report.plot_focus_distributions(scores, tmp_path / "f4.png")


def test_output_path_must_be_png(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match=r"\.png"):
        report.plot_layout_boxplots({"top": [0.5]}, tmp_path / "f2.pdf")


# --------------------------------------------------------------------------- figure 3


def test_trained_vs_random(tmp_path: Path, rng: np.random.Generator) -> None:
    random = rng.beta(20, 20, 300)
    random[::10] = np.nan
    out = tmp_path / "f3.png"
    assert_png(report.plot_trained_vs_random(torch.tensor(rng.beta(15, 1, 300)), random, str(out), method="LRP"), out)


def test_trained_vs_random_all_undefined_and_degenerate(tmp_path: Path) -> None:
    out = tmp_path / "f3.png"
    assert_png(report.plot_trained_vs_random([0.9], [NAN, NAN, NAN], out), out)


def test_trained_vs_random_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match="empty"):
        report.plot_trained_vs_random([], [0.5], tmp_path / "f3.png")


# --------------------------------------------------------------------------- figure 2


def test_layout_boxplots(tmp_path: Path, rng: np.random.Generator) -> None:
    scores = {name: rng.beta(a, 2, 80) for name, a in (("top", 12), ("bottom", 9), ("diagonal", 6), ("random", 8))}
    scores["left"] = [NAN, NAN]
    out = tmp_path / "f2.png"
    assert_png(report.plot_layout_boxplots(scores, out), out)


@pytest.mark.parametrize("scores", [{}, {"top": [[0.5, 0.6]]}, [0.5, 0.6]])
def test_layout_boxplots_bad_input(tmp_path: Path, scores: object) -> None:
    with pytest.raises(FocusError):
        report.plot_layout_boxplots(scores, tmp_path / "f2.png")


# --------------------------------------------------------------------------- figures 5 and 6


def test_training_curves(tmp_path: Path) -> None:
    rows = _epochs()
    rows[2]["focus_lrp"] = NAN  # an epoch whose Focus was undefined
    del rows[3]["val_loss"]  # a missing value
    out = tmp_path / "f5.png"
    assert_png(report.plot_training_curves(list(reversed(rows)), out), out)


def test_training_curves_accepts_dataclass_records(tmp_path: Path) -> None:
    from dataclasses import dataclass

    @dataclass
    class Epoch:
        epoch: int
        train_loss: float
        val_accuracy: float

    out = tmp_path / "f5.png"
    assert_png(report.plot_training_curves([Epoch(1, 1.0, 0.5), Epoch(2, 0.5, 0.8)], out), out)


@pytest.mark.parametrize(
    "epochs",
    [[], {"epoch": 1}, [{"train_loss": 1.0}], [{"epoch": 1, "val_accuracy": 97.0}], [{"epoch": 1, "focus_lrp": 1.5}]],
)
def test_training_curves_bad_input(tmp_path: Path, epochs: object) -> None:
    with pytest.raises(FocusError):
        report.plot_training_curves(epochs, tmp_path / "f5.png")


def test_focus_vs_metrics(tmp_path: Path) -> None:
    out = tmp_path / "f6.png"
    assert_png(report.plot_focus_vs_metrics(_epochs(), out), out)


def test_focus_vs_metrics_few_points_and_constant(tmp_path: Path) -> None:
    rows = [{"epoch": 1, "val_accuracy": 0.9, "val_loss": 0.3, "focus_gradcam": 0.9, "focus_lrp": NAN},
            {"epoch": 2, "val_accuracy": 0.9, "val_loss": 0.2, "focus_gradcam": 0.8, "focus_lrp": 0.7}]  # fmt: skip
    out = tmp_path / "f6.png"
    assert_png(report.plot_focus_vs_metrics(rows, out), out)
    rows.append({"epoch": 3, "val_accuracy": 0.9, "val_loss": 0.1, "focus_gradcam": 0.7, "focus_lrp": 0.6})
    assert_png(report.plot_focus_vs_metrics(rows, out), out)  # constant accuracy: r undefined


def test_focus_vs_metrics_needs_focus(tmp_path: Path) -> None:
    with pytest.raises(FocusError, match="focus_"):
        report.plot_focus_vs_metrics([{"epoch": 1, "val_accuracy": 0.5, "val_loss": 1.0}], tmp_path / "f6.png")


# --------------------------------------------------------------------------- cascading randomization


def test_cascading_randomization(tmp_path: Path) -> None:
    stages = ["trained", "fc", "conv4", "conv3", "conv2", "conv1"]
    medians = {"gradcam": [0.96, 0.52, 0.5, 0.49, NAN, 0.5], "lrp": np.array([0.97, 0.55, 0.5, 0.52, 0.48, 0.5])}
    q1 = {"gradcam": [0.9, 0.4, 0.38, 0.4, NAN, 0.41]}
    q3 = {"gradcam": [1.0, 0.62, 0.6, 0.6, NAN, 0.6]}
    out = tmp_path / "cascade.png"
    assert_png(report.plot_cascading_randomization(stages, medians, out, q1_by_method=q1, q3_by_method=q3), out)


@pytest.mark.parametrize(
    ("stages", "medians"),
    [([], {"gradcam": []}), (["trained", "fc"], {"gradcam": [0.9]}), (["trained"], {}), (["trained"], {"lrp": [90.0]})],
)
def test_cascading_randomization_bad_input(tmp_path: Path, stages: list, medians: dict) -> None:
    with pytest.raises(FocusError):
        report.plot_cascading_randomization(stages, medians, tmp_path / "cascade.png")


# --------------------------------------------------------------------------- figure 1


def _mosaic_and_maps(size: int = 32) -> tuple[torch.Tensor, dict]:
    mosaic = torch.zeros(3, size, size, dtype=torch.uint8)
    mosaic[:, : size // 2, : size // 2] = 200
    mosaic[0, size // 2 :, size // 2 :] = 255
    yy, xx = np.mgrid[:size, :size]
    heat = np.exp(-((yy - size / 4) ** 2 + (xx - size / 4) ** 2) / size)
    return mosaic, {"gradcam": torch.tensor(heat)[None], "lrp": heat - 0.3, "random": np.zeros((size, size))}


@pytest.mark.parametrize("quadrants", [(0, 3), torch.tensor([True, False, False, True]), None])
def test_mosaic_explanations(tmp_path: Path, quadrants: object) -> None:
    mosaic, maps = _mosaic_and_maps()
    out = tmp_path / "f1.png"
    focus = {"gradcam": 0.81, "lrp": 0.9, "random": NAN}
    image = assert_png(report.plot_mosaic_explanations(mosaic, maps, out, target_quadrants=quadrants, focus=focus), out)
    assert image.shape[1] > image.shape[0]  # panels side by side


def test_mosaic_explanations_grey_float_mosaic(tmp_path: Path) -> None:
    mosaic = np.random.default_rng(1).random((1, 33, 31))  # odd sizes: quadrants split at H // 2, W // 2
    out = tmp_path / "f1.png"
    assert_png(report.plot_mosaic_explanations(mosaic, {"smoothgrad": np.ones((33, 31))}, out, (1, 2)), out)


@pytest.mark.parametrize(
    ("mosaic", "maps", "quadrants"),
    [
        (np.zeros((3, 16, 16)), {"gradcam": np.zeros((8, 8))}, None),  # map shape
        (np.zeros((2, 16, 16)), {}, None),  # channels
        (np.full((3, 16, 16), 2.5), {}, None),  # normalised floats
        (np.zeros((3, 16, 16)), {}, (0, 4)),  # quadrant index
        (np.zeros((3, 16, 16)), {}, np.array([True, False])),  # mask length
    ],
)
def test_mosaic_explanations_bad_input(tmp_path: Path, mosaic: np.ndarray, maps: dict, quadrants: object) -> None:
    with pytest.raises(FocusError):
        report.plot_mosaic_explanations(mosaic, maps, tmp_path / "f1.png", target_quadrants=quadrants)


def test_figures_leave_no_open_pyplot_figure(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    report.plot_layout_boxplots({"top": [0.5, 0.9]}, tmp_path / "f2.png")
    report.plot_mosaic_explanations(*_mosaic_and_maps(), tmp_path / "f1.png")
    assert len(plt.get_fignums()) == before


def test_package_exports_every_figure_of_its_modules() -> None:
    from focus_core.report import distributions, mosaic, randomization, training

    for module in (distributions, training, randomization, mosaic):
        for name in module.__all__:
            assert name in report.__all__ and getattr(report, name) is getattr(module, name)


def _lime_box_in_panel(image: np.ndarray, grey: float) -> tuple[float, float, float, float]:
    """The green outline's box as fractions (left, top, right, bottom) of the mosaic panel (pixels of ``grey``)."""
    rgb = image[..., :3]
    panel = np.all(np.abs(rgb - grey) < 0.02, axis=2)
    lime = (rgb[..., 1] > 0.8) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3)
    # the panel's rows and columns are mostly grey (anti-aliased text elsewhere has a few such pixels)
    ys = np.flatnonzero(panel.sum(axis=1) > 0.3 * panel.sum(axis=1).max())
    xs = np.flatnonzero(panel.sum(axis=0) > 0.3 * panel.sum(axis=0).max())
    ly, lx = np.nonzero(lime)
    top, left, height, width = ys.min(), xs.min(), ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    return ((lx.min() - left) / width, (ly.min() - top) / height, (lx.max() - left) / width, (ly.max() - top) / height)


def test_a_3x3_mosaic_draws_and_outlines_nine_tiles(tmp_path: Path) -> None:
    """Position 4 of a 3x3 mosaic is the middle tile: its outline spans the middle third both ways."""
    grey = 100 / 255
    mosaic = np.full((3, 36, 36), 100, dtype=np.uint8)
    out = tmp_path / "f1-3x3.png"
    mask = np.zeros(9, dtype=bool)
    mask[4] = True
    image = assert_png(report.plot_mosaic_explanations(mosaic, {}, out, target_quadrants=mask), out)  # N from the mask
    left, top, right, bottom = _lime_box_in_panel(image, grey)
    assert left == pytest.approx(1 / 3, abs=0.04) and right == pytest.approx(2 / 3, abs=0.04)
    assert top == pytest.approx(1 / 3, abs=0.04) and bottom == pytest.approx(2 / 3, abs=0.04)
    # the same by positions with grid=3; the last tile of the grid is the bottom-right ninth
    image = assert_png(report.plot_mosaic_explanations(mosaic, {}, out, target_quadrants=(8,), grid=3), out)
    left, top, right, bottom = _lime_box_in_panel(image, grey)
    assert left == pytest.approx(2 / 3, abs=0.04) and top == pytest.approx(2 / 3, abs=0.04)
    with pytest.raises(FocusError, match=r"not in 0..8"):
        report.plot_mosaic_explanations(mosaic, {}, out, target_quadrants=(9,), grid=3)
    with pytest.raises(FocusError, match="9 booleans"):
        report.plot_mosaic_explanations(mosaic, {}, out, target_quadrants=np.ones(4, dtype=bool), grid=3)


def test_the_chance_line_follows_the_grid(tmp_path: Path) -> None:
    for plot, args in ((report.plot_trained_vs_random, ([0.9, 0.8], [0.3, 0.35])),
                       (report.plot_layout_boxplots, ({"random": [0.4, 0.5]},)),
                       (report.plot_cascading_randomization, (["trained", "fc"], {"lrp": [0.9, 0.4]})),
                       (report.plot_random_seeds, ({"lrp": [0.3, 0.35]},))):
        out = tmp_path / f"{plot.__name__}.png"
        assert_png(plot(*args, out, chance=1 / 3), out)
        with pytest.raises(FocusError, match="chance level"):
            plot(*args, out, chance=1.5)


# --------------------------------------------------------------------------- labels as plain text

MACRO = r"$\undefinedmacro$"  # mathtext would fail on it ("Unknown symbol")


def test_every_figure_draws_labels_and_class_names_as_plain_text(tmp_path: Path, rng: np.random.Generator) -> None:
    scores = rng.beta(8, 2, 40)
    figures = {
        "per-class": lambda out: report.plot_per_class_focus([MACRO, "1"], {MACRO: [0.9, 0.4]}, out),
        "seeds": lambda out: report.plot_random_seeds({MACRO: [0.5, 0.4, 0.6]}, out, trained={MACRO: 0.9}),
        "distributions": lambda out: report.plot_focus_distributions({MACRO: {MACRO: scores}}, out, {MACRO: 0.9}),
        "trained-vs-random": lambda out: report.plot_trained_vs_random(scores, rng.beta(5, 5, 40), out, method=MACRO),
        "layouts": lambda out: report.plot_layout_boxplots({MACRO: scores, "top": scores}, out),
        "cascading": lambda out: report.plot_cascading_randomization([MACRO, "fc"], {MACRO: [0.9, 0.5]}, out),
        "mosaic": lambda out: report.plot_mosaic_explanations(_mosaic_and_maps()[0], {MACRO: np.ones((32, 32))},
                                                              out, (0, 3)),
        "training": lambda out: report.plot_training_curves(
            [{**row, f"focus_{MACRO}": row["focus_gradcam"]} for row in _epochs()], out),
        "focus-vs-metrics": lambda out: report.plot_focus_vs_metrics(
            [{**row, f"focus_{MACRO}": row["focus_gradcam"]} for row in _epochs()], out),
    }
    for name, draw in figures.items():
        out = tmp_path / f"{name}.png"
        assert_png(draw(out), out)
