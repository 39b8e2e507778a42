"""Which one changed: the model's reliance or the explanation, when Focus moves between two evaluations.

Focus mixes the model's reliance on the target tiles with the explanation's fidelity to it
(docs/reliance.md). Two evaluations of the same mosaics (earlier and later: two checkpoints of one lineage, or
two explainers on one model) each give, per mosaic, Focus and model Focus (:func:`focus_core.reliance.model_focus`);
:func:`which_changed` reads from the paired differences which of the two moved.

The three paired quantities, each over the mosaics where all four values are defined:

- ``focus_change``: the median of ``focus_later - focus_earlier``;
- ``model_focus_change``: the median of ``model_focus_later - model_focus_earlier``;
- ``gap_change``: the median change of the explainer gap (Focus minus model Focus), the part of the Focus change
  the model's reliance does not account for.

Each comes with the two-sided Wilcoxon signed-rank p-value of :func:`focus_core.stats.paired_test`. A quantity

- **moved** when its p-value is below :data:`ALPHA` and its median change is at least :data:`MIN_CHANGE` in size;
- **held** when its median change is below :data:`MIN_CHANGE` in size (whatever the p-value: a significant change
  of a few hundredths is no change for this question);
- is **undecided** otherwise (a large change the mosaics cannot tell from noise).

The rule (:data:`RULE`):

=====================  =====================  ===============
model Focus            explainer gap          ``cause``
=====================  =====================  ===============
moved                  held                   ``model``
held                   moved                  ``explainer``
moved                  moved                  ``both``
anything else                                 ``unclear``
=====================  =====================  ===============

and ``unclear`` whenever fewer than :data:`MIN_PAIRS` mosaics have all four values defined. ``model``: the model
relies more or less on the target tiles and the explanation follows it; ``explainer``: the model's reliance held
and the explanation moved; ``both``: each moved by itself (the gap moved, and so did the reliance). The rule does
not look at Focus itself: a caller asks when Focus fell, and the answer names what moved.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> model_before = rng.uniform(0.6, 0.9, 40)
>>> focus_before = model_before + 0.1
>>> verdict = which_changed(focus_before, focus_before - 0.3, model_before, model_before - 0.3)
>>> verdict.cause, round(verdict.focus_change, 2), round(verdict.gap_change, 2), verdict.n
('model', -0.3, 0.0, 40)
>>> which_changed(focus_before, focus_before - 0.3, model_before, model_before).cause
'explainer'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from focus_core.errors import FocusError
from focus_core.stats import as_scores, paired_test

__all__ = ["ALPHA", "CAUSES", "MIN_CHANGE", "MIN_PAIRS", "RULE", "ChangeCause", "which_changed"]

#: The answers :func:`which_changed` gives.
CAUSES: tuple[str, ...] = ("model", "explainer", "both", "unclear")
#: Significance level of each two-sided paired Wilcoxon test (model Focus, explainer gap).
ALPHA = 0.05
#: Smallest median paired change (Focus units) that counts as a move; below it a quantity held.
MIN_CHANGE = 0.05
#: Fewest mosaics with all four values defined that can give an answer other than ``unclear``.
MIN_PAIRS = 10
#: The rule in words, as an event payload may record it.
RULE = (f"model Focus and the explainer gap each moved (two-sided paired Wilcoxon p < {ALPHA} and |median paired "
        f"change| >= {MIN_CHANGE}) or held (|median paired change| < {MIN_CHANGE}); model: model Focus moved and "
        f"the gap held; explainer: model Focus held and the gap moved; both: both moved; unclear: anything else "
        f"or fewer than {MIN_PAIRS} mosaics with every value defined")

Cause = Literal["model", "explainer", "both", "unclear"]


@dataclass(frozen=True)
class ChangeCause:
    """What moved between two evaluations of the same mosaics (see the module doc for the rule).

    ``n``: mosaics with Focus and model Focus defined in both evaluations; ``*_change``: median paired change
    (later minus earlier), NaN when ``n`` is 0; ``*_p``: two-sided Wilcoxon p-value of that change (1 when every
    difference is zero, NaN when ``n`` is 0); ``cause``: one of :data:`CAUSES`.
    """

    n: int
    focus_change: float
    focus_p: float
    model_focus_change: float
    model_focus_p: float
    gap_change: float
    gap_p: float
    cause: Cause

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (NaN stays NaN: a caller storing JSON maps it to null)."""
        return asdict(self)


def _state(change: float, p_value: float) -> Literal["moved", "held", "undecided"]:
    if abs(change) < MIN_CHANGE:
        return "held"
    return "moved" if p_value < ALPHA else "undecided"


def which_changed(focus_earlier: Any, focus_later: Any, model_focus_earlier: Any, model_focus_later: Any
                  ) -> ChangeCause:
    """Say whether the model's reliance, the explanation, both or neither clearly moved between two evaluations.

    Parameters
    ----------
    focus_earlier, focus_later : sequence of float, numpy.ndarray or torch.Tensor
        Focus of each mosaic in the earlier and the later evaluation, aligned (index ``i`` is the same mosaic in
        all four); NaN (or ``None``) where undefined.
    model_focus_earlier, model_focus_later : sequence of float, numpy.ndarray or torch.Tensor
        Model Focus of the same mosaics (:func:`focus_core.reliance.model_focus`), same baseline in both.

    Returns
    -------
    ChangeCause
        The three median paired changes, their p-values, the number of mosaics used and the ``cause``.

    Raises
    ------
    FocusError
        When the four sequences are not 1-D numeric sequences of one length, or hold infinite values.
    """
    names = ("earlier Focus", "later Focus", "earlier model Focus", "later model Focus")
    values = [as_scores(v, name) for v, name in
              zip((focus_earlier, focus_later, model_focus_earlier, model_focus_later), names)]
    if len({v.size for v in values}) != 1:
        sizes = ", ".join(f"{name} {v.size}" for name, v in zip(names, values))
        raise FocusError(f"Expected one value per mosaic in each of the four sequences but got {sizes}: "
                         "pass the same mosaics, in the same order, in both evaluations.")
    defined = ~np.any([np.isnan(v) for v in values], axis=0)
    f0, f1, m0, m1 = (v[defined] for v in values)
    focus, model, gap = paired_test(f1, f0), paired_test(m1, m0), paired_test(f1 - m1, f0 - m0)
    n = int(defined.sum())
    cause: Cause = "unclear"
    if n >= MIN_PAIRS:
        states = (_state(model["median_difference"], model["p_value"]),
                  _state(gap["median_difference"], gap["p_value"]))
        cause = {("moved", "held"): "model", ("held", "moved"): "explainer",
                 ("moved", "moved"): "both"}.get(states, "unclear")
    return ChangeCause(
        n=n,
        focus_change=float(focus["median_difference"]), focus_p=float(focus["p_value"]),
        model_focus_change=float(model["median_difference"]), model_focus_p=float(model["p_value"]),
        gap_change=float(gap["median_difference"]), gap_p=float(gap["p_value"]),
        cause=cause,
    )
