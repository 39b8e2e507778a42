"""The explainer registry and the contract every method keeps (shape, model state, batch invariance)."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
import torchvision
from torch import nn

from focus_core.errors import FocusError
from focus_core.explainers import (
    available_explainers,
    get_explainer,
    params_hash,
    resolve_layer,
)
from tests.focus_core.tiny_models import tiny_model

torch.set_num_threads(1)

ALL = ["gradcam", "gradcam++", "lrp", "lrp_fast", "smoothgrad", "integrated_gradients", "gradient", "input_x_gradient",
       "lime", "random"]
FAST = {"integrated_gradients": {"n_steps": 8}, "smoothgrad": {"n_samples": 4}, "lime": {"n_samples": 16}}


def explainer(name: str, layer: str = "features.5"):
    params = dict(FAST.get(name, {}))
    if name.startswith("gradcam"):
        params["layer"] = layer
    return get_explainer(name, **params)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    for key, value in before.items():
        assert after[key].dtype == value.dtype and torch.equal(after[key], value), key
    assert not model.training
    for name, module in model.named_modules():
        assert module.training is False, name
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(module, hooks)) == 0, (name, hooks)
        assert "forward" not in vars(module), name  # zennit's ResNet canonizer overrides forward per instance
        assert not any(key.startswith("canonizer") for key in vars(module)["_modules"]), name
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, name


# --- registry and parameters ------------------------------------------------------------------------------


def test_available_explainers_lists_every_method():
    # attnlrp (LXT) explains vision transformers only: the CNN tests here leave it out (test_vit_explainers.py)
    assert sorted(available_explainers()) == sorted([*ALL, "attnlrp"])


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(FocusError, match="Unknown explainer 'gradcam2'.*gradcam, gradcam\\+\\+, lrp"):
        get_explainer("gradcam2")


@pytest.mark.parametrize(
    ("name", "params", "pattern"),
    [
        ("lrp", {"eps": 0.1}, "no parameter 'eps'.*epsilon, low, high, canonizer"),
        ("gradient", {"seed": 1}, "no parameter 'seed'"),
        ("lrp", {"canonizer": "vgg"}, "Unknown canonizer 'vgg'"),
        ("lrp", {"low": -1.0}, "both z\\^B bounds or neither"),
        ("lrp", {"epsilon": -1.0}, ">= 0"),
        ("lrp", {"epsilon": float("nan")}, "finite number"),
        ("smoothgrad", {"n_samples": 0}, ">= 1"),
        ("smoothgrad", {"n_samples": 2.5}, "an integer"),
        ("smoothgrad", {"sigma": "big"}, "a finite number"),
        ("integrated_gradients", {"n_steps": True}, "an integer"),
        ("gradcam", {"layer": 3}, "a string or None"),
    ],
)
def test_bad_parameters_raise_one_clear_sentence(name, params, pattern):
    with pytest.raises(FocusError, match=pattern) as caught:
        get_explainer(name, **params)
    message = str(caught.value)
    assert message.endswith(".") and message.count(". ") == 0 and "\n" not in message


def test_params_have_defaults_filled_and_hash_is_sha256_of_canonical_json():
    lrp = get_explainer("lrp", epsilon=1)
    assert lrp.params == {"epsilon": 1.0, "low": None, "high": None, "canonizer": "auto"}
    text = json.dumps({"name": "lrp", "params": lrp.params}, sort_keys=True, separators=(",", ":"))
    assert lrp.params_hash == hashlib.sha256(text.encode()).hexdigest()
    assert json.loads(json.dumps(lrp.params)) == lrp.params
    assert get_explainer("lrp", epsilon=1.0).params_hash == lrp.params_hash  # int and float canonicalised
    assert get_explainer("lrp").params_hash != lrp.params_hash
    assert get_explainer("lrp", low=[-1, -2], high=(1, 2)).params["low"] == [-1.0, -2.0]
    assert get_explainer("smoothgrad").params == {"n_samples": 10, "sigma": 0.2, "seed": 0}
    assert get_explainer("integrated_gradients").params == {"n_steps": 32}
    assert get_explainer("gradcam").params == {"layer": None}
    assert get_explainer("random").params == {"seed": 0}


def test_memory_knobs_are_not_part_of_the_hash():
    plain = get_explainer("integrated_gradients", n_steps=8)
    chunked = get_explainer("integrated_gradients", n_steps=8, internal_batch_size=4)
    assert plain.params == chunked.params and plain.params_hash == chunked.params_hash
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 3])
    model = tiny_model()
    torch.testing.assert_close(chunked(model, x, t), plain(model, x, t), rtol=1e-4, atol=1e-6)
    sg = get_explainer("smoothgrad", n_samples=3)
    sg_chunked = get_explainer("smoothgrad", n_samples=3, internal_batch_size=2)
    assert sg.params_hash == sg_chunked.params_hash
    torch.testing.assert_close(sg_chunked(model, x, t), sg(model, x, t), rtol=1e-4, atol=1e-6)


def test_hash_differs_between_methods_and_is_stable():
    hashes = {name: get_explainer(name).params_hash for name in ALL}
    assert len(set(hashes.values())) == len(ALL)
    assert params_hash("gradient", {}) == hashlib.sha256(b'{"name":"gradient","params":{}}').hexdigest()


# --- call contract -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_method_returns_bhw_and_leaves_the_model_untouched(name):
    model = tiny_model()
    model.train()  # explainers must switch to eval mode (BatchNorm with running statistics)
    before = snapshot(model)
    x, t = torch.randn(3, 1, 12, 12), torch.tensor([0, 2, 3])
    relevance = explainer(name)(model, x, t)
    assert relevance.shape == (3, 12, 12) and relevance.dtype == torch.float32
    assert torch.isfinite(relevance).all() and relevance.abs().sum() > 0
    assert not relevance.requires_grad
    assert_untouched(model, before)
    # maps depend on the target (the random control excepted)
    other = explainer(name)(model, x, torch.tensor([1, 1, 1]))
    assert torch.equal(other, relevance) == (name == "random")


@pytest.mark.parametrize("name", ALL)
def test_batch_gives_the_same_maps_as_one_by_one(name):
    model = tiny_model(1)
    torch.manual_seed(5)
    x, t = torch.randn(4, 1, 16, 16), torch.tensor([3, 0, 1, 3])
    method = explainer(name)
    batched = method(model, x, t)
    single = torch.cat([method(model, x[i:i + 1], t[i:i + 1]) for i in range(4)])
    scale = float(batched.abs().max())
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-5 * scale)


def test_calls_work_under_no_grad_and_inference_mode():
    model, x, t = tiny_model(), torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    expected = get_explainer("lrp")(model, x, t)
    with torch.no_grad():
        torch.testing.assert_close(get_explainer("lrp")(model, x, t), expected)
    with torch.inference_mode():
        x_inference = x.clone()
        torch.testing.assert_close(get_explainer("lrp")(model, x_inference, t), expected)


def test_random_control_is_seeded_bounded_and_content_keyed():
    model, x, t = tiny_model(), torch.randn(3, 1, 10, 10), torch.tensor([0, 1, 2])
    first = get_explainer("random", seed=7)(model, x, t)
    assert torch.equal(first, get_explainer("random", seed=7)(model, x, t))
    assert not torch.equal(first, get_explainer("random", seed=8)(model, x, t))
    assert first.min() >= -1 and first.max() <= 1 and first.std() > 0.5
    assert not torch.equal(first[0], first[1])  # different samples, different noise
    same = get_explainer("random", seed=7)(model, x[[1, 1]], t[:2])
    assert torch.equal(same[0], same[1]) and torch.equal(same[0], first[1])


@pytest.mark.parametrize("name", [n for n in ALL if n != "random"])
def test_out_of_range_target_is_a_clear_error(name):
    with pytest.raises(FocusError, match="Target class 4 is out of range for a model with 4 outputs"):
        explainer(name)(tiny_model(), torch.randn(2, 1, 8, 8), torch.tensor([0, 4]))


@pytest.mark.parametrize(
    ("inputs", "targets", "pattern"),
    [
        (torch.randn(2, 8, 8), torch.tensor([0, 1]), "shape \\(B, C, H, W\\)"),
        (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1]), "float tensor"),
        (torch.randn(2, 1, 8, 8), torch.tensor([0, 1, 2]), "shape \\(2,\\)"),
        (torch.randn(2, 1, 8, 8), torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.randn(2, 1, 8, 8), torch.tensor([0, -1]), "negative"),
    ],
)
def test_bad_batches_are_clear_errors(inputs, targets, pattern):
    with pytest.raises(FocusError, match=pattern):
        get_explainer("gradient")(tiny_model(), inputs, targets)


@pytest.mark.parametrize("layer", ["features.9", "feature.5", "", "features.5.weight"])
def test_bad_layer_name_is_a_clear_error(layer):
    model = tiny_model()
    with pytest.raises(FocusError, match="is not a submodule of TinyDigitsCNN: pass a dotted name"):
        get_explainer("gradcam", layer=layer)(model, torch.randn(1, 1, 8, 8), torch.tensor([0]))
    assert_untouched(model, snapshot(model))


@pytest.mark.parametrize("name", ["gradcam", "gradcam++"])
@pytest.mark.parametrize("frozen", [True, False])
def test_gradcam_records_nothing_below_its_layer(name, frozen):
    """Below the explained layer nothing is recorded for autograd (no nodes, no saved activations), frozen or not."""
    model = tiny_model()
    for parameter in model.parameters():
        parameter.requires_grad_(not frozen)
    recorded = {}

    def watch(module_name):
        def hook(module, args, output):
            recorded[module_name] = output.requires_grad
        return hook

    handles = [module.register_forward_hook(watch(n)) for n, module in model.named_modules() if n]
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 3])
    try:
        with torch.no_grad():
            relevance = explainer(name)(model, x, t)
            assert not torch.is_grad_enabled()  # the mode the hook switched on is gone with the forward pass
    finally:
        for handle in handles:
            handle.remove()
    below = {f"features.{i}": False for i in range(6)}  # features.5 is the layer: its own output is not recorded
    assert recorded == {**below, "features": True, "pool": True, "classifier": True}
    assert torch.is_grad_enabled()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    torch.testing.assert_close(relevance, explainer(name)(model, x, t), rtol=0, atol=0)


def test_a_gradcam_layer_the_forward_pass_never_calls_is_a_clear_error():
    model = tiny_model()
    model.unused = nn.Conv2d(16, 16, 1)
    with pytest.raises(FocusError, match="'unused' was not called in the model's forward pass: pass a layer"):
        get_explainer("gradcam", layer="unused")(model, torch.randn(1, 1, 8, 8), torch.tensor([0]))
    assert_untouched(model, snapshot(model))


def test_resolve_layer_finds_dotted_names():
    model = torchvision.models.resnet18(weights=None, num_classes=3)
    assert resolve_layer(model, "layer4.1") is model.layer4[1]


def test_default_layer_comes_from_models():
    models = pytest.importorskip("focus_core.models")
    if not hasattr(models, "default_gradcam_layer"):
        pytest.skip("focus_core.models.default_gradcam_layer does not exist yet")
    torch.manual_seed(0)
    model = torchvision.models.vgg16(weights=None, num_classes=3)
    x, t = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for name in ("gradcam", "gradcam++"):
        expected = get_explainer(name, layer="features.30")(model, x, t)
        torch.testing.assert_close(get_explainer(name)(model, x, t), expected)


# --- torchvision architectures at small sizes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "layer"), [("alexnet", "features.12"), ("vgg16", "features.30"), ("resnet18", "layer4.1")]
)
def test_torchvision_models_keep_their_state(arch, layer):
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=5)
    before = snapshot(model)
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    for name in ("gradcam", "gradcam++", "lrp", "gradient"):
        relevance = explainer(name, layer=layer)(model, x, t)
        assert relevance.shape == (2, 64, 64) and torch.isfinite(relevance).all(), name
        assert_untouched(model, before)


def test_the_projects_digits_cnn_with_default_layer_keeps_its_state():
    """Bias-free convolutions followed by BatchNorm: the canonizer adds a bias while it runs and must remove it."""
    models = pytest.importorskip("focus_core.models")
    if not hasattr(models, "DigitsCNN"):
        pytest.skip("focus_core.models.DigitsCNN does not exist yet")
    torch.manual_seed(0)
    model = models.DigitsCNN(num_classes=10, in_channels=1, width=4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    before = snapshot(model)
    x, t = torch.randn(2, 1, 32, 32), torch.tensor([3, 9])
    for name in ALL:
        params = dict(FAST.get(name, {}))  # GradCAM layers from models.default_gradcam_layer
        relevance = get_explainer(name, **params)(model, x, t)
        assert relevance.shape == (2, 32, 32) and torch.isfinite(relevance).all(), name
        assert_untouched(model, before)


# --- explain(): the relevance and the logits of the clean forward pass ------------------------------------------

#: methods whose explain() hands back the model's logits on the clean inputs (their own forward pass)
WITH_LOGITS = {"gradcam", "gradcam++", "gradient", "input_x_gradient", "lrp_fast"}


class ForwardCounter:
    """Counts the calls of a model's forward pass (a forward hook on the model itself)."""

    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        self.handle = model.register_forward_hook(self._count)

    def _count(self, module: nn.Module, args: object, output: object) -> None:
        self.calls += 1

    def remove(self) -> None:
        self.handle.remove()


