"""Model reliance per tile: the batched pass against a loop over tiles, model Focus, the gap and the rank agreement.

The science on the bundled digits: random weights give model Focus about chance (mean over five seeds, within
``stats.chance_tolerance``); the trained ``DigitsCNN`` (seed 0, the session's cached training) relies on the target
tiles far above chance, and on 3x3 mosaics GradCAM's and LRP's relevance ranks the tiles as the model's drops do
while the random control does not. Run with ``-s`` to see the measured numbers.

The explainer gap (Focus minus model Focus, median over the 100 2x2 test mosaics of ``mosaics2``, mean baseline),
measured on 2 shared CPU cores, fp32: GradCAM +0.158, LRP +0.156, SmoothGrad -0.220, the random control -0.258
(with the blur baseline: GradCAM +0.099, LRP +0.116, random -0.327). The bars: GradCAM's and LRP's |gap| <= 0.2;
SmoothGrad's and the random control's gap <= -0.15 and at least 0.3 below each of GradCAM's and LRP's. The good
methods' gap is positive, not zero: a flat mean-coloured tile is itself evidence for some classes, so some
non-target drops are positive where the explanation puts nothing (docs/reliance.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy.stats import spearmanr

from focus_core import stats
from focus_core.architectures import DigitsCNN
from focus_core.errors import FocusError
from focus_core.explainers import get_explainer
from focus_core.layouts import chance_level
from focus_core.metric import focus_score, tile_sums
from focus_core.models import build_model
from focus_core.mosaics import build_manifest, compose_normalized, target_mask
from focus_core.reliance import (
    BASELINES, baseline_mosaics, explainer_gap, model_focus, rank_agreement, tile_reliance,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _bounds(size: int, grid: int) -> list[tuple[int, int]]:
    return [(i * size // grid, (i + 1) * size // grid) for i in range(grid)]


def _reference_reliance(model, inputs, targets, grid, baseline):
    """One mosaic and one tile at a time: the obvious form of the reliance pass."""
    intact, drops = [], []
    with torch.no_grad():
        for b in range(inputs.shape[0]):
            x, c = inputs[b:b + 1], int(targets[b])
            whole = float(model(x)[0, c])
            row = []
            for r0, r1 in _bounds(x.shape[2], grid):
                for c0, c1 in _bounds(x.shape[3], grid):
                    occluded = x.clone()
                    if baseline == "mean":
                        occluded[..., r0:r1, c0:c1] = 0.0
                    else:
                        tile = x[..., r0:r1, c0:c1]
                        sigma = max(r1 - r0, c1 - c0) / 10
                        sizes = [min(2 * math.ceil(2 * sigma) + 1, s - 1 if s % 2 == 0 else s)
                                 for s in (c1 - c0, r1 - r0)]
                        occluded[..., r0:r1, c0:c1] = TF.gaussian_blur(tile, sizes, [sigma, sigma])
                    row.append(whole - float(model(occluded)[0, c]))
            intact.append(whole)
            drops.append(row)
    return torch.tensor(intact), torch.tensor(drops)


@pytest.fixture(scope="module")
def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return DigitsCNN(width=4).eval()


@pytest.mark.parametrize("grid, size", [(2, 32), (3, 48), (3, 50), (4, 64)])
@pytest.mark.parametrize("baseline", BASELINES)
def test_the_batched_pass_is_the_loop_over_tiles(small_model, grid, size, baseline):
    torch.manual_seed(grid + size)
    inputs, targets = torch.randn(5, 1, size, size), torch.randint(0, 10, (5,))
    intact, drops = _reference_reliance(small_model, inputs, targets, grid, baseline)
    for batch_size in (1, 7, 1000):  # batches that split mosaics between them, and one batch for all
        got = tile_reliance(small_model, inputs, targets, grid, baseline=baseline, batch_size=batch_size)
        assert got.intact.shape == (5,) and got.drops.shape == (5, grid * grid)
        torch.testing.assert_close(got.intact, intact, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(got.drops, drops, atol=1e-4, rtol=1e-4)


def test_the_pass_leaves_the_inputs_alone_and_a_model_that_ignores_a_tile_does_not_drop_there():
    class LeftColumn(torch.nn.Module):  # target logit = sum of the left half: tiles 0 and 2 of 2x2
        def forward(self, x):
            return x[..., : x.shape[3] // 2].sum(dim=(1, 2, 3))[:, None].repeat(1, 3)

    inputs = torch.rand(4, 1, 8, 8) + 1
    before = inputs.clone()
    got = tile_reliance(LeftColumn(), inputs, torch.zeros(4, dtype=torch.int64), 2)
    assert torch.equal(inputs, before)
    assert torch.equal(got.drops[:, [1, 3]], torch.zeros(4, 2))
    torch.testing.assert_close(got.drops[:, 0], inputs[..., :4, :4].sum(dim=(1, 2, 3)))
    torch.testing.assert_close(got.intact, inputs[..., :4].sum(dim=(1, 2, 3)))


def test_the_blurred_tile_keeps_its_mean_and_takes_nothing_from_its_neighbours():
    inputs = torch.zeros(2, 3, 30, 30)
    inputs[:, :, :10, :10] = torch.rand(2, 3, 10, 10)
    blurred = baseline_mosaics(inputs, 3, "blur")
    assert torch.equal(blurred[:, :, 10:, :], torch.zeros(2, 3, 20, 30))
    assert torch.equal(blurred[:, :, :, 10:], torch.zeros(2, 3, 30, 20))
    assert blurred[:, :, :10, :10].std() < inputs[:, :, :10, :10].std()
    assert baseline_mosaics(inputs, 3, "mean") is None


def test_model_focus_is_the_share_of_positive_drops_on_the_targets():
    torch.manual_seed(1)
    drops = torch.randn(50, 9)
    drops[0] = -torch.rand(9)  # no positive drop: undefined
    mask = torch.zeros(50, 9, dtype=torch.bool)
    mask[torch.arange(50), torch.randint(0, 9, (50,))] = True
    got = model_focus(drops, mask)
    for b in range(50):
        positive = [max(float(d), 0.0) for d in drops[b]]
        expected = sum(p for p, m in zip(positive, mask[b]) if m) / sum(positive) if sum(positive) > 0 else math.nan
        assert (math.isnan(expected) and math.isnan(got[b])) or abs(float(got[b]) - expected) < 1e-6
    assert math.isnan(got[0])


def test_the_gap_is_focus_minus_model_focus():
    focus, model = torch.tensor([0.9, 0.2, float("nan")]), torch.tensor([0.5, 0.6, 0.4])
    torch.testing.assert_close(explainer_gap(focus, model)[:2], torch.tensor([0.4, -0.4]))
    assert explainer_gap(focus, model)[2].isnan()
    with pytest.raises(FocusError, match="same"):
        explainer_gap(focus, model[:2])


@pytest.mark.parametrize("tiles", [9, 16])
def test_rank_agreement_is_scipys_spearman(tiles):
    rng = np.random.default_rng(tiles)
    relevance = rng.integers(0, 4, size=(40, tiles)).astype(float)  # many ties, as positive sums with zeros have
    drops = rng.normal(size=(40, tiles)).round(1)
    relevance[0] = 2.0  # constant: no ranking
    got = rank_agreement(torch.tensor(relevance), torch.tensor(drops, dtype=torch.float32))
    for b in range(40):
        expected = spearmanr(relevance[b], drops[b]).statistic if b else math.nan
        assert (math.isnan(expected) and math.isnan(got[b])) or abs(float(got[b]) - expected) < 1e-6, b


def test_rank_agreement_is_undefined_on_four_tiles():
    assert rank_agreement(torch.rand(3, 4), torch.rand(3, 4)).isnan().all()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: tile_reliance(m, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 5), "grid of 2, 3 or 4"),
        (lambda m: tile_reliance(m, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 2, baseline="noise"),
         "Unknown baseline"),
        (lambda m: tile_reliance(m, torch.rand(2, 8, 8), torch.tensor([0, 1]), 2), r"\(B, C, H, W\)"),
        (lambda m: tile_reliance(m, torch.rand(2, 1, 8, 8), torch.tensor([0]), 2), "targets"),
        (lambda m: tile_reliance(m, torch.rand(2, 1, 8, 8), torch.tensor([0, 99]), 2), "below 10"),
        (lambda m: tile_reliance(m, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), 2, batch_size=0), "batch size"),
        (lambda m: model_focus(torch.rand(2, 4), torch.ones(2, 9, dtype=torch.bool)), "mask"),
    ],
)
def test_mistakes_are_refused_in_one_sentence(small_model, call, message):
    with pytest.raises(FocusError, match=message):
        call(small_model)


# --- the science on the bundled digits ---------------------------------------------------------------------------

SEEDS = (0, 1, 2, 3, 4)


@pytest.fixture(scope="module")
def mosaics2(digits32):
    manifest = build_manifest(digits32, split="test", per_class=10, seed=0)
    return compose_normalized(digits32.tiles, manifest.index_tensor(), digits32), manifest.target_classes(), \
        target_mask(manifest)


def test_random_weights_give_model_focus_about_chance(digits32, mosaics2):
    inputs, targets, mask = mosaics2
    medians = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = build_model("digits_cnn", num_classes=len(digits32.classes), in_channels=1).eval()
        medians.append(stats.summarize(model_focus(tile_reliance(model, inputs, targets, 2).drops, mask).numpy())
                       ["median"])
    mean, chance = float(np.mean(medians)), chance_level(2, 2)
    print(f"\nrandom weights: model Focus medians {np.round(medians, 3).tolist()}, mean {mean:.3f}, chance {chance}")
    assert abs(mean - chance) <= stats.chance_tolerance(chance)
    assert len(set(medians)) > 1  # the seeds are different networks


@pytest.fixture(scope="module")
def trained(trained_digits_cnn):
    model, history, _ = trained_digits_cnn(0)
    assert history[-1].val_accuracy >= 0.97
    return model


@pytest.mark.training
@pytest.mark.parametrize("baseline", BASELINES)
def test_the_trained_model_relies_on_the_target_tiles_far_above_chance(trained, mosaics2, baseline):
    inputs, targets, mask = mosaics2
    scores = model_focus(tile_reliance(trained, inputs, targets, 2, baseline=baseline).drops, mask).numpy()
    summary, chance = stats.summarize(scores), chance_level(2, 2)
    print(f"\ntrained, {baseline} baseline: model Focus median {summary['median']:.3f}, undefined "
          f"{summary['share_undefined']:.2f}")
    # "far above": twice the band that counts as chance above it (measured: mean 0.76, blur 0.84)
    assert summary["median"] >= chance + 2 * stats.chance_tolerance(chance)


@pytest.mark.training
def test_on_3x3_mosaics_gradcam_and_lrp_rank_tiles_as_the_model_does_and_the_random_control_does_not(
        trained, digits32):
    grid = 3
    manifest = build_manifest(digits32, split="test", per_class=5, seed=0, grid=grid, targets=3)
    inputs, targets, mask = compose_normalized(digits32.tiles, manifest.index_tensor(), digits32), \
        manifest.target_classes(), target_mask(manifest)
    reliance = tile_reliance(trained, inputs, targets, grid)
    own = model_focus(reliance.drops, mask)
    medians = {}
    for method in ("gradcam", "lrp", "random"):
        maps = get_explainer(method)(trained, inputs, targets)
        agreement = rank_agreement(tile_sums(maps, grid)[..., 0], reliance.drops)
        gap = explainer_gap(focus_score(maps, mask), own)
        medians[method] = (float(agreement.nanmedian()), float(gap.nanmedian()))
    print(f"\n3x3, 3 targets: model Focus median {float(own.nanmedian()):.3f}; (Spearman, gap) medians {medians}")
    # measured on these 50 mosaics: GradCAM 0.85, LRP 0.82, random -0.08
    assert medians["gradcam"][0] >= 0.6 and medians["lrp"][0] >= 0.6
    assert abs(medians["random"][0]) <= 0.2


@pytest.mark.training
def test_gradcam_and_lrp_sit_near_the_models_reliance_and_smoothgrad_and_the_random_control_far_below(
        trained, mosaics2):
    inputs, targets, mask = mosaics2
    own = model_focus(tile_reliance(trained, inputs, targets, 2).drops, mask)
    gaps = {method: float(explainer_gap(focus_score(get_explainer(method)(trained, inputs, targets), mask),
                                        own).nanmedian())
            for method in ("gradcam", "lrp", "smoothgrad", "random")}
    print(f"\n2x2, 100 mosaics, mean baseline: median explainer gap {({m: round(g, 3) for m, g in gaps.items()})}")
    # measured: GradCAM +0.158, LRP +0.156, SmoothGrad -0.220, random -0.258 (the module doc)
    for good in ("gradcam", "lrp"):
        assert abs(gaps[good]) <= 0.2
        for weak in ("smoothgrad", "random"):
            assert gaps[weak] <= -0.15 and gaps[weak] <= gaps[good] - 0.3
