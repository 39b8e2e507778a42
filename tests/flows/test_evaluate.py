"""The evaluate flow against a real Prefect API: retries, resumption, one row per mosaic."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text

from flows.worker import store
from flows import tasks
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from focus_core.errors import FocusError

PER_CLASS = 2  # 10 digits x 2 = 20 mosaics
CHUNK = 8  # chunks 0, 1, 2 (8 + 8 + 4 mosaics)


def _params(weights: str, url: str, **run: object) -> EvaluateParams:
    return EvaluateParams(
        model={"architecture": "digits_cnn", "weights": weights},
        mosaics={"split": "test", "per_class": PER_CLASS, "seed": 3},
        methods=[{"name": "gradcam"}],
        run={"device": "cpu", "batch_size": 8, "chunk_size": CHUNK, "retries": 1, "retry_delay_seconds": 0,
             "database_url": url, **run},
    )


def _rows(url: str, evaluation_id: int) -> tuple[int, int]:
    """(rows, distinct mosaics) of one evaluation."""
    with store.engine_for(url).connect() as connection:
        return tuple(connection.execute(
            text("SELECT COUNT(*), COUNT(DISTINCT mosaic_id) FROM mosaic_result WHERE evaluation_id = :e"),
            {"e": evaluation_id},
        ).one())


class ChunkSpy:
    """Wraps ``tasks.explain_chunk``: records every chunk attempt and raises on the chosen ones."""

    def __init__(self, fail: dict[int, BaseException] | None = None) -> None:
        self.fail = dict(fail or {})
        self.attempts: list[int] = []
        self._real = tasks.explain_chunk
        self._lock = threading.Lock()

    def __call__(self, request: tasks.ChunkRequest):
        with self._lock:
            self.attempts.append(request.chunk)
            error = self.fail.pop(request.chunk, None)
        if error is not None:
            raise error
        return self._real(request)


def test_a_chunk_that_fails_once_is_retried_and_every_mosaic_has_one_row(
    prefect_api, sqlite_url, digits_weights, monkeypatch
):
    spy = ChunkSpy(fail={1: RuntimeError("CUDA error: an illegal memory access (injected)")})
    monkeypatch.setattr(tasks, "explain_chunk", spy)

    outcome = evaluate(_params(digits_weights, sqlite_url))

    (record,) = outcome["evaluations"]
    assert sorted(spy.attempts) == [0, 1, 1, 2]  # chunk 1 failed once and ran again
    assert record["chunks_run"] == [0, 1, 2] and record["chunks_failed"] == []
    assert record["status"] == "finished"
    assert _rows(sqlite_url, record["evaluation_id"]) == (20, 20)
    assert record["summary"]["n"] == 20
    assert 0.0 <= record["summary"]["median"] <= 1.0


def test_a_rerun_after_an_interrupted_run_adds_no_duplicates_and_runs_only_the_missing_chunks(
    prefect_api, pg_url, digits_weights, monkeypatch
):
    # First run: chunk 1 hits an error that cannot succeed on retry, so it is not retried.
    spy = ChunkSpy(fail={1: FocusError("Injected: a fault that fails the same way every time.")})
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    with pytest.raises(RuntimeError, match="1 of 3 chunk"):
        evaluate(_params(digits_weights, pg_url))
    assert sorted(spy.attempts) == [0, 1, 2]  # no retry of chunk 1

    # Second run of the same request: only chunk 1 runs; the record is complete, without duplicates.
    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    outcome = evaluate(_params(digits_weights, pg_url))
    (record,) = outcome["evaluations"]
    assert spy.attempts == [1]
    assert record["chunks_run"] == [1] and record["chunks_skipped"] == 2
    assert record["status"] == "finished"
    assert _rows(pg_url, record["evaluation_id"]) == (20, 20)

    # Third run: nothing left to do.
    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    (record,) = evaluate(_params(digits_weights, pg_url))["evaluations"]
    assert spy.attempts == [] and record["chunks_skipped"] == 3
    assert _rows(pg_url, record["evaluation_id"]) == (20, 20)


def test_max_chunks_stops_early_and_the_next_request_finishes(prefect_api, sqlite_url, digits_weights, monkeypatch):
    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    (first,) = evaluate(_params(digits_weights, sqlite_url, max_chunks=1))["evaluations"]
    assert first["chunks_run"] == [0] and first["status"] == "running"
    assert _rows(sqlite_url, first["evaluation_id"]) == (8, 8)

    (second,) = evaluate(_params(digits_weights, sqlite_url))["evaluations"]
    assert second["evaluation_id"] == first["evaluation_id"]
    assert second["chunks_run"] == [1, 2] and second["status"] == "finished"
    assert sorted(spy.attempts) == [0, 1, 2]
    assert _rows(sqlite_url, first["evaluation_id"]) == (20, 20)


def test_a_local_sweep_records_each_cell_exactly_once(prefect_api, sqlite_url, digits_weights, tmp_path):
    import torch

    from flows.params import SweepParams
    from flows.sweep import sweep
    from focus_core import models

    torch.manual_seed(1)
    untrained = str(tmp_path / "untrained.pt")
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), untrained)
    params = SweepParams(
        checkpoints=[{"weights": digits_weights, "label": "trained"}, {"weights": untrained, "label": "untrained"}],
        methods=[{"name": "gradcam"}, {"name": "random"}],
        mosaics={"split": "test", "per_class": 1, "seed": 2},
        run={"device": "cpu", "batch_size": 16, "chunk_size": 16, "database_url": sqlite_url},
    )
    cells = sweep(params)["cells"]
    assert [(c["checkpoint"], c["method"], c["state"], c["n"]) for c in cells] == [
        ("trained", "gradcam", "COMPLETED", 10), ("trained", "random", "COMPLETED", 10),
        ("untrained", "gradcam", "COMPLETED", 10), ("untrained", "random", "COMPLETED", 10),
    ]
    again = sweep(params)["cells"]
    assert [c["evaluation_id"] for c in again] == [c["evaluation_id"] for c in cells]
    with store.engine_for(sqlite_url).connect() as connection:
        counts = connection.execute(text(
            "SELECT COUNT(*), COUNT(DISTINCT evaluation_id || '-' || mosaic_id) FROM mosaic_result"
        )).one()
    assert tuple(counts) == (40, 40)


def _focus(url: str, evaluation_id: int) -> list[float | None]:
    with store.engine_for(url).connect() as connection:
        return [r[0] for r in connection.execute(
            text("SELECT focus FROM mosaic_result WHERE evaluation_id = :e ORDER BY mosaic_id"), {"e": evaluation_id}
        )]


def test_each_randomization_seed_is_its_own_evaluation(prefect_api, sqlite_url, digits_weights, monkeypatch):
    """Seeds 0, 1, 2 of one request: three evaluations with different Focus; a re-run of each reuses its own."""
    def params(seed: int) -> EvaluateParams:
        request = _params(digits_weights, sqlite_url).model_dump()
        return EvaluateParams.model_validate({**request, "randomization": {"kind": "full", "seed": seed}})

    first = {seed: evaluate(params(seed))["evaluations"][0] for seed in (0, 1, 2)}
    ids = {seed: record["evaluation_id"] for seed, record in first.items()}
    assert len(set(ids.values())) == 3
    assert all(record["chunks_run"] == [0, 1, 2] for record in first.values())
    focus = {seed: _focus(sqlite_url, ids[seed]) for seed in ids}
    assert focus[0] != focus[1] and focus[1] != focus[2] and focus[0] != focus[2]
    with store.engine_for(sqlite_url).connect() as connection:
        seeds = dict(connection.execute(text("SELECT id, seed FROM evaluation")).all())
    assert seeds == {ids[0]: 0, ids[1]: 1, ids[2]: 2}

    spy = ChunkSpy()
    monkeypatch.setattr(tasks, "explain_chunk", spy)
    for seed in (2, 0, 1):
        (again,) = evaluate(params(seed))["evaluations"]
        assert again["evaluation_id"] == ids[seed] and again["chunks_skipped"] == 3
        assert again["summary"] == first[seed]["summary"]
    assert spy.attempts == []


def test_reusing_a_finished_evaluation_leaves_its_record_alone(prefect_api, sqlite_url, digits_weights):
    columns = "status, seconds, started_at, finished_at, metadata, n, focus_median"

    def record(evaluation_id: int) -> tuple:
        with store.engine_for(sqlite_url).connect() as connection:
            return tuple(connection.execute(
                text(f"SELECT {columns} FROM evaluation WHERE id = :e"), {"e": evaluation_id}
            ).one())

    (first,) = evaluate(_params(digits_weights, sqlite_url))["evaluations"]
    before = record(first["evaluation_id"])
    (again,) = evaluate(_params(digits_weights, sqlite_url, batch_size=4))["evaluations"]
    assert again["evaluation_id"] == first["evaluation_id"] and again["chunks_run"] == []
    assert again["status"] == "finished" and again["summary"] == first["summary"]
    assert record(first["evaluation_id"]) == before
