"""The paper's claims on the bundled digits, end to end (issue 2, "What must be shown").

``DigitsCNN`` trained with ``TrainConfig.digits`` for three seeds: >= 97 % validation accuracy
and GradCAM / LRP Focus medians >= 0.85 over 20 test mosaics per class; random weights give
medians of 0.5 +- 0.05; cascading randomization from the top layer keeps GradCAM's median at
0.5 +- 0.1 at every stage. All-zero maps are undefined (NaN), excluded from the median and
reported as a share. Models are trained once per module (about 10 s per seed on two cores).
Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import time

import pytest
import torch

from focus_core.data import load_digits
from focus_core.explainers import get_explainer
from focus_core.metric import focus_score
from focus_core.models import build_model
from focus_core.mosaics import build_manifest, compose_mosaics, target_mask
from focus_core.randomize import cascading_stages, randomize_cascading, randomize_full
from focus_core.train import TrainConfig, train_model

pytestmark = pytest.mark.training

SEEDS = (0, 1, 2)
METHODS = ("gradcam", "lrp")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The CNN is too small to gain from intra-op threads; on a shared CPU they cost 5-10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_digits(seed=0, tile_size=32)


@pytest.fixture(scope="module")
def mosaics(digits):
    manifest = build_manifest(digits, split="test", per_class=20, seed=0)
    inputs = digits.normalize(compose_mosaics(digits.tiles, manifest.index_tensor()))
    return inputs, manifest.targets(), target_mask(manifest)


def _focus(model, method, mosaics) -> tuple[float, float]:
    """Median Focus over the defined maps and the share of undefined (all-zero) maps."""
    inputs, targets, mask = mosaics
    scores = focus_score(get_explainer(method)(model.eval(), inputs, targets), mask)
    undefined = scores.isnan()
    median = float(scores[~undefined].median()) if (~undefined).any() else float("nan")
    return median, float(undefined.float().mean())


@pytest.fixture(scope="module")
def trained(digits):
    models = {}
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = build_model("digits_cnn", num_classes=len(digits.classes), in_channels=1)
        started = time.perf_counter()
        history = train_model(model, digits, TrainConfig.digits(seed=seed))
        models[seed] = (model, history, time.perf_counter() - started)
    return models


@pytest.mark.parametrize("seed", SEEDS)
def test_trained_model_is_accurate_and_focused(trained, mosaics, seed):
    model, history, seconds = trained[seed]
    focus = {method: _focus(model, method, mosaics) for method in METHODS}
    print(f"\nseed {seed}: val accuracy {history[-1].val_accuracy:.3f}, {seconds:.1f} s, focus {focus}")
    assert history[-1].val_accuracy >= 0.97
    for method, (median, _) in focus.items():
        assert median >= 0.85, f"{method} median {median:.3f} on seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_weights_give_chance_focus(trained, mosaics, seed):
    model = randomize_full(trained[seed][0], seed=seed)
    focus = {method: _focus(model, method, mosaics) for method in METHODS}
    print(f"\nseed {seed}: random weights, (median, share undefined) {focus}")
    for method, (median, _) in focus.items():
        assert abs(median - 0.5) <= 0.05, f"{method} median {median:.3f} on seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_cascading_randomization_falls_to_chance_from_the_top_layer(trained, mosaics, seed):
    model = trained[seed][0]
    medians = []
    for stage in range(len(cascading_stages(model))):
        medians.append(_focus(randomize_cascading(model, stage, seed=seed), "gradcam", mosaics))
    print(f"\nseed {seed}: GradCAM cascading (median, share undefined) per stage {medians}")
    for stage, (median, _) in enumerate(medians):
        assert abs(median - 0.5) <= 0.1, f"stage {stage} median {median:.3f} on seed {seed}"
