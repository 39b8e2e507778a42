"""The extended Focus paper's bias test on the bundled digits: a shortcut in one class shows in that class alone.

A ``DigitsCNN`` fine-tuned so that a small bright square in a tile's corner means "3" (stamped copies of other
digits labelled 3) keeps its overall median Focus on clean mosaics, while on corner-patch probe mosaics
(:mod:`focus_core.probes`: the square stamped on every non-target tile) class 3's GradCAM Focus falls: its
explanation moves to the stamped tiles. :func:`focus_core.class_comparison.compare_classes` (paired per class,
Holm-Bonferroni over the classes) names class 3, and class 3 alone; on clean mosaics class 3 falls far less.
Run with ``-s`` to see the measured numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

from focus_core.class_comparison import compare_classes
from focus_core.explainers import get_explainer
from focus_core.metric import focus_score
from focus_core.mosaics import build_manifest, target_mask
from focus_core.train import evaluate_accuracy
from tests.focus_core.shortcut_model import PATCH, SHORTCUT, mosaics_of, stamped_tiles

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("one_thread")]


def _gradcam_focus(model, digits, manifest) -> np.ndarray:
    maps = get_explainer("gradcam")(model.eval(), mosaics_of(digits, manifest), manifest.target_classes())
    scores = focus_score(maps, target_mask(manifest))
    return scores.numpy().astype(float)


def test_a_corner_shortcut_for_one_class_shows_in_that_class_on_probe_mosaics_only(shortcut_digits_cnn, digits32):
    base, shortcut = shortcut_digits_cnn
    others = digits32.indices("test")[digits32.labels[digits32.indices("test")] != SHORTCUT]
    stamped = stamped_tiles(digits32.tiles[others], seed=2)
    called = {name: float((m(digits32.normalize(stamped)).argmax(1) == SHORTCUT).float().mean())
              for name, m in (("base", base), ("shortcut", shortcut))}
    accuracy = {name: round(evaluate_accuracy(m, digits32, "test")[1], 3) for name, m in (("base", base),
                                                                                      ("shortcut", shortcut))}

    clean = build_manifest(digits32, split="test", per_class=15, seed=0)
    probe = build_manifest(digits32, split="test", per_class=15, seed=0, probe=PATCH)
    classes = clean.target_classes().numpy()
    clean_base, clean_shortcut = _gradcam_focus(base, digits32, clean), _gradcam_focus(shortcut, digits32, clean)
    probe_base, probe_shortcut = _gradcam_focus(base, digits32, probe), _gradcam_focus(shortcut, digits32, probe)
    overall = float(np.nanmedian(clean_shortcut) - np.nanmedian(clean_base))
    rows = compare_classes(probe_shortcut, probe_base, classes, alpha=0.05, threshold=0.05)
    fell = [r["class"] for r in rows if r["fell"]]
    by_class = {r["class"]: r for r in rows}
    print(f"\nstamped other digits called {SHORTCUT}: {called}; test accuracy {accuracy}")
    print(f"clean overall median change {overall:+.3f}; probe class {SHORTCUT}: "
          f"{by_class[SHORTCUT]['previous_median_focus']:.3f} -> {by_class[SHORTCUT]['median_focus']:.3f} "
          f"(Holm p {by_class[SHORTCUT]['p_adjusted']:.2g}); classes that fell {fell}")
    print("per class change on the probe set:", {c: round(r["median_change"], 3) for c, r in by_class.items()})

    assert called["shortcut"] >= called["base"] + 0.3  # the model learned the shortcut
    assert abs(overall) <= 0.05  # the overall median on clean mosaics barely moves
    assert fell == [SHORTCUT] and by_class[SHORTCUT]["median_change"] <= -0.2
    assert min(rows, key=lambda r: r["median_change"])["class"] == SHORTCUT  # the class that fell most
    clean_rows = {r["class"]: r for r in compare_classes(clean_shortcut, clean_base, classes)}
    print("clean per class (change, Holm p):",
          {c: (round(r["median_change"], 3), round(r["p_adjusted"], 3)) for c, r in clean_rows.items()})
    # the probe set shows the shortcut far more than the clean set (where class 3 may move a little too)
    assert by_class[SHORTCUT]["median_change"] <= clean_rows[SHORTCUT]["median_change"] - 0.1
