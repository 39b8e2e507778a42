"""The ``train`` flow: the paper's recipe, one task per epoch, Focus measured after every epoch.

Each epoch task restores the previous epoch's checkpoint (model and AMSGrad state), trains one
epoch (seeded by the run's seed and the epoch number, so a resumed run continues exactly like an
uninterrupted one), writes its checkpoint file atomically, registers the weights, evaluates Focus
on the fixed validation mosaic set and records the epoch. A re-run of the same request (or one
asking for more epochs) resumes after the last epoch that is both recorded and checkpointed. At
the end: the Pearson correlation of Focus and accuracy over the epochs.

Examples
--------
>>> from flows.params import TrainParams
>>> train(TrainParams(epochs=2, checkpoint_dir="checkpoints"))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict

import db
from flows import analysis, caches, devices, record, store
from flows.artifacts import artifact_key
from flows.jsonsafe import number
from flows.params import RandomizationSpec, TrainParams
from flows.record import RegisteredInputs, RegisteredMosaics
from flows.run_names import named, train_name
from flows.tasks import ChunkRequest, can_succeed_on_retry, explain_chunk, retry_delays
from focus_core import models, report
from focus_core import train as recipe
from focus_core.errors import FocusError

__all__ = ["train", "train_epoch", "EpochRequest", "LOG_EPOCH", "LOG_RESUMED", "completed_epochs", "checkpoint_path",
           "run_folder"]

#: The flow's log lines when it resumes a run (run id, epochs done, checkpoint) and after each epoch:
#: ``focus demo`` moves its progress bar on them.
LOG_RESUMED = "Training run %d resumes after epoch %d (checkpoint %s)"
LOG_EPOCH = "Epoch %d: val accuracy %.3f, median Focus %s"
LOG_SAME_WEIGHTS = ("The final weights are byte-identical to those of training run %d (%s) epoch %s: checkpoint %d is "
                    "one record, and audits, sweeps and the report name it after that run")


class EpochRequest(BaseModel):
    """One epoch of a training run, as ids and specs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    params: TrainParams
    training_run_id: int
    epoch: int
    run_dir: str
    mosaic_set_id: int
    manifest_hash: str
    mosaic_ids: list[int]
    dataset_id: int


def checkpoint_path(run_dir: str | Path, epoch: int) -> Path:
    """The resumable checkpoint (model + optimizer) of an epoch."""
    return Path(run_dir) / f"epoch-{epoch:04d}.pt"


def weights_path(run_dir: str | Path, epoch: int) -> Path:
    """The plain weights file (a state_dict) of an epoch: what evaluations load and the store registers."""
    return Path(run_dir) / f"epoch-{epoch:04d}.weights.pt"


def run_folder(checkpoint_dir: str | Path, name: str, config_hash: str) -> Path:
    """The folder of a training run's checkpoints: ``<checkpoint_dir>/<name>-<config hash[:12]>``.

    Raises
    ------
    FocusError
        When that folder would not lie inside ``checkpoint_dir`` (a name with ``..`` or ``/``, or a
        symbolic link that points elsewhere): the name rule of :data:`flows.params.NAME_PATTERN`
        refuses such a name up front; this check holds for any name.

    Examples
    --------
    >>> run_folder("/data/checkpoints", "digits", "0f1819c26eca" * 5).as_posix()
    '/data/checkpoints/digits-0f1819c26eca'
    >>> run_folder("/data/checkpoints", "../../tmp/x", "0f1819c26eca" * 5)
    Traceback (most recent call last):
    ...
    focus_core.errors.FocusError: The training run's folder /tmp/x-0f1819c26eca lies outside the checkpoint \
folder /data/checkpoints: name the run with letters, digits, '.', '_' and '-' only.
    """
    root = Path(checkpoint_dir).resolve()
    folder = (root / f"{name}-{config_hash[:12]}").resolve()
    if folder.parent != root:
        raise FocusError(
            f"The training run's folder {folder} lies outside the checkpoint folder {root}: "
            "name the run with letters, digits, '.', '_' and '-' only."
        )
    return folder


@task(name="train-epoch", task_run_name="epoch-{request.epoch}", cache_policy=NO_CACHE, persist_result=False,
      retry_condition_fn=can_succeed_on_retry)
