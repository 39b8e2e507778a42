"""A model whose logits are NaN or infinite is named as the fault, in one sentence, before any relevance is used."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from focus_core import explainers, models
from focus_core.errors import FocusError

BLAMES_THE_MODEL = r"The model's logits are NaN or infinite .*the model is at fault, not the explainer"


def _digits_cnn(poison: float | None) -> nn.Module:
    torch.manual_seed(0)
    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
    if poison is not None:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = poison
    return model.eval()


class _NaNLogits(nn.Module):
    """A factory's model whose logits are NaN whatever the input."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.relu(self.conv(x)).mean(dim=(2, 3))
        return self.head(features) * float("nan")


@pytest.mark.parametrize("method", ["gradcam", "gradient", "smoothgrad", "lrp_fast"])
@pytest.mark.parametrize("poison", [float("nan"), float("inf")], ids=["nan-weight", "inf-weight"])
def test_nan_or_inf_weights_blame_the_model(method: str, poison: float) -> None:
    inputs, targets = torch.rand(3, 1, 64, 64), torch.tensor([0, 1, 2])
    with pytest.raises(FocusError, match=BLAMES_THE_MODEL) as error:
        explainers.get_explainer(method)(_digits_cnn(poison), inputs, targets)
    assert "\n" not in str(error.value)


def test_a_model_whose_logits_are_nan_blames_the_model() -> None:
    with pytest.raises(FocusError, match=BLAMES_THE_MODEL):
        explainers.get_explainer("gradcam", layer="relu")(_NaNLogits(), torch.rand(2, 1, 16, 16), torch.tensor([0, 1]))


def test_a_finite_model_is_explained_as_before() -> None:
    relevance = explainers.get_explainer("gradcam")(_digits_cnn(None), torch.rand(2, 1, 64, 64), torch.tensor([0, 1]))
    assert torch.isfinite(relevance).all()
