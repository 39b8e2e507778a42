"""NaN to None at the boundary: what a flow returns, shows in an artifact or prints is valid JSON.

Inside the science an undefined number is NaN (numpy, pandas, :mod:`focus_core.stats`: a Focus median with no
defined map, a p-value of no pairs). JSON has no NaN, and a reader of a flow's result should see "none", so
where a number leaves a flow (its return value, a table artifact, the command line's printed result) it goes
through :func:`number`, which turns NaN (and anything that is not a number) into None. The command line's
printed result, a nested dict, goes through :func:`json_safe`, which also turns infinities into None.

This module imports only the standard library, so the command line can use it without loading a flow.

Examples
--------
>>> number(float("nan")), number(None), number(0.123456, digits=4), number(3)
(None, None, 0.1235, 3.0)
>>> json_safe({"median": float("nan"), "values": (1.0, float("inf")), "n": 3})
{'median': None, 'values': [1.0, None], 'n': 3}
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["json_safe", "number"]


def number(value: Any, digits: int | None = None) -> float | None:
    """Return ``value`` as a Python float, or None where it is missing, not a number, or NaN.

    Parameters
    ----------
    value : Any
        A float, a numpy scalar, an int, None, pandas' NA...
    digits : int, optional
        Round to this many decimal places (``round(value, digits)``); no rounding when None.

    Returns
    -------
    float or None
        None for None, NaN or a value ``float()`` refuses; infinities are kept (``json_safe`` drops them).

    Examples
    --------
    >>> import numpy as np
    >>> number(np.float32(0.5)), number(np.nan), number("n/a"), number(float("inf"), digits=4)
    (0.5, None, None, inf)
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(value):
        return None
    return value if digits is None else round(value, digits)


def json_safe(value: Any) -> Any:
    """Return ``value`` with every NaN and infinity in it, at any depth of dicts, lists and tuples, as None.

    Tuples become lists, finite floats (numpy's too) Python floats; strings, ints and booleans are kept.

    Examples
    --------
    >>> json_safe([{"p": float("-inf")}, "x", True])
    [{'p': None}, 'x', True]
    """
    if isinstance(value, float):
        return None if math.isinf(value) else number(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value
