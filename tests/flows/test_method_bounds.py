"""The flows give LRP the dataset's z^B bounds, keep bounds a request names, and leave other methods alone."""

from __future__ import annotations

import pytest

from flows.worker import caches
from flows.worker.method_bounds import method_with_dataset_bounds, with_dataset_bounds
from flows.params import DatasetSpec, EvaluateParams, MethodSpec, ModelSpec, SweepParams
from flows.sweep import sweep_cells
from focus_core.explainers import get_explainer
from focus_core.explainers.lrp import dataset_bounds


def test_lrp_gets_the_datasets_bounds_per_channel() -> None:
    dataset = DatasetSpec()
    loaded = caches.load_dataset(dataset)
    low, high = dataset_bounds(list(loaded.mean), list(loaded.std))
    for name in ("lrp", "lrp_fast"):
        method = method_with_dataset_bounds(MethodSpec(name=name), dataset)
        assert method.params == {"low": low, "high": high}
        assert len(low) == int(loaded.tiles.shape[1])  # one per channel
        assert low[0] == pytest.approx(-loaded.mean[0] / loaded.std[0])
        assert high[0] == pytest.approx((1 - loaded.mean[0]) / loaded.std[0])
        explainer = get_explainer(name, **method.params)
        assert explainer.params_hash != get_explainer(name).params_hash
    kept = MethodSpec(name="lrp", params={"low": "sample", "high": "sample", "epsilon": 0.01})
    assert method_with_dataset_bounds(kept, dataset) is kept
    assert get_explainer("lrp", **kept.params).params == {**get_explainer("lrp", epsilon=0.01).params}
    gradcam = MethodSpec(name="gradcam")
    assert method_with_dataset_bounds(gradcam, dataset) is gradcam


def test_evaluate_and_sweep_requests_carry_the_bounds(digits_weights: str) -> None:
    params = EvaluateParams(model=ModelSpec(weights=digits_weights), methods=[{"name": "lrp"}, {"name": "gradcam"}])
    resolved = with_dataset_bounds(params)
    assert set(resolved.methods[0].params) == {"low", "high"} and resolved.methods[1].params == {}
    assert with_dataset_bounds(resolved) == resolved  # once filled, the same request
    cells = sweep_cells(SweepParams(checkpoints=[ModelSpec(weights=digits_weights)], methods=[{"name": "lrp"}]))
    assert cells[0].methods[0].params == resolved.methods[0].params
