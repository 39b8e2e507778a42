"""The reads behind the report, the sample figure and the checkpoint check, on both databases.

Each read is run with one id per ``IN (...)`` list as well as the default chunk, so the chunk
seam (how a large selection stays within the parameter limits) cannot drop, repeat or reorder rows.
"""

from __future__ import annotations

import numpy as np
import pytest

import db
from db import report_reads
from tests.db.conftest import MOSAIC_INDEX, MOSAIC_MASKS, MOSAIC_TARGETS, RELPATHS


def _evaluation(engine, world, build_sums, method: str, focus, predicted, *, finish=True) -> int:
    focus = np.asarray(focus, dtype=float)
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids[method],
                                             world.mosaic_set_id, metadata={"request": {"note": method}})
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids[: len(focus)],
                            build_sums(focus, world.masks[: len(focus)]), focus, predicted)
    if finish:
        db.finish_evaluation(engine, evaluation)
    return evaluation


def test_evaluation_records_by_id_in_chunks(engine, world, build_sums):
    grad = _evaluation(engine, world, build_sums, "gradcam", [0.9, np.nan, 0.25, 0.5], [0, 0, 1, 1])
    lrp = _evaluation(engine, world, build_sums, "lrp", [0.6, 0.7], [0, 1], finish=False)
    every = report_reads.evaluation_records(engine)
    assert [r["evaluation_id"] for r in every] == [grad, lrp]
    first = every[0]
    assert (first["status"], first["method"], first["method_params"]) == ("finished", "gradcam", {"layer": None})
    assert (first["checkpoint_id"], first["architecture"], first["checkpoint_label"]) == (world.checkpoint_id,
                                                                                        "digits_cnn", "prod")
    assert (first["mosaic_set_id"], first["split"], first["dataset_name"]) == (world.mosaic_set_id, "test", "toy")
    assert first["metadata"] == {"request": {"note": "gradcam"}}
    assert first["finished_at"] is not None and first["finished_at"].utcoffset().total_seconds() == 0
    assert every[1]["status"] != "finished" and every[1]["finished_at"] is None
    # unsorted, repeated and unknown ids: each known one once, in id order, at every chunk size
    for chunk in (1, 2, report_reads.ID_CHUNK):
        rows = report_reads.evaluation_records(engine, [lrp, grad, lrp, 10_000], chunk=chunk)
        assert rows == every
    assert report_reads.evaluation_records(engine, []) == []


def test_mosaic_scores_in_chunks(engine, world, build_sums):
    grad = _evaluation(engine, world, build_sums, "gradcam", [0.9, np.nan, 0.25, 0.5], [0, 0, 1, 1])
    lrp = _evaluation(engine, world, build_sums, "lrp", [0.6, 0.7], [0, 1])
    frame = report_reads.mosaic_scores(engine, [lrp, grad])
    assert tuple(frame.columns) == report_reads.SCORE_COLUMNS
    assert frame["evaluation_id"].tolist() == [grad] * 4 + [lrp] * 2
    assert frame["mosaic_id"].tolist() == world.mosaic_ids + world.mosaic_ids[:2]
    assert frame["position"].tolist() == [0, 1, 2, 3, 0, 1]
    assert frame["target_class"].tolist() == MOSAIC_TARGETS.tolist() + MOSAIC_TARGETS[:2].tolist()
    assert frame["predicted_class"].tolist() == [0, 0, 1, 1, 0, 1]
    focus = frame["focus"].astype(float).to_numpy()
    assert np.isnan(focus[1]) and focus[[0, 2, 3, 4, 5]] == pytest.approx([0.9, 0.25, 0.5, 0.6, 0.7])
    chunked = report_reads.mosaic_scores(engine, [grad, lrp, grad], chunk=1)
    assert chunked.astype(str).values.tolist() == frame.astype(str).values.tolist()
    empty = report_reads.mosaic_scores(engine, [])
    assert len(empty) == 0 and tuple(empty.columns) == report_reads.SCORE_COLUMNS
    with pytest.raises(db.StoreError, match="positive chunk size"):
        report_reads.mosaic_scores(engine, [grad], chunk=0)


def test_training_runs_with_their_epochs(engine):
    runs = [db.register_training_run(engine, c * 64, "digits_cnn", {"epochs": 2}, name=f"run-{c}") for c in "abc"]
    for run in runs[:2]:
        for epoch in (1, 0):  # recorded out of order, read back in epoch order
            db.record_epoch(engine, run, epoch, train_loss=1.0 + epoch, val_accuracy=0.5)
    every = report_reads.training_runs(engine)
    assert list(every) == runs
    assert every[runs[0]]["run"]["name"] == "run-a" and every[runs[0]]["run"]["config"] == {"epochs": 2}
    assert [e["epoch"] for e in every[runs[1]]["epochs"]] == [0, 1]
    assert [e["train_loss"] for e in every[runs[1]]["epochs"]] == pytest.approx([1.0, 2.0])
    assert every[runs[2]]["epochs"] == []  # a run with no recorded epoch is there, with none
    for chunk in (1, report_reads.ID_CHUNK):
        assert report_reads.training_runs(engine, [runs[1], runs[0], 10_000], chunk=chunk) == {
            runs[0]: every[runs[0]], runs[1]: every[runs[1]]}
    assert report_reads.training_runs(engine, []) == {}


