"""Each batched explainer against a slow, obvious re-implementation, and LRP's conservation on torchvision models."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from focus_core.explainers import get_explainer
from focus_core.explainers.noise import per_sample_normal
from focus_core.metric import quadrant_sums
from tests.focus_core.tiny_models import tiny_model

torch.set_num_threads(1)


def batch(seed: int = 3, n: int = 4, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, size, size, generator=generator), torch.tensor([0, 3, 1, 2])[:n]


def logit_gradient(model: nn.Module, x: torch.Tensor, target: int) -> torch.Tensor:
    """(1, C, H, W) gradient of one logit, sample by sample."""
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(model(x)[0, target], x)[0]


# --- gradient family -----------------------------------------------------------------------------------------


def test_gradient_and_input_x_gradient_match_autograd_per_sample():
    model = tiny_model().eval()
    x, t = batch()
    gradient = get_explainer("gradient")(model, x, t)
    input_x_gradient = get_explainer("input_x_gradient")(model, x, t)
    for i in range(len(x)):
        g = logit_gradient(model, x[i:i + 1], int(t[i]))
        torch.testing.assert_close(gradient[i], g[0].sum(0), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(input_x_gradient[i], (x[i:i + 1] * g)[0].sum(0), rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete_and_matches_a_riemann_sum():
    model = tiny_model().eval()
    x, t = batch(n=2, size=8)
    relevance = get_explainer("integrated_gradients", n_steps=64)(model, x, t)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(relevance.sum((1, 2)), gap, rtol=2e-2, atol=1e-3)
    steps = 400  # midpoint rule, sample by sample
    for i in range(len(x)):
        total = sum(logit_gradient(model, (k + 0.5) / steps * x[i:i + 1], int(t[i])) for k in range(steps))
        torch.testing.assert_close(relevance[i], (x[i:i + 1] * total / steps)[0].sum(0), rtol=5e-2, atol=5e-3)


def test_smoothgrad_matches_a_per_copy_loop():
    model = tiny_model().eval()
    x, t = batch(n=3, size=12)
    n, sigma, seed = 5, 0.3, 11
    relevance = get_explainer("smoothgrad", n_samples=n, sigma=sigma, seed=seed)(model, x, t)
    for i in range(len(x)):
        xi = x[i:i + 1]
        noise = per_sample_normal(xi, seed, n)[:, 0]
        stdev = sigma * float(xi.max() - xi.min())
        mean = sum(logit_gradient(model, xi + stdev * noise[k:k + 1], int(t[i])) for k in range(n)) / n
        torch.testing.assert_close(relevance[i], mean[0].sum(0), rtol=1e-4, atol=1e-6)


def test_smoothgrad_noise_is_seeded_and_standard_normal():
    x, _ = batch(n=2, size=32)
    noise = per_sample_normal(x, 0, 10)
    assert noise.shape == (10, 2, 1, 32, 32)
    assert abs(float(noise.mean())) < 0.05 and abs(float(noise.std()) - 1) < 0.05
    assert torch.equal(noise, per_sample_normal(x, 0, 10)) and not torch.equal(noise, per_sample_normal(x, 1, 10))
    model = tiny_model().eval()
    t = torch.tensor([1, 2])
    torch.testing.assert_close(get_explainer("smoothgrad", sigma=0.0, n_samples=2)(model, x, t),
                               get_explainer("gradient")(model, x, t), rtol=1e-5, atol=1e-7)


# --- GradCAM family ------------------------------------------------------------------------------------------


def layer_activation_and_gradient(model, layer, x, target):
    caught = []
    handle = layer.register_forward_hook(lambda module, args, output: caught.append(output))
    try:
        logit = model(x)[0, target]
    finally:
        handle.remove()
    return caught[0].detach(), torch.autograd.grad(logit, caught[0])[0]


def test_gradcam_matches_a_per_sample_reference():
    model = tiny_model().eval()
    x, t = batch()
    relevance = get_explainer("gradcam", layer="features.5")(model, x, t)
    for i in range(len(x)):
        a, g = layer_activation_and_gradient(model, model.features[5], x[i:i + 1], int(t[i]))
        cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))
        expected = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
        torch.testing.assert_close(relevance[i], expected, rtol=1e-5, atol=1e-7)
    assert (relevance >= 0).all()


@pytest.mark.parametrize("arch", ["alexnet", "resnet18", "digits_cnn"])
def test_gradcam_matches_captum(arch):
    """captum's LayerGradCam is the library reference of the batched GradCAM, on the default layers."""
    from focus_core.explainers.gradcam import captum_gradcam
    from focus_core.models import build_model, default_gradcam_layer

    torch.manual_seed(0)
    channels, size = (1, 32) if arch == "digits_cnn" else (3, 64)
    model = build_model(arch, num_classes=5, in_channels=channels).eval()
    x, t = torch.randn(3, channels, size, size), torch.tensor([0, 4, 2])
    expected = captum_gradcam(model, x, t, default_gradcam_layer(model))
    explanation = get_explainer("gradcam").explain(model, x, t)
    torch.testing.assert_close(explanation.relevance, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert expected.abs().max() > 0
    sums = quadrant_sums(expected)  # the sums the hot path takes from the small map
    torch.testing.assert_close(explanation.quadrant_sums, sums, rtol=1e-5, atol=1e-6 * float(sums.abs().max()))


@pytest.mark.parametrize("name", ["gradcam", "gradcam++"])
def test_gradcam_upsamples_its_map_only_when_the_relevance_is_read(name, monkeypatch):
    """The hot path takes the quadrant sums from the small map; only a reader of the relevance pays the upsampling."""
    from focus_core.explainers import gradcam

    calls, upsample = [], gradcam._upsample
    monkeypatch.setattr(gradcam, "_upsample", lambda cam, size: calls.append(size) or upsample(cam, size))
    model = tiny_model().eval()
    x, t = batch()
    explanation = get_explainer(name, layer="features.5").explain(model, x, t)
    assert calls == [] and explanation.quadrant_sums is not None and "not computed" in repr(explanation)
    relevance = explanation.relevance
    assert calls == [(16, 16)] and explanation.relevance is relevance and not relevance.requires_grad
    torch.testing.assert_close(explanation.quadrant_sums, quadrant_sums(relevance), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(relevance, get_explainer(name, layer="features.5")(model, x, t))


def test_gradcam_plus_plus_matches_a_per_sample_per_channel_reference():
    model = tiny_model(2).eval()
    x, t = batch()
    relevance = get_explainer("gradcam++", layer="features.5")(model, x, t)
    for i in range(len(x)):
        a, g = layer_activation_and_gradient(model, model.features[5], x[i:i + 1], int(t[i]))
        cam = torch.zeros(a.shape[-2:])
        for k in range(a.shape[1]):
            gk, ak = g[0, k], a[0, k]
            alpha = gk**2 / (2 * gk**2 + ak.sum() * gk**3 + 1e-7)
            alpha[gk == 0] = 0
            cam += (alpha * torch.relu(gk)).sum() * ak
        expected = F.interpolate(torch.relu(cam)[None, None], size=x.shape[-2:], mode="bilinear")[0, 0]
        torch.testing.assert_close(relevance[i], expected, rtol=1e-4, atol=1e-6)
    assert relevance.abs().sum() > 0


def test_gradcam_on_a_layer_followed_by_an_in_place_relu():
    """The pre-ReLU output of a conv must be explained, not the ReLU's output that overwrites it in place."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 6, 3, padding=1),
                          nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([0, 2])
    reference = nn.Sequential(*[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in model]).eval()
    for name in ("gradcam", "gradcam++"):
        torch.testing.assert_close(get_explainer(name, layer="2")(model, x, t),
                                   get_explainer(name, layer="2")(reference, x, t))


# --- LRP -----------------------------------------------------------------------------------------------------


def stabilize(z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return z + ((z == 0).to(z) + z.sign()) * eps


def dense(conv: nn.Conv2d, in_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The convolution as a matrix (out, in) and a bias vector (out,)."""
    def linear(v):
        return F.conv2d(v.view(1, *in_shape), conv.weight, None, conv.stride, conv.padding).flatten()
    matrix = torch.autograd.functional.jacobian(linear, torch.zeros(int(torch.tensor(in_shape).prod())))
    bias = conv.bias[:, None, None].expand(conv(torch.zeros(1, *in_shape))[0].shape).flatten()
    return matrix.detach(), bias.detach()


def slow_lrp(model: nn.Sequential, x: torch.Tensor, target: int, low: float, high: float, eps: float) -> torch.Tensor:
    """The paper's rules written out with dense matrices: z^B, z+ on conv, epsilon on linear (one sample)."""
    conv1, conv2, linear = model[0], model[2], model[5]
    m1, b1 = dense(conv1, tuple(x.shape[1:]))
    a0 = x.flatten()
    a1 = torch.relu(m1 @ a0 + b1)
    m2, b2 = dense(conv2, tuple(conv1(x)[0].shape))
    a2 = torch.relu(m2 @ a1 + b2)
    z3 = linear.weight @ a2 + linear.bias
    r3 = torch.zeros_like(z3)
    r3[target] = z3[target]  # logit x one-hot
    r2 = a2 * (linear.weight.T @ (r3 / stabilize(z3, eps)))  # epsilon
    m2p = m2.clamp(min=0)
    r1 = a1 * (m2p.T @ (r2 / stabilize(m2p @ a1 + b2.clamp(min=0))))  # z+ (ReLU passes relevance through)
    m1p, m1n = m1.clamp(min=0), m1.clamp(max=0)
    zb = m1 @ a0 - m1p @ torch.full_like(a0, low) - m1n @ torch.full_like(a0, high)
    s = r1 / stabilize(zb)
    r0 = a0 * (m1.T @ s) - low * (m1p.T @ s) - high * (m1n.T @ s)  # z^B
    return r0.view(x.shape[1:]).sum(0)


def test_lrp_matches_the_rules_written_out_by_hand():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 4, 3, stride=2, padding=1),
                          nn.ReLU(), nn.Flatten(), nn.Linear(64, 3)).eval()
    with torch.no_grad():
        model[2].bias.uniform_(-0.1, 0.1)
        model[5].bias.uniform_(-0.1, 0.1)
    x = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 1, 2])
    for eps, bounds in ((1e-6, None), (0.25, (-3.0, 3.0))):
        params = {"epsilon": eps} if bounds is None else {"epsilon": eps, "low": bounds[0], "high": bounds[1]}
        relevance = get_explainer("lrp", **params)(model, x, t)
        for i in range(len(x)):
            low, high = bounds or (float(x[i].min()), float(x[i].max()))
            with torch.no_grad():
                expected = slow_lrp(model, x[i:i + 1], int(t[i]), low, high, eps)
            torch.testing.assert_close(relevance[i], expected, rtol=1e-4, atol=1e-6)


