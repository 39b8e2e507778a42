"""The two paths of ``write_mosaic_results``: a plain first write, and the upsert for retries."""

from __future__ import annotations

import re

import numpy as np
import pytest
from sqlalchemy import text

import db
from db import results


def _stored(engine, evaluation_id):
    with engine.connect() as connection:
        return connection.execute(
            text("SELECT mosaic_id, pos_tl, neg_tr, focus, predicted_class FROM mosaic_result "
                 "WHERE evaluation_id = :e ORDER BY mosaic_id"), {"e": evaluation_id}).all()


def _expected(ids, sums, focus, predicted):
    return [(i, sums[k, 0, 0], sums[k, 1, 1], None if np.isnan(focus[k]) else focus[k], predicted[k])
            for k, i in enumerate(ids)]


@pytest.fixture
def evaluation(engine, world):
    return db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"], world.mosaic_set_id)


def test_a_first_write_takes_the_plain_insert_and_a_retry_the_upsert(engine, world, evaluation, build_sums,
                                                                     write_paths):
    focus = np.array([0.9, np.nan, 0.25, 0.5])
    sums = build_sums(focus, world.masks)
    assert db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:2], sums[:2], focus[:2], [1, 2]) == 2
    assert write_paths == ["insert"]
    # the second chunk overlaps the first: the upsert path replaces the two rows and adds two
    assert db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [3, 4, 5, 6]) == 4
    assert write_paths == ["insert", "upsert"]
    assert _stored(engine, evaluation) == _expected(world.mosaic_ids, sums, focus, [3, 4, 5, 6])


def test_sparse_or_mixed_ids_take_the_upsert_path_and_are_checked(engine, world, build_sums, write_paths):
    far = db.register_mosaic_set(engine, "s" * 64, world.dataset_id, "test", 5, 1, "top",
                                 np.asarray(world.image_ids)[[[2, 3, 8, 9]] * 20], [0] * 20, [[1, 1, 0, 0]] * 20)
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], far.mosaic_set_id)
    ids = [far.mosaic_ids[0], far.mosaic_ids[-1]]  # a range 10 times the chunk: not checked by range
    focus = np.array([0.5, np.nan])
    sums = build_sums(focus, np.array([[1, 1, 0, 0]] * 2, dtype=bool))
    assert db.write_mosaic_results(engine, evaluation, ids, sums, focus, [0, 1]) == 2
    assert _stored(engine, evaluation) == _expected(ids, sums, focus, [0, 1])
    assert "insert" not in write_paths
    # a dense range that holds a mosaic of another set: the upsert path finds and refuses it
    with pytest.raises(db.StoreError, match="1 of 2 mosaic ids are not in the mosaic set"):
        db.write_mosaic_results(engine, evaluation, [world.mosaic_ids[-1], far.mosaic_ids[0]], sums, focus, [0, 1])
    with pytest.raises(db.StoreError, match="1 of 2 mosaic ids are not in the mosaic set"):
        db.write_mosaic_results(engine, evaluation, [far.mosaic_ids[5], world.mosaic_ids[0]], sums, focus, [0, 1])
    assert "insert" not in write_paths
    assert len(_stored(engine, evaluation)) == 2


def test_a_lost_race_falls_back_to_the_upsert(engine, world, evaluation, build_sums, monkeypatch, write_paths):
    """A plain insert that meets another writer's rows (here: a plan that missed them) retries as an upsert."""
    focus = np.array([0.9, 0.8, 0.7, 0.6])
    sums = build_sums(focus, world.masks)
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [0] * 4)
    plan = results._plan
    monkeypatch.setattr(results, "_plan", lambda *args: plan(*args)._replace(fresh=True))  # though it is not
    focus2 = np.array([0.1, np.nan, 0.3, 0.4])
    sums2 = build_sums(focus2, world.masks)
    with engine.connect() as connection, connection.begin():  # also inside a caller's transaction
        assert db.write_mosaic_results(connection, evaluation, world.mosaic_ids, sums2, focus2, [1] * 4) == 4
    assert write_paths == ["insert", "insert", "upsert"]
    assert _stored(engine, evaluation) == _expected(world.mosaic_ids, sums2, focus2, [1] * 4)


def test_a_missing_evaluation_writes_nothing(engine, world, build_sums):
    focus = np.array([0.5])
    with pytest.raises(db.StoreError, match="No evaluation with id 999"):
        db.write_mosaic_results(engine, 999, world.mosaic_ids[:1], build_sums(focus, world.masks[:1]), focus, [0])
    with engine.connect() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM mosaic_result")).scalar_one() == 0


OUT_OF_DOMAIN = {  # (focus, predicted, change to the sums) -> what the message names
    "focus above 1": ([7.0, 0.5], [0, 1], None, "Focus scores in [0, 1]"),
    "focus below 0": ([-0.2, 0.5], [0, 1], None, "Focus scores in [0, 1]"),
    "negative class": ([0.5, 0.5], [0, -1], None, "predicted classes >= 0"),
    "fractional class": ([0.5, 0.5], [0.0, 1.5], None, "integer predicted classes"),
    "negative positive sum": ([0.5, 0.5], [0, 1], (1, 2, 0, -0.01), "positive relevance sums"),
    "positive negative sum": ([0.5, 0.5], [0, 1], (0, 3, 1, 0.01), "negative relevance sums"),
}


@pytest.mark.parametrize(("focus", "predicted", "change", "message"), OUT_OF_DOMAIN.values(), ids=OUT_OF_DOMAIN.keys())
def test_values_outside_their_domain_are_refused(engine, world, evaluation, build_sums, focus, predicted, change,
                                                 message):
    """A Focus outside [0, 1] or a negative class is refused, as the message says."""
    focus = np.array(focus)
    sums = build_sums(np.array([0.5, 0.5]), world.masks[:2])
    if change is not None:
        *where, value = change
        sums[tuple(where)] = value
    with pytest.raises(db.StoreError, match=re.escape(message)) as info:
        db.write_mosaic_results(engine, evaluation, world.mosaic_ids[:2], sums, focus, predicted)
    assert "\n" not in str(info.value)
    assert _stored(engine, evaluation) == []


def test_rounding_just_outside_the_domain_is_clipped(engine, world, evaluation, build_sums):
    focus = np.array([1 + 1e-9, -1e-9, np.nan, 0.5])
    sums = build_sums(np.array([1.0, 0.0, np.nan, 0.5]), world.masks)
    sums[1, 0, 0], sums[3, 1, 1] = -1e-9, 1e-9
    given = sums.copy()
    assert db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [0, 1, 2, 3]) == 4
    stored = _stored(engine, evaluation)
    assert [row[3] for row in stored] == [1.0, 0.0, None, 0.5]
    assert stored[1][1] == 0.0 and stored[3][2] == 0.0  # pos_tl of mosaic 1, neg_tr of mosaic 3
    assert np.array_equal(sums, given)  # the caller's arrays are not changed