def test_mosaic_tiles(engine, world):
    for i, mosaic_id in enumerate(world.mosaic_ids):
        tiles = db.mosaic_tiles(engine, mosaic_id)
        assert tiles.mosaic_id == mosaic_id and tiles.target_class == MOSAIC_TARGETS[i]
        assert [bool(tiles.target_mask >> q & 1) for q in range(4)] == MOSAIC_MASKS[i].tolist()
        assert tiles.relpaths == [RELPATHS[j] for j in MOSAIC_INDEX[i]]  # TL, TR, BL, BR
    with pytest.raises(db.StoreError, match="No mosaic with id 10000"):
        db.mosaic_tiles(engine, 10_000)


def test_recorded_checkpoint(engine, world):
    # no result, training run or lineage holds either record to its architecture yet: both are unproven
    assert db.recorded_checkpoint(engine, "c" * 64) == (world.checkpoint_id, "digits_cnn", 2, None, False)
    other = db.register_checkpoint(engine, "d" * 64, "resnet18", 5, in_channels=3)
    assert db.recorded_checkpoint(engine, "d" * 64) == db.RecordedCheckpoint(other, "resnet18", 5, 3, False)
    assert db.recorded_checkpoint(engine, "e" * 64) is None


def test_reliance_reads_and_audit_runs_in_chunks(engine, world, build_sums):
    """Model Focus per mosaic through each evaluation's own pass, its summaries with the pass's baseline, and the
    audit runs' stored regressions; an evaluation without a summary has no rows."""
    grad = _evaluation(engine, world, build_sums, "gradcam", [0.9, np.nan, 0.25, 0.5], [0, 0, 1, 1])
    lrp = _evaluation(engine, world, build_sums, "lrp", [0.6, 0.7], [0, 1])
    pass_id = db.get_or_create_reliance_pass(engine, world.checkpoint_id, world.mosaic_set_id, baseline="blur")
    drops = np.tile([1.0, 0.5, 0.25, -0.5], (4, 1))
    model_focus = np.array([0.8, np.nan, 0.6, 0.4])
    db.write_reliance(engine, pass_id, world.mosaic_ids, np.ones(4), drops, model_focus)
    summary = {c: 0.1 * i for i, c in enumerate(db.reliance.RELIANCE_SUMMARY_COLUMNS)}
    db.store_evaluation_reliance(engine, grad, pass_id, {**summary, "n_model_defined": 3, "n_gap_defined": 2})
    for chunk in (1, report_reads.ID_CHUNK):
        pairs = report_reads.mosaic_model_focus(engine, [lrp, grad, grad], chunk=chunk)
        assert tuple(pairs.columns) == report_reads.MODEL_FOCUS_COLUMNS
        assert pairs["evaluation_id"].tolist() == [grad] * 4 and pairs["mosaic_id"].tolist() == world.mosaic_ids
        np.testing.assert_array_equal(pairs["focus"], [0.9, np.nan, 0.25, 0.5])
        np.testing.assert_array_equal(pairs["model_focus"], model_focus)
        stored = report_reads.reliance_summaries(engine, [lrp, grad], chunk=chunk)
        assert stored["evaluation_id"].tolist() == [grad] and stored["baseline"].tolist() == ["blur"]
        assert stored["pass_id"].tolist() == [pass_id] and stored["n_model_defined"].tolist() == [3]
        assert stored["median_model_focus"].tolist() == [summary["median_model_focus"]]
    assert len(report_reads.mosaic_model_focus(engine, [])) == len(report_reads.reliance_summaries(engine, [])) == 0

    regressions = [{"method": "gradcam", "median_change": -0.2, "model_focus_change": -0.01, "cause": "explainer"}]
    first, second = (db.start_audit_run(engine, name=f"nightly-{i}", threshold=0.05) for i in (1, 2))
    db.finish_audit_run(engine, second, metadata={"regressions": regressions})
    for chunk in (1, report_reads.ID_CHUNK):
        runs = report_reads.audit_runs(engine, [second, first, 10_000], chunk=chunk)
        assert [r["audit_run_id"] for r in runs] == [first, second]
        assert runs[0]["status"] == "running" and runs[1]["metadata"] == {"regressions": regressions}
