"""Stored audit comparisons (revision 0008): ``audit_history`` shows what revision 0003's LAG window showed.

The reference is 0003's own view SQL with the grid columns 0007 added (the definition 0007 ran), created next to the new view on the same
store; a generated store with several lineages and audits, audits started out of id order, an audit
evaluation that failed and finished after a later audit, one taken up again by a re-run and re-completed with
other rows, randomized, unfinished and non-audit evaluations, compared after every step on both databases.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

import db
from db.migrate import alembic_config
from tests import waits

T0 = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.timezone.utc)
# audit started_at in days after T0, in id order: the third audit started before the second, the last two tie
AUDIT_DAYS = (0, 3, 1, 5, 5)


def _reference_view() -> str:
    """Revision 0007's ``audit_history`` (0003's LAG window with 0007's grid columns), as ``audit_history_lag``."""
    script = ScriptDirectory.from_config(alembic_config())
    window = script.get_revision("0003").module.AUDIT_HISTORY
    with_grid = script.get_revision("0007").module._with_grid(window, "s")
    return with_grid.replace("CREATE VIEW audit_history AS", "CREATE VIEW audit_history_lag AS")


def _frame(engine, view: str) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(text(f"SELECT * FROM {view} ORDER BY evaluation_id"), connection)


def _assert_same_history(engine) -> pd.DataFrame:
    new, old = _frame(engine, "audit_history"), _frame(engine, "audit_history_lag")
    assert list(new.columns) == list(old.columns)
    pd.testing.assert_frame_equal(new, old, check_dtype=False)
    return new


class _Store:
    """Writes audit evaluations through the db API, with random Focus scores."""

    def __init__(self, engine, world, build_sums) -> None:
        self.engine, self.world, self.build_sums = engine, world, build_sums
        self.rng = np.random.default_rng(14)
        self.mosaic_ids = {world.mosaic_set_id: world.mosaic_ids}  # of each mosaic set
        self.set_of: dict[int, int] = {}

    def write(self, evaluation: int, positions: list[int]) -> None:
        w = self.world
        focus = self.rng.uniform(0.2, 0.95, len(positions))
        focus[self.rng.random(len(positions)) < 0.2] = np.nan
        ids = [self.mosaic_ids[self.set_of[evaluation]][p] for p in positions]
        db.write_mosaic_results(self.engine, evaluation, ids, self.build_sums(focus, w.masks[positions]), focus,
                                self.rng.integers(0, 2, len(positions)))

    def evaluate(self, checkpoint: int, method: str, audit: int | None, *, mosaic_set: int | None = None,
                 randomization: str = "none", finish: bool = True) -> int:
        evaluation = db.get_or_create_evaluation(
            self.engine, checkpoint, self.world.method_ids[method], mosaic_set or self.world.mosaic_set_id,
            randomization=randomization, seed=None if randomization == "none" else 0, audit_run_id=audit)
        self.set_of[evaluation] = mosaic_set or self.world.mosaic_set_id
        db.start_evaluation(self.engine, evaluation)
        self.write(evaluation, list(range(len(self.world.mosaic_ids))))
        if finish:
            db.finish_evaluation(self.engine, evaluation)
        return evaluation


def _checkpoints(engine, world) -> list[int]:
    """The world's checkpoint outside any lineage, two versions of lineage ``a`` and one of lineage ``b``."""
    ids = [world.checkpoint_id]
    for i, lineage in enumerate(("a", "a", "b")):
        checkpoint = db.register_checkpoint(engine, f"{i + 1}" * 64, "digits_cnn", 2, path=f"w{i}.pt")
        db.register_lineage_checkpoint(engine, lineage, checkpoint, audit=True)
        ids.append(checkpoint)
    return ids


def test_audit_history_matches_the_window_it_replaces(engine, world, build_sums):
    with engine.begin() as connection:
        connection.exec_driver_sql(_reference_view())
    store = _Store(engine, world, build_sums)
    checkpoints = _checkpoints(engine, world)
    registered = db.register_mosaic_set(engine, "n" * 64, world.dataset_id, "test", 1, 2, "random",
                                        np.asarray(world.image_ids)[world.image_index], world.targets, world.masks)
    other_set = registered.mosaic_set_id
    store.mosaic_ids[other_set] = registered.mosaic_ids
    audits = [db.start_audit_run(engine, name=f"nightly-{i}", started_at=T0 + dt.timedelta(days=d))
              for i, d in enumerate(AUDIT_DAYS)]
    late = None
    for k, audit in enumerate(audits[:3]):
        for checkpoint in checkpoints:
            for method in ("gradcam", "lrp"):
                if (k, checkpoint, method) == (0, checkpoints[1], "gradcam"):
                    late = store.evaluate(checkpoint, method, audit, finish=False)  # its run fails below
                    db.finish_evaluation(engine, late, status="failed")
                else:
                    store.evaluate(checkpoint, method, audit)
    # not in the history: randomized, non-audit and unfinished audit evaluations
    store.evaluate(checkpoints[0], "gradcam", audits[1], randomization="full")
    store.evaluate(checkpoints[0], "gradcam", None)
    store.evaluate(checkpoints[2], "lrp", audits[3], finish=False)
    # the data changed: another mosaic set from the fourth audit on
    store.evaluate(checkpoints[3], "gradcam", audits[3], mosaic_set=other_set)
    store.evaluate(checkpoints[3], "gradcam", audits[4], mosaic_set=other_set)
    history = _assert_same_history(engine)
    assert late not in set(history["evaluation_id"])
    assert history["previous_evaluation_id"].notna().sum() > 10

    # the failed evaluation of the first audit is run again and finishes after the later audits did: it
    # becomes the first of its group and the previous one of the next audit's (the third, by started_at)
    db.start_evaluation(engine, late)
    store.write(late, [0, 1, 2, 3])
    db.finish_evaluation(engine, late)
    history = _assert_same_history(engine).set_index("evaluation_id")
    assert np.isnan(history.loc[late, "previous_evaluation_id"])
    assert (history["previous_evaluation_id"] == late).sum() == 1

    # a finished evaluation taken up again by a re-run leaves the history until it finishes again, with new rows
    rerun = int(history[(history["audit_run_id"] == audits[2]) & (history["checkpoint_id"] == checkpoints[2])
                        & (history["method_name"] == "lrp")].index[0])
    db.start_evaluation(engine, rerun)
    assert rerun not in set(_assert_same_history(engine)["evaluation_id"])
    store.write(rerun, [0, 2])
    db.finish_evaluation(engine, rerun)  # re-completed: its summary is stored again
    history = _assert_same_history(engine).set_index("evaluation_id")
    assert rerun in history.index
    db.finish_evaluation(engine, rerun)  # closing a finished one again changes nothing
    _assert_same_history(engine)

    # what the queries read is the same rows
    regressions = db.focus_regressions(engine, threshold=0.0)
    assert len(regressions) > 0
    for audit in audits:
        chosen = db.focus_regressions(engine, threshold=0.0, audit_run_id=audit)
        assert chosen["evaluation_id"].tolist() == regressions[regressions["audit_run_id"] == audit][
            "evaluation_id"].tolist()
    assert len(db.checkpoint_history(engine, checkpoints[1], "gradcam")) == 3