def test_lrp_per_channel_bounds_broadcast_and_are_checked():
    model = tiny_model(in_channels=2).eval()
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([0, 1])
    per_channel = get_explainer("lrp", low=[-4.0, -4.0], high=[4.0, 4.0])(model, x, t)
    torch.testing.assert_close(per_channel, get_explainer("lrp", low=-4, high=4)(model, x, t))
    with pytest.raises(Exception, match="3 z\\^B bounds for 2 input channels"):
        get_explainer("lrp", low=[-1.0] * 3, high=[1.0] * 3)(model, x, t)


@functools.cache
def conservation_model(arch: str) -> nn.Module:
    """VGG16 without BatchNorm and ResNet18 whose merged BatchNorm bias is zero: all biases zero."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(weights=None, num_classes=5)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.zero_()
            if isinstance(module, nn.BatchNorm2d):  # merged bias = (0 - running_mean) * scale + beta = 0
                module.running_mean.zero_()
                module.bias.zero_()
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    return model.eval()


@pytest.mark.parametrize("arch", ["vgg16", "resnet18"])
def test_lrp_conserves_the_target_logit_even_when_it_is_negative(arch):
    model = conservation_model(arch)
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(x)
    t = torch.stack([logits[0].argmax(), logits[1].argmin(), logits[2].argmin(), logits[3].argmax()])
    target_logits = logits.gather(1, t[:, None])[:, 0]
    assert (target_logits < 0).any() and (target_logits > 0).any()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    relevance = get_explainer("lrp")(model, x, t)
    totals = relevance.sum((1, 2))
    assert torch.equal(totals.sign(), target_logits.sign())
    torch.testing.assert_close(totals, target_logits, rtol=1e-3, atol=1e-6)  # measured: 3e-5 (VGG16), 7e-5 (ResNet18)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
