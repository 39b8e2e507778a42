"""N x N mosaics in the store (revision 0007): tiles and per-tile sums for any N, chance level k/N² in the views.

The 3x3 world is made of rows directly (a manifest-like table of 9 dataset indices per mosaic, k = 3
target tiles), since the focus_core side builds the real manifests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from sqlalchemy import text

import db

CLASSES = 3
PER_CLASS_TEST = 6
RELPATHS = [f"c{c}/{i:03d}.png" for c in range(CLASSES) for i in range(PER_CLASS_TEST + 2)]
LABELS = [c for c in range(CLASSES) for _ in range(PER_CLASS_TEST + 2)]
SPLITS = (["train"] * 2 + ["test"] * PER_CLASS_TEST) * CLASSES


@dataclass
class Grid:
    mosaic_set_id: int
    mosaic_ids: list[int]
    image_ids: np.ndarray  # (M, 9) database ids
    masks: np.ndarray  # (M, 9) bool
    targets: np.ndarray  # (M,)
    checkpoint_id: int
    method_id: int


def _test_images(ids: np.ndarray, c: int) -> np.ndarray:
    start = c * (PER_CLASS_TEST + 2) + 2
    return ids[start:start + PER_CLASS_TEST]


def make_grid(engine, mosaics: int = 6, seed: int = 0) -> Grid:
    """A 3x3 mosaic set with k = 3 target tiles per mosaic, one checkpoint and one method."""
    ds = db.register_dataset(engine, "toy3", "3" * 64, ["a", "b", "c"], RELPATHS, LABELS, SPLITS, tile_size=8)
    ids = np.asarray(ds.image_ids)
    rng = np.random.default_rng(seed)
    rows, masks, targets = [], [], []
    for i in range(mosaics):
        c = i % CLASSES
        others = np.concatenate([_test_images(ids, o) for o in range(CLASSES) if o != c])
        positions = np.sort(rng.choice(9, size=3, replace=False))
        row = np.empty(9, dtype=np.int64)
        mask = np.zeros(9, dtype=bool)
        mask[positions] = True
        row[mask] = rng.choice(_test_images(ids, c), size=3, replace=False)
        row[~mask] = rng.choice(others, size=6, replace=False)
        rows.append(row), masks.append(mask), targets.append(c)
    image_ids, masks, targets = np.array(rows), np.array(masks), np.array(targets)
    ms = db.register_mosaic_set(engine, "g" * 64, ds.dataset_id, "test", seed, 2, "random", image_ids, targets, masks,
                                tile_size=8, grid=3, targets=3, confident=0.9, confident_model="d" * 64)
    checkpoint = db.register_checkpoint(engine, "e" * 64, "digits_cnn", CLASSES, path="w.pt")
    method = db.register_method(engine, "gradcam", {"layer": None})
    return Grid(ms.mosaic_set_id, ms.mosaic_ids, image_ids, masks, targets, checkpoint, method)


def tile_sums(focus: np.ndarray, masks: np.ndarray, seed: int = 1) -> np.ndarray:
    """(M, T, 2) sums with distinct values per tile whose positive part gives exactly ``focus``."""
    rng = np.random.default_rng(seed)
    m, t = masks.shape
    sums = np.zeros((m, t, 2))
    sums[:, :, 1] = -rng.uniform(0.1, 1.0, size=(m, t))
    for i, f in enumerate(focus):
        if np.isnan(f):
            continue
        weights = rng.uniform(0.5, 1.5, size=t)
        sums[i, masks[i], 0] = f * weights[masks[i]] / weights[masks[i]].sum()
        sums[i, ~masks[i], 0] = (1 - f) * weights[~masks[i]] / weights[~masks[i]].sum()
    return sums


def _count(engine, sql: str, **params) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text(sql), params).scalar())


def test_a_3x3_set_keeps_its_tiles_and_grid(engine):
    grid = make_grid(engine)
    tiles = db.mosaic_tiles(engine, grid.mosaic_ids[1])
    assert tiles.grid == 3 and len(tiles.relpaths) == 9
    assert tiles.target_positions == np.flatnonzero(grid.masks[1]).tolist()
    with engine.connect() as connection:
        row = connection.execute(text("SELECT grid, targets, confident, confident_model FROM mosaic_set WHERE id = :i"),
                                 {"i": grid.mosaic_set_id}).one()
        corners = connection.execute(text("SELECT COUNT(*) FROM mosaic WHERE image_tl IS NOT NULL")).scalar()
        view = connection.execute(text("SELECT mosaic_id, position, image_id, is_target FROM mosaic_tiles "
                                       "ORDER BY mosaic_id, position")).all()
    assert tuple(row) == (3, 3, 0.9, "d" * 64) and corners == 0
    assert np.array([r[2] for r in view]).reshape(-1, 9).tolist() == grid.image_ids.tolist()
    assert np.array([r[3] for r in view]).reshape(-1, 9).astype(bool).tolist() == grid.masks.tolist()
    # the same manifest again is the same set; a mask with the wrong number of targets is refused
    again = db.register_mosaic_set(engine, "g" * 64, 1, "test", 0, 2, "random", grid.image_ids, grid.targets,
                                   grid.masks, grid=3, targets=3)
    assert again.mosaic_ids == grid.mosaic_ids
    with pytest.raises(db.StoreError, match="exactly 3 target tile"):
        db.register_mosaic_set(engine, "h" * 64, 1, "test", 0, 2, "random", grid.image_ids[:1], grid.targets[:1],
                               np.eye(9, dtype=bool)[:1], grid=3, targets=3)
    with pytest.raises(db.StoreError, match=r"shape \(M, 9\)"):
        db.register_mosaic_set(engine, "h" * 64, 1, "test", 0, 2, "random", grid.image_ids[:, :4], grid.targets,
                               grid.masks[:, :4], grid=3, targets=3)
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_set") == 1


def test_3x3_sums_round_trip_every_tile_on_both_paths(engine, write_paths):
    grid = make_grid(engine)
    evaluation = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id)
    focus = np.array([0.9, np.nan, 0.2, 0.5, 0.7, 1 / 3])
    sums = tile_sums(focus, grid.masks)
    assert db.write_mosaic_results(engine, evaluation, grid.mosaic_ids, sums, focus, [0, 1, 2, 0, 1, 1]) == 6
    # a retry of part of the chunk takes the upsert path and replaces those tiles
    sums2 = tile_sums(focus[:2], grid.masks[:2], seed=7)
    assert db.write_mosaic_results(engine, evaluation, grid.mosaic_ids[:2], sums2, focus[:2], [0, 1]) == 2
    assert write_paths == ["insert", "upsert"]
    expected = sums.copy()
    expected[:2] = sums2
    tiles = db.evaluation_tile_sums(engine, evaluation)
    assert len(tiles) == 6 * 9
    assert tiles["position"].tolist() == list(range(9)) * 6
    assert np.array_equal(tiles[["positive", "negative"]].to_numpy().reshape(6, 9, 2), expected)  # exactly
    assert tiles["is_target"].to_numpy().reshape(6, 9).astype(bool).tolist() == grid.masks.tolist()
    results = db.evaluation_results(engine, evaluation)
    assert results["pos_tl"].isna().all() and results["neg_br"].isna().all()
    assert np.allclose(results["focus"].to_numpy(float), focus, equal_nan=True)


def test_a_chunk_with_another_grid_is_refused_before_any_row(engine, world, build_sums):
    grid = make_grid(engine)
    on_3x3 = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id)
    on_2x2 = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id)
    focus = np.full(4, 0.5)
    with pytest.raises(db.StoreError, match="9 tiles of evaluation .* 3x3 mosaics but got 4"):
        db.write_mosaic_results(engine, on_3x3, grid.mosaic_ids[:4], build_sums(focus, world.masks), focus, [0] * 4)
    with pytest.raises(db.StoreError, match="4 tiles of evaluation .* 2x2 mosaics but got 9"):
        db.write_mosaic_results(engine, on_2x2, world.mosaic_ids, tile_sums(focus, grid.masks[:4]), focus, [0] * 4)
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_result") == 0
    assert _count(engine, "SELECT COUNT(*) FROM mosaic_result_tile") == 0


def test_views_show_grid_targets_and_chance_level_and_stored_equals_live(engine, world, build_sums):
    grid = make_grid(engine)
    on_3x3 = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id)
    on_2x2 = db.get_or_create_evaluation(engine, world.checkpoint_id, world.method_ids["lrp"], world.mosaic_set_id)
    focus = np.array([0.9, np.nan, 0.2, 0.5, 0.7, 0.4])
    db.write_mosaic_results(engine, on_3x3, grid.mosaic_ids, tile_sums(focus, grid.masks), focus, [0, 1, 2, 0, 1, 1])
    db.write_mosaic_results(engine, on_2x2, world.mosaic_ids, build_sums(focus[:4], world.masks), focus[:4], [0] * 4)
    live = db.evaluation_summary(engine, [on_2x2, on_3x3])
    with engine.connect() as connection:
        live_classes = connection.execute(text(
            "SELECT * FROM evaluation_class_summary_live WHERE evaluation_id = :e ORDER BY target_class"),
            {"e": on_3x3}).all()
    for evaluation in (on_2x2, on_3x3):
        db.finish_evaluation(engine, evaluation)
    stored = db.evaluation_summary(engine, [on_2x2, on_3x3])
    assert stored["evaluation_id"].tolist() == [on_3x3, on_2x2]
    assert stored[["grid", "targets"]].values.tolist() == [[3, 3], [2, 2]]
    assert stored["chance_level"].tolist() == pytest.approx([1 / 3, 0.5])
    assert stored["median_focus"].iloc[0] == pytest.approx(float(np.nanmedian(focus)))
    pd_testing = pytest.importorskip("pandas.testing")
    pd_testing.assert_frame_equal(stored.drop(columns="status"), live.drop(columns="status"))
    assert db.class_summary(engine, [on_3x3])["median_focus"].tolist() == pytest.approx(
        [row.median_focus for row in live_classes])
    assert live_classes[0].chance_level == pytest.approx(1 / 3)
    # the 2x2 result's sums are unpivoted from its columns by the tile view, in TL, TR, BL, BR order
    tiles = db.evaluation_tile_sums(engine, on_2x2)
    expected = build_sums(focus[:4], world.masks)
    assert np.array_equal(tiles[["positive", "negative"]].to_numpy().reshape(4, 4, 2), expected)
    with engine.connect() as connection:
        unpivoted = connection.execute(text(
            "SELECT image_id FROM mosaic_tiles WHERE mosaic_set_id = :s ORDER BY mosaic_id, position"),
            {"s": world.mosaic_set_id}).scalars().all()
    assert np.array(unpivoted).reshape(4, 4).tolist() == np.asarray(world.image_ids)[world.image_index].tolist()


def test_migration_keeps_rows_both_ways_and_refuses_to_lose_a_grid(empty_url, build_world, build_sums):
    db.upgrade(empty_url, "0006")
    engine = db.get_engine(empty_url, check=False)
    with engine.begin() as connection:  # a 0006 store: mosaics and results written the 0006 way
        connection.exec_driver_sql(
            "INSERT INTO dataset (id, name, fingerprint, classes, num_images, created_at) "
            "VALUES (50, 'toy', 'f', '[\"a\", \"b\"]', 4, '2026-01-01 00:00:00')")
        connection.exec_driver_sql(
            "INSERT INTO image (id, dataset_id, position, relpath, label, split) VALUES "
            "(51, 50, 0, 'a0', 0, 'test'), (52, 50, 1, 'a1', 0, 'test'), (53, 50, 2, 'b0', 1, 'test'), "
            "(54, 50, 3, 'b1', 1, 'test')")
        connection.exec_driver_sql(
            "INSERT INTO mosaic_set (id, manifest_hash, dataset_id, split, seed, per_class, layout, num_mosaics, "
            "created_at) VALUES (50, 'm', 50, 'test', 0, 1, 'random', 1, '2026-01-01 00:00:00')")
        connection.exec_driver_sql(
            "INSERT INTO mosaic (id, mosaic_set_id, position, image_tl, image_tr, image_bl, image_br, target_class, "
            "target_mask) VALUES (50, 50, 0, 51, 53, 52, 54, 0, 5)")
        connection.exec_driver_sql(
            "INSERT INTO model_checkpoint (id, sha256, architecture, num_classes, audit, created_at) "
            "VALUES (50, 'c', 'digits_cnn', 2, false, '2026-01-01 00:00:00')")
        connection.exec_driver_sql("INSERT INTO xai_method (id, name, params, params_hash) VALUES (50, 'g', '{}', 'h')")
        connection.exec_driver_sql(
            "INSERT INTO evaluation (id, natural_key, checkpoint_id, method_id, mosaic_set_id, randomization, status, "
            "created_at) VALUES (50, 'k', 50, 50, 50, 'none', 'finished', '2026-01-01 00:00:00')")
        connection.exec_driver_sql(
            "INSERT INTO mosaic_result (evaluation_id, mosaic_id, pos_tl, pos_tr, pos_bl, pos_br, neg_tl, neg_tr, "
            "neg_bl, neg_br, focus, predicted_class) VALUES (50, 50, 0.4, 0.1, 0.3, 0.2, -1, -2, -3, -4, 0.7, 0)")
    engine.dispose()
    before_tiles = [(50, 50, 0, 0.4, -1.0), (50, 50, 1, 0.1, -2.0), (50, 50, 2, 0.3, -3.0), (50, 50, 3, 0.2, -4.0)]

    assert db.upgrade(empty_url, "0007") == "0007"
    engine = db.get_engine(empty_url, check=False)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT grid, targets, confident FROM mosaic_set")).one() == (2, 2, None)
            assert connection.execute(text(
                "SELECT evaluation_id, mosaic_id, position, positive, negative FROM mosaic_result_tiles "
                "ORDER BY position")).all() == before_tiles
            assert connection.execute(text("SELECT image_id, is_target FROM mosaic_tiles ORDER BY position")).all() == [
                (51, 1), (53, 0), (52, 1), (54, 0)]
            summary = connection.execute(text(  # closed before 0007: its stored summary, with the grid (the view
                "SELECT n, median_focus, grid, targets, chance_level FROM evaluation_summary "  # as of 0007)
                "WHERE evaluation_id = 50")).all()
        assert [tuple(row) for row in summary] == [(1, 0.7, 2, 2, 0.5)]
        with engine.begin() as connection:
            assert db.summaries.store_summary(connection, 50)  # a stored summary, to survive the way down
        make_grid(engine)  # a 3x3 set: 0006 cannot hold it
    finally:
        engine.dispose()
    with pytest.raises(db.StoreError, match="1 mosaic set.* revision 0006 cannot hold"):
        db.downgrade(empty_url, "0006")
    assert db.current(empty_url) == "0007"
    engine = db.get_engine(empty_url, check=False)
    with engine.begin() as connection:
        connection.exec_driver_sql("DELETE FROM model_checkpoint WHERE id <> 50")
        connection.exec_driver_sql("DELETE FROM mosaic_set WHERE grid <> 2")  # its mosaics and tiles go with it
        assert connection.exec_driver_sql("SELECT COUNT(*) FROM mosaic_tile").scalar() == 0
    engine.dispose()
    assert db.downgrade(empty_url, "0006") == "0006"
    engine = db.get_engine(empty_url, check=False)
    try:
        with engine.connect() as connection:
            assert connection.execute(text(
                "SELECT pos_tl, pos_tr, pos_bl, pos_br, neg_tl, neg_tr, neg_bl, neg_br, focus FROM mosaic_result"
            )).one() == (0.4, 0.1, 0.3, 0.2, -1, -2, -3, -4, 0.7)
            assert connection.execute(text("SELECT image_tl, image_tr, image_bl, image_br FROM mosaic")).one() == (
                51, 53, 52, 54)
            assert connection.execute(text("SELECT COUNT(*) FROM evaluation_stats")).scalar() == 1
    finally:
        engine.dispose()
