"""Canonical JSON and its sha256: the one formula behind every content identity.

A dataset's fingerprint, a mosaic manifest's hash, an explainer's ``params_hash`` and a training run's
config hash are :func:`canonical_hash` of a JSON value: keys sorted, no whitespace, non-ASCII characters
escaped (``json.dumps``' default), no NaN or infinity, encoded as UTF-8. The same value gives the same
64 hexadecimal characters in every process and on every machine, so a hash recorded in the store keeps
matching. ``db.keys.canonical_hash`` is the same formula for the record layer (``db`` imports nothing
from ``focus_core``, and ``focus_core`` nothing from ``db``); a test checks that the two agree.

This module imports only the standard library, so flow parameters and the command line can use it
without loading torch.

Examples
--------
>>> canonical_json({"b": 1, "a": [1.5, None, "é"]})
'{"a":[1.5,null,"\\\\u00e9"],"b":1}'
>>> canonical_hash({"b": 1, "a": 2}) == canonical_hash({"a": 2, "b": 1})
True
>>> len(canonical_hash([]))
64
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from focus_core.errors import FocusError

__all__ = ["canonical_hash", "canonical_json"]


def canonical_json(value: Any, *, sort_keys: bool = True, compact: bool = True) -> str:
    """Return the canonical JSON text of ``value``.

    Parameters
    ----------
    value : Any
        Dicts with string keys, lists, tuples, strings, finite numbers, booleans and None, nested freely.
    sort_keys : bool
        Sort the keys of every dict (the canonical form). ``False`` keeps insertion order; only the tile
        cache's key uses it, so that caches written before this module keep their names.
    compact : bool
        No whitespace (the canonical form). ``False`` writes ``json.dumps``' default ``", "`` and ``": "``
        separators; only ``TrainParams.config_hash`` uses it, so that recorded training runs keep their key.

    Returns
    -------
    str
        The text; equal values (dicts in any key order, with ``sort_keys``) give equal text.

    Raises
    ------
    FocusError
        When ``value`` holds something JSON has no form for (an object, a NaN, an infinity).

    Examples
    --------
    >>> canonical_json({"seed": 0, "layer": None})
    '{"layer":null,"seed":0}'
    >>> canonical_json({"seed": 0, "layer": None}, sort_keys=False, compact=False)
    '{"seed": 0, "layer": null}'
    """
    try:
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":") if compact else None, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise FocusError(
            f"This value cannot be hashed ({error}): pass only dicts with string keys, lists, strings, finite "
            f"numbers, booleans and None."
        ) from None


def canonical_hash(value: Any, *, sort_keys: bool = True, compact: bool = True) -> str:
    """Return the sha256 (hex) of :func:`canonical_json` of ``value``, encoded as UTF-8.

    Parameters
    ----------
    value : Any
        A JSON value, as for :func:`canonical_json`.
    sort_keys, compact : bool
        As for :func:`canonical_json`; the defaults are the canonical form every new identity uses.

    Returns
    -------
    str
        64 hexadecimal characters, the same in every process.

    Raises
    ------
    FocusError
        When ``value`` holds something JSON has no form for.

    Examples
    --------
    >>> canonical_hash({"name": "gradient", "params": {}})[:12]
    '50652fb5c480'
    """
    return hashlib.sha256(canonical_json(value, sort_keys=sort_keys, compact=compact).encode("utf-8")).hexdigest()
