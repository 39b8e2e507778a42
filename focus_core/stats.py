"""Statistics over Focus scores: summaries, bootstrap intervals, correlation, paired tests.

Focus is undefined for a map without positive relevance; such scores arrive as NaN (or
``None``, the way SQL ``NULL`` comes back). Every function here drops them and says how many
it dropped, never silently counting them as 0 or 0.5. Two conventions are reported side by side:
``median`` (undefined maps left out, this project's: an undefined map says nothing about where
relevance went) and ``median_undefined_as_zero`` (Quantus's ``Focus``, which scores such a map 0);
a user comparing with Quantus reads the second. Inputs may be lists, numpy arrays or CPU/GPU
torch tensors; torch is not imported.

Mosaics of one target class are not independent (a random model points at the same salient
tiles whatever the target), so :func:`cluster_bootstrap_median_ci` resamples target classes and
then mosaics within them; :func:`bootstrap_median_ci` (mosaics only) is the narrower interval that
assumes independence.

Examples
--------
>>> from focus_core.stats import summarize
>>> summarize([0.9, 1.0, float("nan"), 0.8])["median"]
0.9
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as _st

from focus_core.errors import FocusError

__all__ = ["as_scores", "summarize", "undefined_as_zero", "bootstrap_median_ci", "cluster_bootstrap_median_ci",
           "pearson", "paired_test", "paired_test_by_class", "per_class_summary", "chance_tolerance", "about_chance",
           "seed_summary",
           "randomization_test", "UNDEFINED_CONVENTIONS"]

#: The two ways of treating undefined maps: ``"exclude"`` (left out, this project's default) and
#: ``"zero"`` (counted as Focus 0, Quantus's convention).
UNDEFINED_CONVENTIONS = ("exclude", "zero")

# Largest number of resampled values held in memory at once by the bootstrap (float64: 64 MB).
_BOOTSTRAP_CHUNK = 8_000_000


def as_scores(values: Any, name: str = "scores") -> np.ndarray:
    """Convert a 1-D sequence, numpy array or torch tensor to a float64 numpy array.

    ``None`` becomes NaN (an undefined score). Infinite values are rejected.

    Parameters
    ----------
    values : sequence of float, numpy.ndarray or torch.Tensor
        One-dimensional scores; a tensor may live on any device and may require grad.
    name : str
        The argument's name, used in error messages.

    Returns
    -------
    numpy.ndarray
        A new float64 array of shape ``(N,)``.

    Raises
    ------
    FocusError
        When ``values`` is not one-dimensional, not numeric, or holds an infinite value.

    Examples
    --------
    >>> as_scores([0.5, None, 1]).tolist()
    [0.5, nan, 1.0]
    """
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().numpy()
    try:
        array = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise FocusError(
            f"The {name} could not be read as numbers ({error}): pass a 1-D list, array or tensor of floats."
        ) from None
    if array.ndim != 1:
        raise FocusError(
            f"The {name} have shape {array.shape}: pass a 1-D sequence with one score per mosaic."
        )
    if np.isinf(array).any():
        raise FocusError(
            f"The {name} hold an infinite value: pass finite numbers, with NaN or None for undefined ones."
        )
    return array


def _non_empty(values: Any, name: str) -> np.ndarray:
    array = as_scores(values, name)
    if array.size == 0:
        raise FocusError(f"The {name} are empty: pass at least one score.")
    return array


def summarize(scores: Any) -> dict[str, float | int]:
    """Summarise Focus scores, counting NaN (undefined) scores apart.

    Quartiles use numpy's default (linear) interpolation. When every score is undefined the
    statistics are NaN and ``share_undefined`` is 1.0; this is not an error.

    Parameters
    ----------
    scores : sequence of float, numpy.ndarray or torch.Tensor
        One score per mosaic; NaN or ``None`` marks an undefined score.

    Returns
    -------
    dict
        ``n`` (all scores), ``n_defined``, ``share_undefined`` (in [0, 1]) and, over the defined
        scores, ``median``, ``mean``, ``q1``, ``q3``, ``min``, ``max`` as Python floats; then
        ``median_undefined_as_zero`` and ``mean_undefined_as_zero``: the same over all ``n`` scores
        with each undefined one counted as 0 (Quantus's convention; always defined).

    Raises
    ------
    FocusError
        When ``scores`` is empty or not a 1-D numeric sequence.

    Examples
    --------
    >>> s = summarize([0.2, 0.4, 0.6, 0.8, float("nan")])
    >>> s["n"], s["n_defined"], s["share_undefined"], s["median"], round(s["q1"], 2)
    (5, 4, 0.2, 0.5, 0.35)
    >>> s["median_undefined_as_zero"], s["mean_undefined_as_zero"]
    (0.4, 0.4)
    """
    array = _non_empty(scores, "scores")
    defined = array[~np.isnan(array)]
    n, n_defined = int(array.size), int(defined.size)
    zeroed = undefined_as_zero(array)
    summary: dict[str, float | int] = {
        "n": n,
        "n_defined": n_defined,
        "share_undefined": (n - n_defined) / n,
    }
    if n_defined == 0:
        summary.update(dict.fromkeys(("median", "mean", "q1", "q3", "min", "max"), math.nan))
        summary.update(median_undefined_as_zero=0.0, mean_undefined_as_zero=0.0)
        return summary
    q1, median, q3 = np.percentile(defined, [25.0, 50.0, 75.0])
    summary.update(
        median=float(median),
        mean=float(defined.mean()),
        q1=float(q1),
        q3=float(q3),
        min=float(defined.min()),
        max=float(defined.max()),
        median_undefined_as_zero=float(np.median(zeroed)),
        mean_undefined_as_zero=float(zeroed.mean()),
    )
    return summary


def undefined_as_zero(scores: Any) -> np.ndarray:
    """The scores with every undefined one (NaN or ``None``) replaced by 0: Quantus's convention.

    Examples
    --------
    >>> undefined_as_zero([0.5, None, 1.0]).tolist()
    [0.5, 0.0, 1.0]
    """
    array = as_scores(scores)
    return np.where(np.isnan(array), 0.0, array)


def bootstrap_median_ci(
    scores: Any, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the median of the defined scores.

    :func:`scipy.stats.bootstrap` (``method="percentile"``) with a numpy generator seeded by
    ``seed``: ``n_resamples`` resamples with replacement, in batches that bound memory, and the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles (linear) of their medians.
    The same ``seed`` gives the same interval. With no defined score it returns ``(nan, nan)``;
    with one, that score twice.

    Parameters
    ----------
    scores : sequence of float, numpy.ndarray or torch.Tensor
        One score per mosaic; NaN or ``None`` scores are dropped.
    confidence : float
        Confidence level, strictly between 0 and 1.
    n_resamples : int
        Number of bootstrap resamples, at least 1.
    seed : int
        Seed of the :func:`numpy.random.default_rng` generator passed to scipy as ``rng``.

    Returns
    -------
    tuple of float
        ``(low, high)``.

    Raises
    ------
    FocusError
        When ``scores`` is empty, ``confidence`` is outside (0, 1) or ``n_resamples`` < 1.

    Examples
    --------
    >>> low, high = bootstrap_median_ci([0.9, 0.8, 0.95, 0.7, 1.0, 0.85], seed=1)
    >>> 0.7 <= low <= high <= 1.0
    True
    """
    if not 0.0 < confidence < 1.0:
        raise FocusError(f"The confidence {confidence!r} is outside (0, 1): pass a level such as 0.95.")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise FocusError(f"n_resamples is {n_resamples!r}: pass a positive integer such as 2000.")
    array = _non_empty(scores, "scores")
    defined = array[~np.isnan(array)]
    if defined.size == 0:
        return math.nan, math.nan
    if defined.size == 1:  # every resample is that value; scipy refuses a single observation
        return float(defined[0]), float(defined[0])
    result = _st.bootstrap(
        (defined,),
        np.median,
        n_resamples=int(n_resamples),
        batch=max(1, _BOOTSTRAP_CHUNK // defined.size),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _paired(a: Any, b: Any, names: tuple[str, str], *, empty_ok: bool = False) -> tuple[np.ndarray, np.ndarray]:
    read = as_scores if empty_ok else _non_empty
    x, y = read(a, names[0]), read(b, names[1])
    if x.size != y.size:
        raise FocusError(
            f"The {names[0]} ({x.size}) and {names[1]} ({y.size}) differ in length: "
            "pass one value of each per mosaic, in the same order."
        )
    both = ~(np.isnan(x) | np.isnan(y))
    return x[both], y[both]


def pearson(x: Any, y: Any) -> tuple[float, float]:
    """Pearson correlation between two paired sequences (e.g. Focus median vs accuracy).

    Pairs where either value is NaN are dropped. At least 3 pairs must remain: two points always
    lie on a line, so r would be +-1 whatever the data (scipy returns that with p = 1); callers
    that show a table catch the :class:`FocusError` and show the correlation as undefined. A
    constant sequence has no correlation: the result is ``(nan, nan)`` (no warning is emitted).

    Parameters
    ----------
    x, y : sequence of float, numpy.ndarray or torch.Tensor
        Paired values of equal length.

    Returns
    -------
    tuple of float
        ``(r, p_value)`` from :func:`scipy.stats.pearsonr` (two-sided).

    Raises
    ------
    FocusError
        When the lengths differ or fewer than 3 pairs are defined.

    Examples
    --------
    >>> r, p = pearson([1, 2, 3, 4], [0.5, 0.6, 0.8, 0.9])
    >>> round(r, 3)
    0.99
    """
    xs, ys = _paired(x, y, ("x values", "y values"))
    if xs.size < 3:
        raise FocusError(
            f"Only {xs.size} pairs are defined: pass at least 3 pairs without NaN to compute a correlation."
        )
    if np.ptp(xs) == 0.0 or np.ptp(ys) == 0.0:
        return math.nan, math.nan
    result = _st.pearsonr(xs, ys)
    return float(result.statistic), float(result.pvalue)


def paired_test(a: Any, b: Any) -> dict[str, float | int | str]:
    """Wilcoxon signed-rank test between two evaluations on the same mosaics.

    ``a[i]`` and ``b[i]`` must be the scores of the same mosaic. Pairs where either score is
    undefined (NaN) are dropped; with no pair left (or none given) every number is NaN and ``n``
    is 0, so two evaluations without a common defined mosaic compare as "no evidence", not an error.
    Zero differences are dropped by the test (scipy's ``zero_method="wilcox"``); when all
    differences are zero the p-value is 1.

    Parameters
    ----------
    a, b : sequence of float, numpy.ndarray or torch.Tensor
        Scores of two methods (or models) on the same mosaic set, in the same order.

    Returns
    -------
    dict
        ``n`` (pairs used), ``median_difference`` and ``mean_difference`` (of ``a - b``),
        ``statistic`` and ``p_value`` (two-sided) of :func:`scipy.stats.wilcoxon`,
        ``test`` = ``"wilcoxon"``, and the effect size ``rank_biserial`` (matched-pairs rank-biserial
        correlation, in [-1, 1]: ``(W+ - W-) / (W+ + W-)`` over the non-zero differences' ranks; positive
        when ``a`` tends to be higher, 0 when every difference is zero).

    Raises
    ------
    FocusError
        When the lengths differ or an input is not a 1-D numeric sequence.

    Examples
    --------
    >>> paired_test([], [])["n"]
    0
    >>> result = paired_test([0.9, 0.8, 0.95, 0.7, 0.85], [0.5, 0.6, 0.4, 0.55, 0.5])
    >>> result["n"], round(result["median_difference"], 2), result["p_value"]
    (5, 0.35, 0.0625)
    """
    xs, ys = _paired(a, b, ("first scores", "second scores"), empty_ok=True)
    result: dict[str, float | int | str] = {
        "n": int(xs.size),
        "median_difference": math.nan,
        "mean_difference": math.nan,
        "statistic": math.nan,
        "p_value": math.nan,
        "test": "wilcoxon",
        "rank_biserial": math.nan,
    }
    if xs.size == 0:
        return result
    differences = xs - ys
    if (differences != 0.0).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's warnings on tiny samples
            test = _st.wilcoxon(differences)
        statistic, p_value = float(test.statistic), float(test.pvalue)
    else:  # no evidence of a difference (scipy refuses a single zero difference)
        statistic, p_value = 0.0, 1.0
    result.update(
        median_difference=float(np.median(differences)),
        mean_difference=float(differences.mean()),
        statistic=statistic,
        p_value=p_value,
        rank_biserial=_rank_biserial(differences),
    )
    return result


def _rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of paired differences (zeros dropped, as the test does)."""
    nonzero = differences[differences != 0.0]
    if nonzero.size == 0:
        return 0.0
    ranks = _st.rankdata(np.abs(nonzero))
    return float((ranks[nonzero > 0].sum() - ranks[nonzero < 0].sum()) / ranks.sum())


def _classes(values: Any, size: int, name: str = "classes") -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1 or array.size != size:
        raise FocusError(
            f"The {name} have shape {array.shape} for {size} scores: pass one target class per mosaic, in order."
        )
    return array


def _convention(scores: np.ndarray, undefined: str) -> np.ndarray:
    if undefined not in UNDEFINED_CONVENTIONS:
        raise FocusError(f"undefined is {undefined!r}: pass one of {', '.join(UNDEFINED_CONVENTIONS)}.")
    return undefined_as_zero(scores) if undefined == "zero" else scores


def _padded_clusters(scores: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(values, sizes)``: one row per class (sorted), its scores then NaN padding; the row lengths."""
    labels = np.unique(classes)
    groups = [scores[classes == label] for label in labels]
    sizes = np.array([g.size for g in groups], dtype=np.int64)
    values = np.full((labels.size, int(sizes.max())), np.nan)
    for row, group in enumerate(groups):
        values[row, : group.size] = group
    return values, sizes


def _cluster_medians(values: np.ndarray, sizes: np.ndarray, picks: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Median of each two-stage resample (NaN when it holds no defined score).

    ``picks`` (B, K): the classes drawn for each resample; ``uniforms`` (B, K, max size) in [0, 1):
    mosaic ``floor(u * n_k)`` of drawn class ``k`` for the first ``n_k`` positions, the rest unused.
    """
    drawn_sizes = sizes[picks]  # (B, K)
    positions = np.minimum((uniforms * drawn_sizes[..., None]).astype(np.int64), drawn_sizes[..., None] - 1)
    resampled = values[picks[..., None], positions]  # (B, K, max size)
    resampled[np.arange(values.shape[1]) >= drawn_sizes[..., None]] = np.nan
    flat = resampled.reshape(picks.shape[0], -1)
    medians = np.full(picks.shape[0], np.nan)
    defined = ~np.isnan(flat).all(axis=1)
    if defined.any():
        medians[defined] = np.nanmedian(flat[defined], axis=1)
    return medians


def cluster_bootstrap_median_ci(
    scores: Any, classes: Any, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
    undefined: str = "exclude",
) -> tuple[float, float]:
    """Two-stage (cluster) percentile-bootstrap interval of the median, resampling target classes and mosaics.

    Each resample draws as many target classes as there are, with replacement, then within each drawn
    class as many of its mosaics as it has, with replacement (undefined ones included, so the share of
    undefined maps varies too), and takes the median of the pooled scores under ``undefined``'s
    convention. The interval is the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles
    (linear) of those medians. :func:`scipy.stats.bootstrap` resamples observations independently, which
    is what this interval must not do, so the two stages are drawn here with a numpy generator seeded
    by ``seed``: per block of resamples, the classes ``rng.integers(0, K, (B, K))`` then the mosaics'
    uniforms ``rng.random((B, K, max class size))`` (see ``tests/focus_core/test_stats.py`` for the slow
    reference). The same ``seed`` gives the same interval. With one class it is the mosaic bootstrap's
    scheme; resamples without a defined score are left out; with no defined score it returns ``(nan, nan)``.

    Parameters
    ----------
    scores : sequence of float, numpy.ndarray or torch.Tensor
        One score per mosaic; NaN or ``None`` marks an undefined one.
    classes : sequence
        The target class of each mosaic (any hashable, sortable labels), same length as ``scores``.
    confidence : float
        Confidence level, strictly between 0 and 1.
    n_resamples : int
        Number of bootstrap resamples, at least 1.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    undefined : str
        ``"exclude"`` (undefined maps left out of each median) or ``"zero"`` (counted as 0, Quantus).

    Returns
    -------
    tuple of float
        ``(low, high)``.

    Raises
    ------
    FocusError
        When ``scores`` is empty, the lengths differ, ``confidence`` is outside (0, 1), ``n_resamples``
        < 1 or ``undefined`` is unknown.

    Examples
    --------
    >>> low, high = cluster_bootstrap_median_ci([0.9, 0.8, 0.2, 0.3, 0.6, 0.5], [0, 0, 1, 1, 2, 2])
    >>> 0.2 <= low <= high <= 0.9
    True
    """
    if not 0.0 < confidence < 1.0:
        raise FocusError(f"The confidence {confidence!r} is outside (0, 1): pass a level such as 0.95.")
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise FocusError(f"n_resamples is {n_resamples!r}: pass a positive integer such as 2000.")
    array = _convention(_non_empty(scores, "scores"), undefined)
    labels = _classes(classes, array.size)
    if np.isnan(array).all():
        return math.nan, math.nan
    values, sizes = _padded_clusters(array, labels)
    rng = np.random.default_rng(seed)
    block = max(1, _BOOTSTRAP_CHUNK // (4 * values.size))  # uniforms, positions, values: a few arrays of that size
    medians = []
    for start in range(0, int(n_resamples), block):
        b = min(block, int(n_resamples) - start)
        picks = rng.integers(0, sizes.size, size=(b, sizes.size))
        uniforms = rng.random(size=(b, sizes.size, values.shape[1]))
        medians.append(_cluster_medians(values, sizes, picks, uniforms))
    all_medians = np.concatenate(medians)
    all_medians = all_medians[~np.isnan(all_medians)]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(all_medians, [alpha, 1.0 - alpha])
    return float(low), float(high)


def per_class_summary(scores: Any, classes: Any) -> list[dict[str, Any]]:
    """:func:`summarize` per target class: which classes the explanations miss (the extended paper's bias angle).

    Returns
    -------
    list of dict
        One dict per class, sorted by class: ``class`` and :func:`summarize`'s keys over that class's mosaics.

    Examples
    --------
    >>> [(r["class"], r["median"]) for r in per_class_summary([0.9, 1.0, 0.1, None], [3, 3, 5, 5])]
    [(3, 0.95), (5, 0.1)]
    """
    array = _non_empty(scores, "scores")
    labels = _classes(classes, array.size)
    return [{"class": label.item() if hasattr(label, "item") else label, **summarize(array[labels == label])}
            for label in np.unique(labels)]


def paired_test_by_class(a: Any, b: Any, classes: Any) -> list[dict[str, Any]]:
    """:func:`paired_test` of ``a - b`` within each target class, sorted by class (``class`` added to each).

    Examples
    --------
    >>> rows = paired_test_by_class([0.9, 0.8, 0.4], [0.5, 0.6, 0.4], [0, 0, 1])
    >>> [(r["class"], r["n"], r["rank_biserial"]) for r in rows]
    [(0, 2, 1.0), (1, 1, 0.0)]
    """
    xs, ys = as_scores(a, "first scores"), as_scores(b, "second scores")
    if xs.size != ys.size:
        raise FocusError(
            f"The first scores ({xs.size}) and second scores ({ys.size}) differ in length: "
            "pass one value of each per mosaic, in the same order."
        )
    labels = _classes(classes, xs.size)
    return [{"class": label.item() if hasattr(label, "item") else label,
             **paired_test(xs[labels == label], ys[labels == label])} for label in np.unique(labels)]


def chance_tolerance(chance: float) -> float:
    """How far a mean over random models may sit from the chance level and still be "about chance".

    The rule: a fifth of the distance from the chance level ``k / N²`` to the nearer end of Focus's range
    ``[0, 1]``, ``min(chance, 1 - chance) / 5``. Why this one:

    - on the paper's mosaics (2x2, two target tiles: chance 0.5) it is the ±0.1 the paper's random models
      are read against;
    - it scales with the chance level, so a 3x3 mosaic with one target tile (chance 0.111) accepts 0.089 to
      0.133, not 0.011 to 0.211, which a fixed ±0.1 would: that band reaches from "relevance avoids the
      target" to "twice chance";
    - it is symmetric in the room Focus has on either side, so the band never reaches 0 or 1 (a chance
      level near 1, e.g. 8 target tiles of 9, does not accept a perfect score).

    Raises
    ------
    FocusError
        For a chance level outside ``(0, 1)``.

    Examples
    --------
    >>> chance_tolerance(0.5), round(chance_tolerance(1 / 9), 4), round(chance_tolerance(8 / 9), 4)
    (0.1, 0.0222, 0.0222)
    """
    if isinstance(chance, bool) or not isinstance(chance, (int, float)) or not 0 < chance < 1:
        raise FocusError(f"Expected a chance level k/N² strictly between 0 and 1 but got {chance!r}.")
    return min(float(chance), 1 - float(chance)) / 5


def about_chance(value: float, chance: float) -> bool | None:
    """Whether ``value`` (a mean over random models) is within :func:`chance_tolerance` of ``chance``.

    ``None`` when ``value`` is undefined (NaN or ``None``).

    Examples
    --------
    >>> about_chance(0.42, 0.5), about_chance(0.211, 1 / 9), about_chance(float("nan"), 0.5)
    (True, False, None)
    """
    if value is None or math.isnan(float(value)):
        return None
    return bool(abs(float(value) - chance) <= chance_tolerance(chance) + 1e-12)


def seed_summary(medians: Any, chance: float = 0.5) -> dict[str, Any]:
    """Mean and spread over randomization seeds of one statistic (e.g. each random model's median Focus).

    "A random model scores about ``chance``" is judged on the mean over seeds with :func:`about_chance`
    (within :func:`chance_tolerance` of ``chance``); one seed's median over a few classes is a handful of coin
    flips.

    Returns
    -------
    dict
        ``n_seeds`` (defined values), ``mean``, ``std`` (sample standard deviation, ddof=1; NaN for one
        seed), ``min``, ``max``, ``chance``, ``tolerance`` and ``about_chance`` (``None`` without a value).

    Examples
    --------
    >>> s = seed_summary([0.45, 0.55, 0.5])
    >>> s["n_seeds"], round(s["mean"], 3), round(s["std"], 3), s["about_chance"], s["tolerance"]
    (3, 0.5, 0.05, True, 0.1)
    """
    array = as_scores(medians, "seed medians")
    defined = array[~np.isnan(array)]
    result: dict[str, Any] = {"n_seeds": int(defined.size), "mean": math.nan, "std": math.nan, "min": math.nan,
                              "max": math.nan, "chance": float(chance), "tolerance": chance_tolerance(chance),
                              "about_chance": None}
    if defined.size == 0:
        return result
    mean = float(defined.mean())
    result.update(mean=mean, std=float(defined.std(ddof=1)) if defined.size > 1 else math.nan,
                  min=float(defined.min()), max=float(defined.max()), about_chance=about_chance(mean, chance))
    return result


#: The test :func:`randomization_test` runs, as the report names it.
RANDOMIZATION_TEST = ("one-sided Wilcoxon signed-rank test, trained > mean of the random seeds, paired by mosaic "
                      "and by target-class median")


def randomization_test(trained: Any, random_by_seed: Any, classes: Any | None = None,
                       alpha: float = 0.05) -> dict[str, Any]:
    """Is the trained model's Focus significantly above its random copies'? (the randomization test as a decision)

    Each mosaic's random score is the mean over the seeds that scored it (defined); the trained score
    minus that is tested with a one-sided Wilcoxon signed-rank test (alternative: greater) over the
    mosaics defined in both. Mosaics of one class are correlated, so when ``classes`` is given the same
    test is also run on the per-class medians of the two (one pair per target class), and the decision
    needs both p-values below ``alpha``.

    Parameters
    ----------
    trained : sequence of float
        The trained checkpoint's Focus per mosaic (NaN where undefined).
    random_by_seed : array-like of shape (seeds, mosaics)
        Each random model's Focus on the same mosaics, in the same order.
    classes : sequence, optional
        The target class of each mosaic.
    alpha : float
        Significance level.

    Returns
    -------
    dict
        ``n`` (mosaics paired), ``n_seeds``, ``trained_median``, ``random_median`` (of the per-mosaic seed
        means), ``median_difference``, ``statistic``, ``p_value``, ``rank_biserial``, and with ``classes``
        ``n_classes`` and ``p_value_classes``; ``alpha``, ``significant`` (bool) and ``test`` (its name).

    Raises
    ------
    FocusError
        When the shapes do not match.

    Examples
    --------
    >>> trained = [0.9, 0.8, 0.85, 0.95] * 6
    >>> r = randomization_test(trained, [[0.5] * 24, [0.4] * 24], classes=[c for c in range(6) for _ in range(4)])
    >>> r["significant"], r["n"], r["n_classes"], round(r["p_value_classes"], 4)
    (True, 24, 6, 0.0156)
    """
    xs = as_scores(trained, "trained scores")
    random = np.asarray(random_by_seed, dtype=np.float64)
    if random.ndim != 2 or random.shape[1] != xs.size:
        raise FocusError(
            f"The random scores have shape {random.shape} for {xs.size} trained scores: pass one row per seed "
            "with one score per mosaic, in the trained scores' order."
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a mosaic no seed defined: NaN, dropped below
        random_mean = np.nanmean(random, axis=0) if random.shape[0] else np.full(xs.size, np.nan)
    both = ~(np.isnan(xs) | np.isnan(random_mean))
    result: dict[str, Any] = {"n": int(both.sum()), "n_seeds": int(random.shape[0]), "trained_median": math.nan,
                              "random_median": math.nan, "median_difference": math.nan, "statistic": math.nan,
                              "p_value": math.nan, "rank_biserial": math.nan, "alpha": float(alpha),
                              "significant": False, "test": RANDOMIZATION_TEST}
    if classes is not None:
        result.update(n_classes=0, p_value_classes=math.nan)
    if not both.any():
        return result
    differences = xs[both] - random_mean[both]
    result.update(trained_median=float(np.median(xs[both])), random_median=float(np.median(random_mean[both])),
                  median_difference=float(np.median(differences)), rank_biserial=_rank_biserial(differences))
    result["statistic"], result["p_value"] = _one_sided_wilcoxon(differences)
    significant = result["p_value"] < alpha
    if classes is not None:
        labels = _classes(classes, xs.size)[both]
        groups = np.unique(labels)
        class_diff = np.array([np.median(xs[both][labels == g]) - np.median(random_mean[both][labels == g])
                               for g in groups])
        result["n_classes"] = int(groups.size)
        result["p_value_classes"] = _one_sided_wilcoxon(class_diff)[1]
        significant = significant and result["p_value_classes"] < alpha
    result["significant"] = bool(significant)
    return result


def _one_sided_wilcoxon(differences: np.ndarray) -> tuple[float, float]:
    if not (differences != 0.0).any():
        return math.nan, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        test = _st.wilcoxon(differences, alternative="greater")
    return float(test.statistic), float(test.pvalue)
