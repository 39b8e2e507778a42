"""Names, order and picks of evaluations on the page.

Methods are listed in the paper's order, randomization kinds from none to independent;
checkpoints get a short unique name; figure files get a slug.

Examples
--------
>>> sorted(["random", "my_method", "lrp_fast", "smoothgrad", "lrp", "gradcam"], key=method_key)
['gradcam', 'lrp', 'lrp_fast', 'smoothgrad', 'random', 'my_method']
>>> slug("digits CNN #3", "gradcam++")
'digits-cnn-3-gradcam'
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from flows.results.names import checkpoint_name
from flows.report.queries import EvaluationData

__all__ = ["RANDOMIZATION_ORDER", "method_key", "slug", "checkpoint_names", "latest", "latest_per_cell",
           "final_checkpoints"]

_METHOD_ORDER = ("gradcam", "lrp", "lrp_fast", "smoothgrad", "integrated_gradients", "gradcam++", "gradient",
                 "input_x_gradient", "random")
RANDOMIZATION_ORDER = {"none": 0, "full": 1, "cascading": 2, "independent": 3}


def method_key(name: str) -> tuple[int, str]:
    """Sort key of a method name: the paper's order, then other names alphabetically."""
    return (_METHOD_ORDER.index(name) if name in _METHOD_ORDER else len(_METHOD_ORDER), name)


def slug(*parts: Any) -> str:
    """A file-name-safe, lower-case slug of the parts (at most 80 characters; ``x`` when empty)."""
    text = "-".join(str(p) for p in parts if p is not None and str(p) != "")
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:80] or "x"


def checkpoint_names(evals: Sequence[EvaluationData]) -> dict[int, str]:
    """A short unique name per checkpoint: its label, else its architecture (and id when shared).

    A checkpoint that several training runs produced byte for byte is named by all of them
    (``demo-digits epoch 8 = digits epoch 8``, :func:`flows.results.names.checkpoint_name`).
    """
    base = {}
    for e in evals:
        name = checkpoint_name(e.checkpoint_label, [(run, epoch) for _, run, epoch in e.origins])
        if name is None:
            name = e.architecture + ("" if e.epoch is None else f" epoch {e.epoch}")
        base[e.checkpoint_id] = name
    counts = defaultdict(int)
    for name in base.values():
        counts[name] += 1
    return {cid: (name if counts[name] == 1 else f"{name} #{cid}") for cid, name in base.items()}


def latest(evals: Iterable[EvaluationData]) -> EvaluationData:
    """The evaluation with the highest id."""
    return max(evals, key=lambda e: e.evaluation_id)


def latest_per_cell(evals: Iterable[EvaluationData]) -> list[EvaluationData]:
    """The latest evaluation of each checkpoint x method x mosaic set x randomization (stage, layer, seed).

    An audit re-evaluates the same cell every night; the main tables and figures show the latest, the
    audits section all of them. Each randomization seed is a cell of its own: every seed is kept.
    """
    cells: dict[tuple, list[EvaluationData]] = defaultdict(list)
    for e in evals:
        cells[(e.checkpoint_id, e.method, json.dumps(e.method_params, sort_keys=True, default=str), e.mosaic_set_id,
               e.randomization, e.stage, e.layer, e.seed)].append(e)
    chosen = {latest(group).evaluation_id for group in cells.values()}
    return [e for e in evals if e.evaluation_id in chosen]


def final_checkpoints(evals: Sequence[EvaluationData]) -> set[int]:
    """Checkpoints that are not an intermediate epoch of a training run (per-epoch ones are for Figure 5).

    A checkpoint two runs produced is final when it is the last epoch of either (the same weights may be an
    intermediate epoch of a longer run and the final one of a shorter run).
    """
    last_epoch: dict[int, int] = {}
    for e in evals:
        for run, epoch in e.runs_and_epochs:
            last_epoch[run] = max(last_epoch.get(run, epoch), epoch)
    return {e.checkpoint_id for e in evals
            if not e.runs_and_epochs or any(epoch == last_epoch[run] for run, epoch in e.runs_and_epochs)}
