"""The fast LRP path against the zennit reference (:mod:`focus_core.explainers.lrp`), rule for rule.

zennit is the slow, obvious implementation here: every map of :class:`FastLRP` must match its map on the same
model and inputs. Models are small (32-64 px, batch 2-4) so the file stays within seconds on two cores.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers.base import params_hash
from focus_core.explainers.fast_lrp import FastLRP, fast_lrp
from focus_core.explainers.lrp import LRP
from focus_core.models import DigitsCNN


def relative_l1(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().sum() / expected.abs().sum())


def with_batch_norm_statistics(model: nn.Module, seed: int = 0, eps: float = 0.0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters.

    ``eps=0`` makes zennit's merged BatchNorm an exact identity (it computes ``x / sqrt(1 + eps)``), so the
    comparison measures the implementation alone.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.2)
                module.eps = eps
    return model.eval()


class FunctionalCNN(nn.Module):
    """Functional ReLU, ``view``/``size``, and a BatchNorm after a ReLU (not merged: a conv on signed inputs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu = nn.ReLU()
        self.norm = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.fc(x.view(x.size(0), -1))


def build(arch: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if arch == "digits_cnn":
        model, shape = with_batch_norm_statistics(DigitsCNN(num_classes=10, in_channels=1, width=8)), (4, 1, 64, 64)
    elif arch == "alexnet":
        model, shape = torchvision.models.alexnet(weights=None, num_classes=5), (2, 3, 64, 64)
    elif arch == "vgg16":
        model, shape = torchvision.models.vgg16(weights=None, num_classes=5), (2, 3, 32, 32)
    elif arch == "resnet18":
        model = with_batch_norm_statistics(torchvision.models.resnet18(weights=None, num_classes=5))
        shape = (2, 3, 32, 32)
    else:
        model, shape = with_batch_norm_statistics(FunctionalCNN()), (3, 3, 32, 32)
    inputs = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    return model.eval(), inputs, torch.arange(shape[0]) % 4


ARCHS = ("digits_cnn", "alexnet", "vgg16", "resnet18", "functional")


@pytest.fixture(scope="module")
def models() -> dict[str, tuple[nn.Module, torch.Tensor, torch.Tensor]]:
    return {arch: build(arch) for arch in ARCHS}


@pytest.mark.parametrize("arch", ARCHS)
def test_maps_agree_with_zennit(models, arch):
    model, inputs, targets = models[arch]
    expected = LRP()(model, inputs, targets)
    actual = FastLRP()(model, inputs, targets)
    assert actual.shape == expected.shape == (inputs.shape[0], *inputs.shape[2:])
    assert relative_l1(actual, expected) < 1e-5


def test_default_batch_norm_eps_agrees_to_1e_4():
    model, inputs, targets = build("digits_cnn")
    with_batch_norm_statistics(model, eps=1e-5)
    assert relative_l1(FastLRP()(model, inputs, targets), LRP()(model, inputs, targets)) < 1e-4


@pytest.mark.parametrize(("arch", "params"), [
    ("digits_cnn", {"low": -1.5, "high": 2.5, "epsilon": 0.01}),
    ("alexnet", {"low": [-2.1, -2.0, -1.8], "high": [2.2, 2.4, 2.6]}),
    ("digits_cnn", {"canonizer": "none"}),
    ("functional", {"canonizer": "none"}),
])
def test_parameters_agree_with_zennit(models, arch, params):
    model, inputs, targets = models[arch]
    assert relative_l1(FastLRP(**params)(model, inputs, targets), LRP(**params)(model, inputs, targets)) < 1e-5


def test_resnet_without_its_canonizer_agrees_with_zennit(models):
    model, inputs, targets = models["resnet18"]
    params = {"canonizer": "sequential_merge_batchnorm"}  # residual sums get the plain gradient
    inputs, targets = inputs[:1, :, :32, :32], targets[:1]
    assert relative_l1(FastLRP(**params)(model, inputs, targets), LRP(**params)(model, inputs, targets)) < 1e-5


@pytest.mark.parametrize("arch", ["digits_cnn", "vgg16", "resnet18"])
def test_relevance_is_conserved_without_biases(models, arch):
    model, inputs, _ = models[arch]
    model = copy.deepcopy(model)
    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name.endswith("bias") or name.endswith("running_mean"):
                tensor.zero_()
        logits = model(inputs)
    targets = torch.stack([logits[0].argmax(), *logits[1:].argmin(1)])  # one positive, the others negative
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    assert picked[0] > 0 and (picked[1:] < 0).all()
    sums = FastLRP()(model, inputs, targets).sum((1, 2))
    torch.testing.assert_close(sums, picked, rtol=1e-3, atol=1e-3 * float(picked.abs().max()))


@pytest.mark.parametrize("arch", ["digits_cnn", "resnet18"])
def test_batch_gives_the_maps_of_single_samples(models, arch):
    model, inputs, targets = models[arch]
    explainer = FastLRP()
    batch = explainer(model, inputs, targets)
    for index in range(inputs.shape[0]):
        single = explainer(model, inputs[index:index + 1], targets[index:index + 1])
        assert relative_l1(batch[index:index + 1], single) < 1e-5


def test_model_is_left_untouched(models):
    model, inputs, targets = models["resnet18"]
    before = {key: value.clone() for key, value in model.state_dict().items()}
    versions = [tensor._version for tensor in model.state_dict().values()]
    FastLRP()(model, inputs, targets)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[key], after[key]) for key in before)
    assert versions == [tensor._version for tensor in after.values()]
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks) for m in model.modules())


