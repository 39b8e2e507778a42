"""Per target class: did Focus fall between two evaluations on the same mosaics? (the extended paper's bias test)

An overall median hides a shortcut that one class learned: if a model calls every image with a bright corner
"3", only class 3's explanations move (to the stamped non-target tiles), and the median over ten classes barely
does. :func:`compare_classes` compares two evaluations of the same mosaics class by class:

- within each target class, a paired two-sided Wilcoxon signed-rank test of ``current - previous`` on the
  mosaics both scored with a defined Focus (:func:`focus_core.stats.paired_test_by_class`; mosaics of one class
  are paired with themselves, so the test is within the class, never across classes);
- the classes' p-values corrected for testing many classes with **Holm-Bonferroni** (:func:`holm`: controls the
  family-wise error rate over the classes compared, under any dependence between them);
- a class *fell* when its corrected p-value is below ``alpha`` and its median Focus (over those paired mosaics)
  fell by more than ``threshold``.

Examples
--------
>>> rows = compare_classes([0.2] * 8 + [0.9] * 8, [0.8] * 8 + [0.9] * 8, [3] * 8 + [5] * 8, threshold=0.1)
>>> [(r["class"], round(r["median_change"], 2), round(r["p_adjusted"], 4), r["fell"]) for r in rows]
[(3, -0.6, 0.0156, True), (5, 0.0, 1.0, False)]
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from focus_core import stats
from focus_core.errors import FocusError

__all__ = ["CORRECTION", "holm", "compare_classes"]

#: The multiple-testing correction :func:`compare_classes` applies over the classes.
CORRECTION = "holm"


def holm(p_values: Any) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the input's order; NaN (a class with no test) stays NaN, uncounted.

    The i-th smallest of m p-values is multiplied by ``m - i + 1`` (i from 1), made non-decreasing in that order
    and capped at 1; rejecting where the adjusted value is below alpha controls the family-wise error rate at
    alpha.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, float("nan")]).round(2).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1 or ((p < 0) | (p > 1)).any():
        raise FocusError(f"Expected a 1-D sequence of p-values in [0, 1] but got {p_values!r}.")
    adjusted = np.full(p.shape, math.nan)
    defined = np.flatnonzero(~np.isnan(p))
    order = defined[np.argsort(p[defined], kind="stable")]
    m = order.size
    steps = p[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def compare_classes(current: Any, previous: Any, classes: Any, *, alpha: float = 0.05,
                    threshold: float = 0.05) -> list[dict[str, Any]]:
    """Compare two evaluations' Focus on the same mosaics, one target class at a time (see the module's docstring).

    Parameters
    ----------
    current, previous : sequence of float
        Focus of each mosaic in the two evaluations, aligned (``current[i]`` and ``previous[i]`` score the same
        mosaic); NaN (or ``None``) where Focus is undefined: such mosaics are left out of that class's pairs.
    classes : sequence of int
        The target class of each mosaic.
    alpha : float
        Family-wise significance level over the classes, in (0, 1).
    threshold : float
        A class fell when its median Focus fell by more than this (and the corrected test is significant).

    Returns
    -------
    list of dict
        One dict per class, sorted by class: ``class``, ``n`` (pairs), ``median_focus`` and
        ``previous_median_focus`` (over the pairs), ``median_change`` (their difference, NaN without pairs),
        ``median_paired_difference``, ``p_value`` (two-sided Wilcoxon), ``p_adjusted`` (Holm over the classes
        with a test), ``correction`` (``"holm"``), ``significant`` (``p_adjusted < alpha``) and ``fell``.

    Raises
    ------
    FocusError
        When the sequences differ in length, alpha is not in (0, 1) or the threshold is negative.
    """
    if not 0 < alpha < 1:
        raise FocusError(f"Expected alpha in (0, 1) but got {alpha!r}.")
    if not threshold >= 0:
        raise FocusError(f"Expected a non-negative threshold but got {threshold!r}.")
    xs, ys = stats.as_scores(current, "current scores"), stats.as_scores(previous, "previous scores")
    tests = stats.paired_test_by_class(xs, ys, classes) if xs.size else []
    labels = np.asarray(classes)
    p_adjusted = holm([t["p_value"] for t in tests])
    rows = []
    for test, adjusted in zip(tests, p_adjusted):
        members = (labels == test["class"]) & ~np.isnan(xs) & ~np.isnan(ys)
        now, before = (float(np.median(v[members])) if members.any() else math.nan for v in (xs, ys))
        change = now - before
        significant = bool(adjusted < alpha)
        rows.append({
            "class": test["class"],
            "n": int(test["n"]),
            "median_focus": now,
            "previous_median_focus": before,
            "median_change": change,
            "median_paired_difference": float(test["median_difference"]),
            "p_value": float(test["p_value"]),
            "p_adjusted": float(adjusted),
            "correction": CORRECTION,
            "significant": significant,
            "fell": significant and change < -threshold,
        })
    return rows
