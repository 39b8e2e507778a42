"""The model-reliance pass in the evaluate flow: stored once per model and mosaic set, reused by every method and
re-run, resumed by chunks, and summarised beside Focus as focus_core computes it (real PostgreSQL and SQLite)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from sqlalchemy import text

import db
from flows import reliance as flow_reliance
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from flows.worker import caches, store
from focus_core import reliance, stats
from focus_core.errors import FocusError

CHUNK = 8


def _params(weights: str, url: str, methods: list[str], *, grid: int = 2, per_class: int = 2,
            model_reliance: bool = True, baseline: str = "mean") -> EvaluateParams:
    mosaics = {"split": "test", "per_class": per_class, "seed": 3}
    if grid != 2:
        mosaics.update(grid=grid, targets=1)
    return EvaluateParams(
        model={"architecture": "digits_cnn", "weights": weights}, mosaics=mosaics,
        methods=[{"name": m} for m in methods], model_reliance=model_reliance, reliance_baseline=baseline,
        run={"device": "cpu", "batch_size": 8, "chunk_size": CHUNK, "retries": 0, "retry_delay_seconds": 0,
             "database_url": url},
    )


def _counts(url: str) -> tuple[int, int, int]:
    with store.engine_for(url).connect() as connection:
        return tuple(connection.execute(text(
            "SELECT (SELECT COUNT(*) FROM reliance_pass), (SELECT COUNT(*) FROM mosaic_reliance), "
            "(SELECT COUNT(*) FROM tile_reliance)")).one())


def _leases(url: str) -> int:
    with store.engine_for(url).connect() as connection:
        return connection.execute(text("SELECT COUNT(*) FROM reliance_chunk_lease")).scalar_one()


class PassSpy:
    """Wraps ``flows.reliance.measure_chunk``: records every chunk measured and raises on the chosen ones."""

    def __init__(self, fail: dict[int, BaseException] | None = None) -> None:
        self.fail, self.attempts, self._real = dict(fail or {}), [], flow_reliance.measure_chunk
        self._lock = threading.Lock()

    def __call__(self, request):
        with self._lock:
            self.attempts.append(request.chunk)
            error = self.fail.pop(request.chunk, None)
        if error is not None:
            raise error
        return self._real(request)


def _expected(params: EvaluateParams, url: str, evaluation_id: int) -> dict[str, np.ndarray]:
    """Model Focus, the gap and the rank agreement per mosaic, from focus_core on the evaluation's own mosaics."""
    dataset = caches.load_dataset(params.dataset)
    table = caches.manifest_tensors(params.dataset, params.mosaics, params.model)
    model = caches.load_model(params.model, params.dataset, "cpu")
    from focus_core.mosaics import compose_normalized

    inputs = compose_normalized(caches.device_tiles(params.dataset, "cpu"), table.indices, dataset)
    found = reliance.tile_reliance(model, inputs, table.targets, params.mosaics.grid)
    own = reliance.model_focus(found.drops, table.masks)
    engine = store.engine_for(url)
    focus = torch.tensor(db.evaluation_results(engine, evaluation_id)["focus"].to_numpy(dtype=float))
    sums = db.evaluation_tile_sums(engine, evaluation_id)["positive"].to_numpy(dtype=float)
    positive = torch.tensor(sums.reshape(len(focus), -1))
    return {"model_focus": own.double().numpy(), "gap": reliance.explainer_gap(focus, own.double()).numpy(),
            "agreement": reliance.rank_agreement(positive, found.drops.double()).numpy(),
            "classes": table.targets.numpy()}


def _stored(url: str, evaluation_id: int) -> dict:
    engine = store.engine_for(url)
    summary = db.evaluation_summary(engine, [evaluation_id]).iloc[0]
    full = db.evaluation_reliance(engine, [evaluation_id]).iloc[0]
    return {**full.to_dict(), "view_model": summary["median_model_focus"], "view_gap": summary["median_explainer_gap"]}


