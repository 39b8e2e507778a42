"""focus_core.stats where the mosaic design matters: undefined conventions, the cluster bootstrap,
per-class summaries and tests, seeds, the randomization decision; each against a hand or slow computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from focus_core import stats
from focus_core.errors import FocusError


def test_both_undefined_conventions_equal_a_hand_computation() -> None:
    scores = [0.9, None, 0.6, float("nan"), 0.3, 1.0]
    s = stats.summarize(scores)
    # excluding undefined: median of 0.3, 0.6, 0.9, 1.0 = (0.6 + 0.9) / 2
    assert s["median"] == pytest.approx(0.75)
    assert s["mean"] == pytest.approx((0.9 + 0.6 + 0.3 + 1.0) / 4)
    # counted as 0 (Quantus): 0, 0, 0.3, 0.6, 0.9, 1.0 -> (0.3 + 0.6) / 2
    assert s["median_undefined_as_zero"] == pytest.approx(0.45)
    assert s["mean_undefined_as_zero"] == pytest.approx((0.9 + 0.6 + 0.3 + 1.0) / 6)
    assert stats.summarize([None, None])["median_undefined_as_zero"] == 0.0


def _slow_cluster_medians(values, sizes, picks, uniforms):
    """The two-stage resample spelled out: per resample, per drawn class, per mosaic slot."""
    out = []
    for b in range(picks.shape[0]):
        pooled = []
        for k in range(picks.shape[1]):
            cls = picks[b, k]
            for slot in range(sizes[cls]):
                pooled.append(values[cls, min(int(uniforms[b, k, slot] * sizes[cls]), sizes[cls] - 1)])
        defined = [v for v in pooled if not math.isnan(v)]
        out.append(float(np.median(defined)) if defined else math.nan)
    return np.array(out)


def test_cluster_medians_match_the_slow_reference() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(23)
    scores[[2, 9]] = np.nan
    classes = np.array([0] * 5 + [1] * 9 + [2] * 2 + [3] * 7)
    values, sizes = stats._padded_clusters(scores, classes)
    picks = rng.integers(0, 4, size=(50, 4))
    uniforms = rng.random(size=(50, 4, values.shape[1]))
    np.testing.assert_allclose(stats._cluster_medians(values, sizes, picks, uniforms),
                               _slow_cluster_medians(values, sizes, picks, uniforms))


def test_cluster_interval_follows_its_documented_draws() -> None:
    rng = np.random.default_rng(5)
    scores, classes = rng.random(30), np.repeat(np.arange(5), 6)
    values, sizes = stats._padded_clusters(scores, classes)
    draws = np.random.default_rng(11)
    picks = draws.integers(0, 5, size=(400, 5))
    uniforms = draws.random(size=(400, 5, 6))
    medians = _slow_cluster_medians(values, sizes, picks, uniforms)
    expected = tuple(np.quantile(medians, [0.05, 0.95]))
    assert stats.cluster_bootstrap_median_ci(scores, classes, 0.9, 400, seed=11) == pytest.approx(expected)


def test_cluster_interval_is_wider_when_classes_are_correlated() -> None:
    # a random model: Focus near 0 or near 1 within each class (class medians 0.0 .. 1.0)
    rng = np.random.default_rng(0)
    centres = np.array([0.02, 0.05, 0.3, 0.6, 0.95, 0.98])
    classes = np.repeat(np.arange(6), 20)
    scores = np.clip(centres[classes] + rng.normal(0, 0.03, classes.size), 0, 1)
    mosaic = stats.bootstrap_median_ci(scores, seed=0)
    cluster = stats.cluster_bootstrap_median_ci(scores, classes, seed=0)
    assert cluster[1] - cluster[0] > 2 * (mosaic[1] - mosaic[0])
    assert cluster == stats.cluster_bootstrap_median_ci(scores, classes, seed=0)


def test_cluster_interval_edge_cases_and_errors() -> None:
    assert all(math.isnan(v) for v in stats.cluster_bootstrap_median_ci([None, None], [0, 1]))
    assert stats.cluster_bootstrap_median_ci([None, None], [0, 1], undefined="zero") == (0.0, 0.0)
    with pytest.raises(FocusError, match="one target class per mosaic"):
        stats.cluster_bootstrap_median_ci([0.5, 0.6], [0])
    with pytest.raises(FocusError, match="undefined"):
        stats.cluster_bootstrap_median_ci([0.5, 0.6], [0, 1], undefined="half")


def test_per_class_summary_and_paired_tests_by_class() -> None:
    scores = [0.9, 1.0, None, 0.1, 0.3, 0.2]
    rows = stats.per_class_summary(scores, ["b", "b", "a", "a", "a", "b"])
    assert [r["class"] for r in rows] == ["a", "b"]
    assert rows[0]["median"] == pytest.approx(0.2) and rows[0]["median_undefined_as_zero"] == pytest.approx(0.1)
    assert rows[1]["median"] == pytest.approx(0.9) and rows[1]["n"] == 3
    a = np.array([0.9, 0.8, 0.7, 0.95, 0.4, 0.5, 0.45, 0.42])
    b = np.array([0.5, 0.6, 0.65, 0.5, 0.4, 0.6, 0.55, 0.5])
    by_class = stats.paired_test_by_class(a, b, [0, 0, 0, 0, 1, 1, 1, 1])
    assert by_class[0]["rank_biserial"] == 1.0 and by_class[0]["test"] == "wilcoxon"
    assert by_class[1]["rank_biserial"] == pytest.approx(-1.0)  # class 1: b higher on the three non-zero pairs
    assert by_class[0]["p_value"] == pytest.approx(st.wilcoxon(a[:4] - b[:4]).pvalue)


def test_rank_biserial_by_hand() -> None:
    # differences 0.3, -0.1, 0.2, 0 -> ranks of |d| (zeros dropped): 3, 1, 2; (3 + 2 - 1) / 6
    result = stats.paired_test([0.8, 0.4, 0.7, 0.5], [0.5, 0.5, 0.5, 0.5])
    assert result["rank_biserial"] == pytest.approx(4 / 6)


def test_seed_summary() -> None:
    s = stats.seed_summary([0.39, 0.52, 0.45, None])
    assert s["n_seeds"] == 3 and s["mean"] == pytest.approx(0.4533333) and s["about_chance"] is True
    assert s["std"] == pytest.approx(np.std([0.39, 0.52, 0.45], ddof=1))
    assert stats.seed_summary([0.2, 0.3])["about_chance"] is False
    assert stats.seed_summary([None])["about_chance"] is None


@pytest.mark.parametrize(("grid", "targets", "tolerance"), [
    (2, 2, 0.1),  # the paper's mosaics: chance 0.5, ± 0.1
    (2, 1, 0.05),  # chance 0.25: a fifth of it
    (3, 1, 1 / 45),  # chance 1/9: a fifth of it
    (3, 3, 1 / 15),  # chance 1/3: a fifth of it
    (3, 8, 1 / 45),  # chance 8/9: a fifth of the room above it, so a perfect score is never "about chance"
])
def test_about_chance_scales_with_the_chance_level(grid: int, targets: int, tolerance: float) -> None:
    from focus_core.layouts import chance_level

    chance = chance_level(grid, targets)
    assert stats.chance_tolerance(chance) == pytest.approx(tolerance)
    inside, outside = chance + 0.99 * tolerance, chance - 1.01 * tolerance
    assert stats.about_chance(inside, chance) is True and stats.about_chance(outside, chance) is False
    summary = stats.seed_summary([inside, inside], chance)
    assert summary["about_chance"] is True and summary["tolerance"] == pytest.approx(tolerance)
    assert stats.seed_summary([outside], chance)["about_chance"] is False


def test_about_chance_on_3x3_one_target_refuses_what_a_fixed_tenth_accepted() -> None:
    chance = 1 / 9
    assert stats.about_chance(chance + 0.09, chance) is False
    assert stats.about_chance(chance - 0.09, chance) is False
    assert stats.about_chance(1.0, 8 / 9) is False
    with pytest.raises(FocusError, match="strictly between 0 and 1"):
        stats.chance_tolerance(1.0)


def test_the_flows_use_the_one_rule() -> None:
    from flows.results import analysis

    stages = [{"kind": "full", "seed": 0, "medians": {"m": 0.99}}]
    spread = analysis.seed_spread_of_stages(stages, ["m"], chance=8 / 9)
    assert spread["m"]["about_chance"] is False and spread["m"]["tolerance"] == pytest.approx(1 / 45)


def test_randomization_test_decides_on_mosaics_and_classes() -> None:
    rng = np.random.default_rng(1)
    classes = np.repeat(np.arange(6), 10)
    random = rng.uniform(0.3, 0.7, size=(5, 60))
    high = stats.randomization_test(np.full(60, 0.95), random, classes)
    assert high["significant"] and high["n"] == 60 and high["n_classes"] == 6 and high["n_seeds"] == 5
    assert high["p_value"] == pytest.approx(st.wilcoxon(0.95 - random.mean(axis=0), alternative="greater").pvalue)
    chance = stats.randomization_test(rng.uniform(0.3, 0.7, 60), random, classes)
    assert not chance["significant"]
    # two classes only: the class-level test cannot reach 0.05, so no decision for "above"
    assert not stats.randomization_test(np.full(60, 0.95), random, np.repeat([0, 1], 30))["significant"]
    with pytest.raises(FocusError, match="one row per seed"):
        stats.randomization_test(np.full(60, 0.9), random[:, :10])
