"""Per-class comparison: scipy's Wilcoxon per class and a slow, obvious Holm-Bonferroni as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from focus_core.class_comparison import compare_classes, holm
from focus_core.errors import FocusError


def slow_holm(p: list[float]) -> list[float]:
    """Holm's step-down procedure written out: sort, multiply by the number of hypotheses left, keep monotone."""
    defined = [(value, i) for i, value in enumerate(p) if not math.isnan(value)]
    defined.sort()
    m = len(defined)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, (value, i) in enumerate(defined):
        running = max(running, min(1.0, (m - rank) * value))
        out[i] = running
    return out


def test_holm_matches_the_step_down_procedure() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = rng.random(rng.integers(1, 12)) ** 3
        p[rng.random(p.size) < 0.2] = math.nan
        np.testing.assert_allclose(holm(p), slow_holm(list(p)), equal_nan=True)


def test_holm_is_bonferroni_for_the_smallest_and_rejects_in_order() -> None:
    adjusted = holm([0.001, 0.02, 0.04])
    assert adjusted[0] == pytest.approx(0.003)  # Bonferroni on the smallest
    assert adjusted[1] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)


def test_compare_classes_uses_scipys_wilcoxon_within_each_class_and_holm_across() -> None:
    rng = np.random.default_rng(1)
    classes = np.repeat(np.arange(4), 15)
    previous = rng.uniform(0.6, 0.9, classes.size)
    current = previous + rng.normal(0, 0.05, classes.size)
    current[classes == 2] -= 0.3  # one class fell
    current[3] = math.nan  # an undefined map is left out of its class's pairs
    rows = compare_classes(current, previous, classes, alpha=0.05, threshold=0.05)
    assert [r["class"] for r in rows] == [0, 1, 2, 3]
    p = []
    for r in rows:
        keep = (classes == r["class"]) & ~np.isnan(current)
        assert r["n"] == keep.sum()
        assert r["p_value"] == pytest.approx(st.wilcoxon(current[keep] - previous[keep]).pvalue)
        assert r["median_change"] == pytest.approx(np.median(current[keep]) - np.median(previous[keep]))
        p.append(r["p_value"])
    np.testing.assert_allclose([r["p_adjusted"] for r in rows], slow_holm(p))
    assert [r["fell"] for r in rows] == [False, False, True, False]
    assert all(r["correction"] == "holm" for r in rows)


def test_a_significant_rise_is_not_a_fall_and_a_small_fall_needs_the_threshold() -> None:
    classes = [0] * 12
    previous = np.linspace(0.5, 0.6, 12)
    assert not compare_classes(previous + 0.2, previous, classes)[0]["fell"]
    small = compare_classes(previous - 0.02, previous, classes, threshold=0.05)[0]
    assert small["significant"] and not small["fell"]


def test_correction_makes_a_borderline_class_insignificant_among_many() -> None:
    # one class falls in 6 of 6 mosaics (exact p = 2/64 = 0.031): significant alone, not after Holm over 10 classes
    classes = np.repeat(np.arange(10), 6)
    previous = np.full(60, 0.8)
    current = previous + np.tile([0.01, -0.01, 0.02, -0.02, 0.03, -0.03], 10)
    current[:6] = 0.5 - np.arange(6) * 0.01
    alone = compare_classes(current[:6], previous[:6], classes[:6])[0]
    assert alone["p_adjusted"] < 0.05 and alone["fell"]
    among = compare_classes(current, previous, classes)[0]
    assert among["p_adjusted"] > 0.05 and not among["fell"]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(FocusError, match="alpha"):
        compare_classes([0.5], [0.5], [0], alpha=1.0)
    with pytest.raises(FocusError, match="differ in length"):
        compare_classes([0.5, 0.4], [0.5], [0, 0])
    with pytest.raises(FocusError, match="p-values"):
        holm([1.5])
    assert compare_classes([], [], []) == []
