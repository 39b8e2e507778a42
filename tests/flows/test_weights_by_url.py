"""Weights by URL against a real S3-compatible server (``moto_server`` on 127.0.0.1) with real s3fs.

``focus evaluate --weights s3://...`` runs as a user runs it (the console script in a process of its own,
credentials and endpoint only in its environment): the first run downloads the object once, the second reads
the worker's cache (the server logs no second GET), and an object overwritten with other bytes is refused in
one line naming the URL and both hashes. ``train`` with an ``s3://`` checkpoint folder uploads every epoch,
records the URLs, and a crashed run resumes on a worker with an empty cache by downloading the last checkpoint
(an epoch already uploaded is not trained again).
No credential appears in any output or in the store.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sqlalchemy import text

import db
from flows.worker import store
from flows.weights import weight_store
from flows import train as train_module
from flows.params import TrainParams
from focus_core import models
from focus_core.errors import FocusError
from tests.s3 import ACCESS_KEY, SECRET_KEY

pytestmark = [pytest.mark.server, pytest.mark.timeout(600)]

PROJECT_ROOT = Path(__file__).resolve().parents[2]
FOCUS = str(Path(sys.executable).with_name("focus"))
COMMAND_TIMEOUT_S = 240


def _focus(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_API_URL", "FOCUS_"))}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
    return subprocess.run([FOCUS, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT_S)


def _state_dict_bytes(seed: int) -> bytes:
    torch.manual_seed(seed)
    model = models.build_model("digits_cnn", num_classes=10, in_channels=1)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buffer)
    return buffer.getvalue()


def test_focus_evaluate_reads_s3_weights_once_through_the_cache_and_refuses_changed_ones(
    s3_server, digits_weights, sqlite_url, tmp_path
):
    s3_server.make_bucket("models-eval")
    s3_server.put("models-eval", "digits/w.pt", Path(digits_weights).read_bytes())
    url, key = "s3://models-eval/digits/w.pt", "/models-eval/digits/w.pt"
    sha = models.weights_sha256(digits_weights)
    database = sqlite_url
    env = {**s3_server.env, "FOCUS_WEIGHTS_CACHE": str(tmp_path / "cache"), "PREFECT_HOME": str(tmp_path / "ph"),
           "HOME": str(tmp_path / "home")}
    args = ("evaluate", "--weights", url, "--per-class", "1", "--method", "gradcam", "--database-url", database)

    first = _focus(env, tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    cached = tmp_path / "cache" / "sha256" / f"{sha}.pt"
    assert cached.is_file() and s3_server.requests("GET", key) >= 1
    downloads, mtime = s3_server.requests("GET", key), cached.stat().st_mtime_ns

    second = _focus(env, tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert s3_server.requests("GET", key) == downloads  # read from the cache: no second download
    assert s3_server.requests("HEAD", key) > 0 and cached.stat().st_mtime_ns == mtime

    engine = db.get_engine(database)
    with engine.connect() as connection:
        recorded = connection.execute(text("SELECT sha256, path FROM model_checkpoint")).all()
    engine.dispose()
    assert [tuple(r) for r in recorded] == [(sha, url)]

    other = _state_dict_bytes(seed=7)
    s3_server.put("models-eval", "digits/w.pt", other)  # same URL, other bytes
    refused = _focus(env, tmp_path, *args)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
    assert url in lines[0] and sha[:12] in lines[0] and hashlib.sha256(other).hexdigest()[:12] in lines[0]

    for run in (first, second, refused):
        output = run.stdout + run.stderr
        assert SECRET_KEY not in output and ACCESS_KEY not in output


def _train_params(checkpoint_dir: str, url: str, epochs: int) -> TrainParams:
    return TrainParams(
        name="digits-s3", dataset={"kind": "digits", "tile_size": 16}, epochs=epochs, batch_size=128,
        focus_mosaics={"split": "val", "per_class": 1, "seed": 1}, focus_methods=[{"name": "gradcam"}],
        checkpoint_dir=checkpoint_dir, database_url=url, retries=0,
    )


@pytest.mark.training
def test_train_to_s3_records_urls_and_resumes_from_s3_on_an_empty_cache(
    prefect_api, s3_env, sqlite_url, tmp_path, monkeypatch, caplog
):
    s3_env.make_bucket("models-train")
    real_train_model = train_module.recipe.train_model
    trained: list[int] = []

    def crash_in_epoch_2(model, dataset, config, start_epoch=0, **kwargs):
        trained.append(start_epoch + 1)
        if start_epoch + 1 == 2 and trained.count(2) == 1:
            raise FocusError("Injected crash in epoch 2.")
        return real_train_model(model, dataset, config, start_epoch=start_epoch, **kwargs)

    monkeypatch.setattr(train_module.recipe, "train_model", crash_in_epoch_2)
    with pytest.raises(FocusError, match="Injected crash"):
        train_module.train(_train_params("s3://models-train/runs", sqlite_url, epochs=2))
    folder_keys = s3_env.keys("models-train", "runs/")
    assert len(folder_keys) == 3 and all(k.startswith("runs/digits-s3-") for k in folder_keys)
    run_prefix = folder_keys[0].rsplit("/", 1)[0]
    assert sorted(k.rsplit("/", 1)[1] for k in folder_keys) == [
        "epoch-0000.weights.pt", "epoch-0001.pt", "epoch-0001.weights.pt"]  # epoch 0: the untrained model

    monkeypatch.setenv("FOCUS_WEIGHTS_CACHE", str(tmp_path / "another-worker-cache"))  # nothing cached there
    checkpoint_key = f"/models-train/{run_prefix}/epoch-0001.pt"
    before = s3_env.requests("GET", checkpoint_key)
    outcome = train_module.train(_train_params("s3://models-train/runs", sqlite_url, epochs=2))
    assert trained == [1, 2, 2] and outcome["resumed_after"] == 1 and outcome["epochs_run"] == [2]
    assert s3_env.requests("GET", checkpoint_key) > before  # the last checkpoint came from S3
    assert outcome["run_dir"] == f"s3://models-train/{run_prefix}"
    assert outcome["final_weights"] == f"s3://models-train/{run_prefix}/epoch-0002.weights.pt"

    assert s3_env.keys("models-train", run_prefix) == [
        f"{run_prefix}/epoch-0000.weights.pt", f"{run_prefix}/epoch-0001.pt", f"{run_prefix}/epoch-0001.weights.pt",
        f"{run_prefix}/epoch-0002.pt", f"{run_prefix}/epoch-0002.weights.pt",
    ]
    engine = store.engine_for(sqlite_url)
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT epoch, sha256, path FROM model_checkpoint WHERE training_run_id = :run ORDER BY epoch"
        ), {"run": outcome["training_run_id"]}).all()
    assert [(e, p) for e, _, p in rows] == [
        (0, f"s3://models-train/{run_prefix}/epoch-0000.weights.pt"),
        (1, f"s3://models-train/{run_prefix}/epoch-0001.weights.pt"),
        (2, f"s3://models-train/{run_prefix}/epoch-0002.weights.pt"),
    ]
    for epoch, sha, _ in rows:
        uploaded = s3_env.get("models-train", f"{run_prefix}/epoch-{epoch:04d}.weights.pt")
        assert hashlib.sha256(uploaded).hexdigest() == sha

    # a crash after epoch 3 is uploaded (while measuring its Focus): the retry trains nothing again and the
    # weights recorded at the epoch's URL are the ones uploaded there
    real_explain = train_module.explain_chunk
    failures = iter([True])

    def crash_once_in_focus(chunk):
        if next(failures, False):
            raise RuntimeError("Injected crash while measuring Focus.")
        return real_explain(chunk)

    monkeypatch.setattr(train_module, "explain_chunk", crash_once_in_focus)
    with pytest.raises(RuntimeError, match="Injected crash while measuring"):
        train_module.train(_train_params("s3://models-train/runs", sqlite_url, epochs=3))
    uploaded = hashlib.sha256(s3_env.get("models-train", f"{run_prefix}/epoch-0003.weights.pt")).hexdigest()
    outcome = train_module.train(_train_params("s3://models-train/runs", sqlite_url, epochs=3))
    assert trained == [1, 2, 2, 3] and outcome["epochs_run"] == [3] and outcome["final_sha256"] == uploaded
    assert SECRET_KEY not in caplog.text and ACCESS_KEY not in caplog.text


def test_writing_into_a_bucket_that_does_not_exist_says_to_create_it(s3_env, tmp_path):
    local = tmp_path / "w.pt"
    local.write_bytes(_state_dict_bytes(3))
    with pytest.raises(FocusError) as caught:
        weight_store.upload(local, "s3://no-such-bucket/checkpoints/digits/epoch-0001.weights.pt")
    message = str(caught.value)
    # the old sentence ("... do not exist: pass the URL of an uploaded state_dict") sent a user looking for a file
    assert "bucket does not exist" in message and "aws s3 mb s3://no-such-bucket" in message
    assert "uploaded state_dict" not in message and SECRET_KEY not in message and "\n" not in message