def test_upgrade_fills_the_comparisons_of_the_audits_stored(empty_url, build_world, build_sums):
    """Down to 0007 gives its view back; up again, the backfill writes the comparisons that view computed."""
    db.upgrade(empty_url)
    engine = db.get_engine(empty_url, check=False)
    try:
        world = build_world(engine)
        store = _Store(engine, world, build_sums)
        checkpoints = _checkpoints(engine, world)
        audits = [db.start_audit_run(engine, name=f"nightly-{i}", started_at=T0 + dt.timedelta(days=d))
                  for i, d in enumerate(AUDIT_DAYS[:3])]
        for audit in audits:
            for checkpoint in checkpoints[:3]:
                store.evaluate(checkpoint, "gradcam", audit)
        store.evaluate(checkpoints[3], "lrp", audits[0], finish=False)
        assert db.downgrade(empty_url, "0007") == "0007"
        assert "audit_comparison" not in inspect(engine).get_table_names()
        before = _frame(engine, "audit_history")
        assert before["previous_evaluation_id"].notna().sum() == 6
        assert db.upgrade(empty_url) == db.head()
        with engine.begin() as connection:
            stored = connection.scalar(text("SELECT COUNT(*) FROM audit_comparison"))
            connection.exec_driver_sql(_reference_view())
        assert stored == 9
        pd.testing.assert_frame_equal(_assert_same_history(engine), before, check_dtype=False)
    finally:
        engine.dispose()


def test_one_audits_history_is_read_without_a_window(pg_url):
    """On PostgreSQL, one audit run's rows are found through the index, not by a LAG over every audit's rows.

    (The live branch of ``evaluation_summary`` still ranks mosaics, for evaluations not closed yet.)
    """
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        with engine.connect() as connection:
            plan = connection.exec_driver_sql(
                "EXPLAIN (VERBOSE, FORMAT JSON) SELECT * FROM audit_history WHERE audit_run_id = 7").scalar()
    finally:
        engine.dispose()
    text_plan = str(plan).lower()
    assert "lag(" not in text_plan
    assert "audit_comparison" in text_plan


def test_concurrent_closes_of_one_group_leave_it_right(pg_url, build_world, build_sums):
    """Two audits' evaluations of one checkpoint x method closed at once: the second waits for the first (PostgreSQL)."""
    import threading

    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        world = build_world(engine)
        with engine.begin() as connection:
            connection.exec_driver_sql(_reference_view())
        store = _Store(engine, world, build_sums)
        audits = [db.start_audit_run(engine, name=f"nightly-{i}", started_at=T0 + dt.timedelta(days=i))
                  for i in range(3)]
        first = store.evaluate(world.checkpoint_id, "gradcam", audits[0])
        middle, last = (store.evaluate(world.checkpoint_id, "gradcam", a, finish=False) for a in audits[1:])
        outcome: dict[str, object] = {}

        def close_middle() -> None:
            try:
                db.finish_evaluation(engine, middle)
            except Exception as exc:  # reported by the assertion below
                outcome["error"] = exc

        with engine.connect() as connection:
            transaction = connection.begin()
            db.finish_evaluation(connection, last)  # sees the first only: the middle one is not finished yet
            thread = threading.Thread(target=close_middle)
            thread.start()
            waited = waits.lock_wait_before_end(engine, thread)
            transaction.commit()
        waits.joined(thread)
        assert waited, "closing the middle evaluation did not wait for the open transaction"
        assert "error" not in outcome, outcome.get("error")
        history = _assert_same_history(engine).set_index("evaluation_id")
        assert history["previous_evaluation_id"].to_dict() == pytest.approx({first: np.nan, middle: first,
                                                                            last: middle}, nan_ok=True)
    finally:
        engine.dispose()
