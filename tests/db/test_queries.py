"""Every query and view on both databases, against values computed by hand (and numpy as a reference)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import text

import db

ROOT = Path(__file__).resolve().parents[2]


def _evaluate(engine, world, build_sums, method_id, focus, predicted, *, checkpoint_id=None, audit_run_id=None,
              finish=True, mosaic_ids=None, masks=None):
    mosaic_ids = world.mosaic_ids if mosaic_ids is None else mosaic_ids
    masks = world.masks if masks is None else masks
    focus = np.asarray(focus, dtype=float)
    evaluation = db.get_or_create_evaluation(engine, checkpoint_id or world.checkpoint_id, method_id,
                                             world.mosaic_set_id, audit_run_id=audit_run_id)
    db.write_mosaic_results(engine, evaluation, mosaic_ids[: len(focus)], build_sums(focus, masks[: len(focus)]),
                            focus, predicted)
    if finish:
        db.finish_evaluation(engine, evaluation)
    return evaluation


def test_evaluation_summary_by_hand(engine, world, build_sums):
    grad = _evaluate(engine, world, build_sums, world.method_ids["gradcam"], [0.9, np.nan, 0.25, 0.5], [0, 0, 1, 1])
    lrp = _evaluate(engine, world, build_sums, world.method_ids["lrp"], [0.2, 0.4, 0.6, 0.8], [1, 1, 1, 1])
    empty = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id,
                                        randomization="full")
    frame = db.evaluation_summary(engine).set_index("evaluation_id")
    assert list(frame.index) == [grad, lrp, empty]
    g = frame.loc[grad]
    assert (g["method"], g["architecture"], g["checkpoint_label"], g["n"], g["n_defined"]) == (
        "gradcam", "digits_cnn", "prod", 4, 3)
    assert g[["mean_focus", "median_focus", "q1_focus", "q3_focus", "min_focus", "max_focus"]].tolist() == \
        pytest.approx([0.55, 0.5, 0.375, 0.7, 0.25, 0.9])
    assert g["mosaic_accuracy"] == pytest.approx(0.75)  # targets 0, 0, 0, 1
    l_ = frame.loc[lrp]
    assert l_[["mean_focus", "median_focus", "q1_focus", "q3_focus"]].tolist() == pytest.approx([0.5, 0.5, 0.35, 0.65])
    assert l_["mosaic_accuracy"] == pytest.approx(0.25)
    e = frame.loc[empty]
    assert (e["n"], e["n_defined"], e["status"]) == (0, 0, "pending")
    assert np.isnan(e["median_focus"])
    assert list(db.evaluation_summary(engine, [lrp])["evaluation_id"]) == [lrp]
    assert db.evaluation_summary(engine, []).empty
    # the view by plain SQL
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT n, n_defined, median_focus, q1_focus, q3_focus FROM evaluation_summary "
                 "WHERE evaluation_id = :e"), {"e": grad}).one()
    assert tuple(row) == pytest.approx((4, 3, 0.5, 0.375, 0.7))


def test_view_quantiles_match_numpy(engine, world, build_sums):
    """The ROW_NUMBER quantiles equal numpy's default (linear) percentiles for every n from 1 to 9."""
    ids = np.asarray(world.image_ids)
    big = db.register_mosaic_set(engine, "b" * 64, world.dataset_id, "test", 3, 9, "random",
                                 ids[np.tile([[2, 8, 3, 9]], (9, 1))], [0] * 9, np.tile([[1, 0, 1, 0]], (9, 1)))
    rng = np.random.default_rng(7)
    expected = {}
    for n in range(1, 10):
        method = db.register_method(engine, "random", {"seed": n})
        evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, method, big.mosaic_set_id)
        focus = np.round(rng.random(n), 6)
        if n in (3, 8):
            focus[1] = focus[0]  # ties
        masks = np.tile([[True, False, True, False]], (n, 1))
        db.write_mosaic_results(engine, evaluation, big.mosaic_ids[:n], build_sums(focus, masks), focus, [0] * n)
        expected[evaluation] = [focus.mean(), *np.percentile(focus, [50, 25, 75]), focus.min(), focus.max()]
    frame = db.evaluation_summary(engine, mosaic_set_id=big.mosaic_set_id).set_index("evaluation_id")
    assert len(frame) == 9
    for evaluation, values in expected.items():
        got = frame.loc[evaluation, ["mean_focus", "median_focus", "q1_focus", "q3_focus", "min_focus", "max_focus"]]
        assert got.tolist() == pytest.approx(values, abs=1e-12)


