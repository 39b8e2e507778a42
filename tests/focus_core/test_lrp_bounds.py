"""LRP's z^B bounds: the dataset's input domain per channel (the paper's rule), per-sample bounds as an explicit
choice that keeps the identity of every evaluation recorded with them, and zennit's own rules as the reference."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from zennit.attribution import Gradient
from zennit.composites import SpecialFirstLayerMapComposite
from zennit.rules import Epsilon, Pass, ZBox, ZPlus

from focus_core.errors import FocusError
from focus_core.explainers import get_explainer
from focus_core.explainers.lrp import SAMPLE_BOUNDS, dataset_bounds

#: The stored hash of LRP with per-sample bounds (tests/flows/test_stored_hashes.py pins it too).
LRP_SAMPLE_HASH = "10f898e2c10495f6201c171e7f4b94529b45acb0211d26197258bdd35000dd02"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize("name", ["lrp", "lrp_fast"])
def test_per_sample_bounds_keep_the_old_identity_and_dataset_bounds_get_a_new_one(name: str) -> None:
    default, sample = get_explainer(name), get_explainer(name, low=SAMPLE_BOUNDS, high=SAMPLE_BOUNDS)
    assert sample.params == default.params and sample.params_hash == default.params_hash
    if name == "lrp":
        assert sample.params_hash == LRP_SAMPLE_HASH
    low, high = dataset_bounds(MEAN, STD)
    bounded = get_explainer(name, low=low, high=high)
    assert bounded.params["low"] == pytest.approx([-m / s for m, s in zip(MEAN, STD)])
    assert bounded.params["high"] == pytest.approx([(1 - m) / s for m, s in zip(MEAN, STD)])
    assert bounded.params_hash != default.params_hash
    with pytest.raises(FocusError, match='"sample" or None'):
        get_explainer(name, low="dataset", high="dataset")


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 5)).eval()


def _zennit_reference(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, low, high) -> torch.Tensor:
    """The paper's rules written with zennit's classes: ZBox first, ZPlus on convolutions, Epsilon on linear."""
    composite = SpecialFirstLayerMapComposite(
        layer_map=[(nn.ReLU, Pass()), (nn.Conv2d, ZPlus()), (nn.Linear, Epsilon(epsilon=1e-6))],
        first_map=[(nn.Conv2d, ZBox(low=low, high=high))])
    with Gradient(model=model, composite=composite) as attributor:
        logits = model(x).detach()
        start = torch.zeros_like(logits).scatter_(1, targets[:, None], logits.gather(1, targets[:, None]))
        _, relevance = attributor(x, start)
    return relevance.sum(1)


@pytest.mark.parametrize("name", ["lrp", "lrp_fast"])
def test_dataset_bounds_match_zennit(name: str) -> None:
    model = _model()
    pixels = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    x, targets = (pixels - mean) / std, torch.tensor([0, 1, 2, 4])
    low, high = dataset_bounds(MEAN, STD)
    expected = _zennit_reference(model, x, targets, torch.tensor(low).view(1, 3, 1, 1),
                                 torch.tensor(high).view(1, 3, 1, 1))
    got = get_explainer(name, low=low, high=high)(model, x, targets)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # per-sample bounds are another rule: their maps differ, which is why they keep a key of their own
    sample = get_explainer(name, low=SAMPLE_BOUNDS, high=SAMPLE_BOUNDS)(model, x, targets)
    assert not torch.allclose(sample, expected, rtol=1e-3, atol=1e-4)
    per_sample = _zennit_reference(model, x, targets, x.amin(dim=(1, 2, 3), keepdim=True),
                                   x.amax(dim=(1, 2, 3), keepdim=True))
    torch.testing.assert_close(sample, per_sample, rtol=1e-4, atol=1e-5)
