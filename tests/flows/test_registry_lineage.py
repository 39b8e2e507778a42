"""The MLflow Model Registry as a lineage source: ``models:/`` weights, ``focus audit --follow-alias``.

A real ``mlflow server`` (SQLite, local artifacts; :mod:`tests.mlflow_server`), a real Prefect API (the session's
test harness) and a SQLite store. The registered model holds a one-epoch digits CNN (version 1) and the same
weights with the classifier re-initialised (version 2: explanations near chance); the alias ``champion``
starts on version 1. ``focus checkpoint register --weights models:/...@champion`` records the pinned version,
``focus audit --follow-alias champion`` registers what the alias names each run, and a recorded version whose
artifact bytes changed on the server is refused in one sentence.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import ValidationError, validate
from sqlalchemy import text

import db
from flows import audit as audit_module
from flows.worker import caches, store
from flows import cli
from flows.weights import lineages, weight_store
from flows.audit import audit
from flows.params import AuditParams
from focus_core import architectures, models
from focus_core.errors import FocusError
from tests.flows.server import free_port
from tests.mlflow_server import MlflowServer, mlflow_server  # noqa: F401  (pytest fixture)

NAME = "digits-registry"
AUDIT_ARGS = ["--method", "gradcam", "--per-class", "3", "--mosaic-seed", "5", "--batch-size", "64",
              "--threshold", "0.05"]


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _one_sentence(message: str) -> None:
    assert "\n" not in message.strip() and message.rstrip().endswith("."), message
    assert "Traceback" not in message


def _focus(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def _last_line(err: str) -> str:
    """The command's one-sentence error: the last line on stderr (after the flow run's own log lines)."""
    line = err.strip().splitlines()[-1]
    assert line.startswith("focus") and "Traceback" not in err, err
    _one_sentence(line)
    return line


def _register(url: str, weights: str, *extra: str) -> list[str]:
    return ["checkpoint", "register", "--lineage", "digits-prod", "--weights", weights, "--arch", "digits_cnn",
            "--num-classes", "10", "--in-channels", "1", *extra, "--database-url", url]


def _count(url: str, table: str) -> int:
    with store.engine_for(url).connect() as connection:
        return connection.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


# --- no server ---------------------------------------------------------------------------------------------------

def test_registry_uris_are_read_only_locations_named_in_one_sentence(tmp_path: Path) -> None:
    uri = "models:/digits/3"
    assert weight_store.is_url(uri) and weight_store.is_registry(uri) and not weight_store.has_secret(uri)
    assert weight_store.canonical(uri) == uri and weight_store.redact(uri) == uri  # never made a local path
    assert not weight_store.is_registry("s3://b/models/digits/3") and not weight_store.is_registry(None)
    for message, fragment in [
        (str(weight_store.mismatch_error(uri, "ab" * 32, "cd" * 32)), "the registry's artifact changed"),
        (str(weight_store.mismatch_error("models:/digits@champion", "ab" * 32, "cd" * 32)), "the alias now names"),
    ]:
        _one_sentence(message)
        assert fragment in message and "abababababab" in message and "cdcdcdcdcdcd" in message
    (tmp_path / "w.pt").write_bytes(b"weights")
    with pytest.raises(FocusError, match="which focus-audit only reads") as error:
        weight_store.upload(tmp_path / "w.pt", uri)
    _one_sentence(str(error.value))
    assert lineages.registered_model_of("mlflow:digits@champion") == "digits"
    assert lineages.registered_model_of("mlflow:digits") == "digits"
    assert lineages.registered_model_of("registered") is None and lineages.registered_model_of(None) is None


def test_the_audit_form_has_follow_alias_empty_by_default() -> None:
    assert AuditParams().follow_alias == ""
    schema = parameter_schema(audit).model_dump_for_openapi()
    (field,) = [d["properties"]["follow_alias"] for d in schema["definitions"].values()
                if "follow_alias" in d.get("properties", {})]
    assert field["default"] == "" and "alias" in field["description"]
    validate({"params": {"follow_alias": "champion"}}, schema, raise_on_error=True)
    with pytest.raises(ValidationError):
        validate({"params": {"follow_alias": "champion/2"}}, schema, raise_on_error=True)


def test_following_an_alias_without_a_server_stops_before_anything_is_written(
    sqlite_url, digits_weights, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    engine = store.engine_for(sqlite_url)
    checkpoint = db.register_checkpoint(engine, weight_store.sha256_of(digits_weights), "digits_cnn", 10,
                                        path="models:/digits/1", in_channels=1)
    db.register_lineage_checkpoint(engine, "digits-prod", checkpoint, source="mlflow:digits@champion", audit=True)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://focus:s3cret@127.0.0.1:{free_port()}")
    code, out, err = _focus(capsys, "audit", *AUDIT_ARGS, "--follow-alias", "champion", "--database-url", sqlite_url)
    assert code == 2 and out == "" and "Traceback" not in err, err
    line = _last_line(err)
    assert "No MLflow tracking server answers" in line and "s3cret" not in err
    assert _count(sqlite_url, "audit_run") == 0 and _count(sqlite_url, "model_checkpoint") == 1

    other = db.register_checkpoint(engine, "ab" * 32, "digits_cnn", 10, path="/w.pt", in_channels=1)
    db.register_lineage_checkpoint(engine, "trained-here", other, source="training")
    code, _, err = _focus(capsys, "audit", *AUDIT_ARGS, "--follow-alias", "champion", "--lineage", "trained-here",
                          "--database-url", sqlite_url)
    assert code == 2 and "Lineage 'trained-here' does not come from the MLflow Model Registry" in _last_line(err)
    assert _count(sqlite_url, "audit_run") == 0


# --- a real mlflow server ----------------------------------------------------------------------------------------

def _worse_copy(weights: str, path: Path) -> Path:
    """The trained weights with the classifier re-initialised: the same model, explanations near chance."""
    model = models.load_weights(models.build_model("digits_cnn", num_classes=10, in_channels=1), weights)
    torch.manual_seed(1)
    _, head = architectures.last_linear(model)
    head.reset_parameters()
    models.save_weights(model, path)
    return path


@pytest.fixture(scope="module")
def registry(mlflow_server: MlflowServer, digits_weights: str, tmp_path_factory):  # noqa: F811
    """Version 1: the trained digits CNN (a file artifact); version 2: it with the classifier re-initialised
    (``log_state_dict``); alias ``champion`` on version 1."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_server.url)
    client = MlflowClient(mlflow_server.url)
    work = tmp_path_factory.mktemp("registry-client")
    trained = work / "digits.pt"
    shutil.copyfile(digits_weights, trained)
    worse = _worse_copy(digits_weights, work / "worse.pt")
    client.create_registered_model(NAME)
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(trained))
        mlflow.pytorch.log_state_dict(torch.load(worse, weights_only=True), "weights")
    v1 = client.create_model_version(NAME, f"{run.info.artifact_uri}/digits.pt", run_id=run.info.run_id).version
    v2 = client.create_model_version(NAME, f"runs:/{run.info.run_id}/weights", run_id=run.info.run_id).version
    client.set_registered_model_alias(NAME, "champion", v1)
    stored = mlflow_server.root / "artifacts"
    files = {v1: next(stored.rglob("digits.pt")), v2: next(stored.rglob("state_dict.pth"))}
    try:
        yield {"client": client, "versions": (v1, v2), "files": files, "sha": {v: _sha256(f) for v, f in files.items()}}
    finally:
        mlflow.set_tracking_uri(None)


