"""The train flow: every epoch recorded with its Focus; a crashed run resumes after the last finished epoch."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import text

import db
from flows.worker import store
from flows import train as train_module
from flows.params import TrainParams
from focus_core.errors import FocusError


def _params(tmp_path, url: str, epochs: int) -> TrainParams:
    return TrainParams(
        name="digits-test",
        dataset={"kind": "digits", "tile_size": 16},
        epochs=epochs,
        batch_size=128,
        focus_mosaics={"split": "val", "per_class": 2, "seed": 1},
        focus_methods=[{"name": "gradcam"}, {"name": "lrp"}],
        checkpoint_dir=str(tmp_path / "checkpoints"),
        database_url=url,
        audit=True,
        retries=0,
    )


@pytest.mark.training
def test_training_records_every_epoch_with_focus_and_resumes_after_a_crash(
    prefect_api, sqlite_url, tmp_path, monkeypatch
):
    real_train_model = train_module.recipe.train_model
    epochs_trained: list[int] = []

    def crash_in_epoch_2(model, dataset, config, start_epoch=0, **kwargs):
        epochs_trained.append(start_epoch + 1)
        if start_epoch + 1 == 2 and epochs_trained.count(2) == 1:
            raise FocusError("Injected crash in epoch 2.")
        return real_train_model(model, dataset, config, start_epoch=start_epoch, **kwargs)

    monkeypatch.setattr(train_module.recipe, "train_model", crash_in_epoch_2)
    with pytest.raises(FocusError, match="Injected crash"):
        train_module.train(_params(tmp_path, sqlite_url, epochs=2))
    assert epochs_trained == [1, 2]

    outcome = train_module.train(_params(tmp_path, sqlite_url, epochs=2))
    assert epochs_trained == [1, 2, 2]  # epoch 1 was not trained again
    assert outcome["resumed_after"] == 1 and outcome["epochs_run"] == [2] and not outcome["untrained_recorded_now"]

    engine = store.engine_for(sqlite_url)
    curve = db.training_curve(engine, outcome["training_run_id"])
    # one row per epoch and method, from epoch 0 (the model before its first optimisation step)
    assert list(zip(curve["epoch"], curve["method_name"])) == [
        (0, "gradcam"), (0, "lrp"), (1, "gradcam"), (1, "lrp"), (2, "gradcam"), (2, "lrp")]
    assert curve["focus_median"].between(0, 1).all() and curve["val_accuracy"].between(0, 1).all()
    assert (curve["focus_n"] == 20).all()
    untrained = curve[curve["epoch"] == 0].set_index("method_name")
    print("epoch 0 (untrained) median Focus:", untrained["focus_median"].to_dict(),
          "val accuracy", untrained["val_accuracy"].iloc[0])
    assert untrained["train_loss"].isna().all() and untrained["val_accuracy"].iloc[0] < 0.4  # 10 classes, untrained
    assert abs(untrained.loc["gradcam", "focus_median"] - 0.5) < 0.15  # an untrained model points anywhere
    assert db.training_curve(engine, outcome["training_run_id"], method="lrp")["epoch"].tolist() == [0, 1, 2]
    # three epochs with epoch 0; without it two, too few for focus_core.stats.pearson, which answers NaN for them
    correlation = outcome["correlation"]
    assert correlation["method"] == "gradcam" and correlation["n"] == 3 and not math.isnan(correlation["r"])
    assert correlation["n_without_epoch_0"] == 2 and math.isnan(correlation["r_without_epoch_0"])
    assert [c["method"] for c in outcome["correlations"]] == ["gradcam", "lrp"]
    assert [e["epoch"] for e in outcome["epochs"]] == [0, 1, 2]
    assert set(outcome["epochs"][0]["focus"]) == {"gradcam", "lrp"}

    with engine.connect() as connection:
        checkpoints = connection.execute(text(
            "SELECT epoch, audit FROM model_checkpoint WHERE training_run_id = :run ORDER BY epoch"
        ), {"run": outcome["training_run_id"]}).all()
        per_epoch_rows = connection.execute(text(
            "SELECT c.epoch, COUNT(r.mosaic_id) FROM model_checkpoint c JOIN evaluation e ON e.checkpoint_id = c.id "
            "JOIN mosaic_result r ON r.evaluation_id = e.id WHERE c.training_run_id = :run GROUP BY c.epoch "
            "ORDER BY c.epoch"
        ), {"run": outcome["training_run_id"]}).all()
    assert [(e, bool(a)) for e, a in checkpoints] == [(0, False), (1, False), (2, True)]
    assert [tuple(r) for r in per_epoch_rows] == [(0, 40), (1, 40), (2, 40)]  # two methods on the fixed validation set
    assert (tmp_path / "checkpoints").exists()


def test_a_run_folder_stays_inside_the_checkpoint_folder(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    config_hash = "0f1819c26eca" * 5
    assert train_module.run_folder(checkpoints, "digits", config_hash) == checkpoints.resolve() / "digits-0f1819c26eca"
    for name in ("../../../../tmp/x", "a/../../b", "/etc/x"):
        with pytest.raises(FocusError, match="outside the checkpoint folder"):
            train_module.run_folder(checkpoints, name, config_hash)
    (tmp_path / "elsewhere").mkdir()
    (checkpoints / "linked-0f1819c26eca").symlink_to(tmp_path / "elsewhere")  # a valid name, a folder elsewhere
    with pytest.raises(FocusError, match="outside the checkpoint folder"):
        train_module.run_folder(checkpoints, "linked", config_hash)


def test_the_train_flow_refuses_a_name_that_leaves_the_checkpoint_folder(prefect_api, sqlite_url, tmp_path):
    """Even a name that bypassed validation (``model_copy(update=...)``) cannot write outside ``checkpoint_dir``."""
    params = _params(tmp_path, sqlite_url, epochs=1).model_copy(update={"name": "../escaped"})
    with pytest.raises(FocusError, match="outside the checkpoint folder"):
        train_module.train(params)
    assert not list(tmp_path.glob("escaped-*"))
    with store.engine_for(sqlite_url).connect() as connection:
        assert connection.execute(text("SELECT status FROM training_run")).scalars().all() == ["failed"]