def _check_against_focus_core(params: EvaluateParams, url: str, evaluation_id: int) -> None:
    expected, got = _expected(params, url, evaluation_id), _stored(url, evaluation_id)
    for name, column in (("model_focus", "model_focus"), ("gap", "explainer_gap")):
        summary = stats.summarize(expected[name])
        assert got[f"median_{column}"] == pytest.approx(summary["median"], abs=1e-6)
        assert got[f"q1_{column}"] == pytest.approx(summary["q1"], abs=1e-6)
        assert got[f"q3_{column}"] == pytest.approx(summary["q3"], abs=1e-6)
        low, high = stats.cluster_bootstrap_median_ci(expected[name], expected["classes"])
        assert (got[f"{column}_low"], got[f"{column}_high"]) == pytest.approx((low, high), abs=1e-6)
    assert got["view_model"] == pytest.approx(got["median_model_focus"], abs=1e-12)
    assert got["view_gap"] == pytest.approx(got["median_explainer_gap"], abs=1e-12)
    agreement = expected["agreement"][np.isfinite(expected["agreement"])]
    if params.mosaics.grid == 2:
        assert got["median_rank_agreement"] is None or np.isnan(got["median_rank_agreement"])
    else:
        assert len(agreement) and got["median_rank_agreement"] == pytest.approx(float(np.median(agreement)), abs=1e-6)


def test_the_pass_is_stored_once_and_every_method_and_rerun_reuses_it(prefect_api, pg_url, digits_weights,
                                                                     monkeypatch):
    first = evaluate(_params(digits_weights, pg_url, ["gradcam"]))
    assert _counts(pg_url) == (1, 20, 80)  # 20 mosaics x 4 tiles, once
    assert first["model_reliance"]["chunks_run"] == [0, 1, 2]
    (gradcam,) = first["evaluations"]
    assert first["model_reliance"]["summaries_stored"] == [gradcam["evaluation_id"]]
    _check_against_focus_core(_params(digits_weights, pg_url, ["gradcam"]), pg_url, gradcam["evaluation_id"])

    calls = []
    monkeypatch.setattr(flow_reliance, "tile_reliance",
                        lambda *a, **k: calls.append(a) or reliance.tile_reliance(*a, **k))
    second = evaluate(_params(digits_weights, pg_url, ["gradcam", "random"]))  # a new method, the same model
    assert calls == [] and second["model_reliance"]["chunks_run"] == []  # no forward pass of the pass
    assert _counts(pg_url) == (1, 20, 80)
    random_id = second["evaluations"][1]["evaluation_id"]
    assert second["model_reliance"]["summaries_stored"] == [random_id]
    _check_against_focus_core(_params(digits_weights, pg_url, ["random"]), pg_url, random_id)

    third = evaluate(_params(digits_weights, pg_url, ["gradcam", "random"]))  # nothing new at all
    assert calls == [] and third["model_reliance"]["summaries_stored"] == []
    assert _counts(pg_url) == (1, 20, 80) and _leases(pg_url) == 0


def test_an_interrupted_pass_resumes_by_chunks_and_grids_of_3_get_the_rank_agreement(
        prefect_api, sqlite_url, digits_weights, monkeypatch):
    params = _params(digits_weights, sqlite_url, ["gradcam"], grid=3)
    spy = PassSpy(fail={1: FocusError("Injected: a fault that fails the same way every time.")})
    monkeypatch.setattr(flow_reliance, "measure_chunk", spy)
    with pytest.raises(RuntimeError, match="1 of 3 model-reliance chunk"):
        evaluate(params)
    assert _counts(sqlite_url) == (1, 12, 12 * 9)  # chunks 0 and 2 kept

    spy.attempts.clear()  # another run holds chunk 1 for a moment: waited for, then claimed once its lease expires
    pass_id = db.get_or_create_reliance_pass(store.engine_for(sqlite_url), 1, 1, baseline="mean")
    assert db.leases.claim_reliance_chunk(store.engine_for(sqlite_url), pass_id, 1, "another-run", 3.0)
    outcome = evaluate(params)
    assert spy.attempts == [1] and outcome["model_reliance"]["chunks_run"] == [1]
    assert outcome["model_reliance"]["pass_id"] == pass_id and _leases(sqlite_url) == 0
    assert _counts(sqlite_url) == (1, 20, 20 * 9)
    (record,) = outcome["evaluations"]
    assert record["status"] == "finished"
    _check_against_focus_core(params, sqlite_url, record["evaluation_id"])

    from flows.cli.flow_summaries import _reliance_lines

    got = _stored(sqlite_url, record["evaluation_id"])
    lines = _reliance_lines(store.engine_for(sqlite_url), [record["evaluation_id"]], outcome["model_reliance"])
    assert "1 of 3 chunk(s) computed now" in lines[0] and f"median model Focus {got['view_model']:.3f}" in lines[0]
    assert f"gradcam {got['view_gap']:.3f}" in lines[1]

    # a chunk written again (a retry, a second run at once) keeps the first rows; a foreign mosaic is refused whole
    engine, pass_id = store.engine_for(sqlite_url), outcome["model_reliance"]["pass_id"]
    ids = sorted(db.reliance_mosaic_ids(engine, pass_id))[:2]
    assert db.write_reliance(engine, pass_id, ids, np.zeros(2), np.zeros((2, 9)), np.zeros(2)) == 0
    with pytest.raises(db.StoreError, match="not in the mosaic set"):
        db.write_reliance(engine, pass_id, [ids[0], 10**6], np.zeros(2), np.zeros((2, 9)), np.zeros(2))
    assert _counts(sqlite_url) == (1, 20, 20 * 9) and _stored(sqlite_url, record["evaluation_id"]) == got