@pytest.fixture
def worker(registry, mlflow_server: MlflowServer, monkeypatch, tmp_path):  # noqa: F811
    """This test's worker: the tracking server in its environment, its own (empty) download caches."""
    for key, value in mlflow_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("FOCUS_MLFLOW_CACHE", str(tmp_path / "mlflow-cache"))
    monkeypatch.setenv(weight_store.CACHE_ENV_VAR, str(tmp_path / "weights-cache"))
    caches.clear_caches()
    yield registry
    registry["client"].set_registered_model_alias(NAME, "champion", registry["versions"][0])
    caches.clear_caches()


@pytest.mark.server
@pytest.mark.timeout(300)
def test_register_by_alias_records_the_pinned_version_once(worker, sqlite_url, capsys) -> None:
    v1, _ = worker["versions"]
    code, out, err = _focus(capsys, *_register(sqlite_url, f"models:/{NAME}@champion", "--audit"))
    assert code == 0, err
    sha = worker["sha"][v1]
    assert out.strip() == (f"Registered checkpoint {sha[:12]} (models:/{NAME}/{v1}) as version 1 of lineage "
                           "'digits-prod'.")
    code, out, _ = _focus(capsys, "checkpoint", "list", "--format", "json", "--database-url", sqlite_url)
    (row,) = json.loads(out)
    assert (row["path"], row["sha256"], row["version"]) == (f"models:/{NAME}/{v1}", sha, 1)
    assert row["source"] == f"mlflow:{NAME}@champion" and row["lineage_audit"] is True
    code, out, _ = _focus(capsys, "checkpoint", "list", "--database-url", sqlite_url)
    assert code == 0 and f"models:/{NAME}/{v1}" in out

    for again in (f"models:/{NAME}/{v1}", f"models:/{NAME}@champion"):  # the same version: a no-op, said so
        code, out, err = _focus(capsys, *_register(sqlite_url, again))
        assert code == 0, err
        assert out.strip().endswith("is already version 1 of lineage 'digits-prod': nothing to do."), out
    assert _count(sqlite_url, "model_checkpoint") == 1


