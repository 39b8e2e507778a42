"""Stored summaries equal what revision 0002's view computed, on both databases; they follow the rows.

The reference is the ``evaluation_summary`` view of revision 0002 itself (its SQL, run as a
subquery on the same store), and numpy for the columns that view did not have.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text

import db
from db.migrate import alembic_config

OLD_COLUMNS = ("n", "n_defined", "mean_focus", "median_focus", "q1_focus", "q3_focus", "min_focus", "max_focus",
               "mosaic_accuracy", "status")


def old_view_sql(dialect: str) -> str:
    """The SELECT of revision 0002's ``evaluation_summary`` (which ranked every mosaic at every query)."""
    script = ScriptDirectory.from_config(alembic_config())
    initial = script.get_revision("0001").module.VIEWS
    second = script.get_revision("0002").module
    sql = dict(initial)["evaluation_summary"].replace("e.layer, e.audit_run_id, e.status,",
                                                      second._summary_columns(dialect))
    return sql.split("AS", 1)[1] if sql.lstrip().startswith("CREATE VIEW") else sql


def old_view(engine) -> pd.DataFrame:
    with engine.connect() as connection:
        return pd.read_sql_query(text(f"SELECT * FROM ({old_view_sql(engine.dialect.name)}) old "
                                      "ORDER BY evaluation_id"), connection).set_index("evaluation_id")


def compare_with_old_view(engine) -> pd.DataFrame:
    new = db.evaluation_summary(engine).set_index("evaluation_id")
    old = old_view(engine)
    assert list(new.index) == list(old.index)
    for column in OLD_COLUMNS:
        if column == "status":
            assert new[column].tolist() == old[column].tolist()
            continue
        a, b = new[column].to_numpy(dtype=float), old[column].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), column
        np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=1e-12, atol=1e-15, err_msg=column)
    return new


def _generated_store(engine, world, build_sums, rng) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Evaluations with every awkward shape: ties, all undefined, one defined, none written, half written."""
    m = len(world.mosaic_ids)
    written = {}
    cases = [rng.random(m), np.full(m, np.nan), np.array([np.nan, 0.3, np.nan, np.nan]), np.array([0.5] * m),
             np.array([0.0, 1.0, np.nan, 0.25])]
    for i, focus in enumerate(cases):
        checkpoint = db.register_checkpoint(engine, f"{i:064d}", "digits_cnn", 2)
        evaluation = db.get_or_create_evaluation(engine, checkpoint, world.method_ids["gradcam"], world.mosaic_set_id)
        predicted = rng.integers(0, 2, m)
        db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus, predicted)
        db.finish_evaluation(engine, evaluation)
        written[evaluation] = (focus, predicted)
    running = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id)
    focus = np.array([0.7, np.nan])
    db.write_mosaic_results(engine, running, world.mosaic_ids[:2], build_sums(focus, world.masks[:2]), focus, [0, 1])
    written[running] = (focus, np.array([0, 1]))
    db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id,
                                randomization="full", seed=0)  # pending, nothing written
    return written


def test_stored_summaries_equal_the_old_view_on_a_generated_store(engine, world, build_sums):
    written = _generated_store(engine, world, build_sums, np.random.default_rng(0))
    new = compare_with_old_view(engine)
    with engine.connect() as connection:
        stored = set(connection.execute(text("SELECT evaluation_id FROM evaluation_stats")).scalars())
    finished = set(list(written)[:-1])
    assert stored == finished  # the running one and the pending one are computed live
    for evaluation, (focus, _predicted) in written.items():
        row = new.loc[evaluation]
        defined = focus[~np.isnan(focus)]
        assert row["undefined_share"] == pytest.approx(np.isnan(focus).mean())
        assert row["median_focus_undefined_as_zero"] == pytest.approx(np.median(np.nan_to_num(focus, nan=0.0)))
        if len(defined) >= 2:
            assert row["std_focus"] == pytest.approx(np.std(defined, ddof=1), abs=1e-12)
        else:
            assert np.isnan(row["std_focus"])


def test_class_summary_per_target_class(engine, world, build_sums):
    focus = np.array([0.9, np.nan, 0.2, 0.6])  # targets 0, 0, 0, 1
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id)
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus, [0, 1, 0, 1])
    assert db.class_summary(engine, [evaluation]).empty  # not closed yet
    db.finish_evaluation(engine, evaluation)
    frame = db.class_summary(engine, [evaluation]).set_index("target_class")
    assert frame["n"].tolist() == [3, 1] and frame["n_defined"].tolist() == [2, 1]
    assert frame["median_focus"].tolist() == pytest.approx([0.55, 0.6])
    assert frame["median_focus_undefined_as_zero"].tolist() == pytest.approx([0.2, 0.6])
    assert frame["mosaic_accuracy"].tolist() == pytest.approx([2 / 3, 1.0])
    assert db.class_summary(engine, []).empty


def test_rows_written_after_closing_store_the_summary_again(engine, world, build_sums):
    """A stored summary always describes the rows stored, also rows written after the evaluation was closed."""
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id)
    first = np.array([0.2, 0.4, 0.6, 0.8])
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(first, world.masks), first, [0, 0, 0, 1])
    db.finish_evaluation(engine, evaluation)
    assert db.evaluation_summary(engine, [evaluation])["median_focus"].item() == pytest.approx(0.5)
    again = np.array([0.9, 0.9, np.nan, 0.1])  # a re-run rewrites the chunk (the upsert path)
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(again, world.masks), again, [1, 1, 1, 1])
    row = db.evaluation_summary(engine, [evaluation]).iloc[0]
    assert (row["n"], row["n_defined"], row["median_focus"]) == (4, 3, pytest.approx(0.9))
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT median_focus FROM evaluation_stats WHERE evaluation_id = :e"),
                                 {"e": evaluation}) == pytest.approx(0.9)
    compare_with_old_view(engine)


@pytest.mark.slow  # trains the recorded store's model
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_stored_summaries_equal_the_old_view_on_the_recorded_store(backend, request, tmp_path):
    from tests.recorded_store import build_record, write_record

    url = request.getfixturevalue("sqlite_url" if backend == "sqlite" else "pg_url")
    db.upgrade(url)
    write_record(url, build_record(tmp_path), audits=True)
    engine = db.open_store(url)
    try:
        new = compare_with_old_view(engine)
        assert (new["status"] == "finished").sum() >= 10
    finally:
        engine.dispose()


def test_a_closed_evaluation_run_again_shows_crashed_when_its_run_dies(engine, world, build_sums):
    """The stored branch keeps revision 0002's status logic: a re-run past its lease reads 'crashed'."""
    evaluation = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["gradcam"],
                                             world.mosaic_set_id)
    focus = np.array([0.2, 0.4, 0.6, 0.8])
    db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus, [0] * 4)
    db.finish_evaluation(engine, evaluation, status="failed")
    db.start_evaluation(engine, evaluation, owner="run-2", lease_seconds=-60)  # its run died a minute ago
    row = db.evaluation_summary(engine, [evaluation]).iloc[0]
    assert (row["status"], row["n"], row["median_focus"]) == ("crashed", 4, pytest.approx(0.5))
    db.start_evaluation(engine, evaluation, owner="run-3", lease_seconds=600)
    assert db.evaluation_summary(engine, [evaluation])["status"].item() == "running"
    compare_with_old_view(engine)
