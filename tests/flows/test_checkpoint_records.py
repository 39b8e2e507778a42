"""A weights file's record pins its architecture only once something proved it: a result, a training run, a lineage.

A request with a wrong architecture whose every evaluation failed before its first result must not hold the file to
that architecture for good; a request after a stored result must.
"""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import text

from flows.worker import store
from flows.evaluate import evaluate
from flows.params import EvaluateParams
from focus_core.architectures import DigitsCNN
from focus_core.errors import FocusError

WRONG = "tests.flows.test_checkpoint_records:nan_digits_cnn"


class _NaNDigitsCNN(DigitsCNN):
    """The digits CNN's parameters under another architecture whose logits are NaN: it loads the digits weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * float("nan")


def nan_digits_cnn(num_classes: int, in_channels: int) -> DigitsCNN:
    """The factory of the wrong architecture (``module:factory``)."""
    return _NaNDigitsCNN(num_classes=num_classes, in_channels=in_channels)


def _params(architecture: str, weights: str, url: str) -> EvaluateParams:
    return EvaluateParams(
        model={"architecture": architecture, "weights": weights},
        mosaics={"split": "test", "per_class": 1, "seed": 5},
        methods=[{"name": "gradcam"}],
        run={"device": "cpu", "batch_size": 10, "chunk_size": 10, "retries": 0, "database_url": url},
    )


def _recorded_architectures(url: str) -> list[str]:
    with store.engine_for(url).connect() as connection:
        return list(connection.execute(text("SELECT architecture FROM model_checkpoint")).scalars())


def test_a_file_whose_only_evaluation_failed_before_a_result_takes_the_right_architecture(
    prefect_api, pg_url, digits_weights
):
    with pytest.raises(Exception, match="logits are NaN or infinite"):
        evaluate(_params(WRONG, digits_weights, pg_url))
    assert _recorded_architectures(pg_url) == [WRONG]  # registered, then failed at its first forward pass

    (record,) = evaluate(_params("digits_cnn", digits_weights, pg_url))["evaluations"]

    assert record["status"] == "finished" and record["summary"]["n"] == 10
    assert _recorded_architectures(pg_url) == ["digits_cnn"]  # the same record, now under the right architecture


def test_a_file_with_a_stored_result_keeps_its_architecture(prefect_api, pg_url, digits_weights):
    (record,) = evaluate(_params("digits_cnn", digits_weights, pg_url))["evaluations"]
    assert record["status"] == "finished"

    with pytest.raises(FocusError, match="is recorded as a digits_cnn checkpoint"):
        evaluate(_params(WRONG, digits_weights, pg_url))
    assert _recorded_architectures(pg_url) == ["digits_cnn"]