@pytest.mark.server
@pytest.mark.timeout(600)
def test_the_audit_follows_the_alias_to_a_worse_version(prefect_api, worker, sqlite_url, capsys, monkeypatch) -> None:
    monkeypatch.setenv("FOCUS_DATABASE_URL", sqlite_url)
    v1, v2 = worker["versions"]
    code, _, err = _focus(capsys, *_register(sqlite_url, f"models:/{NAME}@champion", "--audit"))
    assert code == 0, err
    emitted: list[dict] = []
    real_emit = audit_module.emit_event
    monkeypatch.setattr(audit_module, "emit_event", lambda **kw: emitted.append(kw) or real_emit(**kw))

    def follow() -> dict:
        code, out, err = _focus(capsys, "audit", *AUDIT_ARGS, "--follow-alias", "champion", "--format", "json",
                                "--database-url", sqlite_url)
        assert code == 0, err[-3000:]
        return json.loads(out)

    assert follow()["regressions"] == []  # the baseline; the alias's version is there already
    worker["client"].set_registered_model_alias(NAME, "champion", v2)
    second = follow()
    (regression,) = second["regressions"]
    assert (regression["lineage"], regression["kind"], regression["method"]) == (
        "digits-prod", "previous", "gradcam")
    assert (regression["checkpoint"], regression["compared_with"]) == (worker["sha"][v2], worker["sha"][v1])
    assert regression["median_change"] < -0.05 and 0 <= regression["p_value"] < 0.05
    (event,) = [e for e in emitted if e["event"] == audit_module.REGRESSED_EVENT]
    assert event["resource"]["prefect.resource.id"] == "focus.lineage.digits-prod"
    assert event["payload"]["checkpoint_version"] == 2 and event["payload"]["compared_with_version"] == 1
    with store.engine_for(sqlite_url).connect() as connection:
        recorded = connection.execute(text("SELECT metadata FROM audit_run WHERE id = :id"),
                                      {"id": second["audit_run_id"]}).scalar_one()
    recorded = json.loads(recorded) if isinstance(recorded, str) else recorded
    assert recorded["followed"] == [{"lineage": "digits-prod", "weights": f"models:/{NAME}/{v2}", "version": 2,
                                     "added": True}]

    # nothing new: version 2 against its own audit is quiet; against the reference (version 1) it still fell
    assert [(r["kind"], r["compared_with"]) for r in follow()["regressions"]] == [("reference", worker["sha"][v1])]
    listed = db.lineage_checkpoints(store.engine_for(sqlite_url), "digits-prod")
    assert listed[["version", "path"]].values.tolist() == [[1, f"models:/{NAME}/{v1}"], [2, f"models:/{NAME}/{v2}"]]
    assert len([e for e in emitted if e["event"] == audit_module.REGRESSED_EVENT]) == 2

    code, out, err = _focus(capsys, "audit", *AUDIT_ARGS, "--follow-alias", "staging", "--database-url", sqlite_url)
    assert code == 2 and out == ""
    line = _last_line(err)
    assert f"Registered model '{NAME}' has no alias 'staging' (its aliases are champion)" in line


