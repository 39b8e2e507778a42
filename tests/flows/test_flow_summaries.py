"""What ``focus randomize`` and ``focus train`` print: every seed, both intervals, every method with its n.

The randomization summary reads a real store (SQLite) holding a trained evaluation, five fully random and
three cascading seeds (:mod:`tests.flows.test_report_seeds`), with the result the randomization flow returns.
"""

from __future__ import annotations

import argparse
import io
import re

import numpy as np

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


def _train_result() -> dict:
    """The training flow's result for three epochs and two methods, lrp_fast with most maps undefined at epoch 3."""
    from flows.train import _epoch_records

    rows = []
    for epoch, (grad, lrp, lrp_defined) in enumerate([(0.51, 0.50, 20), (0.62, 0.58, 18), (0.70, 0.65, 15),
                                                       (0.74, 0.733, 8)]):
        for evaluation, (method, median, defined) in enumerate([("gradcam", grad, 20), ("lrp_fast", lrp, lrp_defined)]):
            rows.append({"epoch": epoch, "train_loss": 1.0 / (epoch + 1), "val_loss": 1.1 / (epoch + 1),
                         "val_accuracy": 0.1 + 0.2 * epoch, "evaluation_id": 10 * epoch + evaluation,
                         "method_name": method, "focus_n": 20, "focus_n_defined": defined, "focus_median": median,
                         "focus_mean": median})
    correlations = [{"method": m, "n": 4, "r": 0.98, "p_value": 0.02, "n_without_epoch_0": 3,
                     "r_without_epoch_0": 0.97, "p_value_without_epoch_0": 0.15} for m in ("gradcam", "lrp_fast")]
    return {"training_run_id": 5, "epochs_run": [1, 2, 3], "epochs": _epoch_records(rows),
            "correlation": correlations[0], "correlations": correlations, "final_checkpoint_id": 9,
            "final_weights": "/tmp/w.pt", "final_sha256": "ab" * 32}


def test_train_names_every_method_with_its_undefined_share_and_says_what_r_can_show(sqlite_url: str) -> None:
    result = _train_result()
    assert result["epochs"][3]["focus_stats"]["lrp_fast"] == {"median": 0.733, "n": 20, "n_defined": 8,
                                                              "share_undefined": 0.6}
    db.upgrade(sqlite_url)  # a store without this run: no data line
    out = io.StringIO()
    emit("train", result, argparse.Namespace(database_url=sqlite_url, format="text"), out)
    text_ = out.getvalue()
    lines = text_.splitlines()
    header = next(line for line in lines if line.startswith("epoch"))
    assert header.split()[-2:] == ["gradcam", "lrp_fast"] and "median Focus" not in header
    epoch_3 = next(line for line in lines if line.split()[:1] == ["3"])
    assert epoch_3.split()[-4:] == ["0.740", "(0%)", "0.733", "(60%)"]
    assert "on 20 mosaics per epoch" in text_ and "share of undefined maps" in text_
    for method in ("gradcam", "lrp_fast"):
        line = next(line for line in lines if f"median Focus of {method}" in line)
        assert "over n = 4 epochs (p = 0.020)" in line and "without epoch 0: r = 0.970, n = 3" in line
    assert "With 4 epochs, one epoch can swing r" in text_ and "not independent" in text_


def test_a_small_test_split_gets_a_word_in_the_summary(sqlite_url: str) -> None:
    """Fewer than ten test images in a class: the summary says so; ten or more: no word."""
    from flows.cli.flow_summaries import SMALL_SET, small_set
    from tests.db.test_grids import PER_CLASS_TEST

    written = _store(sqlite_url)
    out = io.StringIO()
    emit("randomize", _flow_result(written), argparse.Namespace(database_url=sqlite_url, format="text"), out)
    assert PER_CLASS_TEST < SMALL_SET
    assert f"Small set: {PER_CLASS_TEST} test images per class" in out.getvalue(), out.getvalue()
    engine = db.open_store(sqlite_url)
    try:
        relpaths = [f"c{c}/{i:03d}.png" for c in range(2) for i in range(SMALL_SET)]
        ds = db.register_dataset(engine, "big", "b" * 64, ["a", "b"], relpaths, [c for c in range(2)
                                 for _ in range(SMALL_SET)], ["test"] * (2 * SMALL_SET), tile_size=8)
        ids = np.asarray(ds.image_ids)
        rows = np.array([[ids[0], ids[1], ids[SMALL_SET], ids[SMALL_SET + 1]]])
        ms = db.register_mosaic_set(engine, "s" * 64, ds.dataset_id, "test", 0, 1, "random", rows, np.array([0]),
                                    np.array([[True, True, False, False]]), tile_size=8)
        assert small_set(engine, ms.mosaic_set_id) == []
        assert small_set(engine, written["grid"].mosaic_set_id) != []
    finally:
        engine.dispose()


