"""What ``focus randomize`` and ``focus train`` print: every seed, both intervals, every method with its n.

The randomization summary reads a real store (SQLite) holding a trained evaluation, five fully random and
three cascading seeds (:mod:`tests.flows.test_report_seeds`), with the result the randomization flow returns.
"""

from __future__ import annotations

import argparse
import io
import re

import numpy as np
import pytest

import db
from flows.cli.summary import emit
from focus_core import stats
from tests.flows.test_report_seeds import CASCADING_SEEDS, FULL_SEEDS, _store


def _flow_result(written: dict) -> dict:
    """The randomization flow's result for the stored evaluations (trained, full seeds, cascading seeds)."""
    grid = written["grid"]
    stages = [{"label": "trained", "kind": "none", "stage": None, "layer": None, "seed": 0,
               "medians": {}, "evaluation_ids": {"gradcam": written["trained"]}}]
    for seed in FULL_SEEDS:
        evaluation, focus = written["full"][seed]
        stages.append({"label": f"full (seed {seed})", "kind": "full", "stage": None, "layer": None, "seed": seed,
                       "medians": {"gradcam": float(np.median(focus))}, "evaluation_ids": {"gradcam": evaluation}})
    for seed in CASCADING_SEEDS:
        for stage, layer in enumerate(("fc", "conv")):
            evaluation, focus = written["cascading"][(seed, stage)]
            stages.append({"label": f"cascading to {layer} (seed {seed})", "kind": "cascading", "stage": stage,
                           "layer": layer, "seed": seed, "medians": {"gradcam": float(np.median(focus))},
                           "evaluation_ids": {"gradcam": evaluation}})
    return {"checkpoint_id": grid.checkpoint_id, "mosaic_set_id": grid.mosaic_set_id, "stages": stages}


def test_randomize_shows_each_seed_both_intervals_and_the_spread_over_seeds(sqlite_url: str) -> None:
    written = _store(sqlite_url)
    out = io.StringIO()
    emit("randomize", _flow_result(written), argparse.Namespace(database_url=sqlite_url, format="text"), out)
    lines = out.getvalue().splitlines()
    assert all(len(line) <= 100 for line in lines if not line.startswith(("Results", "Next", "   "))), out.getvalue()
    header = next(i for i, line in enumerate(lines) if line.startswith("method") and "seed" in line)
    assert re.split(r"\s{2,}", lines[header].strip())[:8] == [
        "method", "model", "seed", "n", "undefined", "median Focus", "95% mosaics", "95% classes"]
    engine = db.open_store(sqlite_url)
    try:
        for seed in FULL_SEEDS:  # one row per seed, with the interval that resamples target classes
            evaluation, _ = written["full"][seed]
            row = next(line.split() for line in lines[header + 1:] if line.split()[-1:] == [str(evaluation)])
            assert row[:3] == ["gradcam", "full", str(seed)]
            results = db.evaluation_results(engine, evaluation)
            low, high = stats.cluster_bootstrap_median_ci(results["focus"].to_numpy(float),
                                                          results["target_class"].to_numpy(), 0.95, 1000, seed=0)
            assert row[-2] == f"{low:.3f}-{high:.3f}"
    finally:
        engine.dispose()
    assert any("chance level 0.333" in line for line in lines)
    # the mean and spread over seeds, for the fully random models and each cascading stage
    medians = [float(np.median(written["full"][s][1])) for s in FULL_SEEDS]
    spread = next(line.split() for line in lines if line.startswith("gradcam") and ",".join(map(str, FULL_SEEDS))
                  in line)
    assert spread[1:3] == ["full", "0,1,2,3,4"]
    assert spread[3:7] == [f"{v:.3f}" for v in (np.mean(medians), np.std(medians, ddof=1), min(medians),
                                                max(medians))]
    assert spread[7] == "no" and spread[8] == "(±0.067)"
    assert sum(line.startswith("gradcam") and "0,1,2 " in line for line in lines) == 2  # two cascading stages
