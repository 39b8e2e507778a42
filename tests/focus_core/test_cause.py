"""Which one changed, on constructed evaluations: each of the four answers, the thresholds at their edges, NaNs and
too few mosaics. The science (a watermark model and a worse explainer on the bundled digits) is in
test_cause_science.py."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from focus_core import cause as cause_module
from focus_core.cause import ALPHA, CAUSES, MIN_CHANGE, MIN_PAIRS, RULE, ChangeCause, which_changed
from focus_core.errors import FocusError
from focus_core.stats import paired_test

N = 40


@pytest.fixture
def earlier() -> tuple[np.ndarray, np.ndarray]:
    """Focus and model Focus of 40 mosaics: model Focus spread over [0.5, 0.8], Focus 0.1 above it, with noise."""
    rng = np.random.default_rng(0)
    model = rng.uniform(0.5, 0.8, N)
    return model + 0.1 + rng.normal(0, 0.01, N), model


def _noise(seed: int, scale: float = 0.01) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, scale, N)


def test_the_model_moved_and_the_explanation_followed(earlier):
    focus, model = earlier
    got = which_changed(focus, focus - 0.3 + _noise(1), model, model - 0.3 + _noise(2))
    assert got.cause == "model"
    assert got.n == N and got.focus_change == pytest.approx(-0.3, abs=0.02)
    assert got.model_focus_change == pytest.approx(-0.3, abs=0.02) and got.model_focus_p < ALPHA
    assert abs(got.gap_change) < MIN_CHANGE


def test_the_model_held_and_the_explanation_moved(earlier):
    focus, model = earlier
    got = which_changed(focus, focus - 0.3 + _noise(1), model, model + _noise(2, 0.001))
    assert got.cause == "explainer"
    assert abs(got.model_focus_change) < MIN_CHANGE
    assert got.gap_change == pytest.approx(-0.3, abs=0.02) and got.gap_p < ALPHA


def test_both_moved(earlier):
    focus, model = earlier
    got = which_changed(focus, focus - 0.4 + _noise(1), model, model - 0.15 + _noise(2))
    assert got.cause == "both"
    assert got.model_focus_change == pytest.approx(-0.15, abs=0.02)
    assert got.gap_change == pytest.approx(-0.25, abs=0.02)


def test_nothing_moved_is_unclear(earlier):
    focus, model = earlier
    got = which_changed(focus, focus + _noise(1), model, model + _noise(2))
    assert got.cause == "unclear" and abs(got.focus_change) < MIN_CHANGE


def test_a_large_change_the_mosaics_cannot_tell_from_noise_is_unclear(earlier):
    """Model Focus moves by 0.1 in the median but half the mosaics move the other way: not significant."""
    focus, model = earlier
    swing = np.where(np.arange(N) % 2 == 0, 0.1, -0.1)
    swing[1] = 0.1  # 21 mosaics up by 0.1 and 19 down by 0.1: the median moves by 0.1, the signs nearly balance
    got = which_changed(focus, focus + swing, model, model + swing)
    assert abs(got.model_focus_change) >= MIN_CHANGE and got.model_focus_p >= ALPHA
    assert abs(got.gap_change) < MIN_CHANGE
    assert got.cause == "unclear"


def test_a_significant_change_below_the_threshold_counts_as_held(earlier):
    focus, model = earlier
    small = MIN_CHANGE / 2
    got = which_changed(focus, focus - 0.3, model, model - small + _noise(2, 0.001))
    assert got.model_focus_p < ALPHA and abs(got.model_focus_change) < MIN_CHANGE
    assert got.cause == "explainer"


def test_the_changes_are_the_repos_paired_tests(earlier):
    focus, model = earlier
    later_focus, later_model = focus - 0.2 + _noise(3, 0.05), model - 0.1 + _noise(4, 0.05)
    got = which_changed(focus, later_focus, model, later_model)
    for change, p, (a, b) in [
        ("focus_change", "focus_p", (later_focus, focus)),
        ("model_focus_change", "model_focus_p", (later_model, model)),
        ("gap_change", "gap_p", (later_focus - later_model, focus - model)),
    ]:
        test = paired_test(a, b)
        assert getattr(got, change) == pytest.approx(test["median_difference"])
        assert getattr(got, p) == pytest.approx(test["p_value"])


def test_mosaics_with_any_value_undefined_are_left_out_of_all_three(earlier):
    focus, model = earlier
    later_focus, later_model = focus - 0.3 + _noise(1), model - 0.3 + _noise(2)
    holes = [focus.copy(), later_focus.copy(), model.copy(), later_model.copy()]
    for k, values in enumerate(holes):
        values[k] = math.nan  # a different mosaic undefined in each of the four
    got = which_changed(*holes[:2], *holes[2:])
    kept = np.arange(N) >= 4
    expected = which_changed(focus[kept], later_focus[kept], model[kept], later_model[kept])
    assert got == expected and got.n == N - 4 and got.cause == "model"


def test_too_few_mosaics_are_unclear_however_clear_the_change(earlier):
    focus, model = earlier
    later_focus, later_model = focus - 0.3 + _noise(1), model - 0.3 + _noise(2)
    assert which_changed(focus[:MIN_PAIRS], later_focus[:MIN_PAIRS], model[:MIN_PAIRS],
                         later_model[:MIN_PAIRS]).cause == "model"
    few = MIN_PAIRS - 1
    got = which_changed(focus[:few], later_focus[:few], model[:few], later_model[:few])
    assert got.cause == "unclear" and got.n == few and got.model_focus_change == pytest.approx(-0.3, abs=0.03)
    undefined = later_model.copy()
    undefined[few:] = math.nan  # 40 mosaics given, 9 defined
    assert which_changed(focus, later_focus, model, undefined).cause == "unclear"


def test_no_mosaic_defined_is_unclear_with_nan_changes():
    nan = [math.nan] * 12
    got = which_changed(nan, nan, nan, nan)
    assert got.cause == "unclear" and got.n == 0
    assert all(math.isnan(v) for v in (got.focus_change, got.model_focus_change, got.gap_change, got.gap_p))
    assert which_changed([], [], [], []).n == 0


def test_it_takes_tensors_and_lists_and_gives_a_frozen_json_ready_result(earlier):
    focus, model = earlier
    later = (torch.tensor(focus - 0.3, dtype=torch.float32), torch.tensor(model - 0.3, dtype=torch.float32))
    got = which_changed(focus.tolist(), later[0], torch.tensor(model), later[1])
    assert isinstance(got, ChangeCause) and got.cause == "model"
    assert set(got.to_dict()) == {"n", "focus_change", "focus_p", "model_focus_change", "model_focus_p",
                                  "gap_change", "gap_p", "cause"}
    assert all(type(v) in (int, float, str) for v in got.to_dict().values())
    with pytest.raises(AttributeError):
        got.cause = "explainer"  # type: ignore[misc]


def test_the_rule_names_its_thresholds_and_every_cause_is_listed():
    assert CAUSES == ("model", "explainer", "both", "unclear")
    for constant in (str(ALPHA), str(MIN_CHANGE), str(MIN_PAIRS)):
        assert constant in RULE
    for name in ("ALPHA", "MIN_CHANGE", "MIN_PAIRS"):
        assert name in cause_module.__doc__


@pytest.mark.parametrize(
    "args, message",
    [
        (([0.5] * 12, [0.5] * 12, [0.5] * 12, [0.5] * 11), "one value per mosaic"),
        (([0.5] * 12, [0.5] * 12, [0.5] * 12, [[0.5]] * 12), "later model Focus"),
        (([0.5] * 12, [math.inf] * 12, [0.5] * 12, [0.5] * 12), "later Focus"),
    ],
)
def test_mistakes_are_refused_in_one_sentence(args, message):
    with pytest.raises(FocusError, match=message):
        which_changed(*args)
