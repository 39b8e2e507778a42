"""Which one changed, on the bundled digits: a watermark model is the model's change, a worse explainer the explainer's.

- The watermark: the seed-0 trained ``DigitsCNN`` and its corner-square shortcut fine-tune
  (:mod:`tests.focus_core.shortcut_model`: a bright square in a corner means "3"), compared on the same probe mosaics
  (150 test mosaics, 2x2, the square on every non-target tile), class 3's mosaics (15): the fine-tuned model's own
  reliance moves to the stamped tiles (model Focus below chance), GradCAM's Focus falls with it, the explainer gap
  holds, and :func:`focus_core.cause.which_changed` says ``model``. Measured (2 shared CPU cores, fp32): median
  paired change of Focus -0.36, of model Focus -0.37, of the gap -0.04; class 3's model Focus median 0.75 -> 0.38.
- The worse explainer: the same trained model on 100 clean test mosaics, GradCAM on its last block (the default)
  and then on its first block's ReLU (``features.2``, full resolution, barely past the pixels): model Focus is the
  same and the Focus falls (median 0.94 -> 0.52): ``explainer``.

Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from focus_core.cause import which_changed
from focus_core.explainers import get_explainer
from focus_core.layouts import chance_level
from focus_core.metric import focus_score
from focus_core.mosaics import build_manifest, compose_normalized, target_mask
from focus_core.reliance import model_focus, tile_reliance
from tests.focus_core.shortcut_model import PATCH, SHORTCUT, mosaics_of

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("one_thread")]


def _focus_and_model_focus(model, inputs, targets, mask, explainer) -> tuple[np.ndarray, np.ndarray]:
    focus = focus_score(explainer(model, inputs, targets), mask)
    own = model_focus(tile_reliance(model, inputs, targets, 2).drops, mask)
    return focus.numpy().astype(float), own.numpy().astype(float)


def test_a_watermark_model_on_watermarked_mosaics_is_the_models_change(shortcut_digits_cnn, digits32):
    base, shortcut = shortcut_digits_cnn
    probe = build_manifest(digits32, split="test", per_class=15, seed=0, probe=PATCH)
    inputs, targets, mask = mosaics_of(digits32, probe), probe.target_classes(), target_mask(probe)
    gradcam = get_explainer("gradcam")
    earlier = _focus_and_model_focus(base, inputs, targets, mask, gradcam)
    later = _focus_and_model_focus(shortcut, inputs, targets, mask, gradcam)
    three = targets.numpy() == SHORTCUT
    verdict = which_changed(earlier[0][three], later[0][three], earlier[1][three], later[1][three])
    overall = which_changed(earlier[0], later[0], earlier[1], later[1])
    print(f"\nclass {SHORTCUT} on probe mosaics: model Focus median {np.nanmedian(earlier[1][three]):.3f} -> "
          f"{np.nanmedian(later[1][three]):.3f}; {verdict}\nall classes: {overall}")
    assert np.nanmedian(later[1][three]) < chance_level(2, 2)  # the model's evidence for 3 is on the stamped tiles
    assert verdict.cause == "model" and verdict.focus_change <= -0.2 and verdict.model_focus_change <= -0.2


def test_a_worse_explainer_on_the_same_model_is_the_explainers_change(trained_digits_cnn, digits32):
    model = trained_digits_cnn(0)[0]
    manifest = build_manifest(digits32, split="test", per_class=10, seed=0)
    inputs, targets, mask = compose_normalized(digits32.tiles, manifest.index_tensor(), digits32), \
        manifest.target_classes(), target_mask(manifest)
    earlier = _focus_and_model_focus(model, inputs, targets, mask, get_explainer("gradcam"))
    later = _focus_and_model_focus(model, inputs, targets, mask, get_explainer("gradcam", layer="features.2"))
    verdict = which_changed(earlier[0], later[0], earlier[1], later[1])
    print(f"\nGradCAM last block -> first block: Focus median {np.nanmedian(earlier[0]):.3f} -> "
          f"{np.nanmedian(later[0]):.3f}; {verdict}")
    assert verdict.cause == "explainer" and verdict.model_focus_change == 0.0 and verdict.focus_change <= -0.2
