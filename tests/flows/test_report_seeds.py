"""The report keeps every randomization seed: several fully random and cascading seeds, on both stores.

A 3x3 mosaic set (k = 3 target tiles, chance level 1/3) with a trained evaluation, five fully random
seeds and three cascading seeds of two stages each, written through the ``db`` write API with known
per-mosaic Focus. Every section that summarises random models must rest on all of them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import db
from flows.worker import store
from focus_core import stats
from tests.db.test_grids import make_grid, tile_sums
from tests.flows.test_report_page import parse_page

FULL_SEEDS = (0, 1, 2, 3, 4)
CASCADING_SEEDS = (0, 1, 2)
MOSAICS = 12


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


def _write(engine, grid, focus: np.ndarray, **kind) -> int:
    evaluation = db.get_or_create_evaluation(engine, grid.checkpoint_id, grid.method_id, grid.mosaic_set_id, **kind)
    db.start_evaluation(engine, evaluation)
    db.write_mosaic_results(engine, evaluation, grid.mosaic_ids, tile_sums(focus, grid.masks), focus, grid.targets)
    db.finish_evaluation(engine, evaluation)
    return evaluation


def _store(url: str) -> dict:
    engine = db.open_store(url)
    rng = np.random.default_rng(7)
    written: dict = {"full": {}, "cascading": {}}
    try:
        grid = make_grid(engine, mosaics=MOSAICS)
        written["grid"] = grid
        written["trained"] = _write(engine, grid, rng.uniform(0.6, 1.0, MOSAICS))
        for seed in FULL_SEEDS:  # the last seed far below the others; their mean 0.07-0.1 below chance 1/3
            low, high = (0.0, 0.1) if seed == FULL_SEEDS[-1] else (0.2, 0.4)
            focus = rng.uniform(low, high, MOSAICS)
            written["full"][seed] = (_write(engine, grid, focus, randomization="full", seed=seed), focus)
        for seed in CASCADING_SEEDS:
            for stage, layer in enumerate(("fc", "conv")):
                focus = rng.uniform(0.1 * seed, 0.1 * seed + 0.5, MOSAICS)
                written["cascading"][(seed, stage)] = (
                    _write(engine, grid, focus, randomization="cascading", stage=stage, layer=layer, seed=seed), focus)
    finally:
        engine.dispose()
    return written


def test_every_seed_reaches_every_section(url: str, tmp_path: Path) -> None:
    from flows.report import build_report

    written = _store(url)
    index = build_report(tmp_path / "report", database_url=url)
    page_ = parse_page(index.read_text(encoding="utf-8"))
    store.dispose_engines()

    every = ([written["trained"]] + [e for e, _ in written["full"].values()]
             + [e for e, _ in written["cascading"].values()])
    summary = page_.tables["summary-table"]
    assert sorted(int(r["attrs"]["evaluation-id"]) for r in summary) == sorted(every)
    assert {r["attrs"]["seed"] for r in summary if r["attrs"]["randomization"] == "full"} == set(map(str, FULL_SEEDS))

    # random models over seeds: all five, their mean, and the verdict on the mean of all of them
    (seeds_row,) = next(rows for name, rows in page_.tables.items() if name.startswith("seeds-"))
    medians = [float(np.median(focus)) for _, focus in written["full"].values()]
    assert seeds_row["attrs"]["seeds"] == ",".join(map(str, FULL_SEEDS))
    assert int(seeds_row["attrs"]["n-seeds"]) == len(FULL_SEEDS)
    assert float(seeds_row["attrs"]["mean"]) == pytest.approx(np.mean(medians), abs=1e-12)
    # about chance: within a fifth of chance 1/3 (1/15), not a fixed 0.1
    assert 1 / 15 < 1 / 3 - np.mean(medians) <= 0.1
    assert seeds_row["attrs"]["about-chance"] == "0"
    assert float(seeds_row["attrs"]["tolerance"]) == pytest.approx(stats.chance_tolerance(1 / 3))

    # the cascading curve: each stage pools every seed's mosaics, and says over which seeds
    cascade = page_.tables["cascading-" + str(written["grid"].checkpoint_id) + "-" + str(written["grid"].mosaic_set_id)]
    by_stage = {r["attrs"]["stage"]: r for r in cascade if r["attrs"]["method"] == "gradcam"}
    for stage in (0, 1):
        pooled = np.concatenate([written["cascading"][(s, stage)][1] for s in CASCADING_SEEDS])
        row_ = by_stage[str(stage)]
        assert row_["attrs"]["seeds"] == ",".join(map(str, CASCADING_SEEDS))
        assert int(row_["attrs"]["n"]) == pooled.size
        assert float(row_["attrs"]["median"]) == pytest.approx(float(np.median(pooled)), abs=1e-12)
        per_seed = [float(np.median(written["cascading"][(s, stage)][1])) for s in CASCADING_SEEDS]
        assert float(row_["attrs"]["seed-mean"]) == pytest.approx(np.mean(per_seed), abs=1e-12)
        assert float(row_["attrs"]["seed-std"]) == pytest.approx(np.std(per_seed, ddof=1), abs=1e-12)


def test_random_models_shared_by_checkpoints_are_counted_once(sqlite_url: str, tmp_path: Path) -> None:
    """Two checkpoints of one architecture: their fully random models of one seed are one network, listed once."""
    from flows.report import build_report

    written = _store(sqlite_url)
    grid = written["grid"]
    engine = db.open_store(sqlite_url)
    try:
        other = db.register_checkpoint(engine, "f" * 64, "digits_cnn", 3, path="other.pt")
        twin = type(grid)(**{**grid.__dict__, "checkpoint_id": other})
        _write(engine, twin, np.full(MOSAICS, 0.9))
        for seed in (0, 1):  # the same network as the first checkpoint's seed: the same per-mosaic Focus
            _write(engine, twin, written["full"][seed][1], randomization="full", seed=seed)
    finally:
        engine.dispose()
    page_ = parse_page(build_report(tmp_path / "report", database_url=sqlite_url).read_text(encoding="utf-8"))
    store.dispose_engines()
    tables = {name: rows for name, rows in page_.tables.items() if name.startswith("seeds-")}
    assert sorted(tables) == sorted(f"seeds-{c}-{grid.mosaic_set_id}" for c in (grid.checkpoint_id, other))
    for (row_,) in tables.values():  # five random models for both checkpoints, each seed once
        assert row_["attrs"]["seeds"] == ",".join(map(str, FULL_SEEDS)) and int(row_["attrs"]["n-seeds"]) == 5
        assert len(set(row_["attrs"]["evaluations"].split(","))) == 5
    note = next(n for n in page_.notes if "same networks" in n)
    assert "5 seeds (0–4) are 5 random models, counted once" in note


def test_a_method_with_list_parameters_is_one_cell_per_value() -> None:
    """LRP's per-channel bounds are lists: each value is its own cell, and a rerun of one is kept once."""
    from flows.report.queries import EvaluationData
    from flows.report.selection import latest_per_cell

    def evaluation(evaluation_id: int, low: list[float]) -> EvaluationData:
        return EvaluationData(
            evaluation_id=evaluation_id, status="finished", randomization="none", stage=None, layer=None,
            audit_run_id=None, finished_at=None, metadata=None, checkpoint_id=1, architecture="digits_cnn",
            checkpoint_label=None, sha256="ab" * 32, weights_path=None, num_classes=10, in_channels=1,
            training_run_id=None, epoch=None, method="lrp", method_params={"low": low, "high": [2.8]},
            mosaic_set_id=1, layout="random", split="test", set_seed=0, per_class=2, dataset_id=1,
            dataset_name="digits", dataset_fingerprint="f", dataset_tile_size=32,
        )

    kept = latest_per_cell([evaluation(1, [-0.4]), evaluation(2, [-0.4]), evaluation(3, [-1.0])])

    assert [e.evaluation_id for e in kept] == [2, 3]
