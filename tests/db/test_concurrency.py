"""Two writers of two different evaluations on PostgreSQL do not block each other."""

from __future__ import annotations

import threading

import numpy as np
import db
from tests import waits


def test_overlapping_writers_both_commit(pg_url, build_world, build_sums):
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        world = build_world(engine)
        evaluations = [
            db.get_or_create_evaluation(engine, world.checkpoint_id, method, world.mosaic_set_id)
            for method in world.method_ids.values()
        ]
        focus = np.array([0.9, 0.8, 0.7, 0.6])
        sums = build_sums(focus, world.masks)
        outcome: dict[str, object] = {}

        def second_writer() -> None:
            try:
                outcome["written"] = db.write_mosaic_results(engine, evaluations[1], world.mosaic_ids, sums, focus,
                                                             [0] * 4)
                outcome["sees_first"] = len(db.finished_mosaic_ids(engine, evaluations[0]))
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        with engine.connect() as first:
            transaction = first.begin()
            db.write_mosaic_results(first, evaluations[0], world.mosaic_ids[:2], sums[:2], focus[:2], [0, 0])
            thread = threading.Thread(target=second_writer)
            thread.start()
            # the second writer's whole transaction runs while the first one is still open: it ends without
            # waiting on a lock (were it blocked by the first writer, a session would wait on a lock until the commit)
            finished_while_first_open = not waits.lock_wait_before_end(engine, thread)
            db.write_mosaic_results(first, evaluations[0], world.mosaic_ids[2:], sums[2:], focus[2:], [0, 0])
            transaction.commit()
        waits.joined(thread)
        assert finished_while_first_open, "the second writer waited for the first writer's transaction"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["written"] == 4
        assert outcome["sees_first"] == 0  # the first writer's rows were not committed yet
        assert db.finished_mosaic_ids(engine, evaluations[0]) == set(world.mosaic_ids)
        assert db.finished_mosaic_ids(engine, evaluations[1]) == set(world.mosaic_ids)
    finally:
        engine.dispose()


def test_two_first_writes_of_one_chunk_leave_one_row_per_mosaic(pg_url, build_world, build_sums, write_paths):
    """The second writer's plain COPY waits for the first, meets its rows and falls back to the upsert."""
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        world = build_world(engine)
        evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"],
                                                 world.mosaic_set_id)
        first, second = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.1, np.nan, 0.3, 0.4])
        outcome: dict[str, object] = {}

        def second_writer() -> None:
            try:
                outcome["written"] = db.write_mosaic_results(engine, evaluation, world.mosaic_ids,
                                                             build_sums(second, world.masks), second, [1] * 4)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        with engine.connect() as connection:
            transaction = connection.begin()
            db.write_mosaic_results(connection, evaluation, world.mosaic_ids, build_sums(first, world.masks), first,
                                    [0] * 4)
            thread = threading.Thread(target=second_writer)
            thread.start()
            assert waits.lock_wait_before_end(engine, thread), "the second writer never waited on the first one's rows"
            transaction.commit()
        waits.joined(thread)
        assert "error" not in outcome, outcome.get("error")
        assert outcome["written"] == 4
        assert write_paths == ["insert", "insert", "upsert"]  # first writer; second writer's COPY, then its upsert
        stored = db.evaluation_results(engine, evaluation).sort_values("position")
        assert stored["predicted_class"].tolist() == [1] * 4  # the later writer's values, once per mosaic
        assert stored["focus"].isna().tolist() == [False, True, False, False]
    finally:
        engine.dispose()
