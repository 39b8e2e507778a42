"""A pinned ``models:/<name>/<version>`` checkpoint whose bytes this worker downloaded before is audited during an
MLflow outage: a version never changes, so its cached download (checked against the recorded sha256) is enough.

A real ``mlflow server`` of this test's own (it is stopped half-way), a real Prefect API and a real store.
"""

from __future__ import annotations

import pytest
import torch

from flows import audit as audit_module
from flows.params import AuditParams, ModelSpec
from flows.weights import lineages, weight_store
from flows.worker import store
from focus_core.architectures import DigitsCNN
from focus_core.models import save_weights
from tests.mlflow_server import start_mlflow_server, stop_mlflow_server

NAME = "digits-outage"


@pytest.mark.server
@pytest.mark.timeout(900)
def test_a_cached_pinned_version_is_audited_while_mlflow_is_down(prefect_api, sqlite_url, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow
    from mlflow import MlflowClient

    from tests import mlflow_server

    monkeypatch.setattr(mlflow_server, "START_TIMEOUT_S", 300.0)  # a busy machine starts it slowly
    (tmp_path / "mlflow").mkdir()
    server, process = start_mlflow_server(tmp_path / "mlflow")
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("FOCUS_MLFLOW_CACHE", str(tmp_path / "mlflow-cache"))
        monkeypatch.setenv(weight_store.CACHE_ENV_VAR, str(tmp_path / "weights-cache"))
        torch.manual_seed(3)
        weights = tmp_path / "digits.pt"
        save_weights(DigitsCNN(), weights)
        client = MlflowClient(server.url)
        mlflow.set_tracking_uri(server.url)
        client.create_registered_model(NAME)
        with mlflow.start_run() as run:
            mlflow.log_artifact(str(weights))
        client.create_model_version(NAME, f"{run.info.artifact_uri}/digits.pt", run_id=run.info.run_id)
        engine = store.engine_for(sqlite_url)
        lineages.register_into_lineage(engine, NAME, ModelSpec(architecture="digits_cnn", weights=f"models:/{NAME}/1",
                                                               num_classes=10, in_channels=1), audit=True)
        params = AuditParams(lineages=[NAME], methods=[{"name": "gradcam"}],
                             mosaics={"split": "test", "per_class": 1, "seed": 4},
                             run={"device": "cpu", "batch_size": 32, "chunk_size": 64, "database_url": sqlite_url})
        first = audit_module.audit(params)
        assert {r["kind"] for r in first["results"]} == {"previous", "reference"}
    finally:
        stop_mlflow_server(process)

    try:  # MLFLOW_TRACKING_URI still names the stopped server
        second = audit_module.audit(params)  # the server is gone; the version's download is on this worker
    finally:
        mlflow.set_tracking_uri(None)
    previous = next(r for r in second["results"] if r["kind"] == "previous")
    assert previous["previous_evaluation_id"] == first["results"][0]["evaluation_id"]
    assert previous["median_change"] == pytest.approx(0.0) and second["regressions"] == []
