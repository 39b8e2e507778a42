"""The flows' Prefect artifacts: keys derived safely from names and hashes, and calls that cannot fail a run.

Prefect refuses an artifact key with anything but lowercase letters, digits and dashes, and it refuses it
when the artifact is created, at the end of a flow whose work is done. :func:`artifact_key` turns any text
into a valid key, so a name can never fail a finished run. Artifacts (tables, figures, progress) describe
work that is already in the store: :func:`best_effort` makes a call that the API refuses or never answers
(a server restarting, a lost network) a warning, never a failed or mislabelled run.

Examples
--------
>>> artifact_key("training", "My_Run v2.1", "0f1819c26eca")
'training-my-run-v2-1-0f1819c26eca'
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["MAX_KEY_LENGTH", "artifact_key", "best_effort"]

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
