"""Closing one evaluation from several runs at once: every close succeeds and the stored state is right.

On both backends (``empty_url``): PostgreSQL runs the closes truly in parallel, SQLite one writer at a time.
"""

from __future__ import annotations

import threading

import numpy as np
from sqlalchemy import text

import db
from tests import waits

TRIALS = 30
CLOSERS = 4


def _close_at_once(engine: db.Engine, evaluation_id: int, closers: int) -> list[BaseException]:
    """``closers`` threads call ``finish_evaluation`` on the same evaluation at the same moment; their errors."""
    start = threading.Barrier(closers)
    errors: list[BaseException] = []

    def close() -> None:
        start.wait()
        try:
            db.finish_evaluation(engine, evaluation_id, status="finished")
        except Exception as error:  # noqa: BLE001 - reported by the caller's assertion
            errors.append(error)

    threads = [threading.Thread(target=close) for _ in range(closers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        waits.joined(thread)
    return errors


def test_concurrent_closes_of_one_evaluation_all_succeed(empty_url, build_world, build_sums):
    db.upgrade(empty_url)
    engine = db.open_store(empty_url)
    try:
        world = build_world(engine)
        focus = np.array([0.9, 0.8, 0.7, np.nan])
        sums = build_sums(focus, world.masks)
        failures: list[BaseException] = []
        for trial in range(TRIALS):
            evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"],
                                                     world.mosaic_set_id, seed=trial, randomization="full")
            db.start_evaluation(engine, evaluation, owner=f"run-{trial}", lease_seconds=60)
            db.write_mosaic_results(engine, evaluation, world.mosaic_ids, sums, focus, [0, 0, 0, 1])
            failures += _close_at_once(engine, evaluation, 2 if trial % 2 else CLOSERS)
            state = db.evaluation_state(engine, evaluation)
            assert state["status"] == "finished"
            assert state["summary"]["n"] == 4 and state["summary"]["n_defined"] == 3
            assert state["summary"]["median"] == 0.8
        assert failures == [], f"{len(failures)} close(s) failed, first: {failures[0]!r}"
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT COUNT(*), SUM(n) FROM evaluation_stats")).one()
            classes = connection.execute(text("SELECT COUNT(*) FROM evaluation_class_stats")).scalar_one()
        assert tuple(stored) == (TRIALS, 4 * TRIALS)
        assert classes == 2 * TRIALS  # two target classes per evaluation, stored once each
    finally:
        engine.dispose()
