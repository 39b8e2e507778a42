"""The train flow outlasts an object-store restart: its epoch retry (``flows.tasks.outage_delays``) spans one.

A real moto S3 server holds the checkpoints. It is stopped while epoch 1 trains, so the epoch's upload finds no
store; after a restart's downtime it is started again on the same port with its objects (a durable store keeps
them; moto keeps them in memory, so the test puts them back). The flow runs with its default retry of an epoch and
the default delays; the order of events (training started, store stopped, upload failed, store back, flow done)
is waited for, never a clock margin.
"""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import s3fs

import db
from flows import train as train_module
from flows.params import TrainParams
from flows.weights import weight_store
from flows.worker import store
from tests.s3 import start_s3_server
from tests.waits import joined, until

BUCKET = "runs"
#: How long the store is away: a restart of an object store takes about this long.
DOWNTIME_S = 15.0


@pytest.mark.training
def test_training_completes_across_an_object_store_restart(prefect_api, pg_url, tmp_path, monkeypatch):
    server = start_s3_server(tmp_path / "s3")
    try:
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
                    "FOCUS_RETRY_FIRST_DELAY_S", "FOCUS_RETRY_WINDOW_S"):
            monkeypatch.delenv(key, raising=False)  # the production delays
        for key, value in server.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("FOCUS_WEIGHTS_CACHE", str(tmp_path / "weights-cache"))
        s3fs.S3FileSystem.clear_instance_cache()  # no client built for another endpoint
        server.make_bucket(BUCKET)
        _train_across_a_restart(server, pg_url, monkeypatch)
    finally:
        server.stop()
        s3fs.S3FileSystem.clear_instance_cache()


def _train_across_a_restart(server, url: str, monkeypatch) -> None:
    training, stopped, back, done = (threading.Event() for _ in range(4))
    failed_uploads: list[str] = []
    trained: list[int] = []
    real_train, real_upload = train_module.recipe.train_model, weight_store.upload

    def train_model(model, dataset, config, start_epoch=0, **kwargs):
        trained.append(start_epoch + 1)
        if not training.is_set():  # the first try of epoch 1 trains while the store is down
            training.set()
            until(stopped.is_set, "the store stopping")
        return real_train(model, dataset, config, start_epoch=start_epoch, **kwargs)

    def upload(local_file, location, **kwargs):
        try:
            return real_upload(local_file, location, **kwargs)
        except OSError:
            failed_uploads.append(str(location))
            raise

    monkeypatch.setattr(train_module.recipe, "train_model", train_model)
    monkeypatch.setattr(weight_store, "upload", upload)

    def outage() -> None:
        until(training.is_set, "epoch 1 starting to train")
        contents = server.contents()  # epoch 0's weights: a durable store keeps them over its restart
        server.stop()
        stopped.set()
        until(lambda: failed_uploads or done.is_set(), "an upload to the stopped store failing")
        time.sleep(DOWNTIME_S)  # the store is away for a restart's time
        server.restart(contents)
        back.set()

    restarting = threading.Thread(target=outage, name="store-restart", daemon=True)
    restarting.start()
    params = TrainParams(name="restart", dataset={"kind": "digits", "tile_size": 16}, epochs=1, batch_size=128,
                         focus_mosaics={"split": "val", "per_class": 1, "seed": 1}, focus_methods=[{"name": "gradcam"}],
                         checkpoint_dir=f"s3://{BUCKET}/checkpoints", database_url=url)
    assert params.run.retries == 1  # the default: one retry of an epoch, after outage_delays' whole window
    try:
        outcome = train_module.train(params)
    finally:
        done.set()
        joined(restarting)

    assert back.is_set() and failed_uploads, "the store restart did not fall inside the training"
    assert all(f.startswith(f"s3://{BUCKET}/") for f in failed_uploads)
    assert trained == [1, 1]  # epoch 1's first try failed on the upload; its retry trained and uploaded
    assert outcome["epochs_run"] == [1]
    weights = outcome["final_weights"]
    assert weights.startswith(f"s3://{BUCKET}/checkpoints/") and weights.endswith("epoch-0001.weights.pt")
    key = weights.removeprefix(f"s3://{BUCKET}/")
    assert key in server.keys(BUCKET)
    assert hashlib.sha256(server.get(BUCKET, key)).hexdigest() == outcome["final_sha256"]
    engine = store.engine_for(url)
    curve = db.training_curve(engine, outcome["training_run_id"])
    assert sorted(set(curve["epoch"])) == [0, 1]
    with engine.connect() as connection:
        from sqlalchemy import text

        assert connection.execute(text("SELECT status, run_owner FROM training_run")).all() == [("finished", None)]
