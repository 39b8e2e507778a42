"""PostgreSQL: mosaic_result is partitioned by evaluation id; writes, upserts, migrations and retention work."""

from __future__ import annotations

import numpy as np
import pytest
from sqlalchemy import text

import db


@pytest.fixture
def pg_engine(pg_url):
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _partition_of(engine, evaluation_id: int) -> set[str]:
    with engine.connect() as connection:
        return set(connection.execute(
            text("SELECT DISTINCT tableoid::regclass::text FROM mosaic_result WHERE evaluation_id = :e"),
            {"e": evaluation_id}).scalars())


def _drop_range(engine, k: int) -> None:
    """Retention: detach and drop both partitions of evaluation ids k*1000..k*1000+999 (results and tile sums)."""
    with engine.begin() as connection:
        for table in ("mosaic_result", "mosaic_result_tile"):
            connection.exec_driver_sql(f"ALTER TABLE {table} DETACH PARTITION {table}_p{k:06d}")
            connection.exec_driver_sql(f"DROP TABLE {table}_p{k:06d}")


def _evaluation_at(engine, world, method: str, evaluation_id: int) -> int:
    """An evaluation created when the id sequence has reached ``evaluation_id``."""
    with engine.begin() as connection:
        connection.execute(text("SELECT setval(pg_get_serial_sequence('evaluation', 'id'), :v, false)"),
                           {"v": evaluation_id})
    return db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids[method], world.mosaic_set_id)


def test_each_thousand_evaluations_get_a_partition(pg_engine, build_world, build_sums):
    world = build_world(pg_engine)
    early = _evaluation_at(pg_engine, world, "gradcam", 7)
    late = _evaluation_at(pg_engine, world, "lrp", 2345)
    focus = np.array([0.2, np.nan, 0.6, 0.8])
    sums = build_sums(focus, world.masks)
    for evaluation in (early, late):
        assert db.write_mosaic_results(pg_engine, evaluation, world.mosaic_ids, sums, focus, [0, 1, 0, 1]) == 4  # COPY
        assert db.write_mosaic_results(pg_engine, evaluation, world.mosaic_ids[:2], sums[:2], [0.9, 0.1],
                                       [1, 1]) == 2  # the upsert path
        db.finish_evaluation(pg_engine, evaluation)
    assert _partition_of(pg_engine, early) == {"mosaic_result_p000000"}
    assert _partition_of(pg_engine, late) == {"mosaic_result_p000002"}
    assert db.paired_focus(pg_engine, early, late)["focus_a"].tolist() == pytest.approx([0.9, 0.1, 0.6, 0.8])
    assert db.evaluation_summary(pg_engine, [late])["median_focus"].item() == pytest.approx(0.7)

    # retention: dropping a partition drops its evaluations' mosaics, never their stored summaries
    _drop_range(pg_engine, 0)
    assert db.evaluation_results(pg_engine, early).empty
    kept = db.evaluation_summary(pg_engine, [early, late])
    assert kept["n"].tolist() == [4, 4] and kept["median_focus"].tolist() == pytest.approx([0.7, 0.7])
    assert db.schema_diff(pg_engine) == []  # partitions are parts of mosaic_result, not tables of their own
    # a re-run writing into a dropped range gets its partition back (and a summary of what it wrote)
    assert db.write_mosaic_results(pg_engine, early, world.mosaic_ids[:2], sums[:2], [0.4, 0.5], [0, 0]) == 2
    assert _partition_of(pg_engine, early) == {"mosaic_result_p000000"}
    assert db.evaluation_summary(pg_engine, [early])["median_focus"].item() == pytest.approx(0.45)


def test_migration_moves_the_rows_both_ways(pg_url, build_world, build_sums):
    db.upgrade(pg_url)
    engine = db.open_store(pg_url)
    world = build_world(engine)
    focus = np.array([0.3, 0.5, np.nan, 0.9])
    evaluations = [_evaluation_at(engine, world, "gradcam", 5), _evaluation_at(engine, world, "lrp", 1200)]
    for evaluation in evaluations:
        db.write_mosaic_results(engine, evaluation, world.mosaic_ids, build_sums(focus, world.masks), focus,
                                [0, 0, 1, 1])
        db.finish_evaluation(engine, evaluation)
    before = db.evaluation_results(engine, evaluations[1])
    engine.dispose()

    assert db.downgrade(pg_url, "0002") == "0002"  # one plain table again
    plain = db.get_engine(pg_url, check=False)
    with plain.connect() as connection:
        assert connection.scalar(text("SELECT relkind FROM pg_class WHERE relname = 'mosaic_result'")) == "r"
        assert connection.scalar(text("SELECT COUNT(*) FROM mosaic_result")) == 8
        assert connection.scalar(text("SELECT COUNT(*) FROM pg_class WHERE relname LIKE 'mosaic_result_p%'")) == 0
    plain.dispose()

    assert db.upgrade(pg_url) == db.head()  # the rows move into the partitions, closed evaluations get summaries
    engine = db.open_store(pg_url)
    try:
        assert _partition_of(engine, evaluations[1]) == {"mosaic_result_p000001"}
        assert db.evaluation_results(engine, evaluations[1]).equals(before)
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT COUNT(*) FROM evaluation_stats")) == 2
        assert db.evaluation_summary(engine, evaluations)["median_focus"].tolist() == pytest.approx([0.5, 0.5])
    finally:
        engine.dispose()


def test_tile_sums_are_partitioned_alike_and_dropped_with_their_results(pg_engine):
    from tests.db.test_grids import make_grid, tile_sums

    grid = make_grid(pg_engine)
    with pg_engine.begin() as connection:
        connection.execute(text("SELECT setval(pg_get_serial_sequence('evaluation', 'id'), 2345, false)"))
    evaluation = db.get_or_create_evaluation(pg_engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id)
    focus = np.array([0.9, 0.1, 0.2, 0.5, 0.7, 0.4])
    sums = tile_sums(focus, grid.masks)
    assert db.write_mosaic_results(pg_engine, evaluation, grid.mosaic_ids, sums, focus, [0] * 6) == 6  # COPY
    assert db.write_mosaic_results(pg_engine, evaluation, grid.mosaic_ids[:1], sums[:1], focus[:1], [1]) == 1
    db.finish_evaluation(pg_engine, evaluation)
    with pg_engine.connect() as connection:
        where = set(connection.execute(text(
            "SELECT DISTINCT tableoid::regclass::text FROM mosaic_result_tile WHERE evaluation_id = :e"),
            {"e": evaluation}).scalars())
    assert where == {"mosaic_result_tile_p000002"} and _partition_of(pg_engine, evaluation) == {"mosaic_result_p000002"}
    assert np.array_equal(db.evaluation_tile_sums(pg_engine, evaluation)[["positive", "negative"]].to_numpy(),
                          sums.reshape(-1, 2))

    _drop_range(pg_engine, 2)
    assert db.evaluation_tile_sums(pg_engine, evaluation).empty and db.evaluation_results(pg_engine, evaluation).empty
    kept = db.evaluation_summary(pg_engine, [evaluation])
    assert kept[["n", "grid", "chance_level"]].values.tolist() == [[6, 3, pytest.approx(1 / 3)]]
    assert db.schema_diff(pg_engine) == []
    # a re-run into the dropped range gets both partitions back
    assert db.write_mosaic_results(pg_engine, evaluation, grid.mosaic_ids[:2], sums[:2], focus[:2], [0, 0]) == 2
    assert len(db.evaluation_tile_sums(pg_engine, evaluation)) == 18