@pytest.mark.parametrize("name", ALL)
def test_explain_returns_the_calls_relevance_and_the_clean_logits(name):
    model, x, t = tiny_model(2), torch.randn(3, 1, 12, 12), torch.tensor([1, 0, 3])
    explanation = explainer(name).explain(model, x, t)
    torch.testing.assert_close(explanation.relevance, explainer(name)(model, x, t), rtol=0, atol=0)
    assert not explanation.relevance.requires_grad
    if name in WITH_LOGITS:
        with torch.no_grad():
            expected = model(x)
        assert explanation.logits is not None and not explanation.logits.requires_grad
        torch.testing.assert_close(explanation.logits, expected, rtol=1e-5, atol=1e-6)
    else:  # never ran the model on the clean inputs (or, zennit with merged BatchNorm: not its exact logits)
        assert explanation.logits is None


def test_zennit_lrp_hands_back_the_logits_of_a_model_without_batchnorm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 5)).eval()
    x, t = torch.randn(2, 1, 10, 10), torch.tensor([4, 0])
    explanation = get_explainer("lrp").explain(model, x, t)
    with torch.no_grad():
        torch.testing.assert_close(explanation.logits, model(x))


@pytest.mark.parametrize("name", sorted(WITH_LOGITS))
def test_explain_runs_the_model_once_on_the_batch(name):
    model = tiny_model()
    counter = ForwardCounter(model)
    try:
        explainer(name).explain(model, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]))
    finally:
        counter.remove()
    assert counter.calls == (0 if name == "lrp_fast" else 1)  # lrp_fast runs its traced copy of the layers


