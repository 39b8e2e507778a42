"""Statistics over Focus scores: summaries, a bootstrap interval, correlation, a paired test.

Focus is undefined for a map without positive relevance; such scores arrive as NaN (or
``None``, the way SQL ``NULL`` comes back). Every function here drops them and says how many
it dropped, never counting them as 0 or 0.5. Inputs may be lists, numpy arrays or CPU/GPU
torch tensors; torch is not imported.

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

__all__ = ["as_scores", "summarize", "bootstrap_median_ci", "pearson", "paired_test"]

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
        scores, ``median``, ``mean``, ``q1``, ``q3``, ``min``, ``max`` as Python floats.

    Raises
    ------
    FocusError
        When ``scores`` is empty or not a 1-D numeric sequence.

    Examples
    --------
    >>> s = summarize([0.2, 0.4, 0.6, 0.8, float("nan")])
    >>> s["n"], s["n_defined"], s["share_undefined"], s["median"], round(s["q1"], 2)
    (5, 4, 0.2, 0.5, 0.35)
    """
    array = _non_empty(scores, "scores")
    defined = array[~np.isnan(array)]
    n, n_defined = int(array.size), int(defined.size)
    summary: dict[str, float | int] = {
        "n": n,
        "n_defined": n_defined,
        "share_undefined": (n - n_defined) / n,
    }
    if n_defined == 0:
        summary.update(dict.fromkeys(("median", "mean", "q1", "q3", "min", "max"), math.nan))
        return summary
    q1, median, q3 = np.percentile(defined, [25.0, 50.0, 75.0])
    summary.update(
        median=float(median),
        mean=float(defined.mean()),
        q1=float(q1),
        q3=float(q3),
        min=float(defined.min()),
        max=float(defined.max()),
    )
    return summary


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
        ``statistic`` and ``p_value`` (two-sided) of :func:`scipy.stats.wilcoxon`, and
        ``test`` = ``"wilcoxon"``.

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
    }
    if xs.size == 0:
        return result
    differences = xs - ys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-zero differences: scipy divides by 0
        test = _st.wilcoxon(differences)
    result.update(
        median_difference=float(np.median(differences)),
        mean_difference=float(differences.mean()),
        statistic=float(test.statistic),
        p_value=float(test.pvalue),
    )
    return result