def test_compare_methods_and_architectures(engine, world, build_sums):
    resnet = db.register_checkpoint(engine, "d" * 64, "resnet18", 2)
    _evaluate(engine, world, build_sums, world.method_ids["gradcam"], [0.9, 0.8, 0.7, 0.6], [0] * 4)
    _evaluate(engine, world, build_sums, world.method_ids["lrp"], [0.95, 0.9, 0.85, 0.8], [0] * 4)
    _evaluate(engine, world, build_sums, world.method_ids["gradcam"], [0.5, 0.6, 0.5, 0.6], [0] * 4,
              checkpoint_id=resnet)
    db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id,
                                randomization="full")
    frame = db.compare_methods(engine, world.mosaic_set_id)
    assert frame[["architecture", "method"]].values.tolist() == [
        ["digits_cnn", "lrp"], ["digits_cnn", "gradcam"], ["resnet18", "gradcam"]]
    assert frame["median_focus"].tolist() == pytest.approx([0.875, 0.75, 0.55])
    assert len(db.compare_methods(engine, world.mosaic_set_id, randomization="full")) == 1


def test_training_curve(engine):
    run = db.register_training_run(engine, "t" * 64, "digits_cnn", {"epochs": 4}, name="toy")
    focus = [0.5, 0.6, 0.8, None]
    accuracy = [0.3, 0.6, 0.7, 0.9]
    for epoch, (f, a) in enumerate(zip(focus, accuracy)):
        db.record_epoch(engine, run, epoch, train_loss=2.0 - epoch / 2, val_accuracy=a, focus_median=f)
    curve = db.training_curve(engine, run)
    assert curve["epoch"].tolist() == [0, 1, 2, 3]
    assert curve["training_run_name"].tolist() == ["toy"] * 4
    assert curve["val_accuracy"].tolist() == pytest.approx(accuracy)
    assert curve["focus_median"].tolist()[:3] == pytest.approx([0.5, 0.6, 0.8])
    assert np.isnan(curve["focus_median"].iloc[3])
    assert curve["train_loss"].tolist() == pytest.approx([2.0, 1.5, 1.0, 0.5])
    # the correlation of these epochs: tests/flows/test_analysis.py (flows.results.analysis + focus_core.stats)
    with engine.connect() as connection:
        epochs = connection.execute(
            text("SELECT epoch, focus_median FROM training_epoch_focus WHERE training_run_id = :r ORDER BY epoch"),
            {"r": run}).all()
    assert [tuple(e) for e in epochs] == [(0, 0.5), (1, 0.6), (2, 0.8), (3, None)]


def test_training_curve_one_row_per_epoch_and_method(engine, world, build_sums):
    """Every method the training run measures, epoch 0 included, from the epoch's evaluations."""
    run = db.register_training_run(engine, "w" * 64, "digits_cnn", {"epochs": 1}, name="toy")
    gradcam = _evaluate(engine, world, build_sums, world.method_ids["gradcam"], [0.5, 0.4, 0.6, np.nan], [0] * 4)
    lrp = _evaluate(engine, world, build_sums, world.method_ids["lrp"], [0.9, 0.8, 0.7, 1.0], [0] * 4)
    db.record_epoch(engine, run, 0, val_accuracy=0.1, focus_median=0.5, evaluation_ids=[gradcam])
    db.record_epoch(engine, run, 0, val_accuracy=0.1, focus_median=0.5, evaluation_ids=[gradcam, lrp])  # replaces
    db.record_epoch(engine, run, 1, val_accuracy=0.9, focus_median=0.7)  # recorded without evaluations
    curve = db.training_curve(engine, run)
    assert len(curve) == 3
    epoch_0 = curve[curve["epoch"] == 0].set_index("method_name")
    assert epoch_0.loc["gradcam", "focus_median"] == pytest.approx(0.5)
    assert epoch_0.loc["gradcam", "focus_n"] == 4 and epoch_0.loc["gradcam", "focus_n_defined"] == 3
    assert epoch_0.loc["lrp", "focus_median"] == pytest.approx(0.85)
    assert epoch_0.loc["lrp", "focus_q1"] == pytest.approx(np.percentile([0.9, 0.8, 0.7, 1.0], 25))
    legacy = curve[curve["epoch"] == 1].iloc[0]
    assert pd.isna(legacy["method_name"]) and legacy["focus_median"] == pytest.approx(0.7)
    assert db.training_curve(engine, run, method="lrp")["evaluation_id"].tolist() == [lrp]
    with pytest.raises(db.StoreError, match="register the training run"):
        db.record_epoch(engine, run, 2, evaluation_ids=[999_999])


