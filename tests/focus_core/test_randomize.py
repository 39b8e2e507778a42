"""Full, cascading and independent randomization: copies, order, determinism."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from focus_core.errors import FocusError
from focus_core.models import DigitsCNN, build_model
from focus_core.randomize import (
    cascading_stage_layers,
    cascading_stages,
    parametrised_layers,
    randomize_cascading,
    randomize_full,
    randomize_independent,
)


@pytest.fixture
def trained_like():
    """A DigitsCNN whose parameters and BatchNorm statistics differ from any initialisation."""
    torch.manual_seed(0)
    model = DigitsCNN(num_classes=10, width=4)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor) + 0.5)
    return model.eval()


def _changed(a: nn.Module, b: nn.Module, name: str) -> bool:
    x, y = a.get_submodule(name), b.get_submodule(name)
    return any(not torch.equal(p, q) for p, q in zip(x.parameters(recurse=False), y.parameters(recurse=False)))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_parametrised_layers_input_to_output():
    names = parametrised_layers(DigitsCNN())
    assert names == [
        "features.0", "features.1", "features.4", "features.5",
        "features.8", "features.9", "features.12", "features.13", "classifier",
    ]  # fmt: skip


def test_cascading_stages_top_first_with_batchnorm_joining_its_conv():
    model = DigitsCNN()
    assert cascading_stages(model) == ["classifier", "features.12", "features.8", "features.4", "features.0"]
    assert cascading_stage_layers(model)[1] == ("features.12", "features.13")
    resnet = build_model("resnet18", num_classes=2)
    stages = cascading_stage_layers(resnet)
    assert stages[0] == ("fc",) and stages[-1] == ("conv1", "bn1")
    assert ("layer4.0.downsample.0", "layer4.0.downsample.1") in stages
    assert len(stages) == 21  # 20 convolutions and the head


def test_full_randomization_copies_and_changes_every_layer(trained_like):
    before = _state(trained_like)
    random = randomize_full(trained_like, seed=0)
    assert all(torch.equal(before[k], v) for k, v in trained_like.state_dict().items())
    for name in parametrised_layers(trained_like):
        assert _changed(trained_like, random, name), name
    bn = random.features[1]
    assert torch.equal(bn.running_mean, torch.zeros(4)) and torch.equal(bn.running_var, torch.ones(4))
    assert not random.training  # the mode is kept


def test_randomization_is_deterministic_and_seeded(trained_like):
    a, b, c = (randomize_full(trained_like, seed=s) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.features[0].weight, c.features[0].weight)


def test_randomization_leaves_the_global_random_state_alone(trained_like):
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    randomize_full(trained_like, seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_cascading_is_cumulative_from_the_top(trained_like):
    stages = cascading_stage_layers(trained_like)
    for stage in range(len(stages)):
        random = randomize_cascading(trained_like, stage, seed=0)
        reset = {layer for members in stages[: stage + 1] for layer in members}
        for name in parametrised_layers(trained_like):
            assert _changed(trained_like, random, name) == (name in reset), (stage, name)


def test_a_layer_gets_the_same_random_weights_in_every_test(trained_like):
    full = randomize_full(trained_like, seed=3)
    top = randomize_cascading(trained_like, 0, seed=3)
    alone = randomize_independent(trained_like, "classifier", seed=3)
    assert torch.equal(full.classifier.weight, top.classifier.weight)
    assert torch.equal(full.classifier.weight, alone.classifier.weight)
    last = randomize_cascading(trained_like, len(cascading_stages(trained_like)) - 1, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(full.state_dict().values(), last.state_dict().values()))


def test_cascading_accepts_a_stage_name(trained_like):
    by_name = randomize_cascading(trained_like, "features.12", seed=0)
    by_index = randomize_cascading(trained_like, 1, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(by_name.state_dict().values(), by_index.state_dict().values()))


def test_independent_randomizes_one_stage_or_one_layer(trained_like):
    before = _state(trained_like)
    stage = randomize_independent(trained_like, "features.4", seed=0)
    assert [n for n in parametrised_layers(trained_like) if _changed(trained_like, stage, n)] == [
        "features.4",
        "features.5",
    ]
    bn_only = randomize_independent(trained_like, "features.5", seed=0)
    assert [n for n in parametrised_layers(trained_like) if _changed(trained_like, bn_only, n)] == ["features.5"]
    assert all(torch.equal(before[k], v) for k, v in trained_like.state_dict().items())


@pytest.mark.parametrize("stage", [-1, 5, "features.1", "nope", True])
def test_bad_stage(trained_like, stage):
    with pytest.raises(FocusError, match="stage"):
        randomize_cascading(trained_like, stage)


def test_bad_layer(trained_like):
    with pytest.raises(FocusError, match="no parametrised layer 'conv9': pass one of features.0"):
        randomize_independent(trained_like, "conv9")


def test_layer_without_reset_parameters_gets_small_normal_weights():
    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(torch.full((1000,), 5.0))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain

    model = nn.Sequential(nn.Linear(2, 2), Scale())
    random = randomize_full(model)
    assert random[1].gain.abs().max() < 0.2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_model_gets_the_cpu_weights(trained_like):
    cpu = randomize_full(trained_like, seed=4)
    gpu = randomize_full(trained_like.cuda(), seed=4)
    assert gpu.features[0].weight.is_cuda
    assert all(torch.equal(x, y.cpu()) for x, y in zip(cpu.state_dict().values(), gpu.state_dict().values()))
    vit = _vit("torchvision")[0].eval()
    cpu, gpu = randomize_full(vit, seed=4), randomize_full(vit.cuda(), seed=4)  # the model's own layer too
    assert gpu.class_token.is_cuda
    assert all(torch.equal(x, y.cpu()) for x, y in zip(cpu.state_dict().values(), gpu.state_dict().values()))


# --- a model's own parameters: a ViT's class token and position embedding -----------------------------------


def _perturbed(model: nn.Module) -> nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(torch.rand_like(tensor) + 0.5)
    return model.eval()


def _vit(library: str) -> tuple[nn.Module, str, tuple[str, ...]]:
    """(a small ViT, its own layer's name, that layer's parameters) from torchvision or timm."""
    torch.manual_seed(0)
    if library == "torchvision":
        import torchvision

        vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                   hidden_dim=8, mlp_dim=8, num_classes=3)
        return vit, "class_token", ("class_token",)
    timm = pytest.importorskip("timm")  # an optional extra
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, embed_dim=8,
                            num_heads=2, num_classes=3, reg_tokens=2)
    return vit, "cls_token+reg_token+pos_embed", ("cls_token", "reg_token", "pos_embed")


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_a_vits_own_tokens_and_position_embedding_are_a_layer_randomized_last_in_the_cascade(library):
    model, own, tensors = _vit(library)
    model = _perturbed(model)
    assert parametrised_layers(model)[0] == own and cascading_stage_layers(model)[-1] == (own,)
    full = randomize_full(model, seed=0)
    trained, random = dict(model.named_parameters()), dict(full.named_parameters())
    assert [k for k in trained if torch.equal(trained[k], random[k])] == []  # every tensor re-initialised
    assert all(random[k].abs().max() < 0.2 for k in tensors)  # N(0, 0.02)
    last = randomize_cascading(model, own, seed=0)
    assert all(torch.equal(x, y) for x, y in zip(full.state_dict().values(), last.state_dict().values()))
    before_last = dict(randomize_cascading(model, len(cascading_stages(model)) - 2, seed=0).named_parameters())
    assert [k for k in trained if torch.equal(trained[k], before_last[k])] == list(tensors)
    alone = dict(randomize_independent(model, own, seed=0).named_parameters())
    assert [k for k in trained if not torch.equal(trained[k], alone[k])] == list(tensors)


def test_a_module_with_children_keeps_them_when_its_own_parameters_are_reset():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.full((4,), 5.0))
            self.inner = nn.Linear(4, 4)

        def reset_parameters(self) -> None:  # resets its child too: not what one layer's randomization may do
            nn.init.ones_(self.scale)
            self.inner.reset_parameters()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * self.scale

    model = nn.Sequential(Block(), nn.Linear(4, 2))
    random = randomize_independent(model, "0", seed=0)
    assert torch.equal(random[0].inner.weight, model[0].inner.weight)
    assert random[0].scale.abs().max() < 0.2