def test_changed_weights_are_picked_up(models):
    model, inputs, targets = build("digits_cnn")
    explainer = FastLRP()
    first = explainer(model, inputs, targets)
    with torch.no_grad():
        model.features[4].weight.mul_(-1.0)  # the cached folded weights must be recomputed
        model.features[5].running_var.mul_(4.0)
    second = explainer(model, inputs, targets)
    assert relative_l1(second, first) > 1e-2
    assert relative_l1(second, LRP()(model, inputs, targets)) < 1e-5


def test_name_params_and_hash():
    explainer = FastLRP(low=[-1.0], high=[1.0])
    assert explainer.name == "lrp_fast"
    assert explainer.params == LRP(low=[-1.0], high=[1.0]).params
    assert explainer.params_hash == params_hash("lrp_fast", explainer.params)


class _LayerNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.norm = nn.LayerNorm([2, 6, 6])
        self.fc = nn.Linear(72, 2)

    def forward(self, x):
        return self.fc(torch.flatten(self.norm(self.conv(x)), 1))


class _BranchingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.fc = nn.Linear(2, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.sum() > 0:  # data-dependent control flow: not traceable
            x = -x
        return self.fc(x.mean((2, 3)))


@pytest.mark.parametrize("model", [_LayerNormNet(), _BranchingNet(), nn.Sequential(nn.Flatten(), nn.Linear(64, 2))])
def test_unsupported_models_name_the_zennit_path(model):
    with pytest.raises(FocusError, match="zennit implementation"):
        FastLRP()(model.eval(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1]))


def test_functional_core_returns_channels():
    model, inputs, targets = build("functional")
    relevance = fast_lrp(model, inputs, targets, inputs.amin(), inputs.amax())
    assert relevance.shape == inputs.shape


@pytest.mark.parametrize("bounds", ["per_sample", "scalar", "per_channel", "per_sample_and_channel"])
@pytest.mark.parametrize("arch", ["alexnet", "functional"])
def test_channel_sums_are_the_sums_of_the_channels(models, arch, bounds):
    """The z^B rule sums over channels inside its weights (alexnet); the functional model sums at the end."""
    model, inputs, targets = models[arch]
    if bounds == "per_sample":
        low, high = inputs.amin((1, 2, 3), keepdim=True), inputs.amax((1, 2, 3), keepdim=True)
    elif bounds == "scalar":
        low, high = -2.5, 3.0
    elif bounds == "per_channel":
        low, high = torch.tensor([-2.1, -2.0, -1.8]).view(1, 3, 1, 1), torch.tensor([2.2, 2.4, 2.6]).view(1, 3, 1, 1)
    else:
        low, high = inputs.amin((2, 3), keepdim=True), inputs.amax((2, 3), keepdim=True)
    channels = fast_lrp(model, inputs, targets, low, high)
    summed = fast_lrp(model, inputs, targets, low, high, channel_sum=True)
    assert summed.shape == (inputs.shape[0], *inputs.shape[2:])
    torch.testing.assert_close(summed, channels.sum(1), rtol=1e-4, atol=1e-5 * float(channels.abs().max()))


def test_target_out_of_range_is_a_focus_error(models):
    model, inputs, _ = models["digits_cnn"]
    with pytest.raises(FocusError, match="out of range"):
        FastLRP()(model, inputs, torch.full((inputs.shape[0],), 10))
