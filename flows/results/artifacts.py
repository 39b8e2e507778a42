"""What leaves a flow: Prefect artifacts with safe keys and calls that cannot fail a run, and JSON-safe numbers.

Prefect refuses an artifact key with anything but lowercase letters, digits and dashes, and it refuses it
when the artifact is created, at the end of a flow whose work is done. :func:`artifact_key` turns any text
into a valid key, so a name can never fail a finished run. Artifacts (tables, figures, progress) describe
work that is already in the store: :func:`best_effort` makes a call that the API refuses or never answers
(a server restarting, a lost network) a warning, never a failed or mislabelled run.

**NaN to None at the boundary.** What a flow returns, shows in an artifact or prints is valid JSON.

Inside the science an undefined number is NaN (numpy, pandas, :mod:`focus_core.stats`: a Focus median with no
defined map, a p-value of no pairs). JSON has no NaN, and a reader of a flow's result should see "none", so
where a number leaves a flow (its return value, a table artifact, the command line's printed result) it goes
through :func:`number`, which turns NaN (and anything that is not a number) into None. The command line's
printed result, a nested dict, goes through :func:`json_safe`, which also turns infinities into None.

This module imports only the standard library, so the command line can use it without loading a flow.

Examples
--------
>>> artifact_key("training", "My_Run v2.1", "0f1819c26eca")
'training-my-run-v2-1-0f1819c26eca'
>>> number(float("nan")), number(None), number(0.123456, digits=4), number(3)
(None, None, 0.1235, 3.0)
>>> json_safe({"median": float("nan"), "values": (1.0, float("inf")), "n": 3})
{'median': None, 'values': [1.0, None], 'n': 3}
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MAX_KEY_LENGTH", "artifact_key", "best_effort", "json_safe", "number"]

T = TypeVar("T")

#: Longer keys are cut and end in a hash of the whole text, so two long names keep two keys.
MAX_KEY_LENGTH = 120
_NOT_ALLOWED = re.compile(r"[^a-z0-9]+")


def artifact_key(*parts: object) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) made of ``parts``, joined with dashes.

    Each run of other characters becomes one dash; leading and trailing dashes go. Keys from
    names that differ only in case or punctuation coincide (Prefect then keeps one artifact per
    key, the latest): include a hash in ``parts`` where that matters.

    Raises
    ------
    ValueError
        When nothing of ``parts`` is left to make a key of.

    Examples
    --------
    >>> artifact_key("focus", "ABC_def", "../x y")
    'focus-abc-def-x-y'
    >>> len(artifact_key("training", "n" * 500)) <= MAX_KEY_LENGTH
    True
    """
    text = "-".join(str(part) for part in parts)
    key = _NOT_ALLOWED.sub("-", text.lower()).strip("-")
    if not key:
        raise ValueError(f"No artifact key can be made of {parts!r}: give a part with a letter or digit.")
    if len(key) > MAX_KEY_LENGTH:
        digest = hashlib.sha256(text.encode()).hexdigest()[:12]
        key = f"{key[:MAX_KEY_LENGTH - len(digest) - 1].rstrip('-')}-{digest}"
    return key


def best_effort(create: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Call the Prefect artifact function ``create``; when it fails, log a warning and return ``None``.

    For ``create_table_artifact``, ``create_progress_artifact``, ``update_progress_artifact`` and the like,
    whose failure (``httpx.ConnectError``, an HTTP error status, a timeout) says nothing about the stored work.

    Examples
    --------
    >>> def unreachable(progress: float) -> None:
    ...     raise ConnectionError("All connection attempts failed")
    >>> best_effort(unreachable, 50.0) is None
    True
    """
    try:
        return create(*args, **kwargs)
    except Exception as error:  # noqa: BLE001 - an artifact never fails the work it describes
        _logger().warning("Prefect artifact not recorded (%s: %s); the results are stored all the same",
                          type(error).__name__, " ".join(str(error).split())[:200] or "no message")
        return None


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside a flow or task run, else this module's."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:  # pragma: no cover - prefect is a dependency
        pass
    return logging.getLogger(__name__)

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
