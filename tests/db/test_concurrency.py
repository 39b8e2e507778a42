"""Two writers of two different evaluations on PostgreSQL do not block each other."""

from __future__ import annotations

import threading

import numpy as np

import db


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
        done = threading.Event()

        def second_writer() -> None:
            try:
                outcome["written"] = db.write_mosaic_results(engine, evaluations[1], world.mosaic_ids, sums, focus,
                                                             [0] * 4)
                outcome["sees_first"] = len(db.finished_mosaic_ids(engine, evaluations[0]))
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc
            finally:
                done.set()

        with engine.connect() as first:
            transaction = first.begin()
            db.write_mosaic_results(first, evaluations[0], world.mosaic_ids[:2], sums[:2], focus[:2], [0, 0])
            thread = threading.Thread(target=second_writer)
            thread.start()
            # the second writer's whole transaction runs while the first one is still open
            finished_while_first_open = done.wait(timeout=30)
            db.write_mosaic_results(first, evaluations[0], world.mosaic_ids[2:], sums[2:], focus[2:], [0, 0])
            transaction.commit()
        thread.join(timeout=60)
        assert finished_while_first_open, "the second writer waited for the first writer's transaction"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["written"] == 4
        assert outcome["sees_first"] == 0  # the first writer's rows were not committed yet
        assert db.finished_mosaic_ids(engine, evaluations[0]) == set(world.mosaic_ids)
        assert db.finished_mosaic_ids(engine, evaluations[1]) == set(world.mosaic_ids)
    finally:
        engine.dispose()