@pytest.mark.server
@pytest.mark.timeout(300)
def test_a_recorded_version_whose_artifact_changed_is_refused(worker, sqlite_url, capsys, monkeypatch, tmp_path):
    v1, v2 = worker["versions"]
    uri, sha = f"models:/{NAME}/{v1}", worker["sha"][v1]
    code, _, err = _focus(capsys, *_register(sqlite_url, uri))
    assert code == 0, err
    cached = weight_store.local_copy(uri, expected_sha256=sha)
    cached.write_bytes(b"damaged")  # a damaged download on this worker is fetched again, then verified
    assert _sha256(weight_store.local_copy(uri, expected_sha256=sha)) == sha

    artifact = worker["files"][v1]
    original = artifact.read_bytes()
    shutil.copyfile(worker["files"][v2], artifact)  # the server's bytes of version 1 change behind the store
    try:
        monkeypatch.setenv("FOCUS_MLFLOW_CACHE", str(tmp_path / "another-worker"))
        caches.clear_caches()
        with pytest.raises(FocusError, match="the registry's artifact changed since it was registered") as error:
            weight_store.local_copy(uri, expected_sha256=sha)
        _one_sentence(str(error.value))
        assert sha[:12] in str(error.value) and worker["sha"][v2][:12] in str(error.value)
        before = _count(sqlite_url, "model_checkpoint")
        code, out, err = _focus(capsys, *_register(sqlite_url, uri))
        assert code == 2 and out == "" and "the registry's artifact changed" in err
        assert len(err.strip().splitlines()) == 1 and _count(sqlite_url, "model_checkpoint") == before
    finally:
        artifact.write_bytes(original)


@pytest.mark.server
@pytest.mark.timeout(300)
def test_evaluating_an_alias_records_the_version_it_named(prefect_api, worker, sqlite_url, capsys) -> None:
    """``focus evaluate --weights models:/...@champion`` records ``models:/.../<version>``: after the alias moves,
    the next evaluation records the new version beside the old one (recording the alias itself named other
    bytes the next night, and the run was refused as if the weights had changed behind the store)."""
    v1, v2 = worker["versions"]
    args = ("evaluate", "--weights", f"models:/{NAME}@champion", "--arch", "digits_cnn", "--num-classes", "10",
            "--in-channels", "1", "--per-class", "1", "--method", "gradcam", "--database-url", sqlite_url)
    code, _, err = _focus(capsys, *args)
    assert code == 0, err[-3000:]
    worker["client"].set_registered_model_alias(NAME, "champion", v2)
    caches.clear_caches()
    code, _, err = _focus(capsys, *args)
    assert code == 0, err[-3000:]
    with store.engine_for(sqlite_url).connect() as connection:
        recorded = connection.execute(text("SELECT path, sha256 FROM model_checkpoint ORDER BY id")).all()
    assert [tuple(row) for row in recorded] == [(f"models:/{NAME}/{v1}", worker["sha"][v1]),
                                               (f"models:/{NAME}/{v2}", worker["sha"][v2])]
