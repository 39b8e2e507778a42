"""Natural keys: content hashes that make every registration and evaluation idempotent."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from db.errors import StoreError

__all__ = ["canonical_hash", "params_hash", "evaluation_key", "reliance_key"]


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of ``value`` (sorted keys, no spaces, ASCII escapes, no NaN), UTF-8 encoded.

    The same formula as ``focus_core.hashing.canonical_hash``, written again here because the record layer
    imports nothing from ``focus_core`` (tests/flows/test_stored_hashes.py checks that the two agree).

    Examples
    --------
    >>> canonical_hash({"b": 1, "a": [1, 2]}) == canonical_hash({"a": [1, 2], "b": 1})
    True
    """
    try:
        payload = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"Expected JSON-serialisable values without NaN but got {value!r} ({exc}).") from None
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def params_hash(name: str, params: dict[str, Any]) -> str:
    """The natural key of an attribution method: sha256 of the canonical JSON of ``{name, params}``.

    Examples
    --------
    >>> len(params_hash("gradcam", {"layer": None}))
    64
    """
    return canonical_hash({"name": name, "params": params})


def evaluation_key(
    checkpoint_id: int,
    method_id: int,
    mosaic_set_id: int,
    randomization: str = "none",
    stage: int | None = None,
    layer: str | None = None,
    audit_run_id: int | None = None,
    seed: int | None = None,
) -> str:
    """The natural key of an evaluation: sha256 of every input that changes its numbers.

    Those are the checkpoint, the method (its explicit parameters, precision included), the mosaic set (which
    fixes the dataset, its tile size and normalisation), the randomization (kind, stage, layer and seed) and the
    audit run. The seed of a randomization is part of the key; an unrandomized model has none (``seed`` must be
    ``None`` when ``randomization == "none"``). Batch size, device and worker are not: the maps do not depend
    on them beyond float tolerance.

    Examples
    --------
    >>> evaluation_key(1, 2, 3) == evaluation_key(1, 2, 3, "none")
    True
    >>> evaluation_key(1, 2, 3, "full", seed=0) == evaluation_key(1, 2, 3, "full", seed=1)
    False
    """
    if randomization == "none" and seed is not None:
        raise StoreError(f"An evaluation without randomization has no randomization seed but got {seed!r}.")
    return canonical_hash(
        {
            "checkpoint": int(checkpoint_id),
            "method": int(method_id),
            "mosaic_set": int(mosaic_set_id),
            "randomization": randomization,
            "stage": None if stage is None else int(stage),
            "layer": layer,
            "audit_run": None if audit_run_id is None else int(audit_run_id),
            "seed": None if seed is None else int(seed),
        }
    )


def reliance_key(
    checkpoint_id: int,
    mosaic_set_id: int,
    randomization: str = "none",
    stage: int | None = None,
    layer: str | None = None,
    seed: int | None = None,
    baseline: str = "mean",
    disconnected: bool = False,
) -> str:
    """The natural key of a model-reliance pass: the model (checkpoint and randomization, as
    :func:`evaluation_key` has them, and whether it is disconnected: each tile through the feature extractor on its
    own), the mosaic set and the baseline a tile is replaced by.

    No method and no audit run: the drops are the model's, shared by every evaluation of that model and set.
    ``disconnected`` enters the hash only when true, so a connected pass keeps its key.

    Examples
    --------
    >>> reliance_key(1, 3) == reliance_key(1, 3, baseline="blur")
    False
    >>> connected = reliance_key(1, 3)
    >>> connected == reliance_key(1, 3, disconnected=False), connected == reliance_key(1, 3, disconnected=True)
    (True, False)
    """
    if randomization == "none" and seed is not None:
        raise StoreError(f"A reliance pass without randomization has no randomization seed but got {seed!r}.")
    identity = {
        "checkpoint": int(checkpoint_id),
        "mosaic_set": int(mosaic_set_id),
        "randomization": randomization,
        "stage": None if stage is None else int(stage),
        "layer": layer,
        "seed": None if seed is None else int(seed),
        "baseline": baseline,
    }
    return canonical_hash({**identity, "disconnected": True} if disconnected else identity)