def test_training_curve_reads_the_stored_summaries(engine, world, build_sums):
    """Revision 0009: an epoch's Focus is its evaluation's stored summary (the one ``finish_evaluation`` writes),
    read by key; an evaluation linked while still open shows its method and no statistics until it is closed."""
    run = db.register_training_run(engine, "s" * 64, "digits_cnn", {"epochs": 1}, name="toy")
    gradcam = _evaluate(engine, world, build_sums, world.method_ids["gradcam"], [0.5, 0.4, 0.6, np.nan], [0] * 4,
                        finish=False)
    db.record_epoch(engine, run, 0, focus_median=0.3, evaluation_ids=[gradcam])
    row = db.training_curve(engine, run).iloc[0]
    assert row["method_name"] == "gradcam" and row["evaluation_id"] == gradcam
    assert pd.isna(row["focus_median"]) and pd.isna(row["focus_n"])
    assert db.evaluation_summary(engine, [gradcam])["median_focus"].iloc[0] == pytest.approx(0.5)  # live there
    db.finish_evaluation(engine, gradcam)
    row = db.training_curve(engine, run).iloc[0]
    assert row["focus_median"] == pytest.approx(0.5) and row["focus_n"] == 4 and row["focus_n_defined"] == 3
    assert (row["grid"], row["targets"], row["chance_level"]) == (2, 2, 0.5)


def test_audit_history_and_regressions(engine, world, build_sums):
    gradcam = world.method_ids["gradcam"]
    t0 = dt.datetime(2025, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
    audits = [db.start_audit_run(engine, name=f"nightly-{i}", threshold=0.1, started_at=t0 + dt.timedelta(days=i))
              for i in range(3)]
    db.set_checkpoint_audit(engine, world.checkpoint_id, True)
    values = [[0.8, 0.8, 0.9, 0.7], [0.8, 0.9, 0.8, 0.7], [0.5, np.nan, 0.4, 0.5]]
    evaluations = [_evaluate(engine, world, build_sums, gradcam, v, [0] * 4, audit_run_id=a)
                   for v, a in zip(values, audits)]
    for audit in audits:
        db.finish_audit_run(engine, audit)
    # neither an unfinished audit evaluation nor a plain evaluation enters the history
    _evaluate(engine, world, build_sums, world.method_ids["lrp"], [0.1] * 4, [0] * 4, audit_run_id=audits[2],
              finish=False)
    _evaluate(engine, world, build_sums, gradcam, [0.2] * 4, [0] * 4)

    history = db.checkpoint_history(engine, world.checkpoint_id)
    assert history["audit_run_id"].tolist() == audits
    assert history["evaluation_id"].tolist() == evaluations
    assert history["median_focus"].tolist() == pytest.approx([0.8, 0.8, 0.5])
    assert np.isnan(history["previous_median_focus"].iloc[0])
    assert history["median_change"].iloc[1:].tolist() == pytest.approx([0.0, -0.3])
    assert history["audit_started_at"].tolist() == [t0 + dt.timedelta(days=i) for i in range(3)]

    regressions = db.focus_regressions(engine, threshold=0.1)
    assert len(regressions) == 1
    row = regressions.iloc[0]
    assert (row["audit_run_id"], row["previous_audit_run_id"], row["method_name"]) == (audits[2], audits[1], "gradcam")
    assert (row["evaluation_id"], row["previous_evaluation_id"]) == (evaluations[2], evaluations[1])
    assert row["median_change"] == pytest.approx(-0.3)
    # db returns the rows; the paired test is flows.results.analysis.focus_regressions (tests/flows/test_analysis.py)
    assert not {"n_paired", "statistic", "p_value"} & set(regressions.columns)
    pairs = db.paired_focus(engine, evaluations[2], evaluations[1])  # mosaic 1 is undefined in the last audit
    assert pairs["mosaic_id"].tolist() == [world.mosaic_ids[i] for i in (0, 2, 3)]
    assert pairs["focus_a"].tolist() == pytest.approx([0.5, 0.4, 0.5])
    assert pairs["focus_b"].tolist() == pytest.approx([0.8, 0.8, 0.7])
    assert db.focus_regressions(engine, threshold=0.5).empty
    assert db.focus_regressions(engine, threshold=0.1, audit_run_id=audits[1]).empty
    assert db.checkpoints_to_audit(engine)["checkpoint_id"].tolist() == [world.checkpoint_id]
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT audit_name, median_change FROM audit_history WHERE checkpoint_id = :c "
                 "AND median_change < :drop ORDER BY audit_started_at"),
            {"c": world.checkpoint_id, "drop": -0.1}).all()
    assert [(r[0], round(r[1], 9)) for r in rows] == [("nightly-2", -0.3)]


def test_db_imports_no_statistics_library():
    """Statistics live in focus_core.stats; db stores and returns values and imports no scipy."""
    code = "import sys, db; print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'focus_core')))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
    assert not {"paired_test", "focus_accuracy_correlation"} & set(db.__all__)