@pytest.mark.parametrize("name", ALL)
def test_explain_leaves_the_inputs_and_targets_as_they_were(name):
    """No copy of the inputs is made (except for inference tensors), so no explainer may write to them."""
    model, x, t = tiny_model(), torch.randn(3, 1, 10, 10), torch.tensor([2, 0, 1])
    x_before, t_before = x.clone(), t.clone()
    explainer(name).explain(model, x, t)
    assert torch.equal(x, x_before) and torch.equal(t, t_before)
    assert not x.requires_grad and x.grad is None


def test_targets_of_another_integer_type_give_the_same_maps():
    model = tiny_model()
    x = torch.randn(2, 1, 8, 8)
    expected = get_explainer("gradient")(model, x, torch.tensor([1, 3]))
    torch.testing.assert_close(get_explainer("gradient")(model, x, torch.tensor([1, 3], dtype=torch.int32)), expected)


def test_a_negative_target_is_a_clear_error_from_explain():
    with pytest.raises(FocusError, match="Target class -1 is negative"):
        get_explainer("gradient").explain(tiny_model(), torch.randn(2, 1, 8, 8), torch.tensor([0, -1]))


def test_checked_forward_outside_explain_still_checks_the_largest_target():
    from focus_core.explainers.base import checked_forward

    forward = checked_forward(tiny_model().eval(), torch.tensor([0, 7]))
    with pytest.raises(FocusError, match="Target class 7 is out of range for a model with 4 outputs"):
        forward(torch.randn(2, 1, 8, 8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["gradcam", "gradient", "lrp_fast"])
def test_cpu_targets_with_cuda_inputs_match_cuda_targets(name):
    model = tiny_model().cuda()
    x, t = torch.randn(3, 1, 12, 12, device="cuda"), torch.tensor([1, 0, 3])
    on_cpu = explainer(name).explain(model, x, t)
    on_gpu = explainer(name).explain(model, x, t.cuda())
    torch.testing.assert_close(on_cpu.relevance, on_gpu.relevance)
    torch.testing.assert_close(on_cpu.logits, on_gpu.logits)
