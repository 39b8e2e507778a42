"""The z^B bounds the flows give LRP: the dataset's input domain after normalisation, per channel.

The paper's z^B rule bounds the first layer's input by the input domain; the flows fill an LRP method's
``low`` and ``high`` with ``(0 - mean) / std`` and ``(1 - mean) / std`` of the dataset the mosaics are
normalised with (:func:`focus_core.explainers.lrp.dataset_bounds`) when the method names neither. Bounds a
request names are kept: numbers, or ``"sample"`` for each sample's own minimum and maximum, the identity of
the evaluations recorded before the flows passed the dataset's bounds. The filled bounds are part of the
method's parameters, so of its hash and of every evaluation key: an evaluation with dataset bounds never
resumes, or is mistaken for, one with per-sample bounds.
"""

from __future__ import annotations

from typing import Any, TypeVar

from flows.worker import caches
from flows.specs import DatasetSpec, MethodSpec
from focus_core import explainers
from focus_core.explainers.lrp import dataset_bounds

__all__ = ["with_dataset_bounds", "method_with_dataset_bounds"]

Params = TypeVar("Params")


def method_with_dataset_bounds(method: MethodSpec, dataset: DatasetSpec) -> MethodSpec:
    """``method`` with the dataset's z^B bounds where it takes bounds and names none; else ``method`` itself."""
    spec = getattr(explainers.EXPLAINERS.get(method.name), "spec", {})
    if "low" not in spec or "high" not in spec or "low" in method.params or "high" in method.params:
        return method
    loaded = caches.load_dataset(dataset)
    low, high = dataset_bounds(list(loaded.mean), list(loaded.std))
    return method.model_copy(update={"params": {**method.params, "low": low, "high": high}})


def with_dataset_bounds(params: Params) -> Params:
    """A request (anything with ``methods`` and ``dataset``) whose LRP methods carry the dataset's z^B bounds."""
    request: Any = params
    methods = [method_with_dataset_bounds(m, request.dataset) for m in request.methods]
    return request.model_copy(update={"methods": methods})
