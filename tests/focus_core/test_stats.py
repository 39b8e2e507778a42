"""focus_core.stats against slow, obvious implementations and scipy used directly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as st

from focus_core.errors import FocusError
from focus_core.stats import as_scores, bootstrap_median_ci, paired_test, pearson, summarize


def _slow_percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default), by sorting."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@pytest.fixture
def scores() -> np.ndarray:
    rng = np.random.default_rng(7)
    values = rng.beta(8, 2, size=101)
    values[[3, 40, 77]] = np.nan
    return values


# --------------------------------------------------------------------------- as_scores


@pytest.mark.parametrize("kind", ["list", "numpy", "torch", "torch_grad"])
def test_as_scores_accepts_lists_arrays_and_tensors(kind: str) -> None:
    values = [0.25, float("nan"), 1.0]
    given = {
        "list": values,
        "numpy": np.array(values, dtype=np.float32),
        "torch": torch.tensor(values),
        "torch_grad": torch.tensor(values, requires_grad=True),
    }[kind]
    result = as_scores(given)
    assert result.dtype == np.float64 and result.shape == (3,)
    np.testing.assert_allclose(result, values)


def test_as_scores_reads_none_as_undefined() -> None:
    assert np.isnan(as_scores([0.5, None])[1])


@pytest.mark.parametrize("bad", [[[0.5, 0.6]], 0.5, ["a", "b"], [0.5, float("inf")]])
def test_as_scores_rejects_bad_input(bad: object) -> None:
    with pytest.raises(FocusError):
        as_scores(bad)


# --------------------------------------------------------------------------- summarize


def test_summarize_matches_sorting_implementation(scores: np.ndarray) -> None:
    defined = [float(v) for v in scores if not math.isnan(v)]
    result = summarize(scores)
    assert result["n"] == 101 and result["n_defined"] == 98
    assert result["share_undefined"] == pytest.approx(3 / 101)
    assert result["median"] == pytest.approx(_slow_percentile(defined, 50))
    assert result["q1"] == pytest.approx(_slow_percentile(defined, 25))
    assert result["q3"] == pytest.approx(_slow_percentile(defined, 75))
    assert result["mean"] == pytest.approx(sum(defined) / len(defined))
    assert result["min"] == min(defined) and result["max"] == max(defined)
    assert all(type(result[k]) is float for k in ("median", "mean", "q1", "q3", "min", "max"))


def test_summarize_same_for_list_array_and_tensor(scores: np.ndarray) -> None:
    expected = summarize(scores)
    for given in (scores.tolist(), torch.tensor(scores)):
        for key, value in summarize(given).items():
            assert value == pytest.approx(expected[key])


def test_summarize_all_undefined_gives_nan_not_error() -> None:
    result = summarize([float("nan")] * 4)
    assert result["n"] == 4 and result["n_defined"] == 0 and result["share_undefined"] == 1.0
    assert all(math.isnan(result[k]) for k in ("median", "mean", "q1", "q3", "min", "max"))


def test_summarize_single_value() -> None:
    result = summarize([0.75])
    assert result["median"] == result["q1"] == result["q3"] == result["min"] == 0.75


def test_summarize_empty_is_a_focus_error() -> None:
    with pytest.raises(FocusError, match="empty"):
        summarize([])


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_median_and_is_reproducible(scores: np.ndarray) -> None:
    low, high = bootstrap_median_ci(scores, seed=3)
    assert low <= summarize(scores)["median"] <= high
    assert (low, high) == bootstrap_median_ci(scores, seed=3)
    assert bootstrap_median_ci(scores, seed=4) != (low, high)


def test_bootstrap_ci_close_to_scipy(scores: np.ndarray) -> None:
    defined = scores[~np.isnan(scores)]
    reference = st.bootstrap(
        (defined,), np.median, n_resamples=4000, method="percentile", confidence_level=0.9, rng=np.random.default_rng(1)
    ).confidence_interval
    low, high = bootstrap_median_ci(scores, confidence=0.9, n_resamples=4000, seed=1)
    spread = float(defined.std())
    assert low == pytest.approx(reference.low, abs=0.05 * spread)
    assert high == pytest.approx(reference.high, abs=0.05 * spread)


def test_bootstrap_ci_narrows_with_more_data() -> None:
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 200, 2000):
        low, high = bootstrap_median_ci(rng.beta(8, 2, size=n), n_resamples=1000)
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2] > 0


def test_bootstrap_ci_widens_with_confidence(scores: np.ndarray) -> None:
    narrow = bootstrap_median_ci(scores, confidence=0.5)
    wide = bootstrap_median_ci(scores, confidence=0.99)
    assert wide[0] <= narrow[0] <= narrow[1] <= wide[1]


def test_bootstrap_ci_chunking_matches_single_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    values = np.random.default_rng(2).random(50)
    whole = bootstrap_median_ci(values, n_resamples=300, seed=5)
    monkeypatch.setattr("focus_core.stats._BOOTSTRAP_CHUNK", 50 * 7)  # 7 rows per chunk
    assert bootstrap_median_ci(values, n_resamples=300, seed=5) == pytest.approx(whole)


def test_bootstrap_ci_edge_cases() -> None:
    assert bootstrap_median_ci([0.6]) == (0.6, 0.6)
    low, high = bootstrap_median_ci([float("nan"), None])
    assert math.isnan(low) and math.isnan(high)


@pytest.mark.parametrize(
    "kwargs", [{"scores": []}, {"confidence": 1.0}, {"confidence": 0.0}, {"n_resamples": 0}, {"n_resamples": 2.5}]
)
def test_bootstrap_ci_bad_arguments(kwargs: dict) -> None:
    arguments = {"scores": [0.5, 0.6, 0.7], **kwargs}
    with pytest.raises(FocusError):
        bootstrap_median_ci(**arguments)


# --------------------------------------------------------------------------- pearson


def test_pearson_matches_scipy_and_drops_nan_pairs() -> None:
    x = [1.0, 2.0, 3.0, 4.0, float("nan"), 6.0]
    y = [0.55, 0.7, 0.72, 0.9, 0.95, float("nan")]
    reference = st.pearsonr([1.0, 2.0, 3.0, 4.0], [0.55, 0.7, 0.72, 0.9])
    r, p = pearson(x, torch.tensor(y))
    assert r == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)


def test_pearson_slow_formula() -> None:
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.9])
    y = np.array([2.0, 1.5, 1.7, 0.6, 0.3])
    dx, dy = x - x.mean(), y - y.mean()
    expected = (dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum())
    assert pearson(x, y)[0] == pytest.approx(expected)


def test_pearson_constant_input_is_nan_without_warning() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r, p = pearson([0.5, 0.5, 0.5], [1, 2, 3])
    assert math.isnan(r) and math.isnan(p)


def test_pearson_three_pairs_is_the_smallest_sample() -> None:
    r, p = pearson([0.5, 0.6, 0.8], [0.3, 0.6, 0.7])
    reference = st.pearsonr([0.5, 0.6, 0.8], [0.3, 0.6, 0.7])
    assert r == pytest.approx(reference.statistic) and p == pytest.approx(reference.pvalue)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [([1, 2], [1, 2], "at least 3"), ([1, 2, 3, float("nan")], [1, 2, float("nan"), 4], "at least 3"),
     ([1, 2, 3], [1, 2, 3, 4], "length"), ([], [], "empty")],
)  # fmt: skip
def test_pearson_bad_input(x: list, y: list, match: str) -> None:
    with pytest.raises(FocusError, match=match):
        pearson(x, y)


# --------------------------------------------------------------------------- paired test


def test_paired_test_matches_scipy_on_defined_pairs() -> None:
    rng = np.random.default_rng(11)
    a = rng.beta(9, 2, size=60)
    b = np.clip(a - rng.normal(0.05, 0.1, size=60), 0, 1)
    a[5], b[9], a[20], b[20] = np.nan, np.nan, np.nan, np.nan
    keep = ~(np.isnan(a) | np.isnan(b))
    reference = st.wilcoxon(a[keep], b[keep])
    result = paired_test(torch.tensor(a), b.tolist())
    assert result["test"] == "wilcoxon" and result["n"] == 57
    assert result["statistic"] == pytest.approx(reference.statistic)
    assert result["p_value"] == pytest.approx(reference.pvalue)
    assert result["median_difference"] == pytest.approx(float(np.median(a[keep] - b[keep])))
    assert result["mean_difference"] == pytest.approx(float(np.mean(a[keep] - b[keep])))


def test_paired_test_slow_signed_rank_statistic() -> None:
    a = np.array([0.9, 0.8, 0.95, 0.7, 0.85, 0.6, 0.92])
    b = np.array([0.5, 0.85, 0.4, 0.55, 0.5, 0.62, 0.3])
    d = a - b
    ranks = st.rankdata(np.abs(d))
    expected = min(ranks[d > 0].sum(), ranks[d < 0].sum())
    assert paired_test(a, b)["statistic"] == pytest.approx(expected)


def test_paired_test_no_defined_pair_gives_nan() -> None:
    result = paired_test([float("nan"), 0.5], [0.5, float("nan")])
    assert result["n"] == 0 and math.isnan(result["p_value"]) and math.isnan(result["median_difference"])


def test_paired_test_identical_inputs() -> None:
    result = paired_test([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert result["median_difference"] == 0.0 and result["p_value"] == 1.0


def test_paired_test_two_identical_pairs() -> None:
    """Moved from tests/db (db.paired_test): all differences zero with n = 2 gives p = 1, not an error."""
    same = paired_test(np.array([0.5, 0.6]), np.array([0.5, 0.6]))
    assert (same["n"], same["median_difference"], same["p_value"]) == (2, 0.0, 1.0)


def test_paired_test_no_pair_given_gives_nan() -> None:
    """Two evaluations without a common defined mosaic (an empty paired query) compare as no evidence.

    This was ``db.paired_test``'s rule (tests/db); ``focus_core.stats.paired_test`` raised FocusError.
    """
    result = paired_test(np.array([]), np.array([]))
    assert result["n"] == 0 and math.isnan(result["p_value"]) and math.isnan(result["median_difference"])


@pytest.mark.parametrize(("a", "b"), [([0.5, 0.6], [0.5]), ([], [0.5]), ([[0.5]], [[0.5]])])
def test_paired_test_bad_input(a: list, b: list) -> None:
    with pytest.raises(FocusError):
        paired_test(a, b)