def test_the_sweep_next_step_names_every_evaluation_it_ran(sqlite_url: str) -> None:
    """A command that runs as printed: every evaluation id, no trailing "..." that the parser would refuse."""
    import shlex

    from flows.cli.parser import build_parser

    written = _store(sqlite_url)
    ids = [written["trained"], *(written["full"][s][0] for s in FULL_SEEDS)]
    out = io.StringIO()
    emit("sweep", {"cells": [{"evaluation_id": i} for i in ids]},
         argparse.Namespace(database_url=sqlite_url, format="text"), out)
    printed = next(line for line in out.getvalue().splitlines() if line.startswith("Next: "))
    args = build_parser().parse_args(shlex.split(printed.removeprefix("Next: focus ")))
    assert args.evaluations == ids and args.database_url == sqlite_url


def test_every_summary_says_the_data_its_tile_size_resize_and_split(sqlite_url: str) -> None:
    """The dataset, the split sizes, the resize and the crop, and the split the mosaics come from, in one line."""
    from flows.cli.flow_summaries import data_line

    written = _store(sqlite_url)
    out = io.StringIO()
    emit("randomize", _flow_result(written), argparse.Namespace(database_url=sqlite_url, format="text"), out)
    shown = [line for line in out.getvalue().splitlines() if line.startswith("Data: ")]
    assert len(shown) == 1 and " px tiles; test mosaics." in shown[0], out.getvalue()
    engine = db.open_store(sqlite_url)
    try:
        relpaths = [f"c{c}/{i:03d}.png" for c in range(3) for i in range(10)]
        splits = (["train"] * 6 + ["val"] * 2 + ["test"] * 2) * 3
        ds = db.register_dataset(engine, "shapes", "d" * 64, ["a", "b", "c"], relpaths,
                                 [c for c in range(3) for _ in range(10)], splits, tile_size=64)
        ids = np.asarray(ds.image_ids)
        rows = np.array([[ids[8], ids[18], ids[9], ids[28]]])
        ms = db.register_mosaic_set(engine, "r" * 64, ds.dataset_id, "test", 0, 1, "random", rows, np.array([0]),
                                    np.array([[True, False, True, False]]), tile_size=64, resize=73)
        assert data_line(engine, ms.mosaic_set_id) == [
            "Data: shapes, 3 classes, 18 train / 6 val / 6 test images; resized to 73 px, centre 64 px crop; test "
            "mosaics."]
        assert data_line(engine, 10_000) == [] and data_line(engine, None) == []
    finally:
        engine.dispose()


def test_the_audit_summary_names_each_class_that_fell_and_its_probe(sqlite_url: str) -> None:
    """A class that fell on a probe set is a line of its own under the table, with its corrected p."""
    result = {"audit_run_id": 4, "regressions": [], "results": [
        {"checkpoint": "ab" * 32, "checkpoint_name": "digits-v2", "method": "gradcam", "kind": "previous",
         "median_focus": 0.8, "previous_median_focus": 0.79, "median_change": 0.01, "p_value": 0.4,
         "regressed": False, "significant": False, "previous_evaluation_id": 3}],
        "class_regressions": [{"class": 3, "class_name": "3", "probe": "corner", "method": "gradcam",
                               "kind": "previous", "median_change": -0.286, "p_adjusted": 0.0006}]}
    out = io.StringIO()
    emit("audit", result, argparse.Namespace(database_url=sqlite_url, format="text"), out)
    text = out.getvalue()
    assert "0 regression(s)" in text
    assert re.search(r"Class 3 fell on the corner set with gradcam \(previous, change -0\.286, Holm p 0\.0006", text), \
        text
