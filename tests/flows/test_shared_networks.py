"""A fully random network is one per architecture and seed: its second checkpoint reuses the first one's rows."""

from __future__ import annotations

import numpy as np
import torch
from sqlalchemy import text

from flows import tasks
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from flows.worker import store
from focus_core import models


def _params(weights: str, url: str, kind: str = "full", seed: int = 0) -> EvaluateParams:
    return EvaluateParams(
        model={"architecture": "digits_cnn", "weights": weights},
        mosaics={"split": "test", "per_class": 1, "seed": 2},
        methods=[{"name": "gradcam"}],
        randomization={"kind": kind, "seed": seed} if kind != "none" else {"kind": "none"},
        run={"device": "cpu", "batch_size": 10, "chunk_size": 10, "retries": 0, "database_url": url},
    )


def _focus(url: str, evaluation_id: int) -> dict[int, float | None]:
    with store.engine_for(url).connect() as connection:
        rows = connection.execute(text("SELECT mosaic_id, focus FROM mosaic_result WHERE evaluation_id = :e"),
                                  {"e": evaluation_id})
        return {int(mosaic_id): focus for mosaic_id, focus in rows}


def _in_order(focus: dict[int, float | None]) -> list[float]:
    return [np.nan if value is None else value for _, value in sorted(focus.items())]


def _untrained_weights(tmp_path) -> str:
    torch.manual_seed(11)
    path = tmp_path / "untrained.pt"
    models.save_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), path)
    return str(path)


def _counting_chunks(monkeypatch) -> list[int]:
    attempts: list[int] = []
    real = tasks.explain_chunk

    def spy(request):
        attempts.append(request.chunk)
        return real(request)

    monkeypatch.setattr(tasks, "explain_chunk", spy)
    return attempts


def test_the_second_checkpoint_reuses_the_fully_random_network_it_shares(
    prefect_api, pg_url, sqlite_url, digits_weights, tmp_path, monkeypatch
):
    other = _untrained_weights(tmp_path)
    (first,) = evaluate(_params(digits_weights, pg_url))["evaluations"]

    attempts = _counting_chunks(monkeypatch)
    (second,) = evaluate(_params(other, pg_url))["evaluations"]

    assert attempts == []  # nothing computed: the network was measured on the first checkpoint
    assert second["evaluation_id"] != first["evaluation_id"] and second["status"] == "finished"
    reused = _focus(pg_url, second["evaluation_id"])
    assert reused == _focus(pg_url, first["evaluation_id"]) and len(reused) == 10
    assert second["summary"]["n"] == 10

    # The same evaluation computed from scratch in another store gives the same numbers: it is one network.
    (alone,) = evaluate(_params(other, sqlite_url))["evaluations"]
    computed = _focus(sqlite_url, alone["evaluation_id"])
    assert len(computed) == len(reused)  # both stores registered the set's mosaics in its order
    np.testing.assert_allclose(_in_order(computed), _in_order(reused), atol=1e-6)  # undefined maps alike too


def test_another_seed_is_another_network_and_is_computed(
    prefect_api, sqlite_url, digits_weights, tmp_path, monkeypatch
):
    other = _untrained_weights(tmp_path)
    evaluate(_params(digits_weights, sqlite_url))
    attempts = _counting_chunks(monkeypatch)
    evaluate(_params(other, sqlite_url, seed=1))
    assert attempts == [0]  # another seed is another network
    (back,) = evaluate(_params(digits_weights, sqlite_url, seed=1))["evaluations"]
    assert attempts == [0] and back["summary"]["n"] == 10  # ...which the first checkpoint now reuses
