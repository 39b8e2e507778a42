"""Keys of the flows' Prefect artifacts, derived safely from names and hashes.

Prefect refuses an artifact key with anything but lowercase letters, digits and dashes, and it refuses it
when the artifact is created, at the end of a flow whose work is done. :func:`artifact_key` turns any text
into a valid key, so a name can never fail a finished run.

Examples
--------
>>> artifact_key("training", "My_Run v2.1", "0f1819c26eca")
'training-my-run-v2-1-0f1819c26eca'
"""

from __future__ import annotations

import hashlib
import re

__all__ = ["MAX_KEY_LENGTH", "artifact_key"]

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