def train_epoch(request: EpochRequest) -> dict[str, Any]:
    """Train one epoch from the previous checkpoint, checkpoint it, measure Focus and record the epoch."""
    params = request.params
    device = devices.require_device(params.device)
    engine = store.engine_for(params.database_url)
    dataset = caches.load_dataset(params.dataset)

    torch.manual_seed(params.seed)
    model = caches.build_model(params.model, params.dataset)
    optimizer_state = None
    if request.epoch > 1:
        state = torch.load(checkpoint_path(request.run_dir, request.epoch - 1), map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer_state = state["optimizer"]
    config = recipe.TrainConfig(**{**params.recipe(), "epochs": request.epoch}, device=str(device))
    optimizer = recipe.make_optimizer(model, config)
    (metrics,) = recipe.train_model(
        model, dataset, config, start_epoch=request.epoch - 1, optimizer_state=optimizer_state, optimizer=optimizer
    )
    weights = weights_path(request.run_dir, request.epoch)
    models.save_weights(model, weights)
    models.save_atomically(
        {"model": {k: v.cpu() for k, v in model.state_dict().items()},
         "optimizer": optimizer.state_dict(), "epoch": request.epoch},
        checkpoint_path(request.run_dir, request.epoch),
    )

    spec = params.model.model_copy(update={"weights": str(weights), "label": f"{params.name} epoch {request.epoch}"})
    checkpoint_id, sha = record.register_checkpoint(
        engine, spec, params.dataset, training_run_id=request.training_run_id, epoch=request.epoch
    )
    inputs = RegisteredInputs(request.dataset_id, request.mosaic_set_id, request.manifest_hash,
                              request.mosaic_ids, checkpoint_id, sha)
    focus: dict[str, dict[str, Any]] = {}
    for method in params.focus_methods:
        evaluation_id, name, _ = record.open_evaluation(engine, inputs, method, spec, RandomizationSpec(),
                                                        device=str(device))
        chunk = ChunkRequest(
            evaluation_id=evaluation_id, chunk=0, positions=list(range(len(request.mosaic_ids))),
            mosaic_ids=request.mosaic_ids, dataset=params.dataset, mosaics=params.focus_mosaics, model=spec,
            method=method, device=params.device, batch_size=params.batch_size, database_url=params.database_url,
        )
        started = time.perf_counter()
        db.start_evaluation(engine, evaluation_id)
        db.write_mosaic_results(engine, evaluation_id, request.mosaic_ids, *explain_chunk(chunk))
        focus[name] = db.finish_evaluation(engine, evaluation_id, seconds=time.perf_counter() - started)
        focus[name]["evaluation_id"] = evaluation_id

    first = focus[params.focus_methods[0].name]
    db.record_epoch(
        engine,
        request.training_run_id,
        request.epoch,
        train_loss=metrics.train_loss,
        train_accuracy=metrics.train_accuracy,
        val_loss=metrics.val_loss,
        val_accuracy=metrics.val_accuracy,
        val_mean_class_accuracy=metrics.val_mean_class_accuracy,
        focus_median=first.get("median"),
        focus_mean=first.get("mean"),
        seconds=metrics.seconds,
    )
    return {"epoch": request.epoch, "metrics": metrics.__dict__, "focus": focus, "checkpoint_id": checkpoint_id,
            "weights": str(weights)}


def completed_epochs(engine: Any, training_run_id: int, run_dir: str | Path) -> int:
    """The last epoch ``k`` such that epochs ``1..k`` are all recorded and ``k`` has its checkpoint file."""
    recorded = set(db.training_curve(engine, training_run_id)["epoch"].astype(int))
    done = 0
    while done + 1 in recorded:
        done += 1
    while done > 0 and not checkpoint_path(run_dir, done).exists():
        done -= 1
    return done


@flow(name="train", flow_run_name=named(train_name, TrainParams), validate_parameters=True, persist_result=False)
def train(params: TrainParams = TrainParams()) -> dict[str, Any]:  # noqa: B008 - the form shows the defaults
    """Train a classifier with the paper's recipe, recording every epoch and its Focus.

    Args:
        params: Architecture, data, recipe, the validation mosaic set for Focus, checkpoint
            folder, device and store.

    Returns a dict with the training run id, the epochs run now, every epoch's metrics and
    Focus, the final checkpoint and the Pearson correlation of Focus and validation accuracy.
    """
    devices.require_device(params.device)
    engine = store.engine_for(params.database_url)
    mosaic_set: RegisteredMosaics = record.register_mosaics(engine, params.dataset, params.focus_mosaics)
    config_hash = params.config_hash()
    training_run_id = db.register_training_run(
        engine,
        config_hash,
        params.model.architecture,
        {**params.recipe(), "model": params.model.model_dump(mode="json"),
         "dataset": params.dataset.model_dump(mode="json"),
         "focus_methods": [m.model_dump(mode="json") for m in params.focus_methods]},
        name=params.name,
        dataset_id=mosaic_set.dataset_id,
    )
    try:
        return _train_epochs(params, engine, mosaic_set, config_hash, training_run_id)
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be what failed: the original error is the one to see
            db.finish_training_run(engine, training_run_id, status="failed")
        raise


def _train_epochs(
    params: TrainParams, engine: Any, mosaic_set: RegisteredMosaics, config_hash: str, training_run_id: int
) -> dict[str, Any]:
    """The body of :func:`train` once the run is registered: the missing epochs, then the summary."""
    logger = get_run_logger()
    run_dir = run_folder(params.checkpoint_dir, params.name, config_hash)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = completed_epochs(engine, training_run_id, run_dir)
    if done:
        logger.info(LOG_RESUMED, training_run_id, done, checkpoint_path(run_dir, done))
    epoch_task = train_epoch.with_options(retries=params.retries, retry_delay_seconds=retry_delays(5.0))
    epochs_run = []
    for epoch in range(done + 1, params.epochs + 1):
        result = epoch_task(EpochRequest(
            params=params, training_run_id=training_run_id, epoch=epoch, run_dir=str(run_dir),
            mosaic_set_id=mosaic_set.mosaic_set_id, manifest_hash=mosaic_set.manifest_hash,
            mosaic_ids=mosaic_set.mosaic_ids, dataset_id=mosaic_set.dataset_id,
        ))
        epochs_run.append(epoch)
        logger.info(LOG_EPOCH, epoch, result["metrics"]["val_accuracy"],
                    {m: f["median"] for m, f in result["focus"].items()})

    curve = db.training_curve(engine, training_run_id)
    curve = curve[curve["epoch"] <= params.epochs]
    correlation = analysis.focus_accuracy_correlation(engine, training_run_id)
    final_weights = weights_path(run_dir, params.epochs)
    final_checkpoint, final_sha = record.register_checkpoint(
        engine, params.model.model_copy(update={"weights": str(final_weights)}), params.dataset,
        training_run_id=training_run_id, epoch=params.epochs,
    )
    if params.audit:
        db.set_checkpoint_audit(engine, final_checkpoint, True)
    db.finish_training_run(engine, training_run_id)
    same_weights = _same_weights(engine, final_checkpoint, training_run_id)
    if same_weights is not None:
        logger.warning(LOG_SAME_WEIGHTS, same_weights["training_run_id"], same_weights["training_run_name"],
                       same_weights["epoch"], final_checkpoint)

    epochs = [_plain(row) for row in curve.to_dict("records")]
    create_table_artifact(
        [{k: row[k] for k in ("epoch", "train_loss", "val_loss", "val_accuracy", "val_mean_class_accuracy",
                              "focus_median", "focus_mean")} for row in epochs],
        key=artifact_key("training", params.name, config_hash[:12]),
        description=f"Training run {params.name}: Pearson r(Focus, val accuracy) = {correlation['r']:.3f}",
    )
    if params.figures_dir and epochs:
        first = params.focus_methods[0].name
        records = [{**row, f"focus_{first}": row["focus_median"]} for row in epochs]
        for row in records:
            row.pop("focus_median"), row.pop("focus_mean")
        out = Path(params.figures_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = [report.plot_training_curves(records, out / f"training-{params.name}.png"),
                 report.plot_focus_vs_metrics(records, out / f"focus-vs-metrics-{params.name}.png")]
        create_markdown_artifact("\n".join(f"- `{p}`" for p in paths), description="Training figures")
    return {
        "training_run_id": training_run_id,
        "run_dir": str(run_dir),
        "epochs_run": epochs_run,
        "resumed_after": done,
        "epochs": epochs,
        "final_checkpoint_id": final_checkpoint,
        "final_weights": str(final_weights),
        "final_sha256": final_sha,
        "correlation": correlation,
        "same_weights_as": same_weights,
    }


def _same_weights(engine: Any, checkpoint_id: int, training_run_id: int) -> dict[str, Any] | None:
    """The other training run recorded with this checkpoint when both produced byte-identical weights, else None."""
    origin = db.checkpoint_origin(engine, checkpoint_id)
    return origin if origin is not None and origin["training_run_id"] != training_run_id else None


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in row.items():
        if isinstance(value, (np.integer,)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = number(value)
        out[key] = value
    return out
