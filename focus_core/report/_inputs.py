"""Checks of the plain data the figures take: score mappings, defined scores, fractions.

Each check raises :class:`~focus_core.errors.FocusError` with a message that says what to pass.

Examples
--------
>>> from focus_core.report._inputs import defined_scores
>>> defined_scores([0.5, float("nan"), 0.7], "scores")
(array([0.5, 0.7]), 1)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from focus_core.errors import FocusError
from focus_core.stats import as_scores

__all__ = ["non_empty_mapping", "defined_scores", "check_fraction"]


def non_empty_mapping(value: Any, name: str) -> Mapping:
    """``value`` when it is a non-empty mapping; a :class:`FocusError` naming ``name`` otherwise."""
    if not isinstance(value, Mapping) or len(value) == 0:
        raise FocusError(f"The {name} must be a non-empty mapping: pass a dict such as {{'gradcam': scores}}.")
    return value


def defined_scores(values: Any, name: str) -> tuple[np.ndarray, int]:
    """Defined scores and the number of undefined ones.

    Raises
    ------
    FocusError
        When the scores are empty or not a 1-D numeric sequence.
    """
    scores = as_scores(values, name)
    if scores.size == 0:
        raise FocusError(f"The {name} are empty: pass at least one score.")
    defined = scores[~np.isnan(scores)]
    return defined, int(scores.size - defined.size)


def check_fraction(values: np.ndarray, key: str) -> None:
    """Reject values outside [0, 1] (NaN is allowed), e.g. an accuracy given in percent.

    Examples
    --------
    >>> check_fraction(np.array([0.2, np.nan]), "val_accuracy")
    >>> check_fraction(np.array([97.0]), "val_accuracy")
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The 'val_accuracy' values are outside [0, 1]: pass accuracy and Focus as fractions, not percentages.
    """
    if np.nanmax(values, initial=0.0) > 1.0 or np.nanmin(values, initial=0.0) < 0.0:
        raise FocusError(
            f"The '{key}' values are outside [0, 1]: pass accuracy and Focus as fractions, not percentages."
        )