def test_without_the_option_nothing_is_measured_and_the_columns_are_empty(prefect_api, sqlite_url, digits_weights):
    outcome = evaluate(_params(digits_weights, sqlite_url, ["random"], per_class=1, model_reliance=False))
    assert "model_reliance" not in outcome and _counts(sqlite_url) == (0, 0, 0)
    row = db.evaluation_summary(store.engine_for(sqlite_url)).iloc[0]
    assert row["median_model_focus"] is None or np.isnan(row["median_model_focus"])
    with store.engine_for(sqlite_url).connect() as connection:
        metadata = connection.execute(text("SELECT metadata FROM evaluation")).scalar_one()
    assert "model_reliance" not in str(metadata)  # the recorded request is as it was without the option


def test_the_blurred_tile_is_a_pass_of_its_own_equal_to_focus_core(prefect_api, sqlite_url, digits_weights):
    evaluate(_params(digits_weights, sqlite_url, ["gradcam"], per_class=1))
    params = _params(digits_weights, sqlite_url, ["gradcam"], per_class=1, baseline="blur")
    blurred = evaluate(params)
    assert _counts(sqlite_url) == (2, 20, 80)  # 10 mosaics x 4 tiles, once per baseline
    engine = store.engine_for(sqlite_url)
    with engine.connect() as connection:
        passes = connection.execute(text("SELECT id, baseline FROM reliance_pass ORDER BY id")).all()
        stored = connection.execute(text("SELECT model_focus FROM mosaic_reliance WHERE pass_id = :p "
                                          "ORDER BY mosaic_id"), {"p": passes[1][0]}).scalars().all()
    assert [b for _, b in passes] == ["mean", "blur"]
    assert blurred["model_reliance"]["pass_id"] == passes[1][0]
    dataset = caches.load_dataset(params.dataset)
    table = caches.manifest_tensors(params.dataset, params.mosaics, params.model)
    model = caches.load_model(params.model, params.dataset, "cpu")
    from focus_core.mosaics import compose_normalized

    inputs = compose_normalized(caches.device_tiles(params.dataset, "cpu"), table.indices, dataset)
    own = reliance.model_focus(reliance.tile_reliance(model, inputs, table.targets, 2, "blur").drops, table.masks)
    np.testing.assert_allclose(np.array(stored, dtype=float), own.double().numpy(), atol=1e-6)


def test_the_option_turns_the_pass_on_and_is_off_by_default():
    from flows.cli import build_parser
    from flows.cli.params import given

    parser = build_parser({"evaluate"})
    on = given(parser.parse_args(["evaluate", "--weights", "w.pt", "--model-reliance"]))
    off = given(parser.parse_args(["evaluate", "--weights", "w.pt"]))
    assert on["model_reliance"] is True and "model_reliance" not in off
    assert EvaluateParams.model_validate(on).model_reliance is True
    assert EvaluateParams.model_validate(off).model_reliance is False


def test_the_text_table_shows_model_focus_and_the_gap_beside_focus_only_when_measured():
    import pandas as pd

    from flows.cli.result_text import render

    frame = pd.DataFrame({"evaluation_id": [1, 2], "method": ["gradcam", "random"], "median_focus": [0.9, 0.5],
                          "median_model_focus": [0.7, 0.7], "median_explainer_gap": [0.2, -0.2]})
    header = render(frame, "evaluations").text.splitlines()[0].split()
    assert header[header.index("median") + 1:header.index("median") + 3] == ["model", "Focus"]
    unmeasured = frame.assign(median_model_focus=None, median_explainer_gap=None)
    assert render(unmeasured, "evaluations").text.splitlines()[0].split()[-1] == "gap"  # store order: last
