"""Idempotent registrations and atomic, upserting result chunks on both databases."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import select, text

import db
from db.models import Evaluation


def _count(engine, sql, **params):
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def _rows(engine, evaluation_id):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT mosaic_id, pos_tl, neg_br, focus, predicted_class FROM mosaic_result "
                 "WHERE evaluation_id = :e ORDER BY mosaic_id"),
            {"e": evaluation_id},
        ).all()


def test_registration_is_idempotent(engine, build_world):
    first = build_world(engine)
    second = build_world(engine)
    assert first == second
    assert _count(engine, "SELECT COUNT(*) FROM image") == 12
    assert _count(engine, "SELECT COUNT(*) FROM mosaic") == 4
    assert _count(engine, "SELECT COUNT(*) FROM xai_method") == 2
    # method params in another key order are the same method
    assert db.register_method(engine, "lrp", {"canonizer": "auto", "epsilon": 1e-6}) == first.method_ids["lrp"]
    assert db.register_method(engine, "lrp", {"canonizer": "auto", "epsilon": 1e-3}) != first.method_ids["lrp"]
    assert db.params_hash("lrp", {"a": 1, "b": 2}) == db.params_hash("lrp", {"b": 2, "a": 1})


def test_a_method_hash_given_by_the_caller_is_checked_then_stored(engine):
    params = {"seed": 3}
    right = db.params_hash("random", params)
    with pytest.raises(db.StoreError, match=r"is not that of its parameters .*: this is a bug"):
        db.register_method(engine, "random", params, params_hash="0" * 64)
    assert _count(engine, "SELECT COUNT(*) FROM xai_method") == 0
    method_id = db.register_method(engine, "random", params, params_hash=right)
    assert db.register_method(engine, "random", params) == method_id
    assert _count(engine, "SELECT COUNT(*) FROM xai_method WHERE params_hash = :h", h=right) == 1


def test_dataset_ids_follow_the_given_order(engine, build_world):
    world = build_world(engine)
    with engine.connect() as connection:
        stored = connection.execute(
            text("SELECT relpath, label, split FROM image WHERE dataset_id = :d ORDER BY id"), {"d": world.dataset_id}
        ).all()
    RELPATHS, LABELS, SPLITS = (list(column) for column in zip(*stored))  # noqa: N806
    order = np.random.default_rng(0).permutation(len(RELPATHS))
    again = db.register_dataset(engine, "toy", "f" * 64, ["zero", "one"], [RELPATHS[i] for i in order],
                                [LABELS[i] for i in order], [SPLITS[i] for i in order])
    assert again.dataset_id == world.dataset_id
    assert again.image_ids == [world.image_ids[i] for i in order]
    with engine.connect() as connection:
        positions = connection.execute(
            text("SELECT relpath, position, label, split FROM image WHERE dataset_id = :d ORDER BY position"),
            {"d": world.dataset_id},
        ).all()
    assert [tuple(r) for r in positions] == list(zip(RELPATHS, range(12), LABELS, SPLITS))


def test_mosaics_are_stored_in_manifest_order(engine, world):
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT id, position, image_tl, image_tr, image_bl, image_br, target_class, target_mask "
                 "FROM mosaic WHERE mosaic_set_id = :s ORDER BY position"),
            {"s": world.mosaic_set_id},
        ).all()
    ids = np.asarray(world.image_ids)
    assert [r[0] for r in rows] == world.mosaic_ids
    assert np.array_equal(np.array([r[2:6] for r in rows]), ids[world.image_index])
    assert [r[6] for r in rows] == world.targets.tolist()
    assert [r[7] for r in rows] == [5, 10, 3, 5]  # TL=1, TR=2, BL=4, BR=8


def test_mosaic_set_refuses_training_images_and_writes_nothing(engine, world):
    ids = np.asarray(world.image_ids)
    bad = ids[[[0, 8, 3, 9]]]  # index 0 is a training image
    with pytest.raises(db.StoreError, match="not 'test' images"):
        db.register_mosaic_set(engine, "x" * 64, world.dataset_id, "test", 1, 1, "random", bad, [0], [[1, 0, 1, 0]])
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_set") == 1
    assert _count(engine, "SELECT COUNT(*) FROM mosaic") == 4
    with pytest.raises(db.StoreError, match="exactly 2 target tile"):
        db.register_mosaic_set(engine, "y" * 64, world.dataset_id, "test", 1, 1, "random", ids[[[2, 8, 3, 9]]],
                               [0], [[1, 1, 1, 0]])


def test_a_probe_set_keeps_its_probe_and_a_set_registered_without_it_gets_it(engine, world):
    patch = {"kind": "corner_patch", "size": 3, "seed": 0, "corner": "random"}
    ids = np.asarray(world.image_ids)[[[2, 3, 8, 9]]]
    probe_set = db.register_mosaic_set(engine, "p" * 64, world.dataset_id, "test", 9, 1, "top", ids, [0],
                                       [[1, 1, 0, 0]], probe=patch)
    tiles = db.mosaic_tiles(engine, probe_set.mosaic_ids[0])
    assert (tiles.probe, tiles.position, tiles.num_mosaics) == (patch, 0, 1)
    assert db.mosaic_tiles(engine, world.mosaic_ids[3])[5:] == (None, 3, 4)  # a clean set
    again = db.register_mosaic_set(engine, "m" * 64, world.dataset_id, "test", 0, 2, "random",
                                   np.asarray(world.image_ids)[world.image_index], world.targets, world.masks,
                                   probe=patch)  # the world's manifest, registered before sets recorded a probe
    assert again.mosaic_set_id == world.mosaic_set_id
    assert db.mosaic_tiles(engine, world.mosaic_ids[0]).probe == patch


def test_evaluation_natural_key(engine, world):
    args = (world.checkpoint_id, world.method_ids["gradcam"], world.mosaic_set_id)
    plain = db.get_or_create_evaluation(engine, *args)
    assert db.get_or_create_evaluation(engine, *args) == plain
    stage0 = db.get_or_create_evaluation(engine, *args, randomization="cascading", stage=0, layer="fc")
    stage1 = db.get_or_create_evaluation(engine, *args, randomization="cascading", stage=1, layer="conv2")
    audit = db.start_audit_run(engine, name="nightly")
    audited = db.get_or_create_evaluation(engine, *args, audit_run_id=audit)
    assert len({plain, stage0, stage1, audited}) == 4
    assert db.get_or_create_evaluation(engine, *args, randomization="cascading", stage=1, layer="conv2") == stage1
    with pytest.raises(db.StoreError, match="randomization"):
        db.get_or_create_evaluation(engine, *args, randomization="shuffled")
    with pytest.raises(db.StoreError, match="register its checkpoint"):
        db.get_or_create_evaluation(engine, 999, world.method_ids["gradcam"], world.mosaic_set_id)


def test_chunk_upsert_twice_leaves_one_row_per_mosaic(engine, world, build_sums):
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id)
    focus = np.array([0.9, np.nan, 0.25, 0.5])
    sums = build_sums(focus, world.masks)
    assert db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [0, 1, 0, 1]) == 4
    assert db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [0, 1, 0, 1]) == 4
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_result") == 4
    # a retry with new values replaces them
    focus2 = np.array([0.8, 0.4, np.nan, 0.5])
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:3], build_sums(focus2[:3], world.masks[:3]),
                            focus2[:3], np.array([1, 1, 1]))
    rows = _rows(engine, evaluation)
    assert len(rows) == 4
    assert [r[3] for r in rows] == [0.8, 0.4, None, 0.5]  # NaN stored as NULL
    assert [r[4] for r in rows] == [1, 1, 1, 1]
    assert [r[2] for r in rows] == [-0.25] * 4
    assert rows[0][1] == pytest.approx(0.4)  # TL is a target quadrant of mosaic 0: 0.8 / 2
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_result WHERE focus IS NULL") == 1
    assert db.finished_mosaic_ids(engine, evaluation) == set(world.mosaic_ids)


def test_a_chunk_failing_half_way_writes_nothing(engine, world, build_sums):
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"],
                                             world.mosaic_set_id)
    focus = np.array([0.6, 0.7])
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:2], build_sums(focus, world.masks[:2]), focus,
                            [0, 0])
    before = _rows(engine, evaluation)
    # a retry of the same chunk plus a mosaic that does not exist: the upsert of the good rows
    # runs in the same statement and must be rolled back with it
    bad_ids = world.mosaic_ids + [max(world.mosaic_ids) + 1000]
    new_focus = np.array([0.1, 0.1, 0.1, 0.1, 0.1])
    masks = np.vstack([world.masks, world.masks[:1]])
    with pytest.raises(db.StoreError, match="nothing of this chunk was written"):
        db.write_mosaic_results(engine, evaluation, bad_ids, build_sums(new_focus, masks), new_focus, [1] * 5)
    assert _rows(engine, evaluation) == before
    # a mosaic of another set is refused as well
    other = db.register_mosaic_set(engine, "o" * 64, world.dataset_id, "test", 9, 1, "top",
                                   np.asarray(world.image_ids)[[[2, 3, 8, 9]]], [0], [[1, 1, 0, 0]])
    ids = world.mosaic_ids[2:] + other.mosaic_ids
    with pytest.raises(db.StoreError, match="1 of 3 mosaic ids are not in the mosaic set"):
        db.write_mosaic_results(engine, evaluation, ids, build_sums(new_focus[:3], masks[:3]), new_focus[:3],
                                [1] * 3)
    assert _rows(engine, evaluation) == before
    # NaN relevance (a NOT NULL column) is refused before anything is sent
    sums = build_sums(new_focus[:2], masks[:2])
    sums[1, 2, 0] = np.nan
    with pytest.raises(db.StoreError, match="NaN or infinite"):
        db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:2], sums, new_focus[:2], [1, 1])
    assert _rows(engine, evaluation) == before
    with pytest.raises(db.StoreError, match="once per chunk"):
        db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:1] * 2, build_sums(new_focus[:2], masks[:2]),
                                new_focus[:2], [1, 1])
    with pytest.raises(db.StoreError, match="No evaluation"):
        db.write_mosaic_results(engine, 12345, world.mosaic_ids[:2], build_sums(new_focus[:2], masks[:2]),
                                new_focus[:2], [1, 1])
    assert _rows(engine, evaluation) == before


def test_failure_inside_a_caller_transaction_rolls_back_only_the_chunk(engine, world, build_sums):
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"],
                                             world.mosaic_set_id)
    focus = np.array([0.6, 0.7])
    with engine.connect() as connection:
        with connection.begin():
            db.write_mosaic_results(connection, evaluation, world.mosaic_ids[:2],
                                    build_sums(focus, world.masks[:2]), focus, [0, 0])
            with pytest.raises(db.StoreError):
                db.write_mosaic_results(connection, evaluation, [world.mosaic_ids[2], 10**6],
                                        build_sums(focus, world.masks[:2]), focus, [0, 0])
    assert db.finished_mosaic_ids(engine, evaluation) == set(world.mosaic_ids[:2])


def test_evaluation_lifecycle_and_training_epochs(engine, world, build_sums):
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id, code_version="abc123", device="cpu",
                                             metadata={"batch_size": 2})
    db.start_evaluation(engine, evaluation)
    focus = np.array([0.9, np.nan, 0.25, 0.5])
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus, [0] * 4)
    summary = db.finish_evaluation(engine, evaluation, seconds=1.5)
    assert summary == {"n": 4, "n_defined": 3, "median": pytest.approx(0.5), "mean": pytest.approx(1.65 / 3)}
    with engine.connect() as connection:
        row = connection.execute(
            select(Evaluation.status, Evaluation.n, Evaluation.n_defined, Evaluation.focus_median,
                   Evaluation.seconds, Evaluation.metadata_, Evaluation.started_at, Evaluation.finished_at)
            .where(Evaluation.id == evaluation)).one()
    assert row[:5] == ("finished", 4, 3, pytest.approx(0.5), 1.5)
    assert row[5] == {"batch_size": 2}
    assert row[6].tzinfo is not None and row[6] <= row[7]

    run = db.register_training_run(engine, "r" * 64, "digits_cnn", {"epochs": 2, "lr": 0.001}, name="toy")
    assert db.register_training_run(engine, "r" * 64, "digits_cnn", {"epochs": 2, "lr": 0.001}) == run
    db.record_epoch(engine, run, 0, train_loss=2.0, val_accuracy=0.5, focus_median=0.6)
    db.record_epoch(engine, run, 0, train_loss=1.5, val_accuracy=0.55, focus_median=float("nan"))
    db.record_epoch(engine, run, 1, train_loss=1.0, val_accuracy=0.8, focus_median=0.7)
    db.finish_training_run(engine, run)
    with engine.connect() as connection:
        epochs = connection.execute(
            text("SELECT epoch, train_loss, val_accuracy, focus_median FROM training_epoch "
                 "WHERE training_run_id = :r ORDER BY epoch"), {"r": run}).all()
    assert [tuple(e) for e in epochs] == [(0, 1.5, 0.55, None), (1, 1.0, 0.8, 0.7)]


def test_two_training_runs_with_the_same_weights_are_both_origins(engine):
    """A checkpoint two runs made records both runs' names."""
    first = db.register_training_run(engine, "a" * 64, "digits_cnn", {"seed": 0}, name="demo-digits")
    second = db.register_training_run(engine, "b" * 64, "digits_cnn", {"seed": 0}, name="digits")
    sha = "ab" * 32
    checkpoint = db.register_checkpoint(engine, sha, "digits_cnn", 10, training_run_id=first, epoch=8,
                                        label="demo-digits epoch 8")
    for _ in range(2):  # a retried task registers again: no second row
        assert db.register_checkpoint(engine, sha, "digits_cnn", 10, training_run_id=second, epoch=8,
                                      label="digits epoch 8") == checkpoint
    assert db.register_checkpoint(engine, sha, "digits_cnn", 10) == checkpoint  # no run: no origin
    origins = db.checkpoint_origins(engine, [checkpoint])
    assert [(r["training_run_id"], r["training_run_name"], r["epoch"]) for r in origins.to_dict("records")] == [
        (first, "demo-digits", 8), (second, "digits", 8)]
    assert db.checkpoint_origin(engine, checkpoint)["training_run_id"] == first  # the record keeps the first run
    assert db.checkpoint_origins(engine, []).empty
