"""The paper's claims on the bundled digits, end to end: accuracy, Focus of trained and random models, randomization.

``DigitsCNN`` trained with ``TrainConfig.digits`` for three seeds: >= 97 % validation accuracy
and GradCAM / LRP Focus medians >= 0.85 over 20 test mosaics per class; random weights give
medians of 0.5 +- 0.05; cascading randomization from the top layer keeps GradCAM's median at
0.5 +- 0.1 at every stage. All-zero maps are undefined (NaN), excluded from the median and
reported as a share. Each seed's model is trained once per run, when a test first needs it (about 10 s per seed on
two cores; :func:`trained_digits_cnn` in ``conftest.py``), and each random model's scores are computed once per
module: the seed-0 random copy of the seed-0 model serves both tests that measure it.
Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import functools

import pytest
import torch

from focus_core.explainers import get_explainer
from focus_core.metric import focus_score
from focus_core.models import build_model
from focus_core.mosaics import build_manifest, compose_mosaics, target_mask
from focus_core.randomize import cascading_stages, randomize_cascading, randomize_full

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("one_thread")]

SEEDS = (0, 1, 2)
METHODS = ("gradcam", "lrp")


@pytest.fixture(scope="module")
def mosaics(digits32):
    manifest = build_manifest(digits32, split="test", per_class=20, seed=0)
    inputs = digits32.normalize(compose_mosaics(digits32.tiles, manifest.index_tensor()))
    return inputs, manifest.target_classes(), target_mask(manifest)


def _scores(model, method, mosaics) -> torch.Tensor:
    inputs, targets, mask = mosaics
    return focus_score(get_explainer(method)(model.eval(), inputs, targets), mask)


def _summary(scores: torch.Tensor) -> tuple[float, float]:
    """Median Focus over the defined maps and the share of undefined (all-zero) maps."""
    undefined = scores.isnan()
    median = float(scores[~undefined].median()) if (~undefined).any() else float("nan")
    return median, float(undefined.float().mean())


def _focus(model, method, mosaics) -> tuple[float, float]:
    return _summary(_scores(model, method, mosaics))


@pytest.fixture(scope="module")
def random_scores(trained_digits_cnn, mosaics):
    """``random_scores(trained_seed, seed, method)``: the scores of ``randomize_full(model, seed)``, once per module."""

    @functools.cache
    def scores(trained_seed: int, seed: int, method: str) -> torch.Tensor:
        return _scores(randomize_full(trained_digits_cnn(trained_seed)[0], seed=seed), method, mosaics)

    return scores


@pytest.mark.parametrize("seed", SEEDS)
def test_trained_model_is_accurate_and_focused(trained_digits_cnn, mosaics, seed):
    model, history, seconds = trained_digits_cnn(seed)
    focus = {method: _focus(model, method, mosaics) for method in METHODS}
    print(f"\nseed {seed}: val accuracy {history[-1].val_accuracy:.3f}, {seconds:.1f} s, focus {focus}")
    assert history[-1].val_accuracy >= 0.97
    for method, (median, _) in focus.items():
        assert median >= 0.85, f"{method} median {median:.3f} on seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_random_weights_give_chance_focus(random_scores, seed):
    focus = {method: _summary(random_scores(seed, seed, method)) for method in METHODS}
    print(f"\nseed {seed}: random weights, (median, share undefined) {focus}")
    for method, (median, _) in focus.items():
        assert abs(median - 0.5) <= 0.05, f"{method} median {median:.3f} on seed {seed}"


@pytest.mark.parametrize("seed", SEEDS)
def test_cascading_randomization_falls_to_chance_from_the_top_layer(trained_digits_cnn, mosaics, seed):
    model = trained_digits_cnn(seed)[0]
    medians = []
    for stage in range(len(cascading_stages(model))):
        medians.append(_focus(randomize_cascading(model, stage, seed=seed), "gradcam", mosaics))
    print(f"\nseed {seed}: GradCAM cascading (median, share undefined) per stage {medians}")
    for stage, (median, _) in enumerate(medians):
        assert abs(median - 0.5) <= 0.1, f"stage {stage} median {median:.3f} on seed {seed}"


def test_random_models_over_seeds_classes_and_the_untrained_model(
    digits32, trained_digits_cnn, random_scores, mosaics
):
    """Five random models per method, intervals that resample classes, per-class medians, epoch 0."""
    import numpy as np

    from focus_core import stats

    model, _, _ = trained_digits_cnn(0)
    targets = mosaics[1].numpy()
    for method in METHODS:
        scores = _scores(model, method, mosaics).numpy()
        random = np.stack([random_scores(0, s, method).numpy() for s in range(5)])
        medians = [stats.summarize(r)["median"] for r in random]
        spread = stats.seed_summary(medians)
        print(f"\n{method}: random medians over 5 seeds {np.round(medians, 3).tolist()}, mean {spread['mean']:.3f}, "
              f"sd {spread['std']:.3f}")
        assert spread["std"] > 0 and abs(spread["mean"] - 0.5) <= 0.1 and spread["about_chance"]
        for seed, r in enumerate(random):
            mosaic = stats.bootstrap_median_ci(r)
            cluster = stats.cluster_bootstrap_median_ci(r, targets)
            s = stats.summarize(r)
            print(f"  seed {seed}: undefined {s['share_undefined']:.2f}, median {s['median']:.3f} "
                  f"(undefined as 0: {s['median_undefined_as_zero']:.3f}), mosaic CI {np.round(mosaic, 3).tolist()}, "
                  f"cluster CI {np.round(cluster, 3).tolist()}")
            assert cluster[1] - cluster[0] >= mosaic[1] - mosaic[0]
        per_class = [round(c["median"], 3) for c in stats.per_class_summary(random[0], targets)]
        trained_per_class = [round(c["median"], 3) for c in stats.per_class_summary(scores, targets)]
        print(f"  per-class medians, trained {trained_per_class}; random seed 0 {per_class}")
        decision = stats.randomization_test(scores, random, targets)
        print(f"  randomization test: p (mosaics) {decision['p_value']:.2g}, p (classes) "
              f"{decision['p_value_classes']:.2g}, rank-biserial {decision['rank_biserial']:.3f}")
        assert decision["significant"] and decision["n_classes"] == 10
    # epoch 0: the model before its first optimisation step points anywhere
    torch.manual_seed(0)
    untrained = build_model("digits_cnn", num_classes=len(digits32.classes), in_channels=1)
    median, share = _focus(untrained, "gradcam", mosaics)
    print(f"epoch 0 (untrained) GradCAM median {median:.3f}, undefined {share:.2f}")
    assert abs(median - 0.5) <= 0.1
